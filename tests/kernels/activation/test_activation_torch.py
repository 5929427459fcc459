"""relu, sigmoid, tanh, hardtanh (forward and backward) against PyTorch autograd: a seeded sweep, a
hypothesis property test, and the special points (signed zeros, NaN, infinities, the kinks)."""
from functools import cache

import numpy as np
import pytest
from conftest import DTYPES, assert_close, non_contiguous
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip('torch')
torch.set_num_threads(1)      # tiny problems: waking a thread pool would cost more than the work
F = torch.nn.functional

CHUNKS, PER_CHUNK = 25, 20
NAMES = ('relu', 'sigmoid', 'tanh', 'hardtanh')
SAVED = {'relu': 'input', 'hardtanh': 'input', 'sigmoid': 'output', 'tanh': 'output'}
SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 6.0, 20.0, -20.0, 1e-8, -1e-8])


def random_activation_config(rng) -> dict:
    name = NAMES[int(rng.integers(len(NAMES)))]
    ndim = int(rng.integers(1, 5))
    shape = tuple(int(n) for n in rng.integers(0 if rng.random() < 0.05 else 1, 6, size=ndim))
    limits = {}
    if name == 'hardtanh':
        low = float(rng.choice([-1.0, 0.0, -2.5, -0.5, float(rng.uniform(-3, 0))]))
        limits = dict(min_val=low, max_val=low + float(rng.choice([0.5, 1.0, 2.0, 6.0, float(rng.uniform(0.1, 4))])))
    return dict(name=name, shape=shape, limits=limits, dtype=DTYPES[int(rng.integers(2))],
                non_contiguous=bool(rng.random() < 0.2 and ndim > 0), seed=int(rng.integers(2**31)))


@cache
def sweep() -> tuple:
    rng = np.random.default_rng(41)
    return tuple(random_activation_config(rng) for _ in range(CHUNKS * PER_CHUNK))


def inputs_of(config: dict) -> tuple:
    """(x, grad_output): normal values scaled up to 5, with special values and the hardtanh limits mixed in."""
    rng = np.random.default_rng(config['seed'])
    x = rng.standard_normal(config['shape']) * rng.choice([0.1, 1.0, 5.0])
    special = np.concatenate([SPECIAL, list(config['limits'].values())])
    mask = rng.random(config['shape']) < 0.3
    x = np.where(mask, rng.choice(special, size=config['shape']), x)
    g = rng.standard_normal(config['shape'])
    g = np.where(rng.random(config['shape']) < 0.05, rng.choice([np.inf, np.nan], size=config['shape']), g)
    return x.astype(config['dtype']), g.astype(config['dtype'])


def torch_activation(config: dict, x: np.ndarray, g: np.ndarray) -> tuple:
    xt = torch.from_numpy(np.array(x)).requires_grad_()
    fn = getattr(F, config['name']) if config['name'] != 'tanh' else torch.tanh
    y = fn(xt, **config['limits']) if config['name'] == 'hardtanh' else fn(xt)
    grad, = torch.autograd.grad(y, xt, torch.from_numpy(np.array(g)))
    return y.detach().numpy(), grad.numpy()


def torch_hardtanh_nan_rule(x: np.ndarray, g: np.ndarray, expected_grad: np.ndarray) -> np.ndarray:
    """torch's hardtanh_backward passes grad_output at a NaN input in its scalar loop but gives 0 in its
    vectorized loop (arrays of 8 or more elements); bpgen always passes it (the scalar rule, report sec. 4)."""
    return np.where(np.isnan(x), g, expected_grad)


def check_activation(backend, config: dict, x, g) -> None:
    name, limits = config['name'], config['limits']
    expected, expected_grad = torch_activation(config, x, g)
    if name == 'hardtanh':
        expected_grad = torch_hardtanh_nan_rule(x, g, expected_grad)
    if config['non_contiguous']:
        x, g = non_contiguous(x), non_contiguous(g)
    y = getattr(backend, name)(x, **limits)
    assert_close(y, expected, what=f'forward {config}')
    if name in ('relu', 'hardtanh'):
        np.testing.assert_array_equal(np.signbit(y), np.signbit(expected), err_msg=f'signed zeros {config}')
    saved = x if SAVED[name] == 'input' else y
    grad = getattr(backend, f'{name}_backward')(g, saved, **limits)
    finite_g = g[np.isfinite(g)]
    assert_close(grad, expected_grad, scale=float(np.max(np.abs(finite_g), initial=0.0)), what=f'backward {config}')


