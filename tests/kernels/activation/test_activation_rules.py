"""Activation kernels against the rules of derive.activations (codegen.spec.kernel_rules), evaluated
element by element, including the kinks, signed zeros, infinities and NaN."""
import numpy as np
import pytest
from conftest import DTYPES, RULE_TOLERANCE, TOLERANCE, assert_close, evaluate_rule

from codegen.spec import rule

SPECIAL = [-np.inf, -2.5, -1.0, -0.5, -0.0, 0.0, 0.5, 1.0, 2.5, np.inf, np.nan, -1e-30, 1e-30, 0.75, -0.75, 3.0]
LIMITS = [(-1.0, 1.0), (0.0, 6.0), (-0.5, -0.5)]
CASES = [('relu', None), ('sigmoid', None), ('tanh', None)] + [('hardtanh', limit) for limit in LIMITS]
SAVED = {'relu': 'input', 'hardtanh': 'input', 'sigmoid': 'output', 'tanh': 'output'}


def values(dtype) -> np.ndarray:
    return np.array(SPECIAL, dtype=dtype).reshape(2, 8)


def tolerance(dtype) -> float:
    return RULE_TOLERANCE if np.dtype(dtype) == np.float64 else TOLERANCE[np.dtype(dtype)]


def limits_of(limit) -> dict:
    return {} if limit is None else dict(min_val=limit[0], max_val=limit[1])


def forward_expected(name: str, x: np.ndarray, extra: dict) -> np.ndarray:
    sizes = dict(numel=x.size, **extra)
    return evaluate_rule(rule(name), sizes, {'input': x.astype(np.float64)}).reshape(x.shape).astype(x.dtype)


@pytest.mark.sanitize_subset
@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize('name,limit', CASES, ids=lambda c: str(c))
def test_activation_forward_equals_rule(backend, name, limit, dtype):
    x = values(dtype)
    extra = limits_of(limit)
    got = getattr(backend, name)(x, **extra)
    expected = forward_expected(name, x, extra)
    assert_close(got, expected, tolerance=tolerance(dtype))
    zeros = (expected == 0) & np.isfinite(expected)
    if name in ('relu', 'hardtanh'):
        np.testing.assert_array_equal(np.signbit(got[zeros]), np.signbit(expected[zeros]))


@pytest.mark.sanitize_subset
@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize('name,limit', CASES, ids=lambda c: str(c))
def test_activation_backward_equals_rule(backend, name, limit, dtype):
    x = values(dtype)
    extra = limits_of(limit)
    saved = x if SAVED[name] == 'input' else forward_expected(name, x, extra)
    grad_output = np.linspace(-2, 3, x.size).reshape(x.shape).astype(dtype)
    got = getattr(backend, f'{name}_backward')(grad_output, saved, **extra)
    expected = evaluate_rule(rule(f'{name}_backward'), dict(numel=x.size, **extra),
                             {'grad_output': grad_output.astype(np.float64), SAVED[name]: saved.astype(np.float64)})
    assert_close(got, expected.reshape(x.shape).astype(dtype), tolerance=tolerance(dtype))
