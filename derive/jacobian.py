"""Vector-Jacobian form of backpropagation, the layer table, and the shape of gradients.

Slides "Converting scalar updates to vector form", "The Jacobian matrix [1/2], [2/2]",
"Effect on linear layer and activation function", "Forward & Backward propagation"
(Linear, Max and arbitrary-function rows; the activation rows are in
:mod:`derive.activations`), "Effect of varying slopes in gradient descent" / "Example",
"Vanishing and exploding gradient problems".

With z_(i+1) = f(z_i), J_kr = d f_k / d z_i^(r) (an m x n matrix) and
g_i = [S(p, o)]_p, the dynamic-programming update S(p, o) = sum_q S(q, o) z(p, q) is

    g_i = Z g_(i+1),    Z = [z(p, q)] = J^T.

* Linear, z_(i+1) = W^T z_i: J = W^T, so g_i = W g_(i+1) (proved for all sizes with the
  rule-checked summation layer: d/dz_r sum_s W_sk z_s = sum_s W_sk KD(s, r) = W_rk).
* Elementwise activation z_(i+1) = Phi(z_i): J = diag(Phi'(z_i)) (sparse), g_i = g_(i+1) o Phi'(z_i).
* Max: where the maximum is strict, d max / d z_k = [k = argmax]; at ties the derivative does
  not exist and the slide's "Copy (maximal input)" does not say which input gets the gradient.
  SymPy's diff(Max) = Heaviside(.) with Heaviside(0) = 1/2 gives 1/2 to EACH tied input (sum
  3/2 at a three-way tie: not a subgradient).  The first-maximum rule (PyTorch's max_pool and
  max(dim)) is a subgradient at every tie.
* Bowls: for L = x^2 + y^2, -grad L = 2 ((0, 0) - (x, y)) points at the minimum everywhere;
  for L = x^2 + 4 y^2 the cross product with (0, 0) - (x, y) is -6 x y, zero only on the axes.
* Vanishing gradients: sigmoid' = s (1 - s) = 1/4 - (s - 1/2)^2 <= 1/4 and tanh' = 1 - tanh^2 <= 1,
  so through L sigmoid layers with |w| <= 1 the gradient factor prod w_l sigmoid'(a_l) is at
  most 4^-L; through tanh layers with w = 2 at x = 0 it is exactly 2^L (exploding).
"""
from __future__ import annotations

from fractions import Fraction
from itertools import permutations, product

from sympy import (
    Expr,
    Function,
    IndexedBase,
    Lambda,
    Matrix,
    Max,
    Mul,
    Rational,
    S,
    Sum,
    Symbol,
    cancel,
    cos,
    cosh,
    diff,
    exp,
    expand,
    factor,
    sin,
    symbols,
    tanh,
    together,
)

from .claims import FALSE, PROVED, Identity, Note, Verdict, claim, grid
from .graphs import PHI, PHI_PRIME, Graph, Node, at_forward, backprop, chain_rule, local_derivatives, sigmoid
from .proof import Derivation, Proof, prove_equal
from .zsum import eliminate_delta

# ----------------------------------------------------------------------------- vector form


def jacobian(outputs, inputs) -> Matrix:
    """J_kr = d outputs_k / d inputs_r (m x n)."""
    return Matrix(list(outputs)).jacobian(list(inputs))


def two_layer_graph(n: int, m: int) -> Graph:
    """x (n inputs) -> y_k = F_k(x) (m undefined functions) -> o = K(y) (undefined)."""
    xs, ys, o = symbols(f'x0:{n}'), symbols(f'y0:{m}'), Symbol('o')
    nodes = tuple(Node(y, Function(f'F{k}')(*xs)) for k, y in enumerate(ys)) + (Node(o, Function('K')(*ys)),)
    return Graph(xs, nodes)


def vector_form_agrees(n: int, m: int) -> tuple[bool, str]:
    """Z = [z(p, q)] equals J^T and g_x = Z g_y equals the scalar DP S(x_p, o)."""
    graph = two_layer_graph(n, m)
    xs, ys = graph.inputs, graph.variables[n:n + m]
    z, dp = local_derivatives(graph), backprop(graph)
    Z = Matrix(n, m, lambda p, q: z[(xs[p], ys[q])])
    J = jacobian([node.expr for node in graph.nodes[:m]], xs)
    g_next = Matrix([dp.S(y) for y in ys])
    scalar = Matrix([dp.S(x) for x in xs])
    if Z != J.T:
        return False, f'Z != J^T at n = {n}, m = {m}'
    if (Z * g_next - scalar).expand() != Matrix.zeros(n, 1):
        return False, f'Z g_(i+1) != DP at n = {n}, m = {m}'
    return True, 'Z == J^T, Z g_(i+1) == [S(p, o)]'


