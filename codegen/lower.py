"""Lowering: a KernelRule's proven Z-sums -> a loop nest (the scalar, portable path).

    # [KernelRule] -> [Kernel]
    one loop per free index over its box; per term, one loop per summation
    variable, bounds projected from the constraints (a v + r >= 0 gives
    v >= ceil(-r/a) or v <= floor(r/-a)); constraints and divisibility
    conditions that are not bounds become guards at the depth where their
    variables are known; Kronecker deltas left in the body become equality
    guards; Indexed objects become flat memory accesses.
    A sum whose deltas tie the trailing free indices to array data or to the
    summation variables (the pooling backward kernels' scatter forms) is
    visited once per summation point instead: zero the output block, add each
    value where the deltas point.

Every memory access is checked to stay inside its array under the rule's
constraints and hypotheses (exact LP, derive.zsum.implied) before the kernel is
emitted: the generated code is memory-safe by construction.
"""
from __future__ import annotations

from dataclasses import replace
from functools import cache

from sympy import (Add, Eq, Expr, Function, Indexed, KroneckerDelta, Mod, Mul, Ne, S, Symbol, default_sort_key, expand,
                   oo, together)

from derive.zsum import multiple_of, canon, implied, normalize

from .ir import (ArrayRef, Assign, Branch, CeilDiv, Declare, ExactDiv, FloorDiv, Guard, IfDef, IGcd, InRange, Kernel,
                 LatticeStart, Loop, SelectMax, hoist_invariants, substitute)
from .spec import KernelRule


class LoweringError(ValueError):
    pass


class Present(Function):
    """True when the optional array named by the argument was given."""


ACC, BEST, POSITION = 'acc', 'best', 'position'
WORK = Symbol('work', integer=True)   # elements of all arrays: threads only pay off above PARALLEL_WORK
THREADS = Symbol('THREADS', integer=True, positive=True)   # the threads a parallel region would start
PARALLEL_WORK = 1 << 15


@cache
def lower(rule: KernelRule) -> Kernel:
    from .split import residue_split
    params = kernel_params(rule)
    steps: dict = {}
    failures = ()
    if scatter_targets(rule):
        body, failures = _scatter_nodes(rule, steps)
    else:
        body = _gather_nodes(residue_split(rule), steps)
    for when, variant in rule.variants:
        if scatter_targets(variant):
            body = _checked_first(when, variant, body, steps)
        else:
            body = (Branch((when,), _gather_nodes(residue_split(variant), steps), body),)
    decls = tuple(Declare(str(sym), 'index', value) for sym, value in sorted(steps.items(), key=str))
    body = hoist_invariants(body)
    body = substitute(body, {WORK: sum((Mul(*t.shape) for t in rule.outputs + rule.inputs), S.Zero)})
    checks = tuple(h for h in rule.hyps if _scalars(h) <= set(params))
    return Kernel(rule.name, tuple((o.name, o.index_array) for o in rule.outputs),
                  tuple((t.name, t.index_array, t.optional) for t in rule.inputs), params, checks, decls + body,
                  failures)


def _gather_nodes(rule: KernelRule, steps: dict) -> tuple:
    """Each output element computed once: the scalar nest, and the vector fast path where it applies."""
    from .lower_vector import choose_tile, max_vector_nodes, vector_nodes   # the fast path builds on this module
    element = tuple(_element(rule, steps))
    scalar = parallel(_box_loops(rule.index, rule.sizes, element))
    main = expand_definitions(rule, rule.terms[0][0])
    tiles = [] if rule.family == 'activation' else [_tile_or_none(choose_tile, rule, main),
                                                    _tile_or_none(choose_tile, rule, main, all_unit=True)]
    fast = scalar
    if rule.reduction == 'max':
        found = _tile_or_none(max_vector_nodes, rule, steps)
        fast = (Branch(found[0], found[1], scalar),) if found else scalar
    for tile in (t for t in tiles if t is not None):   # most general first; a fuller specialization wraps it
        try:
            vector = vector_nodes(specialized(rule, tile.special), tile, steps)
        except LoweringError:   # no fast path for this rule: the scalar nest stays
            continue
        fast = (Branch(tile.special, vector, fast),) if tile.special else vector
    return (IfDef('BP_VECTOR', fast, scalar),) if fast is not scalar else scalar


