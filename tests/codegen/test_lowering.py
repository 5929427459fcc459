"""The lowering emits only memory-safe kernels: an access that may leave its array (unproved by exact LP under
the rule's constraints and hypotheses) is refused with LoweringError; the same access, guarded, is accepted.
The probes are small layers written as index expressions, as a user's own stencil would be."""
import pytest
from sympy import Eq, IndexedBase, Symbol

from codegen.lower import LoweringError, lower
from codegen.lower_numpy import lower_numpy
from codegen.spec import KernelRule, TensorArg, kernel_rules
from derive.zsum import ZSum

SIZE, CHANNELS = Symbol('n', integer=True, positive=True), Symbol('C', integer=True, positive=True)
WINDOW = Symbol('K', integer=True, positive=True)
C, I, M = Symbol('c', integer=True), Symbol('i', integer=True), Symbol('m', integer=True)
X, Y = IndexedBase('x'), IndexedBase('y')


def probe(term: ZSum, family: str = 'conv', channels: bool = True) -> KernelRule:
    """y[c, i] = term for 0 <= c < C, 0 <= i < n, reading x of shape (C, n) (without c when not ``channels``)."""
    shape, index = ((CHANNELS, SIZE), (C, I)) if channels else ((SIZE,), (I,))
    return KernelRule('probe', family, 'forward', 1, (TensorArg('output', Y, shape),), (TensorArg('input', X, shape),),
                      index, ((term, ''),), 'sum', (SIZE - 1, CHANNELS - 1, WINDOW - 1), (WINDOW,) if term.vars else ())


def at(*position):
    return X[(C,) + position]


OUT_OF_RANGE = {
    'x[c, i + 1]': ZSum.make((), at(I + 1)),
    'x[c, i - 1]': ZSum.make((), at(I - 1)),
    'x[c, 2 i]': ZSum.make((), at(2 * I)),
    'x[c + 1, i]': ZSum.make((), X[C + 1, I]),
    'sum_m x[c, i + m]': ZSum.make((M,), at(I + M), [M, WINDOW - 1 - M]),
    'sum_m x[c, i + m], i + m <= n': ZSum.make((M,), at(I + M), [M, WINDOW - 1 - M, SIZE - I - M]),
}
GUARDED = {
    'x[c, i]': ZSum.make((), at(I)),
    'x[c, i + 1], i + 1 <= n - 1': ZSum.make((), at(I + 1), [SIZE - 2 - I]),
    'x[c, n - 1 - i]': ZSum.make((), at(SIZE - 1 - I)),
    'sum_m x[c, i + m], i + m <= n - 1': ZSum.make((M,), at(I + M), [M, WINDOW - 1 - M, SIZE - 1 - I - M]),
}


@pytest.mark.parametrize('family', ['conv', 'activation'])
@pytest.mark.parametrize('access', sorted(OUT_OF_RANGE))
def test_lowering_refuses_an_access_that_may_leave_its_array(access, family):
    with pytest.raises(LoweringError, match='may leave input'):
        lower(probe(OUT_OF_RANGE[access], family))


@pytest.mark.parametrize('access', sorted(GUARDED))
def test_lowering_accepts_the_access_once_guarded(access):
    kernel = lower(probe(GUARDED[access], 'activation'))      # the scalar loop nest only
    assert kernel.name == 'probe' and kernel.body
    assert {'C', 'n'} <= {p.name for p in kernel.params} and SIZE - 1 in kernel.checks


def test_every_public_function_has_a_rule_that_lowers():
    import generated.numpy
    names = [lower(r).name for r in kernel_rules()]
    assert len(names) == len(set(names))
    assert set(names) == {n for n in generated.numpy.__all__ if not n.endswith('num_threads')}


@pytest.mark.parametrize('access', sorted(GUARDED))
def test_vector_lowering_accepts_the_access_once_guarded(access):
    kernel = lower(probe(GUARDED[access], 'conv'))
    assert kernel.name == 'probe' and kernel.body


def test_vector_lowering_accepts_a_layer_with_a_single_index():
    kernel = lower(probe(ZSum.make((), X[I]), 'conv', channels=False))
    assert kernel.body


def test_numpy_lowering_refuses_an_access_that_may_leave_its_array():
    with pytest.raises(LoweringError):
        lower_numpy(probe(OUT_OF_RANGE['x[c, i + 1]']))


@pytest.mark.parametrize('access', ['x[c, i + 1], i + 1 <= n - 1', 'sum_m x[c, i + m], i + m <= n - 1'])
def test_numpy_elementwise_lowering_refuses_what_is_not_elementwise(access):
    """An 'elementwise' rule that shifts, guards or sums is refused, never printed as the identity."""
    lower_numpy(probe(GUARDED['x[c, i]'], 'activation'))
    with pytest.raises(LoweringError, match='elementwise'):
        lower_numpy(probe(GUARDED[access], 'activation'))


def test_residue_split_makes_strided_gathers_division_free_along_the_vector():
    """conv2d_input: after i = S t + r the divisibilities depend on the residues only, the output element is
    S t + r, and the general (S >= 2) vector path stores S apart with loads unit-stride along t."""
    from codegen.ir import VStore
    from codegen.ir import walk
    from codegen.spec import rule
    from codegen.split import residue_split
    split = residue_split(rule('conv2d_input'))
    quotients = {v for v in split.index if v.name.endswith('q')}
    assert len(quotients) == 2 and all(not (e.free_symbols & quotients) for e, _ in split.terms[0][0].divs)
    assert [str(e) for e in split.at[-2:]] == ['S0*i0q + i0r', 'S1*i1q + i1r']
    strides = {str(n.stride) for n in walk(lower(rule('conv2d_input')).body) if isinstance(n, VStore)}
    assert {'1', 'S1'} <= strides


def test_residue_split_parametrizes_unit_taps_by_their_lattice():
    """avg_pool2d_backward with one divisor: each tap of unit coefficient becomes m = S k + r + P, so the
    upstream element is read at t - k, no division left in the sum; its box depends on the residue only
    (KernelRule.residues).  A dilated tap (conv2d_input: D m) keeps its divisibility."""
    from sympy import Indexed

    from codegen.ir import ExactDiv, VAdd, VStore, walk
    from codegen.spec import rule
    from codegen.split import residue_split
    when, uniform = rule('avg_pool2d_backward').variants[0]
    split = residue_split(uniform)
    term = split.terms[0][0]
    assert not term.divs and [str(v) for v in term.vars] == ['m0k', 'm1k']
    (read,) = term.body.atoms(Indexed)
    assert [str(e) for e in read.indices[2:]] == ['i0q - m0k', 'i1q - m1k']
    assert [str(r) for r in split.residues] == ['i0r', 'i1r']
    assert residue_split(rule('conv2d_input')).terms[0][0].divs
    kernel = lower(rule('avg_pool2d_backward'))
    gather = [n for n in walk(kernel.body) if getattr(n, 'conds', None) == (when,)]
    assert gather, 'the variant runs under its condition'
    nodes = list(walk(gather[0].then))
    assert any(isinstance(n, VStore) for n in nodes) and not any(isinstance(n, VAdd) for n in nodes)
    assert not any(a.atoms(ExactDiv) for n in nodes for a in vars(n).values() if hasattr(a, 'atoms'))
    assert any(isinstance(n, VAdd) for n in walk(gather[0].otherwise))     # the scatter form elsewhere