# ----------------------------------------------------------------------------- layer rows as index sums

N, M = symbols('n m', integer=True, positive=True)        # layer widths: z_i in R^n, z_(i+1) in R^m
ROW, COL, _s = symbols('r k s', integer=True)             # g_i[ROW], g_(i+1)[COL]
W, Z_IN, G_NEXT = IndexedBase('W'), IndexedBase('z'), IndexedBase('g')
_HYPS = [N - 1, M - 1, ROW, N - 1 - ROW]


def linear_row_proof(rule: Expr = None) -> Proof:
    """(J^T g)_r = sum_k d(sum_s W_sk z_s)/dz_r g_k equals ``rule`` (default: (W g)_r = sum_k W_rk g_k)
    for all n, m >= 1 and 0 <= r < n."""
    rule = Sum(W[ROW, COL] * G_NEXT[COL], (COL, 0, M - 1)) if rule is None else rule
    forward_k = Sum(W[_s, COL] * Z_IN[_s], (_s, 0, N - 1))
    vjp = Sum(diff(forward_k, Z_IN[ROW]) * G_NEXT[COL], (COL, 0, M - 1))
    left = Derivation.start('(J^T g)_r, J_kr = d(W^T z)_k / dz_r', vjp, _HYPS).apply(eliminate_delta)
    right = Derivation.start(f'rule {rule}', rule, _HYPS)
    return prove_equal('Linear row: z_(i+1) = W^T z_i  =>  g_i = W g_(i+1)', left, right, _HYPS)


def activation_row_proof(rule: Expr = None) -> Proof:
    """(J^T g)_r = sum_k d Phi(z_k)/dz_r g_k equals ``rule`` (default g_r Phi'(z_r)): J is diagonal."""
    rule = G_NEXT[ROW] * PHI_PRIME(Z_IN[ROW]) if rule is None else rule
    vjp = Sum(diff(PHI(Z_IN[COL]), Z_IN[ROW]) * G_NEXT[COL], (COL, 0, N - 1))
    left = Derivation.start('(J^T g)_r, J_kr = d Phi(z_k) / dz_r', vjp, _HYPS).apply(eliminate_delta)
    right = Derivation.start(f'rule {rule}', rule, _HYPS)
    return prove_equal("Activation layer: g_i = g_(i+1) o Phi'(z_i)", left, right, _HYPS)


# ----------------------------------------------------------------------------- max


def max_gradient_sympy(values) -> tuple:
    """d Max(a_0, ..., a_(n-1)) / d a_k from sympy.diff, evaluated at ``values``."""
    a = symbols(f'a0:{len(values)}', real=True)
    top = Max(*a)
    return tuple(diff(top, v).subs(dict(zip(a, values))) for v in a)


def max_gradient_first(values) -> tuple:
    """PyTorch's max_pool / max(dim) rule: everything to the first maximal input."""
    first = list(values).index(max(values))
    return tuple(S.One if k == first else S.Zero for k in range(len(values)))


def max_gradient_copy_all(values) -> tuple:
    """The slide's words read literally: copy to every maximal input, 0 elsewhere."""
    return tuple(S.One if v == max(values) else S.Zero for v in values)


def is_subgradient_of_max(values, s) -> bool:
    """<s, d> <= max'(x; d) for every direction d in {-1, 0, 1}^n (the definition, for convex max).

    With integer values and |d_k| <= 1 the one-sided directional derivative is exact at step 1/4:
    max'(x; d) = max(4x + d) - 4 max(x)."""
    s = [Fraction(int(v.p), int(v.q)) for v in map(Rational, s)]
    top = max(values)
    for d in product((-1, 0, 1), repeat=len(values)):
        slope = max(4 * v + dk for v, dk in zip(values, d)) - 4 * top
        if sum(sk * dk for sk, dk in zip(s, d)) > slope:
            return False
    return True


def distinct_max_proved(n: int) -> bool:
    """For every ordering of n distinct reals (a_(sigma(j+1)) = a_(sigma(j)) - p_j, p_j > 0), sympy.diff of
    Max gives 1 at the arg-max and 0 elsewhere."""
    a = symbols(f'a0:{n}', real=True)
    gaps = symbols(f'p1:{n}', positive=True)
    top = Max(*a)
    grads = [diff(top, v) for v in a]
    for order in permutations(range(n)):
        point, value = {}, a[order[0]]
        for k, gap in zip(order[1:], gaps):
            value = value - gap
            point[a[k]] = value
        if [gr.subs(point) for gr in grads] != [S.One if k == order[0] else S.Zero for k in range(n)]:
            return False
    return True


