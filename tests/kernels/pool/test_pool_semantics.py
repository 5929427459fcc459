"""Pooling semantics pinned by values measured on PyTorch 2.13 CPU (torch-semantics report, sec. 2-3),
without torch: ties, NaN, -inf windows, indices, overlapping windows, the ceil_mode divisor, unbatched input."""
import numpy as np
import pytest
from conftest import BACKENDS, DTYPES, assert_close

pytestmark = pytest.mark.sanitize_subset


def row(values, dtype=np.float64) -> np.ndarray:
    return np.array(values, dtype)[None, None]


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize('values,kernel,indices', [
    ([1, 3, 3, 0, 3, 3], 3, [1, 1, 2, 4]),                       # ties: the first maximum in window order
    ([1, np.nan, 3, np.nan], 4, [3]),                             # NaN: the last NaN wins
    ([np.nan, np.nan, np.nan, np.nan], 4, [3]),
    ([-np.inf, np.nan, -np.inf, -np.inf], 4, [1]),
    ([np.nan, 1, 2, 3], 4, [0]),
    ([-np.inf, -np.inf, -np.inf, -np.inf], 2, [0, 1, 2]),         # all -inf: the first tap of each window
])
def test_max_pool1d_selection(backend, values, kernel, indices, dtype):
    x = row(values, dtype)
    y, idx = backend.max_pool1d(x, kernel, 1, return_indices=True)
    np.testing.assert_array_equal(idx[0, 0], indices)
    np.testing.assert_array_equal(y[0, 0], x[0, 0, indices])


@pytest.mark.parametrize('plane,index', [([[5, 5], [5, 5]], 0), ([[0, 2], [2, 0]], 1), ([[0.0, -0.0], [-0.0, 0.0]], 0),
                                         ([[-0.0, 0.0], [0.0, 0.0]], 0)])
def test_max_pool2d_ties_go_to_the_first_in_row_major_order(backend, plane, index):
    y, idx = backend.max_pool2d(np.array(plane, np.float64)[None, None], 2, return_indices=True)
    assert idx.item() == index
    assert np.signbit(y.item()) == np.signbit(np.array(plane).reshape(-1)[index])


def test_max_pool_padding_never_wins(backend):
    y, idx = backend.max_pool1d(row([-np.inf, -np.inf, 5.0]), 3, 1, 1, return_indices=True)
    np.testing.assert_array_equal(idx[0, 0], [0, 2, 2])
    np.testing.assert_array_equal(y[0, 0], [-np.inf, 5.0, 5.0])


@pytest.mark.parametrize('dims', [2, 3])
def test_max_pool_indices_are_flat_offsets_in_each_plane(backend, dims):
    rng = np.random.default_rng(dims)
    x = rng.standard_normal((2, 3) + (5,) * dims)
    y, idx = getattr(backend, f'max_pool{dims}d')(x, 3, 2, 1, return_indices=True)
    assert idx.dtype == np.int64 and idx.shape == y.shape
    planes = x.reshape(2, 3, -1)
    np.testing.assert_array_equal(np.take_along_axis(planes, idx.reshape(2, 3, -1), axis=2).reshape(y.shape), y)


def test_max_pool_backward_accumulates_overlapping_windows(backend):
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 5.0
    g = np.array([[[[1.0, 10.0], [100.0, 1000.0]]]])
    grad = backend.max_pool2d_backward(g, x, 2, 1)
    expected = np.zeros_like(x)
    expected[0, 0, 1, 1] = 1111.0
    np.testing.assert_array_equal(grad, expected)


def test_max_pool_backward_routes_to_the_last_nan(backend):
    x = row([1.0, np.nan, 3.0, np.nan, 0.0])
    grad = backend.max_pool1d_backward(np.array([[[2.0, 7.0]]]), x, 4, 1)
    np.testing.assert_array_equal(grad[0, 0], [0.0, 0.0, 0.0, 9.0, 0.0])


