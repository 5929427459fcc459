"""Convolution semantics without torch: 'same' padding splits d(k-1) with the extra element on the right,
conv*_input accepts any input size whose output matches (unreached rows get 0), unbatched input, batch
independence, the bias gradient."""
import numpy as np
import pytest
from conftest import BACKENDS, assert_close, assert_inner_equal, inner

pytestmark = pytest.mark.sanitize_subset


@pytest.mark.parametrize('dims', [1, 2, 3])
@pytest.mark.parametrize('kernel,dilation', [(2, 1), (4, 1), (4, 3), (3, 2), (1, 1)])
def test_same_padding_equals_explicit_asymmetric_padding(backend, dims, kernel, dilation):
    rng = np.random.default_rng(kernel + 10 * dilation)
    size = (4,) * dims if dims == 3 else (7,) * dims
    x, w = rng.standard_normal((1, 2) + size), rng.standard_normal((3, 2) + (kernel,) * dims)
    total = dilation * (kernel - 1)
    padded = np.pad(x, [(0, 0), (0, 0)] + [(total // 2, total - total // 2)] * dims)
    conv = getattr(backend, f'conv{dims}d')
    got = conv(x, w, padding='same', dilation=dilation)
    assert got.shape == (1, 3) + size
    assert_close(got, conv(padded, w, padding='valid', dilation=dilation))
    g = rng.standard_normal(got.shape)
    grad = getattr(backend, f'conv{dims}d_input')(x.shape, w, g, padding='same', dilation=dilation)
    assert_inner_equal(inner(got, g), inner(x, grad), inner(np.abs(got), np.abs(g)) + 1.0, 'same: input gradient')


@pytest.mark.parametrize('extra', [0, 1, 2])
def test_conv_input_with_a_larger_input_size_is_the_gradient_of_that_forward(backend, extra):
    rng = np.random.default_rng(extra)
    x = rng.standard_normal((2, 2, 9 + extra, 10))
    w = rng.standard_normal((4, 2, 3, 3))
    y = backend.conv2d(x, w, stride=3)
    assert y.shape == (2, 4, 3, 3)
    g = rng.standard_normal(y.shape)
    grad = backend.conv2d_input(x.shape, w, g, stride=3)
    assert grad.shape == x.shape
    assert np.all(grad[:, :, 9:] == 0) and np.all(grad[:, :, :, 9:] == 0)
    assert_inner_equal(inner(y, g), inner(x, grad), inner(np.abs(y), np.abs(g)) + 1.0)
    grad_w = backend.conv2d_weight(x, w.shape, g, stride=3)
    assert_inner_equal(inner(y, g), inner(w, grad_w), inner(np.abs(y), np.abs(g)) + 1.0)


@pytest.mark.parametrize('dims', [1, 2, 3])
def test_unbatched_conv_equals_the_batch_of_one(backend, dims):
    rng = np.random.default_rng(dims)
    x, w, b = rng.standard_normal((4,) + (5,) * dims), rng.standard_normal((6, 2) + (2,) * dims), np.arange(6.0)
    conv = getattr(backend, f'conv{dims}d')
    np.testing.assert_array_equal(conv(x, w, b, stride=2, padding=1, groups=2),
                                  conv(x[None], w, b, stride=2, padding=1, groups=2)[0])


def test_conv_batches_are_independent(backend):
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((3, 2, 6, 5)), rng.standard_normal((2, 2, 3, 2))
    whole = backend.conv2d(x, w, padding=(1, 2), dilation=(2, 1))
    for n in range(3):
        np.testing.assert_array_equal(whole[n:n + 1], backend.conv2d(x[n:n + 1], w, padding=(1, 2), dilation=(2, 1)))


def test_conv_bias_gradient_sums_over_batch_and_space(backend):
    g = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(backend.conv2d_bias(g), g.sum(axis=(0, 2, 3)))
    np.testing.assert_array_equal(backend.conv1d_bias(g[..., 0]), g[..., 0].sum(axis=(0, 2)))
    np.testing.assert_array_equal(backend.conv3d_bias(g[..., None]), g.sum(axis=(0, 2, 3)))


def test_groups_do_not_mix_channels(backend):
    rng = np.random.default_rng(8)
    x, w = rng.standard_normal((1, 4, 5, 5)), rng.standard_normal((6, 2, 3, 3))
    y = backend.conv2d(x, w, groups=2)
    x_second = x.copy()
    x_second[:, 2:] += 1.0                       # only the second group's input changes
    y_second = backend.conv2d(x_second, w, groups=2)
    np.testing.assert_array_equal(y[:, :3], y_second[:, :3])
    assert not np.allclose(y[:, 3:], y_second[:, 3:])


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
@pytest.mark.parametrize('channels, kernel, stride, padding, groups', [
    ((8, 16), 3, 2, 1, 2),
    ((1, 8), 5, 1, 0, 1)])   # one block of weight-gradient channels: with 2 threads its taps run in parallel
def test_c_conv_results_do_not_depend_on_the_thread_count(dtype, channels, kernel, stride, padding, groups):
    if 'c' not in BACKENDS:
        pytest.skip('C backend not selected')
    import generated.c as KC
    rng = np.random.default_rng(9)
    (c_in, c_out), params = channels, dict(stride=stride, padding=padding, groups=groups)
    x = rng.standard_normal((4, c_in, 33, 29)).astype(dtype)
    w = rng.standard_normal((c_out, c_in // groups, kernel, kernel)).astype(dtype)
    g = rng.standard_normal(KC.conv2d(x, w, **params).shape).astype(dtype)
    results, before = [], KC.get_num_threads()
    try:
        for threads in (1, 2, 3):
            KC.set_num_threads(threads)
            results.append((KC.conv2d(x, w, **params), KC.conv2d_input(x.shape, w, g, **params),
                            KC.conv2d_weight(x, w.shape, g, **params)))
    finally:
        KC.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)
