"""Pooling rules: proofs, errata, and the derived sums evaluated against brute force."""
import itertools
from dataclasses import replace

import pytest
from sympy import Indexed, IndexedBase, KroneckerDelta, Lambda, Rational, Symbol, expand

from derive import pool
from derive.claims import all_claims
from derive.zsum import evaluate

CLAIMS = {c.id: c for c in all_claims()}


@pytest.mark.parametrize('cid', sorted(c for c in CLAIMS if c.startswith('pool.')))
def test_pool_claim(cid):
    claim = CLAIMS[cid]
    verdict = claim.check()
    assert claim.passes(verdict), verdict


def test_max_selector_folds_by_rows_not_by_columns():
    """pool.max-rows is not vacuous: the selector's pair of a window, folded row by row, is PyTorch's (the
    first maximum in row-major order, the last NaN), but folded column by column it is not (a tie across
    the diagonal goes to the other unit); and without its NaN rule the step is not associative."""
    window = [[0.0, 1.0], [1.0, 0.0]]
    pairs = [[(v, 2 * r + c) for c, v in enumerate(row)] for r, row in enumerate(window)]
    rows = pool.select_all([pool.select_all(row) for row in pairs])
    columns = pool.select_all([pool.select_all([row[c] for row in pairs]) for c in range(2)])
    assert rows == (1.0, 1) and columns == (1.0, 2)
    nan = float('nan')
    assert pool.select_all([(nan, 0), (1.0, 1), (nan, 2), (2.0, 3)])[1] == 2

    def plain(best, candidate):   # no NaN rule: a NaN never taken, and one in the running pair stays
        return candidate if candidate[0] > best[0] else best
    a, b, c = (1.0, 0), (nan, 1), (2.0, 2)
    assert plain(plain(a, b), c) != plain(a, plain(b, c))


def _avg_reference(H, K, S, P, ceil_mode, include, override):
    """PyTorch's avg_pool1d backward written out: each window shares its error among its inputs."""
    O = pool.output_size(1, ceil_mode)[0].subs(_sizes(H, K, S, 1, P))
    g = IndexedBase('grad_output')
    grad = [0] * H
    for o in range(O):
        start = S * o - P
        end = min(start + K, H + P)
        count = end - start
        lo, hi = max(start, 0), min(end, H)
        div = override or (count if include else hi - lo)
        for i in range(lo, hi):
            grad[i] += g[0, 0, o] * Rational(1, div)
    return O, grad


def _sizes(H, K, S, D, P):
    s = pool.pool_symbols(1)
    return {s['H'][0]: H, s['K'][0]: K, s['S'][0]: S, s['D'][0]: D, s['P'][0]: P}


@pytest.mark.parametrize('H,K,S,P,ceil_mode,include,override', [
    (6, 3, 2, 0, True, True, 0), (6, 3, 2, 1, True, True, 0), (7, 3, 2, 1, False, False, 0),
    (5, 2, 1, 1, False, True, 0), (8, 4, 3, 2, True, False, 0), (5, 3, 2, 1, False, True, 7)])
def test_avg_backward_matches_pytorch_rule(H, K, S, P, ceil_mode, include, override):
    s = pool.pool_symbols(1)
    O, expected = _avg_reference(H, K, S, P, ceil_mode, include, override)
    grad = pool.pool_gradients(1)['avg'].value
    values = {s['N']: 1, s['C']: 1, s['O'][0]: O, s['divisor_override']: override,
              s['count_include_pad']: int(include), **_sizes(H, K, S, 1, P)}
    n, c, i = pool.primed('n c', 1)
    for a in range(H):
        got = evaluate(grad, {**values, n: 0, c: 0, i: a})
        got = got.replace(pool.DIVISOR, Lambda(s['o'], pool.avg_divisor(1))).xreplace(values)
        assert expand(got - expected[a]) == 0, a


