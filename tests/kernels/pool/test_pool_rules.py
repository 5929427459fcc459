"""max_pool and avg_pool kernels against the proven rules of derive.pool (codegen.spec.kernel_rules),
evaluated point by point at tiny sizes, independently of torch."""
from functools import cache

import numpy as np
import pytest
from conftest import RULE_TOLERANCE, assert_close, evaluate_max_rule, evaluate_rule, random_array

from codegen.spec import rule

# dims, N, C, input size, kernel, stride, padding, dilation, ceil_mode
MAX_CONFIGS = [
    (1, 2, 2, (7,), (3,), (2,), (1,), (1,), False),
    (1, 1, 1, (8,), (2,), (3,), (1,), (2,), True),                   # stride > kernel, dilation, ceil
    (2, 1, 2, (5, 6), (2, 3), (1, 2), (1, 1), (2, 1), False),
    (2, 2, 1, (4, 4), (4, 4), (4, 4), (0, 2), (1, 1), True),          # kernel equal to the input
    (2, 1, 1, (5, 5), (1, 1), (2, 2), (0, 0), (1, 1), False),         # 1x1 window
    (3, 1, 2, (3, 4, 3), (2, 2, 1), (1, 2, 1), (1, 0, 0), (1, 2, 1), True),
    # rows of 16 to 40 outputs: the C vector path (interior chunks, the overlapping last one, borders)
    (1, 1, 2, (40,), (3,), (1,), (1,), (1,), False),
    (2, 1, 1, (3, 37), (2, 3), (1, 2), (0, 1), (1, 2), True),
    (2, 2, 1, (4, 36), (2, 2), (2, 2), (0, 0), (1, 1), False),
]
# dims, N, C, input size, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override
AVG_CONFIGS = [
    (1, 2, 2, (7,), (3,), (2,), (1,), False, True, None),
    (1, 1, 1, (6,), (3,), (2,), (0,), True, True, None),               # last window runs past the input
    (1, 1, 1, (6,), (3,), (2,), (1,), True, False, None),
    (2, 1, 2, (5, 6), (3, 2), (2, 1), (1, 1), True, True, None),
    (2, 2, 1, (4, 5), (2, 2), (3, 3), (1, 0), False, False, 3),        # stride > kernel, override
    (2, 1, 1, (3, 3), (3, 3), (1, 1), (0, 0), False, True, -2),         # kernel equal to the input
    (3, 1, 2, (3, 4, 3), (2, 3, 1), (1, 2, 1), (1, 1, 0), True, False, None),
    # rows of 16 to 35 windows: the C vector paths (interior chunks, the masked last one, borders)
    (1, 1, 2, (40,), (3,), (2,), (1,), True, False, None),
    (2, 1, 1, (4, 70), (2, 2), (2, 2), (0, 0), False, True, None),
    (2, 2, 1, (3, 40), (2, 3), (1, 1), (1, 1), True, True, None),
    (3, 1, 1, (2, 3, 36), (1, 2, 3), (1, 1, 2), (0, 1, 1), False, False, 5),
]


def output_size(h, k, s, p, d, ceil_mode) -> int:
    """PyTorch's pooling output size (torch-semantics report, sec. 2)."""
    o = (h + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    return o - 1 if ceil_mode and (o - 1) * s >= h + p else o


def pool_sizes(dims, n, c, size, kernel, stride, padding, dilation, ceil_mode) -> dict:
    sizes = dict(N=n, C=c)
    out = tuple(output_size(*a, ceil_mode) for a in zip(size, kernel, stride, padding, dilation))
    for name, values in (('H', size), ('K', kernel), ('S', stride), ('P', padding), ('D', dilation), ('O', out)):
        sizes.update({f'{name}{d}': v for d, v in enumerate(values)})
    return sizes


def tie_and_nan_input(rng, shape) -> np.ndarray:
    """Small integers (many ties, -0.0 among them), one -inf and one NaN per array."""
    x = rng.integers(-2, 3, size=shape).astype(np.float64)
    x[x == 0] = rng.choice([0.0, -0.0], size=int(np.sum(x == 0)))
    flat = x.reshape(-1)
    flat[rng.integers(flat.size)] = -np.inf
    flat[rng.integers(flat.size)] = np.nan
    return x


@cache
def max_case(index: int):
    dims, n, c, size, kernel, stride, padding, dilation, ceil_mode = MAX_CONFIGS[index]
    sizes = pool_sizes(dims, n, c, size, kernel, stride, padding, dilation, ceil_mode)
    rng = np.random.default_rng(100 + index)
    x = tie_and_nan_input(rng, (n, c) + size)
    out, idx = evaluate_max_rule(rule(f'max_pool{dims}d'), sizes, {'input': x})
    g = random_array(rng, out.shape)
    # the printed rule is the scatter form over flat plane positions (derive.pool.max_pool_scatter)
    grad = evaluate_rule(rule(f'max_pool{dims}d_backward'), sizes, {'grad_output': g, 'indices': idx}).reshape(x.shape)
    params = dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode)
    return x, g, params, out, idx, grad


