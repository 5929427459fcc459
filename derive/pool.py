"""Max and average pooling with PyTorch semantics, 1-3 spatial dimensions (slide "Pooling").

Both are instances of the mechanism of :mod:`derive.rules`.  Per spatial
dimension (stride S, padding P, dilation D, window K, input H, output O), the
window of output o reads the input positions S o + D m - P, 0 <= m < K, that
lie inside [0, H).

Max pooling: y[n, c, o] = max over the window.  With sel the one-hot selector
of the chosen maximum (the first maximum in window order, except that a NaN
replaces the running maximum, so the last NaN wins -- PyTorch's CPU rule),

    y[n, c, o] = sum_m [argmax[n, c, o] = flat(S o + D m - P)] x[n, c, S o + D m - P]

where argmax holds flat positions in the input plane, as PyTorch's indices.
Holding the selector constant, the chain rule gives the gather form

    dx[n, c, i] = sum_m g[n, c, (i + P - D m)/S] [S | i + P - D m] [0 <= i + P - D m <= S (O-1)]
                  [argmax[n, c, (i + P - D m)/S] = flat(i)]

(the slide's "assigned to the winning unit", with overlapping windows adding up).

Average pooling (D = 1): y[n, c, o] = (1/div(o)) sum_{m : 0 <= S o + m - P < H} x[n, c, S o + m - P],
div(o) = divisor_override if given, else the number of window positions inside
[-P, H + P) (count_include_pad) or inside [0, H) (not), counted in closed form
by the box-count rule.  Its backward divides by div: the slide's "multiplied by
N x N" is an erratum.  Where every window has the same divisor (the override, or
full windows counted with their padding: uniform_divisor), the backward is a
transposed convolution with a constant weight (avg_pool_uniform), which the
kernels run as a gather.
"""
from __future__ import annotations

import math
from functools import cache
from itertools import product

from sympy import (
    And,
    Eq,
    Function,
    IndexedBase,
    KroneckerDelta,
    Lambda,
    Mod,
    Mul,
    Ne,
    Or,
    Piecewise,
    Rational,
    Sum,
    Symbol,
    symbols,
)

from .claims import FALSE, PROVED, Identity, Note, Verdict, claim, grid
from .jacobian import max_gradient_first, max_gradient_sympy
from .proof import Derivation, prove_equal
from .rules import Gradient, Layer, Tensor, gradient, scatter_form, to_gather
from .zsum import ZSum, count_box, evaluate, exact_cover, rule, within, zero_padded

DIVISOR = Function('divisor')


def _ints(name: str, dims: int, **assumptions) -> tuple:
    return tuple(Symbol(f'{name}{d}', integer=True, **assumptions) for d in range(dims))


@cache
def pool_symbols(dims: int) -> dict:
    N, C = symbols('N C', integer=True, positive=True)
    return dict(N=N, C=C, H=_ints('H', dims, positive=True), O=_ints('O', dims, positive=True),
                K=_ints('K', dims, positive=True), S=_ints('S', dims, positive=True),
                D=_ints('D', dims, positive=True), P=_ints('P', dims, nonnegative=True),
                n=Symbol('n', integer=True), c=Symbol('c', integer=True), o=_ints('o', dims), m=_ints('m', dims),
                divisor_override=Symbol('divisor_override', integer=True),
                count_include_pad=Symbol('count_include_pad', integer=True))


def flat(position, sizes):
    """Row-major flat index of ``position`` in a plane of ``sizes`` (PyTorch's max-pool indices)."""
    out = 0
    for p, h in zip(position, sizes):
        out = out * h + p
    return out


def _window(s: dict, dilated: bool):
    D = s['D'] if dilated else (1,) * len(s['S'])
    pos = tuple(S * o + d * m - P for S, d, P, o, m in zip(s['S'], D, s['P'], s['o'], s['m']))
    box = [cond for m, K in zip(s['m'], s['K']) for cond in (m, K - 1 - m)]
    inside = [cond for p, H in zip(pos, s['H']) for cond in (p, H - 1 - p)]
    return pos, box, inside


def _hyps(s: dict, dilated: bool) -> tuple:
    """Sizes >= 1, 0 <= 2P <= K, and the last window starts inside the input or the left padding."""
    sizes = (s['N'], s['C']) + s['H'] + s['O'] + s['K']
    last = tuple(H - 1 + P - S * (O - 1) for H, P, S, O in zip(s['H'], s['P'], s['S'], s['O']))
    return tuple(z - 1 for z in sizes) + s['P'] + tuple(K - 2 * P for K, P in zip(s['K'], s['P'])) + last


@cache
def max_pool_layer(dims: int) -> Layer:
    s = pool_symbols(dims)
    x = Tensor('input', IndexedBase('x'), (s['N'], s['C']) + s['H'])
    y = Tensor('output', IndexedBase('y'), (s['N'], s['C']) + s['O'])
    argmax = Tensor('indices', IndexedBase('argmax'), y.shape)
    pos, box, inside = _window(s, dilated=True)
    nc_o = (s['n'], s['c']) + s['o']
    body = KroneckerDelta(argmax[nc_o], flat(pos, s['H'])) * x[(s['n'], s['c']) + pos]
    term = ZSum.make(s['m'], body, box + inside)
    return Layer(f'max_pool{dims}d', y, nc_o, (term,), (x,), s['S'] + s['D'] + s['P'], _hyps(s, True),
                 reduction='max', selector=argmax)


