"""Convolution with PyTorch semantics, for 1, 2 and 3 spatial dimensions.

Generalizes the lecture's eq 5 and eq 10-22 (slides "Convolutional neural
Network", "Backpropagation (2/9)"-"(9/9)") to batch, channels, groups, stride S,
padding P and dilation D, as torch.nn.functional.conv{1,2,3}d computes it
(a cross-correlation).  The channel axes are viewed as (group, channel in
group), which keeps every index linear:

    y[n, g, k, o] = b[g, k] + sum_{c, m} w[g, k, c, m] x[n, g, c, S o + D m - P]
                                         [0 <= S o + D m - P <= H - 1]

(one o, m, S, D, P, H per spatial dimension).  The backward rules come out of
:func:`derive.rules.gradient` in gather form, e.g. for the input

    dx[n, g, c, i] = sum_{k, m} w[g, k, c, m] g[n, g, k, (i + P - D m)/S]
                     [S | i + P - D m] [0 <= i + P - D m <= S (O - 1)]

and are proved, for symbolic sizes, strides, dilations and paddings, equal to
independently stated forms: the input gradient is a transposed convolution
(grad_output dilated by S, correlated with the kernel rotated by 180 degrees
and dilated by D, padding D (K-1) - P), the weight gradient a correlation of
the input with grad_output dilated by S.  The same proofs are repeated with
every numeric stride and dilation in 1..3, where the divisibility conditions
simplify and exact LP decides the ranges.
"""
from __future__ import annotations

from functools import cache
from itertools import product

from sympy import And, Eq, IndexedBase, Mod, Piecewise, Sum, Symbol, floor, symbols

from .claims import PROVED, Identity, Verdict, claim, grid
from .proof import Derivation, prove_equal
from .rules import Gradient, Layer, Tensor, gradient
from .zsum import ZSum, count_box, instantiate, lattice, substitute


def _ints(names: str, dims: int, **assumptions) -> tuple:
    return tuple(Symbol(f'{names}{d}', integer=True, **assumptions) for d in range(dims))


@cache
def conv_symbols(dims: int) -> dict:
    """Size, parameter and index symbols of a conv layer with ``dims`` spatial dimensions."""
    N, G, CG, KG = symbols('N G CG KG', integer=True, positive=True)
    return dict(
        N=N, G=G, CG=CG, KG=KG,
        H=_ints('H', dims, positive=True), O=_ints('O', dims, positive=True), K=_ints('K', dims, positive=True),
        S=_ints('S', dims, positive=True), D=_ints('D', dims, positive=True), P=_ints('P', dims, nonnegative=True),
        n=Symbol('n', integer=True), g=Symbol('g', integer=True), k=Symbol('k', integer=True),
        c=Symbol('c', integer=True), o=_ints('o', dims), m=_ints('m', dims),
    )


def input_position(s: dict, o, m) -> tuple:
    """The input position read by output position o through tap m: S o + D m - P per dimension."""
    return tuple(S * od + D * md - P for S, D, P, od, md in zip(s['S'], s['D'], s['P'], o, m))


@cache
def conv_layer(dims: int) -> Layer:
    s = conv_symbols(dims)
    N, G, CG, KG, H, O, K = s['N'], s['G'], s['CG'], s['KG'], s['H'], s['O'], s['K']
    x = Tensor('input', IndexedBase('x'), (N, G, CG) + H)
    w = Tensor('weight', IndexedBase('w'), (G, KG, CG) + K)
    b = Tensor('bias', IndexedBase('b'), (G, KG))
    y = Tensor('output', IndexedBase('y'), (N, G, KG) + O)
    n, g, k, c, o, m = s['n'], s['g'], s['k'], s['c'], s['o'], s['m']
    pos = input_position(s, o, m)
    inside = [cond for p, h in zip(pos, H) for cond in (p, h - 1 - p)]
    taps = ZSum.make((c,) + m, w[(g, k, c) + m] * x[(n, g, c) + pos],
                     w.box((g, k, c) + m) + inside)
    bias = ZSum.make((), b[(g, k)])
    hyps = tuple(sz - 1 for sz in (N, G, CG, KG) + H + O + K) + s['P']
    params = s['S'] + s['D'] + s['P']
    return Layer(f'conv{dims}d', y, (n, g, k) + o, (taps, bias), (x, w, b), params, hyps)


