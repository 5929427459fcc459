"""The lecture's convolution equations (1)-(22), each proved, or refuted and corrected.

Slides "Convolution & Cross correlation" through "Backpropagation (9/9)".
Arrays are functions on Z^2 that vanish outside their box, as the lecture's
sums implicitly assume.  With I of size H x W and K of size k1 x k2:

    cross-correlation (eq 1)   (I (x) K)_ij = sum_{m<k1, n<k2} I(i+m, j+n) K(m, n)
    convolution       (eq 2)   (I  *  K)_ij = sum_{m<k1, n<k2} I(i-m, j-n) K(m, n)

The lecture's layer (eq 5, slide "Notations") is

    x^{l+1}_ij = sum_{m<k1, n<k2} w_mn f(x^l_{i+m, j+n}) + b,   0 <= i <= H-k1, 0 <= j <= W-k2,

a cross-correlation, valid for all integers H >= k1 >= 1, W >= k2 >= 1.  Its
gradients come out of the generic chain-rule mechanism of :mod:`derive.rules`
and are compared with the lecture's formulas:

    eq 13  dE/dw_{m'n'} = sum_{i,j} delta_ij o_{i+m', j+n'}                   proved
    eq 14  = rot180(delta) * o                 true when * is the VALID true convolution
    eq 20  dE/dx_{i'j'} = sum_{m,n} delta_{i'-m, j'-n} w_mn f'(x_{i'j'})     proved (delta zero outside its box)
    eq 21  = rot180{sum delta_{i'+m, j'+n} w_mn} f'                          FALSE
    eq 22  = delta * rot180(w) f'               true when * is the FULL cross-correlation

so eq 14 and eq 22 use '*' for two different operations.  The errata (eq 3,
the output size, eq 4-5's "flipped kernel", eq 21, the '*' clash) are refuted
with numbers and corrected with proofs.
"""
from __future__ import annotations

import random
from functools import cache
from itertools import product

from sympy import And, Derivative, Function, Indexed, IndexedBase, Piecewise, Sum, Symbol, symbols

from .claims import FALSE, PROVED, Identity, Note, Verdict, claim, grid
from .proof import Derivation, prove_equal
from .rules import Layer, Tensor, gradient
from .zsum import RuleRefused, ZSum, count_box, eliminate_delta, substitute

H, W, k1, k2 = symbols('H W k1 k2', integer=True, positive=True)
i, j, m, n, u, v = symbols('i j m n u v', integer=True)
ip, jp, mp, np_ = symbols("i' j' m' n'", integer=True)
x, w, delta, I, K = (IndexedBase(s) for s in ('x', 'w', 'delta', 'I', 'K'))
f = Function('f')
b = IndexedBase('b').label
Ho, Wo = H - k1 + 1, W - k2 + 1
SIZES = (k1 - 1, k2 - 1, H - k1, W - k2)            # H >= k1 >= 1, W >= k2 >= 1
AT_X = SIZES + (ip, H - 1 - ip, jp, W - 1 - jp)     # (i', j') inside x
AT_W = SIZES + (mp, k1 - 1 - mp, np_, k2 - 1 - np_)  # (m', n') inside w
FPRIME = Derivative(f(x[ip, jp]), x[ip, jp])


def inside(base: IndexedBase, r, c, rows, cols):
    """base[r, c] extended by zero outside [0, rows) x [0, cols)."""
    return Piecewise((base[r, c], And(r >= 0, r <= rows - 1, c >= 0, c <= cols - 1)), (0, True))


@cache
def lecture_layer() -> Layer:
    """x^{l+1}_ij = sum_{m,n} w_mn f(x^l_{i+m, j+n}) + b (eq 5 with o = f(x), slide "Notations")."""
    xin = Tensor('input', x, (H, W))
    taps = ZSum.make((m, n), w[m, n] * f(x[i + m, j + n]), [m, k1 - 1 - m, n, k2 - 1 - n])
    return Layer('lecture', Tensor('output', IndexedBase('y'), (Ho, Wo)), (i, j),
                 (taps, ZSum.make((), b)), (xin, Tensor('weight', w, (k1, k2)), Tensor('bias', IndexedBase('b'), ())),
                 (), SIZES)