def test_parallel_collapses_rectangular_loops_only():
    """OpenMP's collapse needs bounds free of the collapsed loops' variables (a residue's row count is not)."""
    from sympy import Symbol as Sym

    from codegen.ir import Assign, Loop
    from codegen.lower import parallel
    i, j, k, n = (Sym(x, integer=True) for x in 'ijkn')
    body = (Assign(Sym('a'), k),)
    assert parallel((Loop(i, 0, n, (Loop(j, 0, n - i, (Loop(k, 0, n, body),)),)),))[0].parallel == 1
    assert parallel((Loop(i, 0, n, (Loop(j, 0, n, (Loop(k, 0, n - j, body),)),)),))[0].parallel == 2
    assert parallel((Loop(i, 0, n, (Loop(j, 0, n, (Loop(k, 0, n, body),)),)),))[0].parallel == 3


def test_hoisting_moves_loop_bounds_with_divisions_out_of_branches_and_loops():
    """An inner loop's bound computed with a division is declared, leaves the branch arms that agree on
    it and then every loop it does not depend on; a bound the arms disagree on, or a name the other arm
    reads, stays where it was."""
    from sympy import Symbol as Sym

    from codegen.ir import Assign, Branch, Declare, FloorDiv, Loop, hoist_invariants
    v, m, r, n, s = (Sym(x, integer=True) for x in 'vmrns')
    add = (Assign(Sym('acc'), m, '+='),)

    def row(upper_else, arm=()):
        inner = Loop(m, FloorDiv(r, s), n, add)
        other = Loop(m, FloorDiv(r, s), upper_else, add)
        return (Loop(r, 0, n, (Loop(v, 0, n, (Branch((v >= 1,), (inner,), arm + (other,)),)),)),)
    out = hoist_invariants(row(n))
    loop_r = out[0]
    assert loop_r.body[0] == Declare('m_lo', 'index', FloorDiv(r, s))     # out of the branch and the v loop
    assert isinstance(loop_r.body[1], Loop) and loop_r.body[1].var == v
    branch = loop_r.body[1].body[0]
    bound = Sym('m_lo', integer=True)
    assert branch.then[0].lower == bound and branch.otherwise[0].lower == bound
    # the other arm reads m_lo as something else: the declaration stays in its arm
    out = hoist_invariants(row(n, (Assign(Sym('m_lo'), v),)))
    assert isinstance(out[0].body[0], Loop)
    assert out[0].body[0].body[0].then[0] == Declare('m_lo', 'index', FloorDiv(r, s))
    # a bound without a division stays in the loop header
    plain = hoist_invariants((Loop(v, 0, n, (Loop(m, r + 1, n, add),)),))
    assert plain[0].body[0].lower == r + 1
    # a bound that depends on the enclosing loop stays in its arm: out of it, the other arm would pay for it
    inner = Loop(m, FloorDiv(v, s), n, add)
    out = hoist_invariants((Loop(v, 0, n, (Branch((v >= 1,), (inner,), add),)),))
    branch = out[0].body[0]
    assert isinstance(branch, Branch) and branch.then[0] == Declare('m_lo', 'index', FloorDiv(v, s))


def test_residue_split_leaves_rules_without_strided_gathers_alone():
    from codegen.spec import rule
    from codegen.split import residue_split
    for name in ('conv2d', 'conv2d_weight', 'avg_pool2d', 'max_pool2d_backward'):
        assert residue_split(rule(name)) is rule(name)


