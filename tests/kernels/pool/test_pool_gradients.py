"""Pooling backward kernels in float64: central finite differences of the forward kernels and the
dot-product (VJP) test <pool(x), g> == <x, pool_backward(g, x)> (avg: a linear map; max: with distinct
input values, so that no small perturbation changes the selected positions)."""
import numpy as np
import pytest
from conftest import FD_TOLERANCE, assert_close, assert_inner_equal, inner, numeric_gradient, random_array

# dims, input shape, kernel, stride, padding, dilation, ceil_mode
MAX_CONFIGS = [
    (1, (2, 2, 9), 3, 1, 1, 1, False),              # overlapping windows
    (1, (1, 1, 8), 2, 3, 1, 2, True),
    (2, (1, 2, 5, 6), (3, 2), (1, 2), (1, 1), (1, 2), True),
    (2, (2, 1, 4, 4), 2, None, 0, 1, False),
    (3, (1, 1, 4, 3, 5), (2, 2, 3), (1, 2, 2), (1, 0, 1), (1, 1, 2), False),
]
# dims, input shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override
AVG_CONFIGS = [
    (1, (2, 2, 9), 3, 1, 1, False, True, None),
    (1, (1, 1, 6), 3, 2, 1, True, False, None),
    (2, (1, 2, 5, 6), (3, 2), (2, 1), (1, 1), True, True, None),
    (2, (2, 1, 4, 5), 2, 3, 1, False, False, 3),
    (3, (1, 1, 4, 3, 5), (2, 3, 2), (1, 2, 2), (1, 1, 0), True, False, -2),
]


def distinct_input(rng, shape) -> np.ndarray:
    """Values 10 * FD step apart at least: no finite-difference step changes a maximum."""
    return rng.permutation(np.arange(int(np.prod(shape)), dtype=np.float64)).reshape(shape) * 1e-3


def max_setup(index):
    dims, shape, kernel, stride, padding, dilation, ceil_mode = MAX_CONFIGS[index]
    rng = np.random.default_rng(400 + index)
    params = dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode)
    return dims, distinct_input(rng, shape), params, rng


def avg_setup(index):
    dims, shape, kernel, stride, padding, ceil_mode, include, override = AVG_CONFIGS[index]
    rng = np.random.default_rng(500 + index)
    params = dict(kernel_size=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode, count_include_pad=include,
                  divisor_override=override)
    return dims, random_array(rng, shape), params, rng


@pytest.mark.parametrize('kind', ['max', 'avg'])
@pytest.mark.parametrize('index', range(5))
def test_pool_backward_matches_finite_differences(backend, kind, index):
    dims, x, params, rng = (max_setup if kind == 'max' else avg_setup)(index)
    forward = getattr(backend, f'{kind}_pool{dims}d')
    g = random_array(rng, forward(x, **params).shape)
    grad = getattr(backend, f'{kind}_pool{dims}d_backward')(g, x, **params)
    assert_close(grad, numeric_gradient(lambda: inner(forward(x, **params), g), x), scale=1.0,
                 tolerance=FD_TOLERANCE)


@pytest.mark.sanitize_subset
@pytest.mark.parametrize('kind', ['max', 'avg'])
@pytest.mark.parametrize('index', range(5))
def test_pool_dot_product_identity(backend, kind, index):
    dims, x, params, rng = (max_setup if kind == 'max' else avg_setup)(index)
    y = getattr(backend, f'{kind}_pool{dims}d')(x, **params)
    g = random_array(rng, y.shape)
    grad = getattr(backend, f'{kind}_pool{dims}d_backward')(g, x, **params)
    magnitude = inner(np.abs(y), np.abs(g)) + inner(np.abs(x), np.abs(grad)) + 1.0
    assert_inner_equal(inner(y, g), inner(x, grad), magnitude, f'{kind}_pool{dims}d')