@cache
def divisor_counts(dims: int) -> tuple:
    """((count_include_pad, how), (count_exclude_pad, how)): the divisors of output position o in
    closed form, with the box-count rule's account of the bounds."""
    s = pool_symbols(dims)
    hyps = list(_hyps(s, False)) + [c for o, O in zip(s['o'], s['O']) for c in (o, O - 1 - o)]
    pos, box, inside = _window(s, dilated=False)
    padded = [H + P - 1 - p for p, H, P in zip(pos, s['H'], s['P'])]
    return count_box(ZSum.make(s['m'], 1, box + padded), hyps), count_box(ZSum.make(s['m'], 1, box + inside), hyps)


@cache
def avg_divisor(dims: int):
    """divisor_override when nonzero, else the count of window positions (count_include_pad or not)."""
    s = pool_symbols(dims)
    (include, _), (exclude, _) = divisor_counts(dims)
    ov, cip = s['divisor_override'], s['count_include_pad']
    return Piecewise((ov, Ne(ov, 0)), (include, Ne(cip, 0)), (exclude, True))


@cache
def avg_pool_layer(dims: int) -> Layer:
    s = pool_symbols(dims)
    x = Tensor('input', IndexedBase('x'), (s['N'], s['C']) + s['H'])
    y = Tensor('output', IndexedBase('y'), (s['N'], s['C']) + s['O'])
    ov, cip = s['divisor_override'], s['count_include_pad']
    pos, box, inside = _window(s, dilated=False)
    term = ZSum.make(s['m'], x[(s['n'], s['c']) + pos] / DIVISOR(*s['o']), box + inside)
    return Layer(f'avg_pool{dims}d', y, (s['n'], s['c']) + s['o'], (term,), (x,),
                 s['S'] + s['P'] + (ov, cip), _hyps(s, False),
                 definitions=((DIVISOR, Lambda(s['o'], avg_divisor(dims))),))


def primed(names: str, dims: int) -> tuple:
    return tuple(Symbol(f"{n}'", integer=True) for n in names.split()) + tuple(
        Symbol(f"i{d}'", integer=True) for d in range(dims))


@cache
def pool_gradients(dims: int) -> dict[str, Gradient]:
    index = primed('n c', dims)
    return {'max': gradient(max_pool_layer(dims), 'input', index),
            'avg': gradient(avg_pool_layer(dims), 'input', index)}


@cache
def max_pool_scatter(dims: int) -> tuple:
    """The max-pool input gradient in scatter form, ((n', c', e), Z-sum):

        dx[n', c', e] = sum_o g[n', c', o] [argmax[n', c', o] = e]

    over the output box, e the flat position in the input plane (as PyTorch's indices): each window
    sends its upstream gradient to the position its selector names, overlapping windows adding up.
    It is the chain rule with the window sum collapsed by the selector; it equals the gather form
    of :func:`pool_gradients` whenever every selector names a position of its own window (claim
    pool.max-scatter), and a kernel computing it visits each window once instead of searching the
    windows of every input position."""
    s = pool_symbols(dims)
    grad = pool_gradients(dims)['max']
    n, c = grad.index[:2]
    e = Symbol('e', integer=True)
    nc_o = (n, c) + s['o']
    body = grad.upstream.base[nc_o] * KroneckerDelta(max_pool_layer(dims).selector.base[nc_o], e)
    box = [cond for o, O in zip(s['o'], s['O']) for cond in (o, O - 1 - o)]
    return (n, c, e), ZSum.make(s['o'], body, box)


@cache
def avg_pool_scatter(dims: int) -> Derivation:
    """The avg-pool input gradient in scatter form: the chain rule with the batch and channel deltas
    eliminated, and no other,

        dx[n', c', i] = sum_{o, m} g[n', c', o] / divisor(o) [i = S o + m - P]

    over the windows o and their taps m inside the input: each window sends its share to its
    inputs, overlapping windows adding up (the form the kernels run: one visit per tap of each
    window, the divisor computed once per window).  Claim pool.avg-scatter: equal to the gather form."""
    s = pool_symbols(dims)
    grad = pool_gradients(dims)['avg']
    return scatter_form(avg_pool_layer(dims), 'input', grad.index, (s['n'], s['c']))


@cache
def uniform_divisor(dims: int) -> tuple:
    """(when, divisor): where ``when`` holds, every window's divisor is ``divisor`` -- divisor_override
    when nonzero, else the full window K0 ... K(d-1).  Counting the padding, that is when every window
    ends inside the padded input (H + 2P >= S (O - 1) + K: not ceil_mode's partial last window); not
    counting it, when moreover there is no padding.  Claim pool.avg-uniform."""
    s = pool_symbols(dims)
    ov, cip = s['divisor_override'], s['count_include_pad']
    inside = And(*[H + 2 * P - S * (O - 1) - K >= 0 for H, P, S, O, K in zip(s['H'], s['P'], s['S'], s['O'], s['K'])])
    unpadded = And(*[Eq(P, 0) for P in s['P']])
    return Or(Ne(ov, 0), And(inside, Or(Ne(cip, 0), unpadded))), Piecewise((ov, Ne(ov, 0)), (Mul(*s['K']), True))