def test_max_backward_routes_to_the_selected_position():
    s = pool.pool_symbols(2)
    grad = pool.pool_gradients(2)['max'].value
    H, K, S, P, D = 4, 2, 1, 0, 1
    values = {s['N']: 1, s['C']: 1, s['divisor_override']: 0}
    for d in range(2):
        values.update({s['H'][d]: H, s['K'][d]: K, s['S'][d]: S, s['P'][d]: P, s['D'][d]: D, s['O'][d]: 3})
    n, c, i0, i1 = pool.primed('n c', 2)
    got = evaluate(grad, {**values, n: 0, c: 0, i0: 1, i1: 2})
    argmax, g = IndexedBase('argmax'), IndexedBase('grad_output')
    # windows (o0, o1) containing (1, 2): o0 in {0, 1}, o1 in {1, 2}; each contributes if it selected 1*4+2
    from sympy import KroneckerDelta
    expected = sum(g[0, 0, o0, o1] * KroneckerDelta(6, argmax[0, 0, o0, o1])
                   for o0, o1 in itertools.product((0, 1), (1, 2)))
    assert expand(got - expected) == 0


def test_ceil_mode_output_size_examples():
    assert pool.output_size(1, True)[0].subs(_sizes(5, 2, 2, 1, 1)) == 3     # 4 windows, last starts in padding
    assert pool.output_size(1, False)[0].subs(_sizes(6, 3, 2, 1, 0)) == 2
    assert pool.output_size(1, True)[0].subs(_sizes(6, 3, 2, 1, 0)) == 3
    assert Symbol is not None


def _geometry_1d(H, K, S, P, D, O):
    s = pool.pool_symbols(1)
    return {s['H'][0]: H, s['K'][0]: K, s['S'][0]: S, s['P'][0]: P, s['D'][0]: D, s['O'][0]: O}


def test_scatter_form_needs_selectors_inside_their_windows():
    """H = 4, K = 2, S = 2: windows {0, 1} and {2, 3}.  A selector of window 0 naming position 3 moves the
    gradient in the scatter form, while the gather form (which searches windows) drops it."""
    s = pool.pool_symbols(1)
    values = {s['N']: 1, s['C']: 1, **_geometry_1d(4, 2, 2, 0, 1, 2)}
    grad = pool.pool_gradients(1)['max']
    (n, c, e), scatter = pool.max_pool_scatter(1)
    argmax, g = IndexedBase('argmax'), IndexedBase('grad_output')
    table = {argmax[0, 0, 0]: 3, argmax[0, 0, 1]: 2}
    gather = evaluate(grad.value, {**values, grad.index[0]: 0, grad.index[1]: 0, grad.index[2]: 3}).xreplace(table)
    scattered = evaluate(scatter, {**values, n: 0, c: 0, e: 3}).xreplace(table)
    assert gather == 0 and scattered == g[0, 0, 0]


def test_scatter_check_catches_a_wrong_scatter_form(monkeypatch):
    """Shift the written position by one: the grid check must report a difference."""
    (n, c, e), scatter = pool.max_pool_scatter(1)
    shifted = type(scatter)(scatter.vars, scatter.body.xreplace({e: e + 1}), scatter.conds, scatter.divs)
    monkeypatch.setattr(pool, 'max_pool_scatter', lambda dims: ((n, c, e), shifted))
    checked, why = pool.check_max_scatter(1, [_geometry_1d(4, 2, 2, 0, 1, 2)])
    assert why.startswith('differs')


def test_tiling_check_catches_a_form_whose_selector_names_the_next_tap(monkeypatch):
    """pool.max-tiling is not vacuous: compare the selector with the position after the tap and the check
    reports a window whose selector it finds where it is not (or misses where it is)."""
    when, term = pool.max_pool_tiling(1)
    argmax = pool.max_pool_layer(1).selector.base
    selector, = [a for a in term.body.atoms(Indexed) if a.base == argmax]
    shifted = type(term)(term.vars, term.body.xreplace({selector: selector + 1}), term.conds, term.divs)
    monkeypatch.setattr(pool, 'max_pool_tiling', lambda dims: (when, shifted))
    checked, why = pool.check_max_tiling(1, [pool.tiling_sizes(1, [(4, 2, 2, 2)])])
    assert why.startswith('window')


def test_tiling_check_compares_every_selector_array_of_a_small_tiling():
    checked, why = pool.check_max_tiling(1, [pool.tiling_sizes(1, [(6, 3, 3, 2)])], limit=10**6)
    assert not why and checked == 6 ** 2     # two windows, each selector anywhere in the plane of 6


