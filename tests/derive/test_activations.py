"""Activation rows as data: the checker, its refusals, and PyTorch's CPU semantics (NaN, kinks)."""
import doctest
import math

import numpy as np
import pytest
from sympy import Eq, Piecewise, Symbol, lambdify

from derive import activations
from derive.activations import (
    ACTIVATIONS,
    HARDTANH,
    MAX_VAL,
    MIN_VAL,
    RELU,
    SIGMOID,
    SLIDE_BACKWARD,
    TANH,
    G,
    X,
    Y,
    differences,
    prove_backward,
)
from derive.claims import _REGISTRY

CLAIMS = sorted(i for i in _REGISTRY if i.startswith('activations.'))
SPECIAL = [-math.inf, -800.0, -3.0, -1.0, -0.5, -0.0, 0.0, 0.5, 1.0, 3.0, 800.0, math.inf, math.nan]


@pytest.mark.parametrize('claim_id', CLAIMS)
def test_claim_passes(claim_id):
    claim = _REGISTRY[claim_id]
    verdict = claim.check()
    assert claim.passes(verdict), verdict


def test_docstring_example():
    assert doctest.testmod(activations).failed == 0


def test_interface():
    assert list(ACTIVATIONS) == ['relu', 'sigmoid', 'tanh', 'hardtanh']
    assert (X.name, Y.name, G.name) == ('x', 'y', 'grad_output')
    assert all(s.is_real for s in (X, Y, G, MIN_VAL, MAX_VAL))
    assert {a.name: a.saved for a in ACTIVATIONS.values()} == {
        'relu': 'input', 'sigmoid': 'output', 'tanh': 'output', 'hardtanh': 'input'}
    assert HARDTANH.params == ((Symbol('min_val', real=True), -1.0), (Symbol('max_val', real=True), 1.0))
    assert all(a.params == () for a in (RELU, SIGMOID, TANH))
    for act in ACTIVATIONS.values():
        tensor = X if act.saved == 'input' else Y
        allowed = {tensor, G} | {p for p, _ in act.params}
        assert act.backward.free_symbols <= allowed
        assert act.forward.free_symbols <= {X} | {p for p, _ in act.params}


# ----------------------------------------------------------------------------- the checker


def test_sigmoid_with_the_input_is_refused():
    check = prove_backward(SIGMOID, G * X * (1 - X))
    assert not check.holds and check.reason.startswith('refused on all real x')


def test_tanh_with_the_input_is_refused():
    check = prove_backward(TANH, G * (1 - X**2))
    assert not check.holds and 'refused' in check.reason


def test_relu_with_indicator_x_ge_0_is_a_valid_convention_but_not_pytorch():
    ge = Piecewise((G, X >= 0), (0, True))
    check = prove_backward(RELU, ge)
    assert check.holds                                   # derivative off 0, a Clarke value at 0
    assert check.at_points == (('x = 0', G),)
    assert prove_backward(RELU, RELU.backward).at_points == (('x = 0', 0),)
    assert differences(RELU.backward, ge) == ('x = 0',)  # differs from PyTorch exactly at the kink


@pytest.mark.parametrize('rule, where', [
    (Piecewise((2 * G, X > 0), (0, True)), 'x > 0'),
    (Piecewise((G, X > 1), (0, True)), '0 < x < 1'),
    (Piecewise((G, X > -1), (0, True)), '-1 < x < 0'),
    (G, 'x < 0'),
])
def test_wrong_relu_rules_refused(rule, where):
    check = prove_backward(RELU, rule)
    assert not check.holds and check.reason.startswith(f'refused on {where}')


def test_kink_value_outside_the_one_sided_derivatives_is_refused():
    rule = Piecewise((2 * G, Eq(X, 0)), (0, X < 0), (G, True))
    check = prove_backward(RELU, rule)
    assert not check.holds and check.reason.startswith('refused at x = 0')


def test_rule_reading_the_wrong_tensor_is_refused():
    assert not prove_backward(RELU, G * Y).holds


def test_hardtanh_checker_with_symbolic_parameters():
    check = prove_backward(HARDTANH, HARDTANH.backward)
    assert check.holds and 'assuming min_val < max_val' in check.reason
    assert check.at_points == (('x = min_val', 0), ('x = max_val', 0))
    wrong = Piecewise((G, (X >= MIN_VAL) & (X <= 0)), (0, True))
    assert not prove_backward(HARDTANH, wrong).holds
    swapped = Piecewise((0, X <= MAX_VAL), (0, X >= MIN_VAL), (G, True))
    assert not prove_backward(HARDTANH, swapped).holds


def test_hardtanh_slide_rule_differs_from_pytorch_only_at_the_kinks():
    slide = prove_backward(HARDTANH, SLIDE_BACKWARD['hardtanh'])
    assert slide.holds and slide.at_points == (('x = -1', G), ('x = 1', G))
    assert differences(HARDTANH.backward, SLIDE_BACKWARD['hardtanh'], HARDTANH.params) == ('x = -1', 'x = 1')