def specialized(rule: KernelRule, special: tuple) -> KernelRule:
    """The rule's output element, extents and box under the conditions Eq(parameter, value)."""
    values = {eq.lhs: eq.rhs for eq in special}
    if not values or not rule.at:
        return rule
    return replace(rule, at=tuple(e.xreplace(values) for e in rule.at),
                   extents=tuple(e.xreplace(values) for e in rule.extents),
                   box=tuple(e.xreplace(values) for e in rule.box))


def scatter_targets(rule: KernelRule) -> tuple:
    """((free index, where), ...) when the rule's sum carries Kronecker deltas tying trailing free
    indices to array data (max pooling's selector, derive.pool.max_pool_scatter) or to the summation
    variables (a window's taps, derive.pool.avg_pool_scatter): the kernel then visits the summation
    points once each and writes where they point, instead of searching the sum for every output
    element.  Empty otherwise.  (A delta between array data and the summation variables alone is part of
    the value: selector_picks.)"""
    if len(rule.terms) != 1:
        return ()
    targets = [d.args if d.args[0] in rule.index else d.args[::-1] for d in _target_deltas(rule, rule.terms[0][0])]
    index = list(rule.index)
    trailing = set(index[len(index) - len(targets):])
    if not targets or {v for v, _ in targets} != trailing or any(w.free_symbols & trailing for _, w in targets):
        return ()
    return tuple(sorted(targets, key=lambda t: index.index(t[0])))


def _target_deltas(rule: KernelRule, term) -> list:
    """The Kronecker deltas of the term that tie a free index of the rule to something."""
    return [d for d in Mul.make_args(term.body) if isinstance(d, KroneckerDelta) and set(d.args) & set(rule.index)]


INVALID, SHARE, MISSING = 'invalid', 'share', 'missing'


def selector_picks(value: Expr) -> list:
    """The Kronecker deltas of a scattered value between array data and the summation variables: a max-pool
    selector compared with a window's taps (derive.pool.max_pool_tiling).  The value is its other factors
    where they hold and 0 elsewhere; no write depends on them."""
    return [d for d in Mul.make_args(value) if isinstance(d, KroneckerDelta) and d.atoms(Indexed)]


def _checked_first(when, variant: KernelRule, body: tuple, steps: dict) -> tuple:
    """Where ``when`` holds, the vector form of ``variant``, a scatter with selector compares that reports in
    MISSING a window its selector does not name a tap of (pool.max-tiling), then ``body`` again where one did
    (a given index outside its window: the selector scatter honours it); ``body`` elsewhere, and in the
    scalar build.  The body's flags are declared once, before its copies."""
    try:
        fast, _ = _scatter_nodes(variant, steps)
    except LoweringError:
        return body
    head = tuple(n for n in body[:1] if isinstance(n, Declare))
    rest = body[len(head):]
    checked = (Declare(MISSING, 'index', S.Zero), *fast, Guard((Ne(Symbol(MISSING), 0),), rest))
    return head + (IfDef('BP_VECTOR', (Branch((when,), checked, rest),), rest),)


