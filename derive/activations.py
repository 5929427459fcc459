"""Activation functions as data: the Sigmoid, Tanh, ReLU and Hard Tanh rows of slide
"Forward & Backward propagation", with PyTorch's CPU semantics.

Each :class:`Activation` holds its forward expression in the input X, which tensor
its backward reads (``saved``: the input X or the output Y, as PyTorch saves it), and
the backward expression in the incoming gradient G and that tensor:

    relu      y = x I(x > 0)                      g_in = G I(x > 0)          (0 at x = 0)
    sigmoid   y = 1 / (1 + exp(-x))               g_in = G y (1 - y)
    tanh      y = tanh(x)                         g_in = G (1 - y^2)
    hardtanh  y = clamp(x, min_val, max_val)      g_in = G I(min_val < x < max_val)

Comparisons are written so that NaN falls through to the last piece, as in PyTorch
(NaN <= 0 is false: relu(NaN) = NaN and its backward passes G through).  The code
generator prints these expressions into kernels.

:func:`prove_backward` is the checker: it splits the real line at the boundary points
of the forward's and the rule's conditions (symbolic parameters ordered by their
defaults, e.g. min_val < max_val, reparametrized by positive gaps so that SymPy can
decide every condition), proves rule == G * d(forward)/dx on every open interval,
and at every boundary point requires the rule's value to lie between the two
one-sided derivatives (a Clarke generalized derivative; where the forward is smooth
this means equal to the derivative).  At ReLU's 0 and Hard Tanh's +-1 the derivative
does not exist: PyTorch's 0 and the slide's "Copy (in [-1, +1])" are both valid
choices -- a convention, reported, not an error.

>>> prove_backward(ACTIVATIONS['sigmoid'], G * X * (1 - X)).holds
False
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from sympy import (
    And,
    Expr,
    Not,
    Or,
    Piecewise,
    Rational,
    S,
    Symbol,
    cancel,
    diff,
    exp,
    expand,
    piecewise_fold,
    simplify,
    symbols,
    tanh,
    together,
)
from sympy.core.relational import Relational

from .claims import PROVED, Identity, Note, Verdict, claim

X, Y, G = symbols('x y grad_output', real=True)
MIN_VAL, MAX_VAL = Symbol('min_val', real=True), Symbol('max_val', real=True)


@dataclass(frozen=True)
class Activation:
    """One activation row: forward, the tensor its backward reads, and the backward, as SymPy data."""

    name: str          # 'relu', 'sigmoid', 'tanh', 'hardtanh'
    params: tuple      # ((Symbol, default), ...)
    forward: Expr      # the output, in terms of X (and params)
    saved: str         # 'input' or 'output': which tensor backward reads, as in PyTorch
    backward: Expr     # grad_input in terms of G and X (saved='input') or Y (saved='output')


RELU = Activation('relu', (), Piecewise((0, X < 0), (X, True)), 'input', Piecewise((0, X <= 0), (G, True)))
SIGMOID = Activation('sigmoid', (), 1 / (1 + exp(-X)), 'output', G * Y * (1 - Y))
TANH = Activation('tanh', (), tanh(X), 'output', G * (1 - Y**2))
HARDTANH = Activation('hardtanh', ((MIN_VAL, -1.0), (MAX_VAL, 1.0)),
                      Piecewise((MIN_VAL, X < MIN_VAL), (MAX_VAL, X > MAX_VAL), (X, True)), 'input',
                      Piecewise((0, X <= MIN_VAL), (0, X >= MAX_VAL), (G, True)))

ACTIVATIONS: dict[str, Activation] = {a.name: a for a in (RELU, SIGMOID, TANH, HARDTANH)}

# The slide's rows, as printed (z_i = X, z_{i+1} = Y, g_{i+1} = G); Hard Tanh on [-1, +1].
SLIDE_FORWARD = {
    'relu': X * Piecewise((1, X > 0), (0, True)),
    'sigmoid': 1 / (1 + exp(-X)),
    'tanh': tanh(X),
    'hardtanh': Piecewise((1, X > 1), (-1, X < -1), (X, True)),
}
SLIDE_BACKWARD = {
    'relu': G * Piecewise((1, X > 0), (0, True)),
    'sigmoid': G * Y * (1 - Y),
    'tanh': G * (1 - Y * Y),
    'hardtanh': Piecewise((G, And(X >= -1, X <= 1)), (0, True)),
}


# ----------------------------------------------------------------------------- deciding conditions


class Undecided(ValueError):
    """A condition whose truth on a region SymPy could not decide."""


def _sign(expr: Expr) -> int | None:
    expr = cancel(together(expr))
    if expr.is_zero:
        return 0
    if expr.is_positive:
        return 1
    if expr.is_negative:
        return -1
    return None


_HOLDS = {'<': (-1,), '<=': (-1, 0), '>': (1,), '>=': (1, 0), '==': (0,), '!=': (-1, 1)}


def decide(cond, sub: dict) -> bool:
    """Truth of a Piecewise condition once ``sub`` is substituted; raises Undecided."""
    if cond in (S.true, S.false):
        return bool(cond)
    if isinstance(cond, Relational):
        sign = _sign((cond.lhs - cond.rhs).xreplace(sub))
        if sign is None:
            raise Undecided(f'cannot decide {cond} at {sub}')
        return sign in _HOLDS[cond.rel_op]
    if isinstance(cond, And):
        return all(decide(c, sub) for c in cond.args)
    if isinstance(cond, Or):
        return any(decide(c, sub) for c in cond.args)
    if isinstance(cond, Not):
        return not decide(cond.args[0], sub)
    raise Undecided(f'unsupported condition {cond}')


def active(expr: Expr, sub: dict) -> Expr:
    """The piece of a (folded) Piecewise that is active on the region ``sub`` (still in X)."""
    expr = piecewise_fold(expr)
    if not isinstance(expr, Piecewise):
        return expr
    for value, cond in expr.args:
        if decide(cond, sub):
            return active(value, sub)
    raise Undecided(f'no piece of {expr} is active at {sub}')


# ----------------------------------------------------------------------------- regions of the real line


def boundary_points(expr: Expr) -> tuple:
    """The x where a condition of ``expr`` changes: relations linear in X with a numeric coefficient."""
    points = []
    for rel in sorted(expr.atoms(Relational), key=str):
        lin = expand(rel.lhs - rel.rhs)
        if X not in lin.free_symbols:
            continue
        coeff = lin.coeff(X)
        if not coeff.is_number or expand(lin - coeff * X).has(X):
            raise Undecided(f'condition {rel} is not linear in {X}')
        point = expand(X - lin / coeff)
        if point not in points:
            points.append(point)
    return tuple(points)


def _numeric_line(order: list) -> tuple[list, list]:
    t = Symbol('t', positive=True)
    opens = [(f'x < {order[0]}', {X: order[0] - t})]
    opens += [(f'{lo} < x < {hi}', {X: lo + (hi - lo) / (1 + t)}) for lo, hi in pairwise(order)]
    opens.append((f'x > {order[-1]}', {X: order[-1] + t}))
    return opens, [(f'x = {p}', {X: p}) for p in order]


def _parameter_line(order: list) -> tuple[list, list]:
    """q_1 free, q_(k+1) = q_k + gap_k, gaps positive; inside (q_k, q_(k+1)): x = q_k + a, gap_k = a + b."""
    t, a, b = symbols('t a b', positive=True)
    gaps = symbols(f'd1:{len(order)}', positive=True)

    def chain(gap_values):
        sub, current = {}, order[0]
        for q, gap in zip(order[1:], gap_values):
            current = current + gap
            sub[q] = current
        return sub
    base = chain(gaps)
    opens = [(f'x < {order[0]}', {**base, X: order[0] - t})]
    for k in range(len(order) - 1):
        sub = chain(gaps[:k] + (a + b,) + gaps[k + 1:])
        opens.append((f'{order[k]} < x < {order[k + 1]}', {**sub, X: sub.get(order[k], order[k]) + a}))
    opens.append((f'x > {order[-1]}', {**base, X: base.get(order[-1], order[-1]) + t}))
    return opens, [(f'x = {q}', {**base, X: base.get(q, q)}) for q in order]


def real_line(points: tuple, params: tuple) -> tuple[list, list, str]:
    """Open intervals and boundary points as substitutions of X (and parameters) by positive symbols.

    Points must all be numbers, or all distinct parameters (ordered by their defaults).  Returns
    (open intervals, points, hypothesis); point k lies between open intervals k and k + 1."""
    if not points:
        return [('all real x', {})], [], ''
    if all(p.is_number for p in points):
        return (*_numeric_line(sorted(points)), '')
    defaults = dict(params)
    if not all(p in defaults for p in points) or len({defaults[p] for p in points}) < len(points):
        raise Undecided(f'boundary points {points} are neither all numbers nor distinct parameters')
    order = sorted(points, key=defaults.get)
    return (*_parameter_line(order), ' < '.join(map(str, order)))


# ----------------------------------------------------------------------------- the checker


@dataclass(frozen=True)
class BackwardCheck:
    """What :func:`prove_backward` established about a backward rule."""

    holds: bool
    reason: str
    evidence: tuple = ()     # Identity per open interval, Note per boundary point
    at_points: tuple = ()    # (('x = point', value of the rule there), ...)


def in_terms_of_input(act: Activation, backward: Expr) -> Expr:
    """The rule with the saved output Y replaced by the forward expression."""
    return backward.xreplace({Y: act.forward}) if act.saved == 'output' else backward


def _is_zero(expr: Expr) -> bool:
    return expand(expr) == 0 or cancel(together(expr)) == 0 or simplify(expr) == 0


def _witness(derivative: Expr, value: Expr, sub: dict, params: tuple) -> str:
    """Evaluate both sides at one point of the region (positive symbols 1, parameters at defaults)."""
    positive = set().union(*(e.free_symbols for e in sub.values())) - {p for p, _ in params}
    numbers = {s: S.One for s in positive} | {p: Rational(str(v)) for p, v in params} | {G: S.One, X: S.Half}
    x_value = sub.get(X, X).xreplace(numbers)
    lhs, rhs = (e.xreplace(sub).xreplace(numbers).evalf(6) for e in (derivative, value))
    return f'at x = {x_value}, grad_output = 1: grad_output * d(forward)/dx = {lhs}, rule = {rhs}'


def _between(value: Expr, left: Expr, right: Expr) -> bool:
    """value / G lies between the one-sided derivatives left / G and right / G."""
    c, lo, hi = (cancel(e / G) for e in (value, left, right))
    if G in (c.free_symbols | lo.free_symbols | hi.free_symbols):
        return False
    signs = (_sign(c - lo), _sign(c - hi))
    return None not in signs and signs[0] * signs[1] <= 0


def prove_backward(act: Activation, backward: Expr) -> BackwardCheck:
    """Prove backward == G * d(forward)/dx on every open interval between boundary points, and a value
    between the one-sided derivatives at every boundary point; refuse (holds=False) with a reason."""
    if act.saved == 'input' and Y in backward.free_symbols:
        return BackwardCheck(False, f'the rule reads the output y but {act.name} saves the input')
    try:
        forward, rule, params, points, note = _at_defaults(act.forward, in_terms_of_input(act, backward),
                                                           act.params)
        opens, bounds, hypothesis = real_line(points, params)
        assumed = (hypothesis and f', assuming {hypothesis}') + note
        return _check(forward, rule, opens, bounds, params, assumed)
    except Undecided as err:
        return BackwardCheck(False, f'not proved: {err}')


def _check(forward: Expr, rule: Expr, opens: list, bounds: list, params: tuple,
           assumed: str) -> BackwardCheck:
    pieces = [active(forward, sub) for _, sub in opens]
    evidence = []
    for (text, sub), piece in zip(opens, pieces):
        derivative, value = G * diff(piece, X), active(rule, sub)
        if not _is_zero((derivative - value).xreplace(sub)):
            reason = f'refused on {text}{assumed}: ' + _witness(derivative, value, sub, params)
            return BackwardCheck(False, reason, tuple(evidence))
        evidence.append(Identity(f'on {text}', value, derivative, 'cancel(together(lhs - rhs)) == 0'))
    at_points = []
    for k, (text, sub) in enumerate(bounds):
        value = active(rule, sub).xreplace(sub)
        left, right = ((G * diff(pieces[j], X)).xreplace(sub) for j in (k, k + 1))
        if not _between(value, left, right):
            reason = f'refused at {text}{assumed}: rule gives {value}, one-sided derivatives {left}, {right}'
            return BackwardCheck(False, reason, tuple(evidence))
        evidence.append(Note(f'at {text}: rule gives {value}, one-sided derivatives {left} and {right}'))
        at_points.append((text, value))
    where = ', '.join(t for t, _ in opens)
    valid_at = ', '.join(t for t, _ in bounds)
    reason = f'proved on {where}{assumed}' + (f'; valid at {valid_at}' if bounds else '')
    return BackwardCheck(True, reason, tuple(evidence), tuple(at_points))


def _at_defaults(first: Expr, second: Expr, params: tuple) -> tuple[Expr, Expr, tuple, tuple, str]:
    """Boundary points of both; parameters instantiated at their defaults when mixed with numbers."""
    points = tuple(dict.fromkeys(boundary_points(first) + boundary_points(second)))
    if all(p.is_number for p in points) or not any(p.is_number for p in points):
        return first, second, params, points, ''
    defaults = {p: Rational(str(v)) for p, v in params}
    first, second = first.xreplace(defaults), second.xreplace(defaults)
    points = tuple(dict.fromkeys(boundary_points(first) + boundary_points(second)))
    note = ' (parameters at their defaults ' + ', '.join(f'{p} = {v}' for p, v in defaults.items()) + ')'
    return first, second, (), points, note


def differences(first: Expr, second: Expr, params: tuple = ()) -> tuple:
    """The regions of the real line (open intervals, boundary points) where two expressions of X differ."""
    first, second, params, points, _ = _at_defaults(first, second, params)
    opens, bounds, _ = real_line(points, params)
    return tuple(text for text, sub in opens + bounds
                 if not _is_zero((active(first, sub) - active(second, sub)).xreplace(sub)))


# ----------------------------------------------------------------------------- claims

_SLIDE = 'Forward & Backward propagation'


def _row_verdict(name: str, kinks: tuple) -> Verdict:
    """PyTorch's rule and the slide's rule both proved; forward equal to the slide's; PyTorch's values at
    the kinks equal ``kinks``."""
    act = ACTIVATIONS[name]
    ours, slide = prove_backward(act, act.backward), prove_backward(act, SLIDE_BACKWARD[name])
    forward_diff = differences(act.forward, SLIDE_FORWARD[name], act.params)
    holds = ours.holds and slide.holds and not forward_diff and ours.at_points == kinks
    notes = (Note(f'PyTorch rule: {ours.reason}; values at the kinks {ours.at_points}'),
             Note(f'slide rule: {slide.reason}; values at the kinks {slide.at_points}'),
             Note(f'forward differs from the slide\'s on: {forward_diff or "nowhere"}'))
    return Verdict(PROVED, holds, ours.evidence + notes)


@claim('activations.relu', _SLIDE,
       "ReLU: forward x I(x>0); backward G I(x>0) = G relu'(x) for all real x != 0; at x = 0 (no "
       'derivative) slide and PyTorch both give 0')
def _relu() -> Verdict:
    return _row_verdict('relu', (('x = 0', 0),))


@claim('activations.sigmoid', _SLIDE,
       "Sigmoid: backward G y (1 - y) with y = 1/(1+exp(-x)) equals G sigmoid'(x) for all real x")
def _sigmoid() -> Verdict:
    return _row_verdict('sigmoid', ())


@claim('activations.tanh', _SLIDE,
       "Tanh: backward G (1 - y^2) with y = tanh(x) equals G tanh'(x) for all real x")
def _tanh() -> Verdict:
    return _row_verdict('tanh', ())


@claim('activations.hardtanh', _SLIDE,
       'Hard Tanh: forward clamps to [min_val, max_val]; backward G I(min_val < x < max_val) = G d/dx for '
       'x off the kinks, for all min_val < max_val; PyTorch gives 0 at the kinks')
def _hardtanh() -> Verdict:
    return _row_verdict('hardtanh', (('x = min_val', 0), ('x = max_val', 0)))


@claim('activations.hardtanh_kinks', _SLIDE,
       "Hard Tanh 'Copy (in [-1,+1])' gives G at x = +-1 where PyTorch gives 0; no derivative there, both "
       'lie between the one-sided derivatives 0 and G: a convention difference, not an error')
def _hardtanh_kinks() -> Verdict:
    act = HARDTANH
    slide = prove_backward(act, SLIDE_BACKWARD['hardtanh'])
    where = differences(act.backward, SLIDE_BACKWARD['hardtanh'], act.params)
    holds = slide.holds and slide.at_points == (('x = -1', G), ('x = 1', G)) and where == ('x = -1', 'x = 1')
    return Verdict(PROVED, holds, slide.evidence + (Note(f'slide and PyTorch differ exactly at {where}'),))