@cache
def chain(wrt: str):
    index = {'input': (ip, jp), 'weight': (mp, np_), 'bias': ()}[wrt]
    return gradient(lecture_layer(), wrt, index, upstream_base='delta').derivation


def _claimed(title, expr, hyps, *steps):
    d = Derivation.start(title, expr, hyps)
    for step in steps:
        d = d.apply(*step)
    return d


# ----------------------------------------------------------------------------- stated forms

def eq20():
    return _claimed('eq 20', Sum(inside(delta, ip - m, jp - n, Ho, Wo) * w[m, n] * FPRIME,
                                 (m, 0, k1 - 1), (n, 0, k2 - 1)), AT_X)


def eq22(star: str):
    """delta * rot180(w) f'(x) with '*' the FULL cross-correlation ('xcorr') or FULL convolution ('conv')."""
    rot_w = w[k1 - 1 - u, k2 - 1 - v]
    if star == 'xcorr':
        d = inside(delta, ip - (k1 - 1) + u, jp - (k2 - 1) + v, Ho, Wo)
    else:
        d = inside(delta, ip - u, jp - v, Ho, Wo)
    return _claimed(f'eq 22 with * = full {star}', Sum(d * rot_w * FPRIME, (u, 0, k1 - 1), (v, 0, k2 - 1)),
                    AT_X, (substitute, u, m, k1 - 1 - m), (substitute, v, n, k2 - 1 - n))


def eq13():
    return _claimed('eq 13', Sum(delta[i, j] * f(x[i + mp, j + np_]), (i, 0, H - k1), (j, 0, W - k2)), AT_W)


def eq14(star: str):
    """rot180(delta) * o with '*' the VALID true convolution ('conv') or cross-correlation ('xcorr')."""
    rot_d = inside(delta, Ho - 1 - u, Wo - 1 - v, Ho, Wo)
    if star == 'conv':   # (o * R)_{m'} = sum_u o(m' + Ho - 1 - u) R(u)
        body = f(x[mp + Ho - 1 - u, np_ + Wo - 1 - v]) * rot_d
    else:                # (o (x) R)_{m'} = sum_u o(m' + u) R(u)
        body = f(x[mp + u, np_ + v]) * rot_d
    return _claimed(f'eq 14 with * = valid {star}', Sum(body, (u, 0, Ho - 1), (v, 0, Wo - 1)), AT_W,
                    (substitute, u, i, Ho - 1 - i), (substitute, v, j, Wo - 1 - j))


def _verdict_of(proof, method=PROVED) -> Verdict:
    return Verdict(method, proof.holds, (proof,))


# ----------------------------------------------------------------------------- numbers

def correlate(A, Kr, mode: str) -> list:
    """Cross-correlation of nested lists (zero outside), 'full' / 'valid' / 'same' (scipy's windows)."""
    return _apply(A, Kr, mode, +1)


def convolve(A, Kr, mode: str) -> list:
    return _apply(A, Kr, mode, -1)


def rot180(A) -> list:
    return [row[::-1] for row in A[::-1]]


def _at(A, r, c):
    return A[r][c] if 0 <= r < len(A) and 0 <= c < len(A[0]) else 0