def test_hoisting_moves_loop_invariant_bounds_only():
    from sympy import Symbol as Sym

    from codegen.ir import ArrayRef, Assign, Declare, Loop, SelectMax, hoist_invariants
    i, j, n, s = (Sym(x, integer=True) for x in 'ijns')
    lo = Declare('lo', 'index', n // 2 + s)                        # invariant in j and i: leaves both loops
    dep = Declare('hi', 'index', i + 1)                            # depends on i: leaves the j loop only
    read = Declare('at', 'index', ArrayRef(Sym('idx'), i))         # a memory read stays
    running = Declare('position', 'index', -1)                     # updated in the loop: stays
    select = SelectMax('best', 'position', ArrayRef(Sym('x'), j), j)
    inner = Loop(j, Sym('lo'), Sym('hi'), (lo, dep, read, running, select, Assign(Sym('acc'), j, '+=')))
    out = hoist_invariants((Loop(i, 0, n - 1, (inner,)),))
    assert out[0] == lo
    loop_i = out[1]
    assert loop_i.body[0] == dep and isinstance(loop_i.body[1], Loop)
    assert loop_i.body[1].body[:2] == (read, running)


def test_hoisting_keeps_collapsed_loops_perfectly_nested():
    from sympy import Symbol as Sym

    from codegen.ir import Assign, Declare, Loop, hoist_invariants
    i, j, k, n = (Sym(x, integer=True) for x in 'ijkn')
    bound = Declare('b', 'index', i * 2)
    nest = (Loop(i, 0, n, (Loop(j, 0, n, (Loop(k, 0, n, (bound, Assign(Sym('a'), k))),)),), parallel=2),)
    out = hoist_invariants(nest)
    j_loop = out[0].body[0]
    assert isinstance(j_loop, Loop) and len(out[0].body) == 1      # nothing between the collapsed i and j
    assert j_loop.body[0] == bound                                 # out of the k loop, inside the j loop


def test_renamed_gives_a_copy_its_own_variables_and_nothing_else():
    """Two copies of one chunk share a scope (lower_vector._paired): what a copy declares or loops over gets
    the suffix, everywhere it is used; the parameters and arrays it reads keep their names."""
    from codegen.ir import ArrayRef, Assign, Declare, Loop, renamed, walk
    i, n, acc, x, a = (Symbol(s, integer=True) for s in ('i', 'N', 'acc', 'x', 'A'))
    code = (Declare('acc', 'acc', 0),
            Loop(i, 0, n - 1, (Declare('x', 'acc', ArrayRef(a, i)), Assign(acc, x, '+='))),
            Assign(ArrayRef(a, n), acc))
    copy = renamed(code, '_1')
    assert {d.name for d in walk(copy) if isinstance(d, Declare)} == {'acc_1', 'x_1'}
    loop, = [m for m in walk(copy) if isinstance(m, Loop)]
    assert loop.var.name == 'i_1' and loop.upper == n - 1
    assert loop.body[0].value == ArrayRef(a, loop.var) and loop.body[1].target.name == 'acc_1'
    assert copy[-1] == Assign(ArrayRef(a, n), Symbol('acc_1', integer=True))
    assert renamed(code, '_1') == copy and renamed(code, '_2') != copy


def test_average_backward_has_a_copy_for_the_common_window_on_both_axes():
    """avg_pool2d_backward's gather at column stride 2: a copy for 3x3 windows padded by 1 at row stride 2
    (lower_vector._common_rows), both row residues in turn in each row pair (no loop over the residue)
    and each one's loops over its window rows marked for the compiler to unroll; not in 1-D (no row
    residue) nor 3-D (two)."""
    from sympy import Eq

    from codegen.ir import Branch, Loop, walk
    from codegen.spec import rule
    k0, p0, k1, p1, s0 = (Symbol(n, integer=True, positive=True) for n in ('K0', 'P0', 'K1', 'P1', 'S0'))
    wanted = {Eq(k0, 3), Eq(p0, 1), Eq(k1, 3), Eq(p1, 1), Eq(s0, 2)}
    copies = [n for n in walk(lower(rule('avg_pool2d_backward')).body) if isinstance(n, Branch)
              and {str(c) for c in n.conds} == {str(c) for c in wanted}]
    assert copies
    for copy in copies:
        loops = [n for n in walk(copy.then) if isinstance(n, Loop)]
        assert not any(str(n.var) == 'i0r' for n in loops)                     # the row residue unrolled
        rows = [n for n in loops if str(n.var).startswith('m0k')]
        assert rows and all(n.unroll == 2 for n in rows)                       # its window rows: a hint
        assert not any(n.unroll for n in loops if not str(n.var).startswith('m0k'))
    for other in ('avg_pool1d_backward', 'avg_pool3d_backward'):
        assert not any(isinstance(n, Loop) and n.unroll for n in walk(lower(rule(other)).body))


def test_average_backward_runs_a_pair_of_inside_rows_of_the_common_window_at_once():
    """In that copy, a pair of rows (both row residues) whose window rows are all inside runs as one
    (lower_vector._row_pairs): its chunks loop over the block's channels, loop over no tap (their bounds
    numbers there, the taps unrolled) and store both input rows (H1 apart) in pairs; the condition holds
    exactly where both rows exist and the output rows i0q and i0q + 1 do, by a direct count on every height
    from 4 to 13 (the other pairs run the rows in turn)."""
    from sympy import Eq

    from codegen.ir import Branch, Loop, VStorePair, walk
    from codegen.lower_vector import LANES, PEND
    from codegen.spec import rule
    k0, p0, k1, p1, s0 = (Symbol(n, integer=True, positive=True) for n in ('K0', 'P0', 'K1', 'P1', 'S0'))
    wanted = {str(c) for c in (Eq(k0, 3), Eq(p0, 1), Eq(k1, 3), Eq(p1, 1), Eq(s0, 2))}
    copies = [n for n in walk(lower(rule('avg_pool2d_backward')).body) if isinstance(n, Branch)
              and {str(c) for c in n.conds} == wanted]
    both = [n for copy in copies for n in walk(copy.then) if isinstance(n, Branch) and (PEND >= LANES) in n.conds
            and any(isinstance(m, Loop) and str(m.var).endswith('_b1') for m in walk(n.then))]
    assert copies and len(both) == len(copies)
    h0, h1, o0, row = (Symbol(n, integer=True, positive=True) for n in ('H0', 'H1', 'O0', 'i0q'))
    for branch in both:
        channels = [n for n in walk(branch.then) if isinstance(n, Loop) and str(n.var).endswith('_b1')]
        assert channels and not any(isinstance(m, Loop) for n in channels for m in walk(n.body))
        for n in channels:
            pairs = [m.flat for m in walk(n.body) if isinstance(m, VStorePair)]
            assert len(pairs) == 2 and (pairs[1] - pairs[0]).expand() == h1
        conds = [c for c in branch.conds if c != (PEND >= LANES)]
        for height in range(4, 14):
            outputs = (height + 2 - 3) // 2 + 1
            for q in range((height - 1) // 2 + 1):
                at = {h0: height, o0: outputs, Symbol('i0q', integer=True): q}
                holds = all(bool(c.xreplace(at)) for c in conds)
                assert holds == (2 * q + 1 <= height - 1 and q + 1 <= outputs - 1), (height, q)


def test_substitute_reaches_bodies_built_as_lists():
    """A max kernel's scalar element is a list of nodes: a specialized copy substitutes into it too."""
    from codegen.ir import Assign, Loop, substitute
    i, n, s = (Symbol(x, integer=True) for x in ('i', 'N', 'S'))
    nest = (Loop(i, 0, n, [Assign(Symbol('a'), s * i)]),)
    assert substitute(nest, {s: 2})[0].body == (Assign(Symbol('a'), 2 * i),)


def test_unrolled_copies_a_constant_loop_once_per_value():
    """ir.unrolled: a loop over the variable with numeric bounds becomes its body per value, the variable
    substituted and each copy's declarations renamed (valid C names for negative values too); a loop over
    another variable, or with a symbolic bound, stays."""
    from codegen.ir import Assign, Declare, Loop, unrolled, walk
    m, i, n = (Symbol(x, integer=True) for x in ('m', 'i', 'N'))
    body = (Declare('x', 'acc', 3 * m), Assign(Symbol('a'), Symbol('x', integer=True), '+='))
    out = unrolled((Loop(i, 0, n, (Loop(m, -1, 1, body),)),), m)
    assert isinstance(out[0], Loop) and out[0].var == i and not any(
        isinstance(node, Loop) and node.var == m for node in walk(out))
    declared = [node for node in walk(out) if isinstance(node, Declare)]
    assert [d.name for d in declared] == ['x_mn1', 'x_m0', 'x_m1'] and [d.value for d in declared] == [-3, 0, 3]
    assert all(d.name.isidentifier() for d in declared)
    assert [node.value.name for node in walk(out) if isinstance(node, Assign)] == ['x_mn1', 'x_m0', 'x_m1']
    kept = (Loop(m, 0, n, body),)
    assert unrolled(kept, m) == kept and unrolled((Loop(i, 0, 2, body),), m) == (Loop(i, 0, 2, body),)


def test_unrolled_takes_several_variables_nested():
    """ir.unrolled with two variables: nested loops over both become one copy per pair of values (the inner
    loop unrolled in each copy of the outer one, before the renaming), their declarations distinct."""
    from codegen.ir import Declare, Loop, unrolled, walk
    m, k = (Symbol(x, integer=True) for x in ('m', 'k'))
    out = unrolled((Loop(m, 0, 1, (Loop(k, -1, 1, (Declare('x', 'acc', 10 * m + k),)),)),), m, k)
    assert not any(isinstance(node, Loop) for node in walk(out))
    assert [d.value for d in out] == [-1, 0, 1, 9, 10, 11]
    assert len({d.name for d in out}) == 6


def test_fold_takes_the_branch_a_substitution_decided():
    from sympy import Eq
    from sympy import Symbol as Sym

    from codegen.ir import Assign, Branch, Loop, fold, substitute
    s, t, n, i = (Sym(x, integer=True) for x in 'stni')
    fast, slow = (Assign(Sym('a'), 1),), (Assign(Sym('a'), 2),)
    nest = (Loop(i, 0, n, (Branch((n > 4, Eq(s, 1)), fast, slow),)),)
    assert fold(substitute(nest, {s: 2}))[0].body == slow                      # a false condition: the other code
    assert fold(substitute(nest, {s: 1}))[0].body == (Branch((n > 4,), fast, slow),)   # a true one drops out
    assert fold(nest)[0].body == nest[0].body                                  # undecided: kept
    assert fold(nest, frozenset({Eq(s, 1)}))[0].body == slow                   # a case excluded where it is
    assert fold(nest, frozenset({Eq(s, 1), Eq(t, 1)}))[0].body == nest[0].body  # excluded only with t = 1 too


def _scatter_probe(conds) -> KernelRule:
    """y[c, i] = sum_{o, m} x[c, o] [i = o + m - 1] (a window of K taps sent from each o to its inputs)."""
    from sympy import KroneckerDelta
    o = Symbol('o', integer=True)
    term = ZSum.make((o, M), X[C, o] * KroneckerDelta(I, o + M - 1), [o, SIZE - 1 - o, M, WINDOW - 1 - M] + conds)
    return probe(term, 'avg_pool')


def test_scatter_writes_where_the_taps_point_once_proved_inside():
    from codegen.ir import Kernel
    from codegen.lower import scatter_targets
    o = Symbol('o', integer=True)
    rule = _scatter_probe([o + M - 1, SIZE - o - M])      # 0 <= o + m - 1 <= n - 1
    assert scatter_targets(rule) == ((I, o + M - 1),)
    kernel = lower(rule)
    assert isinstance(kernel, Kernel) and kernel.failures == ()     # proved: no run-time check to report


def test_scatter_refuses_a_write_the_constraints_do_not_keep_inside():
    o = Symbol('o', integer=True)
    with pytest.raises(LoweringError, match='may leave'):
        lower(_scatter_probe([o + M - 1]))                   # the upper end unproved: o + m - 1 may reach n


def test_pool_backward_kernels_scatter_and_only_max_checks_its_data():
    from codegen.lower import scatter_targets
    from codegen.spec import rule
    for dims in (1, 2, 3):
        avg, mx = rule(f'avg_pool{dims}d_backward'), rule(f'max_pool{dims}d_backward')
        assert len(scatter_targets(avg)) == dims and len(scatter_targets(mx)) == 1
        assert lower(avg).failures == () and 'indices' in lower(mx).failures[0][1]


def test_max_pool_forward_runs_lanes_of_outputs_when_positions_fit_int32():
    """The vector path of max pooling: the selector rule lane by lane (VSelectMax), guarded by the plane
    fitting int32 positions, the scalar nest otherwise and without BP_VECTOR."""
    from codegen.ir import Branch, IfDef, SelectMax, VSelectMax
    from codegen.ir import walk
    from codegen.spec import rule
    kernel = lower(rule('max_pool2d'))
    ifdef = next(n for n in kernel.body if isinstance(n, IfDef))
    branch = ifdef.then[0]
    assert isinstance(branch, Branch) and str(branch.conds[0]) == 'H0*H1 <= 2147483647'
    assert any(isinstance(n, VSelectMax) for n in walk(branch.then))
    assert not any(isinstance(n, VSelectMax) for n in (*walk(branch.otherwise), *walk(ifdef.otherwise)))
    assert any(isinstance(n, SelectMax) for n in walk(ifdef.otherwise))
    # every scalar selector starts from its window's first candidate: no "nothing selected yet" test per tap
    assert all(n.started for n in walk(kernel.body) if isinstance(n, SelectMax))


@pytest.mark.parametrize('dims', [1, 2, 3])
def test_numpy_bias_gradient_is_one_reduction_into_the_output(dims):
    """A sum of one array over some of its axes, the others the output's in order: one ufunc reduction
    (the general contraction's label logic cost 4 of the tiny bias gradient's 7 us)."""
    from codegen.spec import rule
    lines = lower_numpy(rule(f'conv{dims}d_bias')).lines
    axes = ', '.join(['0'] + [str(3 + k) for k in range(dims)])
    assert lines[-1] == f'numpy.add.reduce(grad_output_r, axis=({axes}), out=grad_bias_r)'
    assert not any('runtime.contract' in line for line in lines)


def test_interior_facts_decide_a_windows_clipped_size():
    """within(): Min/Max replaced only when the facts order their arguments (exact LP)."""
    from sympy import Max, Min
    from derive.zsum import within
    o, H, K, P = (Symbol(n, integer=True) for n in 'oHKP')
    size = Min(K - 1, H + P - o - 1) - Max(0, P - o) + 1          # taps of window o inside [0, H)
    inside = [o - P, H - 1 - (o + K - 1 - P), P, K - 1]            # every tap of the window in the input
    assert within(size, inside) == K
    assert within(size, inside[1:]) == K - Max(0, P - o)     # left end unknown: its Max stays
    assert within(size, []) == size


def test_parallel_loops_are_outlined_and_run_with_or_without_a_region():
    """Each parallel loop is a function of its own: called inside `omp parallel` above the work threshold,
    plainly below it (no region to start and end), its loop shared out by `omp for`; a local it reads is
    a parameter; a loop ORing flags together (max-pool backward) keeps its `parallel for ... reduction`."""
    import re
    from codegen.render import c_files
    from codegen.spec import rule
    files = c_files([rule('conv1d'), rule('max_pool1d_backward')])
    text, pool = files['c/bpgen_conv1d.c'], files['c/bpgen_pool.c']
    parts = re.findall(r'^static void (bpgen_conv1d_f(?:32|64)_part\d+)\((.*)\)$', text, re.M)
    assert len(parts) >= 4
    for name, _ in parts:
        assert text.count(f'{name}(') == 4   # its definition, the call in a region, the two plain calls
        assert re.search(rf'#pragma omp parallel\n +{name}\(', text)
    assert 'omp parallel for' not in text and text.count('#pragma omp for schedule(static)') == len(parts)
    extra = [(name, signature) for name, signature in parts if signature.endswith('int64_t cstep')]
    assert extra and all(re.search(rf'{name}\(.*, cstep\);', text) for name, _ in extra)
    assert not re.search(r'_part\d+\(', pool) and re.search(r'omp parallel for .* reduction\(\|:invalid\)', pool)


def test_window_sums_take_strided_taps_from_row_registers_only_when_zero_padding_is_exact():
    """Average pooling forward (one array, its column constraints the input's bounds: claim pool.avg-rows)
    sums its rows into registers and takes each tap by permutes (VTaps), on AVX-512 and at a stride of 2
    or more (max pooling's selections at 3 or more, and at 2 in the copy for a 3-wide undilated window,
    where the two rows' border chunks take them with constant offsets: its tap loops unrolled); a
    convolution (two arrays) does not, nor a window sum with a constraint of its own."""
    from dataclasses import replace as replaced

    from sympy import Eq

    from codegen.ir import Branch, VTaps, walk
    from codegen.lower_vector import LANES, VREGS
    from codegen.spec import rule
    for dims in (1, 2, 3):
        body = lower(rule(f'avg_pool{dims}d')).body
        stride = Symbol(f'S{dims - 1}', integer=True, positive=True)
        guarded = [n for n in walk(body) if isinstance(n, Branch) and (VREGS >= 32) in n.conds]
        assert guarded and all(_has_taps(n.then) for n in guarded)
        unit = [n for n in walk(body) if isinstance(n, Branch) and Eq(stride, 1) in n.conds]
        assert not any(_has_taps(n.then) for n in unit)   # the stride-1 copy: one unaligned load a tap
        assert any((stride >= 2) in n.conds for n in guarded)   # and the general copy tests it
        max_pool = rule(f'max_pool{dims}d')
        window = max_pool.window[-1]
        # the copy for the column window alone (in 2-D the strips' copy fixes the row axis's window too)
        common = [n for n in walk(lower(max_pool).body) if isinstance(n, Branch) and Eq(stride, 2) in n.conds
                  and Eq(window, 3) in n.conds and sum(isinstance(c, Eq) for c in n.conds) == 3]
        assert len(common) == 1 and {VREGS >= 32, LANES >= 16} <= set(common[0].conds)
        (copy,), general = common, common[0].otherwise
        selections = [n for n in walk(general) if isinstance(n, Branch) and (VREGS >= 32) in n.conds]
        assert selections and all((stride >= 3) in n.conds and _has_taps(n.then) for n in selections)
        taps = [e for n in walk(copy.then) for e in (getattr(n, 'value', None),) if hasattr(e, 'atoms')
                for e in e.atoms(VTaps)]
        assert taps and all(t.args[3].is_Integer for t in taps)   # unrolled: each tap's offset a constant
        assert {int(t.args[3]) for t in taps} == {0, 1, 2}
    assert not _has_taps(lower(rule('conv2d')).body)
    avg = rule('avg_pool1d')
    (term, name), = avg.terms
    o, m = avg.index[-1], term.vars[0]
    own = replaced(avg, terms=((ZSum.make(term.vars, term.body, list(term.conds) + [o - m], term.divs), name),))
    assert not _has_taps(lower(own).body)


@pytest.mark.parametrize('name', ['conv1d', 'conv2d', 'conv2d_input', 'conv2d_weight', 'conv3d_weight'])
def test_register_tiles_leave_vector_registers_for_the_loads(name):
    """The accumulators of a tile over several channels (v_i_j, i > 0: output channel i, then the chunk of
    positions or the input channel j): with 32 vector registers (AVX-512) 8 x 2 = 16 of them; with 16 (AVX2,
    SSE) 4 x 3 = 12, so that a tap's loads keep registers of their own (8 x 2 spilled on Zen 2)."""
    import re

    from codegen.ir import Declare, fold, substitute, walk
    from codegen.lower_vector import VREGS
    from codegen.spec import rule
    body = lower(rule(name)).body
    for registers, (channels, columns) in ((16, (4, 3)), (32, (8, 2))):
        declared = [n.name for n in walk(fold(substitute(body, {VREGS: registers}))) if isinstance(n, Declare)]
        grid = {tuple(map(int, d.split('_')[1:])) for d in declared if re.fullmatch(r'v_\d+_\d+', d)}
        assert {(i, j) for i, j in grid if i > 0} == {(i, j) for i in range(1, channels) for j in range(columns)}


def _has_taps(nodes) -> bool:
    """Whether an expression held by the nodes takes window taps from row registers (VTaps)."""
    from codegen.ir import VTaps, walk
    values = (getattr(n, field, None) for n in walk(nodes) for field in ('value', 'target'))
    return any(value.has(VTaps) for value in values if hasattr(value, 'has'))


def test_numpy_tap_loops_compute_each_range_in_the_loop_of_its_innermost_tap():
    """conv2d_input's col2im: the rows' range depends on the row tap only, so it is computed in that loop,
    once per row tap, not once per tap (tiny input gradient 47.7 -> 45.3 us)."""
    from codegen.spec import rule
    lines = [line.strip() for line in lower_numpy(rule('conv2d_input')).lines]
    rows, cols = lines.index('for m0 in range(0, K0 - 1 + 1):'), lines.index('for m1 in range(0, K1 - 1 + 1):')
    assert lines[rows + 1].startswith('t0_lo, t0_hi = ') and rows + 1 < cols
    assert lines[cols + 1].startswith('t1_lo, t1_hi = ')
    assert lines[cols + 2] == 'if t0_lo <= t0_hi and t1_lo <= t1_hi:'


@pytest.mark.parametrize('name', ['conv1d', 'conv2d', 'conv2d_input', 'conv3d_input'])
def test_padded_rows_leave_no_chunk_guarded(name):
    """Where a convolution's rows have zero padding, the tiles of several chunks have a variant that copies
    the rows they read into a zero-padded stack array: there, no vector load reads the padded array's
    source, no chunk is lane-guarded (no branch on the interior vlo..vhi), and each padded row is copied
    once per row of outputs, outside the loops over register blocks; the unpadded arm keeps its guards."""
    from codegen.ir import Branch, Declare, Loop, VLoad, VLoadMasked, walk
    from codegen.lower_vector import PAD_MAX_ELEMENTS, VLO
    from codegen.spec import rule
    kernel_rule = rule(name)
    source = kernel_rule.inputs[0].name
    padded = [n for n in walk(lower(kernel_rule).body) if isinstance(n, Branch) and n.then
              and isinstance(n.then[0], Declare) and n.then[0].ctype == 'buf']
    assert padded
    for branch in padded:
        assert any(c.has(PAD_MAX_ELEMENTS) for c in branch.conds if hasattr(c, 'has'))
        loads = [v for n in walk(branch.then) if isinstance(n, Declare) for v in [n.value]
                 if isinstance(v, (VLoad, VLoadMasked))]
        arrays = {str(v.args[0]) for v in loads}
        assert 'pad' in arrays and source not in arrays
        guards = [n for n in walk(branch.then) if isinstance(n, Branch) and any(c.has(VLO) for c in n.conds)]
        assert not guards
        blocks = [n for n in branch.then if isinstance(n, Loop) and n.var.name.endswith('_b')]
        assert blocks, 'the copy sits outside the register blocks'
        assert any(isinstance(n, Branch) and any(c.has(VLO) for c in n.conds) for n in walk(branch.otherwise))


def _average_backward(dims):
    """The lowered avg_pool{dims}d_backward split into its gather (one divisor, per residue: the rule's
    variant) and its scatter form."""
    from codegen.ir import Branch, walk
    from codegen.spec import rule
    average = rule(f'avg_pool{dims}d_backward')
    (when, _), = average.variants
    branch, = [n for n in walk(lower(average).body) if isinstance(n, Branch) and n.conds == (when,)]
    return branch.then, branch.otherwise


@pytest.mark.parametrize('dims', [1, 2, 3])
def test_tiling_average_backward_stores_the_two_taps_of_stride_2_interleaved(dims):
    """Windows that tile the input with stride 2 along the vector: a variant under S == 2 (the cover makes
    the tap's range as long as S) stores each chunk's share for both taps of that axis in one pair (VStorePair):
    no loop over that tap around it, no stride-2 store but in the partial chunks (each tap's own, masked)."""
    from codegen.ir import Branch, Loop, VStore, VStorePair, walk
    _, scatter = _average_backward(dims)
    stride, tap = Symbol(f'S{dims - 1}', integer=True, positive=True), Symbol(f'm{dims - 1}', integer=True)
    pairs = [n for n in walk(scatter) if isinstance(n, VStorePair)]
    paired = [n for n in walk(scatter) if isinstance(n, Branch) and Eq(stride, 2) in n.conds
              and any(isinstance(m, VStorePair) for m in walk(n.then))]
    assert len(paired) == 1
    branch, = paired
    assert [n for n in walk(branch.then) if isinstance(n, VStorePair)] == pairs
    assert pairs and all(n.first == n.second for n in pairs)   # an average's share does not depend on the tap
    assert all(n.stride == 2 and n.mask is not None for n in walk(branch.then) if isinstance(n, VStore))
    over_tap = [n for n in walk(branch.then) if isinstance(n, Loop) and n.var == tap]
    assert over_tap and not any(isinstance(m, VStorePair) for n in over_tap for m in walk(n.body))


@pytest.mark.parametrize('dims', [1, 2, 3])
def test_tiling_max_backward_stores_per_tap_and_falls_back_to_the_scatter(dims):
    """Where the windows tile the input (pool.max-tiling), the max backward's vector path converts each chunk's
    selectors once (VSelectors), stores per tap the gradient where they name it (VMatch, VKeep: no adds, no
    zeroing), at stride 2 both taps of a row at once, and reports in MISSING a window that matched no tap;
    then the selector scatter runs, the one that runs elsewhere and in the scalar build.  Its flag is declared
    once, before the copies."""
    from codegen.ir import Assign, Declare, Guard, IfDef, VAdd, VKeep, VMatch, VSelectors, VStorePair, walk
    from codegen.lower import INVALID, MISSING
    from codegen.spec import rule
    mx = rule(f'max_pool{dims}d_backward')
    (when, _), = mx.variants
    kernel = lower(mx)
    assert isinstance(kernel.body[0], Declare) and kernel.body[0].name == INVALID
    ifdef, = [n for n in kernel.body if isinstance(n, IfDef)]
    branch, = ifdef.then
    assert branch.conds == (when,) and branch.otherwise == ifdef.otherwise
    fallback = branch.then[-1]
    assert isinstance(fallback, Guard) and fallback.body == ifdef.otherwise and MISSING in str(fallback.conds[0])
    checked = branch.then[:-1]
    values = [n.value for n in walk(checked) if isinstance(n, Declare)]
    assert any(isinstance(v, VSelectors) for v in values) and any(isinstance(v, VMatch) for v in values)
    assert [n for n in walk(checked) if isinstance(n, Assign) and str(n.target) == MISSING]
    assert not [n for n in walk(checked) if isinstance(n, VAdd)]
    assert not [n for n in walk(checked) if isinstance(n, Assign) and n.value == 0 and 'grad_input' in str(n.target)]
    pairs = [n for n in walk(checked) if isinstance(n, VStorePair)]
    assert pairs and all(isinstance(n.first, VKeep) and n.first != n.second for n in pairs)


@pytest.mark.parametrize('dims', [1, 2, 3])
def test_residue_gather_stores_both_residues_of_stride_2_interleaved(dims):
    """The gather per residue (codegen.split) at stride 2 along the vector: under S == 2 the rows of both
    residues run at once, each chunk storing residue 0's values at the even and residue 1's at the odd
    elements in one VStorePair (its own values for each: a residue's taps differ); the residue loop that
    follows stores masked chunks only (an odd width's last position), the rows shorter than a vector
    aside; only the stride-2 copies have pairs.  The vector rows run in memory order: each quotient loop
    encloses its residue's."""
    from codegen.ir import Branch, Loop, VStore, VStorePair, fold, walk
    from codegen.lower_vector import LANES, PEND, V0
    gather, _ = _average_backward(dims)
    common = {c for n in walk(gather) if isinstance(n, Branch) and len(n.conds) == 5 and all(isinstance(c, Eq)
                                                                                             for c in n.conds)
              for c in n.conds}
    gather = fold(gather, frozenset(common)) if common else gather   # the common window's copy: its own test
    few = {c for n in walk(gather) if isinstance(n, Branch) for c in n.conds if str(c) == 'C < 8'}
    gather = fold(gather, frozenset(few))   # fewer planes than a block: rows in blocks, residues outside (its test:
    #                                         test_split_rules_run_one_value_tiles_in_row_blocks)
    stride = Symbol(f'S{dims - 1}', integer=True, positive=True)
    residue = Symbol(f'i{dims - 1}r', integer=True)
    paired = [n for n in walk(gather) if isinstance(n, Branch) and n.conds == (Eq(stride, 2),)]
    assert paired and all(any(isinstance(m, VStorePair) for m in walk(n.then)) for n in paired)
    pairs = [n for n in walk(gather) if isinstance(n, VStorePair)]
    assert pairs == [m for n in paired for m in walk(n.then) if isinstance(m, VStorePair)]
    assert all(n.first != n.second and n.flat.coeff(V0) == 2 and residue not in n.flat.free_symbols for n in pairs)
    rows = [n for n in walk(gather) if isinstance(n, Branch) and n.conds == (PEND >= LANES,)]
    assert rows and pairs == [m for n in rows for m in walk(n.then) if isinstance(m, VStorePair)]
    for branch in rows:
        left = [n for n in walk(branch.then) if isinstance(n, Loop) and n.var == residue]
        assert left and all(m.mask is not None for n in left for m in walk(n.body) if isinstance(m, VStore))
        assert any(isinstance(n, Loop) and n.var == residue for n in branch.otherwise)
    def vector(n):
        return any(isinstance(m, (VStore, VStorePair)) for m in walk(n.body))
    for d in range(dims - 1):   # the other axes' rows in memory order
        q, r = Symbol(f'i{d}q', integer=True), Symbol(f'i{d}r', integer=True)
        outer = [n for n in walk(gather) if isinstance(n, Loop) and n.var == q and vector(n)]
        assert outer and all(any(isinstance(m, Loop) and m.var == r for m in walk(n.body)) for n in outer)
        assert not any(isinstance(m, Loop) and m.var == q and vector(m) for n in walk(gather)
                       if isinstance(n, Loop) and n.var == r for m in walk(n.body))


def test_lane_free_factor_is_exact_where_its_condition_holds():
    """_lane_free: where its condition holds at both ends of a chunk, the factor is the same at every lane
    and equals the scalar it returns -- checked on a grid of the average's divisor (with and without the
    padding counted, a ceil-mode window past the padding); the first chunk of pool3 with the padding
    counted is lane-free, without it not; a non-affine dependence has no such form."""
    from itertools import product
    from sympy import Max, Min, Ne, Piecewise
    from codegen.lower_vector import _lane_free
    o, H, K, P, S_, cip = (Symbol(n, integer=True) for n in ('o', 'H', 'K', 'P', 'S', 'cip'))
    whole = Min(K - 1, H + 2 * P - S_ * o - 1) + 1
    inside = Min(K - 1, H + P - S_ * o - 1) - Max(0, P - S_ * o) + 1
    factor = Piecewise((1 / (K * whole), Ne(cip, 0)), (1 / (K * inside), True))
    cond, value = _lane_free(factor, o)
    assert o not in value.free_symbols
    checked = 0
    for h, k, p, s, c in product(range(3, 12), range(1, 5), range(0, 3), range(1, 4), range(2)):
        if 2 * p > k:
            continue
        at = {H: h, K: k, P: p, S_: s, cip: c}
        for j in range((h + 2 * p - k) // s + 2):   # one ceil-mode window more
            if bool(cond.xreplace({**at, o: j})):
                assert factor.xreplace({**at, o: j}) == value.xreplace(at)
                checked += 1
    assert checked > 500
    pool3 = {H: 56, K: 3, P: 1, S_: 2}
    assert bool(cond.xreplace({**pool3, cip: 1, o: 0})) and not bool(cond.xreplace({**pool3, cip: 0, o: 0}))
    assert _lane_free(1 / Min(K, o * o), o) is None


def test_border_chunks_of_an_average_take_one_divisor_where_their_windows_are_whole():
    """The average forward's chunks outside the interior compute the divisor per lane only where the
    windows' sizes differ across the chunk: a branch takes one scalar (VSplat) where _lane_free's
    condition holds at the chunk's two ends (a chunk at v0, or in the strips at vrest or O1 - LANES)."""
    from codegen.ir import Assign, Branch, Lanes, VSplat, walk
    from codegen.spec import rule
    kernel = lower(rule('avg_pool2d'))
    branches = [n for n in walk(kernel.body) if isinstance(n, Branch) and len(n.otherwise) == 1
                and isinstance(n.otherwise[0], Lanes)]
    assert branches
    for b in branches:
        assert b.otherwise[0].declared and isinstance(b.then[0], Assign) and isinstance(b.then[0].value, VSplat)
        assert all({'v0', 'vrest', 'O1'} & {str(x) for x in c.free_symbols} for c in b.conds)


def test_hoisted_bounds_of_sibling_loops_over_one_variable_get_their_own_names():
    """Loops over the same variable side by side in one block (an interior and its edges), each with a bound
    computed with a division: each bound is declared under a name of its own (C refuses a redefinition)."""
    from codegen.ir import Assign, CeilDiv, Declare, FloorDiv, Loop, hoist_invariants
    o, r, n, s = (Symbol(x, integer=True) for x in 'orns')
    add = (Assign(Symbol('acc'), o, '+='),)
    row = (Loop(o, 0, CeilDiv(r, s) - 1, add), Loop(o, CeilDiv(r, s), FloorDiv(n - r, s), add),
           Loop(o, FloorDiv(n - r, s) + 1, n, add))
    body = hoist_invariants((Loop(r, 0, n, row),))[0].body
    assert [d.name for d in body if isinstance(d, Declare)] == ['o_hi', 'o_lo', 'o_hi1', 'o_lo1']
    assert [(str(x.lower), str(x.upper)) for x in body if isinstance(x, Loop)] == [
        ('0', 'o_hi'), ('o_lo', 'o_hi1'), ('o_lo1', 'n')]


def _window_arms(name) -> list:
    """The arms of the lowered kernel ``name`` that run under a window of 3 on every axis."""
    from codegen.ir import Branch, walk
    from codegen.spec import rule
    kernel_rule = rule(name)
    window = [Eq(k, 3) for k in kernel_rule.window]
    return [n.then for n in walk(lower(kernel_rule).body)
            if isinstance(n, Branch) and all(w in n.conds for w in window)]


def _outer_form(name):
    """The arm of the lowered kernel ``name`` that runs the outer-product form (codegen.lower_outer), or None."""
    from codegen.ir import Declare, walk
    arms = [a for a in _window_arms(name) if any(isinstance(n, Declare) and n.name == 'pack' for n in walk(a))]
    return arms[0] if arms else None


@pytest.mark.parametrize('name', ['conv2d_weight', 'conv3d_weight'])
def test_outer_product_form_reads_the_upstream_gradient_once_into_its_pack(name):
    """The weight gradient's outer-product form: the upstream gradient read only by the pack's copy, every
    vector loaded from the pack, the input read as broadcast scalars; the positions whose taps are all
    inside run a loop with no check at all, every other position runs each tap under its checks."""
    from codegen.ir import Assign, Declare, Guard, Loop, VLoad, VSplat, walk
    arm = _outer_form(name)
    assert arm is not None
    nodes = list(walk(arm))
    assert {(n.name, n.ctype) for n in nodes if isinstance(n, Declare) and n.ctype in ('buf', 'vbuf')} == {
        ('pack', 'buf'), ('parked', 'vbuf')}
    loads = [n.value for n in nodes if isinstance(n, Declare) and isinstance(n.value, VLoad)]
    assert loads and {str(v.args[0]) for v in loads} == {'pack'}
    copies = [n for n in nodes if isinstance(n, Assign) and str(n.target).startswith('ArrayRef(pack')
              and n.value != 0]
    assert copies and all(str(c.value.args[0]) == 'grad_output' for c in copies)
    steps = [n for n in nodes if isinstance(n, Assign) and n.op == '+=']
    assert steps and all(s.value.atoms(VSplat) for s in steps)
    assert not any('grad_output' in str(s.value) for s in steps)
    positions = [n for n in nodes if isinstance(n, Loop) and n.body and isinstance(n.body[0], Declare)
                 and n.body[0].name == 'gv']
    plain = [n for n in positions if all(isinstance(b, Assign) for b in n.body[1:])]
    checked = [n for n in positions if all(isinstance(b, Guard) and b.conds for b in n.body[1:])]
    taps = 3 ** (int(name[4]))
    assert plain and checked and len(plain) + len(checked) == len(positions)
    assert all(len(n.body) - 1 in (taps, 2 * taps) for n in positions)   # a block of 1 or 2 input channels


@pytest.mark.parametrize('name', ['conv1d_weight', 'conv2d_input', 'conv2d'])
def test_outer_product_form_is_only_for_weight_gradients_of_two_or_more_axes(name):
    assert _outer_form(name) is None


@pytest.mark.parametrize('name', ['conv2d', 'conv2d_input', 'conv3d'])
def test_row_blocks_of_a_3_wide_window_unroll_their_taps_and_share_their_rows(name):
    """One value of the blocked index a tile (one output channel: tiny forward, depthwise convolutions) runs
    rows in blocks; under a window of 3 on every axis and unit strides and dilations along the axes read,
    a block of UNROLLED_ROWS rows has the taps of its rows' axis and the next unrolled inside the summed
    channels, and a row's tap reads the same row as the next row's tap before it by the same expression:
    8 rows x 3 taps down read 10 rows, not 24 (one load each, once the compiler merges them).  The taps of
    an axis before the rows (3d: depth) stay a loop (their range depends on the position)."""
    from codegen.ir import Assign, Branch, Declare, Loop, VLoad, walk
    from codegen.lower_vector import UNROLLED_ROWS
    from codegen.spec import rule
    dims = len(rule(name).window)
    arms = [a for a in _window_arms(name) if not any(isinstance(n, Declare) and n.name == 'pack' for n in walk(a))]
    assert arms, 'no run-time copy for a window of 3'
    chunks = [n.then for a in arms for n in walk(a) if isinstance(n, Branch) and 'v0' in str(n.conds)
              and sum(isinstance(m, Assign) and str(m.target).startswith('v_') for m in walk(n.then))
              == UNROLLED_ROWS * 9]
    assert chunks   # the block's chunks inside the row's interior
    for chunk in chunks:
        assert len([n for n in walk(chunk) if isinstance(n, Loop) and str(n.var).startswith('m')]) == dims - 2
        loads = {str(n.value) for n in walk(chunk) if isinstance(n, Declare) and isinstance(n.value, VLoad)}
        assert len(loads) == (UNROLLED_ROWS + 2) * 3


@pytest.mark.parametrize('name, blocked, rows, unless', [
    ('conv2d_input', 'CG', 'i0q_b', None), ('conv3d_input', 'CG', 'i1q_b', None),
    ('avg_pool2d_backward', 'C', 'i0q_b', 'Ne(S1, 2)')])
def test_split_rules_run_one_value_tiles_in_row_blocks(name, blocked, rows, unless):
    """A residue split (stride S >= 2 left a parameter, codegen.split) whose blocked index is shorter than its
    block (depthwise convolutions: one channel a group) runs its rows in blocks of ROW_BLOCK, the row index the
    quotient before the vector's residue (the residues are looped outside), one accumulator chain a row --
    not where the residue pairs of an average pooling's gather run (stride 2 along the vector)."""
    from codegen.ir import Branch, Loop, walk
    from codegen.lower_vector import ROW_BLOCK
    from codegen.spec import rule
    body = lower(rule(name)).body
    arms = [n for n in walk(body) if isinstance(n, Branch) and f'{blocked} < 8' in map(str, n.conds)]
    assert arms and all(({str(c) for c in n.conds} - {f'{blocked} < 8'}) == ({unless} if unless else set())
                        for n in arms)
    general = [a for a in arms if any(isinstance(n, Loop) and str(n.var) in ('i0r', 'i1r', 'i2r')
                                      and 'S' in str(n.upper) for n in walk(a.then))]   # residues 0 .. S - 1
    assert general, 'no row blocks at a stride left a parameter (only in the copy for stride 1)'
    assert any(isinstance(n, Loop) and str(n.var) == rows and n.step == ROW_BLOCK for a in general
               for n in walk(a.then))


def test_max_forward_strips_carry_a_window_row_and_read_two_a_row():
    """max_pool2d's copy for 3x3 stride-2 undilated windows on both axes (lower_vector._strip_rows): each
    output row of a strip loads two window rows per chunk (three vectors each), not three, selects along
    each (two column taps after the first, the last a lane shift of the first) and then among the rows
    (two selections of position vectors), and hands its last window row on as the next row's first;
    strips of two chunks, then two or one; not in 1-D (no row axis) nor 3-D (two)."""
    from codegen.ir import Assign, Branch, Declare, Loop, VLoadOr, VNext, VSelectMax, VStore, walk
    from codegen.spec import rule
    wanted = {f'Eq({p}{a}, {v})' for a in (0, 1) for p, v in (('S', 2), ('K', 3), ('D', 1))}
    copies = [n for n in walk(lower(rule('max_pool2d')).body) if isinstance(n, Branch)
              and wanted <= {str(c) for c in n.conds}]
    assert len(copies) == 1
    rows = [n for n in walk(copies[0].then) if isinstance(n, Loop) and str(n.var) == 'o0'
            and any(isinstance(m, VSelectMax) and m.lanes for m in n.body)]
    assert len(rows) == 3
    widths = []
    for row in rows:
        chunks = len([n for n in row.body if isinstance(n, VStore)])
        widths.append(chunks)
        declared = [n.value for n in walk(row.body) if isinstance(n, Declare)]
        selects = [n for n in walk(row.body) if isinstance(n, VSelectMax)]
        assert not any(isinstance(n, Loop) for n in walk(row.body))
        assert len([v for v in declared if isinstance(v, VLoadOr)]) == 6 * chunks
        assert len([v for v in declared if isinstance(v, VNext)]) == 2 * chunks
        assert [s.lanes for s in selects].count(False) == 4 * chunks
        assert [s.lanes for s in selects].count(True) == 2 * chunks
        carried = [(str(n.target), str(n.value)) for n in row.body if isinstance(n, Assign) and str(n.target)[0] == 'c']
        assert carried == [(f'c{k}{x}', f'h2_{k}{x}') for k in range(chunks) for x in 'vp']
    assert sorted(widths) == [1, 2, 2]
    for other in ('max_pool1d', 'max_pool3d'):
        assert not any(isinstance(n, VSelectMax) and n.lanes for n in walk(lower(rule(other)).body))


def test_average_forward_strips_carry_a_window_row_sum():
    """avg_pool2d's copy for 3-wide stride-2 windows on both axes (lower_vector._sum_strips): every output
    row of a strip loads two window rows per chunk (three vectors each, masked by the input's rows too),
    sums each row's taps (the last a lane shift of the first), adds the carried row's sum, and hands its
    last window row's sum on; strips of two chunks, then two or one; no other copy in 1-D or 3-D."""
    from codegen.ir import Assign, Branch, Declare, Loop, VLoadMasked, VNext, VStore, walk
    from codegen.spec import rule
    wanted = {'Eq(S0, 2)', 'Eq(K0, 3)', 'Eq(K1, 3)'}   # (S1 = 2 in the stride-2 copy it lies in)
    copies = [n for n in walk(lower(rule('avg_pool2d')).body) if isinstance(n, Branch)
              and wanted <= {str(c) for c in n.conds}]
    assert len(copies) == 1
    rows = [n for n in walk(copies[0].then) if isinstance(n, Loop) and str(n.var) == 'o0']
    widths = []
    for row in rows:
        chunks = len([n for n in walk(row.body) if isinstance(n, VStore)]) // 2   # (a store for each divisor form)
        widths.append(chunks)
        declared = [n.value for n in walk(row.body) if isinstance(n, Declare)]
        assert len([v for v in declared if isinstance(v, VLoadMasked)]) == 6 * chunks
        assert len([n for n in walk(row.body) if isinstance(n, Assign) and n.value.has(VNext)]) == 2 * chunks
        carried = [(str(n.target), str(n.value)) for n in row.body if isinstance(n, Assign) and str(n.target)[0] == 'c']
        assert carried == [(f'c{k}s', f'h2_{k}s') for k in range(chunks)]
    assert sorted(widths) == [1, 2, 2]
    for other in ('avg_pool1d', 'avg_pool3d'):
        assert not any(isinstance(n, Assign) and str(n.target) == 'c0s' for n in walk(lower(rule(other)).body))


@pytest.mark.parametrize('dims', [1, 2, 3])
def test_average_forward_has_a_copy_for_each_row_tap_width(dims):
    """The average forward's nest has a copy of its own for a stride-2 column window 3 or 2 wide
    (lower_vector.ROW_TAP_WIDTHS, _nest_for), its taps constant offsets taken in turn (tap 2 of a
    3-wide window a lane shift of tap 0), and the general nest keeps a tap loop for the others."""
    from sympy import Eq

    from codegen.ir import Branch, VNext, VTaps, walk
    from codegen.spec import rule
    body = lower(rule(f'avg_pool{dims}d')).body
    window = Symbol(f'K{dims - 1}', integer=True, positive=True)
    for width in (3, 2):
        copies = [n for n in walk(body) if isinstance(n, Branch) and Eq(window, width) in n.conds]
        assert copies
        exprs = [e for n in walk(copies[0].then) for e in (getattr(n, 'value', None),) if hasattr(e, 'atoms')]
        offsets = {int(t.args[3]) for e in exprs for t in e.atoms(VTaps)}
        assert offsets == {0, 1}   # (a 3-wide window's tap 2: VNext of tap 0)
        assert any(e.atoms(VNext) for e in exprs) == (width == 3)
