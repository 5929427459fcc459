"""codegen/stack.py: the bound of the stack arrays a kernel's thread holds, read off its loop nest."""
import pytest
from sympy import Max, Or, Piecewise, Symbol, symbols

from codegen.ir import Assign, Branch, Declare, IfDef, Loop
from codegen.stack import LANES, STACK, stack_nodes

n, m = symbols('n m', integer=True, positive=True)
i, j = symbols('i j', integer=True)


def bound_of(nodes):
    """The value stack_nodes assigns, for a nest with no branch outside its loops."""
    (assign,) = stack_nodes(tuple(nodes))
    assert isinstance(assign, Assign) and assign.target == STACK
    return assign.value


def test_a_loop_takes_the_largest_size_over_its_range():
    shrinking = Loop(i, 0, n - 1, (Declare('pad', 'buf', 2 * (n - i)),))
    growing = Loop(i, 0, n - 1, (Declare('pad', 'buf', i + 1),))
    assert bound_of([shrinking]) == Max(STACK, 2 * n)
    assert bound_of([growing]) == Max(STACK, n)


def test_arrays_of_one_block_add_up_and_sequential_blocks_take_the_larger():
    block = Loop(i, 0, n - 1, (Declare('a', 'buf', n), Declare('b', 'vbuf', 3),
                               Loop(j, 0, 1, (Declare('c', 'buf', m),))))
    later = Loop(i, 0, n - 1, (Declare('d', 'buf', 2 * n),))
    assert bound_of([block, later]) == Max(STACK, n + 3 * LANES + m, 2 * n)


def test_a_branch_keeps_its_condition_where_its_loops_fix_the_variables_else_tests_it_at_the_range_ends():
    arms = (Branch((i + n <= 100,), (Declare('pad', 'buf', n),), ()),)
    fixed = bound_of([Loop(i, 0, 0, arms)])
    assert fixed == Max(STACK, Piecewise((n, n <= 100), (0, True)))
    ranged = bound_of([Loop(i, 0, n - 1, arms)])
    assert ranged == Max(STACK, Piecewise((n, Or(n <= 100, 2 * n - 1 <= 100)), (0, True)))
    assert ranged.subs({STACK: 0, n: 101}) == 0 and ranged.subs({STACK: 0, n: 50}) == 50


def test_a_register_blocks_full_tile_counts_only_where_the_size_holds_a_block():
    """c_b + 8 <= C over c_b = 0, 8, ...: the full tile's 8 slots only where C >= 8, the single tile's 1 slot
    always (a conv weight gradient of one channel parks 1 accumulator a tap, not a block's)."""
    c = Symbol('c_b', integer=True)
    full, single = (Declare('parked', 'vbuf', 8 * m),), (Declare('parked', 'vbuf', m),)
    nest = Loop(c, 0, n - 1, (Branch((c + 8 <= n,), full, single),), 8)
    bound = bound_of([nest])
    assert bound.subs({STACK: 0, n: 1, m: 9}) == 9 * LANES and bound.subs({STACK: 0, n: 8, m: 9}) == 72 * LANES


def test_a_condition_not_affine_in_the_variable_counts_its_arm():
    arms = (Branch((i * i + n <= 100,), (Declare('pad', 'buf', n),), ()),)
    assert bound_of([Loop(i, 0, n - 1, arms)]) == Max(STACK, n)


def test_index_variables_declared_in_the_nest_are_replaced_by_their_values():
    nest = Loop(i, 0, n - 1, (Declare('w', 'index', m - i), Declare('pad', 'buf', Symbol('w', integer=True))))
    assert bound_of([nest]) == Max(STACK, m)


def test_a_size_not_affine_in_a_loop_variable_is_refused():
    with pytest.raises(ValueError, match='not affine'):
        stack_nodes((Loop(i, 0, n - 1, (Declare('pad', 'buf', i * i),)),))


def test_dispatch_outside_the_loops_is_kept_and_unread_declarations_dropped():
    step, unused = Symbol('step', integer=True), Symbol('unused', integer=True)
    nest = Loop(i, 0, n - 1, (Declare('pad', 'buf', n),))
    body = (Declare('step', 'index', m + 1), Declare('unused', 'index', m), IfDef('BP_VECTOR', (
        Branch((step > 2,), (nest,), (Loop(i, 0, n - 1, (Assign(Symbol('x'), unused),)),)),), ()))
    (declared, ifdef) = stack_nodes(body)
    assert declared == Declare('step', 'index', m + 1)
    (branch,) = ifdef.then
    assert branch.conds == (step > 2,) and branch.otherwise == () and ifdef.otherwise == ()
    assert branch.then == (Assign(STACK, Max(STACK, n)),)


def test_a_branch_whose_first_arm_holds_nothing_is_negated():
    nest = Loop(i, 0, n - 1, (Declare('pad', 'buf', n),))
    (branch,) = stack_nodes((Branch((m > 2,), (), (nest,)),))
    assert branch.conds == (m <= 2,) and branch.then == (Assign(STACK, Max(STACK, n)),)