def test_undecidable_conditions_are_not_proved():
    check = prove_backward(RELU, Piecewise((G, X**2 > X), (0, True)))
    assert not check.holds and check.reason.startswith('not proved')


# ----------------------------------------------------------------------------- PyTorch semantics


def _numeric(expr, act, **params):
    """Evaluate a forward/backward expression with numpy at arrays (parameters substituted)."""
    values = {p: params.get(p.name, default) for p, default in act.params}
    fn = lambdify((X, Y, G), expr.subs(values), 'numpy')

    def call(x=0.0, y=0.0, g=0.0):
        with np.errstate(over='ignore', invalid='ignore'):
            return np.broadcast_to(fn(x, y, g), np.broadcast(x, y, g).shape).astype(np.float64)
    return call


def _torch_forward(torch, name, x):
    F = torch.nn.functional
    return {'relu': F.relu, 'sigmoid': torch.sigmoid, 'tanh': torch.tanh, 'hardtanh': F.hardtanh}[name](x)


@pytest.mark.parametrize('name', list(ACTIVATIONS))
def test_forward_and_backward_match_torch(name):
    torch = pytest.importorskip('torch')
    act = ACTIVATIONS[name]
    x_np = np.array(SPECIAL)
    g_np = np.linspace(-2.0, 3.0, x_np.size)
    x = torch.tensor(x_np, dtype=torch.float64, requires_grad=True)
    y = _torch_forward(torch, name, x)
    y.backward(torch.tensor(g_np))
    y_np = y.detach().numpy()
    ours_y = _numeric(act.forward, act)(x=x_np)
    np.testing.assert_allclose(ours_y, y_np, rtol=1e-15, atol=0, equal_nan=True)
    saved = {'x': x_np} if act.saved == 'input' else {'y': y_np}
    ours_g = _numeric(act.backward, act)(g=g_np, **saved)
    np.testing.assert_allclose(ours_g, x.grad.numpy(), rtol=1e-14, atol=0, equal_nan=True)


def test_backward_ops_match_torch_aten():
    torch = pytest.importorskip('torch')
    aten = torch.ops.aten
    x = torch.tensor(SPECIAL, dtype=torch.float64)
    g = torch.linspace(-2.0, 3.0, x.numel(), dtype=torch.float64)
    expected = {
        'relu': aten.threshold_backward(g, x, 0.0),
        'sigmoid': aten.sigmoid_backward(g, torch.sigmoid(x)),
        'tanh': aten.tanh_backward(g, torch.tanh(x)),
        'hardtanh': aten.hardtanh_backward(g, x, -1.0, 1.0),
    }
    for name, act in ACTIVATIONS.items():
        tensor = x.numpy() if act.saved == 'input' else _torch_forward(torch, name, x).numpy()
        args = {'x': tensor} if act.saved == 'input' else {'y': tensor}
        ours = _numeric(act.backward, act)(g=g.numpy(), **args)
        np.testing.assert_allclose(ours, expected[name].numpy(), rtol=1e-14, atol=0, equal_nan=True)


@pytest.mark.parametrize('low, high', [(-1.0, 1.0), (-0.5, 2.0), (0.0, 6.0), (-3.0, -1.0)])
def test_hardtanh_parameters_and_kinks_match_torch(low, high):
    torch = pytest.importorskip('torch')
    points = [low - 1, low, (low + high) / 2, high, high + 1, math.nan, -0.0]
    x = torch.tensor(points, dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.hardtanh(x, low, high)
    y.backward(torch.ones_like(x))
    params = {'min_val': low, 'max_val': high}
    np.testing.assert_array_equal(_numeric(HARDTANH.forward, HARDTANH, **params)(x=np.array(points)),
                                  y.detach().numpy())
    grads = _numeric(HARDTANH.backward, HARDTANH, **params)(x=np.array(points), g=np.ones(len(points)))
    np.testing.assert_array_equal(grads, x.grad.numpy())
    assert grads[1] == 0 and grads[3] == 0                  # PyTorch: 0 at both kinks


def test_relu_at_zero_and_nan_match_torch():
    torch = pytest.importorskip('torch')
    x = torch.tensor([0.0, -0.0, math.nan], dtype=torch.float64, requires_grad=True)
    torch.relu(x).backward(torch.full((3,), 5.0, dtype=torch.float64))
    ours = _numeric(RELU.backward, RELU)(x=np.array([0.0, -0.0, math.nan]), g=np.full(3, 5.0))
    np.testing.assert_array_equal(ours, x.grad.numpy())
    assert list(ours[:2]) == [0.0, 0.0] and ours[2] == 5.0   # NaN <= 0 is false: the gradient passes