def _scatter_nodes(rule: KernelRule, steps: dict) -> tuple[tuple, tuple]:
    """out[..., e] = sum_v value(v) [e = where(v)]: per block of the other free indices (parallel, each
    block its own slice of the output), zero the slice, then for every summation point add the value
    at the position ``where`` names.  A position computed from the summation variables must be
    proved inside the slice by the constraints; one read from array data is checked at run time,
    skipped and reported (the kernel's last status): every write is inside the output."""
    (term, _), = rule.terms
    term = expand_definitions(rule, term)
    check_accesses(rule, term)   # the reads of value and data
    targets = scatter_targets(rule)
    first = rule.outputs[0]
    outer = rule.index[:len(rule.index) - len(targets)]
    facts = tuple(term.conds) + tuple(rule.hyps)
    at, checks, names, extents, leaf = list(outer), [], [], [], []
    for k, (var, where) in enumerate(targets):
        extent = first.shape[rule.index.index(var)]
        if not where.atoms(Indexed):
            if not (_in_bounds(where, facts) and _in_bounds(extent - 1 - where, facts)):
                raise LoweringError(f'{rule.name}: the write at {var} = {where} may leave [0, {extent})')
            at.append(expand(where))
            continue
        name = Symbol(f'target{k}', integer=True)
        leaf.append(Declare(name.name, 'index', _replace_arrays(rule, where)))
        checks += [InRange(name, extent)] if _in_bounds(extent, facts) else [name >= 0, extent - 1 - name >= 0]
        data = _tensors(rule)[next(iter(where.atoms(Indexed))).base].name
        names.append(f'{data} lies outside [0, {{{len(extents)}}})')   # a field: the message shows the size
        extents.append(extent)
        at.append(name)
    value = term.body / Mul(*_target_deltas(rule, term))
    picks = selector_picks(value)
    add = (Assign(access(first, at), Symbol(SHARE), '+='),)
    leaf = tuple(leaf) + ((Branch(tuple(checks), add, (Assign(Symbol(INVALID), S.One),)),) if checks else add)
    zero = _box_loops([v for v, _ in targets], [first.shape[rule.index.index(v)] for v, _ in targets],
                      (Assign(access(first, rule.index), S.Zero),))
    # the value once per point of the variables it depends on (a window), the targets inside (its taps)
    per = [v for v in term.vars if v in (value / Mul(*picks)).free_symbols]
    taps = [v for v in term.vars if v not in per]
    if picks:   # compared with the taps (pool.max-tiling): only a vector form, which reports MISSING
        from .lower_vector import scatter_vector_nodes
        return scatter_vector_nodes(rule, term, value, outer, per, taps, zero, ()), ()
    inner = [c for c in term.conds if c.free_symbols & set(taps)]
    if any(e.free_symbols & set(taps) for e, _ in term.divs):
        raise LoweringError(f'{rule.name}: a divisibility on the taps of a scatter')
    taps_nest = _nest(term, taps, set(outer) | set(per), inner, [], [], leaf, steps)
    visit = (Declare(SHARE, 'acc', _replace_arrays(rule, value)), *taps_nest)
    visits = _nest(term, per, set(outer), [c for c in term.conds if c not in inner], list(term.divs), [], visit, steps)
    blocks = parallel(_box_loops(outer, first.shape[:len(outer)], (*zero, *visits)))
    if not checks:
        from .lower_vector import scatter_vector_nodes   # the fast path builds on this module
        try:
            fast = scatter_vector_nodes(rule, term, value, outer, per, taps, zero, visit)
        except LoweringError:
            return blocks, ()
        return (IfDef('BP_VECTOR', fast, blocks),), ()
    blocks = (replace(blocks[0], flags=(INVALID,)),) + blocks[1:]
    what = 'an element of ' + ' or '.join(names)
    return (Declare(INVALID, 'index', S.Zero), *blocks), ((INVALID, what, tuple(extents)),)


def parallel(body: tuple) -> tuple:
    """OpenMP over the outermost perfectly nested loops (collapsed, up to three, rectangular: no bound
    depending on an outer one of them, as a residue's row count does): every kernel computes each output
    element once (gather form), so the iterations of its box loops are independent."""
    depth, node, outer = 0, body, set()
    while depth < 3 and len(node) == 1 and isinstance(node[0], Loop) and not outer & (
            S(node[0].lower).free_symbols | S(node[0].upper).free_symbols):
        depth, node, outer = depth + 1, node[0].body, outer | {node[0].var}
    if depth == 0:
        return body
    first = body[0]
    return (Loop(first.var, first.lower, first.upper, first.body, first.step, parallel=depth, work=WORK),) + body[1:]


def _tile_or_none(choose, *args, **kwargs):
    try:
        return choose(*args, **kwargs)
    except LoweringError:
        return None


