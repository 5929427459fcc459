"""The rule-checked summation layer: every rule applies where it should and refuses where it must."""
import itertools
import random

import pytest
from sympy import Eq, IndexedBase, KroneckerDelta, Mod, Piecewise, Sum, Symbol, floor, symbols

from derive.proof import Derivation, prove_equal
from derive.zsum import (
    RuleRefused,
    ZSum,
    bounds,
    compare,
    count_box,
    drop_implied,
    eliminate_delta,
    evaluate,
    exact_cover,
    from_sum,
    implied,
    instantiate,
    lattice,
    normalize,
    points,
    split_residue,
    substitute,
    zero_padded,
)

i, j, m, u, v, a = symbols('i j m u v a', integer=True)
n, k, H = symbols('n k H', integer=True, positive=True)
s = Symbol('s', integer=True, positive=True)
g = IndexedBase('g')


def test_karr_condition_refuses_reversed_range():
    # SymPy's Sum(1, (i, 3, 1)).doit() is -1 (Karr); the rule must not turn it into an empty sum silently
    with pytest.raises(RuleRefused, match='Karr'):
        from_sum(Sum(g[i], (i, 3, 1)), [])
    z, _ = from_sum(Sum(g[i], (i, 0, n - 1)), [n - 1])
    assert z.conds == (i, -i + n - 1)


def test_karr_condition_needs_the_hypothesis():
    with pytest.raises(RuleRefused):
        from_sum(Sum(g[i], (i, 0, H - k)), [k - 1])
    from_sum(Sum(g[i], (i, 0, H - k)), [k - 1, H - k])


def test_strided_delta_records_divisibility_where_sympy_does_not():
    expr = Sum(g[i] * KroneckerDelta(2 * i, a), (i, 0, n))
    z, _ = from_sum(expr, [n])
    z, note = eliminate_delta(z)
    assert z.divs == ((a, 2),)
    assert 'recorded 2 | ' in note
    values = {n: 3}
    assert evaluate(z, {**values, a: 1}) == 0          # SymPy's own doit() gives g[1/2] here
    assert evaluate(z, {**values, a: 4}) == g[2]
    assert Sum(g[i] * KroneckerDelta(2 * i, a), (i, 0, n)).doit().subs({n: 3, a: 1}) != 0


def test_delta_with_symbolic_stride():
    z = ZSum.make((i,), g[i] * KroneckerDelta(s * i + m, a), [i, n - 1 - i])
    z, _ = eliminate_delta(z)
    assert z.divs in (((a - m, s),), ((m - a, s),))
    assert evaluate(z, {s: 3, m: 1, a: 7, n: 5}) == g[2]
    assert evaluate(z, {s: 3, m: 1, a: 8, n: 5}) == 0


def test_delta_elimination_among_chosen_variables_leaves_the_other_deltas():
    j = Symbol('j', integer=True)
    z = ZSum.make((i, j), g[i] * KroneckerDelta(i, a) * KroneckerDelta(j + i, m), [i, n - 1 - i, j, n - 1 - j])
    z, note = eliminate_delta(z, among=(j,))
    assert z.vars == (i,) and note.startswith('j = ') and z.body.has(KroneckerDelta(i, a))
    with pytest.raises(RuleRefused):
        eliminate_delta(z, among=(j,))                    # nothing left to solve for j


def test_delta_refuses_nonlinear_or_non_integer_coefficient():
    z = ZSum.make((i,), g[i] * KroneckerDelta(i * i, a), [i, n - i])
    with pytest.raises(RuleRefused):
        eliminate_delta(z)
    half = ZSum.make((i,), g[i] * KroneckerDelta(i / 2, a), [i, n - i])
    with pytest.raises(RuleRefused):
        eliminate_delta(half)


def test_substitution_must_be_a_bijection():
    z, _ = from_sum(Sum(g[i], (i, 0, n - 1)), [n - 1])
    with pytest.raises(RuleRefused):
        substitute(z, i, u, 2 * u)
    with pytest.raises(RuleRefused):
        substitute(z, j, u, u + 1)                 # not a summation variable
    shifted, _ = substitute(z, i, u, n - 1 - u)
    assert shifted.body == g[n - 1 - u]
    assert set(shifted.conds) == {u, n - 1 - u}


def test_lattice_parametrization():
    z = ZSum.make((i,), g[i], [i, n - 1 - i], [(i + 1, s)])
    z2, _ = lattice(z, i, u)
    assert z2.body == g[s * u - 1] and not z2.divs
    assert evaluate(z, {n: 10, s: 3}) == evaluate(z2, {n: 10, s: 3}) == g[2] + g[5] + g[8]
    with pytest.raises(RuleRefused):
        lattice(ZSum.make((i,), g[i], [i, n - i]), i, u)


