"""The low-level kernels whose public functions return a fresh, uninitialized array (convolution forward
and input gradient, average pooling forward and backward) write every element of it: an output full of
NaN comes back equal to torch's.  The cases have input elements that no window reaches (a stride larger
than the window, rows past the last window), padding and dilation.  ``prepare`` with a shape allocates
that array itself, anew at each call."""
import importlib

import numpy as np
import pytest
from conftest import BACKENDS, assert_close

from generated._api import ConvGeometry, PoolGeometry, avg_options

torch = pytest.importorskip('torch')
F = torch.nn.functional

LOW_LEVEL = {'numpy': 'generated.numpy._kernels', 'c': 'generated.c._binding'}

# (input size, weight shape, stride, padding, dilation)
CONV_INPUT = [
    ((2, 3, 11), (4, 3, 2), 3, 0, 1),
    ((2, 3, 11, 13), (4, 3, 2, 2), 3, 0, 1),           # gaps between windows, a row and a column past the last
    ((1, 2, 19, 21), (3, 2, 3, 3), 2, 1, 2),
    ((2, 17, 40, 40), (8, 17, 3, 3), 1, 1, 1),          # rows of whole and partial vectors, channel blocks
    ((1, 2, 7, 8, 9), (2, 2, 2, 2, 2), 3, 0, 1),
]
# (input shape, kernel size, stride, padding)
AVERAGE = [
    ((2, 3, 11), 2, 3, 0),
    ((2, 3, 11, 13), 2, 3, 0),
    ((2, 3, 56, 56), 3, 2, 1),
    ((1, 2, 40, 37), 2, 2, 0),                          # a column past the last window: not a tiling
    ((1, 2, 41, 36), 2, 2, 0),                          # a row past the last window: not a tiling
    ((2, 3, 40, 36), 2, 2, 0),                          # windows that tile the input: stores, no zeroing
    ((2, 3, 12), 3, 3, 0),
    ((1, 2, 6, 8, 10), 2, 2, 0),
    ((1, 2, 7, 8, 9), 2, 3, 1),
]


@pytest.fixture(params=BACKENDS)
def kernels(request):
    return importlib.import_module(LOW_LEVEL[request.param])


@pytest.mark.parametrize('size, weight_shape, stride, padding, dilation', CONV_INPUT)
def test_conv_input_gradient_writes_every_element(kernels, size, weight_shape, stride, padding, dilation):
    dims = len(size) - 2
    rng = np.random.default_rng(len(size) + sum(size))
    w = rng.standard_normal(weight_shape)
    geo = ConvGeometry(f'conv{dims}d_input', dims, size, weight_shape, stride, padding, dilation, 1)
    g = rng.standard_normal(geo.output_shape)
    out = np.full(size, np.nan)
    getattr(kernels, f'conv{dims}d_input')(geo.params, grad_input=out, grad_output=g, weight=w)
    oracle = getattr(torch.nn.grad, f'conv{dims}d_input')
    expected = oracle(size, torch.from_numpy(w), torch.from_numpy(g), stride=stride, padding=padding,
                      dilation=dilation).numpy()
    assert_close(out, expected)


@pytest.mark.parametrize('size, weight_shape, stride, padding, dilation', CONV_INPUT)
def test_conv_forward_writes_every_element(kernels, size, weight_shape, stride, padding, dilation):
    dims = len(size) - 2
    rng = np.random.default_rng(len(size) + sum(size))
    x, w, b = rng.standard_normal(size), rng.standard_normal(weight_shape), rng.standard_normal(weight_shape[0])
    geo = ConvGeometry(f'conv{dims}d', dims, size, weight_shape, stride, padding, dilation, 1)
    out = np.full(geo.output_shape, np.nan)
    getattr(kernels, f'conv{dims}d')(geo.params, output=out, input=x, weight=w, bias=b)
    expected = getattr(F, f'conv{dims}d')(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                                          stride=stride, padding=padding, dilation=dilation).numpy()
    assert_close(out, expected)


@pytest.mark.parametrize('count_include_pad', [True, False])
@pytest.mark.parametrize('shape, kernel, stride, padding', AVERAGE)
def test_avg_pool_forward_and_backward_write_every_element(kernels, shape, kernel, stride, padding,
                                                           count_include_pad):
    dims = len(shape) - 2
    fn = f'avg_pool{dims}d'
    rng = np.random.default_rng(len(shape) + sum(shape))
    x = rng.standard_normal(shape)
    geo = PoolGeometry(fn, dims, shape, kernel, stride, padding, 1, False)
    sizes = {**geo.params, **avg_options(fn, count_include_pad, None)}
    g = rng.standard_normal(geo.output_shape)
    y, grad = np.full(geo.output_shape, np.nan), np.full(shape, np.nan)
    getattr(kernels, fn)(sizes, output=y, input=x)
    getattr(kernels, f'{fn}_backward')(sizes, grad_input=grad, grad_output=g)
    xt = torch.from_numpy(x).requires_grad_()
    expected = getattr(F, fn)(xt, kernel, stride, padding, count_include_pad=count_include_pad)
    assert_close(y, expected.detach().numpy())
    expected_grad, = torch.autograd.grad(expected, (xt,), torch.from_numpy(g))
    assert_close(grad, expected_grad.numpy())


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_prepare_with_a_shape_returns_a_new_first_array_each_call(kernels, dtype):
    """prepare(name, sizes, dtype, shape): a function of the arrays after the first that returns the first,
    of that shape and dtype, a new array at each call (two results share no memory), equal to the plain
    function's output."""
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((2, 3, 9, 10)).astype(dtype), rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    geo = ConvGeometry('conv2d', 2, x.shape, w.shape, 2, 1, 1, 1)
    run = kernels.prepare('conv2d', geo.params, np.dtype(dtype), geo.output_shape)
    first, second = run(x, w, None), run(x, w, None)
    expected = np.full(geo.output_shape, np.nan, dtype)
    kernels.prepare('conv2d', geo.params, np.dtype(dtype))(expected, x, w, None)
    for got in (first, second):
        assert got.shape == geo.output_shape and got.dtype == dtype and got.flags.c_contiguous
        np.testing.assert_array_equal(got, expected)
    assert not np.shares_memory(first, second)
