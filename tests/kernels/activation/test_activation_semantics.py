"""Activation semantics pinned by values measured on PyTorch 2.13 CPU (torch-semantics report, sec. 4),
without torch: signed zeros, NaN, infinities, the kinks, the backward formulas from the saved tensor."""
import importlib
import warnings

import numpy as np
import pytest
from conftest import BACKENDS, DTYPES, assert_close

pytestmark = pytest.mark.sanitize_subset
POINTS = [-np.inf, -2.0, -1.0, -0.5, -0.0, 0.0, 0.5, 1.0, 2.0, np.inf, np.nan]


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: np.dtype(d).name)
def test_relu_values_and_gradient(backend, dtype):
    x = np.array(POINTS, dtype)
    y = backend.relu(x)
    np.testing.assert_array_equal(y, [0, 0, 0, 0, -0.0, 0, 0.5, 1, 2, np.inf, np.nan])
    np.testing.assert_array_equal(np.signbit(y[3:6]), [False, True, False])
    grad = backend.relu_backward(np.full_like(x, np.inf), x)
    np.testing.assert_array_equal(grad, [0, 0, 0, 0, 0, 0, np.inf, np.inf, np.inf, np.inf, np.inf])


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: np.dtype(d).name)
def test_hardtanh_values_and_gradient(backend, dtype):
    x = np.array(POINTS, dtype)
    y = backend.hardtanh(x)
    np.testing.assert_array_equal(y, [-1, -1, -1, -0.5, -0.0, 0, 0.5, 1, 1, 1, np.nan])
    assert np.signbit(y[4]) and not np.signbit(y[5])
    grad = backend.hardtanh_backward(np.full_like(x, 3.0), x)
    np.testing.assert_array_equal(grad, [0, 0, 0, 3, 3, 3, 3, 0, 0, 0, 3])


def test_relu6_is_hardtanh_0_6_with_zero_gradient_at_both_kinks(backend):
    x = np.array([-1.0, 0.0, 3.0, 6.0, 7.0])
    np.testing.assert_array_equal(backend.hardtanh(x, 0.0, 6.0), [0, 0, 3, 6, 6])
    np.testing.assert_array_equal(backend.hardtanh_backward(np.ones(5), x, 0.0, 6.0), [0, 0, 1, 0, 0])


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: np.dtype(d).name)
def test_sigmoid_and_tanh_at_special_points(backend, dtype):
    x = np.array(POINTS, dtype)
    s, t = backend.sigmoid(x), backend.tanh(x)
    np.testing.assert_array_equal(s[[0, 4, 5, 9]], [0.0, 0.5, 0.5, 1.0])
    np.testing.assert_array_equal(t[[0, 4, 5, 9]], [-1.0, -0.0, 0.0, 1.0])
    assert np.isnan(s[10]) and np.isnan(t[10]) and np.signbit(t[4])
    np.testing.assert_array_equal(backend.sigmoid_backward(np.ones_like(s), s)[[0, 4, 9]], [0.0, 0.25, 0.0])
    np.testing.assert_array_equal(backend.tanh_backward(np.ones_like(t), t)[[0, 4, 9]], [0.0, 1.0, 0.0])


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: np.dtype(d).name)
def test_sigmoid_and_tanh_backward_read_the_output(backend, dtype):
    rng = np.random.default_rng(0)
    y, g = rng.uniform(-1, 1, 50).astype(dtype), rng.standard_normal(50).astype(dtype)
    wide_y, wide_g = y.astype(np.float64), g.astype(np.float64)
    assert_close(backend.sigmoid_backward(g, y), (wide_g * (1 - wide_y) * wide_y).astype(dtype), scale=1.0)
    assert_close(backend.tanh_backward(g, y), (wide_g * (1 - wide_y * wide_y)).astype(dtype), scale=1.0)


@pytest.mark.parametrize('name', ['relu', 'sigmoid', 'tanh', 'hardtanh'])
def test_activation_keeps_a_zero_dimensional_shape(backend, name):
    x = np.array(-0.5)
    assert getattr(backend, name)(x).shape == ()
    saved = x if name in ('relu', 'hardtanh') else getattr(backend, name)(x)
    assert getattr(backend, f'{name}_backward')(np.array(1.0), saved).shape == ()


SATURATION_CASES = [pytest.param(b, n, id=f'{b}-{n}') for b in BACKENDS for n in ('sigmoid', 'tanh')]


@pytest.mark.parametrize('backend_name,name', SATURATION_CASES)
def test_saturation_raises_no_floating_point_warning(backend_name, name):
    module = importlib.import_module(f'generated.{backend_name}')
    x = np.array([-1000.0, 1000.0])
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        y = getattr(module, name)(x)
    np.testing.assert_array_equal(y, [0.0, 1.0] if name == 'sigmoid' else [-1.0, 1.0])