def test_normalize_tightens_over_the_integers():
    x = Symbol('x', integer=True)
    assert normalize(2 * x - 1) == x - 1          # 2x >= 1 over Z means x >= 1
    assert normalize(4 * x + 6) == x + 1          # x >= -3/2 over Z means x >= -1
    assert normalize((a - m) / s) == a - m        # positive denominator cleared
    with pytest.raises(RuleRefused):
        normalize(Symbol('r', real=True))


def test_implication_needs_integer_and_degree_two_reasoning():
    K, P = symbols('K P', integer=True)
    assert implied(K - P - 1, [K - 2 * P, K - 1, P])         # Chvatal-Gomory cut
    assert not implied(K - P - 2, [K - 2 * P, K - 1, P])
    Dp, Kp = symbols('Dp Kp', integer=True, positive=True)
    assert implied(Dp * (Kp - 1) + 1, [])                    # product of D - 1 >= 0 and K - 1 >= 0
    assert not implied(Dp * (Kp - 1) - 1, [])


@pytest.mark.parametrize('seed', range(40))
def test_implication_is_sound_against_brute_force(seed):
    rng = random.Random(seed)
    x, y = symbols('x y', integer=True)
    facts = [rng.randint(-3, 3) * x + rng.randint(-3, 3) * y + rng.randint(-6, 6) for _ in range(rng.randint(1, 4))]
    cond = rng.randint(-3, 3) * x + rng.randint(-3, 3) * y + rng.randint(-6, 6)
    box = range(-12, 13)
    feasible = [(p, q) for p, q in itertools.product(box, box) if all(f.subs({x: p, y: q}) >= 0 for f in facts)]
    if implied(cond, facts):
        # soundness on the box; facts bounding the box away make the test vacuous, never wrong
        assert all(cond.subs({x: p, y: q}) >= 0 for p, q in feasible)


def test_drop_implied_keeps_the_binding_constraints():
    z = ZSum.make((i,), g[i], [i, i + 1, n - 1 - i, n + 5 - i])
    z2, note = drop_implied(z, [n - 1])
    assert set(z2.conds) == {i, n - 1 - i}
    assert 'dropped' in note


def test_count_box():
    z = ZSum.make((i, j), 1, [i, n - 1 - i, j - 2, k - j])
    count, _ = count_box(z, [n - 1, k - 2])
    assert count.subs({n: 4, k: 5}) == 4 * 4
    assert count.subs({n: 4, k: 5}) == len(list(points(z, {n: 4, k: 5})))
    stride = ZSum.make((i,), 1, [i, H - 1 - s * i])
    c, _ = count_box(stride, [H - 1])
    assert c == floor((H - 1) / s) + 1
    with pytest.raises(RuleRefused):
        count_box(ZSum.make((i, j), 1, [i - j, n - i, j, n - j]), [n])   # not a box


def test_bounds_and_unbounded_sums():
    z = ZSum.make((i, j), g[i, j], [i, j - i, n - j])
    assert bounds(z, {n: 3}) == {i: (0, 3), j: (0, 3)}
    with pytest.raises(ValueError, match='unbounded'):
        bounds(ZSum.make((i,), g[i], [i]), {})


def test_piecewise_indicators_and_divisibility_conditions_are_read():
    expr = Sum(Piecewise((g[i], (i >= 2) & Eq(Mod(i, 3), 0)), (0, True)), (i, 0, n))
    z, _ = from_sum(expr, [n])
    assert z.divs == ((i, 3),)
    assert evaluate(z, {n: 10}) == g[3] + g[6] + g[9]
    with pytest.raises(RuleRefused, match='indicator'):
        from_sum(Sum(Piecewise((g[i], i > 2), (1, True)), (i, 0, n)), [n])


def test_compare_reports_the_difference():
    one = ZSum.make((i,), g[i], [i, n - 1 - i])
    assert compare(one, ZSum.make((i,), g[i], [i, n - 1 - i]), [n])[0]
    ok, why = compare(one, ZSum.make((i,), g[i], [i - 1, n - 1 - i]), [n])
    assert not ok and 'constraint' in why
    ok, why = compare(one, ZSum.make((i,), 2 * g[i], [i, n - 1 - i]), [n])
    assert not ok and 'bodies differ' in why
    ok, why = compare(ZSum.make((i,), g[i], [i, n - i], [(i, 2)]), ZSum.make((i,), g[i], [i, n - i]), [n])
    assert not ok and 'divisibility' in why