def _window(la: int, lk: int, mode: str, sign: int) -> range:
    first = 0 if sign < 0 else -(lk - 1)
    if mode == 'full':
        return range(first, first + la + lk - 1)
    if mode == 'same':
        start = first + ((lk - 1) // 2 if sign < 0 else lk // 2)
        return range(start, start + la)
    small, big = min(la, lk), max(la, lk)
    start = (lk - 1 if la >= lk else la - 1) if sign < 0 else (0 if la >= lk else la - lk)
    return range(start, start + big - small + 1)


def _apply(A, Kr, mode, sign):
    rows = _window(len(A), len(Kr), mode, sign)
    cols = _window(len(A[0]), len(Kr[0]), mode, sign)
    return [[sum(_at(A, r + sign * p, c + sign * q) * Kr[p][q] for p in range(len(Kr))
                 for q in range(len(Kr[0]))) for c in cols] for r in rows]


def _random_matrix(rng, rows, cols):
    return [[rng.randint(-9, 9) for _ in range(cols)] for _ in range(rows)]


def explicit_dw(o, d):
    """eq 13 evaluated: sum_{i,j} delta_ij o_{i+m', j+n'}."""
    kr, kc = len(o) - len(d) + 1, len(o[0]) - len(d[0]) + 1
    return [[sum(d[a][c] * o[a + p][c + q] for a in range(len(d)) for c in range(len(d[0])))
             for q in range(kc)] for p in range(kr)]


def explicit_dx(d, wk):
    """eq 20 evaluated (f' = 1): sum_{m,n} delta_{i'-m, j'-n} w_mn."""
    rows, cols = len(d) + len(wk) - 1, len(d[0]) + len(wk[0]) - 1
    return [[sum(_at(d, r - p, c - q) * wk[p][q] for p in range(len(wk)) for q in range(len(wk[0])))
             for c in range(cols)] for r in range(rows)]


# ----------------------------------------------------------------------------- claims: eq 1-5

SLIDE_CC = 'Convolution & Cross correlation'


@claim('conv.eq3', SLIDE_CC, 'eq 3: sum_{m=0}^{k1-1} I(i-m,j-n) K(m,n) == sum_{m=0}^{k1-1} I(i+m,j+n) K(-m,-n) '
       '(same bounds 0..k-1)', equation='3', expected=False)
def _eq3() -> Verdict:
    hyps = [k1 - 1, k2 - 1]
    lhs = _claimed('eq 2', Sum(I[i - m, j - n] * K[m, n], (m, 0, k1 - 1), (n, 0, k2 - 1)), hyps,
                   (substitute, m, u, -u), (substitute, n, v, -v))
    slide = _claimed('eq 3 as printed', Sum(I[i + u, j + v] * K[-u, -v], (u, 0, k1 - 1), (v, 0, k2 - 1)), hyps)
    fixed = _claimed('eq 3 corrected', Sum(I[i + u, j + v] * K[-u, -v], (u, 1 - k1, 0), (v, 1 - k2, 0)), hyps)
    wrong, right = prove_equal('eq 2 == eq 3 as printed', lhs, slide, hyps), prove_equal(
        'eq 2 == eq 3 with bounds -(k-1)..0', lhs, fixed, hyps)
    Iv, Kv = [1, 2, 3, 4, 5, 6, 7], [1, 10, 100]
    at = (lambda seq, t: seq[t] if 0 <= t < len(seq) else 0)
    conv = sum(at(Iv, 4 - t) * at(Kv, t) for t in range(3))
    printed = sum(at(Iv, 4 + t) * at(Kv, -t) for t in range(3))
    return Verdict(FALSE, wrong.holds, (wrong, right),
                   correction='sum_{m=0}^{k1-1} I(i-m,j-n)K(m,n) = sum_{m=-(k1-1)}^{0} sum_{n=-(k2-1)}^{0} '
                              'I(i+m,j+n) K(-m,-n): the substitution m -> -m also flips the bounds',
                   correction_verified=right.holds and not wrong.holds,
                   counterexample=f'k1=3, k2=1, I = (1..7) along rows, K = (1, 10, 100), i=4: eq 2 gives {conv}, '
                                  f'eq 3 as printed gives {printed}')


@claim('conv.flip', SLIDE_CC, 'convolution is cross-correlation with the kernel rotated by 180 degrees, '
       'shifted: (I * K)_ij = (I (x) rot180 K)_{i-k1+1, j-k2+1}', equation='1-3')
def _flip() -> Verdict:
    hyps = [k1 - 1, k2 - 1]
    lhs = _claimed('(I * K)_ij', Sum(I[i - m, j - n] * K[m, n], (m, 0, k1 - 1), (n, 0, k2 - 1)), hyps)
    rhs = _claimed('(I (x) rot180 K)_{i-k1+1, j-k2+1}',
                   Sum(I[i - k1 + 1 + u, j - k2 + 1 + v] * K[k1 - 1 - u, k2 - 1 - v], (u, 0, k1 - 1),
                       (v, 0, k2 - 1)), hyps, (substitute, u, m, k1 - 1 - m), (substitute, v, n, k2 - 1 - n))
    return _verdict_of(prove_equal('conv == shifted xcorr with rot180 kernel', lhs, rhs, hyps))


@claim('conv.symmetric-kernel', SLIDE_CC,
       'for a kernel indexed -r..r with K(-m,-n) = K(m,n), convolution equals cross-correlation '
       '(written K = F(m,n) + F(-m,-n), which is every symmetric kernel)', equation='1-3')
def _symmetric() -> Verdict:
    r1, r2 = symbols('r1 r2', integer=True, nonnegative=True)
    F = IndexedBase('F')
    sym = (lambda p, q: F[p, q] + F[-p, -q])
    conv = _claimed('(I * K)_ij', Sum(I[i - m, j - n] * sym(m, n), (m, -r1, r1), (n, -r2, r2)), [],
                    (substitute, m, u, -u), (substitute, n, v, -v))
    xcorr = _claimed('(I (x) K)_ij', Sum(I[i + u, j + v] * sym(u, v), (u, -r1, r1), (v, -r2, r2)), [])
    return _verdict_of(prove_equal('conv == xcorr for a symmetric kernel', conv, xcorr, []))


@claim('conv.matrix', 'Convolution as a matrix multiplication',
       'the valid cross-correlation is y = T x for a matrix T built from the kernel, and its backward '
       'dE/dx = T^T dE/dy equals eq 20')
def _matrix() -> Verdict:
    from sympy import Matrix
    checked = 0
    for Hc, Wc, a, c in product(range(2, 5), range(2, 5), range(1, 3), range(1, 3)):
        if a > Hc or c > Wc:
            continue
        xs = Matrix([Symbol(f'x{r}_{s}') for r in range(Hc) for s in range(Wc)])
        ws = [[Symbol(f'w{p}_{q}') for q in range(c)] for p in range(a)]
        rows = [[0] * (Hc * Wc) for _ in range((Hc - a + 1) * (Wc - c + 1))]
        for r, s, p, q in product(range(Hc - a + 1), range(Wc - c + 1), range(a), range(c)):
            rows[r * (Wc - c + 1) + s][(r + p) * Wc + s + q] = ws[p][q]
        T = Matrix(rows)
        ys = T * xs
        ds = Matrix([Symbol(f'd{r}_{s}') for r in range(Hc - a + 1) for s in range(Wc - c + 1)])
        grid_d = [[ds[r * (Wc - c + 1) + s] for s in range(Wc - c + 1)] for r in range(Hc - a + 1)]
        fwd = correlate([[xs[r * Wc + s] for s in range(Wc)] for r in range(Hc)], ws, 'valid')
        back = explicit_dx(grid_d, ws)
        if list(ys) != [e for row in fwd for e in row] or list(T.T * ds) != [e for row in back for e in row]:
            return Verdict(grid('H, W in 2..4, k in 1..2'), False, (Note(f'mismatch at {(Hc, Wc, a, c)}'),))
        checked += 1
    return Verdict(grid(f'H, W in 2..4, k1, k2 in 1..2 ({checked} sizes, symbolic entries)'), True,
                   (Note(f'T x == valid cross-correlation and T^T delta == eq 20 on {checked} sizes'),))


@claim('conv.eq4-5', 'Convolutional neural Network',
       'eq 4-5 define the convolution (I * K)_ij, "same as cross-correlation, except that kernel is flipped", '
       'as sum_{m,n} K_mn I_{i+m, j+n} + b: that sum equals the convolution of eq 2', equation='4-5',
       expected=False)
def _eq45() -> Verdict:
    hyps = [k1 - 1, k2 - 1]
    formula = _claimed('eq 5 (without b)', Sum(K[m, n] * I[i + m, j + n], (m, 0, k1 - 1), (n, 0, k2 - 1)), hyps)
    xcorr = _claimed('eq 1', Sum(I[i + m, j + n] * K[m, n], (m, 0, k1 - 1), (n, 0, k2 - 1)), hyps)
    conv = _claimed('eq 2', Sum(I[i - m, j - n] * K[m, n], (m, 0, k1 - 1), (n, 0, k2 - 1)), hyps)
    same = prove_equal('eq 5 == eq 1 (cross-correlation, no flip)', formula, xcorr, hyps)
    flipped = prove_equal('eq 5 == eq 2 (convolution)', formula, conv, hyps)
    Iv = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    Kv = [[1, 0], [0, 0]]
    eq5 = correlate(Iv, Kv, 'valid')
    true_conv = convolve(Iv, Kv, 'valid')
    return Verdict(FALSE, flipped.holds, (same, flipped),
                   correction='eq 4-5 compute the cross-correlation I (x) K + b (eq 1, no flip), which is what '
                              'PyTorch conv2d computes; the convolution of eq 2 equals it only with K rotated by 180 '
                              'degrees (claim conv.flip)',
                   correction_verified=same.holds and not flipped.holds,
                   counterexample=f'I = {Iv}, K = {Kv}: eq 5 gives {eq5}, the valid convolution gives {true_conv}')


@claim('conv.forward-rot180', 'Forward propagation (1/2)',
       'x = rot180(w) * o + b equals sum_{m,n} w_mn o_{i+m, j+n} + b when * is the valid true convolution')
def _forward_rot180() -> Verdict:
    hyps = list(SIZES) + [i, H - k1 - i, j, W - k2 - j]
    o = IndexedBase('o')
    layer = _claimed('sum w_mn o_{i+m, j+n}', Sum(w[m, n] * o[i + m, j + n], (m, 0, k1 - 1), (n, 0, k2 - 1)), hyps)
    # (o * R)_ij = sum_{u,v} o(i + k1 - 1 - u, j + k2 - 1 - v) R(u, v), R = rot180(w)
    conv = _claimed('rot180(w) * o (valid)', Sum(o[i + k1 - 1 - u, j + k2 - 1 - v] * w[k1 - 1 - u, k2 - 1 - v],
                                                 (u, 0, k1 - 1), (v, 0, k2 - 1)), hyps,
                    (substitute, u, m, k1 - 1 - m), (substitute, v, n, k2 - 1 - n))
    return _verdict_of(prove_equal('forward == rot180(w) * o', layer, conv, hyps))


# ----------------------------------------------------------------------------- claims: eq 10-14

SLIDE_B2 = 'Backpropagation (2/9)'


@claim('conv.output-size', SLIDE_B2, 'an H x W input and a k1 x k2 kernel give an output of size '
       '(H - k1 - 1) x (H - k2 - 1)', expected=False)
def _output_size() -> Verdict:
    Hs, Ws, a, c = 5, 7, 3, 2
    counts = [len(list(points_of(Hs, Ws, a, c, axis))) for axis in (0, 1)]
    size = []
    for size_sym, kern, idx in ((H, k1, i), (W, k2, j)):
        z = ZSum.make((idx,), 1, [idx, size_sym - kern - idx])
        size.append(count_box(z, [size_sym - kern])[0])
    fixed = Identity('output positions (count of the i, j of eq 10)', size[0] * size[1], Ho * Wo,
                     'count of integer points, symbolic H >= k1 >= 1, W >= k2 >= 1')
    ok = (size[0] - Ho).expand() == 0 and (size[1] - Wo).expand() == 0
    return Verdict(FALSE, False, (fixed,),
                   correction='(H - k1 + 1) x (W - k2 + 1) (two slips: the sign of 1, and H for W); with stride S, '
                              'padding P, dilation D: floor((H + 2P - D(k-1) - 1)/S) + 1 per axis (claim '
                              'layer.conv.output-size)',
                   correction_verified=ok and counts == [Hs - a + 1, Ws - c + 1],
                   counterexample=f'H={Hs}, W={Ws}, k1={a}, k2={c}: the window fits at {counts[0]} x {counts[1]} '
                                  f'positions (counted); the slide gives {Hs - a - 1} x {Hs - c - 1}')


def points_of(Hs, Ws, a, c, axis):
    """Positions along one axis where the kernel lies inside the input (counted by enumeration)."""
    length, kern = (Hs, a) if axis == 0 else (Ws, c)
    return (t for t in range(-length, 2 * length) if t >= 0 and t + kern - 1 <= length - 1)


@claim('conv.eq12', 'Backpropagation (3/9)', "eq 11-12: d x_ij / d w_{m'n'} = o_{i+m', j+n'}", equation='11-12')
def _eq12() -> Verdict:
    layer = lecture_layer()
    d = Derivation.given('d x_ij / d w_{m\'n\'}', layer.terms[0], 'eq 11').apply(_differentiate, w[mp, np_])
    d = d.apply(eliminate_delta).apply(eliminate_delta)
    stated = Derivation.given('eq 12', ZSum.make((), f(x[i + mp, j + np_])), 'slide')
    return _verdict_of(prove_equal('eq 12', d, stated, list(AT_W)))


def _differentiate(z: ZSum, target: Indexed):
    return ZSum.make(z.vars, z.body.diff(target), z.conds, z.divs), f'd/d{target} under the sum'


_differentiate.title = 'differentiation under a finite sum'


@claim('conv.eq13', SLIDE_B2, "eq 10-13: dE/dw_{m'n'} = sum_{i=0}^{H-k1} sum_{j=0}^{W-k2} delta_ij o_{i+m', j+n'}",
       equation='10-13')
def _eq13() -> Verdict:
    return _verdict_of(prove_equal('eq 13', chain('weight'), eq13(), list(AT_W)))


@claim('conv.eq14', 'Backpropagation (3/9)', "eq 14: dE/dw_{m'n'} = rot180(delta) * o with * the VALID true "
       'convolution (eq 2)', equation='14')
def _eq14() -> Verdict:
    return _verdict_of(prove_equal('eq 14, * = valid convolution', chain('weight'), eq14('conv'), list(AT_W)))


@claim('conv.bias', 'Backpropagation (1/9)-(3/9)', 'dE/db = sum_{i,j} delta_ij (the bias is shared like the weights)')
def _bias() -> Verdict:
    stated = _claimed('sum of delta', Sum(delta[i, j], (i, 0, H - k1), (j, 0, W - k2)), SIZES)
    return _verdict_of(prove_equal('dE/db', chain('bias'), stated, list(SIZES)))


# ----------------------------------------------------------------------------- claims: eq 15-22

@claim('conv.eq16-17', 'Backpropagation (6/9)-(7/9)',
       "eq 16-17: x_{i'j'} affects exactly the outputs (i'-m, j'-n), 0 <= m < k1, 0 <= n < k2, that lie in the "
       'output (region Q); the terms outside it vanish (delta is zero there)', equation='16-17')
def _eq1617() -> Verdict:
    d = chain('input')
    region = [c for c in d.result.conds if c.free_symbols & {m, n}]
    stated = ZSum.make((m, n), d.result.body, [m, k1 - 1 - m, n, k2 - 1 - n, ip - m, H - k1 - ip + m,
                                               jp - n, W - k2 - jp + n])
    proof = prove_equal('region Q', d, Derivation.given('region Q', stated, 'slide (7/9)'), list(AT_X))
    return Verdict(PROVED, proof.holds, (proof, Note(f'constraints of the chain-rule sum: {region}')))


@claim('conv.eq19', 'Backpropagation (8/9)', "eq 18-19: d x^{l+1}_{i'-m, j'-n} / d x^l_{i'j'} = w_mn f'(x_{i'j'}) "
       "for every (i'-m, j'-n) in the output", equation='18-19')
def _eq19() -> Verdict:
    layer = lecture_layer()
    term = layer.terms[0]
    shifted = term.replace({i: ip - m, j: jp - n, m: u, n: v}, (u, v))
    d = Derivation.given('d x_{i\'-m, j\'-n} / d x_{i\'j\'}', shifted, 'eq 18').apply(
        _differentiate, x[ip, jp]).apply(eliminate_delta).apply(eliminate_delta)
    stated = Derivation.given('eq 19', ZSum.make((), w[m, n] * FPRIME), 'slide')
    hyps = list(AT_X) + [m, k1 - 1 - m, n, k2 - 1 - n, ip - m, H - k1 - ip + m, jp - n, W - k2 - jp + n]
    return _verdict_of(prove_equal('eq 19', d, stated, hyps))


@claim('conv.eq20', 'Backpropagation (9/9)', "eq 20: dE/dx_{i'j'} = sum_{m,n} delta_{i'-m, j'-n} w_mn f'(x_{i'j'}), "
       'delta read as zero outside its box', equation='20')
def _eq20() -> Verdict:
    return _verdict_of(prove_equal('eq 20', chain('input'), eq20(), list(AT_X)))


@claim('conv.eq21', 'Backpropagation (9/9)', "eq 21: sum_{m,n} delta_{i'-m,j'-n} w_mn = rot180{sum_{m,n} "
       "delta_{i'+m,j'+n} w_mn}, rot180 taken of the resulting array (full, valid or same)", equation='21',
       expected=False)
def _eq21() -> Verdict:
    rng = random.Random(21)
    d, wk = _random_matrix(rng, 3, 4), _random_matrix(rng, 2, 2)
    target = explicit_dx(d, wk)
    readings = {mode: rot180(correlate(d, wk, mode)) for mode in ('full', 'valid', 'same')}
    agree = [mode for mode, r in readings.items() if r == target]
    fixed = prove_equal('eq 20 == full xcorr of delta with rot180(w)', eq20(), eq22('xcorr'), list(AT_X))
    return Verdict(FALSE, bool(agree), (fixed,),
                   correction="the rotation belongs to the kernel, not to the sum: sum_{m,n} delta_{i'-m, j'-n} w_mn "
                              "= sum_{u,v} delta_{i'-(k1-1)+u, j'-(k2-1)+v} rot180(w)_uv, the full cross-correlation "
                              'of delta with rot180(w) (eq 22 read with * = full cross-correlation)',
                   correction_verified=fixed.holds,
                   counterexample=f'delta = {d}, w = {wk}: eq 20 gives {target}; rot180 of the full correlation '
                                  f'gives {readings["full"]}')


@claim('conv.eq22', 'Backpropagation (9/9)', "eq 22: dE/dx = delta * rot180(w) f'(x) with * the FULL "
       'cross-correlation (zero-padded delta)', equation='22')
def _eq22() -> Verdict:
    return _verdict_of(prove_equal('eq 22, * = full xcorr', chain('input'), eq22('xcorr'), list(AT_X)))


READINGS = tuple(product(('conv', 'xcorr'), ('valid', 'same', 'full'), ('as written', 'swapped')))


def _reading(op, mode, order, A, B):
    left, right = (A, B) if order == 'as written' else (B, A)
    return (convolve if op == 'conv' else correlate)(left, right, mode)


def star_readings(sizes) -> dict:
    """For each reading of '*', on how many sizes eq 14 and eq 22 hold (random integer data)."""
    rng = random.Random(14)
    table = {r: [0, 0] for r in READINGS}
    for Hs, Ws, a, c in sizes:
        o, d_out = _random_matrix(rng, Hs, Ws), _random_matrix(rng, Hs - a + 1, Ws - c + 1)
        wk = _random_matrix(rng, a, c)
        dw, dx = explicit_dw(o, d_out), explicit_dx(d_out, wk)
        for r in READINGS:
            table[r][0] += _reading(*r, rot180(d_out), o) == dw
            table[r][1] += _reading(*r, d_out, rot180(wk)) == dx
    return table


@claim('conv.star-clash', 'Backpropagation (3/9) and (9/9)', "eq 14 and eq 22 use the same symbol '*' (defined as "
       'convolution by eq 2); one meaning of * makes both true', equation='14, 22', expected=False)
def _star_clash() -> Verdict:
    sizes = [(Hs, Ws, a, c) for Hs, Ws, a, c in product(range(3, 6), range(3, 6), range(1, 4), range(1, 4))
             if a < Hs and c < Ws]
    table = star_readings(sizes)
    both = [r for r in READINGS if table[r] == [len(sizes), len(sizes)]]
    for14 = sorted({r[:2] for r in READINGS if table[r][0] == len(sizes)})
    for22 = sorted({r[:2] for r in READINGS if table[r][1] == len(sizes)})
    proofs = (prove_equal('eq 14, * = valid convolution', chain('weight'), eq14('conv'), list(AT_W)),
              prove_equal('eq 22, * = full cross-correlation', chain('input'), eq22('xcorr'), list(AT_X)),
              prove_equal('eq 14, * = valid cross-correlation', chain('weight'), eq14('xcorr'), list(AT_W)),
              prove_equal('eq 22, * = full convolution (eq 2)', chain('input'), eq22('conv'), list(AT_X)))
    verified = proofs[0].holds and proofs[1].holds and not proofs[2].holds and not proofs[3].holds
    rng = random.Random(3)
    d_out, wk = _random_matrix(rng, 2, 2), _random_matrix(rng, 2, 2)
    return Verdict(FALSE, bool(both), proofs + (Note(f'readings of * making eq 14 true on all {len(sizes)} sizes: '
                                                     f'{for14}; eq 22: {for22}'),),
                   correction='eq 14 holds with * the VALID convolution (eq 2); eq 22 holds with * the FULL '
                              'cross-correlation (eq 1) -- equivalently dE/dx = (delta *_full w) f\'(x), the full '
                              'convolution with the unrotated kernel. State the operation per equation.',
                   correction_verified=verified and not both,
                   counterexample=f'delta = {d_out}, w = {wk} (H = W = 3): eq 20 gives {explicit_dx(d_out, wk)}, eq 22 '
                                  f'with * = full convolution gives {convolve(d_out, rot180(wk), "full")}')


def refusals() -> dict:
    """Statements the rule layer must refuse (used by the tests): name -> (proved?, reason)."""
    out = {}
    p = prove_equal('eq 22 as true convolution', chain('input'), eq22('conv'), list(AT_X))
    out['eq22-true-convolution'] = (p.holds, p.reason)
    off = _claimed('eq 20 with k1 - 2', Sum(inside(delta, ip - m, jp - n, Ho, Wo) * w[m, n] * FPRIME,
                                            (m, 0, k1 - 2), (n, 0, k2 - 1)), [k1 - 2] + list(AT_X))
    p = prove_equal('off-by-one range', chain('input'), off, list(AT_X))
    out['off-by-one'] = (p.holds, p.reason)
    try:
        _claimed('eq 13 without H >= k1', Sum(delta[i, j] * f(x[i + mp, j + np_]), (i, 0, H - k1),
                                              (j, 0, W - k2)), [k1 - 1, k2 - 1])
        out['without-H>=k1'] = (True, 'accepted')
    except RuleRefused as e:
        out['without-H>=k1'] = (False, str(e))
    return out