def test_max_pool_backward_with_its_own_indices_equals_recomputed(backend):
    rng = np.random.default_rng(1)
    x = rng.integers(-2, 3, size=(2, 2, 6, 5)).astype(np.float64)
    params = dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 1), dilation=(2, 1), ceil_mode=True)
    _, idx = backend.max_pool2d(x, return_indices=True, **params)
    g = rng.standard_normal(idx.shape)
    np.testing.assert_array_equal(backend.max_pool2d_backward(g, x, indices=idx, **params),
                                  backend.max_pool2d_backward(g, x, **params))


@pytest.mark.parametrize('padding,expected', [(0, [1.0, 1.0, 1.0]), (1, [2 / 3, 1.0, 1.0, 0.5])])
def test_avg_pool_ceil_mode_last_window_divisor(backend, padding, expected):
    """The last window runs past the padded input: those positions count in neither the sum nor the divisor."""
    got = backend.avg_pool1d(np.ones((1, 1, 6)), 3, 2, padding, ceil_mode=True)
    assert_close(got[0, 0], np.array(expected))


@pytest.mark.parametrize('include,override,expected', [(True, None, [2 / 3, 1.0, 1.0, 0.5]),
                                                       (False, None, [1.0, 1.0, 1.0, 1.0]),
                                                       (True, -1, [-2.0, -3.0, -3.0, -1.0])])
def test_avg_pool_divisor_rules(backend, include, override, expected):
    got = backend.avg_pool1d(np.ones((1, 1, 6)), 3, 2, 1, ceil_mode=True, count_include_pad=include,
                             divisor_override=override)
    assert_close(got[0, 0], np.array(expected))
    grad = backend.avg_pool1d_backward(np.ones((1, 1, 4)), np.ones((1, 1, 6)), 3, 2, 1, ceil_mode=True,
                                       count_include_pad=include, divisor_override=override)
    divisors = np.array([3, 3, 3, 2]) if include else np.array([2, 3, 3, 1])
    divisors = divisors if override is None else np.full(4, override)
    starts = np.array([-1, 1, 3, 5])
    manual = np.zeros(6)
    for start, div in zip(starts, divisors):
        manual[max(start, 0):min(start + 3, 6)] += 1 / div
    assert_close(grad[0, 0], manual)


@pytest.mark.parametrize('kind', ['max', 'avg'])
@pytest.mark.parametrize('dims', [1, 2, 3])
def test_unbatched_pool_equals_the_batch_of_one(backend, kind, dims):
    rng = np.random.default_rng(dims)
    x = rng.standard_normal((2,) + (5,) * dims)
    forward = getattr(backend, f'{kind}_pool{dims}d')
    y = forward(x, 3, 2, 1)
    np.testing.assert_array_equal(y, forward(x[None], 3, 2, 1)[0])
    g = rng.standard_normal(y.shape)
    backward = getattr(backend, f'{kind}_pool{dims}d_backward')
    np.testing.assert_array_equal(backward(g, x, 3, 2, 1), backward(g[None], x[None], 3, 2, 1)[0])
    if kind == 'max':
        _, idx = forward(x, 3, 2, 1, return_indices=True)
        assert idx.shape == y.shape


def test_c_pool_results_do_not_depend_on_the_thread_count():
    if 'c' not in BACKENDS:
        pytest.skip('C backend not selected')
    import generated.c as KC
    rng = np.random.default_rng(10)
    x = rng.integers(-3, 4, size=(3, 5, 31, 27)).astype(np.float32)
    g = rng.standard_normal((3, 5, 16, 14)).astype(np.float32)
    results, before = [], KC.get_num_threads()
    try:
        for threads in (1, 2, 3):
            KC.set_num_threads(threads)
            results.append(KC.max_pool2d(x, 3, 2, 1, return_indices=True)
                           + (KC.max_pool2d_backward(g, x, 3, 2, 1), KC.avg_pool2d(x, 3, 2, 1, ceil_mode=True),
                              KC.avg_pool2d_backward(g, x, 3, 2, 1, ceil_mode=True)))
    finally:
        KC.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)