def test_instantiate_and_proof_rendering():
    x = IndexedBase('x')
    left = Derivation.start('left', Sum(x[i] * g[i], (i, 0, n - 1)), [n - 1])
    right = Derivation.start('right', Sum(x[n - 1 - u] * g[n - 1 - u], (u, 0, n - 1)), [n - 1]).apply(
        substitute, u, i, n - 1 - i)
    proof = prove_equal('reversal', left, right, [n - 1])
    assert proof.holds
    assert 'PROVED' in proof.text() and '\\sum' in proof.latex()
    fixed = left.apply(instantiate, {n: 3})
    assert evaluate(fixed.result, {}) == x[0] * g[0] + x[1] * g[1] + x[2] * g[2]


def test_residue_split_drops_the_multiple_of_the_modulus():
    """sum_m g[(i + 1 - m)/s] [s | i + 1 - m] over 0 <= m < k, at i = s t + r: the divisibility depends on r only,
    and the split sum equals the original at every i."""
    t, r = symbols('t r', integer=True)
    z = ZSum.make((m,), g[(i + 1 - m) / s], [m, k - 1 - m], [(i + 1 - m, s)])
    split, note = split_residue(z, i, s, t, r)
    assert split.divs == ((r + 1 - m, s),) and note == 'i = s t + r'
    for sv, kv in itertools.product((1, 2, 3), (1, 2, 4)):
        for iv in range(10):
            tv, rv = divmod(iv, sv)
            assert evaluate(split, {s: sv, k: kv, t: tv, r: rv}) == evaluate(z, {s: sv, k: kv, i: iv})


def test_residue_split_refuses_bad_arguments():
    t, r = symbols('t r', integer=True)
    z = ZSum.make((m,), g[i - m], [m, k - 1 - m], [(i - m, s)])
    with pytest.raises(RuleRefused, match='summation variable'):
        split_residue(z, m, s, t, r)
    with pytest.raises(RuleRefused, match='positive integer'):
        split_residue(z, i, a, t, r)                 # a may be zero or negative
    with pytest.raises(RuleRefused, match='fresh'):
        split_residue(z, i, s, k, r)                 # k is a size of the sum
    with pytest.raises(RuleRefused, match='fresh'):
        split_residue(z, i, s, Symbol('x'), r)       # not declared integer


def test_exact_cover_conditions_mean_one_hit_per_point():
    """Where the conditions hold, every point of [0, extent) is hit once; a tap step of 2 or a window step
    that depends on the tap is not of the shape (None)."""
    o, O, K, P = symbols('o O K P', integer=True)
    conds = exact_cover(s * o + m - P, o, (0, O - 1), m, (0, K - 1), H)
    for sv, kv, pv, ov, hv in itertools.product(range(1, 4), range(1, 4), range(2), range(1, 4), range(1, 10)):
        values = {s: sv, K: kv, P: pv, O: ov, H: hv}
        if all(bool(c.subs(values)) for c in conds):
            hits = sorted(sv * x + y - pv for x in range(ov) for y in range(kv))
            assert hits == list(range(hv)), values
    assert exact_cover(s * o + 2 * m, o, (0, O - 1), m, (0, K - 1), H) is None
    assert exact_cover(m * o + m, o, (0, O - 1), m, (0, K - 1), H) is None


def test_zero_padded_means_the_window_sum_of_zero_extended_rows():
    """Where zero_padded holds, the points of the sum are those of the taps' boxes whose column lies in
    the array (so the sum is that over the boxes of the array extended by zeros), at every output position
    of a grid; a constraint that is not the array's bounds, or one of the taps' own, is refused."""
    o, K, P, W = symbols('o K P W', integer=True)
    x = IndexedBase('x')
    col = s * o + m - P
    z = ZSum.make((m, u), x[u, col], [m, K - 1 - m, col, W - 1 - col, u, 1 - u])
    hyps = [s - 1, K - 1, P, W - 1]
    assert zero_padded(z, {o, m}, col, W, hyps)
    for sv, kv, pv, wv in itertools.product(range(1, 4), range(1, 4), range(2), range(1, 7)):
        for ov in range(-1, wv + 1):
            values = {s: sv, K: kv, P: pv, W: wv, o: ov}
            got = sorted((int(p[m]), int(p[u])) for p in points(z, values))
            padded = [(t, r) for t in range(kv) for r in range(2) if 0 <= sv * ov + t - pv < wv]
            assert got == padded, values
    assert not zero_padded(z, {o, m}, col, W - 1, hyps)                          # not the array's bounds
    narrower = ZSum.make((m, u), x[u, col], [m, K - 1 - m, col, W - 1 - col, u, 1 - u, o - m])
    assert not zero_padded(narrower, {o, m}, col, W, hyps)                        # a constraint of its own
