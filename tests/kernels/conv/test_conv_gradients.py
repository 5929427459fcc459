"""conv{1,2,3}d backward kernels in float64: central finite differences of the forward kernel, and the
dot-product (VJP) test <conv(x, w), g> == <x, conv_input(x.shape, w, g)> == <w, conv_weight(x, w.shape, g)>."""
import numpy as np
import pytest
from conftest import FD_TOLERANCE, assert_close, assert_inner_equal, inner, numeric_gradient, random_array

# dims, N, C_in, C_out, groups, input size, kernel, stride, padding, dilation
CONFIGS = [
    (1, 2, 2, 2, 1, (6,), (3,), 2, 1, 1),
    (1, 1, 2, 4, 2, (5,), (2,), 1, 'same', 2),
    (2, 1, 4, 2, 2, (5, 4), (2, 2), (1, 2), (1, 0), (2, 1)),
    (2, 2, 1, 1, 1, (3, 3), (3, 3), 1, 0, 1),
    (2, 1, 1, 2, 1, (4, 4), (1, 1), 3, 1, 1),
    (3, 1, 1, 2, 1, (3, 3, 4), (2, 1, 2), (1, 1, 2), (0, 1, 1), 1),
]


def setup(index: int):
    dims, n, c_in, c_out, groups, size, kernel, stride, padding, dilation = CONFIGS[index]
    rng = np.random.default_rng(300 + index)
    x = random_array(rng, (n, c_in) + size)
    w = random_array(rng, (c_out, c_in // groups) + kernel)
    b = random_array(rng, (c_out,))
    params = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return dims, x, w, b, params, rng


@pytest.mark.parametrize('index', range(len(CONFIGS)))
def test_conv_gradients_match_finite_differences(backend, index):
    dims, x, w, b, params, rng = setup(index)
    conv = getattr(backend, f'conv{dims}d')
    g = random_array(rng, conv(x, w, b, **params).shape)

    def loss():
        return inner(conv(x, w, b, **params), g)
    grad_x = getattr(backend, f'conv{dims}d_input')(x.shape, w, g, **params)
    grad_w = getattr(backend, f'conv{dims}d_weight')(x, w.shape, g, **params)
    grad_b = getattr(backend, f'conv{dims}d_bias')(g)
    for name, array, grad in (('input', x, grad_x), ('weight', w, grad_w), ('bias', b, grad_b)):
        assert_close(grad, numeric_gradient(loss, array), scale=1.0, tolerance=FD_TOLERANCE, what=name)


@pytest.mark.sanitize_subset
@pytest.mark.parametrize('index', range(len(CONFIGS)))
def test_conv_dot_product_identity(backend, index):
    dims, x, w, _, params, rng = setup(index)
    y = getattr(backend, f'conv{dims}d')(x, w, None, **params)
    g = random_array(rng, y.shape)
    grad_x = getattr(backend, f'conv{dims}d_input')(x.shape, w, g, **params)
    grad_w = getattr(backend, f'conv{dims}d_weight')(x, w.shape, g, **params)
    magnitude = inner(np.abs(y), np.abs(g)) + inner(np.abs(x), np.abs(grad_x)) + 1.0
    assert_inner_equal(inner(y, g), inner(x, grad_x), magnitude, 'input')
    assert_inner_equal(inner(y, g), inner(w, grad_w), magnitude, 'weight')
    bias = random_array(rng, (w.shape[0],))
    shifted = getattr(backend, f'conv{dims}d')(x, w, bias, **params)
    assert_inner_equal(inner(shifted - y, g), inner(bias, getattr(backend, f'conv{dims}d_bias')(g)), magnitude, 'bias')