def primed(names: str, dims: int | None = None) -> tuple:
    """Gradient indices carry a prime, as in the lecture (x_{i',j'}, w_{m',n'})."""
    if dims is None:
        return tuple(Symbol(f"{n}'", integer=True) for n in names.split())
    return tuple(Symbol(f"{names}{d}'", integer=True) for d in range(dims))


@cache
def conv_gradients(dims: int) -> dict[str, Gradient]:
    """The three backward rules of conv{dims}d, in gather form."""
    layer = conv_layer(dims)
    return {
        'input': gradient(layer, 'input', primed('n g c') + primed('i', dims)),
        'weight': gradient(layer, 'weight', primed('g k c') + primed('m', dims)),
        'bias': gradient(layer, 'bias', primed('g k')),
    }


AXIS = dict(zip(('H', 'K', 'S', 'D', 'PL', 'PR'), symbols('H K S D PL PR', integer=True, positive=True)))
AXIS.update(PL=Symbol('PL', integer=True, nonnegative=True), PR=Symbol('PR', integer=True, nonnegative=True),
            o=Symbol('o', integer=True))


@cache
def output_size():
    """Output positions along one axis: the o >= 0 whose window S o + D m - PL (0 <= m < K) ends
    inside the input padded by PL on the left and PR on the right, counted by the box rule."""
    H, K, S, D, PL, PR, o = (AXIS[k] for k in ('H', 'K', 'S', 'D', 'PL', 'PR', 'o'))
    z = ZSum.make((o,), 1, [o, H - 1 + PR - (S * o + D * (K - 1) - PL)])
    return count_box(z, [H + PL + PR - D * (K - 1) - 1])[0]


# ----------------------------------------------------------------------------- stated forms

def transposed_conv_form(dims: int) -> Derivation:
    """dx as a transposed convolution: grad_output dilated by S, kernel rotated and dilated by D."""
    s = conv_symbols(dims)
    n, g, c = primed('n g c')
    i = primed('i', dims)
    u = _ints('u', dims)
    gz_idx, gz_cond, wd_idx, wd_cond = [], [], [], []
    for d in range(dims):
        S, D, P, K, O = s['S'][d], s['D'][d], s['P'][d], s['K'][d], s['O'][d]
        t = i[d] + u[d] - (D * (K - 1) - P)
        gz_idx.append(t / S)
        gz_cond += [Eq(Mod(t, S), 0), t >= 0, t <= S * (O - 1)]
        wd_idx.append(K - 1 - u[d] / D)
        wd_cond += [Eq(Mod(u[d], D), 0), u[d] >= 0, u[d] <= D * (K - 1)]
    k = s['k']
    gz = IndexedBase('grad_output')[(n, g, k) + tuple(gz_idx)]
    wd = IndexedBase('w')[(g, k, c) + tuple(wd_idx)]
    body = Piecewise((gz * wd, And(*gz_cond, *wd_cond)), (0, True))
    limits = [(k, 0, s['KG'] - 1)] + [(u[d], 0, s['D'][d] * (s['K'][d] - 1)) for d in range(dims)]
    hyps = conv_layer(dims).hyps
    der = Derivation.start('transposed convolution (stated)', Sum(body, *limits), hyps)
    for d in range(dims):
        v = Symbol(f'v{d}', integer=True)
        der = der.apply(lattice, u[d], v).apply(substitute, v, s['m'][d], s['K'][d] - 1 - s['m'][d])
    return der


def dilated_correlation_form(dims: int) -> Derivation:
    """dw as the input correlated with grad_output dilated by S (output dilated by D)."""
    s = conv_symbols(dims)
    g, k, c = primed('g k c')
    mp = primed('m', dims)
    t = _ints('t', dims)
    n = s['n']
    conds, pos = [], []
    for d in range(dims):
        S, D, P, H = s['S'][d], s['D'][d], s['P'][d], s['H'][d]
        pos.append(t[d] + D * mp[d] - P)
        conds += [Eq(Mod(t[d], S), 0), pos[-1] >= 0, pos[-1] <= H - 1]
    gz = IndexedBase('grad_output')[(n, g, k) + tuple(t[d] / s['S'][d] for d in range(dims))]
    x = IndexedBase('x')[(n, g, c) + tuple(pos)]
    limits = [(n, 0, s['N'] - 1)] + [(t[d], 0, s['S'][d] * (s['O'][d] - 1)) for d in range(dims)]
    der = Derivation.start('correlation with dilated grad_output (stated)',
                           Sum(Piecewise((gz * x, And(*conds)), (0, True)), *limits), conv_layer(dims).hyps)
    for d in range(dims):
        der = der.apply(lattice, t[d], s['o'][d])
    return der