# ----------------------------------------------------------------------------- bowls and bounds


def descent_and_target(loss: Expr, x: Symbol, y: Symbol) -> tuple[Matrix, Matrix]:
    """-grad L and the vector (0, 0) - (x, y) from the point to the minimum."""
    return Matrix([-diff(loss, x), -diff(loss, y)]), Matrix([-x, -y])


def _cross(u: Matrix, v: Matrix) -> Expr:
    return factor(u[0] * v[1] - u[1] * v[0])


def chain_graph(depth: int) -> tuple[Graph, Expr]:
    """h_0 = x, h_l = Phi(w_l h_(l-1)) for l = 1..depth, and the product prod_l w_l Phi'(w_l h_(l-1))."""
    x, ws, hs = Symbol('x'), symbols(f'w1:{depth + 1}'), symbols(f'h1:{depth + 1}')
    previous, nodes, factors = x, [], []
    for w, h in zip(ws, hs):
        nodes.append(Node(h, PHI(w * previous)))
        factors.append(w * PHI_PRIME(w * previous))
        previous = h
    return Graph((x,), tuple(nodes)), Mul(*factors)


def chain_is_product(depth: int) -> bool:
    """d h_L / dx by sympy.diff == the DP == the product of the L factors w_l Phi'(a_l)."""
    graph, factors = chain_graph(depth)
    x = graph.inputs[0]
    truth = chain_rule(graph, x)
    return all(expand(at_forward(graph, e) - truth) == 0 for e in (backprop(graph).S(x), factors))


# ----------------------------------------------------------------------------- claims

_TABLE = 'Forward & Backward propagation'


@claim('jacobian.vector_form', 'Converting scalar updates to vector form',
       'Z = [z(p,q)] equals J^T and Z g_(i+1) equals the scalar DP [S(p,o)]_p for x -> y = F(x) -> o = K(y)')
def _vector_form() -> Verdict:
    for n, m in product((1, 2, 3), repeat=2):
        ok, detail = vector_form_agrees(n, m)
        if not ok:
            return Verdict(grid('n, m in 1..3'), False, (Note(detail),))
    return Verdict(grid('n inputs, m hidden in 1..3 (9 shapes), undefined F_k and K'), True,
                   (Note('Z == J^T and Z g_(i+1) == [S(p, o)] for every shape'),))


@claim('jacobian.example', 'The Jacobian matrix[1/2]',
       'F(x,y) = [x^2 y, 5x + sin y] has Jacobian [[2xy, x^2], [5, cos y]] (m x n, J_kr = dF_k/dx_r)')
def _example() -> Verdict:
    x, y = symbols('x y')
    J = jacobian([x**2 * y, 5 * x + sin(y)], [x, y])
    slide = Matrix([[2 * x * y, x**2], [5, cos(y)]])
    return Verdict(PROVED, J == slide, (Identity('J_F(x, y)', J, slide, 'structurally equal'),))


@claim('jacobian.chain', 'The Jacobian matrix[2/2]',
       'g_i = J^T g_(i+1) through two layers x -> F(x) -> H(y) -> K(z) equals sympy.diff of K(H(F(x)))')
def _chain() -> Verdict:
    xs, ys, zs = symbols('x0:2'), symbols('y0:3'), symbols('z0:2')
    F = [Function(f'F{k}')(*xs) for k in range(3)]
    H = [Function(f'H{k}')(*ys) for k in range(2)]
    K = Function('K')(*zs)
    g2 = Matrix([diff(K, z) for z in zs])
    g0 = jacobian(F, xs).T * (jacobian(H, ys).T * g2)
    composed = K.subs(dict(zip(zs, H))).subs(dict(zip(ys, F)))
    at_x = g0.subs(dict(zip(zs, H))).subs(dict(zip(ys, F)))
    truth = Matrix([diff(composed, x) for x in xs])
    holds = (at_x - truth).expand() == Matrix.zeros(2, 1)
    return Verdict(grid('widths 2 -> 3 -> 2 -> 1, undefined F_k, H_k, K'), holds,
                   (Identity('g_0', at_x, truth, 'expand(lhs - rhs) == 0'),))


@claim('jacobian.activation_row', 'Effect on linear layer and activation function',
       "Elementwise Phi: J_kr = Phi'(z_k) KD(k,r) is diagonal (sparse) and J^T g = g o Phi'(z), for all n")