@pytest.mark.sanitize_subset
@pytest.mark.parametrize('index', range(len(MAX_CONFIGS)))
def test_max_pool_forward_equals_proven_rule(backend, index):
    x, _, params, out, idx, _ = max_case(index)
    dims = MAX_CONFIGS[index][0]
    got, got_idx = getattr(backend, f'max_pool{dims}d')(x, return_indices=True, **params)
    np.testing.assert_array_equal(got, out)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(out))
    np.testing.assert_array_equal(got_idx, idx)


@pytest.mark.sanitize_subset
@pytest.mark.parametrize('given', [False, True], ids=['recomputed', 'given-indices'])
@pytest.mark.parametrize('index', range(len(MAX_CONFIGS)))
def test_max_pool_backward_equals_proven_rule(backend, index, given):
    x, g, params, _, idx, grad = max_case(index)
    dims = MAX_CONFIGS[index][0]
    extra = dict(indices=idx) if given else {}
    got = getattr(backend, f'max_pool{dims}d_backward')(g, x, **params, **extra)
    assert_close(got, grad, tolerance=RULE_TOLERANCE)


@cache
def avg_case(index: int):
    dims, n, c, size, kernel, stride, padding, ceil_mode, include, override = AVG_CONFIGS[index]
    sizes = pool_sizes(dims, n, c, size, kernel, stride, padding, (1,) * dims, ceil_mode)
    sizes.update(count_include_pad=int(include), divisor_override=override or 0)
    rng = np.random.default_rng(200 + index)
    x = random_array(rng, (n, c) + size)
    out = evaluate_rule(rule(f'avg_pool{dims}d'), sizes, {'input': x})
    g = random_array(rng, out.shape)
    grad = evaluate_rule(rule(f'avg_pool{dims}d_backward'), sizes, {'grad_output': g})
    params = dict(kernel_size=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                  count_include_pad=include, divisor_override=override)
    return x, g, params, out, grad


@pytest.mark.sanitize_subset
@pytest.mark.parametrize('index', range(len(AVG_CONFIGS)))
def test_avg_pool_forward_equals_proven_rule(backend, index):
    x, _, params, out, _ = avg_case(index)
    got = getattr(backend, f'avg_pool{AVG_CONFIGS[index][0]}d')(x, **params)
    assert_close(got, out, tolerance=RULE_TOLERANCE)


@pytest.mark.sanitize_subset
@pytest.mark.parametrize('index', range(len(AVG_CONFIGS)))
def test_avg_pool_backward_equals_proven_rule(backend, index):
    x, g, params, _, grad = avg_case(index)
    got = getattr(backend, f'avg_pool{AVG_CONFIGS[index][0]}d_backward')(g, x, **params)
    assert_close(got, grad, tolerance=RULE_TOLERANCE)


def test_avg_rule_divides_the_ceil_mode_last_window_by_its_clipped_size():
    """The oracle itself: L=6, k=3, s=2, ceil, count_include_pad: the last window [4, 7) counts 2 positions."""
    x, _, _, out, _ = avg_case(1)
    assert out.shape[-1] == 3
    assert out[0, 0, 2] == pytest.approx((x[0, 0, 4] + x[0, 0, 5]) / 2)