def bias_form(dims: int) -> Derivation:
    s = conv_symbols(dims)
    g, k = primed('g k')
    limits = [(s['n'], 0, s['N'] - 1)] + [(o, 0, O - 1) for o, O in zip(s['o'], s['O'])]
    return Derivation.start('sum of grad_output over batch and space (stated)',
                            Sum(IndexedBase('grad_output')[(s['n'], g, k) + s['o']], *limits),
                            conv_layer(dims).hyps)


STATED = {'input': (transposed_conv_form, 'transposed convolution: grad_output dilated by S, correlated with '
                                          'the kernel rotated by 180 degrees and dilated by D'),
          'weight': (dilated_correlation_form, 'correlation of the input with grad_output dilated by S'),
          'bias': (bias_form, 'sum of grad_output over batch and spatial positions')}


def prove_gradient(dims: int, wrt: str):
    grad = conv_gradients(dims)[wrt]
    hyps = list(conv_layer(dims).hyps) + grad.wrt.box(grad.index)
    form, description = STATED[wrt]
    return prove_equal(f'conv{dims}d: dE/d{wrt} by the chain rule == {description}',
                       grad.derivation, form(dims), hyps)


def prove_gradient_at(dims: int, wrt: str, values: dict):
    """The same proof with numeric strides and dilations substituted on both sides."""
    grad = conv_gradients(dims)[wrt]
    hyps = [h.xreplace(values) for h in list(conv_layer(dims).hyps) + grad.wrt.box(grad.index)]
    left = grad.derivation.apply(instantiate, values)
    right = STATED[wrt][0](dims).apply(instantiate, values)
    return prove_equal(f'conv{dims}d: dE/d{wrt} at {values}', left, right, hyps)


# ----------------------------------------------------------------------------- claims

SLIDE = 'Backpropagation (2/9)-(9/9), generalized to PyTorch conv'

for _dims in (1, 2, 3):
    for _wrt in ('input', 'weight', 'bias'):
        def _check(dims=_dims, wrt=_wrt) -> Verdict:
            proof = prove_gradient(dims, wrt)
            return Verdict(PROVED, proof.holds, (proof,))

        claim(f'layer.conv{_dims}d.{_wrt}', SLIDE,
              f'conv{_dims}d (batch, groups, stride, padding, dilation symbolic): chain-rule dE/d{_wrt} '
              f'in gather form equals the {STATED[_wrt][1]}',
              equation={'input': '16-22', 'weight': '10-14', 'bias': ''}[_wrt])(_check)


@claim('layer.conv.stride-dilation-grid', SLIDE,
       'conv1d and conv2d input and weight gradients, every stride and dilation in 1..3 substituted: '
       'gather form == stated form (divisibility simplified, ranges decided by exact LP)')
def _grid_check() -> Verdict:
    proofs, ok = [], True
    for dims in (1, 2):
        s = conv_symbols(dims)
        for S, D in product(range(1, 4), repeat=2):
            values = {**{sym: S for sym in s['S']}, **{sym: D for sym in s['D']}}
            for wrt in ('input', 'weight'):
                p = prove_gradient_at(dims, wrt, values)
                ok &= p.holds
                proofs.append(p)
    return Verdict(grid('stride S and dilation D in 1..3 for conv1d and conv2d (36 proofs)'), ok, tuple(proofs))


@claim('layer.conv.output-size', 'Backpropagation (2/9), generalized',
       'the number of output positions o >= 0 whose window S o + D m - PL (0 <= m < K) ends inside the input '
       "padded by PL and PR is PyTorch's floor((H + PL + PR - D (K-1) - 1)/S) + 1 (padding='same' pads "
       'PL = D(K-1)//2, PR = D(K-1) - PL)')
def _output_size_check() -> Verdict:
    H, K, S, D, PL, PR = (AXIS[k] for k in ('H', 'K', 'S', 'D', 'PL', 'PR'))
    torch_rule = floor((H + PL + PR - D * (K - 1) - 1) / S) + 1
    count = output_size()
    same = (count.subs({S: 1, PL: floor(D * (K - 1) / 2), PR: D * (K - 1) - floor(D * (K - 1) / 2)}) - H)
    ok = (count - torch_rule).simplify() == 0 and same.simplify() == 0
    return Verdict(PROVED, ok, (Identity('positions', count, torch_rule, 'box count'),
                                Identity("padding='same', stride 1", same + H, H, 'simplify')))