def _activation_row() -> Verdict:
    proof = activation_row_proof()
    return Verdict(PROVED, proof.holds, (proof,))


@claim('jacobian.linear_row', _TABLE,
       'Linear: z_(i+1) = W^T z_i gives J = W^T and g_i = J^T g_(i+1) = W g_(i+1), for all n x m and '
       'every row r')
def _linear_row() -> Verdict:
    proof = linear_row_proof()
    return Verdict(PROVED, proof.holds, (proof,))


@claim('jacobian.max_distinct', _TABLE,
       'Max: for distinct inputs d max/d a_k is 1 at the arg-max, 0 elsewhere (copy to the maximal input)')
def _max_distinct() -> Verdict:
    holds = all(distinct_max_proved(n) for n in (2, 3, 4))
    method = grid('n = 2..4 inputs, every ordering of distinct real values (gaps symbolic, positive)')
    return Verdict(method, holds, (Note('sympy.diff(Max(a_0..a_(n-1)), a_k) evaluated on each ordering'),))


TIE = (1, 1, 0, 0)
THREE_WAY = (1, 1, 1, 0)


def _tie_patterns() -> tuple:
    return tuple(v for n in (2, 3, 4) for v in product((0, 1, 2), repeat=n))


@claim('jacobian.max_ties', _TABLE,
       "Max backward 'Set to 0 (non-maximal), Copy (maximal input)' determines a valid gradient at ties",
       expected=False)
def _max_ties() -> Verdict:
    copy_all, first = max_gradient_copy_all(TIE), max_gradient_first(TIE)
    half, three = max_gradient_sympy(TIE), max_gradient_sympy(THREE_WAY)
    counterexample = (
        f'inputs {TIE}, grad_output 1: copying to every maximal input gives {copy_all}, but along '
        f'd = (1,1,1,1) max(x + t d) = 1 + t has slope 1 while the rule predicts {sum(copy_all)} '
        '(not a subgradient); '
        f'"the" maximal input is not unique. First-maximum rule (PyTorch max_pool, max(dim)): {first}; '
        f'SymPy diff(Max) (Heaviside(0) = 1/2): {half}; at {THREE_WAY} SymPy gives {three}, sum {sum(three)}')
    valid_first = all(is_subgradient_of_max(v, max_gradient_first(v)) for v in _tie_patterns())
    holds = is_subgradient_of_max(TIE, copy_all)
    checks = (is_subgradient_of_max(TIE, half), not is_subgradient_of_max(THREE_WAY, three))
    correction = ('at a tie send the whole gradient to the FIRST maximal input (PyTorch max_pool, '
                  'max(dim)); any convex combination of the tied inputs is also a subgradient (SymPy\'s 1/2 '
                  'split at a two-way tie, torch.amax\'s even split), but SymPy\'s n-ary Max gives 1/2 to '
                  'each of 3 tied inputs (sum 3/2), which is not')
    notes = (Note(f'first-maximum rule is a subgradient on all {len(_tie_patterns())} vectors in '
                  f'{{0,1,2}}^n, n = 2..4: {valid_first}'),
             Note(f'SymPy split valid at {TIE}: {checks[0]}; invalid at {THREE_WAY}: {checks[1]}'))
    return Verdict(FALSE, holds, notes, correction=correction,
                   correction_verified=valid_first and all(checks), counterexample=counterexample)


@claim('jacobian.circular_bowl', 'Example',
       'L = x^2 + y^2: -grad L = 2((0,0) - (x,y)) points at the minimum from every point')
def _circular_bowl() -> Verdict:
    x, y = symbols('x y', real=True)
    descent, target = descent_and_target(x**2 + y**2, x, y)
    holds = (descent - 2 * target).expand() == Matrix.zeros(2, 1)
    return Verdict(PROVED, holds, (Identity('-grad L', descent, 2 * target, 'expand(lhs - rhs) == 0'),))


@claim('jacobian.elliptical_bowl', 'Example',
       'L = x^2 + 4y^2: -grad L is parallel to (0,0) - (x,y) iff x = 0 or y = 0 (cross product -6xy); on the '
       'axes it is 2 or 8 times that vector')
