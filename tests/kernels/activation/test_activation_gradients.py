"""Activation backward kernels in float64: central finite differences away from the kinks, and the
dot-product test <J v, g> == <v, J^T g> with J v a directional difference of the forward kernel."""
import numpy as np
import pytest
from conftest import FD_STEP, FD_TOLERANCE, assert_close, numeric_gradient, inner

NAMES = ('relu', 'sigmoid', 'tanh', 'hardtanh')
SAVED = {'relu': 'input', 'hardtanh': 'input', 'sigmoid': 'output', 'tanh': 'output'}


def smooth_points(rng, shape) -> np.ndarray:
    """Points at least 0.05 away from every kink (0 and +-1)."""
    x = rng.uniform(-3, 3, size=shape)
    near = np.min(np.abs(x[..., None] - np.array([-1.0, 0.0, 1.0])), axis=-1) < 0.05
    x[near] += 0.1
    return x


def backward(backend, name, g, x):
    saved = x if SAVED[name] == 'input' else getattr(backend, name)(x)
    return getattr(backend, f'{name}_backward')(g, saved)


@pytest.mark.parametrize('name', NAMES)
def test_activation_backward_matches_finite_differences(backend, name):
    rng = np.random.default_rng(600)
    x = smooth_points(rng, (3, 7))
    g = rng.uniform(-1, 1, size=x.shape)
    forward = getattr(backend, name)
    assert_close(backward(backend, name, g, x), numeric_gradient(lambda: inner(forward(x), g), x), scale=1.0,
                 tolerance=FD_TOLERANCE)


@pytest.mark.parametrize('name', NAMES)
def test_activation_dot_product_identity(backend, name):
    rng = np.random.default_rng(601)
    x = smooth_points(rng, (4, 5, 2))
    v, g = rng.uniform(-1, 1, size=x.shape), rng.uniform(-1, 1, size=x.shape)
    forward = getattr(backend, name)
    jvp = (forward(x + FD_STEP * v) - forward(x - FD_STEP * v)) / (2 * FD_STEP)
    assert abs(inner(jvp, g) - inner(v, backward(backend, name, g, x))) <= FD_TOLERANCE * x.size