@pytest.mark.parametrize('chunk', range(CHUNKS))
def test_activation_sweep_matches_torch(backend, chunk):
    for config in sweep()[chunk * PER_CHUNK:(chunk + 1) * PER_CHUNK]:
        check_activation(backend, config, *inputs_of(config))


def test_activation_sweep_covers_the_required_cases():
    configs = sweep()
    assert len(configs) >= 500 and {c['name'] for c in configs} == set(NAMES)
    assert {np.dtype(c['dtype']).name for c in configs} == {'float32', 'float64'}
    assert any(c['non_contiguous'] for c in configs) and any(0 in c['shape'] for c in configs)
    assert {len(c['shape']) for c in configs} == {1, 2, 3, 4}


@settings(max_examples=40, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(NAMES), dtype=st.sampled_from(DTYPES),
       values=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=30),
       low=st.floats(-4, 0, width=32), width=st.floats(0.125, 4, width=32))
def test_activation_property_matches_torch(backend, name, dtype, values, low, width):
    config = dict(name=name, limits=dict(min_val=low, max_val=low + width) if name == 'hardtanh' else {},
                  non_contiguous=False)
    x = np.array(values, dtype)
    g = np.linspace(-1, 1, x.size).astype(dtype)
    check_activation(backend, config, x, g)


# ----------------------------------------------------------------------------- named semantics

@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: np.dtype(d).name)
def test_relu_at_signed_zero_and_nan_matches_torch(backend, dtype):
    x = np.array([-0.0, 0.0, np.nan, -np.nan, -1.0, 1.0], dtype)
    g = np.array([5.0, 6.0, 7.0, 8.0, np.inf, 2.0], dtype)
    expected, expected_grad = torch_activation(dict(name='relu', limits={}), x, g)
    y = backend.relu(x)
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(np.signbit(y[:2]), [True, False])
    np.testing.assert_array_equal(backend.relu_backward(g, x), expected_grad)


@pytest.mark.parametrize('limits', [(-1.0, 1.0), (0.0, 6.0), (-2.0, 0.5)])
def test_hardtanh_at_the_kinks_matches_torch(backend, limits):
    low, high = limits
    x = np.array([low, high, np.nextafter(low, 0), np.nextafter(high, 0), low - 1, high + 1, -0.0])
    g = np.arange(1.0, 8.0)
    config = dict(name='hardtanh', limits=dict(min_val=low, max_val=high))
    expected, expected_grad = torch_activation(config, x, g)
    np.testing.assert_array_equal(backend.hardtanh(x, low, high), expected)
    np.testing.assert_array_equal(backend.hardtanh_backward(g, x, low, high), expected_grad)
    assert expected_grad[0] == 0 and expected_grad[1] == 0


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: np.dtype(d).name)
def test_hardtanh_passes_the_gradient_at_nan_as_torchs_scalar_loop(backend, dtype):
    x, g = np.array([np.nan, 0.5, 3.0], dtype), np.array([2.0, 3.0, 4.0], dtype)
    expected = torch.ops.aten.hardtanh_backward(torch.from_numpy(g), torch.from_numpy(x), -1.0, 1.0).numpy()
    np.testing.assert_array_equal(expected, [2.0, 3.0, 0.0])
    np.testing.assert_array_equal(backend.hardtanh_backward(g, x), expected)
    np.testing.assert_array_equal(backend.hardtanh(x), [np.nan, 0.5, 1.0])


@pytest.mark.parametrize('name', ['sigmoid', 'tanh'])
def test_saturated_sigmoid_and_tanh_match_torch(backend, name):
    x = np.array([-np.inf, -104.0, -88.0, -20.0, 0.0, -0.0, 20.0, 88.0, np.inf], np.float32)
    g = np.ones_like(x)
    expected, expected_grad = torch_activation(dict(name=name, limits={}), x, g)
    y = getattr(backend, name)(x)
    assert_close(y, expected)
    assert_close(getattr(backend, f'{name}_backward')(g, y), expected_grad, scale=1.0)


@pytest.mark.parametrize('name', NAMES)
def test_activations_accept_transposed_and_sliced_arrays(backend, name):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 5, 4)).transpose(2, 0, 1)[:, ::2]
    g = rng.standard_normal((4, 3, 5))
    assert not x.flags.c_contiguous
    config = dict(name=name, limits={}, non_contiguous=False)
    check_activation(backend, config, x, g)
