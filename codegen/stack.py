"""The stack a kernel's call takes: its arrays declared on the stack, per thread.

A C kernel allocates nothing on the heap, but a few of its tiles keep arrays on
the stack (lower_vector: the zero-padded copy of the rows a tile reads, the
parked accumulators of the weight gradient's passes).  ``stack_nodes`` turns a
kernel's loop nest into the body of a function of its sizes that gives, in
elements of the kernel's real type, an upper bound of what one thread holds at
once on the path a call takes.  The kernel's branches outside its loops (on its
sizes and the C macros: the dispatch among its tiles) are kept as they are.
Inside a loop nest the bound is symbolic: the arrays declared in a block add up
(a C99 array lives to the end of its block) and the block's nested blocks add
the largest of theirs; a branch counts the arm its conditions choose where the
bound can keep them (their variables fixed), else its larger arm; a loop
contributes the largest value over its range of a bound convex in its
variable (affine terms under +, Max and the arms of branches), which is the
larger of the values at the range's ends.  The bound is per thread: a call
takes at most its team's size times it.
"""
from __future__ import annotations

from sympy import And, Max, Not, Or, Piecewise, Poly, S, Symbol

from .ir import Assign, Branch, Declare, IfDef, Loop, mentions

LANES = Symbol('LANES', positive=True, integer=True)      # printed as the vector width (BP_LANES_F / BP_LANES_D)
STACK = Symbol('stack', nonnegative=True, integer=True)   # the result, in elements of the kernel's real type


def stack_nodes(nodes: tuple) -> tuple:
    """The body of the kernel's stack function: its index declarations and branches outside its loops
    as in the kernel, then ``stack = Max(stack, bound)`` for the rest of each block."""
    out, rest = [], []
    for n in nodes:
        if isinstance(n, (Branch, IfDef)):
            then, otherwise = stack_nodes(n.then), stack_nodes(n.otherwise)
            if isinstance(n, IfDef) and (then or otherwise):
                out.append(IfDef(n.macro, then, otherwise))
            elif then or otherwise:
                out.append(Branch(n.conds, then, otherwise) if then else Branch((Not(And(*n.conds)),), otherwise, ()))
        elif isinstance(n, Declare) and n.ctype == 'index':
            out.append(n)
        else:
            rest.append(n)
    bound = _bound(rest, {})
    if bound != 0:
        out.append(Assign(STACK, Max(STACK, bound)))
    kept = []   # the index declarations something after them reads
    for n in reversed(out):
        if not (isinstance(n, Declare) and n.name not in mentions(kept)):
            kept.insert(0, n)
    return tuple(kept)


def _bound(nodes, scope: dict):
    """Elements one thread holds at once in ``nodes`` at most; ``scope``: the index variables declared in
    the enclosing blocks of the nest, by name -> value (substituted: the function has no such variables)."""
    scope, live, inner = dict(scope), S.Zero, S.Zero
    for n in nodes:
        if isinstance(n, Declare) and n.ctype in ('buf', 'vbuf'):
            live += _in(n.value, scope) * (LANES if n.ctype == 'vbuf' else 1)
        elif isinstance(n, Declare) and n.ctype == 'index':
            scope[n.name] = _in(n.value, scope)
        elif isinstance(n, Loop):
            inner = Max(inner, _largest(_bound(n.body, scope), n.var, _in(n.lower, scope), _in(n.upper, scope)))
        elif isinstance(n, Branch):
            then, otherwise = _bound(n.then, scope), _bound(n.otherwise, scope)
            inner = Max(inner, then if then == otherwise else
                        Piecewise((then, And(*[_in(c, scope) for c in n.conds])), (otherwise, True)))
        elif isinstance(n, IfDef):
            if _bound(n.then, scope) != 0 or _bound(n.otherwise, scope) != 0:
                raise ValueError(f'a stack array under #ifdef {n.macro} inside a loop: no bound for it')
        elif hasattr(n, 'body'):   # a Guard: its body may not run
            inner = Max(inner, _bound(n.body, scope))
    return live + inner


def _in(e, scope: dict):
    """``e`` with the variables of ``scope`` replaced by their values."""
    e = S(e)
    return e.xreplace({s: scope[s.name] for s in e.free_symbols if s.name in scope})


def _largest(e, var, lo, hi):
    """An upper bound of ``e`` over var in [lo, hi] (where that range is not empty)."""
    if not e.has(var):
        return e
    if (hi - lo).expand() == 0:
        return e.xreplace({var: lo})
    if isinstance(e, Piecewise):   # conditions that read the variable: the larger arm that can be taken
        return Max(*[_reachable(_largest(arm, var, lo, hi), cond, var, lo, hi) for arm, cond in e.args])
    if isinstance(e, Max) or e.is_Add and e.has(Max, Piecewise):
        return e.func(*[_largest(a, var, lo, hi) for a in e.args])
    if not e.has(Max, Piecewise) and Poly(e, var).degree() <= 1:
        return Max(e.xreplace({var: lo}), e.xreplace({var: hi}))
    raise ValueError(f'no bound of {e} over {var} in [{lo}, {hi}]: not affine in it')


def _reachable(bound, cond, var, lo, hi):
    """``bound``, or 0 where ``cond`` holds for no var in [lo, hi]: an inequality affine in var holds
    somewhere in the range only if it holds at one of the range's ends, so a conjunction can hold only
    where each such conjunct does at an end (a register block's full tile, c_b + 8 <= C, runs only if
    8 <= C: tiny's weight gradient parks 1 accumulator per tap, not the 16 of the full block).  Other
    conjuncts that read var are not tested: the bound stays an upper bound."""
    tests = []
    for c in (cond.args if isinstance(cond, And) else (cond,)):
        if not S(c).has(var):
            tests.append(c)
        elif (c.is_Relational and c.rel_op in ('<', '<=', '>', '>=') and (c.lhs - c.rhs).is_polynomial(var)
              and Poly(c.lhs - c.rhs, var).degree() <= 1):
            tests.append(Or(c.xreplace({var: lo}), c.xreplace({var: hi})))
    test = And(*tests)
    return bound if test is S.true else Piecewise((bound, test), (S.Zero, True))


__all__ = ['LANES', 'STACK', 'stack_nodes']