@cache
def avg_tiling(dims: int):
    """Where the windows of an average pooling tile its input exactly on every axis (zsum.exact_cover:
    kernel = stride, no padding, input = stride x output; claim pool.avg-tiling); a max pooling's too, at
    dilation 1 (max_pool_tiling)."""
    s = pool_symbols(dims)
    pos, _, _ = _window(s, dilated=False)
    return And(*[c for p, o, O, m, K, H in zip(pos, s['o'], s['O'], s['m'], s['K'], s['H'])
                 for c in exact_cover(p, o, (0, O - 1), m, (0, K - 1), H)])


@cache
def max_pool_tiling(dims: int) -> tuple:
    """(when, scatter form) of the max-pool input gradient where the windows tile the input: the chain
    rule with the batch and channel deltas eliminated, and no other, at dilation 1,

        dx[n', c', i] = sum_{o, m} g[n', c', o] [argmax[n', c', o] = flat(S o + m - P)] [i = S o + m - P],

    and ``when`` = dilation 1 and zsum.exact_cover on every axis (kernel = stride, no padding, input =
    stride x output).  Each input position is then the tap of one window: a kernel stores, per window and
    tap, the window's gradient where its selector names that tap and 0 elsewhere -- no zeroing, no adds --
    and a window none of whose taps its selector names (a given index outside its window, which
    PyTorch's scatter still honours) is detected, by the same compares, so that the kernel falls back to
    the selector scatter of :func:`max_pool_scatter`.  Claim pool.max-tiling."""
    s = pool_symbols(dims)
    grad = pool_gradients(dims)['max']
    d = scatter_form(max_pool_layer(dims), 'input', grad.index, (s['n'], s['c']))
    return And(*[Eq(D, 1) for D in s['D']], avg_tiling(dims)), undilated(d.result, dims)


def undilated(z: ZSum, dims: int) -> ZSum:
    """The Z-sum at dilation 1 on every axis."""
    unit = {D: 1 for D in pool_symbols(dims)['D']}
    return ZSum.make(z.vars, z.body.xreplace(unit), [c.xreplace(unit) for c in z.conds],
                     [tuple(e.xreplace(unit) for e in div) for div in z.divs])


def _uniform_facts(dims: int, padded: bool) -> list:
    """What ``uniform_divisor``'s condition gives (each >= 0) at a window o of the output box."""
    s = pool_symbols(dims)
    facts = list(_hyps(s, False)) + [c for o, O in zip(s['o'], s['O']) for c in (o, O - 1 - o)]
    facts += [H + 2 * P - S * (O - 1) - K for H, P, S, O, K in zip(s['H'], s['P'], s['S'], s['O'], s['K'])]
    return facts if padded else facts + [-P for P in s['P']]


@rule('divisor(o) replaced by its value at every window (claim pool.avg-uniform)')
def constant_divisor(z: ZSum, divisor) -> tuple[ZSum, str]:
    return ZSum.make(z.vars, z.body.replace(DIVISOR, lambda *o: divisor), z.conds, z.divs), f'divisor = {divisor}'


@cache
def avg_pool_uniform(dims: int) -> Derivation:
    """The avg-pool input gradient in gather form where every window has the same divisor W (the sizes of
    ``uniform_divisor``): a transposed convolution of grad_output with a constant weight,

        dx[n', c', i] = (1/W) sum_m g[n', c', (i + P - m)/S] [S | i + P - m] [0 <= i + P - m <= S (O - 1)],

    which the kernels run as a gather: each input element written once, per residue of i modulo S
    (codegen.split), with no zeroing pass and no divisor per window."""
    grad = pool_gradients(dims)['avg']
    d = Derivation.given(f'avg_pool{dims}d input gradient, one divisor for every window', grad.value,
                         'the derived gather form (pool.avg*d.backward)')
    return d.apply(constant_divisor, uniform_divisor(dims)[1])


def _valid_selectors(dims: int, values: dict, limit: int, rng) -> list:
    """Selector arrays (flat positions) naming a position of each window, every one of them or
    ``limit`` drawn at random."""
    s = pool_symbols(dims)
    H = [values[h] for h in s['H']]
    windows = []
    for o in product(*(range(values[O]) for O in s['O'])):
        taps = []
        for m in product(*(range(values[K]) for K in s['K'])):
            pos = [values[S] * oo + values[D] * mm - values[P]
                   for S, D, P, oo, mm in zip(s['S'], s['D'], s['P'], o, m)]
            if all(0 <= p < h for p, h in zip(pos, H)):
                taps.append(flat(pos, H))
        windows.append((o, taps))
    total = 1
    for _, taps in windows:
        total *= len(taps)
    if total <= limit:
        choices = product(*(taps for _, taps in windows))
    else:
        choices = (tuple(rng.choice(taps) for _, taps in windows) for _ in range(limit))
    return [dict(zip((o for o, _ in windows), choice)) for choice in choices]


