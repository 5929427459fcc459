"""Convolution with PyTorch semantics: the derived gather forms are the chain rule, for all sizes."""
import itertools

import pytest
from sympy import IndexedBase, Symbol, diff, expand

from derive import layer
from derive.claims import all_claims
from derive.zsum import ZSum, compare, evaluate

CLAIMS = {c.id: c for c in all_claims()}


@pytest.mark.parametrize('cid', sorted(c for c in CLAIMS if c.startswith('layer.')))
def test_layer_claim(cid):
    claim = CLAIMS[cid]
    verdict = claim.check()
    assert claim.passes(verdict), verdict


def test_dropped_stride_divisibility_is_refused():
    grad = layer.conv_gradients(1)['input']
    stated = layer.transposed_conv_form(1).result
    assert grad.value.divs, 'the strided gradient carries a divisibility condition'
    dropped = ZSum(grad.value.vars, grad.value.body, grad.value.conds, ())
    ok, why = compare(dropped, stated, list(layer.conv_layer(1).hyps) + grad.wrt.box(grad.index))
    assert not ok and 'divisibility' in why


def test_gather_form_has_no_scatter():
    """Each gradient element is one finite sum over kernel taps or reduction axes only."""
    for dims in (1, 2, 3):
        s = layer.conv_symbols(dims)
        grads = layer.conv_gradients(dims)
        assert set(grads['input'].value.vars) == {s['k'], *s['m']}
        assert set(grads['weight'].value.vars) == {s['n'], *s['o']}
        assert set(grads['bias'].value.vars) == {s['n'], *s['o']}


def _brute_force(values, dims_index):
    """dE/dx by differentiating the expanded forward (E = sum g * y) at concrete sizes."""
    s = layer.conv_symbols(1)
    N, G, CG, KG, H, O, K = (values[s[k]] if k in ('N', 'G', 'CG', 'KG') else values[s[k][0]]
                             for k in ('N', 'G', 'CG', 'KG', 'H', 'O', 'K'))
    S, D, P = values[s['S'][0]], values[s['D'][0]], values[s['P'][0]]
    x, w, go = IndexedBase('x'), IndexedBase('w'), IndexedBase('grad_output')
    loss = 0
    for n, g, k, o in itertools.product(range(N), range(G), range(KG), range(O)):
        y = sum(w[g, k, c, m] * x[n, g, c, S * o + D * m - P] for c in range(CG) for m in range(K)
                if 0 <= S * o + D * m - P < H)
        loss += go[n, g, k, o] * y
    return loss


@pytest.mark.parametrize('S,D,P', [(1, 1, 0), (2, 1, 1), (2, 2, 1), (3, 2, 2), (1, 3, 3)])
def test_derived_gradients_equal_brute_force_chain_rule(S, D, P):
    s = layer.conv_symbols(1)
    N, G, CG, KG, H, K = 1, 2, 2, 1, 7, 3
    O = (H + 2 * P - D * (K - 1) - 1) // S + 1
    values = {s['N']: N, s['G']: G, s['CG']: CG, s['KG']: KG, s['H'][0]: H, s['O'][0]: O, s['K'][0]: K,
              s['S'][0]: S, s['D'][0]: D, s['P'][0]: P}
    loss = _brute_force(values, 1)
    grads = layer.conv_gradients(1)
    x, w = IndexedBase('x'), IndexedBase('w')
    n_, g_, c_, i_ = (Symbol(f"{v}'", integer=True) for v in ('n', 'g', 'c', 'i0'))
    for g, c, i in itertools.product(range(G), range(CG), range(H)):
        got = evaluate(grads['input'].value, {**values, n_: 0, g_: g, c_: c, i_: i})
        assert expand(got - diff(loss, x[0, g, c, i])) == 0, (g, c, i)
    k_, m_ = Symbol("k'", integer=True), Symbol("m0'", integer=True)
    for g, c, m in itertools.product(range(G), range(CG), range(K)):
        got = evaluate(grads['weight'].value, {**values, g_: g, Symbol("k'", integer=True): 0, c_: c, m_: m})
        assert expand(got - diff(loss, w[g, 0, c, m])) == 0, (g, c, m)
    assert k_ is not None


def test_output_size_formula():
    expr = layer.output_size()
    a = layer.AXIS
    for H, K, S, D, PL, PR in itertools.product(range(1, 8), range(1, 4), range(1, 4), range(1, 3), range(0, 3),
                                                range(0, 2)):
        if H + PL + PR - D * (K - 1) < 1:
            continue
        count = sum(1 for o in range(0, 40) if S * o + D * (K - 1) - PL <= H - 1 + PR)
        assert expr.subs({a['H']: H, a['K']: K, a['S']: S, a['D']: D, a['PL']: PL, a['PR']: PR}) == count
