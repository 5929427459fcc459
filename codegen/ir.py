"""Loop-nest IR: what a proven index sum becomes before it is printed.

Expressions stay SymPy objects until the printers; the few integer operations
that SymPy has no exact node for are small Function subclasses here.  A kernel
is a tree of Loop / Guard / statement nodes over the free indices of its
output and the summation variables of its rule.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from sympy import Function, Integer, S, Symbol, false, true


class FloorDiv(Function):
    """floor(p / q) for integers p and q > 0."""

    @classmethod
    def eval(cls, p, q):
        if isinstance(p, Integer) and isinstance(q, Integer):
            return Integer(p.p // q.p)
        if q == 1:
            return p


class CeilDiv(Function):
    """ceil(p / q) for integers p and q > 0."""

    @classmethod
    def eval(cls, p, q):
        if isinstance(p, Integer) and isinstance(q, Integer):
            return Integer(-((-p.p) // q.p))
        if q == 1:
            return p


class ExactDiv(Function):
    """p / q for integers where q divides p (guarded by a divisibility condition)."""

    @classmethod
    def eval(cls, p, q):
        if q == 1:
            return p


class LatticeStart(Function):
    """The smallest m >= lo with s | a m + b (a huge value when there is none): the first
    iteration of a loop whose divisibility condition became its step."""


class InRange(Function):
    """0 <= x < n for integers x and n >= 0 (in C one unsigned comparison: a scatter's check of each
    target read from data, pool3 max backward 0.362 -> 0.332 ms against its two signed ones)."""


class IGcd(Function):
    """gcd(|a|, |b|) of integers at run time."""


class ArrayRef(Function):
    """Element ``flat`` of the array named by the Symbol ``array`` (a printed memory access)."""


class IsNaN(Function):
    pass


class VLoad(Function):
    """A vector of LANES elements of ``array`` from ``flat`` on, ``stride`` apart."""


class LaneMask(Function):
    """The lanes first..last of a vector (clamped to it) as the bits of an integer."""


class VLoadMasked(Function):
    """VLoad(array, flat, stride) on the lanes whose bits are set in ``mask``: the other lanes are 0
    and their memory is not touched."""


class VLoadOr(Function):
    """VLoadMasked(array, flat, stride, mask) with the other lanes equal to ``fill``."""


class VKeep(Function):
    """A vector with the lanes whose bits are not set in ``mask`` cleared to +0 (bit patterns: whatever
    they held, a NaN too)."""


class VSelectors(Function):
    """The int64 elements ``flat + stride j`` of ``array`` on the lanes j of ``mask`` as int32 lanes (a vector
    of positions, 'vpos'), saturated: one outside [0, 2^31) becomes -1, as do the other lanes (their memory
    not read).  Max-pool selectors, converted once per chunk of windows (lower_vector._found_chunks)."""


class VMatch(Function):
    """The lanes j of ``mask`` where the selectors (VSelectors) equal ``pos + step j``, as the bits of an
    integer: the windows whose selector names one tap of theirs."""


class VTaps(Function):
    """Lane j: element ``offset + stride * j`` of the concatenation of three vectors (a window tap taken
    from a row's registers; offset + stride * (LANES - 1) < 3 LANES)."""


class VNext(Function):
    """Lanes 1 ... LANES - 1 of the first vector, then lane 0 of the second: at stride 2, the tap one
    stride after the tap ``v`` of three row registers (VTaps(a, b, c, 2, 2) = VNext(VTaps(a, b, c, 0, 2), c)),
    one lane shift where VTaps is two permutes."""


class HSum(Function):
    """The sum of the lanes of a vector."""


class VSplat(Function):
    """A vector with every lane equal to the argument."""


class VAnyNaN(Function):
    """1 where a lane of the vector is NaN, else 0."""


class VNotFinite(Function):
    """A vector NaN in the lanes where the argument is infinite or NaN, 0 in the others (v - v)."""


# ----------------------------------------------------------------------------- nodes

@dataclass(frozen=True)
class Loop:
    var: object          # Symbol
    lower: object        # Expr, inclusive
    upper: object        # Expr, inclusive
    body: tuple
    step: object = 1     # Expr > 0
    parallel: int = 0     # OpenMP over this loop and the next parallel - 1 nested ones (collapse)
    work: object = 0      # elements touched: threads start only when it is large enough
    flags: tuple = ()     # names of int flags the parallel iterations OR together
    unroll: int = 0       # a hint: the compiler unrolls it this many times (a loop of 1 or 2 taps)
    kind: str = 'loop'


@dataclass(frozen=True)
class Guard:
    conds: tuple         # SymPy booleans, all must hold
    body: tuple
    kind: str = 'guard'


@dataclass(frozen=True)
class Declare:
    name: str
    ctype: str           # 'acc' (the kernel's scalar type), 'vec' (a vector of it), 'index', 'vbuf' (a stack
    #                      array of ``value`` vectors), 'buf' (a stack array of ``value`` scalars), 'vindex'
    #                      (a vector of positions, every lane ``value``), 'vpos' (one, a copy of ``value``)
    value: object
    kind: str = 'declare'


@dataclass(frozen=True)
class Assign:
    target: object       # Symbol or ArrayRef
    value: object
    op: str = '='        # '=' or '+='
    kind: str = 'assign'


@dataclass(frozen=True)
class SelectMax:
    """best, position = value, candidate if the selector rule takes the candidate.  ``started``: best and
    position start at -inf and the window's first candidate (lower.first_visit), so a candidate is taken
    where it is larger or NaN only; otherwise position starts at -1 and is also taken where it is -1."""

    best: str
    position: str
    value: object
    candidate: object
    started: bool = False
    kind: str = 'select_max'


@dataclass(frozen=True)
class VSelectMax:
    """SelectMax lane by lane: vectors best and position, a vector value, a tap's offset (the same in
    every lane: the lanes' own parts of their positions are added at the store, VStoreIndex).  The
    vectors start at -inf and the first tap's offset: a tap is taken where it is larger or NaN.  With
    ``lanes``, the tap is a vector of positions, lane by lane (a row's own selection, selected among
    the rows: claim pool.max-rows)."""

    best: str
    position: str
    value: object
    tap: object
    lanes: bool = False
    kind: str = 'vselect_max'


@dataclass(frozen=True)
class Branch:
    conds: tuple         # all hold -> then, else otherwise
    then: tuple
    otherwise: tuple
    kind: str = 'branch'


@dataclass(frozen=True)
class IfDef:
    macro: str           # compile ``then`` when the C macro is defined, else ``otherwise``
    then: tuple
    otherwise: tuple
    kind: str = 'ifdef'


@dataclass(frozen=True)
class VStore:
    array: object        # Symbol
    flat: object         # first element
    stride: object       # elements between lanes
    value: object
    mask: object = None  # a LaneMask: only its lanes are written (a row shorter than a vector), or every lane
    kind: str = 'vstore'


@dataclass(frozen=True)
class VStorePair:
    """array[flat + 2 lane] = first[lane] and array[flat + 2 lane + 1] = second[lane] for every lane: two
    vectors interleaved into 2 LANES contiguous elements (the two taps of a stride-2 scatter at once)."""

    array: object        # Symbol
    flat: object
    first: object
    second: object
    kind: str = 'vstore_pair'


@dataclass(frozen=True)
class VAdd:
    """array[flat + lane * stride] += value[lane] for the lanes of a LaneMask (a scatter's vector visit)."""

    array: object        # Symbol
    flat: object
    stride: object
    mask: object
    value: object
    kind: str = 'vadd'


@dataclass(frozen=True)
class VStoreIndex:
    """The positions value[lane] + start + lane * step, as int64, to array[flat + lane]."""

    array: object        # Symbol
    flat: object
    value: object        # the name of a position vector (the taps' offsets)
    start: object
    step: object
    kind: str = 'vstore_index'


@dataclass(frozen=True)
class Lanes:
    """name[l] = expr with var = start + l, for every lane l (a vector declared here, unless ``declared``)."""

    name: str
    var: object
    start: object
    expr: object
    declared: bool = False
    kind: str = 'lanes'


@dataclass(frozen=True)
class Kernel:
    name: str
    outputs: tuple       # (name, is_index_array) pairs
    inputs: tuple        # (name, is_index_array, optional) triples
    params: tuple        # integer size / parameter symbols, in signature order
    checks: tuple        # expressions e on the params; the kernel verifies e >= 0 first
    body: tuple
    failures: tuple = ()  # (flag, what it means, sizes): a flag the body sets on bad data, reported after the
    #                       run; ``what`` a str.format template whose fields {0}, {1}... are those size expressions


def substitute(nodes: tuple, mapping: dict) -> tuple:
    """The nodes with ``mapping`` applied to every expression they hold (for specialized copies)."""
    def sub(value):
        if isinstance(value, (tuple, list)):   # (a body built as a list: a max kernel's scalar element)
            return tuple(sub(v) for v in value)
        if hasattr(value, 'xreplace'):
            return value.xreplace(mapping)
        if hasattr(value, '__dataclass_fields__'):
            return replace(value, **{f: sub(getattr(value, f)) for f in value.__dataclass_fields__ if f != 'kind'})
        return value
    return sub(nodes)


def renamed(nodes: tuple, suffix: str) -> tuple:
    """The nodes with every variable they declare or loop over renamed ``name + suffix``: two copies of
    one code can then share a scope (and the bounds hoist_invariants names after their loops differ)."""
    names = {n.name for n in walk(nodes) if isinstance(n, Declare) or isinstance(n, Lanes) and not n.declared} | {
        str(n.var) for n in walk(nodes) if isinstance(n, Loop)}
    symbols = {s for n in walk(nodes) for value in vars(n).values()
               for e in (value if isinstance(value, tuple) else (value,)) if hasattr(e, 'free_symbols')
               for s in e.free_symbols if s.name in names}
    mapping = {s: Symbol(s.name + suffix, **s.assumptions0) for s in symbols}

    def rename(n):
        fields = {f: tuple(rename(c) for c in getattr(n, f)) for f in ('body', 'then', 'otherwise') if hasattr(n, f)}
        for name in ('name', 'best', 'position'):   # a variable named by a string (a selector's, a lane loop's)
            if isinstance(getattr(n, name, None), str) and getattr(n, name) in names:
                fields[name] = getattr(n, name) + suffix
        return replace(n, **fields) if fields else n
    return substitute(tuple(rename(n) for n in nodes), mapping)


def fold(nodes: tuple, excluded: frozenset = frozenset()) -> tuple:
    """The nodes with each branch whose conditions a substitution decided replaced by the code it runs;
    a branch whose conditions include all of ``excluded`` (a case that cannot arise there) as well."""
    out = []
    for n in nodes:
        if isinstance(n, Branch):
            if any(c is false for c in n.conds) or (excluded and excluded <= set(n.conds)):
                out += fold(n.otherwise, excluded)
                continue
            if all(c is true for c in n.conds):
                out += fold(n.then, excluded)
                continue
            n = replace(n, conds=tuple(c for c in n.conds if c is not true))
        fields = {f: fold(getattr(n, f), excluded) for f in ('body', 'then', 'otherwise') if hasattr(n, f)}
        out.append(replace(n, **fields) if fields else n)
    return tuple(out)


def one_by_one(base: Symbol, last, body: tuple) -> Loop:
    """``body`` (code for a block of 1 of a blocked index whose block starts at ``base``) for each value from
    ``base`` up to ``last``, ``base`` redeclared to it: a register block's remainder, one value at a time."""
    one = Symbol(f'{base.name}1', integer=True)
    return Loop(one, base, last, (Declare(base.name, 'index', one),) + tuple(body))


def unrolled(nodes: tuple, *variables) -> tuple:
    """The nodes with each loop over one of ``variables`` whose bounds are numbers (in a specialized copy)
    replaced by its body once per value of its variable, substituted, each copy's variables renamed: the
    compiler then folds what depends on it (a tap's permute indices), where GCC left a loop of three over
    a large body rolled."""
    out = []
    for n in nodes:
        if isinstance(n, Loop) and n.var in variables and all(S(e).is_Integer for e in (n.lower, n.upper, n.step)):
            for value in range(int(n.lower), int(n.upper) + 1, int(n.step)):
                suffix = f'_{n.var}{value}'.replace('-', 'n')   # (a name: -1 as n1)
                out += renamed(unrolled(substitute(n.body, {n.var: S(value)}), *variables), suffix)
            continue
        fields = {f: unrolled(getattr(n, f), *variables) for f in ('body', 'then', 'otherwise') if hasattr(n, f)}
        out.append(replace(n, **fields) if fields else n)
    return tuple(out)


def _children(node) -> list:
    return [getattr(node, f) for f in ('body', 'then', 'otherwise') if hasattr(node, f)]


def walk(nodes):
    """Every node of a loop nest, depth first."""
    for n in nodes:
        yield n
        for child in _children(n):
            yield from walk(child)


def written(nodes) -> set:
    """Names of the variables declared or assigned anywhere in ``nodes``."""
    names = set()
    for n in nodes:
        if isinstance(n, Declare):
            names.add(n.name)
        elif isinstance(n, Assign) and not isinstance(n.target, ArrayRef):
            names.add(str(n.target))
        elif isinstance(n, (SelectMax, VSelectMax)):
            names |= {n.best, n.position}
        elif isinstance(n, Loop):
            names.add(str(n.var))
        for child in _children(n):
            names |= written(child)
    return names


_DIVISIONS = (FloorDiv, CeilDiv, ExactDiv, LatticeStart)


def _named_bounds(nodes: tuple) -> tuple:
    """Each bound of these loops that is computed with a division, declared in front of its loop (numbered
    after the first where sibling loops run over the same variable)."""
    out: list = []
    for n in nodes:
        if isinstance(n, Loop) and not n.parallel:
            for end, field in (('lo', 'lower'), ('hi', 'upper')):
                value = getattr(n, field)
                if hasattr(value, 'atoms') and value.atoms(*_DIVISIONS):
                    taken = {d.name for d in out if isinstance(d, Declare)}
                    name = next(Symbol(f'{n.var}_{end}{k or ""}', integer=True) for k in itertools.count()
                                if f'{n.var}_{end}{k or ""}' not in taken)
                    out.append(Declare(name.name, 'index', value))
                    n = replace(n, **{field: name})
        out.append(n)
    return tuple(out)


def hoist_invariants(nodes: tuple, pinned: int = 0) -> tuple:
    """Move each index declaration that does not depend on its loop (no memory read, no variable written
    in the loop) in front of the loop, innermost loops first, as far out as it goes -- a window bound
    computed with divisions then runs once per row block instead of once per row.  The bounds of inner
    loops computed with divisions are declared first (_named_bounds): the C compiler does not hoist a
    division out of a loop that might not run (it could trap).  A declaration at the top of an arm of a
    branch in the loop's body leaves both when it does not depend on the loop (_lifted; not otherwise:
    the other arm would pay for it).  pool3 max forward 0.70 -> 0.64 ms (its border windows' row range
    once per row, not per window), the average kernels unchanged.  Loops collapsed by OpenMP
    (``pinned``) keep their bodies: they must stay perfectly nested."""
    out: list = []
    for i, n in enumerate(nodes):
        if isinstance(n, Loop):
            inner = max(pinned - 1, n.parallel - 1, 0)
            body = hoist_invariants(n.body if inner else _named_bounds(n.body), inner)
            if pinned or n.parallel:
                out.append(replace(n, body=body))
                continue
            kept, moved = list(body), []
            changed = written(kept) | {str(n.var)}
            for k, b in enumerate(kept):
                if isinstance(b, (Branch, Guard)):
                    around = mentions(kept[:k] + kept[k + 1:] + list(nodes[i + 1:])) | written(out)
                    lifted, kept[k] = _lifted(b, around, changed)
                    moved += lifted
            for d in list(kept):
                value = _index_value(d)
                if value is None:
                    continue
                inside = written([k for k in kept if k is not d]) | {str(n.var)}
                if d.name in inside:   # updated in the loop (a running position): its start belongs to each pass
                    continue
                taken = written(out) | {m.name for m in moved}
                if {str(s) for s in value.free_symbols} & inside or d.name in taken:
                    continue
                kept.remove(d)
                moved.append(d)
            out += moved + [replace(n, body=tuple(kept))]
        elif _children(n):
            out.append(replace(n, **{f: hoist_invariants(_named_bounds(getattr(n, f)))
                                     for f in ('body', 'then', 'otherwise') if hasattr(n, f)}))
        else:
            out.append(n)
    return tuple(out)


def _lifted(node, around: set, varying: set) -> tuple:
    """(declarations, node): the index declarations at the top of the node's arms whose value reads none
    of the ``varying`` names (those the enclosing loop writes), moved in front of it -- where no
    other arm, and nothing in ``around`` (the code before and after it), names the same variable, unless
    another arm declares it with the same value (then both go)."""
    arms = [f for f in ('then', 'otherwise', 'body') if hasattr(node, f)]
    lifted: dict = {}
    new = {f: list(getattr(node, f)) for f in arms}
    for f in arms:
        for d in getattr(node, f):
            value = _index_value(d)
            if value is None or d.name in lifted:
                continue
            before = new[f][:new[f].index(d)]
            if {str(s) for s in value.free_symbols} & (written(before) | varying) \
                    or d.name in around | mentions(before) or d.name in written(new[f][new[f].index(d) + 1:]):
                continue
            twins = {}
            for g in arms:
                if g == f:
                    continue
                same = [e for e in new[g] if isinstance(e, Declare) and e.name == d.name]
                ahead = new[g][:new[g].index(same[0])] if same else []
                if same and same[0].value == d.value and d.name not in mentions(ahead) \
                        and not {str(s) for s in value.free_symbols} & written(ahead):
                    twins[g] = same[0]
                elif d.name in mentions(new[g]):
                    break
            else:
                new[f].remove(d)
                for g, e in twins.items():
                    new[g].remove(e)
                lifted[d.name] = d
    return list(lifted.values()), replace(node, **{f: tuple(v) for f, v in new.items()})


def _index_value(node):
    """The value of an index declaration that reads no memory (one that may move), else None."""
    if not (isinstance(node, Declare) and node.ctype == 'index') or node.value is None:
        return None
    value = node.value if hasattr(node.value, 'free_symbols') else Integer(node.value)
    return None if value.atoms(ArrayRef) else value


def mentions(nodes) -> set:
    """Names of every variable ``nodes`` declare, assign or read."""
    names = written(nodes)
    for n in walk(nodes):
        for value in vars(n).values():
            for e in (value if isinstance(value, tuple) else (value,)):
                if hasattr(e, 'free_symbols'):
                    names |= {str(s) for s in e.free_symbols}
    return names