def check_max_scatter(dims: int, sizes: list, limit: int = 64) -> tuple[int, str]:
    """(cases checked, first difference or ''): scatter form == gather form, element by element, for
    every input position and every (or ``limit`` random) valid selector arrays at each size."""
    import random
    rng = random.Random(0)
    s = pool_symbols(dims)
    grad = pool_gradients(dims)['max']
    (n, c, e), scatter = max_pool_scatter(dims)
    argmax = max_pool_layer(dims).selector.base
    checked = 0
    for values in sizes:
        values = {s['N']: 1, s['C']: 1, **values}
        H = [values[h] for h in s['H']]
        forms = []
        for i in product(*(range(h) for h in H)):
            at = {**values, n: 0, c: 0}
            forms.append((i, evaluate(grad.value, {**at, **dict(zip(grad.index[2:], i))}),
                          evaluate(scatter, {**at, e: flat(i, H)})))
        for selector in _valid_selectors(dims, values, limit, rng):
            table = {argmax[(0, 0) + o]: v for o, v in selector.items()}
            for i, gather, scattered in forms:
                if gather.xreplace(table) != scattered.xreplace(table):
                    return checked, f'differs at {values}, selector {selector}, input {i}'
            checked += 1
    return checked, ''


@cache
def output_size(dims: int, ceil_mode: bool) -> tuple:
    """Number of windows per dimension: starts o >= 0 with the window inside the padded input
    (floor mode) or overlapping it and starting inside the input or left padding (ceil mode)."""
    s = pool_symbols(dims)
    sizes = []
    for H, K, S, D, P, o in zip(s['H'], s['K'], s['S'], s['D'], s['P'], s['o']):
        span = H + 2 * P - D * (K - 1) - 1
        conds = [o, span + (S - 1 if ceil_mode else 0) - S * o] + ([H + P - 1 - S * o] if ceil_mode else [])
        count, _ = count_box(ZSum.make((o,), 1, conds), [span, H - 1 + P])
        sizes.append(count)
    return tuple(sizes)


@cache
def window_taps():
    """Number of taps of window o (one axis) that fall inside the input: 0 <= S o + D m - P <= H - 1."""
    s = pool_symbols(1)
    H, K, S, D, P, o, m = (s[k][0] for k in ('H', 'K', 'S', 'D', 'P', 'o', 'm'))
    return count_box(ZSum.make((m,), 1, [m, K - 1 - m, S * o + D * m - P, H - 1 - (S * o + D * m - P)]), [])[0]


# ----------------------------------------------------------------------------- stated forms

def _stated_gather(dims: int, kind: str) -> Derivation:
    """sum over the windows o that contain input position i (o = (i + P - D m)/S) of the upstream share."""
    s = pool_symbols(dims)
    n, c, *i = primed('n c', dims)
    D = s['D'] if kind == 'max' else (1,) * dims
    t = tuple(ip + P - d * m for ip, P, d, m in zip(i, s['P'], D, s['m']))
    o = tuple(tt / S for tt, S in zip(t, s['S']))
    conds = [cond for tt, S, O in zip(t, s['S'], s['O']) for cond in (Eq(Mod(tt, S), 0), tt >= 0, tt <= S * (O - 1))]
    g = IndexedBase('grad_output')[(n, c) + o]
    if kind == 'max':
        share = KroneckerDelta(IndexedBase('argmax')[(n, c) + o], flat(i, s['H']))
    else:
        share = 1 / DIVISOR(*o)
    limits = [(m, 0, K - 1) for m, K in zip(s['m'], s['K'])]
    layer = max_pool_layer(dims) if kind == 'max' else avg_pool_layer(dims)
    return Derivation.start(f'{kind} pool: upstream shared among the inputs of each window (stated)',
                            Sum(Piecewise((g * share, And(*conds)), (0, True)), *limits), layer.hyps)


def prove_pool_gradient(dims: int, kind: str):
    grad = pool_gradients(dims)[kind]
    layer = max_pool_layer(dims) if kind == 'max' else avg_pool_layer(dims)
    hyps = list(layer.hyps) + grad.wrt.box(grad.index)
    return prove_equal(f'{kind}_pool{dims}d: chain-rule dE/dx == each window passes its upstream gradient to its '
                       f'{"selected" if kind == "max" else "inputs, divided by the divisor"}',
                       grad.derivation, _stated_gather(dims, kind), hyps)


# ----------------------------------------------------------------------------- claims

SLIDE = 'Pooling'

for _dims in (1, 2, 3):
    for _kind in ('max', 'avg'):
        def _check(dims=_dims, kind=_kind) -> Verdict:
            proof = prove_pool_gradient(dims, kind)
            return Verdict(PROVED, proof.holds, (proof,))

        claim(f'pool.{_kind}{_dims}d.backward', SLIDE,
              f'{_kind}_pool{_dims}d (stride, padding{", dilation" if _kind == "max" else ""} symbolic): the '
              + ('error is assigned to the winning unit of each window (the first maximum), overlapping windows add'
                 if _kind == 'max' else
                 'error of each window is divided by its divisor (count_include_pad, divisor_override) and '
                 'assigned to every input of the window, overlapping windows add'))(_check)


