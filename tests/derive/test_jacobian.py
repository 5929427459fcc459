"""Vector-Jacobian form, the Linear and Max rows, bowls and gradient bounds."""
import random

import pytest
from sympy import Matrix, Rational, Sum, Symbol, diff, exp, expand, symbols

from derive.claims import _REGISTRY
from derive.graphs import PHI, at_forward, chain_rule
from derive.jacobian import (
    COL,
    G_NEXT,
    ROW,
    THREE_WAY,
    TIE,
    Z_IN,
    M,
    W,
    activation_row_proof,
    chain_graph,
    chain_is_product,
    descent_and_target,
    distinct_max_proved,
    is_subgradient_of_max,
    jacobian,
    linear_row_proof,
    max_gradient_copy_all,
    max_gradient_first,
    max_gradient_sympy,
    vector_form_agrees,
)

CLAIMS = sorted(i for i in _REGISTRY if i.startswith('jacobian.'))
HALF, THIRD = Rational(1, 2), Rational(1, 3)


@pytest.mark.parametrize('claim_id', CLAIMS)
def test_claim_passes(claim_id):
    claim = _REGISTRY[claim_id]
    verdict = claim.check()
    assert claim.passes(verdict), verdict


def test_max_tie_is_registered_as_erratum():
    assert not _REGISTRY['jacobian.max_ties'].expected
    verdict = _REGISTRY['jacobian.max_ties'].check()
    assert '(1, 0, 0, 0)' in verdict.counterexample and '(1/2, 1/2, 1/2, 0)' in verdict.counterexample


@pytest.mark.parametrize('n, m', [(1, 1), (2, 3), (3, 2)])
def test_vector_form(n, m):
    assert vector_form_agrees(n, m)[0]


def test_linear_row_on_a_concrete_matrix():
    w = Matrix(2, 3, symbols('w0:6'))
    z, g = Matrix(symbols('z0:2')), Matrix(symbols('g0:3'))
    J = jacobian(w.T * z, z)
    assert J == w.T
    assert J.T * g == w * g


def test_linear_row_refuses_wrong_rules():
    assert linear_row_proof().holds
    transposed = Sum(W[COL, ROW] * G_NEXT[COL], (COL, 0, M - 1))
    short = Sum(W[ROW, COL] * G_NEXT[COL], (COL, 0, M - 2))
    assert not linear_row_proof(transposed).holds
    assert not linear_row_proof(short).holds


def test_activation_row_refuses_forward_instead_of_derivative():
    assert activation_row_proof().holds
    assert not activation_row_proof(G_NEXT[ROW] * PHI(Z_IN[ROW])).holds


def test_sympy_max_at_ties():
    assert max_gradient_sympy(TIE) == (HALF, HALF, 0, 0)
    assert max_gradient_sympy(THREE_WAY) == (HALF, HALF, HALF, 0)
    assert sum(max_gradient_sympy(THREE_WAY)) == Rational(3, 2)
    assert max_gradient_sympy((1, 1, 1, 1)) == (HALF,) * 4


def test_max_rules_at_ties():
    assert max_gradient_first(TIE) == (1, 0, 0, 0)
    assert max_gradient_first((0, 2, 2, 1)) == (0, 1, 0, 0)
    assert max_gradient_copy_all(TIE) == (1, 1, 0, 0)


def test_subgradient_checker():
    assert is_subgradient_of_max(TIE, (1, 0, 0, 0))
    assert is_subgradient_of_max(TIE, (HALF, HALF, 0, 0))
    assert is_subgradient_of_max(THREE_WAY, (THIRD, THIRD, THIRD, 0))
    assert not is_subgradient_of_max(TIE, (1, 1, 0, 0))              # copy to all: sum 2
    assert not is_subgradient_of_max(THREE_WAY, (HALF, HALF, HALF, 0))  # SymPy: sum 3/2
    assert not is_subgradient_of_max(TIE, (0, 0, 1, 0))              # gradient to a non-maximal input
    assert not is_subgradient_of_max(TIE, (Rational(3, 2), -HALF, 0, 0))  # sums to 1 but negative entry
    assert is_subgradient_of_max((3, 1, 2), (1, 0, 0))
    assert not is_subgradient_of_max((3, 1, 2), (HALF, 0, HALF))


@pytest.mark.parametrize('n', [2, 3, 4])
def test_distinct_max_copies_to_argmax(n):
    assert distinct_max_proved(n)
    rng = random.Random(n)
    values = rng.sample(range(-50, 50), n)
    assert max_gradient_sympy(values) == max_gradient_first(values)


def test_torch_max_tie_rules():
    torch = pytest.importorskip('torch')
    x = torch.tensor([float(v) for v in TIE], dtype=torch.float64, requires_grad=True)
    torch.nn.functional.max_pool1d(x.view(1, 1, 4), 4).sum().backward()
    assert tuple(x.grad.tolist()) == tuple(float(v) for v in max_gradient_first(TIE))
    x.grad = None
    torch.amax(x, 0).backward()
    even = tuple(Rational(v).limit_denominator(10) for v in x.grad.tolist())
    assert even == (HALF, HALF, 0, 0) and is_subgradient_of_max(TIE, even)


def test_elliptical_bowl_off_axis_misses_the_minimum():
    x, y = symbols('x y', real=True)
    descent, target = descent_and_target(x**2 + 4 * y**2, x, y)
    at = {x: 1, y: 1}
    assert descent.subs(at) == Matrix([-2, -8]) and target.subs(at) == Matrix([-1, -1])
    circle, to_min = descent_and_target(x**2 + y**2, x, y)
    assert (circle - 2 * to_min).expand() == Matrix.zeros(2, 1)


def test_sigmoid_derivative_at_most_a_quarter_numerically():
    x = symbols('x', real=True)
    s = 1 / (1 + exp(-x))
    slope = diff(s, x)
    values = [slope.subs(x, Rational(k, 4)).evalf() for k in range(-40, 41)]
    assert slope.subs(x, 0) == Rational(1, 4)
    assert all(0 < v <= 0.25 for v in values) and max(values) == values[40]


def test_chain_product_refuses_a_missing_factor():
    assert chain_is_product(3)
    graph, factors = chain_graph(3)
    truth = chain_rule(graph, graph.inputs[0])
    assert expand(at_forward(graph, factors) - truth) == 0
    assert expand(at_forward(graph, factors / Symbol('w1')) - truth) != 0
