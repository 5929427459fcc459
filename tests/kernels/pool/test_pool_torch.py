"""max_pool and avg_pool (forward, indices, backward) against PyTorch: seeded sweeps, hypothesis property
tests, and the semantics of the torch-semantics report (ties, NaN, -inf windows, indices, overlapping
windows, the ceil_mode divisor, backward from given indices)."""
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


def output_size(h, k, s, p, d, ceil_mode) -> int:
    o = (h + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    return o - 1 if ceil_mode and (o - 1) * s >= h + p else o


def every_window_reads_input(h, k, s, p, d, ceil_mode) -> bool:
    """At least one output, and every window has a tap inside [0, h) (else torch's indices are garbage)."""
    o = output_size(h, k, s, p, d, ceil_mode)
    return o >= 1 and all(any(0 <= s * j + d * m - p < h for m in range(k)) for j in range(o))


def pool_values(rng, shape, dtype) -> np.ndarray:
    """Random data, or many ties (small integers, signed zeros), or NaNs, or -inf regions."""
    kind = rng.choice(['random', 'ties', 'nan', 'neginf'], p=[0.4, 0.3, 0.15, 0.15])
    if kind == 'random':
        return rng.standard_normal(shape).astype(dtype)
    x = rng.integers(-2, 3, size=shape).astype(dtype)
    x[x == 0] = rng.choice(np.array([0.0, -0.0], dtype), size=int(np.sum(x == 0)))
    if kind == 'nan':
        x[rng.random(shape) < 0.15] = np.nan
    if kind == 'neginf':
        x[rng.random(shape) < 0.5] = -np.inf
    return x


def random_window(rng, dims: int, dilated: bool, min_size: bool) -> dict:
    """Kernel, stride, padding, dilation, ceil_mode and an input size for which every window reads input."""
    while True:
        kernel = tuple(int(k) for k in rng.integers(1, 5 if dims < 3 else 4, size=dims))
        stride = None if rng.random() < 0.2 else tuple(int(s) for s in rng.integers(1, 5, size=dims))
        padding = tuple(int(rng.integers(0, k // 2 + 1)) for k in kernel)
        dilation = tuple(int(d) for d in rng.choice([1, 1, 2, 3], size=dims)) if dilated else (1,) * dims
        ceil_mode = bool(rng.random() < 0.4)
        span = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
        lows = tuple(k if min_size else max(1, s - 2 * p) for k, s, p in zip(kernel, span, padding))
        size = tuple(int(rng.integers(lo, lo + (6 if dims < 3 else 4))) for lo in lows)
        if rng.random() < 0.2:                             # wide rows: the C kernels' vector tiles and edges
            size = size[:-1] + (int(rng.integers(max(lows[-1], 15), 45)),)
        if rng.random() < 0.1:          # kernel equal to the input
            size, padding, dilation, stride = kernel, (0,) * dims, (1,) * dims, None
        steps = stride or kernel
        if all(every_window_reads_input(*a, ceil_mode) for a in zip(size, kernel, steps, padding, dilation)):
            return dict(kernel=kernel, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode,
                        size=size)


def compact(rng, values):
    """An int when all equal (sometimes), else a tuple."""
    if values is None:
        return None
    return int(values[0]) if len(set(values)) == 1 and rng.random() < 0.5 else tuple(values)


def random_pool_config(rng, kind: str) -> dict:
    dims = int(rng.choice([1, 2, 3], p=[0.3, 0.45, 0.25]))
    window = random_window(rng, dims, dilated=kind == 'max', min_size=kind == 'avg' and dims == 3)
    channels = int(rng.integers(1, 4)) if rng.random() < 0.85 else int(rng.integers(8, 12))   # blocks of 8 planes
    config = dict(kind=kind, dims=dims, batch=int(rng.integers(1, 4)), channels=channels,
                  unbatched=bool(rng.random() < 0.15), size=window['size'],
                  kernel_size=compact(rng, window['kernel']), stride=compact(rng, window['stride']),
                  padding=compact(rng, window['padding']), ceil_mode=window['ceil_mode'],
                  dtype=DTYPES[int(rng.integers(2))], non_contiguous=bool(rng.random() < 0.2),
                  seed=int(rng.integers(2**31)))
    if kind == 'max':
        config.update(dilation=compact(rng, window['dilation']), given_indices=bool(rng.random() < 0.5))
    else:
        override = int(rng.choice([-3, -1, 1, 2, 5, 7])) if rng.random() < 0.3 else None
        config.update(count_include_pad=bool(rng.random() < 0.5), divisor_override=override)
    return config


@cache
def sweep(kind: str) -> tuple:
    rng = np.random.default_rng({'max': 31, 'avg': 32}[kind])
    return tuple(random_pool_config(rng, kind) for _ in range(CHUNKS * PER_CHUNK))


def input_of(config: dict) -> np.ndarray:
    rng = np.random.default_rng(config['seed'])
    shape = (config['channels'],) + config['size']
    shape = shape if config['unbatched'] else (config['batch'],) + shape
    if config['kind'] == 'max':
        return pool_values(rng, shape, config['dtype'])
    return rng.standard_normal(shape).astype(config['dtype'])


def window_params(config: dict) -> dict:
    keys = ('kernel_size', 'stride', 'padding', 'ceil_mode') + (
        ('dilation',) if config['kind'] == 'max' else ('count_include_pad', 'divisor_override'))
    return {k: config[k] for k in keys}


def as_2d_window(config: dict) -> dict:
    """avg_pool1d has no divisor_override in torch: the same pool as a (1, k) avg_pool2d."""
    one = lambda v: None if v is None else (1,) + ((v,) if isinstance(v, int) else tuple(v))
    return dict(window_params(config), kernel_size=one(config['kernel_size']), stride=one(config['stride']),
                padding=(0,) + ((config['padding'],) if isinstance(config['padding'], int) else config['padding']))


def torch_pool(config: dict, x: np.ndarray, g=None) -> dict:
    xt = torch.from_numpy(x).requires_grad_()
    if config['kind'] == 'max':
        y, idx = getattr(F, f'max_pool{config["dims"]}d')(xt, return_indices=True, **window_params(config))
    elif config['dims'] == 1 and config['divisor_override'] is not None:
        y = F.avg_pool2d(xt.unsqueeze(-2), **as_2d_window(config)).squeeze(-2)
        idx = None
    else:
        params = {k: v for k, v in window_params(config).items() if v is not None or k != 'divisor_override'}
        y, idx = getattr(F, f'avg_pool{config["dims"]}d')(xt, **params), None
    out = dict(output=y.detach().numpy(), indices=None if idx is None else idx.numpy())
    if g is not None:
        out['grad_input'] = torch.autograd.grad(y, xt, torch.from_numpy(g))[0].numpy()
    return out


@cache
def torch_reference(kind: str, index: int) -> dict:
    config = sweep(kind)[index]
    x = input_of(config)
    y = torch_pool(config, x)['output']
    g = np.random.default_rng(config['seed'] + 1).standard_normal(y.shape).astype(config['dtype'])
    return dict(input=x, grad_output=g, **torch_pool(config, x, g), scale=float(np.max(np.abs(g), initial=0.0)))


def check_max_pool(backend, config: dict, ref: dict) -> None:
    x, g, params, dims = ref['input'], ref['grad_output'], window_params(config), config['dims']
    if config['non_contiguous']:
        x, g = non_contiguous(x), non_contiguous(g)
    y, idx = getattr(backend, f'max_pool{dims}d')(x, return_indices=True, **params)
    np.testing.assert_array_equal(y, ref['output'], err_msg=str(config))
    np.testing.assert_array_equal(np.signbit(y), np.signbit(ref['output']), err_msg=f'signed zeros {config}')
    np.testing.assert_array_equal(idx, ref['indices'], err_msg=str(config))
    assert np.array_equal(getattr(backend, f'max_pool{dims}d')(x, **params), y, equal_nan=True)
    extra = dict(indices=idx) if config['given_indices'] else {}
    grad = getattr(backend, f'max_pool{dims}d_backward')(g, x, **params, **extra)
    assert_close(grad, ref['grad_input'], scale=ref['scale'], what=str(config))


def check_avg_pool(backend, config: dict, ref: dict) -> None:
    x, g, params, dims = ref['input'], ref['grad_output'], window_params(config), config['dims']
    if config['non_contiguous']:
        x, g = non_contiguous(x), non_contiguous(g)
    assert_close(getattr(backend, f'avg_pool{dims}d')(x, **params), ref['output'],
                 scale=float(np.max(np.abs(x), initial=0.0)), what=str(config))
    assert_close(getattr(backend, f'avg_pool{dims}d_backward')(g, x, **params), ref['grad_input'],
                 scale=ref['scale'], what=str(config))


@pytest.mark.parametrize('chunk', range(CHUNKS))
def test_max_pool_sweep_matches_torch(backend, chunk):
    for index in range(chunk * PER_CHUNK, (chunk + 1) * PER_CHUNK):
        check_max_pool(backend, sweep('max')[index], torch_reference('max', index))


@pytest.mark.parametrize('chunk', range(CHUNKS))
def test_avg_pool_sweep_matches_torch(backend, chunk):
    for index in range(chunk * PER_CHUNK, (chunk + 1) * PER_CHUNK):
        check_avg_pool(backend, sweep('avg')[index], torch_reference('avg', index))


def _tuple(value, dims):
    return (value,) * dims if isinstance(value, int) else value


@pytest.mark.parametrize('kind', ['max', 'avg'])
def test_pool_sweep_covers_the_required_cases(kind):
    configs = sweep(kind)
    assert len(configs) >= 500 and {c['dims'] for c in configs} == {1, 2, 3}
    assert any(c['ceil_mode'] for c in configs) and any(c['unbatched'] for c in configs)
    assert any(c['stride'] is None for c in configs) and any(c['non_contiguous'] for c in configs)
    assert any(c['size'] == _tuple(c['kernel_size'], c['dims']) for c in configs)
    assert any(min(_tuple(c['kernel_size'], c['dims'])) == 1 for c in configs)
    assert any(c['stride'] is not None and any(s > k for s, k in zip(_tuple(c['stride'], c['dims']),
                                                                     _tuple(c['kernel_size'], c['dims'])))
               for c in configs)
    assert any(max(_tuple(c['padding'], c['dims'])) > 0 for c in configs)
    assert {np.dtype(c['dtype']).name for c in configs} == {'float32', 'float64'}
    assert sum(c['size'][-1] >= 16 for c in configs) >= 50, 'rows as wide as a vector of floats'
    assert sum(c['channels'] >= 8 and c['size'][-1] >= 16 for c in configs) >= 5, 'blocks of 8 planes'
    if kind == 'max':
        assert any(max(_tuple(c['dilation'], c['dims'])) > 1 for c in configs)
        assert any(c['given_indices'] for c in configs)
    else:
        assert any(c['divisor_override'] is not None and c['dims'] == 1 for c in configs)
        assert any(c['divisor_override'] is not None and c['dims'] > 1 for c in configs)
        assert any(not c['count_include_pad'] for c in configs)


# ----------------------------------------------------------------------------- hypothesis

@st.composite
def pool_cases(draw):
    kind = draw(st.sampled_from(['max', 'avg']))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    return random_pool_config(rng, kind)


@settings(max_examples=40, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=pool_cases())
def test_pool_property_matches_torch(backend, config):
    x = input_of(config)
    y = torch_pool(config, x)['output']
    g = np.random.default_rng(config['seed']).standard_normal(y.shape).astype(config['dtype'])
    ref = dict(input=x, grad_output=g, **torch_pool(config, x, g), scale=float(np.max(np.abs(g), initial=0.0)))
    (check_max_pool if config['kind'] == 'max' else check_avg_pool)(backend, config, ref)


# ----------------------------------------------------------------------------- named semantics

def torch_max(x: np.ndarray, **params):
    y, idx = getattr(F, f'max_pool{x.ndim - 2}d')(torch.from_numpy(x), return_indices=True, **params)
    return y.numpy(), idx.numpy()


@pytest.mark.parametrize('row,kernel,stride', [
    ([1, 3, 3, 0, 3, 3], 3, 1),                          # ties: first maximum
    ([1, np.nan, 3, np.nan], 4, 1),                      # NaN: the last NaN
    ([np.nan] * 4, 2, 1),
    ([-np.inf, np.nan, -np.inf, -np.inf], 4, 1),
    ([-np.inf] * 4, 2, 2),                               # all -inf: first tap
    ([0.0, -0.0, -0.0, 0.0], 2, 1),                      # signed zeros compare equal
])
def test_max_pool_selection_matches_torch(backend, row, kernel, stride):
    x = np.array(row, np.float64)[None, None]
    expected, expected_idx = torch_max(x, kernel_size=kernel, stride=stride)
    got, idx = backend.max_pool1d(x, kernel, stride, return_indices=True)
    np.testing.assert_array_equal(idx, expected_idx)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(expected))


@pytest.mark.sanitize_subset
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('kernel, stride, padding, dilation, ceil_mode', [
    (2, 2, 0, 1, False), (3, 2, 1, 1, False), (3, 1, 1, 1, False), (2, 3, 1, 2, True), (4, 1, 2, 1, True),
    # the row registers at stride 3 (lower_vector.max_vector_nodes): taps reaching the last lane of the three
    # vectors in float32 (2 + 3 x 15 = 47, also dilated: 2 x 1 + 45), and past it (the other path)
    (3, 3, 1, 1, False), (2, 3, 0, 2, True), (4, 3, 1, 1, False)])
@pytest.mark.parametrize('width', [103, 71, 67, 65, 49])
def test_max_pool_wide_rows_match_torch(backend, dtype, kernel, stride, padding, dilation, ceil_mode, width):
    """Rows of 16 to 105 outputs (the C kernels' vector path for both float widths: chunks in pairs, then
    a pair, one chunk or none for the rest), ties, NaN and -inf; 8 input rows: output rows whose taps
    are all inside run two at a time (lower_vector.max_vector_nodes), and so do the channels of the
    same data as max_pool1d, an odd row or channel left over.  NaN in input row 5 only: the vector
    compare leaves NaN to the scalar element, which runs again each output row that reads one, and
    the other rows keep the vectors' results."""
    rng = np.random.default_rng(kernel * 100 + stride * 10 + padding + width)
    x = rng.integers(-2, 3, size=(2, 3, 8, width)).astype(dtype)
    x[..., 5, :][rng.random(x.shape[:2] + (width,)) < 0.05] = np.nan
    x[rng.random(x.shape) < 0.1] = -np.inf
    params = dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode)
    for pool, data in ((backend.max_pool2d, x), (backend.max_pool1d, x.reshape(2, 3 * 8, width)[:, 1:])):
        expected, expected_idx = torch_max(data, **params)
        got, idx = pool(data, return_indices=True, **params)
        np.testing.assert_array_equal(idx, expected_idx)
        np.testing.assert_array_equal(got, expected)


@pytest.mark.sanitize_subset
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('width', [27, 28, 49, 50])
def test_max_pool_left_border_chunk_matches_torch(backend, dtype, width):
    """3x3 s2 p1 rows of 14 and 25 outputs: the C kernels run the two rows' first chunk, whose first
    window reaches the padding, with its taps masked to -inf and interleaved with the chunk that ends
    the row (lower_vector.max_vector_nodes), in float32 at 25 outputs and in float64 at 14; in float32
    on AVX-512 their taps come from row registers (the copy for a 3-wide window at stride 2), in 1, 2
    and 3 dimensions.  Windows whose inside holds only -inf keep their first tap inside (the row runs
    the scalar element again), ties keep the first, a NaN the last."""
    rng = np.random.default_rng(width)
    x = rng.integers(-2, 3, size=(2, 3, 10, width)).astype(dtype)
    x[..., :2] = -np.inf                       # the first window of every row: -inf inside
    x[0, 1, 4, 7] = np.nan                     # one row pair's sentinel
    x[1, 2, :, 1] = 5.0                        # a tie in the first window, across its rows
    params = dict(kernel_size=3, stride=2, padding=1)
    for pool, data in ((backend.max_pool2d, x), (backend.max_pool1d, x.reshape(2, 3 * 10, width)),
                       (backend.max_pool3d, x[:, :, None])):
        expected, expected_idx = torch_max(data, **params)
        got, idx = pool(data, return_indices=True, **params)
        np.testing.assert_array_equal(idx, expected_idx)
        np.testing.assert_array_equal(got, expected)


@pytest.mark.sanitize_subset
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('height, width', [(3, 33), (5, 34), (8, 63), (13, 64), (10, 97), (29, 40)])
@pytest.mark.parametrize('padding, ceil_mode', [(1, False), (0, False), (0, True), (1, True)])
def test_max_pool_strips_carrying_a_window_row_match_torch(backend, dtype, height, width, padding, ceil_mode):
    """3x3 s2 max pooling with rows of 16 outputs or more: in float32 on AVX-512 the C kernels run the
    rows whose window rows are all inside in strips one vector wide down the plane, selecting along each
    window row and then among the rows, a row's last window row carried as the next row's first
    (lower_vector._strip_rows): one inside row or many, strips that end the row overlapping the one
    before (widths whose outputs are not a multiple of 16) or not (32 and 48 outputs), windows reaching
    the padding on either side, ceil mode's last window past the input.  Ties within a window row and
    across the carried row keep the first; windows whose inside holds only -inf keep their first tap
    inside (the plane runs the scalar element again); a NaN in one plane sends that plane to the scalar
    element, and the other planes keep the strips' results."""
    rng = np.random.default_rng(height * 1000 + width * 10 + padding)
    x = rng.integers(-2, 3, size=(2, 3, height, width)).astype(dtype)
    x[..., :2] = -np.inf                       # every row's first window: -inf inside
    x[..., -1] = -np.inf
    x[1, 2, height // 2, width // 3] = np.nan
    x[0, 1, 2::2, 5] = 9.0                     # a tie on the carried rows: the upper window takes it first
    params = dict(kernel_size=3, stride=2, padding=padding, ceil_mode=ceil_mode)
    expected, expected_idx = torch_max(x, **params)
    got, idx = backend.max_pool2d(x, return_indices=True, **params)
    np.testing.assert_array_equal(idx, expected_idx)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.sanitize_subset
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('kernel, stride, padding, ceil_mode, count_include_pad, divisor_override', [
    (2, 2, 0, False, True, None), (3, 2, 1, False, True, None), (3, 2, 1, True, False, None),
    (3, 1, 1, False, False, None), (2, 3, 1, True, True, 3), (4, 1, 2, True, False, None),
    # the forward's row registers (lower_vector._row_taps): taps that reach the last lane of its three
    # vectors (3 at stride 3 in float32: 2 + 3 x 15 = 47), or would pass it (4 at stride 3: the other path)
    (3, 3, 1, True, True, None), (4, 3, 2, False, False, None), (5, 2, 2, False, True, 7)])
def test_avg_pool_wide_rows_match_torch(backend, dtype, kernel, stride, padding, ceil_mode, count_include_pad,
                                        divisor_override):
    """Rows of 18 to 71 windows: the C kernels' vector paths for both float widths (forward: chunks of
    outputs; backward: chunks of windows scattered to their taps, interior first, then the borders)."""
    rng = np.random.default_rng(kernel * 100 + stride * 10 + padding)
    x = rng.standard_normal((2, 3, 6, 71)).astype(dtype)
    params = dict(kernel_size=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                  count_include_pad=count_include_pad, divisor_override=divisor_override)
    t = torch.from_numpy(x).requires_grad_()
    expected = F.avg_pool2d(t, **params)
    g = rng.standard_normal(tuple(expected.shape)).astype(dtype)
    expected.backward(torch.from_numpy(g))
    assert_close(backend.avg_pool2d(x, **params), expected.detach().numpy())
    assert_close(backend.avg_pool2d_backward(g, x, **params), t.grad.numpy())


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('kernel, stride, padding', [(3, 1, 1), (3, 2, 1), (4, 3, 2), (2, 1, 0)])
def test_avg_pool_backward_of_few_planes_on_tall_planes_matches_torch(backend, dtype, kernel, stride, padding):
    """Fewer planes than a register block of 8 on planes of 37 rows: the C gather runs the rows whose
    windows are all inside in blocks of rows (lower_vector._row_blocks), except at stride 2 along the rows,
    where both residues' chunks run at once (_residue_pairs)."""
    rng = np.random.default_rng(kernel * 100 + stride)
    x = rng.standard_normal((2, 3, 37, 45)).astype(dtype)
    params = dict(kernel_size=kernel, stride=stride, padding=padding)
    t = torch.from_numpy(x).requires_grad_()
    expected = F.avg_pool2d(t, **params)
    g = rng.standard_normal(tuple(expected.shape)).astype(dtype)
    expected.backward(torch.from_numpy(g))
    assert_close(backend.avg_pool2d_backward(g, x, **params), t.grad.numpy())


@pytest.mark.sanitize_subset
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('height, width', [(3, 33), (4, 34), (8, 63), (13, 64), (10, 97), (29, 40)])
@pytest.mark.parametrize('padding, ceil_mode, count_include_pad, divisor_override', [
    (1, False, True, None), (0, False, True, None), (1, True, False, None), (0, True, True, None),
    (1, False, False, 5)])
def test_avg_pool_strips_carrying_a_window_row_match_torch(backend, dtype, height, width, padding, ceil_mode,
                                                           count_include_pad, divisor_override):
    """3x3 s2 average pooling with rows of 16 outputs or more: in float32 on AVX-512 the C kernels run
    every row in strips two vectors wide down the plane, each window row's taps summed once and a
    row's last window row's sum carried as the next row's first, the input's rows outside it read as
    zeros (lower_vector._sum_strips): windows reaching the padding above, below and on either side,
    ceil mode's last windows past the input, every divisor rule; strips that end the row overlapping
    the one before or not."""
    rng = np.random.default_rng(height * 1000 + width * 10 + padding)
    x = rng.standard_normal((2, 3, height, width)).astype(dtype)
    params = dict(kernel_size=3, stride=2, padding=padding, ceil_mode=ceil_mode,
                  count_include_pad=count_include_pad, divisor_override=divisor_override)
    expected = F.avg_pool2d(torch.from_numpy(x), **params).numpy()
    assert_close(backend.avg_pool2d(x, **params), expected)


@pytest.mark.sanitize_subset
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('size, kernel, divisor_override', [
    ((2, 3, 10, 32), 2, None), ((2, 3, 6, 36), 2, 3), ((1, 2, 9, 105), 3, None), ((2, 2, 4, 10), 2, None),
    ((1, 2, 5, 5), 1, None), ((2, 3, 48), 4, None), ((1, 2, 4, 6, 40), 2, 5), ((2, 2, 4, 6), 2, None),
    ((2, 3, 22), 2, None), ((1, 2, 2, 4, 14), 2, None)])
def test_avg_pool_backward_of_tiling_windows_matches_torch(backend, dtype, size, kernel, divisor_override):
    """Windows that tile the input (kernel = stride, no padding, no remainder): the C backward stores each
    share once, no zeroing and no adds (derive.zsum.exact_cover, claim pool.avg-tiling), at stride 2 both
    taps of a row in one interleaved store.  Rows of whole vectors, of a partial one (its last chunk
    rewriting lanes), narrower than a vector (3 outputs: float64's 4 lanes too); strides 1-4; 1-3 d; a
    divisor override."""
    rng = np.random.default_rng(sum(size) + kernel)
    x = rng.standard_normal(size).astype(dtype)
    params = dict(kernel_size=kernel, stride=kernel)
    params |= {} if divisor_override is None else dict(divisor_override=divisor_override)   # not in avg_pool1d
    t = torch.from_numpy(x).requires_grad_()
    expected = getattr(F, f'avg_pool{len(size) - 2}d')(t, **params)
    g = rng.standard_normal(tuple(expected.shape)).astype(dtype)
    expected.backward(torch.from_numpy(g))
    got = getattr(backend, f'avg_pool{len(size) - 2}d_backward')(g, x, **params)
    assert_close(got, t.grad.numpy())


@pytest.mark.sanitize_subset
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('size, kernel', [
    ((2, 3, 10, 32), 2), ((2, 4, 8, 56), 2), ((1, 2, 9, 105), 3), ((2, 2, 4, 10), 2), ((1, 2, 5, 5), 1),
    ((2, 3, 48), 4), ((2, 3, 22), 2), ((1, 2, 4, 6, 40), 2), ((1, 2, 2, 4, 14), 2), ((1, 3, 6, 36), 3)])
def test_max_pool_backward_of_tiling_windows_matches_torch(backend, dtype, size, kernel):
    """Windows that tile the input (kernel = stride, no padding, no remainder): the C backward stores, per tap,
    the gradient where the selectors name the tap and 0 elsewhere (pool.max-tiling), no zeroing, no adds; at
    stride 2 both taps of a row in one interleaved store.  Rows of whole vectors, of a partial one (its last
    chunk rewriting lanes), narrower than a vector; strides 1-4; 1-3 d; inputs with ties, NaN and -inf; gradients
    with infinities, NaN and -0.0, which must reach the selected position only (no 0 * inf)."""
    rng = np.random.default_rng(sum(size) + 7 * kernel)
    x = pool_values(rng, size, dtype)
    t = torch.from_numpy(x).requires_grad_()
    expected = getattr(F, f'max_pool{len(size) - 2}d')(t, kernel, kernel)
    g = rng.standard_normal(tuple(expected.shape)).astype(dtype)
    g.reshape(-1)[rng.choice(g.size, size=min(g.size, 6), replace=False)] = [np.inf, -np.inf, np.nan, -0.0, 0.0, 1e30][
        :min(g.size, 6)]
    expected.backward(torch.from_numpy(g))
    got = getattr(backend, f'max_pool{len(size) - 2}d_backward')(g, x, kernel, kernel)
    assert_close(got, t.grad.numpy())


@pytest.mark.sanitize_subset
@pytest.mark.parametrize('dims', [1, 2, 3])
def test_max_pool_backward_of_tiling_windows_honours_indices_outside_their_windows(backend, dims):
    """Given indices that name positions outside their windows (inside the plane): where the windows tile the
    input, the C backward's stores per tap find such a window unmatched and run the selector scatter instead,
    which adds its gradient there, as aten does; an index outside the plane is refused, naming indices."""
    rng = np.random.default_rng(40 + dims)
    shape = (2, 3) + (4,) * (dims - 1) + (36,)
    x = rng.standard_normal(shape)
    _, idx = getattr(backend, f'max_pool{dims}d')(x, 2, 2, return_indices=True)
    g = rng.standard_normal(idx.shape)
    plane = int(np.prod(shape[2:]))
    moved = idx.copy()
    flat = moved.reshape(-1)
    flat[::7] = (flat[::7] + 5) % plane       # some windows per plane, in and out of the vector chunks
    expected = aten_max_pool_backward(g, x, moved, 2, 2, 0, 1)
    got = getattr(backend, f'max_pool{dims}d_backward')(g, x, 2, 2, indices=moved)
    assert_close(got, expected)
    assert not np.allclose(got, getattr(backend, f'max_pool{dims}d_backward')(g, x, 2, 2, indices=idx))
    flat[3] = plane
    with pytest.raises(ValueError, match='indices'):
        getattr(backend, f'max_pool{dims}d_backward')(g, x, 2, 2, indices=moved)


def one_divisor(size, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override) -> bool:
    """Whether the C backward runs the gather form with one divisor (derive.pool.uniform_divisor, and not
    the tiling windows' store: codegen.spec) for these sizes."""
    from derive import pool
    dims = len(size) - 2
    s = pool.pool_symbols(dims)
    values = {s['divisor_override']: divisor_override or 0, s['count_include_pad']: int(count_include_pad)}
    for d, h in enumerate(size[2:]):
        values |= {s['H'][d]: h, s['K'][d]: kernel, s['S'][d]: stride, s['P'][d]: padding,
                   s['O'][d]: output_size(h, kernel, stride, padding, 1, ceil_mode)}
    return bool(pool.uniform_divisor(dims)[0].xreplace(values) and not pool.avg_tiling(dims).xreplace(values))


@pytest.mark.sanitize_subset
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('size, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override, uniform', [
    ((2, 3, 9, 56), 3, 2, 1, False, True, None, True), ((1, 10, 8, 57), 3, 2, 1, False, True, None, True),
    ((1, 9, 7, 71), 3, 3, 1, False, True, None, True), ((1, 2, 6, 40), 3, 1, 1, False, True, None, True),
    ((1, 2, 9, 45), 2, 2, 0, False, False, None, True), ((1, 2, 7, 50), 4, 3, 2, True, False, 5, True),
    ((2, 2, 9, 63), 3, 2, 1, True, True, None, True), ((1, 2, 8, 64), 3, 2, 1, True, True, None, False),
    ((1, 2, 9, 56), 3, 2, 1, False, False, None, False), ((2, 3, 37), 3, 2, 1, False, True, None, True),
    ((1, 2, 5, 6, 40), 3, 2, 1, False, True, None, True), ((1, 2, 4, 6, 35), 2, 2, 0, False, False, 3, True),
    ((1, 9, 5, 61), 5, 2, 1, False, True, None, True), ((2, 9, 6, 13), 3, 2, 1, False, True, None, True),
    ((1, 2, 5, 32), 3, 2, 1, False, True, None, True), ((1, 3, 3, 4, 21), 3, 2, 1, False, True, None, True)])
def test_avg_pool_backward_with_one_divisor_matches_torch(backend, dtype, size, kernel, stride, padding, ceil_mode,
                                                         count_include_pad, divisor_override, uniform):
    """Sizes where every window has the same divisor (the C backward's gather per residue of the stride:
    pool.avg-uniform) and, for contrast, where it has not (ceil_mode's partial last window, padding not
    counted: the scatter form): strides 1-3, odd and even widths (residues of different lengths), rows
    past a vector, 1-3 d, a divisor override, 9 and 10 channels (a block of 8 planes and the rest).  At
    stride 2 along the rows both residues' chunks store interleaved (lower_vector._residue_pairs): rows
    whose first chunk is outside the interior (5 taps, padding 1), rows too short for a pair in float32
    but not in float64 (7 and 6 positions), rows of whole vectors (16 positions), an odd width's last
    position (residue 0 only)."""
    assert one_divisor(size, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override) == uniform
    rng = np.random.default_rng(sum(size) + kernel * 7 + stride)
    x = rng.standard_normal(size).astype(dtype)
    params = dict(kernel_size=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                  count_include_pad=count_include_pad)
    params |= {} if divisor_override is None else dict(divisor_override=divisor_override)
    t = torch.from_numpy(x).requires_grad_()
    expected = getattr(F, f'avg_pool{len(size) - 2}d')(t, **params)
    g = rng.standard_normal(tuple(expected.shape)).astype(dtype)
    expected.backward(torch.from_numpy(g))
    assert_close(getattr(backend, f'avg_pool{len(size) - 2}d_backward')(g, x, **params), t.grad.numpy())


@pytest.mark.sanitize_subset
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('kernel, padding', [((5, 3), (2, 1)), ((3, 5), (1, 2)), ((3, 3), (1, 0))])
def test_avg_pool_backward_of_the_common_column_window_matches_torch(backend, dtype, kernel, padding):
    """The C gather at stride 2 has a copy for a column window of 3 padded by 1 (lower_vector.COMMON_WINDOW,
    its tap bounds constants): it is chosen by the columns alone, whatever the rows' window (5 tall, padded
    by 2); beside it a column window of 5, or of 3 unpadded, run the general copy."""
    rng = np.random.default_rng(kernel[0] * 10 + padding[1])
    x = rng.standard_normal((2, 9, 11, 58)).astype(dtype)
    params = dict(kernel_size=kernel, stride=2, padding=padding)
    t = torch.from_numpy(x).requires_grad_()
    expected = F.avg_pool2d(t, **params)
    g = rng.standard_normal(tuple(expected.shape)).astype(dtype)
    expected.backward(torch.from_numpy(g))
    assert_close(backend.avg_pool2d_backward(g, x, **params), t.grad.numpy())


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('dims, kernel, stride, padding, dilation', [
    (1, 3, 1, 1, 1), (2, 3, 2, 1, 1), (2, 2, 1, 1, 2), (3, 3, 2, 1, 1), (3, (2, 3, 2), 1, (1, 1, 0), (2, 1, 1))])
def test_max_pool_wide_rows_of_neg_inf_match_torch(backend, dtype, dims, kernel, stride, padding, dilation):
    """Windows of -inf only (plus a few finite values) in rows of 40 outputs, padded in every dimension:
    every position must be the window's first tap inside the input, the one the C vector path starts
    from before any comparison (a wrong first position for the windows that begin in the padding of
    an outer dimension shows up here)."""
    rng = np.random.default_rng(dims * 10 + stride)
    shape = (1, 2) + (5,) * (dims - 1) + (41,)
    x = np.full(shape, -np.inf, dtype)
    x[rng.random(shape) < 0.02] = 1.0
    params = dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation)
    pool = getattr(F, f'max_pool{dims}d')
    expected, expected_idx = pool(torch.from_numpy(x), return_indices=True, **params)
    got, idx = getattr(backend, f'max_pool{dims}d')(x, return_indices=True, **params)
    np.testing.assert_array_equal(idx, expected_idx.numpy())
    np.testing.assert_array_equal(got, expected.numpy())


def test_max_pool_padded_neg_inf_window_matches_torch(backend):
    x = np.full((1, 1, 3, 3), -np.inf)
    expected, expected_idx = torch_max(x, kernel_size=2, stride=1, padding=1)
    got, idx = backend.max_pool2d(x, 2, 1, 1, return_indices=True)
    np.testing.assert_array_equal(idx, expected_idx)
    np.testing.assert_array_equal(got, expected)


def test_max_pool_backward_overlapping_windows_match_torch(backend):
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 5.0
    g = np.array([[[[1.0, 10.0], [100.0, 1000.0]]]])
    xt = torch.from_numpy(x).requires_grad_()
    expected = torch.autograd.grad(F.max_pool2d(xt, 2, 1), xt, torch.from_numpy(g))[0].numpy()
    got = backend.max_pool2d_backward(g, x, 2, 1)
    np.testing.assert_array_equal(got, expected)
    assert got[0, 0, 1, 1] == 1111.0


def aten_max_pool_backward(g, x, idx, kernel: int, stride: int, padding: int, dilation: int) -> np.ndarray:
    """aten::max_pool{2,3}d_with_indices_backward (a 1-d pool as a (1, k) 2-d pool)."""
    dims = x.ndim - 2
    if dims == 1:
        lift = lambda a: torch.from_numpy(np.ascontiguousarray(a[:, :, None]))
        out = torch.ops.aten.max_pool2d_with_indices_backward(lift(g), lift(x), [1, kernel], [1, stride], [0, padding],
                                                              [1, dilation], False, lift(idx))
        return out.numpy()[:, :, 0]
    op = getattr(torch.ops.aten, f'max_pool{dims}d_with_indices_backward')
    return op(torch.from_numpy(g), torch.from_numpy(x), [kernel] * dims, [stride] * dims, [padding] * dims,
              [dilation] * dims, False, torch.from_numpy(idx)).numpy()


@pytest.mark.parametrize('dims', [1, 2, 3])
def test_max_pool_backward_from_given_indices_matches_torch(backend, dims):
    """Indices of one input applied to the gradient of another, as aten's max_pool*_with_indices_backward."""
    rng = np.random.default_rng(dims)
    shape = (2, 2) + (5,) * dims
    first, second = rng.standard_normal(shape), rng.standard_normal(shape)
    params = dict(kernel_size=2, stride=1, padding=1, dilation=2)
    _, idx = getattr(backend, f'max_pool{dims}d')(first, return_indices=True, **params)
    g = rng.standard_normal(idx.shape)
    expected = aten_max_pool_backward(g, second, idx, *params.values())
    got = getattr(backend, f'max_pool{dims}d_backward')(g, second, indices=idx, **params)
    assert_close(got, expected)
    recomputed = getattr(backend, f'max_pool{dims}d_backward')(g, second, **params)
    assert not np.allclose(recomputed, got), 'the given indices are used, not recomputed'


def test_avg_pool_ceil_mode_last_window_divisor_matches_torch(backend):
    x = np.ones((1, 1, 6))
    for padding, expected in ((0, [1.0, 1.0, 1.0]), (1, [2 / 3, 1.0, 1.0, 0.5])):
        ref = F.avg_pool1d(torch.from_numpy(x), 3, 2, padding, ceil_mode=True).numpy()
        got = backend.avg_pool1d(x, 3, 2, padding, ceil_mode=True)
        assert_close(got, ref)
        assert_close(got[0, 0], np.array(expected))


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: np.dtype(d).name)
def test_pools_accept_transposed_and_sliced_arrays(backend, dtype):
    rng = np.random.default_rng(17)
    x = rng.standard_normal((9, 8, 3, 2)).astype(dtype).transpose(3, 2, 1, 0)[:, :, ::2]     # (2, 3, 4, 9)
    assert not x.flags.c_contiguous
    contiguous = torch.from_numpy(np.ascontiguousarray(x))
    y, idx = F.max_pool2d(contiguous, 2, 1, 1, return_indices=True)
    got, got_idx = backend.max_pool2d(x, 2, 1, 1, return_indices=True)
    np.testing.assert_array_equal(got, y.numpy())
    np.testing.assert_array_equal(got_idx, idx.numpy())
    g = rng.standard_normal((2, 3, 5, 10, 2)).astype(dtype)[..., 0]
    xt = contiguous.clone().requires_grad_()
    expected = torch.autograd.grad(F.avg_pool2d(xt, 3, 2, 1, ceil_mode=True), xt,
                                   torch.from_numpy(np.ascontiguousarray(g[:, :, :3, :5])))[0]
    got = backend.avg_pool2d_backward(g[:, :, :3, :5], x, 3, 2, 1, ceil_mode=True)
    assert_close(got, expected.numpy())