def _scatter_sizes(dims: int, extents) -> list:
    """Every floor- and ceil-mode window geometry with sizes from ``extents`` (H, K, S, D ranges)."""
    s = pool_symbols(dims)
    sizes = []
    for ceil_mode in (False, True):
        counts = output_size(dims, ceil_mode)
        for per_axis in product(*[list(product(*extents))] * dims):
            for pads in product(*(range(K // 2 + 1) for _, K, _, _ in per_axis)):
                values = {}
                for d, ((H, K, St, D), P) in enumerate(zip(per_axis, pads)):
                    values.update({s['H'][d]: H, s['K'][d]: K, s['S'][d]: St, s['D'][d]: D, s['P'][d]: P})
                if any(values[H] + 2 * values[P] - values[D] * (values[K] - 1) - 1 < 0
                       for H, K, D, P in zip(s['H'], s['K'], s['D'], s['P'])):
                    continue
                values.update({O: int(count.xreplace(values)) for O, count in zip(s['O'], counts)})
                if values not in sizes:
                    sizes.append(values)
    return sizes


@claim('pool.max-scatter', SLIDE, 'max-pooling backward in scatter form: dE/dx[e] = sum of dE/dy[o] over the '
       'windows o whose selector names e equals the derived gather form, when every selector names a position '
       'of its own window (the form the kernels run: one visit per window)')
def _max_scatter() -> Verdict:
    one = _scatter_sizes(1, (range(1, 6), range(1, 4), range(1, 4), range(1, 3)))
    two = _scatter_sizes(2, ((3,), (2,), (1, 2), (1,)))
    (n1, why1), (n2, why2) = check_max_scatter(1, one, limit=16), check_max_scatter(2, two, limit=4)
    why = why1 or why2
    return Verdict(grid(f'1-d: H 1..5, K 1..3, S 1..3, D 1..2, 0 <= P <= K/2, floor and ceil ({len(one)} '
                        f'geometries, {n1} selector arrays: all, or 16 random); 2-d: H 3, K 2, S 1..2, P 0..1 per '
                        f'axis ({len(two)} geometries, {n2} selector arrays); every input position'),
                   not why, (Note(why),) if why else ())


@claim('pool.avg-scatter', SLIDE, 'avg-pooling backward in scatter form: each window sends dE/dy[o] / divisor(o) '
       'to every input of the window, overlapping windows add; equal to the derived gather form (the form the '
       'kernels run: one visit per tap of each window)')
def _avg_scatter() -> Verdict:
    proofs = []
    for dims in (1, 2, 3):
        grad, scatter = pool_gradients(dims)['avg'], avg_pool_scatter(dims)
        hyps = list(avg_pool_layer(dims).hyps) + grad.wrt.box(grad.index)
        gathered = to_gather(scatter, avg_pool_layer(dims).index, hyps)   # solved for the window, as the kernels
        proofs.append(prove_equal(f'avg_pool{dims}d: the scatter form, its window deltas eliminated, is the '
                                  f'gather form of the kernels', gathered, grad.derivation, hyps))
    return Verdict(PROVED, all(p.holds for p in proofs), tuple(proofs))


@claim('pool.avg-tiling', SLIDE, 'the windows of an average pooling tile its input exactly -- every tap of every '
       'window inside it, each input position the tap of one window -- when the conditions of zsum.exact_cover '
       'hold on each axis (kernel = stride, no padding, input = stride x output), and only then but for a single '
       'window, whose stride does not matter: the kernels then store each share, with no zeroing and no adds')
def _avg_tiling() -> Verdict:
    s = pool_symbols(1)
    (target,), _, _ = _window(s, dilated=False)
    (H, K, S_, P, O, o, m) = (s[k][0] for k in ('H', 'K', 'S', 'P', 'O', 'o', 'm'))
    conds = exact_cover(target, o, (0, O - 1), m, (0, K - 1), H)
    checked = 0
    for Hv, Kv, Sv in product(range(1, 13), range(1, 5), range(1, 5)):
        for Pv in range(Kv // 2 + 1):
            Ov = (Hv + 2 * Pv - Kv) // Sv + 1
            if Ov < 1:
                continue
            values = {H: Hv, K: Kv, S_: Sv, P: Pv, O: Ov}
            hits = [int(target.subs(values | {o: ov, m: mv})) for ov in range(Ov) for mv in range(Kv)]
            tiles = sorted(hits) == list(range(Hv))
            if tiles != all(bool(c.subs(values)) for c in conds) and not (tiles and Ov == 1):
                return Verdict(grid('H 1..12, K 1..4, S 1..4'), False,
                               (Note(f'differs at H={Hv} K={Kv} S={Sv} P={Pv}: tiles={tiles}'),))
            checked += 1
    return Verdict(grid(f'1-d (the axes are independent): H 1..12, K 1..4, S 1..4, 0 <= P <= K/2, floor-mode '
                        f'output size ({checked} geometries; every tap of every window counted)'), True,
                   tuple(Identity(f'condition {k + 1}', c, c, 'zsum.exact_cover') for k, c in enumerate(conds)))


def check_max_tiling(dims: int, sizes: list, limit: int = 64) -> tuple[int, str]:
    """(selector arrays checked, first difference or ''): at tiling sizes, for selector arrays naming any
    position of the plane (every one, or ``limit`` at random, most naming a tap of their window), a window's
    selector names one of its taps in the tiling scatter form exactly when it names a position of its
    window, and where every window's does, that form equals the selector scatter of
    :func:`max_pool_scatter` at every input position."""
    import random
    rng = random.Random(1)
    s = pool_symbols(dims)
    when, term = max_pool_tiling(dims)
    grad = pool_gradients(dims)['max']
    (n, c, e), scatter = max_pool_scatter(dims)
    argmax = max_pool_layer(dims).selector.base
    selector, = [f for f in Mul.make_args(term.body) if isinstance(f, KroneckerDelta) and f.has(argmax)]
    checked = 0
    for values in sizes:
        values = {s['N']: 1, s['C']: 1, **values}
        if not when.xreplace(values):
            return checked, f'{values} is not a tiling geometry'
        H = [values[h] for h in s['H']]
        plane = math.prod(H)
        windows = list(product(*(range(values[O]) for O in s['O'])))
        at = {**values, n: 0, c: 0}
        inputs = [(evaluate(term, {**at, **dict(zip(grad.index[2:], i))}), evaluate(scatter, {**at, e: flat(i, H)}))
                  for i in product(*(range(h) for h in H))]
        # the form's own selector delta, summed over the taps: the count of taps a window's selector names
        found = {o: evaluate(ZSum.make(s['m'], selector, term.conds), {**at, **dict(zip(s['o'], o))})
                 for o in windows}
        taps = {o: [flat([values[S] * oo + mm for S, oo, mm in zip(s['S'], o, m)], H)
                    for m in product(*(range(values[K]) for K in s['K']))] for o in windows}
        choices = (product(range(plane), repeat=len(windows)) if plane ** len(windows) <= limit else
                   (tuple(rng.choice(taps[o]) if rng.random() < 0.9 else rng.randrange(plane) for o in windows)
                    for _ in range(limit)))   # (mostly valid: a tenth of the windows' selectors anywhere)
        for choice in choices:
            table = {argmax[(0, 0) + o]: v for o, v in zip(windows, choice)}
            valid = True
            for o, v in zip(windows, choice):
                hit = found[o].xreplace(table)
                if hit != (v in taps[o]):
                    return checked, f'window {o} of {values}, selector {v}: found {hit}'
                valid = valid and v in taps[o]
            if valid and any(tiled.xreplace(table) != scattered.xreplace(table) for tiled, scattered in inputs):
                return checked, f'differs at {values}, selectors {choice}'
            checked += 1
    return checked, ''


@claim('pool.max-tiling', SLIDE, 'where the windows of a max pooling tile its input (dilation 1, kernel = stride, no '
       'padding, input = stride x output), the chain rule summed per window and tap stores each window\'s '
       'gradient at the tap its selector names and 0 at its other taps, every input position written once; a '
       'window none of whose taps its selector names is one whose index lies outside it, and where there is '
       'none, this form equals the selector scatter (the kernels store, no zeroing, no adds, and fall back to '
       'the scatter when a window is not found)')
def _max_tiling() -> Verdict:
    proofs = []
    for dims in (1, 2, 3):
        when, term = max_pool_tiling(dims)
        grad = pool_gradients(dims)['max']
        unit = {D: 1 for D in pool_symbols(dims)['D']}
        hyps = [h.xreplace(unit) for h in list(max_pool_layer(dims).hyps) + grad.wrt.box(grad.index)]
        start = Derivation.given(f'max_pool{dims}d input gradient per window and tap, dilation 1', term,
                                 'the chain rule, batch and channel deltas eliminated (rules.scatter_form)')
        gathered = to_gather(start, max_pool_layer(dims).index, hyps)
        stated = Derivation.given(f'max_pool{dims}d gather form at dilation 1', undilated(grad.value, dims),
                                  'pool.max*d.backward')
        proofs.append(prove_equal(f'max_pool{dims}d: the tiling scatter form, its window deltas eliminated, is the '
                                  f'gather form', gathered, stated, hyps))
    one = [tiling_sizes(1, [(S * O, S, S, O)]) for S in (1, 2, 3) for O in (1, 2, 3)]
    two = [tiling_sizes(2, [(4, 2, 2, 2), (3, 1, 1, 3)]), tiling_sizes(2, [(2, 2, 2, 1), (4, 2, 2, 2)])]
    (n1, why1), (n2, why2) = check_max_tiling(1, one, limit=10**4), check_max_tiling(2, two, limit=200)
    why = why1 or why2
    return Verdict(grid(f'the form proved equal to the gather form for all sizes (1-3 d); the selector check on '
                        f'1-d tilings K = S 1..3, O 1..3 ({n1} selector arrays: every position of the plane for '
                        f'every window) and 2-d 4x3 (K 2x1) and 2x4 (K 2x2) ({n2} arrays, 200 at random: each selector '
                        f'a tap of its window, or with probability 0.1 any position)'),
                   not why and all(p.holds for p in proofs), tuple(proofs) + ((Note(why),) if why else ()))


def tiling_sizes(dims: int, axes: list) -> dict:
    """Sizes {H, K, S, D = 1, P = 0, O} of a tiling geometry from (H, K, S, O) per axis."""
    s = pool_symbols(dims)
    values = {}
    for d, (H, K, St, O) in enumerate(axes):
        values.update({s['H'][d]: H, s['K'][d]: K, s['S'][d]: St, s['D'][d]: 1, s['P'][d]: 0, s['O'][d]: O})
    return values


@claim('pool.avg-rows', SLIDE, 'the window sum of an average pooling is, on every axis, the sum over that axis\'s '
       'taps of the input extended by zeros: its constraints on (output index, tap) say exactly that the tap '
       'lies in the window and reads inside the input (zsum.zero_padded); the C kernels sum a chunk\'s input '
       'rows once, masked by the input\'s bounds, and take the column taps from registers')
def _avg_rows() -> Verdict:
    held = {}
    for dims in (1, 2, 3):
        layer, s = avg_pool_layer(dims), pool_symbols(dims)
        (term,) = layer.terms
        pos, _, _ = _window(s, dilated=False)
        for d in range(dims):
            held[f'avg_pool{dims}d, axis {d}: 0 <= {pos[d]} <= {s["H"][d] - 1}'] = zero_padded(
                term, {s['o'][d], s['m'][d]}, pos[d], s['H'][d], layer.hyps)
    notes = tuple(Note(f'{name}: {"holds" if ok else "NOT shown"} (mutual implication, symbolic sizes)')
                  for name, ok in held.items())
    return Verdict(PROVED, all(held.values()), notes)


def select_step(best: tuple, candidate: tuple) -> tuple:
    """One step of max pooling's selector on (value, position) pairs: the candidate where it is larger
    or NaN, else the running one (PyTorch's CPU rule; the kernels' SelectMax)."""
    value = candidate[0]
    return candidate if value > best[0] or value != value else best


def select_all(candidates) -> tuple:
    """The selector's pair of a window: its steps over the candidates in window order from the first (a
    start at -inf with the first position, as the kernels, takes the first candidate whatever it is)."""
    chosen, *rest = candidates
    for candidate in rest:
        chosen = select_step(chosen, candidate)
    return chosen


@claim('pool.max-rows', SLIDE, 'the selector of a max pooling (the first maximum in window order, a NaN '
       'replacing the running one) folds row by row: the selection over a window equals the selection, in row '
       'order, among each row\'s own selection -- its step is associative.  The C kernels select along each row '
       'of a window once, keep the row that two windows share, and select among the rows')
def _max_rows() -> Verdict:
    nan = float('nan')
    values = (0.0, 1.0, 2.0, nan)   # every order type of three candidates, NaN anywhere
    broken = [(a, b, c) for a, b, c in product(values, repeat=3) if select_step(select_step((a, 0), (b, 1)), (c, 2))[1]
              != select_step((a, 0), select_step((b, 1), (c, 2)))[1]]
    checked = 0
    for rows, width in product(range(1, 4), range(1, 4)):   # every window of those sizes over {0, 1, NaN}
        for window in product((0.0, 1.0, nan), repeat=rows * width):
            pairs = [(v, k) for k, v in enumerate(window)]
            by_rows = select_all([select_all(pairs[r * width:(r + 1) * width]) for r in range(rows)])
            if by_rows[1] != select_all(pairs)[1]:
                broken.append(window)
            checked += 1
    return Verdict(PROVED, not broken, (
        Note(f'associative: the step gives the same position either way on all {len(values) ** 3} triples of '
             f'(0, 1, 2, NaN), which are all the orders of three candidates (it reads only > and NaN); a fold of '
             f'an associative step does not depend on its grouping, so rows of any sizes fold as the window'),
        Note(f'and directly: all {checked} windows of 1-3 rows x 1-3 columns over (0, 1, NaN), the positions '
             f'equal' + (f'; differ at {broken[:3]}' if broken else ''))))


@claim('pool.avg-uniform', SLIDE, 'every window of an average pooling has the same divisor -- divisor_override, '
       'or the full window K0 ... K(d-1) -- when the override is set, or every window ends inside the padded input '
       '(no ceil_mode partial window) and the padding is counted or absent; the input gradient is then a '
       'transposed convolution with a constant weight (the gather form the kernels run for those sizes)')
def _avg_uniform() -> Verdict:
    identities, ok = [], True
    for dims in (1, 2, 3):
        (include, _), (exclude, _) = divisor_counts(dims)
        whole = uniform_divisor(dims)[1].args[1][0]
        for name, count, padded in (('count_include_pad', include, True), ('padding 0', exclude, False)):
            ok &= within(count, _uniform_facts(dims, padded)) == whole
            identities.append(Identity(f'avg_pool{dims}d divisor, {name}, every window of the output box', count,
                                       whole, 'each Min/Max decided by exact LP (degree-2 products) under the '
                                       'condition'))
    checked, why = _check_uniform()
    notes = (Note(why or f'the uniform gather form equals the derived one (its divisor read at each window) at '
                  f'every input position of {checked} 1-d geometries where the condition holds: H 1..6, K 1..3, '
                  f'S 1..3, 0 <= P <= K/2, floor and ceil mode, count_include_pad 0/1, divisor_override 0/3'),)
    return Verdict(PROVED, ok and not why, tuple(identities) + notes)


def _check_uniform() -> tuple[int, str]:
    """(geometries checked, '' or the first difference) of avg_pool_uniform(1) against the gather form."""
    s = pool_symbols(1)
    n, c, i = pool_gradients(1)['avg'].index
    when, _ = uniform_divisor(1)
    gather, uniform = pool_gradients(1)['avg'].value, avg_pool_uniform(1).result
    checked = 0
    for values in _scatter_sizes(1, (range(1, 7), range(1, 4), range(1, 4), (1,))):
        for ov, cip in product((0, 3), (0, 1)):
            values = values | {s['divisor_override']: ov, s['count_include_pad']: cip}
            if not when.xreplace(values):
                continue
            for iv in range(values[s['H'][0]]):
                at = values | {n: 0, c: 0, i: iv}
                want = evaluate(gather, at).replace(DIVISOR, Lambda(s['o'], avg_divisor(1))).xreplace(values)
                if (evaluate(uniform, at).xreplace(values) - want).simplify() != 0:
                    return checked, f'differs at {values}, i = {iv}'
            checked += 1
    return checked, ''


@claim('pool.max-ties', SLIDE, "max-pooling 'the error is assigned to where it comes from the winning unit' names "
       'one unit at every window', expected=False)
def _max_ties() -> Verdict:
    tie = (1, 1, 0, 0)
    first, split = max_gradient_first(tie), max_gradient_sympy(tie)
    return Verdict(FALSE, False, (Note('a 2x2 window [[1, 1], [0, 0]] has two winning units'),),
                   correction='the winning unit is the FIRST maximum in window order (row-major), and a NaN beats '
                              'every number (the last NaN wins): PyTorch CPU max_pool; the derivation of '
                              'pool.max*.backward uses exactly this selector. Alternative: SymPy\'s '
                              'diff(Max) = Heaviside(0) = 1/2 splits the error between tied units',
                   correction_verified=first == (1, 0, 0, 0) and split == (Rational(1, 2), Rational(1, 2), 0, 0),
                   counterexample=f'window {tie} (row-major 2x2), error 1: first-maximum rule gives {first}, '
                                  f'SymPy\'s Heaviside split gives {split}; the slide does not choose')


@claim('pool.avg-multiplied', SLIDE, "avg-pooling: the error is multiplied by m = N x N and assigned to the whole "
       'pooling block (all units get this same value)', expected=False)
def _avg_multiplied() -> Verdict:
    proof = prove_pool_gradient(2, 'avg')
    s = pool_symbols(2)
    grad = pool_gradients(2)['avg'].value
    values = {s['N']: 1, s['C']: 1, s['H'][0]: 2, s['H'][1]: 2, s['O'][0]: 1, s['O'][1]: 1, s['K'][0]: 2,
              s['K'][1]: 2, s['S'][0]: 2, s['S'][1]: 2, s['P'][0]: 0, s['P'][1]: 0, s['divisor_override']: 0,
              s['count_include_pad']: 1}
    n, c, i0, i1 = primed('n c', 2)
    got = evaluate(grad, {**values, n: 0, c: 0, i0: 1, i1: 0}).replace(DIVISOR, Lambda(s['o'], avg_divisor(2)))
    got = got.xreplace(values)
    g = IndexedBase('grad_output')[0, 0, 0, 0]
    return Verdict(FALSE, False, (proof, Identity('dE/dx[0, 0, 1, 0], 2x2 pool of a 2x2 input', got, g / 4,
                                                  'evaluated from the derived gather form')),
                   correction='the error of each window is DIVIDED by its divisor (N x N for a full window, fewer '
                              'when count_include_pad=False at a border, or divisor_override) and given to every '
                              'input of the window; with overlapping windows (stride < N) each input receives the '
                              'sum of the shares of all windows containing it, so units do not all get the same '
                              'value',
                   correction_verified=proof.holds and (got - g / 4) == 0,
                   counterexample=f'2x2 average pooling of a 2x2 input with upstream error g: the true gradient of '
                                  f'each input is {got} (derived and evaluated), the slide gives 4*g')


@claim('pool.output-size', SLIDE, 'PyTorch pooling output size (floor: floor((H+2P-D(K-1)-1)/S)+1; ceil: ceil(...)+1, '
       'minus 1 if the last window would start at or after H+P) equals the number of windows counted by the '
       'box-count rule', equation='')
def _output_size() -> Verdict:
    s = pool_symbols(1)
    checked = 0
    for ceil_mode in (False, True):
        count = output_size(1, ceil_mode)[0]
        for Hv, Kv, Sv, Dv in product(range(1, 10), range(1, 5), range(1, 4), range(1, 3)):
            for Pv in range(Kv // 2 + 1):
                span = Hv + 2 * Pv - Dv * (Kv - 1) - 1
                if span < 0:
                    continue
                torch_rule = (span + (Sv - 1 if ceil_mode else 0)) // Sv + 1
                if ceil_mode and (torch_rule - 1) * Sv >= Hv + Pv:
                    torch_rule -= 1
                ours = count.subs({s['H'][0]: Hv, s['K'][0]: Kv, s['S'][0]: Sv, s['D'][0]: Dv, s['P'][0]: Pv})
                if ours != torch_rule:
                    return Verdict(grid('H in 1..9, K in 1..4, S in 1..3, D in 1..2'), False,
                                   (Note(f'differs at H={Hv} K={Kv} S={Sv} D={Dv} P={Pv} ceil={ceil_mode}'),))
                checked += 1
    return Verdict(grid(f'H in 1..9, K in 1..4, S in 1..3, D in 1..2, 0 <= P <= K/2, floor and ceil ({checked} cases)'),
                   True, (Identity('windows (floor)', output_size(1, False)[0], output_size(1, False)[0], 'box count'),
                          Identity('windows (ceil)', output_size(1, True)[0], output_size(1, True)[0], 'box count')))


@claim('pool.avg-divisor', SLIDE, 'the avg-pool divisors counted by the box-count rule are >= 1 for every window '
       '(0 <= 2P <= K, last window starting inside the input or left padding)')
def _divisor() -> Verdict:
    (include, how_in), (exclude, how_ex) = divisor_counts(1)
    ok = 'possibly empty' not in how_in + how_ex
    return Verdict(PROVED, ok, (Identity('count_include_pad divisor', include, include, how_in),
                                Identity('count_exclude_pad divisor', exclude, exclude, how_ex),
                                Note('every window non-empty: proved by exact LP with degree-2 products and '
                                     'Chvatal-Gomory cuts')))