def _elliptical_bowl() -> Verdict:
    x, y = symbols('x y', real=True)
    descent, target = descent_and_target(x**2 + 4 * y**2, x, y)
    cross = _cross(descent, target)
    on_x_axis = (descent - 2 * target).subs(y, 0) == Matrix.zeros(2, 1)
    on_y_axis = (descent - 8 * target).subs(x, 0) == Matrix.zeros(2, 1)
    holds = expand(cross + 6 * x * y) == 0 and on_x_axis and on_y_axis
    return Verdict(PROVED, holds, (Identity('cross(-grad L, (0,0) - (x,y))', cross, -6 * x * y, 'factor'),
                                   Note('a product of reals is 0 iff a factor is; on y = 0: -grad L = '
                                        '2 (-x, 0); on x = 0: -grad L = 8 (0, -y)')))


@claim('jacobian.sigmoid_bound', 'Vanishing and exploding gradient problems',
       "sigmoid'(x) = s(1 - s) and 1/4 - s(1 - s) = (s - 1/2)^2, so 0 < sigmoid' <= 1/4 (equality at x = 0)")
def _sigmoid_bound() -> Verdict:
    x = Symbol('x', real=True)
    s = sigmoid(x)
    derivative = diff(s, x)
    identity = cancel(together(derivative - s * (1 - s))) == 0
    u = Symbol('s', real=True)
    square = expand(Rational(1, 4) - u * (1 - u) - (u - S.Half)**2) == 0
    holds = identity and square and bool(derivative.is_positive) and derivative.subs(x, 0) == Rational(1, 4)
    return Verdict(PROVED, holds,
                   (Identity("sigmoid'", derivative, s * (1 - s), 'cancel(together(lhs - rhs)) == 0'),
                    Identity('1/4 - s(1-s)', Rational(1, 4) - u * (1 - u), (u - S.Half)**2, 'expand'),
                    Note("exp(-x)/(1 + exp(-x))^2 is positive for real x (SymPy's assumptions)")))


@claim('jacobian.tanh_bound', 'Vanishing and exploding gradient problems',
       "tanh'(x) = 1 - tanh(x)^2 = 1/cosh(x)^2, so 0 < tanh' <= 1 for real x (equality at x = 0)")
def _tanh_bound() -> Verdict:
    x = Symbol('x', real=True)
    derivative = diff(tanh(x), x)
    sech2 = 1 / cosh(x)**2
    identity = expand(derivative - (1 - tanh(x)**2)) == 0 and cancel((derivative - sech2).rewrite(exp)) == 0
    holds = identity and bool(sech2.is_positive) and bool((tanh(x)**2).is_nonnegative) \
        and derivative.subs(x, 0) == 1
    return Verdict(PROVED, holds, (Identity("tanh'", derivative, 1 - tanh(x)**2, 'expand'),
                                   Identity("tanh'", derivative, sech2, 'cancel(rewrite(exp))'),
                                   Note('1/cosh^2 > 0 and tanh^2 >= 0 for real x')))


CHAIN_DEPTHS = tuple(range(1, 9))


@claim('jacobian.vanishing_gradient', 'Vanishing and exploding gradient problems',
       "through L sigmoid layers d h_L/dx = prod_l w_l sigmoid'(a_l); with |w_l| <= 1 it is at most 4^-L")
def _vanishing_gradient() -> Verdict:
    products = all(chain_is_product(depth) for depth in CHAIN_DEPTHS)
    bound = _sigmoid_bound().holds
    note = Note("each factor |w_l sigmoid'(a_l)| <= |w_l| / 4 <= 1/4 (jacobian.sigmoid_bound), so the "
                'product of L factors is at most 4^-L')
    return Verdict(grid(f'chain depths L = 1..{CHAIN_DEPTHS[-1]} (DP == diff == product of factors)'),
                   products and bound, (note,))


@claim('jacobian.exploding_gradient', 'Vanishing and exploding gradient problems',
       'through L tanh layers with w_l = 2 at x = 0 the gradient factor d h_L/dx is exactly 2^L '
       '(grows with depth)')
def _exploding_gradient() -> Verdict:
    t, values = Symbol('t'), []
    for depth in CHAIN_DEPTHS:
        graph, factors = chain_graph(depth)
        numbers = {graph.inputs[0]: S.Zero, **{w: S(2) for w in symbols(f'w1:{depth + 1}')}}
        for node in graph.nodes:
            numbers[node.symbol] = node.expr.xreplace(numbers).replace(PHI, tanh)
        values.append(factors.xreplace(numbers).replace(PHI_PRIME, Lambda(t, 1 - tanh(t)**2)))
    holds = values == [2**depth for depth in CHAIN_DEPTHS]
    return Verdict(grid(f'chain depths L = 1..{CHAIN_DEPTHS[-1]}'), holds,
                   (Note(f'd h_L/dx at x = 0, w_l = 2: {values}'),))