def _element(rule: KernelRule, steps: dict) -> list:
    """The scalar nodes computing one element of the first output (all its terms)."""
    first = rule.outputs[0]
    if rule.reduction == 'max':
        return max_nodes(rule, steps)
    if len(rule.terms) == 1 and not rule.terms[0][0].vars:
        (term, _), = rule.terms
        return _term_nodes(rule, expand_definitions(rule, term), access(first, rule.output_at), steps, op='=')
    inner = [Declare(ACC, 'acc', S.Zero)]
    for term, optional in rule.terms:
        nodes = _term_nodes(rule, expand_definitions(rule, term), Symbol(ACC), steps)
        inner += [Guard((Present(Symbol(optional)),), tuple(nodes))] if optional else nodes
    inner.append(Assign(access(first, rule.output_at), Symbol(ACC)))
    return inner


def kernel_params(rule: KernelRule) -> tuple:
    """Integer size and parameter symbols the kernel takes, sorted by name; real parameters last."""
    exprs = [s for t in rule.outputs + rule.inputs for s in t.shape]
    bound = set(rule.index) | set(rule.real_params)
    for term, _ in rule.terms:
        z = expand_definitions(rule, term)
        exprs += [z.body, *z.conds, *(e for d in z.divs for e in d)]
        bound |= set(z.vars)
    syms = set().union(*(_scalars(e) for e in exprs)) - bound
    for when, variant in rule.variants:
        syms |= _scalars(when) | set(kernel_params(variant))
    return tuple(sorted(syms, key=default_sort_key)) + tuple(rule.real_params)


def _scalars(e) -> set:
    """Free scalar symbols of ``e`` (not array names, not array elements)."""
    e = S(e)
    return {s for s in e.free_symbols if isinstance(s, Symbol)} - {ix.base.label for ix in e.atoms(Indexed)}


def expand_definitions(rule: KernelRule, term):
    body = term.body
    for fn, lam in rule.definitions:
        body = body.replace(fn, lam)
    return type(term)(term.vars, canon(body), term.conds, term.divs)


def _box_loops(index, shape, inner: tuple) -> tuple:
    body = inner
    for var, size in reversed(tuple(zip(index, shape))):
        body = (Loop(var, S.Zero, size - 1, body),)
    return body


def _tensors(rule: KernelRule) -> dict:
    return {t.base: t for t in rule.inputs + rule.outputs}


def access(tensor, index) -> ArrayRef:
    """Row-major flat element of ``tensor`` at ``index``; exact quotients made explicit."""
    flat = S.Zero
    for e, size in zip(index, tensor.shape):
        flat = flat * size + _exact(e)
    return ArrayRef(Symbol(tensor.name), flat)


def _exact(e: Expr) -> Expr:
    """An index with an exact quotient: the terms that are multiples of the denominator leave it
    ((S t + r + P)/S = t + (r + P)/S), so the index stays affine in them."""
    num, den = together(expand(e)).as_numer_denom()
    if den == 1:
        return expand(num)
    whole = [t for t in Add.make_args(expand(num)) if multiple_of(t, den)]
    rest = expand(num - Add(*whole))
    return expand(Add(*whole) / den) + (ExactDiv(rest, den) if rest != 0 else S.Zero)


def _replace_arrays(rule: KernelRule, body: Expr) -> Expr:
    tensors = _tensors(rule)
    return body.xreplace({ix: access(tensors[ix.base], ix.indices) for ix in body.atoms(Indexed)})


def check_accesses(rule: KernelRule, term) -> None:
    """Refuse to emit a kernel whose reads, or whose write of the output element, could leave their arrays."""
    tensors = _tensors(rule)
    box = tuple(rule.hyps) + tuple(rule.index_box)
    reads = [(tensors[ix.base], ix.indices, tuple(term.conds) + box)
             for ix in sorted(term.body.atoms(Indexed), key=default_sort_key)]
    for tensor, index, facts in reads + [(rule.outputs[0], rule.output_at, box)]:
        for e, size in zip(index, tensor.shape):
            for bound in (e, size - 1 - e):
                if not _in_bounds(bound, facts):
                    raise LoweringError(f'{rule.name}: access {tensor.name}{list(index)} may leave {tensor.name} '
                                        f'({bound} >= 0 unproved)')