def test_scatter_check_covers_every_valid_selector_of_a_small_geometry():
    checked, why = pool.check_max_scatter(1, [_geometry_1d(5, 3, 2, 1, 1, 3)], limit=10**6)
    assert not why and checked == 2 * 3 * 2     # windows {0, 1}, {1, 2, 3}, {3, 4}


def test_avg_scatter_form_is_the_chain_rule_with_only_batch_and_channel_solved():
    s = pool.pool_symbols(2)
    scatter = pool.avg_pool_scatter(2)
    z = scatter.result
    assert set(z.vars) == set(s['o']) | set(s['m'])
    assert len(z.body.atoms(KroneckerDelta)) == 2 and not z.divs   # per axis: i_d = S_d o_d + m_d - P_d
    assert [st.rule for st in scatter.steps][1].startswith('chain rule')


def test_avg_scatter_claim_refuses_a_shifted_scatter_form(monkeypatch):
    """Send each window's share one position to the right: the claim's proof must fail."""
    from derive.claims import select
    true = pool.avg_pool_scatter

    def shifted(dims):
        d = true(dims)
        i = pool.pool_gradients(dims)['avg'].index[2]
        z = d.result
        wrong = type(z)(z.vars, z.body.xreplace({i: i + 1}), z.conds, z.divs)
        return replace(d, steps=d.steps[:-1] + (replace(d.steps[-1], result=wrong),))
    monkeypatch.setattr(pool, 'avg_pool_scatter', shifted)
    claim, = select(['pool.avg-scatter'])
    assert not claim.check().holds


def test_uniform_divisor_condition_matches_enumerated_divisors():
    """Every 1-d geometry of a grid: the condition of uniform_divisor holds exactly when every window's
    divisor (avg_divisor at each output position) equals the constant, but for the windows that tile
    their input, where the constant is right too (no padding, full windows) and the tiling form runs."""
    s = pool.pool_symbols(1)
    when, constant = pool.uniform_divisor(1)
    seen = {True: 0, False: 0}
    for H, K, S in itertools.product(range(1, 8), range(1, 4), range(1, 4)):
        for P, ceil_mode, cip, ov in itertools.product(range(K // 2 + 1), (False, True), (0, 1), (0, 2)):
            O = int(pool.output_size(1, ceil_mode)[0].subs({s['H'][0]: H, s['K'][0]: K, s['S'][0]: S,
                                                           s['D'][0]: 1, s['P'][0]: P}))
            if O < 1:
                continue
            values = {s['H'][0]: H, s['K'][0]: K, s['S'][0]: S, s['P'][0]: P, s['O'][0]: O,
                      s['divisor_override']: ov, s['count_include_pad']: cip}
            divisors = {pool.avg_divisor(1).xreplace(values | {s['o'][0]: o}) for o in range(O)}
            same = divisors == {constant.xreplace(values)}
            assert bool(when.xreplace(values)) == same, values
            seen[same] += 1
    assert min(seen.values()) > 50


def test_uniform_gather_is_the_gather_form_with_a_constant_divisor():
    """Same sum as the derived gather form, its body the upstream element over K0 K1 (or the override)."""
    from sympy import Indexed
    s = pool.pool_symbols(2)
    z, grad = pool.avg_pool_uniform(2).result, pool.pool_gradients(2)['avg'].value
    assert (z.vars, z.conds, z.divs) == (grad.vars, grad.conds, grad.divs)
    (upstream,) = grad.body.atoms(Indexed)
    K0, K1 = s['K']
    assert z.body.subs(s['divisor_override'], 0) * K0 * K1 == upstream
    assert z.body.subs(s['divisor_override'], 3) * 3 == upstream


def test_avg_uniform_claim_refuses_a_condition_that_misses_ceil_mode(monkeypatch):
    """Claim the constant divisor for every geometry: the grid check must find the partial last window."""
    from sympy import true

    from derive.claims import select
    constant = pool.uniform_divisor(1)[1]
    monkeypatch.setattr(pool, 'uniform_divisor', lambda dims: (true, constant))
    claim, = select(['pool.avg-uniform'])
    verdict = claim.check()
    assert not verdict.holds and 'differs' in verdict.evidence[-1].text()