@cache
def _in_bounds(bound, facts: tuple) -> bool:
    return implied(bound, list(facts))


def _bounds(var, conds, loop_vars: set):
    lows, highs, rest = [], [], []
    for c in conds:
        if var not in c.free_symbols:
            rest.append(c)
            continue
        a = c.coeff(var)
        r = expand(c - a * var)
        if r.has(var) or a.free_symbols & loop_vars or not (a.is_positive or a.is_negative):
            raise LoweringError(f'constraint {c} >= 0 is not a bound on {var} with a coefficient of known sign')
        if a.is_positive:
            lows.append(-r if a == 1 else CeilDiv(-r, a))
        else:
            highs.append(r if a == -1 else FloorDiv(r, -a))
    if not lows or not highs:
        raise LoweringError(f'{var} is unbounded')
    return _max(lows), _min(highs), rest


def _max(exprs):
    from sympy import Max
    return Max(*exprs) if len(exprs) > 1 else exprs[0]


def _min(exprs):
    from sympy import Min
    return Min(*exprs) if len(exprs) > 1 else exprs[0]


def without_output_box(rule: KernelRule, term):
    """The term without the constraints that the loops over the output's box already guarantee."""
    box = {normalize(c) for c in rule.index_box}
    return type(term)(term.vars, term.body, tuple(c for c in term.conds if c not in box), term.divs)


def _term_nodes(rule: KernelRule, term, acc, steps: dict, op: str = '+=') -> list:
    check_accesses(rule, term)
    term = without_output_box(rule, term)
    factors = Mul.make_args(term.body)
    deltas = [f for f in factors if isinstance(f, KroneckerDelta)]
    value = _replace_arrays(rule, Mul(*[f for f in factors if f not in deltas]))
    equalities = [Eq(_replace_arrays(rule, d.args[0]), _replace_arrays(rule, d.args[1])) for d in deltas]
    statement = Assign(acc, value, op)
    return list(_nest(term, loop_order(term), set(rule.index), list(term.conds), list(term.divs),
                      equalities, (statement,), steps))


def loop_order(term, taps_inside: bool = False) -> list:
    """Summation variables with coupled constraints or divisibilities (the taps) outside, those with
    box constraints only inside: bounds and lattice starts are then computed once per tap.  The
    vector path wants the opposite (``taps_inside``): consecutive taps read neighbouring memory."""
    def coupled(v):
        return any(v in c.free_symbols and len(c.free_symbols & set(term.vars)) > 1 for c in term.conds) or any(
            v in e.free_symbols for e, _ in term.divs) or any(
            v in c.free_symbols and (c.free_symbols - {v}) and c.coeff(v) not in (1, -1) for c in term.conds)
    return sorted(term.vars, key=lambda v: (coupled(v) == taps_inside, term.vars.index(v)))


def _nest(term, vars, known, conds, divs, equalities, leaf, steps: dict):
    """Loops over ``vars`` in order; guards as soon as their variables are known.  A divisibility
    condition on a loop variable becomes the loop's start and step (recorded in ``steps``)."""
    ready = [c for c in conds if not (c.free_symbols & set(vars))]
    pending = [c for c in conds if c.free_symbols & set(vars)]
    div_ready = [d for d in divs if not (d[0].free_symbols & set(vars))]
    div_pending = [d for d in divs if d[0].free_symbols & set(vars)]
    guards = tuple(c >= 0 for c in ready) + tuple(Eq(Mod(_exact(e), s), 0) for e, s in div_ready)
    if not vars:
        guards += tuple(equalities)
        return (Guard(guards, leaf),) if guards else leaf
    var, rest_vars = vars[0], vars[1:]
    mine = [c for c in pending if not (c.free_symbols & set(rest_vars))]
    lower_b, upper_b, _ = _bounds(var, mine, set(term.vars))
    later = [c for c in pending if c not in mine]
    step = _lattice_step(var, rest_vars, div_pending)
    if step is not None:
        (e, s), div_pending = step[0], [d for d in div_pending if d != step[0]]
        a = e.coeff(var)
        lower_b, step = LatticeStart(lower_b, a, expand(e - a * var), s), Symbol(f'step_{var.name}', integer=True)
        steps.setdefault(step, ExactDiv(s, IGcd(a, s)))
    body = _nest(term, rest_vars, known | {var}, later, div_pending, equalities, leaf, steps)
    loop = (Loop(var, lower_b, upper_b, tuple(body), step if step is not None else S.One),)
    return (Guard(guards, loop),) if guards else loop


def _lattice_step(var, inner_vars, divs):
    """A divisibility s | a var + b (b free of inner loop variables) becomes the loop's start and step:
    the solutions form one residue class modulo s / gcd(a, s)."""
    for e, s in divs:
        a = e.coeff(var)
        if a != 0 and not (e.free_symbols & set(inner_vars)) and not expand(e - a * var).has(var):
            return ((e, s),)
    return None


def max_nodes(rule: KernelRule, steps: dict, rows: tuple = ({},)) -> list:
    """The forward of a 'max' layer: the selector keeps the first maximum in window order, a NaN
    always replacing the running maximum (derive.pool: PyTorch's CPU rule).  With several ``rows``
    (substitutions of an index, rows whose taps along it are all inside: their constraints on it are
    left out), one element of each in one nest, a selector chain each (independent chains: two
    elements in the latency of one)."""
    (term, _), = rule.terms
    check_accesses(rule, term)
    value, candidate = max_parts(rule, term)
    conds = [c for c in term.conds if not c.free_symbols & set(rows[0])]   # one row: every constraint
    names = [(f'{BEST}_{k}', f'{POSITION}_{k}') if k else (BEST, POSITION) for k in range(len(rows))]

    def nest(started):
        leaf = tuple(SelectMax(best, position, _replace_arrays(rule, value.xreplace(row)), candidate.xreplace(row),
                               started) for (best, position), row in zip(names, rows))
        known = set(rule.index).union(*(e.free_symbols for row in rows for e in row.values()))
        return tuple(_nest(term, loop_order(term), known, conds, list(term.divs), [], leaf, steps))
    taps = nest(True)
    try:   # every window is non-empty (the kernel's preconditions): its first candidate starts the position
        first = first_visit(taps)
        starts = [candidate.xreplace(row).xreplace(first) for row in rows]
    except LoweringError:
        taps, starts = nest(False), [S.NegativeOne] * len(rows)
    nodes = [n for (best, position), start in zip(names, starts)
             for n in (Declare(best, 'acc', -oo), Declare(position, 'index', start))]
    nodes += taps
    for (best, position), row in zip(names, rows):
        at = tuple(i.xreplace(row) for i in rule.output_at)
        nodes += [Assign(access(rule.outputs[0], at), Symbol(best)),
                  Assign(access(rule.outputs[1], at), Symbol(position))]
    return nodes


def first_visit(nest: tuple) -> dict:
    """The loop variables' values at the first visit of a nest of plain loops (each loop's start, the
    outer ones substituted).  The selectors (scalar and vector) start with the first tap's position and
    a running maximum of -inf, so that they take a later candidate only where it is larger or NaN: the
    first tap is taken unless it is -inf, whose position is already there (the selector rule without
    its 'nothing selected yet' test in every tap: vector pool2 0.40 -> 0.37 ms).  Every window is
    non-empty (the kernel's preconditions), so the first visit exists."""
    first = {}
    while len(nest) == 1 and isinstance(nest[0], Loop):
        (loop,) = nest
        first[loop.var] = loop.lower.xreplace(first)
        nest = loop.body
    if any(isinstance(n, (Loop, Guard, Branch)) for n in nest):
        raise LoweringError('the taps of a max kernel are not a nest of plain loops')
    return first


def max_parts(rule: KernelRule, term) -> tuple[Expr, Expr]:
    """(value, candidate position) of a 'max' layer's term sum_m [selector = position(m)] value(m)."""
    (delta,) = [f for f in Mul.make_args(term.body) if isinstance(f, KroneckerDelta)]
    selector_base = rule.outputs[1].base
    candidate = next(a for a in delta.args if not (isinstance(a, Indexed) and a.base == selector_base))
    return term.body / delta, expand(candidate)
