"""Vector lowering: the fast path of a sum or max kernel (tiled, register-blocked, SIMD).

    # [KernelRule] -> [Tile] -> [vector loop nest + scalar remainder]

The schedule is read off the rule's structure; the index arithmetic still comes
from its proven Z-sum:

* vector variable: the innermost free index of the output when some factor
  reads it along its innermost axis (conv forward and input gradient, average
  pooling: vector stores), else the innermost summed variable read that way
  (weight and bias gradients: horizontal sums at the end);
* register blocking: free indices read by exactly one factor -- output
  channels against broadcast weights (8 at a time; 16 in a run-time variant
  when their weights fit in L1 and the access is not transposed: s2 forward
  1.2 -> 0.76 ms, resnet's 36 KiB of weights per 16 channels measured 1.5x
  slower, the input gradient of dil2 0.83 -> 0.94 ms), or, when both factors
  are vectors, 8 values of the index whose factor is read at the same
  positions for every tap (output channels of the upstream gradient) x 2 of
  the one read at tap-shifted, unaligned positions (input channels):
  measured 1.1-1.7x faster than 4 x 4 on the weight gradients of the bench;
  with 8 broadcast channels and vector stores, also 2 consecutive vectors of
  the row (16 accumulators) where the target has 32 vector registers and the
  rows are that wide, in a parallel region of its own (resnet float64 input
  gradient 55.7 -> 43 ms, forward 49 -> 42 ms; with AVX2's 16 registers the
  float32 forward measured 34 -> 40 ms, so not there);
* a weight gradient of a 3-wide window on every axis has a run-time variant in the outer-product form
  (codegen.lower_outer: vectors of output channels, the taps in registers; resnet float32 weight
  gradient, C driver, 25.5 -> 19.5 ms) where the target has 32 vector registers;
* a reduction tile runs its taps inside the register blocks; when there are
  fewer blocks than threads (lenet's weight gradient: one), a run-time variant
  loops the taps outside them, in the parallel loops (2 threads 0.195 -> 0.10 ms);
  when a batch value holds at least BATCH_MIN_POSITIONS positions, another
  loops the batch index outside the taps, the accumulators of every tap
  parked in a stack buffer between the passes and summed into the output
  once: one image's rows stay in cache across the nine taps (resnet weight
  gradient in float64 61 -> 49 ms, s2 in float32 1.49 -> 1.17 ms); where
  a row's interior holds at most SHORT_ROW positions, its rows loop inside
  the chunk columns (s2 weight gradient 1.64 -> 1.48 ms on AVX-512, 7.1 ->
  6.0 ms on AVX2);
* a free-vector tile whose every array varies with its register block (average
  pooling) loops the rows inside the block: planes in memory order;
* where a block's broadcast weights (8 channels x taps x summed channels) pass
  WIDE_BLOCK_ELEMENTS, a run-time variant runs the summed channels in blocks of
  CSTEP outside the positions, the first block storing, the later ones adding
  into the output (conv forward: 128 channels at 28x28 25.9 -> 16.9 ms,
  ResNet-18's conv forward 1.66x -> 1.36x torch in total);
* a blocked index shorter than its block (one output channel: tiny forward,
  lenet's input gradient) leaves one accumulator chain per chunk, each add
  waiting for the last: a run-time variant computes blocks of ROW_BLOCK rows
  in the row interior, one chain a row, in a residue split too (depthwise stride-2
  input gradients 1.9-2.9x faster; tiny forward kernel 1.66 -> 0.43 us;
  below PARALLEL_WORK it starts no OpenMP region either: render.outlined); for a 3-wide window,
  unit strides along the rows and no dilation, another runs blocks of 8 rows, their taps unrolled
  inside the summed channels, a row's taps sharing their loads with its neighbours' (_window_rows:
  0.45 -> 0.30 us);
* interior / boundary split: the vector variable's constraints are projected
  over the boxes of the other summation variables, so that every lane of every
  chunk satisfies them; the interior runs without guards, the rest in
  lane-guarded chunks (a row narrower than a vector: one chunk, its store
  masked too: ResNet's strided 14- and 7-wide layers ran 100x slower in the
  scalar element); the values past the last full register block of an index
  run the tile with a block of 1 for it (the weight gradient of an RGB input,
  3 channels in blocks of 2, ran a third of its work in scalar code: 7.5x
  torch before); a reduction's range of at least a vector ends with its last
  LANES positions, plain loads with the lanes already counted cleared
  (Overlapped, VKeep), not a masked chunk (s2 weight gradient on AVX2, whose
  masked loads are lane loops: 5.36 -> 4.13 ms);
* in the interior, the hoisted factors are simplified under its facts (an
  average's divisor becomes the full window: one scalar per chunk); outside
  it, one scalar too for the chunks whose windows' factors agree (_lane_factor:
  pool3's first chunk, its padding counted), a lane loop for the others;
* a divisibility condition on the vector variable (the stride of a transposed
  access) is specialized away: the vector path runs when that modulus is 1;
* a window sum of one array whose constraints on the vector variable and its column tap are exactly
  the array's bounds (derive.zsum.zero_padded: average pooling forward) loads, at a stride of 2 or
  more on AVX-512, each window row's columns once into three vectors (masked loads: zeros outside
  the input, so border chunks need no guards), sums the rows, and takes each tap's lanes by permutes
  (_row_taps, ColumnTaps: pool3 average forward 0.40 -> 0.30 ms, 3x3 s3 1.20 -> 0.23 ms); max
  pooling takes its taps from row registers too, at strides of 3 or more in float32, and at stride 2
  in a copy for a 3-wide undilated window, its tap loop unrolled (_common_window: pool3 max forward
  0.51 -> 0.41 ms);
* where that window (3 wide, stride 2, undilated) is the window of both axes of a 2-d pooling, a
  row's last window row is the next row's first (_shared_rows, found by substitution): the forwards
  run in strips two vectors wide down the plane, reducing each window row once -- its taps from row
  registers, the third a lane shift of the first (VNext) -- and carrying the shared row's result to
  the next row: two window rows a row, not three.  Max pooling selects along each window row and then
  among the rows (claim pool.max-rows: its selector folds row by row), its inside rows in strips
  (_strip_rows: pool3 max forward 0.43 -> 0.26 ms); average pooling sums, every row in strips, the
  input's rows outside it read as zeros (_sum_strips: pool3 average forward 0.27 -> 0.175 ms);
* a 'max' kernel (pooling forward) runs the selector rule lane by lane over
  the taps (max_vector_nodes), starting from the first tap's positions, the
  scalar element at the borders; the rows whose taps are all inside run two
  at a time, their chains and their border elements interleaved (pool3
  float32, C driver: 0.645 -> 0.535 ms);
* a scatter form (average-pooling backward) adds LANES windows at a time to
  their taps, the taps outermost (scatter_vector_nodes), rows of windows
  outside the interior box too (their taps over the row's ranges);
* where every window has the same divisor (KernelRule.variants, claim pool.avg-uniform), average
  pooling backward is a gather instead, per residue of the strides (codegen.split, its unit taps
  parametrized by their lattice: no division in the loop): each input element written once, no
  zeroing pass (pool3 average backward 0.89 -> 0.57 ms; blocks of 8 planes 0.58, of 4 0.55, of 2
  0.66, one plane 0.76 in a C driver: the taps' short loops cost per chunk); the rows in memory
  order (_rows_in_order), and at stride 2 along the vector both residues' chunks at once, stored
  interleaved (_residue_pairs: Zen 2 float32, C driver, 2.7 -> 1.8 ms with both), with a copy for a
  column window of 3 padded by 1 (COMMON_WINDOW, _column_window: its column taps' bounds constants, so
  their offsets fold into the loads; pool3 average backward, Zen 4 float32, C driver 0.385 -> 0.320 ms;
  the same constants made the max forward slower, 0.540 -> 0.588 ms), and one for that window on the
  rows too at row stride 2, both row residues in turn, their window rows' loops unrolled (_common_rows:
  0.329 -> 0.275 ms in a harness), the pairs of rows whose window rows are inside at once, their taps
  unrolled so that both rows' loads are the same expressions (_row_pairs: 0.28 -> 0.20 ms);
* a scatter whose windows tile its output exactly (derive.zsum.exact_cover on
  every axis: kernel = stride, no padding, no remainder) has a run-time variant
  that stores each share, with no zeroing and no adds (pool2 average backward
  0.40 -> 0.26 ms in the driver); at stride 2 along the vector, both taps of
  that axis in one interleaved store of 2 LANES elements (VStorePair: AVX2 has
  no strided store, each lane was a scalar store), a row's last partial chunk
  its last LANES windows again (pool2 average backward, Zen 2 float32, C
  driver: 2.0 -> 1.3 ms);
* max pooling backward has the same variant in the form per window and tap (derive.pool.max_pool_tiling),
  checked: each chunk's selectors converted to int32 once, each tap storing the gradient where they name
  it and +0 elsewhere, a window that matched none of its taps (a given index outside it) making the kernel
  run the selector scatter after all (_found_chunks: pool2 max backward, Zen 4 float32, 0.35 -> 0.18 ms);
* where the output is as wide as its rows read (stride 1, 'same' widths) and a
  row is not a whole number of vectors, the free-vector tiles also run over the
  flattened plane (row, column): chunks cross row ends, every tap over its
  box, the lanes outside the rule's constraints masked (resnet forward 20.7 ->
  17.5 ms, input gradient 24.4 -> 20.5 ms: a row of 56 no longer pays 64 lanes);
* where a tile of several chunks reads rows with zero padding (derive.zsum.zero_padded: the constraints
  on the vector variable and a column tap say exactly that the column is in the array), a variant copies
  each row it reads, once per row of outputs and outside the register blocks, into a zero-padded stack
  array and reads that: no chunk has a partial tap, none is guarded (_padded; resnet float32 on Zen 2
  AVX2, C driver: forward 69 -> 53 ms, input gradient 73 -> 54 ms; the copy inside the blocks, once per
  block of 8 channels: 63 ms);
* every nest whose vector accesses are a parameter apart (a stride) has copies
  for that parameter equal to 1 and to 2 (contiguous, and AVX-512 permutes).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from sympy import (Add, And, Eq, Expr, Indexed, IndexedBase, KroneckerDelta, Le, Max, Min, Mod, Mul, Ne, Not, Or,
                   Piecewise, S, Symbol, cancel, expand, fraction, oo)

from derive.zsum import exact_cover, holds, within, zero_padded

from .ir import (ArrayRef, Assign, Branch, CeilDiv, Declare, ExactDiv, FloorDiv, Guard, HSum, LaneMask, Lanes, Loop,
                 VAdd, VAnyNaN, VKeep, VLoad, VLoadMasked, VLoadOr, VNext, VNotFinite, VSelectMax, VSplat, VStore,
                 VStoreIndex, VStorePair, VTaps, VMatch, VSelectors)
from .ir import fold, one_by_one, renamed, substitute, unrolled, walk, written
from .lower import (BEST, MISSING, POSITION, THREADS, LoweringError, Present, _bounds, _box_loops, _max, _min, _nest,
                    _tensors, access, check_accesses, first_visit, loop_order, max_nodes, max_parts, parallel,
                    scatter_targets, selector_picks, without_output_box)
from .lower_outer import WINDOW, outer_nodes
from .spec import KernelRule, TensorArg
from .stack import LANES

VREGS = Symbol('VREGS', integer=True, positive=True)   # the target's vector registers (a compile-time constant)
BATCH_MIN_POSITIONS = 256   # per batch value, below which a pass per batch value costs more than it saves
PARK_MAX_TAPS = 64   # taps whose parked accumulators a pass per batch value keeps on the stack (64 KiB)
PARKED = Symbol('parked')   # the stack buffer of parked accumulators
SENTINEL = 'nan'   # a max row's chains add their candidates there (NaN once one is)
CB, CSTEP = Symbol('cb', integer=True), Symbol('cstep', integer=True)   # a block of summed channels, its length
ROW_BLOCK = 4   # rows of a one-channel tile: independent accumulator chains (_row_blocks)
UNROLLED_ROWS = 8   # the same with its taps unrolled (_window_rows): the rows' taps share more loads
SHORT_ROW = 16   # positions of a reduction tile's row up to which its chunk columns walk the rows (_tile)
WIDE_BLOCK_ELEMENTS = 6144   # weights of a 16-channel block that stay in a 32 KiB L1 (24 KiB of floats)
VLO, VHI, VEND, V0 = (Symbol(n, integer=True) for n in ('vlo', 'vhi', 'vend', 'v0'))
PLO, PHI, PEND = (Symbol(n, integer=True) for n in ('plo', 'phi', 'pend'))   # rows of two residues (_residue_pairs)
PAD = IndexedBase('pad')   # a tile's zero-padded copy of the rows it reads (_padded)
PJ = Symbol('pj', integer=True)   # a column of it
PAD_MAX_ELEMENTS = 32768   # its largest size (a stack array of 128 KiB in float32, 256 KiB in float64)
COMMON_WINDOW = (WINDOW, 1)   # window and padding of ResNet's pooling (3x3, s2, p1): a gather copy of its own
ROW_TAP_WIDTHS = (WINDOW, 2)   # stride-2 column windows whose average forward has a copy (ResNet's 3, VGG's 2)


@dataclass(frozen=True)
class Overlapped:
    """The guard of a chunk that overlaps the one before it, inside the range the loads may read: plain
    loads, the lanes before ``first`` cleared (VKeep), so that only lanes first..LANES - 1 count."""
    first: Expr


@dataclass(frozen=True)
class Tile:
    vec: Symbol          # the vectorized variable
    vec_free: bool       # a free index (vector stores) or summed (horizontal sums)
    blocks: tuple        # ((var, R), ...) register-blocked free indices
    term: object         # the main Z-sum, specialized
    hoisted: Expr        # non-array factors: functions of free indices only (applied at the store)
    special: tuple       # conditions under which the vector path is valid (Eq(stride, 1))
    flat: object = None  # the row index when chunks run over the flattened plane (row, vec), else None
    chunks: int = 1      # consecutive vectors of the vector variable per tile (register blocking over positions)
    batch: object = None  # a summed variable looped outside the taps (the tile adds into the output), or None
    rows: object = None  # the row index when a tile computes consecutive rows (_row_count; their tap boxes full)
    taps_inside: bool = False  # its taps inside its summed channels (a row block whose taps are unrolled: _window_rows)
    channels: object = None  # a summed index run in blocks of CSTEP, outside the positions (partial sums added)
    group: int = 0       # with several chunks, the blocked values a group of chunks holds at once (0: its block)
    padded: bool = False  # reads a zero-padded copy of its rows (_padded): every chunk is in the interior


def _taps(rule, term) -> set:
    """Variables that run over a window (kernel taps): summed ones bounded by a window size, free
    ones indexing an output axis of window size."""
    summed = {v for v in term.vars if any(expand(K - 1 - v) in term.conds for K in rule.window)}
    return summed | {v for v, n in zip(rule.index, rule.sizes) if n in rule.window}


def _arrays(term) -> list:
    return [f for f in Mul.make_args(term.body) if isinstance(f, Indexed)]


def _reads_innermost(term, var) -> bool:
    return any(var in f.indices[-1].free_symbols for f in _arrays(term))


def choose_tile(rule: KernelRule, term, all_unit: bool = False) -> Tile | None:
    """The tile schedule of a sum kernel, or None when the fast path does not apply.  With
    ``all_unit``, every divisibility modulus (every stride of a transposed access) is specialized
    to 1, not only the vector variable's."""
    factors = Mul.make_args(term.body)
    hoisted = Mul(*[f for f in factors if not isinstance(f, Indexed)])
    if rule.reduction != 'sum' or hoisted.has(KroneckerDelta) or hoisted.free_symbols & set(term.vars):
        return None
    if not _arrays(term):
        return None
    taps = _taps(rule, term)
    if rule.index[-1] not in taps and _reads_innermost(term, rule.index[-1]):
        vec, vec_free = rule.index[-1], True
    else:
        summed = [v for v in term.vars if v not in taps and _reads_innermost(term, v)]
        if not summed:
            return None
        vec, vec_free = summed[-1], False
    special, term = _specialize(term, vec, all_unit)
    if term is None:
        return None
    term = without_output_box(rule, term)
    tile = Tile(vec, vec_free, _blocks(rule, term, vec, taps, hoisted), term, hoisted, special)
    return tile if _feasible(rule, tile) else None


def _specialize(term, vec, all_unit: bool):
    moduli = {s for e, s in term.divs if all_unit or vec in e.free_symbols}
    if any(not s.is_Symbol for s in moduli):
        return (), None
    values = {s: 1 for s in moduli}
    special = tuple(Eq(s, 1) for s in sorted(moduli, key=str))
    return special, type(term).make(term.vars, term.body.xreplace(values), [c.xreplace(values) for c in term.conds],
                                    [(e.xreplace(values), s.xreplace(values)) for e, s in term.divs])


def _blocks(rule, term, vec, taps, hoisted) -> tuple:
    """Blockable: free indices in no constraint and not in the hoisted factors (one value per block)."""
    coupled = set().union(*(c.free_symbols for c in term.conds), *(e.free_symbols for e, _ in term.divs))
    coupled |= hoisted.free_symbols
    free = [v for v in rule.index if v != vec and v not in taps and v not in coupled]
    readers = {v: [f for f in _arrays(term) if any(v in e.free_symbols for e in f.indices)] for v in free}
    single = [v for v in free if len(readers[v]) == 1]
    broadcast = [v for v in single if not any(vec in e.free_symbols for e in readers[v][0].indices)]
    if broadcast:
        return ((broadcast[-1], 8),)
    chosen, used = [], []
    for v in reversed(single):
        if readers[v][0] not in used:
            shifted = any(t in e.free_symbols for e in readers[v][0].indices for t in taps)
            chosen.append((v, 2 if shifted else 8))
            used.append(readers[v][0])
    return tuple(reversed(chosen[:2]))


def _feasible(rule, tile) -> bool:
    """The interior must not depend on blocked indices, and a summed vector variable's constraints
    must not involve other summation variables (its interior is then its exact range)."""
    blocked = {v for v, _ in tile.blocks}
    mine = [c for c in tile.term.conds if tile.vec in c.free_symbols]
    if any(c.free_symbols & blocked for c in mine):
        return False
    if not tile.vec_free and any(c.free_symbols & (set(tile.term.vars) - {tile.vec}) for c in mine):
        return False
    return all(e.free_symbols.isdisjoint({tile.vec}) for e, _ in tile.term.divs)


# ----------------------------------------------------------------------------- interior

def _box_size(rule, term, variables) -> Expr:
    """The number of points in the boxes of the summation variables ``variables``."""
    return Mul(*[hi - lo + 1 for lo, hi in (_box(term, v, rule) for v in variables)])


def _box(term, var, rule):
    """(lo, hi) of a summation variable from the constraints on it alone (no other variable or index but
    the residues of a split, which are fixed outside every vector loop: a lattice tap's box)."""
    index = set(rule.index) - set(rule.residues)
    own = [c for c in term.conds if c.free_symbols & (set(term.vars) | index) == {var}]
    lo, hi, _ = _bounds(var, own, set(term.vars))
    return lo, hi


def interior(rule, tile: Tile) -> tuple:
    """(lo, hi) of the vector variable where all its constraints hold for every value of the other
    summation variables in their boxes (each replaced by the end that minimizes the constraint)."""
    lo, hi, _ = _bounds(tile.vec, interior_facts(rule, tile), {tile.vec})
    return lo, hi


def interior_facts(rule, tile: Tile) -> list:
    """Linear constraints on the vector variable (and parameters) that hold exactly in the interior."""
    term, vec = tile.term, tile.vec
    worst = [_worst_case(rule, term, c, set(term.vars) - {vec}) for c in term.conds if vec in c.free_symbols]
    if tile.vec_free:
        worst += [c for c in rule.index_box if vec in c.free_symbols]
    return worst


def _worst_case(rule, term, c: Expr, among: set) -> Expr:
    """Constraint c >= 0 with each summation variable of ``among`` at the end of its box that
    minimizes c: where the result holds, c holds for every value of those variables."""
    for u in sorted(c.free_symbols & among, key=str):
        a = c.coeff(u)
        if not (a.is_positive or a.is_negative):
            raise LoweringError(f'coefficient of {u} in {c} has no known sign')
        lo, hi = _box(term, u, rule)
        c = expand(c.xreplace({u: lo if a.is_positive else hi}))
    return c


# ----------------------------------------------------------------------------- nodes

def _combos(blocks) -> list:
    combos = [()]
    for _, r in blocks:
        combos = [c + (k,) for c in combos for k in range(r)]
    return combos


def _tile_combos(tile) -> list:
    """The accumulators' combinations: a block combination, then (with several chunks) the chunk, or
    (with rows) the row."""
    combos = _combos(tile.blocks)
    several = tile.chunks if tile.rows is None else _row_count(tile)
    return combos if several == 1 else [c + (j,) for c in combos for j in range(several)]


def _base(var) -> Symbol:
    return Symbol(f'{var.name}_b', integer=True)


def _shift(tile, combo) -> dict:
    shift = {var: _base(var) + k for (var, _), k in zip(tile.blocks, combo)}
    if tile.chunks > 1:
        shift[tile.vec] = tile.vec + LANES * combo[-1]
    if tile.rows is not None:
        shift[tile.rows] = _base(tile.rows) + combo[-1]
    return shift


def _name(prefix, combo) -> str:
    return prefix + ''.join(f'_{k}' for k in combo)


def _products(rule, tile, combos, vector: bool, guard=None):
    """Load declarations and the product to accumulate for each block combination.  With a
    ``guard`` = (first, last) lane, the other lanes read 0 and touch no memory; with an Overlapped
    guard, the other lanes are read and cleared."""
    if isinstance(guard, Overlapped) and tile.chunks > 1:
        raise LoweringError('an overlapped chunk of a tile of several chunks')
    tensors = _tensors(rule)
    decls, seen, products = [], {}, []
    for combo in combos:
        value = S.One
        lanes = guard
        if tile.chunks > 1 and isinstance(guard, tuple):   # the chunk's own lanes
            lanes = tuple(e - LANES * combo[-1] for e in guard)
        for f in _arrays(tile.term):
            at = f.xreplace(_shift(tile, combo))
            if at not in seen:
                seen[at] = Symbol(f'{"x" if vector else "s"}{len(seen)}')
                decls += _load(tensors[f.base], at, tile.vec if vector else None, seen[at], lanes)
            value *= seen[at]
        products.append(value)
    return decls, products


def _load(tensor, at: Indexed, vec, name, lanes) -> list:
    """The loaded value: a scalar, a vector, a vector of the lanes in ``lanes`` = (first, last)
    (the others 0, their memory untouched), or with ``lanes`` Overlapped, a vector whose lanes before
    its first are cleared."""
    ref = access(tensor, at.indices)
    if vec is None or vec not in at.free_symbols:
        return [Declare(name.name, 'acc', ref)]
    flat = ref.args[1]
    if any(vec in q.free_symbols for q in flat.atoms(ExactDiv)):
        raise LoweringError(f'{at}: a quotient of the vector variable cannot be a vector index')
    stride = expand(flat.diff(vec))
    if stride.has(vec):
        raise LoweringError(f'{at} is not affine in {vec}')
    start = expand(flat.xreplace({vec: V0}))
    if lanes is None:
        return [Declare(name.name, 'vec', VLoad(ref.args[0], start, stride))]
    mask = Symbol(f'{name.name}_lanes', integer=True)   # an index: hoisted out of the loops it does not depend on
    if isinstance(lanes, Overlapped):
        return [Declare(mask.name, 'index', LaneMask(lanes.first, LANES - 1)),
                Declare(name.name, 'vec', VKeep(VLoad(ref.args[0], start, stride), mask))]
    if isinstance(lanes, Symbol):   # a lane mask
        return [Declare(name.name, 'vec', VLoadMasked(ref.args[0], start, stride, lanes))]
    return [Declare(mask.name, 'index', LaneMask(*lanes)), Declare(name.name, 'vec', VLoadMasked(ref.args[0], start,
                                                                                                  stride, mask))]


def _lanes(tile, conds) -> tuple:
    """(first, last) lane of a chunk at v0 where the constraints on the vector variable hold."""
    lo, hi, _ = _bounds(tile.vec, [c for c in conds if tile.vec in c.free_symbols], {tile.vec})
    return expand(lo - V0), expand(hi - V0)


def vector_nodes(rule: KernelRule, tile: Tile, steps: dict) -> tuple:
    """The tiled loop nest; lattice steps are recorded in ``steps``."""
    check_accesses(rule, tile.term)
    sizes = dict(zip(rule.index, rule.sizes))
    if len(tile.blocks) > 1:
        narrow = _nest_for(rule, replace(tile, blocks=_narrow(tile.blocks)), sizes, steps)
        wide = _nest_for(rule, tile, sizes, steps)
        taps = [v for v in rule.index if v in _taps(rule, tile.term)]
        outer = outer_nodes(rule, tile, sizes, _arrays(tile.term), taps, _batch(rule, tile))
        if outer is not None:   # the outer-product form of a weight gradient (codegen.lower_outer)
            wide = (Branch(outer[0], outer[1], wide),)
        return (Branch((VREGS >= 32,), wide, narrow),)
    eight = tile.blocks and tile.blocks[0][1] == 8
    rowed = _row_blocks(rule, tile, sizes, steps)
    if eight and tile.vec_free and tile.vec not in tile.hoisted.free_symbols:
        tile = replace(tile, chunks=2)
    body = _nest_for(rule, tile, sizes, steps)
    per_value = _box_size(rule, tile.term, tile.term.vars) if eight else None   # a blocked value's weights
    channels = _summed_channels(rule, tile) if eight and tile.vec_free else None
    if channels is not None:   # a block's weights past L1: the channels in blocks, outside the positions
        step = Declare(CSTEP.name, 'index', CeilDiv(_box_size(rule, tile.term, [channels]),
                                                     CeilDiv(8 * per_value, WIDE_BLOCK_ELEMENTS)))
        split = _nest_for(rule, replace(tile, channels=channels, chunks=1), sizes, steps)
        body = (Branch((8 * per_value > WIDE_BLOCK_ELEMENTS,) + _unit_or_two(split), (step,) + split, body),)
    if eight and not (tile.special or tile.term.divs or rule.at):
        (a, _), = tile.blocks
        wide = _nest_for(rule, replace(tile, blocks=((a, 16),), chunks=1), sizes, steps)
        body = (Branch((sizes[a] >= 16, 16 * per_value <= WIDE_BLOCK_ELEMENTS), wide, body),)
    if rowed is not None:
        body = (Branch(rowed[0], rowed[1], body),)
    return body


def _narrow(blocks) -> tuple:
    """A two-index register tile for 16 vector registers: 4 x 3 = 12 accumulators (a block of 8 becomes 4,
    one of 2 -- the index whose array the taps shift -- becomes 3), 7 loads per 12 FMAs.  The 8 x 2 tile
    spills there: resnet float32 weight gradient on Zen 2 AVX2, 87 -> 67 ms in a C driver (3 x 4: 68 ms,
    2 x 6: 83 ms)."""
    return tuple((v, {8: 4, 2: 3}[r]) for v, r in blocks)


def _nest_for(rule, tile, sizes, steps) -> tuple:
    blocked = [v for v, _ in tile.blocks]
    inner = _inner_free(rule, tile)

    def rows(t, taps_inside):
        body = _blocked(rule, t, sizes, 0, steps, taps_inside)
        found = _padded(rule, t, sizes, steps) if t.vec_free and t.chunks > 1 else None
        if found is not None:   # the copy outside the register blocks: one per row, not per block
            conditions, prule, ptile, copy = found
            body = (Branch(conditions, copy + _blocked(prule, ptile, sizes, 0, steps, taps_inside), body),)
        for v in reversed(_outer(rule, t, taps_inside)):
            body = (Loop(v, S.Zero, sizes[v] - 1, body),)
        return parallel(body)
    # The variants below run with contiguous vectors only: in the strided copies they took the first
    # build from 75 to 108 s (84 s without them) for shapes the bench does not have.
    body = rows(replace(tile, chunks=1), inner)
    if inner and not tile.vec_free:   # fewer blocks than threads: the taps join the parallel loops
        #                                (lenet weight gradient, 1 block)
        blocks = Mul(*[sizes[v] for v in _outer(rule, tile, inner)],
                     *[FloorDiv(sizes[v] + r - 1, r) for v, r in tile.blocks])
        batch = _batch(rule, tile)
        if batch is not None:   # one pass per image: its rows stay in L1 or L2 across the taps
            positions = _box_size(rule, tile.term, [v for v in tile.term.vars if v != batch])
            apart = rows(replace(tile, batch=batch), inner)
            taps = Mul(*[sizes[v] for v in inner])
            body = (Branch((positions >= BATCH_MIN_POSITIONS, taps <= PARK_MAX_TAPS) + _unit_or_two(apart), apart,
                           body),)
        spread = rows(tile, [])
        body = (Branch((blocks < THREADS,) + _contiguous(spread), spread, body),)
    if tile.chunks > 1:   # a parallel region of its own: GCC allocates its registers apart (lenet forward
        #                   0.146 -> 0.203 ms while the single-chunk rows shared a function with it)
        widest = sizes[tile.vec].xreplace({v: S.Zero for v in rule.index})   # a residue's rows: at most this
        paired = rows(tile, inner)   # 32 registers: 8 values x 2 chunks
        # 16 registers: 3 chunks, the block's values 4 at a time (12 accumulators; the row's last chunk
        # still holds all 8).  resnet float32 on Zen 2 AVX2 (C driver): forward 79 -> 67.5 ms (70 with
        # blocks of 4 throughout), input gradient 83 -> 72 ms.
        tripled = rows(replace(tile, chunks=3, group=tile.blocks[0][1] // 2), inner)
        body = (Branch((VREGS < 32, widest >= 3 * LANES) + _contiguous(tripled), tripled, body),)
        body = (Branch((VREGS >= 32, widest >= tile.chunks * LANES) + _contiguous(paired), paired, body),)
    found = _flat_conditions(rule, tile, sizes)
    if found is not None:
        conditions, u, ones = found
        flat, sizes = replace(tile, flat=u, chunks=1), {v: n.xreplace(ones) for v, n in sizes.items()}
        nest = _blocked(rule, flat, sizes, 0, steps, [])
        for v in reversed([v for v in rule.index if v not in blocked + [tile.vec, u] + list(ones)]):
            nest = (Loop(v, S.Zero, sizes[v] - 1, nest),)
        body = (Branch(conditions, parallel(substitute(nest, ones)), body),)
    columns = _window_columns(rule, replace(tile, chunks=1))
    for width in ROW_TAP_WIDTHS:
        common = _common_window(rule, columns, width)
        if common is None:
            continue
        # the whole nest in a copy, a function of its own: GCC's code for the row taps' copy alone did not
        # change (pool3 average forward, 0.27 ms); for the whole nest, 0.27 -> 0.23 ms, pool2's 0.22 -> 0.15
        body = _copy_for(common, body, fold(body, frozenset(Eq(p, v) for p, v in common.items())))
        strips = _sum_strips(rule, tile, columns, common) if width == COMMON_WINDOW[0] else None
        if strips is not None:
            also = tuple(c.xreplace(strips[0]) for c in columns.conditions) + (sizes[tile.vec] >= LANES,)
            body = _copy_for(strips[0], strips[1], body, also=tuple(c for c in also if c is not S.true))
    return _stride_versions(body)


def _summed_channels(rule, tile):
    """The summed index a tile of output positions may run in blocks (outside its positions, each block's
    partial sums added into the output): the one summation variable that is no window tap, bounded by its
    own box alone, where the broadcast factor holds each blocked value's channels together and the
    blocked values apart (the input channels of a forward convolution: a 128-channel block of 8 output
    channels reads 36 KiB of weights a chunk, past L1; run in two halves, the forward goes 25.9 ->
    16.9 ms).  Not the output channels of an input gradient, whose block lies in one run a channel
    (measured: no gain, 26.6 -> 24.8 ms).  None otherwise."""
    others = [v for v in tile.term.vars if v != tile.vec and v not in _taps(rule, tile.term)]
    if len(others) != 1:
        return None
    (v,) = others
    known = set(tile.term.vars) | set(rule.index)
    if any(c.free_symbols & known != {v} for c in tile.term.conds if v in c.free_symbols):
        return None
    if any(v in e.free_symbols for e, _ in tile.term.divs) or v in tile.hoisted.free_symbols:
        return None
    (a, _), = tile.blocks
    tensors = _tensors(rule)
    for f in _arrays(tile.term):   # the broadcast factor: the block's values a line apart, the channels inside
        flat = access(tensors[f.base], f.indices).args[1]
        if tile.vec not in flat.free_symbols and a in flat.free_symbols:
            _, den = fraction(cancel(flat.diff(a) / flat.diff(v)))   # a block value's step: a multiple of a channel's
            return v if den == 1 and flat.diff(a) != flat.diff(v) else None
    return None


def _row_blocks(rule, tile, sizes, steps) -> tuple | None:
    """(conditions, nest) for a blocked index shorter than its block, so that every tile holds one value of it (one
    output channel: tiny forward, lenet's input gradient): a tile of one value has one accumulator
    chain per chunk, as long as the sum, and waits for each add.  Here the rows whose taps all fall
    inside the constraints (the row interior) run in blocks of ROW_BLOCK rows, one chain each, the taps
    over their full boxes; the other rows run the tile of one row.  In a residue split (codegen.split)
    the row is the quotient before the vector's, the residues looped outside it, and a divisibility on
    the taps and residues alone stays the taps' guard, the same for every row (depthwise stride-2 input
    gradients, C driver, float32: 8x64x56 2.21 -> 0.93 ms, 8x128x28 1.39 -> 0.48 ms, 8x256x14 1.39 ->
    0.74 ms; three planes of average pooling backward at stride 1, 0.067 -> 0.039 ms).  None when the
    tile has no such row index (the free index before the vector variable, no residue, not blocked, not
    a window, in no factor and no divisibility condition, its constraints each about it alone -- or a
    residue -- after the taps' worst case).  Not where an average gather's residue pairs run (_blocked:
    two chains a chunk already, and their rows' copies -- _common_rows: pool3 average backward of 3 planes,
    C driver, 0.012-0.019 ms; in row blocks 0.024)."""
    if not tile.vec_free or len(tile.blocks) != 1 or tile.chunks != 1:
        return None
    before = [v for v in rule.index[:rule.index.index(tile.vec)] if sizes[v] != 1 and v not in rule.residues]
    (a, r), = tile.blocks
    u = before[-1] if before else None
    if u is None or u == a or u in _taps(rule, tile.term) or u in tile.hoisted.free_symbols:
        return None
    if any(e.free_symbols & {u, tile.vec} for e, _ in tile.term.divs):
        return None
    found = _row_interior(rule, tile.term, u, {v: S.Zero for v in rule.index if sizes[v] == 1})   # unit residues
    if found is None:
        return None
    lo, hi = found
    single = replace(tile, blocks=((a, 1),))
    one_row = _tile(rule, single, sizes, steps)

    def nest(rows):
        block = _tile(rule, rows, sizes, steps)
        body = (Loop(_base(a), S.Zero, sizes[a] - 1,
                     _rows_in_blocks(u, (lo, hi), sizes[u], one_row, block, _row_count(rows))),)
        for v in reversed([v for v in _outer(rule, single, []) if v != u]):
            body = (Loop(v, S.Zero, sizes[v] - 1, body),)
        return parallel(body)
    body = nest(replace(single, rows=u))
    found = _window_rows(rule, single, u)
    if found is not None:
        values, taps = found
        window = nest(replace(single, rows=u, taps_inside=True))
        body = _copy_for(values, window, body, _contiguous(window), lambda code: unrolled(code, *taps))
    body, when = _stride_versions(body), (sizes[a] < r,)   # no full block
    paired = _vector_residue(rule, tile, sizes, _inner_free(rule, tile))
    if paired is None:
        return when, body
    return when + (Ne(sizes[paired], 2),), fold(body, frozenset({Eq(sizes[paired], 2)}))   # (a copy that cannot run)


def _row_count(tile) -> int:
    """The rows of a row block (_row_blocks)."""
    return UNROLLED_ROWS if tile.taps_inside else ROW_BLOCK


def _window_rows(rule, tile, u) -> tuple | None:
    """({parameter: value}, taps) of a run-time copy of _row_blocks whose taps are unrolled inside the summed
    channels, in blocks of UNROLLED_ROWS rows: every window WINDOW wide, and the coefficients of the rows and
    of every tap in the indices 1 or -1 (unit strides along the rows, no dilation), so that a row's tap and
    the next row's tap before it read the same row by the same expression (one load: GCC merges them; 8
    rows of 3x3 taps, 30 loads for 72 FMAs, not 72), and a tap's offset along a row is a constant (a
    dilation left a parameter took GCC to 18 address registers, spilled).  tiny forward, Zen 4, C driver:
    0.45 -> 0.30 us (blocks of 4 rows: 0.35; taps unrolled with the dilations left: 0.37).  None where such
    a coefficient is not a parameter."""
    taps = [v for v in tile.term.vars if v in _taps(rule, tile.term)]
    values = {K: S(WINDOW) for K in rule.window}
    for e in (e for f in _arrays(tile.term) for e in f.indices):
        for v in [v for v in [u, *taps] if v in e.free_symbols]:
            c = e.coeff(v)
            c = -c if c.could_extract_minus_sign() else c
            if c.is_Symbol:
                values[c] = S.One
            elif c != 1:
                return None
    return values, taps


def _rows_in_blocks(u, inside: tuple, size, one_row: tuple, block: tuple, rows: int) -> tuple:
    """The rows [0, size) of u: those of the interval ``inside`` in blocks of ``rows`` (``block``, its first
    row at u's _base), the others one at a time (``one_row``)."""
    (lo, hi), rest = inside, Symbol('urest', integer=True)
    return (Loop(u, S.Zero, _min([lo, size]) - 1, one_row),
            Loop(_base(u), lo, hi - rows + 1, block, S(rows)),
            Declare(rest.name, 'index', lo + rows * _max([S.Zero, FloorDiv(hi - lo + 1, rows)])),
            Loop(u, rest, size - 1, one_row))


def _row_interior(rule, term, u, ones: dict) -> tuple | None:
    """(lo, hi) of the free index u: the rows whose constraints hold for every tap in its box (the taps
    at their worst case), or None when such a constraint involves another index than a residue of a split
    (looped outside the rows) -- after ``ones``, the indices of size 1, are set to 0."""
    others = set(rule.index) - {u} - set(rule.residues)
    facts = [_worst_case(rule, term, c, set(term.vars)) for c in term.conds if u in c.free_symbols]
    facts = [expand(c.xreplace(ones)) for c in facts + [c for c in rule.index_box if u in c.free_symbols]]
    if any(c.free_symbols & others for c in facts):
        return None
    lo, hi, _ = _bounds(u, facts, {u})
    return lo, hi


def _batch(rule, tile):
    """The summed variable a reduction tile may loop outside its taps (adding each pass into the
    output): the outermost one bounded by its own box alone (the batch index), or None."""
    if len(rule.terms) > 1:
        return None
    known = set(tile.term.vars) | set(rule.index)
    for v in loop_order(tile.term):
        mine = [c for c in tile.term.conds if v in c.free_symbols]
        if v != tile.vec and mine and all(c.free_symbols & known == {v} for c in mine):
            return v
    return None


def _outer(rule, tile, inner) -> list:
    """The free indices looped outside the register blocks (the parallel ones first)."""
    blocked = [v for v, _ in tile.blocks]
    return [v for v in rule.index if v not in blocked + inner and not (tile.vec_free and v == tile.vec)]


# ----------------------------------------------------------------------------- flattened planes

FQ, FR, FJ, FMASK = (Symbol(n, integer=True) for n in ('fq', 'fr', 'fj', 'lanes'))


def _flat_conditions(rule, tile, sizes):
    """(run-time conditions, u, {index of extent 1: 0}) under which a tile's chunks may run over the
    flattened plane f = u * V + vec (u the free index before the vector variable, skipping indices of
    extent 1 -- the residues of a unit stride --, V the row length): every vector access is then
    affine in f, and a chunk spans at most two rows.  None when the tile cannot."""
    if not tile.vec_free or len(tile.blocks) > 1 or tile.term.divs:
        return None
    ones = {v: S.Zero for v in rule.index if sizes[v] == 1}
    before = [v for v in rule.index[:rule.index.index(tile.vec)] if v not in ones]
    u = before[-1] if before else None
    if u is None or u in {v for v, _ in tile.blocks} or u in _taps(rule, tile.term) or u in rule.residues:
        return None
    if tile.hoisted.free_symbols & {u, tile.vec}:
        return None
    V = sizes[tile.vec].xreplace(ones)
    plane = sizes[u].xreplace(ones) * V
    conds = [plane >= LANES, Ne(Mod(V, LANES), 0)]   # rows of whole vectors waste nothing: the regular path
    tensors = _tensors(rule)
    refs = [access(tensors[f.base], f.indices) for f in _arrays(tile.term)] + [access(rule.outputs[0],
                                                                                        rule.output_at)]
    for ref in refs:
        flat = ref.args[1].xreplace(ones)
        a, b = expand(flat.diff(u)), expand(flat.diff(tile.vec))
        if b == 0:
            if a != 0:
                return None
            continue
        gap = expand(a - b * V)
        if gap.is_number:
            if gap != 0:
                return None
            continue
        conds.append(Eq(gap, 0))
    return tuple(conds), u, ones


def _flat_mask(rule, tile, sizes, u) -> tuple:
    """The lanes of the chunk at f = v0 whose positions satisfy the constraints that involve the row or
    the vector variable: the chunk starts in row fq at column fr and spans fj + 1 rows (several when a
    row is narrower than a vector: 14 or 7 wide in ResNet's later stages), row fq + j holding the lanes
    from j V - fr on.  Nodes declaring the mask (disjoint ranges: their sum is their union)."""
    vec, V = tile.vec, sizes[tile.vec]
    coupled = [c for c in tile.term.conds if c.free_symbols & {u, vec}]
    row, shift = FQ + FJ, FJ * V - FR
    guards = [c.xreplace({u: row}) for c in coupled if vec not in c.free_symbols]
    own = [c.xreplace({u: row}) for c in coupled if vec in c.free_symbols] + [vec, V - 1 - vec]
    lo, hi, _ = _bounds(vec, own, {vec})
    part = LaneMask(lo + shift, hi + shift)
    part = Piecewise((part, And(*[g >= 0 for g in guards])), (S.Zero, True)) if guards else part
    last = _min([FloorDiv(FR + LANES - 1, V), sizes[u] - 1 - FQ])   # a last chunk may end inside a row
    return (Declare(FMASK.name, 'index', S.Zero), Loop(FJ, S.Zero, last, (Assign(FMASK, part, '+='),)))


def _flat_tile(rule, tile, sizes, steps) -> tuple:
    """Chunks of LANES consecutive positions of the flattened plane (the last overlapping its neighbour):
    every summation variable over its own box, the lanes outside the other constraints masked (their
    memory untouched; the mask computed once per value of the variables it depends on, the taps, outside
    the others), the loads and stores at f (row 0, column f: affine by _flat_conditions)."""
    u, vec = tile.flat, tile.vec
    combos = _combos(tile.blocks)
    own = [c for c in tile.term.conds if not c.free_symbols & {u, vec}] + _channel_block(tile)
    summed = [v for v in loop_order(tile.term) if v != vec]
    masked = set().union(*(c.free_symbols for c in tile.term.conds if c.free_symbols & {u, vec}))
    outer, inner = [v for v in summed if v in masked], [v for v in summed if v not in masked]
    later = [c for c in own if c.free_symbols & set(inner)]
    plane = sizes[u] * sizes[vec]

    def chunk(store=None):   # the chunk at v0 (with ``store``, only the lanes of that mask are in the plane)
        nest = _nest(tile.term, inner, set(rule.index) | set(outer), later, [], [],
                     _accumulate(rule, tile, combos, FMASK), steps)
        nest = _nest(tile.term, outer, set(rule.index), [c for c in own if c not in later], [], [],
                     _flat_mask(rule, tile, sizes, u) + tuple(nest), steps)
        body = (tuple(Declare(_name('v', c), 'vec', S.Zero) for c in combos) + tuple(nest)
                + _finish(rule, tile, combos, vector=True, mask=store))
        return (Declare(FQ.name, 'index', FloorDiv(V0, sizes[vec])), Declare(FR.name, 'index', V0 - FQ * sizes[vec]),
                *substitute(body, {u: S.Zero}))
    if tile.channels is None:
        last = (Loop(V0, plane - LANES, plane - LANES, chunk()),)
    else:   # the chunks add into the output: the last one covers the remaining lanes only
        last = (Declare(V0.name, 'index', LANES * FloorDiv(plane, LANES)),) + chunk(LaneMask(S.Zero, plane - 1 - V0))
    return (Loop(V0, S.Zero, plane - LANES, chunk(), LANES), Guard((Ne(Mod(plane, LANES), 0),), last))


def _inner_free(rule, tile) -> list:
    """Free indices looped inside the register blocks.  In a reduction tile, the window indices:
    consecutive taps then stream the same rows of both factors (cache reuse across taps).  In a tile
    of output positions whose every array varies with every blocked index (average pooling: no array
    is reused from one block to the next), the free indices after the blocks': a block then sweeps its
    planes in memory order, not one row of every plane in turn (pool2 average forward 0.307 -> 0.221
    ms, pool3 0.51 -> 0.41 ms).  In a tile whose summed channels run in blocks, the same: a block's
    weights stay in L1 across the whole plane."""
    if not tile.vec_free:
        return [v for v in rule.index if v in _taps(rule, tile.term)]
    blocked = [v for v, _ in tile.blocks]
    if not blocked or (tile.channels is None and any(set(blocked) - f.free_symbols for f in _arrays(tile.term))):
        return []
    last = max(rule.index.index(v) for v in blocked)
    return [v for v in rule.index[last + 1:] if v not in blocked and v != tile.vec]


def _stride_versions(nodes: tuple) -> tuple:
    """When the lanes of a vector access are a parameter apart (a stride), emit copies specialized to
    that parameter being 1 (contiguous loads and stores) and 2 (AVX-512 permutes, AVX2 shuffles; no
    run-time branch per access: s2 forward 1.50 -> 1.18 ms, s2 weight gradient 3.2 -> 1.8 ms) and keep
    the general one for the rest."""
    params = _stride_params(nodes)
    if not params:
        return nodes
    versions = nodes   # the general copy: the strides 1 and 2 have their own
    for excluded in (_contiguous(nodes), _unit_or_two(nodes), tuple(Eq(p, 2) for p in params)):
        versions = fold(versions, frozenset(excluded))
    for value in (2, 1):
        versions = _copy_for({p: S(value) for p in params}, nodes, versions)
    return versions


def _copy_for(values: dict, nodes: tuple, otherwise: tuple, also: tuple = (), then=lambda copy: copy) -> tuple:
    """A Branch running the nodes specialized to ``values`` (symbol -> number, substituted and folded,
    then passed through ``then``) where the symbols take them and the conditions ``also`` hold,
    ``otherwise`` elsewhere."""
    return (Branch(tuple(Eq(p, v) for p, v in values.items()) + also, then(fold(substitute(nodes, values))),
                   otherwise),)


def _contiguous(nodes: tuple) -> tuple:
    """Conditions under which every vector load and store of the nodes is contiguous."""
    return tuple(Eq(p, 1) for p in _stride_params(nodes))


def _unit_or_two(nodes: tuple) -> tuple:
    """Conditions under which the lanes of every vector access of the nodes are 1 or 2 apart: a variant
    under them is compiled in the stride-1 and stride-2 copies only (_stride_versions)."""
    return tuple(Le(p, 2) for p in _stride_params(nodes))


def _stride_params(nodes: tuple) -> list:
    """The parameters (strides) by which the lanes of a vector load or store lie apart."""
    strides = set()
    for n in walk(nodes):
        if isinstance(n, (VStore, VAdd)):
            strides.add(n.stride)
        elif isinstance(n, Declare) and isinstance(n.value, (VLoad, VKeep)):
            strides.add((n.value.args[0] if isinstance(n.value, VKeep) else n.value).args[2])
    return sorted({s for s in strides if s.is_Symbol}, key=str)


def _blocked(rule, tile, sizes, k, steps, inner_free) -> tuple:
    """Register blocks of blocked index k: a full block runs the next level (finally the tile), the
    values past the last full block run the same levels with a block of 1 for it (one more tile per
    level: the code stays compact; the scalar element there made the weight gradient of an RGB input,
    3 channels in blocks of 2, 8x slower than torch).  The block loops stay perfectly nested (OpenMP
    collapses them)."""
    if k == len(tile.blocks):
        body = (_flat_tile if tile.flat is not None else _tile)(rule, tile, sizes, steps)
        if tile.channels is not None:
            lo, hi = _box(tile.term, tile.channels, rule)
            return (Loop(CB, lo, hi, _taps_loops(inner_free, sizes, body), CSTEP),)
        if tile.batch is not None:
            return _parked_passes(rule, tile, sizes, inner_free, body)
        loops = _rows_in_order(rule, inner_free, sizes, body)
        r = _vector_residue(rule, tile, sizes, inner_free)
        try:
            paired = None if r is None else _tile(rule, tile, sizes, steps,
                                                  pair=lambda *row: _residue_pairs(rule, tile, sizes, r, *row))
        except LoweringError:   # (the residues' stores are not one element apart: no pairs)
            paired = None
        if paired is None:
            return loops
        rows = _common_rows(rule, tile, sizes, steps, paired, inner_free[:-1], r)
        return (Branch((Eq(sizes[r], 2),), rows, loops),)
    var, r = tile.blocks[k]
    full = _blocked(rule, tile, sizes, k + 1, steps, inner_free)
    if r == 1:
        return (Loop(_base(var), S.Zero, sizes[var] - 1, full),)
    single = replace(tile, blocks=tile.blocks[:k] + ((var, 1),) + tile.blocks[k + 1:])
    partial = (one_by_one(_base(var), sizes[var] - 1, _blocked(rule, single, sizes, k + 1, steps, inner_free)),)
    return (Loop(_base(var), S.Zero, sizes[var] - 1, (Branch((_base(var) + r <= sizes[var],), full, partial),),
                 S(r)),)


def _parked_passes(rule, tile, sizes, taps, body) -> tuple:
    """A reduction tile in one pass per batch value (``body``: every tap of it): its accumulators are
    parked in a stack buffer between the passes (PARKED, one slot per tap and accumulator, cleared
    first), then summed into the output once.  One image's rows stay in cache across the taps, and a
    pass costs two vector moves an accumulator and tap, not a horizontal sum and an add into the output
    (s2 weight gradient 1.49 -> 1.03 ms in a C prototype)."""
    combos = _tile_combos(tile)
    slot = _slot(rule, tile, sizes)
    lo, hi = _box(tile.term, tile.batch, rule)
    clear = tuple(Assign(ArrayRef(PARKED, slot + j), VSplat(S.Zero)) for j in range(len(combos)))
    load = tuple(Declare(_name('v', c), 'vec', ArrayRef(PARKED, slot + j)) for j, c in enumerate(combos))
    total = _finish(rule, replace(tile, batch=None), combos, vector=False)
    return ((Declare(PARKED.name, 'vbuf', Mul(*[sizes[v] for v in taps]) * len(combos)),)
            + _taps_loops(taps, sizes, clear) + (Loop(tile.batch, lo, hi, _taps_loops(taps, sizes, body)),)
            + _taps_loops(taps, sizes, load + total))


def _slot(rule, tile, sizes) -> Expr:
    """The first parked accumulator of the current taps: the window indices flattened row-major."""
    flat = S.Zero
    for v in _inner_free(rule, tile):
        flat = flat * sizes[v] + v
    return expand(flat * len(_tile_combos(tile)))


def _rows_in_order(rule, free, sizes, body, both=None) -> tuple:
    """Loops over the free indices ``free`` (outermost first) around ``body``, except that a residue r
    followed by its quotient q (i = S q + r, codegen.split) loops inside it: q over the count of r = 0
    (the largest), r guarded by its own.  The rows then run in memory order (i = 0, 1, 2, ...), not
    every S-th row first: pool3 average backward, Zen 2 float32 (C driver), 2.1 -> 1.8 ms.  ``both(exist,
    each)``: the code of the innermost such pair of rows where its residues 0 and 1 both have their row
    (``exist``), from ``each``, the loop over r."""
    k = len(free) - 1
    while k >= 0:
        v, r = free[k], free[k - 1] if k else None
        if r in rule.residues and r in sizes[v].free_symbols:
            each = (Loop(r, S.Zero, sizes[r] - 1, (Guard((v <= sizes[v] - 1,), body),)),)
            if both is not None:
                each, both = both((v <= sizes[v].xreplace({r: S.One}) - 1,), each), None
            body = (Loop(v, S.Zero, sizes[v].xreplace({r: S.Zero}) - 1, each),)
            k -= 2
        else:
            body = (Loop(v, S.Zero, sizes[v] - 1, body),)
            k -= 1
    return body


def _taps_loops(taps, sizes, body) -> tuple:
    for v in reversed(taps):
        body = (Loop(v, S.Zero, sizes[v] - 1, body),)
    return body


def _channel_block(tile) -> list:
    """The constraints cb <= c <= cb + cstep - 1 of a tile whose summed channels run in blocks."""
    c = tile.channels
    return [] if c is None else [c - CB, CB + CSTEP - 1 - c]


def _padded(rule, tile, sizes, steps):
    """(conditions, rule, tile, copy) of a tile of several chunks that reads a zero-padded copy of its
    rows, or None.  Where the constraints on the vector variable and a column tap m say exactly that m is
    in its box and the column in the array (derive.zsum.zero_padded: a convolution's padding), the sum
    equals the same sum read from the array extended by zeros.  The tile copies the rows it reads (one per
    value of the other summation variables in that array's indices, its columns over every position of
    the row and tap, zeros outside the array) into a stack array ``pad`` (``copy``), and its chunks read
    that: no chunk has a partial tap, no lane is guarded.  The copied rows are the tile's own (the same
    constraints and lattice); the reads are proved inside ``pad`` (check_accesses).  The conditions: a
    chunk would be guarded otherwise (the interior is not the whole row), ``pad`` fits PAD_MAX_ELEMENTS.
    resnet float32 forward on Zen 2 AVX2 (C driver): the border chunks' masked loads cost 26 %."""
    term, vec = tile.term, tile.vec
    tensors = _tensors(rule)
    for f in _arrays(term):
        column = expand(f.indices[-1])
        taps = [v for v in term.vars if v in column.free_symbols]
        if len(taps) != 1 or any(e.free_symbols & {vec, *taps} for e in f.indices[:-1]):
            continue
        (m,) = taps
        a, b = column.coeff(vec), column.coeff(m)
        if (expand(column - a * vec - b * m).free_symbols & {vec, m} or not a.is_positive
                or not (b.is_positive or b.is_negative)):
            continue
        if zero_padded(term, {vec, m}, column, tensors[f.base].shape[-1], list(rule.hyps)):
            break
    else:
        return None
    tensor, size = tensors[f.base], sizes[vec]
    rows = [v for v in loop_order(term) if v != m and any(v in e.free_symbols for e in f.indices[:-1])]
    boxes = [_box(term, v, rule) for v in rows]
    at = tuple(expand(v - lo) for v, (lo, _) in zip(rows, boxes))   # pad's row of the tap (one axis a variable)
    m_lo, m_hi = _box(term, m, rule)
    first = expand(column.xreplace({vec: S.Zero, m: m_lo if b.is_positive else m_hi}))   # the row's first column
    width = expand(a * (size - 1) + abs(b) * (m_hi - m_lo) + 1)
    shape = tuple(expand(hi - lo + 1) for lo, hi in boxes) + (width,)
    scope = set(term.vars) | {vec}
    mine = [c for c in term.conds if c.free_symbols & {vec, m}]
    own = [c for c in mine if c.free_symbols & scope == {m}]
    padded = type(term).make(term.vars, term.body.xreplace({f: PAD[at + (expand(column - first),)]}),
                             [c for c in term.conds if c not in mine] + own, term.divs)
    pad = TensorArg('pad', PAD, shape)
    prule = replace(rule, inputs=rule.inputs + (pad,))
    try:
        check_accesses(prule, padded)
    except LoweringError:   # (a residue's box, bounded by quotients: the reads are not proved inside)
        return None
    target = access(pad, at + (PJ,))
    zero = (Assign(target, S.Zero),)
    copy = (Assign(target, access(tensor, f.indices[:-1] + (PJ + first,))),)
    extent = tensor.shape[-1]
    row = (Loop(PJ, S.Zero, _min([width, -first]) - 1, zero),
           Loop(PJ, _max([S.Zero, -first]), _min([width - 1, extent - 1 - first]), copy),
           Loop(PJ, _max([S.Zero, extent - first]), width - 1, zero))
    conds = [c for c in padded.conds if m not in c.free_symbols] + _channel_block(tile)
    nest = _nest(padded, rows, set(rule.index), conds, list(padded.divs), [], row, steps)
    vlo, vhi = interior(rule, tile)
    conditions = (Mul(*shape) <= PAD_MAX_ELEMENTS, Or(vlo > 0, vhi < size - 1))
    return (conditions, prule, replace(tile, term=padded, padded=True),
            (Declare(PAD.name, 'buf', Mul(*shape)),) + tuple(nest))


def _tile(rule, tile, sizes, steps, pair=None) -> tuple:
    """The rows of a tile (``pair(plain, masked, rows)``: the code of a row from its pieces, where residues
    loop around it: _residue_pairs, _row_pairs)."""
    lo, hi = interior(rule, tile)
    bounds = (Declare('vlo', 'index', lo), Declare('vhi', 'index', hi))
    own = None if tile.padded else _lanes(tile, tile.term.conds)   # (a padded tile's chunks are all inside)
    summed = [v for v in loop_order(tile.term, taps_inside=not tile.vec_free) if v != tile.vec]
    conds = [c for c in tile.term.conds if not c.free_symbols & {tile.vec, tile.rows}]   # a block's rows: implied
    conds += _channel_block(tile)

    def zero(t):
        return tuple(Declare(_name('v', c), 'vec', S.Zero) for c in _tile_combos(t))

    if tile.vec_free:
        def chunk(t, guard, store=None):   # tile t at v0: unguarded (guard None) or with its lanes of guard
            combos = _tile_combos(t)
            taps = _taps(rule, t.term)
            if guard is None:   # (a row block whose taps are unrolled: the summed channels outside them)
                order = sorted(summed, key=lambda v: v in taps) if t.taps_inside else summed
            else:
                order = _masks_outside(summed, guard) if set(summed) <= taps else summed
            nest = _nest(t.term, order, set(rule.index), conds, list(t.term.divs), [],
                         _accumulate(rule, t, combos, guard), steps)
            return zero(t) + tuple(nest) + _finish(rule, t, combos, vector=True, inside=guard is None, mask=store)
        single, size = replace(tile, chunks=1), sizes[tile.vec]
        several = None if tile.chunks == 1 else (_grouped(tile, chunk, None),
                                                 None if own is None else _grouped(tile, chunk, own))
        row = _lanes(single, list(tile.term.conds) + [tile.vec, size - 1 - tile.vec])   # lanes inside the row too

        def masked(start):   # one chunk from start on, its loads and store within the row
            return (Declare(V0.name, 'index', start),) + chunk(single, row, LaneMask(S.Zero, size - 1 - V0))
        tail = None if tile.channels is None else masked(LANES * FloorDiv(size, LANES))
        plain = (chunk(single, None), None if own is None else chunk(single, own))
        chunks = (() if tile.padded else bounds) + _free_chunks(tile, size, plain, several, masked(S.Zero), tail)
        if pair is not None:
            return pair(plain, masked, chunks)
        taps = _row_taps(rule, tile, size, conds, steps)
        return chunks if taps is None else (Branch(taps[0], bounds + taps[1], chunks),)
    combos, known = _tile_combos(tile), set(rule.index)
    if tile.batch is not None:   # looped outside: its box is the loop's
        summed = [v for v in summed if v != tile.batch]
        conds = [c for c in conds if c.free_symbols & (set(tile.term.vars) | known) != {tile.batch}]
        known.add(tile.batch)
    divs = list(tile.term.divs)
    nest = _nest(tile.term, summed, known, conds, divs, [],
                 _chunks_to(VLO, VHI, lambda guard: _accumulate(rule, tile, combos, guard), overlap=True), steps)
    row = summed[-1] if len(summed) > (tile.batch is None) else None   # a row, not the batch of a 1-d kernel
    if row is not None and all(r > 1 for _, r in tile.blocks) and not any(row in e.free_symbols for e, _ in divs):
        # Rows of at most SHORT_ROW positions (s2: 16): the rows loop inside the chunks, so a chunk column
        # walks them with constant strides, its pointers advanced, not recomputed per row.  s2 weight
        # gradient: AVX-512 (one chunk a row) 1.64 -> 1.48 ms; Zen 2 AVX2, two chunks a row in float32
        # 7.1 -> 6.0 ms, four in float64 9.2 -> 8.0 ms.  Wider rows lose: resnet 25 -> 52 ms, lenet's
        # 24 positions 0.20 -> 0.245 ms (AVX-512).
        mine = [c for c in conds if row in c.free_symbols]

        def column(guard):
            return tuple(_nest(tile.term, [row], known | set(summed[:-1]), mine, [], [],
                               _accumulate(rule, tile, combos, guard), steps))
        swapped = _nest(tile.term, summed[:-1], known, [c for c in conds if c not in mine], divs, [],
                        _chunks_to(VLO, VHI, column, overlap=True), steps)
        nest = (Branch((VHI - VLO + 1 <= SHORT_ROW,), tuple(swapped), tuple(nest)),)
    if tile.batch is not None:   # a pass of _parked_passes: the accumulators come from and go back to the buffer
        slot = _slot(rule, tile, sizes)
        load = tuple(Declare(_name('v', c), 'vec', ArrayRef(PARKED, slot + j)) for j, c in enumerate(combos))
        park = tuple(Assign(ArrayRef(PARKED, slot + j), Symbol(_name('v', c))) for j, c in enumerate(combos))
        return load + bounds + tuple(nest) + park
    return zero(tile) + bounds + tuple(nest) + _finish(rule, tile, combos, vector=False)


def _vector_residue(rule, tile, sizes, inner_free):
    """The residue r looped innermost around the rows when the vector variable t is its quotient
    (i = S t + r, S a parameter: the average-pooling gather of codegen.split) and the rows are plain
    single chunks that store their values, else None."""
    if not (tile.vec_free and tile.chunks == 1 and tile.flat is None and tile.channels is None and not tile.padded
            and inner_free and inner_free[-1] in rule.residues):
        return None
    r = inner_free[-1]
    stride = sizes[r]
    return r if stride.is_Symbol and expand(stride * tile.vec + r) in map(expand, rule.output_at) else None


def _residue_pairs(rule, tile, sizes, r, plain, masked, rows) -> tuple:
    """The rows of both residues r = 0, 1 of a stride of 2 along the vector (elements 2 t + r) at once:
    chunks of the positions t both rows have, each computing the two residues' values (``plain``: the
    (unguarded, lane-guarded) code of one chunk, a copy per residue, its variables renamed) and storing
    them interleaved, 2 LANES contiguous elements in one VStorePair; then the position only residue 0
    has (an odd row length), ``masked(start)``.  Rows shorter than a vector run ``rows`` per residue.
    AVX2 has no strided store: a stride-2 store was a lane loop of scalar stores (a third of the time).
    pool3 average backward, Zen 2 float32, C driver: 2.7 -> 2.1 ms (pairing only the chunks inside both
    interiors: 0.8x, each residue's last chunk then took 40 % of the time)."""
    nodes = _chunk_pairs(rule, tile, sizes, r, plain, masked, [{sizes[r]: S(2)}], (Loop(r, S.Zero, S.One, rows),))
    window = _column_window(rule, tile, r, sizes[r])
    if window is None:
        return nodes
    return _copy_for(dict(zip(window, map(S, COMMON_WINDOW))), nodes, nodes)


def _chunk_pairs(rule, tile, sizes, r, plain, masked, rows: list, otherwise: tuple, prepare=lambda code: code,
                 then=lambda code: code) -> tuple:
    """The chunks of _residue_pairs for one or more rows at once (``rows``: a substitution per row, its
    copies of the chunk's code renamed after the row's values when several), where every row has a
    vector of positions at both residues (the last node: a Branch); ``otherwise`` elsewhere.  ``prepare``: a pass
    over each residue's copy of a chunk once substituted; ``then``: one over the code of a chunk (its
    copies)."""
    each = [[{**row, r: S(k)} for k in (0, 1)] for row in rows]

    def chunk(code):
        copies = [_paired(rule, [prepare(fold(substitute(code, e))) for e in pair]) for pair in each]
        if len(copies) == 1:
            return then(copies[0])
        return then(tuple(n for copy, row in zip(copies, rows)
                          for n in renamed(copy, ''.join(f'_{v}{row[v]}' for v in sorted(row, key=str)
                                                         if v.is_Symbol and v in rule.residues))))
    inside, guarded = (None if code is None else chunk(code) for code in plain)
    both = inside if guarded is None else (Branch((V0 >= PLO, V0 + LANES - 1 <= PHI), inside, guarded),)
    size = sizes[tile.vec]
    odd = tuple(n for row in rows
                for n in substitute((Loop(r, S.Zero, S.One, (Guard((size > PEND,), masked(PEND)),)),), row))
    whole = (Loop(V0, S.Zero, PEND - LANES, both, LANES),
             Guard((Ne(Mod(PEND, LANES), 0),), (Loop(V0, PEND - LANES, PEND - LANES, both),))) + odd
    lo, hi = interior(rule, tile)
    flat = [e for pair in each for e in pair]
    return (Declare(PLO.name, 'index', _max([lo.xreplace(e) for e in flat])),
            Declare(PHI.name, 'index', _min([hi.xreplace(e) for e in flat])),
            Declare(PEND.name, 'index', _min([size.xreplace(e) for e in flat])),
            Branch((PEND >= LANES,), whole, otherwise))


def _column_window(rule, tile, r, stride, axis: int = -1) -> tuple | None:
    """(K, P): the window size of the axis ``axis`` (the vector's) and the one other parameter of its
    tap's constraints (its padding), or None.  The tap is the summation variable constrained with the
    residue r."""
    taps = _residue_taps(tile, r)
    if len(rule.window) < -axis or len(taps) != 1:
        return None
    shapes = set().union(*(Mul(*t.shape).free_symbols for t in rule.inputs + rule.outputs))
    known = shapes | set(rule.index) | {taps[0], tile.vec, r, stride, rule.window[axis]}
    others = set().union(*(c.free_symbols for c in tile.term.conds if taps[0] in c.free_symbols)) - known
    return (rule.window[axis], others.pop()) if len(others) == 1 else None


def _residue_taps(tile, r) -> list:
    """The summation variables constrained together with the residue r (its taps)."""
    return [m for m in tile.term.vars if any({m, r} <= c.free_symbols for c in tile.term.conds)]


def _common_rows(rule, tile, sizes, steps, paired: tuple, free: list, r) -> tuple:
    """The rows (``free``) of both column residues r at stride 2 around their paired chunks (``paired``),
    with a copy for the common window on the row axis too -- the column's and the rows' windows 3 padded
    by 1, the row stride 2 (ResNet's 3x3 s2 p1 pooling).  There, a pair of rows (both row residues) whose
    window rows are all inside runs as one (_row_pairs); the other pairs run their residues one after the
    other (the residue loop unrolled), each residue's loop over its one or two window rows unrolled by the
    compiler (a hint: its bounds depend on the row at the borders).  pool3 average backward, float32,
    1 thread, the kernel in a harness: 0.326 -> 0.274 ms with the residues in turn (the constants alone,
    the loops rolled: 0.358)."""
    rows = _rows_in_order(rule, free, sizes, paired)
    row_residues = [v for v in free if v in rule.residues]
    if len(row_residues) != 1:
        return rows
    (q,) = row_residues
    row, column = _column_window(rule, tile, q, sizes[q], axis=-2), _column_window(rule, tile, r, sizes[r])
    if row is None or column is None or not sizes[q].is_Symbol:
        return rows
    (tap,) = _residue_taps(tile, q)   # (one: _column_window found it)
    values = {**dict(zip(row, map(S, COMMON_WINDOW))), **dict(zip(column, map(S, COMMON_WINDOW))), sizes[q]: S(2)}

    def in_turn(copy):   # the row residues in turn: their loop unrolled, their window rows' loops a hint
        return unrolled(_unroll_hint(copy, tap.name, 2), q)
    if len(tile.blocks) != 1:
        return _copy_for(values, rows, rows, then=in_turn)
    (var, block), = tile.blocks
    single = replace(tile, blocks=((var, 1),))

    def both(exist, each):   # (the odd position's chunk is the block's, its chunks' are one channel's)
        masked = _tile(rule, tile, sizes, steps, pair=lambda _, masked, __: masked)
        return _tile(rule, single, sizes, steps, pair=lambda plain, _, __: _row_pairs(
            rule, single, sizes, r, q, values, plain, masked, exist, each, (var, block)))
    return _copy_for(values, _rows_in_order(rule, free, sizes, paired, both), rows, then=in_turn)


def _row_pairs(rule, tile, sizes, r, q, values: dict, plain, masked, exist: tuple, each: tuple, block) -> tuple:
    """A pair of rows (row residues q = 0, 1) of the paired column residues r at once, where both rows
    exist (``exist``) and their window rows are inside (the taps' bounds are then numbers, and their
    loops unrolled: each load of a window row's columns, shared by both rows, is one expression the
    compiler computes once), ``each`` (the rows in turn) elsewhere; ``values``: the common window.
    Each chunk of 2 LANES columns computes four vectors (two rows, two residues) from the loads of two
    output rows at two column offsets, one channel of the block after the other (``block``: its variable
    and size).  pool3 average backward, float32, 1 thread, the kernel in a harness: 0.28 -> 0.20 ms; with
    the block's channels unrolled in each chunk, as elsewhere, 0.31 ms (GCC spilled their 32 pointers)."""
    taps, tightest = tile.term.vars, {}

    def inside(code):   # a chunk's copy with its row taps' bounds numbers where conds hold, its taps unrolled
        code, found = _numeric_taps(code, taps)
        for e, number, pick in found:   # e <= number for a Max, e >= number for a Min: the tightest of each
            tighter = Min if pick is Max else Max
            tightest[e, pick] = tighter(number, tightest.get((e, pick), number))
        return unrolled(code, *taps)
    rows = [{**values, sizes[r]: S(2), q: S(j)} for j in (0, 1)]   # (within the copy for a column stride of 2)
    var, count = block

    def per_channel(code):   # the block's channels in turn
        return (one_by_one(_base(var), _base(var) + count - 1, code),)
    nodes = _chunk_pairs(rule, tile, sizes, r, plain, masked, rows, each, prepare=inside, then=per_channel)
    *declares, branch = nodes
    conds = tuple(e <= number if pick is Max else e >= number for (e, pick), number in tightest.items())
    return (*declares, replace(branch, conds=branch.conds + exist + conds))


def _numeric_taps(code: tuple, taps) -> tuple:
    """(code, found): the loops over the taps ``taps`` whose lower bound is the Max, or upper bound the
    Min, of one number and expressions of values known outside ``code`` with that number as the bound;
    ``found``: (expression, number, Max or Min) for each of those expressions, the number the bound where
    each is at most (Max), at least (Min) it."""
    inner = written(code) | {V0.name, PLO.name, PHI.name, PEND.name}
    found = []

    def numeric(bound, pick):
        if not isinstance(bound, pick):
            return bound
        numbers = [a for a in bound.args if a.is_Integer]
        others = [a for a in bound.args if not a.is_Integer]
        if len(numbers) != 1 or any({s.name for s in a.free_symbols} & inner for a in others):
            return bound
        found.extend((a, numbers[0], pick) for a in others)
        return numbers[0]

    def visit(nodes):
        out = []
        for n in nodes:
            fields = {f: visit(getattr(n, f)) for f in ('body', 'then', 'otherwise') if hasattr(n, f)}
            if isinstance(n, Loop) and n.var in taps:
                fields.update(lower=numeric(n.lower, Max), upper=numeric(n.upper, Min))
            out.append(replace(n, **fields) if fields else n)
        return tuple(out)
    return visit(code), found


def _unroll_hint(nodes: tuple, name: str, times: int) -> tuple:
    """The nodes with each loop over the variable ``name`` or a renamed copy of it (``name_...``: the
    column residues' chunks, ir.renamed) marked for the compiler to unroll ``times`` times."""
    out = []
    for n in nodes:
        fields = {f: _unroll_hint(getattr(n, f), name, times) for f in ('body', 'then', 'otherwise') if hasattr(n, f)}
        if isinstance(n, Loop) and (str(n.var) == name or str(n.var).startswith(name + '_')):
            fields['unroll'] = times
        out.append(replace(n, **fields) if fields else n)
    return tuple(out)


def _paired(rule, copies: list) -> tuple:
    """One chunk's code from its two copies (the residues 0 and 1, substituted), their variables renamed
    per copy, their stores (stride 2, one element apart) merged into VStorePairs."""
    copies = [renamed(c, f'_{k}') for k, c in enumerate(copies)]
    stores = [[n for n in c if isinstance(n, VStore)] for c in copies]
    if (sum(isinstance(n, VStore) for c in copies for n in walk(c)) != 2 * len(stores[0])
            or len(stores[0]) != len(stores[1])
            or any(a.array != b.array or a.stride != 2 or b.stride != 2 or a.mask is not None or b.mask is not None
                   or expand(b.flat - a.flat) != 1 for a, b in zip(*stores))):
        raise LoweringError(f'{rule.name}: the residues\' chunks do not store one element apart')
    return tuple(n for c in copies for n in c if not isinstance(n, VStore)) + tuple(
        VStorePair(a.array, a.flat, a.value, b.value) for a, b in zip(*stores))


def _grouped(tile, chunk, guard) -> tuple:
    """A group of chunks (``chunk(t, guard)``: tile t's code): with ``tile.group`` below the block, the
    block's values in turns of ``group``, each turn a tile of its own accumulators."""
    (var, r), = tile.blocks
    if not tile.group or r <= tile.group:
        return chunk(tile, guard)
    turn, base = Symbol(f'{_base(var).name}g', integer=True), _base(var)
    narrow = replace(tile, blocks=((var, tile.group),))
    return (Loop(turn, base, base + r - 1, (Declare(base.name, 'index', turn),) + chunk(narrow, guard),
                 S(tile.group)),)


def _row_taps(rule, tile, size, conds, steps):
    """(conditions, nodes) of a row of a one-array window sum whose column taps come from registers
    (average pooling forward), or None.  A chunk of LANES outputs at v0 reads, for tap m, the columns
    S (v0 + j) + D m + c; it loads the 3 LANES columns from S v0 + c on once per row of its window --
    masked by the array's bounds, so the other lanes read 0 --, sums them over the window's rows, then
    takes each tap's lanes from the three sums by permutes (VTaps).  Valid when the constraints on the
    vector variable and the tap say exactly that the tap is in its box and the column in the array
    (derive.zsum.zero_padded, claim pool.avg-rows): the zeros then stand for the constraints, in the
    border chunks too (one code for every chunk, no interior split; the divisor is still one scalar
    for the chunks inside).  The conditions: ColumnTaps.conditions.  Measured on 8x64x56x56, 1
    thread, min of 200, against the stride-2 load per tap and chunk (two loads and a permute):
    float32 3x3 s2 p1 0.40 -> 0.30 ms, 2x2 s2 0.29 -> 0.24 ms, 3x3 s3 p1 (a scalar gather per tap
    before) 1.20 -> 0.23 ms; float64 3x3 s2 p1 0.75 -> 0.55 ms."""
    found = _window_columns(rule, tile)
    if found is None:
        return None
    vec, (f,), m, tensor = tile.vec, _arrays(tile.term), found.tap, found.tensor
    combos = _combos(tile.blocks)
    sums = {(c, i): Symbol(_name(f'r{i}', c)) for c in combos for i in range(3)}
    loads = []
    for c in combos:
        start = found.start(f.xreplace(_shift(tile, c)))
        loads += [Assign(sums[c, i], VLoadMasked(Symbol(tensor.name), start + i * LANES, S.One, mask), '+=')
                  for i, mask in enumerate(found.masks())]
    others = [v for v in loop_order(tile.term) if v not in (vec, m)]
    rows = _nest(tile.term, others, set(rule.index), [c for c in conds if m not in c.free_symbols], [], [],
                 tuple(loads), steps)
    registers = {c: [sums[c, i] for i in range(3)] for c in combos}

    def taps(values):   # the tap loop, or in the copy of ``values`` each tap in turn
        if values is None:
            return (Loop(m, found.lo, found.hi, tuple(Assign(Symbol(_name('v', c)), found.taps(registers[c]), '+=')
                                                      for c in combos)),)
        return tuple(Assign(Symbol(_name('v', c)), found.tap_at(registers[c], t, values), '+=')
                     for t in found.numbers(values) for c in combos)

    def chunk(values, store=None):   # the factors (an average's divisor) one scalar for the chunks in the interior
        finish = _finish(rule, tile, combos, vector=True, mask=store)
        if store is None:
            finish = _inside_or(rule, tile, combos, finish)
        return (found.mask_declarations(V0) + tuple(Declare(r.name, 'vec', S.Zero) for r in sums.values())
                + tuple(rows) + tuple(Declare(_name('v', c), 'vec', S.Zero) for c in combos) + taps(values) + finish)

    def row(values=None):
        chunks = (Loop(V0, S.Zero, size - LANES, chunk(values), LANES),
                  Guard((Ne(Mod(size, LANES), 0),), (Loop(V0, size - LANES, size - LANES, chunk(values)),)))
        short = (Declare(V0.name, 'index', S.Zero),) + chunk(values, LaneMask(S.Zero, size - 1 - V0))
        return (Branch((size >= LANES,), chunks, short),)
    body = row()
    for width in ROW_TAP_WIDTHS:
        common = _common_window(rule, found, width)
        body = body if common is None else _copy_for(common, row(common), body)
    return found.conditions, body


def _sum_strips(rule, tile, columns, common: dict) -> tuple | None:
    """(values, nodes): average pooling forward over planes whose output rows share a window row
    (_shared_rows: the common window on both axes), its rows' constraints too the input's bounds
    (zero_padded), in strips down the plane two chunks of LANES outputs wide (then two or one that end
    the row: _strips_across); None elsewhere.  A strip sums each window row's taps (the
    row registers loaded masked by the row's bounds and by the input's rows, zeros outside: claim
    pool.avg-rows), a row's three window rows' sums, and scales by the divisor (_finish); a row's last
    window row's sum is the next row's first, carried in registers: two window rows a row, not three,
    and no row of the plane a border case.  8x64x56x56 3x3 s2 p1 float32, 1 thread, C driver: 0.23 ->
    0.175 ms (a hand kernel, its divisor a constant and its rows unmasked: 0.13)."""
    term, vec, u = tile.term, tile.vec, rule.index[-2]
    (f,) = _arrays(term)
    shared = _shared_rows(rule, term, f, columns)
    if shared is None or len(rule.index) < 3 or tile.blocks and any(v in (u, vec) for v, _ in tile.blocks):
        return None
    (m,) = [v for v in term.vars if v != columns.tap]
    row_at = expand(f.indices[-2])
    if not zero_padded(term, {u, m}, row_at, columns.tensor.shape[-2], list(rule.hyps)):
        return None
    values = common | shared
    lo_m, hi_m = (int(S(e).xreplace(values)) for e in _box(term, m, rule))
    taps, size = columns.numbers(values), rule.sizes[-1]
    plane = replace(tile, blocks=(), chunks=1)

    def row_sum(at: dict, name: str, v0, k: int) -> tuple:
        """(nodes, sum) of the window row at ``at`` (values of u and m) in chunk k at v0."""
        r = row_at.xreplace(at)
        inside = And(r >= 0, columns.tensor.shape[-2] - 1 - r >= 0)
        registers, nodes = columns.row_loads(f.xreplace(at), name, v0, k, lambda array, flat, mask: VLoadMasked(
            array, flat, S.One, Piecewise((mask, inside), (S.Zero, True))))
        total = Symbol(f'{name}s')
        nodes += (Declare(total.name, 'vec', columns.tap_at(registers, taps[0], values)),)
        return nodes + tuple(Assign(total, columns.tap_at(registers, t, values), '+=') for t in taps[1:]), total

    def strip(*at) -> tuple:
        """Chunks at each of ``at`` down the plane's rows, their work interleaved."""
        carry = [row_sum({u: S.Zero, m: lo_m}, f'c{k}', v0, k) for k, v0 in enumerate(at)]
        later = [[row_sum({m: j}, f'h{j}_{k}', v0, k) for k, v0 in enumerate(at)] for j in range(lo_m + 1, hi_m + 1)]
        row = [n for chunks in later for nodes, _ in chunks for n in nodes]
        for k, v0 in enumerate(at):
            acc = Symbol(_name('v', ()))
            finish = _inside_or(rule, plane, [()], _finish(rule, plane, [()], vector=True))
            row += renamed(substitute((Declare(acc.name, 'vec', carry[k][1]),
                                       *(Assign(acc, chunks[k][1], '+=') for chunks in later), *finish), {V0: v0}),
                           f'_{k}')
            row.append(Assign(carry[k][1], later[-1][k][1]))
        return (*(d for k, v0 in enumerate(at) for d in columns.mask_declarations(v0, f'_{k}', needed=True)),
                *(n for nodes, _ in carry for n in nodes), Loop(u, S.Zero, rule.sizes[-2] - 1, tuple(row)))
    lo, hi = interior(rule, plane)
    strips = (Declare(VLO.name, 'index', lo), Declare(VHI.name, 'index', hi), *_strips_across(size, strip))
    return values, parallel(_box_loops(rule.index[:-2], rule.sizes[:-2], strips))


def _strips_across(size, strip) -> tuple:
    """A row of ``size`` >= LANES outputs in strips (``strip(*starts)``: chunks of LANES at each start): two
    whole chunks at a time, then two or one that end the row, the last overlapping the one before."""
    rest = Symbol('vrest', integer=True)   # the first output no strip of two whole chunks covers
    return (Loop(V0, S.Zero, size - 2 * LANES, strip(V0, V0 + LANES), 2 * LANES),
            Declare(rest.name, 'index', 2 * LANES * FloorDiv(size, 2 * LANES)),
            Branch((size - rest > LANES,), strip(rest, size - LANES),
                   (Guard((size - rest > 0,), strip(size - LANES)),)))


def _window_columns(rule, tile) -> ColumnTaps | None:
    """The column taps of a one-array window sum whose row taps come from registers (_row_taps): one chunk,
    the constraints on the vector variable and the tap exactly the array's bounds; None otherwise."""
    if tile.chunks != 1 or tile.rows is not None or tile.channels is not None or tile.flat is not None:
        return None
    arrays, vec = _arrays(tile.term), tile.vec
    if len(arrays) != 1:
        return None
    found = _column_taps(rule, tile.term, arrays[0], vec)
    if found is None or found.tap in tile.hoisted.free_symbols or S.false in found.conditions:
        return None
    padded = zero_padded(tile.term, {vec, found.tap}, found.column, found.tensor.shape[-1], list(rule.hyps))
    return found if padded else None


@dataclass(frozen=True)
class ColumnTaps:
    """The column tap of a window read along the vector variable: array f at column S vec + D tap + c
    (contiguous in memory), the tap over its own box [lo, hi].  A chunk of LANES outputs at v0 reads the
    columns from S v0 + D lo + c on: three vectors of them hold every tap's lanes when
    D (hi - lo) + S (LANES - 1) < 3 LANES."""
    tap: Symbol
    tensor: object
    column: Expr
    stride: Expr
    dilation: Expr
    lo: Expr
    hi: Expr
    vec: Symbol

    @property
    def conditions(self) -> tuple:
        """AVX-512's permutes (VREGS >= 32), a stride (at stride 1 a tap is one unaligned load: the 3x3
        s1 average measured 0.97 -> 1.10 ms through registers), every tap within the three vectors."""
        span = self.dilation * (self.hi - self.lo) + self.stride * (LANES - 1)
        return VREGS >= 32, self.stride >= 2, span <= 3 * LANES - 1

    def start(self, at: Indexed) -> Expr:
        """The flat offset of the first of the three vectors of the chunk at v0, for the access ``at``."""
        return expand(access(self.tensor, at.indices).args[1].xreplace({self.vec: V0, self.tap: self.lo}))

    @staticmethod
    def masks(suffix: str = '') -> list:
        """The lane masks of the three vectors (``suffix``: of one chunk among several)."""
        return [Symbol(f'cols{i}{suffix}', integer=True) for i in range(3)]

    def mask_declarations(self, v0, suffix: str = '', needed: bool = False, bounded: bool = True) -> tuple:
        """The lanes of each of the three vectors to load: with ``bounded``, those that lie in the array
        (the others read 0, untouched); with ``needed``, those some tap reads (a chunk inside the array
        needs no other bound: constants once the window is, the loads of whole vectors plain)."""
        first = expand(self.column.xreplace({self.vec: v0, self.tap: self.lo}))
        width, span = self.tensor.shape[-1], self.dilation * (self.hi - self.lo) + self.stride * (LANES - 1) + 1
        lanes = []
        for i in range(3):
            lo, hi = (-first - i * LANES, width - 1 - first - i * LANES) if bounded else (S.Zero, LANES - 1)
            lanes.append(LaneMask(lo, _min([hi, span - 1 - i * LANES]) if needed else hi))
        return tuple(Declare(k.name, 'index', mask) for k, mask in zip(self.masks(suffix), lanes))

    def taps(self, registers) -> Expr:
        return VTaps(*registers, self.dilation * (self.tap - self.lo), self.stride)

    def tap_at(self, registers, t: int, values: dict) -> Expr:
        """Tap t's lanes in the copy of ``values`` (its taps numbers): where t is one stride after the
        first at stride 2, the first's lanes shifted by one (VNext: one alignment where VTaps takes two
        permutes; GCC computes the first tap's permutes once)."""
        if S(self.dilation * (t - self.lo)).xreplace(values) == 2 == S(self.stride).xreplace(values):
            return VNext(self.taps(registers).xreplace({self.tap: self.lo}), registers[2])
        return self.taps(registers).xreplace({self.tap: t})

    def row_loads(self, at: Indexed, name: str, v0, k: int, load) -> tuple:
        """(registers, declarations): the three vectors of the window row ``at`` reads, in chunk k at v0 of
        a strip, each ``load(array, flat, mask)`` with chunk k's lane masks."""
        registers, masks = [Symbol(f'r{i}_{name}') for i in range(3)], self.masks(f'_{k}')
        array, start = Symbol(self.tensor.name), self.start(at).xreplace({V0: v0})
        return registers, tuple(Declare(r.name, 'vec', load(array, start + i * LANES, masks[i]))
                                for i, r in enumerate(registers))

    def numbers(self, values: dict) -> range:
        """The taps in the copy of ``values``."""
        return range(int(S(self.lo).xreplace(values)), int(S(self.hi).xreplace(values)) + 1)


def _column_taps(rule, term, f: Indexed, vec) -> ColumnTaps | None:
    """The column tap of access ``f``: one summation variable in its last index, which is affine in it
    and in the vector variable with positive coefficients, contiguous in memory, neither in the other
    indices; None otherwise."""
    column = expand(f.indices[-1])
    taps = [v for v in term.vars if v in column.free_symbols]
    if len(taps) != 1 or term.divs or any(e.free_symbols & {vec, *taps} for e in f.indices[:-1]):
        return None
    (m,) = taps
    stride, dilation = column.diff(vec), column.diff(m)
    tensor = _tensors(rule)[f.base]
    flat = access(tensor, f.indices).args[1]
    if (stride.free_symbols | dilation.free_symbols) & {vec, m} or expand(flat.diff(vec) - stride) != 0 \
            or expand(flat.diff(m) - dilation) != 0 or not (stride.is_positive and dilation.is_positive):
        return None   # (a gather's column t + (P - m) runs backwards in its tap: not a window's row)
    lo, hi = _box(term, m, rule)
    return ColumnTaps(m, tensor, column, stride, dilation, lo, hi, vec)


def _masks_outside(summed: list, guard: tuple) -> list:
    """The summation order of a guarded chunk whose sum runs over taps only (pooling): the variables
    its lane masks depend on (a row's taps) outermost, so that each mask (an index declaration) is
    computed once per value of theirs, not once per tap (pool3 average forward 0.423 -> 0.377 ms: 3
    masks a row, not 9).  The same terms, added in another order.  Convolutions keep their order (the
    channel loop: lenet forward lost 8 %)."""
    lane = set().union(*(e.free_symbols for e in guard))
    return [v for v in summed if v in lane] + [v for v in summed if v not in lane]


def _chunks_to(lo, hi, chunk, overlap: bool = False, rewrite: bool = False) -> tuple:
    """Chunks of LANES positions covering [lo, hi] exactly, each position counted once: ``chunk(None)``
    for the full ones, ``chunk((0, hi - v0))`` for the last, partial one.  With ``overlap`` (a reduction,
    whose loads may read any position in [lo, hi]), the partial chunk of a range of at least LANES
    positions is the last LANES of them, ``chunk(Overlapped(vend - v0))``: plain loads, the lanes the
    chunk before counted cleared (s2 weight gradient, Zen 2: a lane loop of branches per masked load
    cost its partial chunks 3.3x a full one).  With ``rewrite`` (chunks that store what they compute,
    each position's value the same whichever chunk computes it), it is ``chunk(None)`` at the last LANES
    positions: the lanes the chunk before stored are stored again (pool2 average backward, Zen 2 float32,
    C driver: a 4-lane partial chunk per row of 28, about 1.5 -> 1.3 ms)."""
    partial = (Loop(V0, VEND, VEND, chunk((S.Zero, hi - V0))),)
    back = hi - LANES + 1
    if overlap:
        partial = (Branch((hi - lo + 1 >= LANES,), (Loop(V0, back, back, chunk(Overlapped(VEND - V0))),), partial),)
    elif rewrite:
        partial = (Branch((hi - lo + 1 >= LANES,), (Loop(V0, back, back, chunk(None)),), partial),)
    return (Declare(VEND.name, 'index', lo + _max([S.Zero, LANES * FloorDiv(hi - lo + 1, LANES)])),
            Loop(V0, lo, hi - LANES + 1, chunk(None), LANES),
            Guard((VEND <= hi,), partial))


def _accumulate(rule, tile, combos, guard) -> tuple:
    """The loads of one tap and the products added to each block combination's accumulator."""
    decls, products = _products(rule, tile, combos, True, guard)
    return tuple(decls) + tuple(Assign(Symbol(_name('v', c)), p, '+=') for c, p in zip(combos, products))


def _free_chunks(tile, size, single, several, short, tail=None) -> tuple:
    """Chunks of LANES output positions covering the row [0, size): unguarded inside the interior
    [vlo, vhi], lane-guarded elsewhere (``single`` = (plain, guarded) code of one chunk); the last
    chunk overlaps its neighbour (a store rewrites the same values), or, where the chunks add into the
    output (channels in blocks), runs ``tail``, a chunk of the remaining lanes; a row shorter than a vector runs
    ``short``, one chunk whose loads and store keep to its lanes (the scalar element there ran ResNet's
    strided 14- and 7-wide layers at 2-3 GFLOP/s).  With ``several`` (the same for tile.chunks
    consecutive chunks), groups of chunks from 0 on, then single chunks (groups from vlo on,
    misaligned, made resnet's float64 input gradient 43 -> 51 ms)."""
    def inside(width, code):   # (plain, guarded) code; None guarded: every chunk is inside
        return code[0] if code[1] is None else (Branch((V0 >= VLO, V0 + width - 1 <= VHI), *code),)
    chunk = inside(LANES, single)
    first, groups = S.Zero, ()
    if several is not None:
        width = tile.chunks * LANES
        groups = (Loop(V0, S.Zero, size - width, inside(width, several), width),)
        first = width * FloorDiv(size, width)
    last = (Loop(V0, size - LANES, size - LANES, chunk),) if tail is None else tail
    rows = groups + (Loop(V0, first, size - LANES, chunk, LANES), Guard((Ne(Mod(size, LANES), 0),), last))
    return (Branch((size >= LANES,), rows, short),)


def _interior_chunks(vec, size, chunks, element) -> tuple:
    """The row [0, size): the scalar element before vlo and after vhi, chunks of LANES positions from
    vlo on, two at a time (``chunks(a, b)``: chunks at a and b, their work interleaved), the last one
    ending at vhi (overlapping its neighbour: it computes the same values again); an interior
    narrower than a vector runs the scalar element too."""
    rest = Symbol('vrest', integer=True)   # the first position no pair covers
    row = (Declare(rest.name, 'index', VLO + 2 * LANES * FloorDiv(VHI - VLO + 1, 2 * LANES)),
           Loop(V0, VLO, VHI - 2 * LANES + 1, chunks(V0, V0 + LANES), 2 * LANES),
           Branch((VHI - rest + 1 > LANES,), chunks(rest, VHI - LANES + 1),
                  (Guard((VHI - rest + 1 > 0,), chunks(VHI - LANES + 1)),)))
    return (Loop(vec, S.Zero, _min([VLO, size]) - 1, element),
            Branch((VHI - VLO + 1 >= LANES,), row, (Loop(vec, VLO, VHI, element),)),
            Loop(vec, _max([VHI + 1, S.Zero]), size - 1, element))


def _finish(rule, tile, combos, vector: bool, inside: bool = False, mask=None) -> tuple:
    """Scale by the hoisted factors, add the other terms, store (vectors, or horizontal sums; with a
    ``mask``, its lanes only).  In the interior (``inside``) the factors are simplified under its facts;
    one that no longer depends on the vector variable (an average's divisor: the full window) is a scalar
    for every lane.  With the summed channels in blocks, the first block stores its partial sum and the
    other terms, each later block adds its own to what the output holds."""
    out = rule.outputs[0]
    nodes = []
    first = None if tile.channels is None else _box(tile.term, tile.channels, rule)[0]   # the storing block
    hoisted = within(tile.hoisted, interior_facts(rule, tile) + list(rule.hyps)) if inside else tile.hoisted
    if vector and hoisted != 1:
        nodes += _lane_factor(hoisted, tile.vec)
    for combo in combos:
        shift = _shift(tile, combo)
        acc = Symbol(_name('v', combo))
        value = acc if vector else HSum(acc)
        if hoisted != 1:
            value = value * (Symbol('h') if vector else hoisted.xreplace(shift))
        total = Symbol(_name('t', combo))
        nodes.append(Declare(total.name, 'vec' if vector else 'acc', value))
        ref = access(out, [e.xreplace(shift) for e in rule.output_at])
        flat = ref.args[1]
        start, stride = expand(flat.xreplace({tile.vec: V0})), expand(flat.diff(tile.vec))
        if tile.channels is None:
            nodes += _other_terms(rule, tile, total, shift)
        else:
            others = tuple(_other_terms(rule, tile, total, shift))
            array = ref.args[0]
            so_far = VLoad(array, start, stride) if mask is None else VLoadMasked(array, start, stride, mask)
            add = (Assign(total, so_far, '+='),)
            nodes.append(Branch((Eq(CB, first),), others, add) if others else Guard((Ne(CB, first),), add))
        if vector:
            nodes.append(VStore(ref.args[0], start, stride, total, mask))
        else:
            nodes.append(Assign(ref, total, '+=' if tile.batch is not None else '='))
    return tuple(nodes)


def _inside_or(rule, tile, combos, finish: tuple) -> tuple:
    """The chunk at v0's finish: the interior's (its factors simplified: one scalar divisor) where the
    chunk lies in [vlo, vhi], ``finish`` elsewhere."""
    return (Branch((V0 >= VLO, V0 + LANES - 1 <= VHI), _finish(rule, tile, combos, vector=True, inside=True),
                   finish),)


def _lane_factor(factor: Expr, vec) -> tuple:
    """The nodes declaring h, the factor at the lanes of the chunk at v0: one scalar where it does not
    depend on vec, else a branch -- one scalar for the chunks where every Min / Max of vec in it takes
    its vec-free argument (an average's divisor in a border chunk whose windows are whole: pool3's first
    chunk, clipped by the padding on the left, whole when the padding is counted), each lane's own
    otherwise (a lane loop, a division a lane: pool3 average forward, Zen 2 float32, C driver, 1.59 -> 1.50
    ms)."""
    if vec not in factor.free_symbols:
        return (Declare('h', 'acc', factor),)
    free = _lane_free(factor, vec)
    ends = [] if free is None else [free[0].xreplace({vec: end}) for end in (V0, V0 + LANES - 1)]
    if free is None or S.false in ends:
        return (Lanes('h', vec, V0, factor),)
    return (Declare('h', 'vec', S.Zero),
            Branch(tuple(e for e in ends if e is not S.true), (Assign(Symbol('h'), VSplat(free[1])),),
                   (Lanes('h', vec, V0, factor, declared=True),)))


def _lane_free(expr: Expr, vec):
    """(condition, value): where the condition holds, expr equals value, which does not depend on vec;
    the condition a conjunction of affine inequalities in vec under arm selectors that do not depend on
    it (so it holds over a range of vec when it holds at both ends).  None when expr has no such form."""
    if vec not in expr.free_symbols:
        return S.true, expr
    if isinstance(expr, Piecewise):
        cond, arms, before = S.false, [], S.false
        for e, c in expr.args:
            inner = _lane_free(e, vec)
            if inner is None or vec in c.free_symbols:
                return None
            cond = Or(cond, And(c, Not(before), inner[0]))
            before = Or(before, c)
            arms.append((inner[1], c))
        return cond, Piecewise(*arms)
    if isinstance(expr, (Min, Max)):
        free = [a for a in expr.args if vec not in a.free_symbols]
        if len(free) != 1:
            return None
        (f,), bound = free, []
        for d in expr.args:
            if d != f:
                if expand(d).diff(vec).has(vec):
                    return None
                bound.append(d - f >= 0 if isinstance(expr, Min) else f - d >= 0)
        return And(*bound), f
    if not expr.args:
        return None   # vec itself
    parts = [_lane_free(a, vec) for a in expr.args]
    if any(p is None for p in parts):
        return None
    return And(*(p[0] for p in parts)), expr.func(*(p[1] for p in parts))


def _other_terms(rule, tile, total, shift) -> list:
    nodes = []
    for term, optional in rule.terms[1:]:
        part = term.body.xreplace(shift)
        if term.vars or tile.vec in part.free_symbols:
            raise LoweringError(f'{rule.name}: a further term must be a function of non-vector free indices')
        part = part.xreplace({ix: access(_tensors(rule)[ix.base], ix.indices) for ix in part.atoms(Indexed)})
        add = Assign(total, part, '+=')
        nodes.append(Guard((Present(Symbol(optional)),), (add,)) if optional else add)
    return nodes


# ----------------------------------------------------------------------------- max (pooling forward)

def max_vector_nodes(rule: KernelRule, steps: dict) -> tuple:
    """(conditions, nodes): the forward of a 'max' layer with LANES outputs of a row at a time.
    Inside the interior every tap of every lane's window is in the input, and the selector rule runs
    lane by lane over the taps in the scalar nest's order (the same first maximum; a row that meets a
    NaN runs the scalar element again, see _select), two chunks at a time (two independent
    compare-and-blend chains: pool2 0.54 -> 0.42 ms, pool3 1.25 -> 1.03 ms), in two rows at a time
    where the rows' taps are all inside (four chains; 8x64x56x56 3x3 s2 p1 float32, C driver, AVX-512:
    0.645 -> 0.535 ms; the scalar elements at both rows' borders share one nest: run one after the
    other they took 28 % of the samples, together 19 %); chunks that touch the border, and rows
    shorter than a vector, run the scalar element per output (but a left border chunk in two rows at
    a time: row).  Positions are held in int32 lanes: the path runs when every position of an
    input plane, and every tap's offset in it, fits (the conditions)."""
    (term, _), = rule.terms
    check_accesses(rule, term)
    value, candidate = max_parts(rule, term)
    vec = rule.index[-1]
    if not isinstance(value, Indexed) or vec not in value.indices[-1].free_symbols:
        raise LoweringError(f'{rule.name}: no vector along {vec}')
    term = without_output_box(rule, term)
    tile = Tile(vec, True, (), type(term)(term.vars, value, term.conds, term.divs), S.One, ())
    lo, hi = interior(rule, tile)
    tensors = _tensors(rule)
    step = expand(candidate.diff(vec))
    if step.has(vec):
        raise LoweringError(f'{rule.name}: the position {candidate} is not affine in {vec}')
    starts = []
    for out in rule.outputs:
        flat = access(out, rule.output_at).args[1]
        if expand(flat.diff(vec)) != 1:
            raise LoweringError(f'{rule.name}: {out.name} is not contiguous along {vec}')
        starts.append(expand(flat.xreplace({vec: V0})))
    conds = [c for c in term.conds if vec not in c.free_symbols]
    tap, rest = _split_taps(candidate, term.vars)
    widest = tap.xreplace(dict(zip(term.vars, (k - 1 for k in rule.window))))   # coefficients are positive

    def chunks(*at, rows=({},), border=(), least=3):
        """Chunks of LANES outputs starting at each of ``at`` in each of the ``rows`` (the row index's
        values, as substitutions): one tap loop, a selector chain per chunk and row (independent chains
        hide the latency of compare and blend).  A chain's positions hold the tap's offset only (one
        broadcast per tap); the store adds the chunk's start and the lanes' steps.  Each chunk's loads
        start from an index without the taps, declared once per chunk.  Several rows are rows whose
        taps are all inside (their constraints are left out).  The chunks at the indices ``border`` of
        ``at`` may hold windows that reach past the row: each tap loads its lanes inside (a lane mask)
        and -inf in the others, which no compare takes; a lane whose taps inside all hold -inf ends at
        -inf with the first tap's offset, perhaps outside, and sends its row to the scalar element.  At a
        stride of ``least`` or more, the taps come from row registers (_registered)."""
        chains = [(row, v0, i in border) for row in rows for i, v0 in enumerate(at)]
        mine = [c for c in conds if not c.free_symbols & set(rows[0])]
        decls, leaf, stores = [], [], []
        for k, (row, v0, edge) in enumerate(chains):
            best, position, x = f'{BEST}{k}', f'{POSITION}{k}', Symbol(f'x{k}')
            shifted = value.xreplace({vec: vec + v0 - V0, **row})
            (load,) = _load(tensors[value.base], shifted, vec, x, None)
            at_taps, base = _split_taps(load.value.args[1], term.vars)
            start = Symbol(f'xb{k}', integer=True)
            array, _, stride = load.value.args
            leaf.append(Declare(start.name, 'index', base))
            if edge:
                mask = Symbol(f'{x.name}_lanes', integer=True)
                leaf += [Declare(mask.name, 'index', LaneMask(*(expand(b.xreplace(row) - v0) for b in reach))),
                         Declare(x.name, 'vec', VLoadOr(array, start + at_taps, stride, mask, -oo))]
            else:
                leaf.append(Declare(x.name, 'vec', VLoad(array, start + at_taps, stride)))
            leaf += _select(k)
            stores += [VStore(Symbol(rule.outputs[0].name), starts[0].xreplace({V0: v0, **row}), S.One, Symbol(best)),
                       VStoreIndex(Symbol(rule.outputs[1].name), starts[1].xreplace({V0: v0, **row}), Symbol(position),
                                   expand(rest.xreplace({vec: v0, **row})), step)]
            if edge:   # -inf (or +inf: rarely, and harmless) makes the sentinel NaN
                stores.append(Assign(Symbol(f'{SENTINEL}{k}'), VNotFinite(Symbol(best)), '+='))
        nest = _nest(term, loop_order(term), set(rule.index) | set(rows[0].values()), mine, list(term.divs), [],
                     tuple(leaf), steps)
        first = first_visit(nest)
        for k in range(len(chains)):
            decls += [Declare(f'{BEST}{k}', 'vec', VSplat(-oo)),
                      Declare(f'{POSITION}{k}', 'vindex', tap.xreplace(first))]
        if columns is None:
            return (*decls, *nest, *stores)
        return (Branch(columns.conditions + (columns.stride >= least, LANES >= 16),
                       (*decls, *_registered(chains, mine), *stores), (*decls, *nest, *stores)),)

    def _select(k) -> tuple:
        """Chain k's selection of its candidate x{k}: larger is taken (VSelectMax), and the candidate
        goes into the row's sentinel k, NaN once a candidate is: the row then runs the scalar element
        again, which has the NaN rule.  The vector compare leaves it out: a compare and a mask OR less
        per tap and chain."""
        x = Symbol(f'x{k}')
        return VSelectMax(f'{BEST}{k}', f'{POSITION}{k}', x, tap), Assign(Symbol(f'{SENTINEL}{k}'), x, '+=')

    def _registered(chains, conds) -> tuple:
        """The taps of ``chains`` (row, chunk start, at a border) from row registers (ColumnTaps): each
        window row's columns loaded once a chunk, the lanes some tap reads (memory-safe: in the interior
        every tap's lanes are inside; a border chunk's lanes are masked to its row too, -inf outside, as
        its taps' loads do), the column taps in the scalar nest's order inside (the same selection
        order).  At a stride of 3 or more, where a strided load is a scalar gather, of 16 lanes or more
        (8x64x56x56, 3x3 s3 p1: float32 1.11 -> 0.72 ms; float64's 8-lane gathers were faster, 1.61
        against 1.70 ms).
        At stride 2 the permuted loads were faster while the tap loop ran over a run-time window (0.70
        against 0.92 ms: each tap's permute indices computed, a third source mixed in by a compare); the
        common window's copy has constant taps (max_vector_nodes)."""
        m = columns.tap
        loads, selects, masks = [], [], []
        for k, (row, v0, edge) in enumerate(chains):
            registers = [Symbol(f'r{i}_{k}') for i in range(3)]
            chunk_masks = columns.masks(f'_{k}')
            masks += columns.mask_declarations(v0, f'_{k}', needed=True, bounded=edge)
            start = columns.start(value).xreplace({V0: v0, **row})
            array = Symbol(columns.tensor.name)
            loads += [Declare(r.name, 'vec', VLoadOr(array, start + i * LANES, S.One, chunk_masks[i], -oo) if edge
                              else VLoadMasked(array, start + i * LANES, S.One, chunk_masks[i]))
                      for i, r in enumerate(registers)]
            selects += [Declare(f'x{k}', 'vec', columns.taps(registers)), *_select(k)]
        others = [v for v in loop_order(term) if v != m]
        mine = [c for c in conds if m in c.free_symbols]
        known = set(rule.index) | set(chains[0][0].values())
        inner = _nest(term, [m], known | set(others), mine, [], [], tuple(selects), steps)
        rows = _nest(term, others, known, [c for c in conds if c not in mine], [], [], tuple(loads) + tuple(inner),
                     steps)
        return tuple(masks) + tuple(rows)
    reach = _bounds(vec, [c for c in term.conds if vec in c.free_symbols], {vec})[:2]   # the outputs a tap is in
    columns = _column_taps(rule, term, value, vec) if loop_order(term)[-1:] == [
        v for v in term.vars if v in value.indices[-1].free_symbols] else None   # the column tap innermost

    def row(rows, least) -> tuple:
        """The row's nodes for each of ``rows`` (substitutions of the row index), all in one pass; a row
        whose chunks met a NaN runs the scalar element again.  Several rows: where a row is a left border
        and one chunk (padding on the left, vlo <= LANES, the rest of the row in one chunk ending at vhi,
        no border on the right), a border chunk at 0 interleaved with that chunk, their taps from row
        registers at a stride of ``least`` or more.  ResNet's pooling (8x64x56x56 3x3 s2 p1, float32, 1
        thread, the kernel in a harness): 0.519 -> 0.500 ms.  The same border chunks in every row (the
        single rows, right borders, paddings past a vector) made it slower than the scalar elements they
        replaced: 0.55-0.60 ms."""
        element, size = max_nodes(rule, steps, rows), rule.sizes[-1]
        sentinels = [Symbol(f'{SENTINEL}{k}') for k in range(2 * len(rows))]   # the most chains of a chunk
        body = _interior_chunks(vec, size, lambda *at: chunks(*at, rows=rows), element)
        if len(rows) > 1:
            body = (Branch((VLO > 0, VLO <= LANES, VHI - VLO + 1 >= LANES, VHI + 1 <= 2 * LANES, VHI + 1 >= size),
                           chunks(S.Zero, VHI - LANES + 1, rows=rows, border=(0,), least=least), body),)
        return (Declare('vlo', 'index', lo), Declare('vhi', 'index', hi),
                *(Declare(n.name, 'vec', S.Zero) for n in sentinels), *body,
                Guard((Ne(VAnyNaN(Add(*sentinels)), 0),), (Loop(vec, S.Zero, size - 1, element),)))
    def rows(least) -> tuple:
        """Every row; the border chunks of two rows take their taps from row registers at a stride of
        ``least`` or more."""
        paired = _paired_rows(rule, term, lo, hi)
        if paired is None:
            return parallel(_box_loops(rule.index[:-1], rule.sizes[:-1], row(({},), least)))
        u, inside = paired   # two rows at a time where their taps are all inside: twice the chains
        both = row(({u: _base(u)}, {u: _base(u) + 1}), least)
        return parallel(_box_loops(rule.index[:-2], rule.sizes[:-2],
                                   _rows_in_blocks(u, inside, rule.sizes[-2], row(({},), least), both, 2)))
    plane = Mul(*tensors[value.base].shape[len(rule.index) - len(rule.window):])
    body = _stride_versions(rows(3))
    common = _common_window(rule, columns)
    if common is not None:
        body = _copy_for(common, rows(2), body, also=(VREGS >= 32, LANES >= 16),
                         then=lambda copy: unrolled(copy, columns.tap))
        shared = _shared_rows(rule, term, value, columns, (candidate,))
        if shared is not None:
            strips = _strip_rows(rule, term, value, candidate, columns, common | shared, (lo, hi), starts, step,
                                 row(({},), 2), tuple(max_nodes(rule, steps)))
            body = _copy_for(common | shared, strips, body, also=(VREGS >= 32, LANES >= 16),
                             then=lambda copy: unrolled(copy, columns.tap))
    return (plane <= 2**31 - 1, widest <= 2**31 - 1), body


def _common_window(rule, columns, width: int = COMMON_WINDOW[0]) -> dict | None:
    """{stride: 2, window: width, dilation: 1} for the symbols of a window's column taps (ResNet's 3x3
    stride-2 pooling; VGG's 2x2 for an average: ROW_TAP_WIDTHS; those already numbers must have them:
    an average's dilation), or None.  Max
    pooling's copy takes the taps of two rows' border chunks from row registers, its tap loop unrolled
    (three constant offsets: each tap one or two permutes of constant indices, the registers' lane masks
    constants inside): 8x64x56x56 3x3 s2 p1, float32, 1 thread, the kernel in a harness, 0.51 -> 0.40 ms
    against the permuted load of each tap (two loads and a permute).  Not with a run-time window (0.70
    against 0.92 ms the other way: each tap's permute indices computed), nor in the other chunks of the
    copy (0.40 -> 0.45 ms: GCC's code for the whole function), nor the constants alone (0.540 -> 0.588
    ms).  Average pooling's forward (_row_taps) takes its taps in turn there, the third a lane shift
    of the first, its whole nest in the copy (_nest_for): 0.27 -> 0.23 ms."""
    if columns is None or not rule.window or columns.hi - columns.lo + 1 != rule.window[-1]:
        return None
    return _window_values(columns.stride, rule.window[-1], columns.dilation, width)


def _window_values(stride, window, dilation, width: int = COMMON_WINDOW[0]) -> dict | None:
    """{symbol: number} setting an axis's stride, window and dilation to 2, ``width``, 1 (the common
    window's: 3), or None: those already numbers must have them, the others be distinct symbols."""
    pairs = [(p, v) for p, v in ((stride, S(2)), (window, S(width)), (dilation, S.One)) if p != v]
    values = dict(pairs)
    return None if any(not p.is_Symbol for p in values) or len(values) != len(pairs) else values


def _shared_rows(rule, term, value, columns, agree: tuple = ()) -> dict | None:
    """The common window's values for the symbols of the row axis (stride, window, dilation of the index
    before the vector's: with the column axis's, ResNet's 3x3 stride-2 pooling on both axes), or None.
    Only for a window of two axes whose column constraints are exactly the input's bounds (zero_padded:
    the strips mask their loads by them), and when, with those values, the last window row of output
    row u is the first of row u + 1 -- the same input read (``value``), and the same ``agree`` (max
    pooling's positions), found by substitution -- so that a strip carries it (_strip_rows,
    _sum_strips)."""
    if len(term.vars) != 2 or len(rule.index) < 2 or term.divs or not zero_padded(
            term, {columns.vec, columns.tap}, columns.column, columns.tensor.shape[-1], list(rule.hyps)):
        return None
    u, row = rule.index[-2], expand(value.indices[-2])
    (m,) = [v for v in term.vars if v != columns.tap]
    if any(v in row.free_symbols for v in (columns.vec, columns.tap)) or any(
            u in e.free_symbols or m in e.free_symbols for e in value.indices[:-2]):
        return None
    values = _window_values(row.diff(u), rule.window[-2], row.diff(m))
    if values is None:
        return None
    first, last = (S(e).xreplace(values) for e in _box(term, m, rule))
    shared = [(e.xreplace({u: u + 1, m: first}) - e.xreplace({m: last})).xreplace(values)
              for e in (*value.indices, *agree)]
    return values if all(expand(d) == 0 for d in shared) else None


def _strip_rows(rule, term, value, candidate, columns, values: dict, vector: tuple, starts: list, step,
                one_row: tuple, element: tuple) -> tuple:
    """The planes of a max kernel whose rows share a window row (_shared_rows; ``values``, its copy's):
    the rows whose taps along u are all inside in strips down the plane, two chunks of LANES outputs
    wide (then two or one that end the row: _strips_across).  A strip selects along each
    window row (the column taps from row registers, loaded masked by the row's bounds, -inf outside;
    the tap one stride on by a lane shift of the first, VNext) and then among the window's rows (claim
    pool.max-rows: the selector folds row by row); a row's last window row is the next row's first,
    carried in registers: two window rows a row, not three.  The chains hold positions from the
    plane's row on (u's part with the taps'), so the carried row's hold.  A chunk that reaches past the
    row's interior (``vector``) and meets a window whose taps inside are all -inf, or a NaN anywhere,
    sends the plane's inside rows to the scalar ``element``.  The other rows run ``one_row``.
    8x64x56x56 3x3 s2 p1 float32, 1 thread, C driver: 0.43 -> 0.29 ms with strips of one chunk and each
    tap by permutes, 0.26 ms as they are (a hand kernel with two chunks a row at a time: 0.23)."""
    u, vec = rule.index[-2:]
    (m,) = [v for v in term.vars if v != columns.tap]
    lo_m, hi_m = (int(S(e).xreplace(values)) for e in _box(term, m, rule))
    taps = columns.numbers(values)
    held, lane = _split_taps(candidate, [*term.vars, u])   # the chains' part of the positions, the store's
    sentinel = Symbol(f'{SENTINEL}0')
    (first, last), size = _row_interior(rule, term, u, {}), rule.sizes[-1]

    def select_row(at: dict, name: str, v0, k: int) -> tuple:
        """(nodes, best, position) of the window row at ``at`` (values of u and m) in chunk k at v0."""
        registers, loads = columns.row_loads(value.xreplace(at), name, v0, k,
                                             lambda array, flat, mask: VLoadOr(array, flat, S.One, mask, -oo))
        best, position, nodes = Symbol(f'{name}v'), Symbol(f'{name}p'), list(loads)
        for t in taps:
            x, own = Symbol(f'x{t}_{name}'), held.xreplace({**at, columns.tap: t})
            nodes += [Declare(x.name, 'vec', columns.tap_at(registers, t, values)), Assign(sentinel, x, '+=')]
            nodes += [Declare(best.name, 'vec', x), Declare(position.name, 'vindex', own)] if t == taps[0] else \
                [VSelectMax(best.name, position.name, x, own)]
        return tuple(nodes), best, position

    def strip(*at) -> tuple:
        """Chunks at each of ``at`` down the inside rows, their work interleaved."""
        carry = [select_row({u: first, m: lo_m}, f'c{k}', v0, k) for k, v0 in enumerate(at)]
        later = [[select_row({m: j}, f'h{j}_{k}', v0, k) for k, v0 in enumerate(at)] for j in range(lo_m + 1, hi_m + 1)]
        row = [n for chunks in later for nodes, _, _ in chunks for n in nodes]
        for k, v0 in enumerate(at):
            best, position = Symbol(f'{BEST}{k}'), Symbol(f'{POSITION}{k}')
            row += [Declare(best.name, 'vec', carry[k][1]), Declare(position.name, 'vpos', carry[k][2]),
                    *(VSelectMax(best.name, position.name, chunks[k][1], chunks[k][2], lanes=True) for chunks in later),
                    VStore(Symbol(rule.outputs[0].name), starts[0].xreplace({V0: v0}), S.One, best),
                    VStoreIndex(Symbol(rule.outputs[1].name), starts[1].xreplace({V0: v0}), position,
                                lane.xreplace({vec: v0}), step),
                    Guard((Or(v0 < VLO, v0 + LANES - 1 > VHI),), (Assign(sentinel, VNotFinite(best), '+='),)),
                    Assign(carry[k][1], later[-1][k][1]), Assign(carry[k][2], later[-1][k][2])]
        return (*(d for k, v0 in enumerate(at) for d in columns.mask_declarations(v0, f'_{k}', needed=True)),
                *(n for nodes, _, _ in carry for n in nodes), Loop(u, first, last, tuple(row)))
    strips = (Declare(VLO.name, 'index', vector[0]), Declare(VHI.name, 'index', vector[1]),
              Declare(sentinel.name, 'vec', S.Zero), *_strips_across(size, strip),
              Guard((Ne(VAnyNaN(sentinel), 0),), (Loop(u, first, last, (Loop(vec, S.Zero, size - 1, element),)),)))
    plane = (Loop(u, S.Zero, _min([first, rule.sizes[-2]]) - 1, one_row),
             Branch((last >= first, size >= LANES), strips, (Loop(u, first, last, one_row),)),
             Loop(u, _max([first, last + 1]), rule.sizes[-2] - 1, one_row))
    return parallel(_box_loops(rule.index[:-2], rule.sizes[:-2], plane))


def _paired_rows(rule, term, lo, hi) -> tuple | None:
    """(u, (first, last)): the free index before the vector variable, if there is one, and its rows
    whose taps are all inside; None where the vector's interior (lo, hi) or a divisibility condition
    depends on it, or its constraints on another index."""
    if len(rule.index) < 2:
        return None
    u = rule.index[-2]
    if u in (S(lo).free_symbols | S(hi).free_symbols) or any(u in e.free_symbols for e, _ in term.divs):
        return None
    inside = _row_interior(rule, term, u, {})
    return None if inside is None else (u, inside)


def _split_taps(expr: Expr, taps) -> tuple:
    """(the terms of ``expr`` with a tap variable, the others)."""
    expr = expand(expr)
    with_taps = Add(*[t for t in Add.make_args(expr) if t.free_symbols & set(taps)])
    return with_taps, expr - with_taps


# ----------------------------------------------------------------------------- scatter (average pooling backward)

def scatter_vector_nodes(rule: KernelRule, term, value: Expr, outer: list, per: list, taps: list, zero: tuple,
                         visit: tuple) -> tuple:
    """The scatter form out[..., where(w, m)] += value(w) (lower._scatter_nodes) with LANES windows w
    at a time along the last window variable.  In the interior box of the window variables -- every
    tap m of every window inside the constraints -- the taps loop outermost: two adds to one output
    element are then a whole sweep apart (a masked add right after another to the same memory waits
    for it: 3.4x slower, measured), and the value's non-array factors are simplified under the
    interior's facts (an average's divisor: the full window).  The windows outside the box run the
    scalar ``visit``; ``zero`` clears each block of the output first.  Rows of windows outside the box
    (a padded pool's first row) run their interior chunks too (_border_row: pool3 average backward
    spent half its time in the scalar border).  A value with selector compares (selector_picks) runs only
    where the windows tile the output (_found_chunks)."""
    picks = selector_picks(value)
    value = value / Mul(*picks)
    vec = per[-1]
    box = {v: _box(term, v, rule) for v in per + taps}
    facts = list(rule.hyps) + [expand(e) for u in taps for e in (u - box[u][0], box[u][1] - u)]
    inside, decls, lanes_facts = {}, [], []
    for w in per:
        worst = [_worst_case(rule, term, c, set(taps)) for c in term.conds if w in c.free_symbols]
        if any(c.free_symbols & (set(per) - {w}) for c in worst):
            raise LoweringError(f'{rule.name}: the windows of {w} are coupled to other window variables')
        inside[w] = tuple(Symbol(f'{w.name}_{end}', integer=True) for end in ('lo', 'hi'))
        decls += [Declare(name.name, 'index', bound) for name, bound in zip(inside[w], _bounds(w, worst, {w})[:2])]
        facts += worst
        lanes_facts += worst if w == vec else []
    if not all(holds(c, facts) for c in term.conds):
        raise LoweringError(f'{rule.name}: the interior of the windows does not imply their constraints')
    arrays = [f for f in Mul.make_args(value) if isinstance(f, Indexed)]
    factor = within(value / Mul(*arrays), facts)
    if factor.free_symbols & set(per[:-1]) or factor.has(Indexed):
        raise LoweringError(f'{rule.name}: the value\'s factor {factor} is not one per row of windows')
    out = rule.outputs[0]
    where = dict(scatter_targets(rule))
    flat = access(out, [where.get(v, v) for v in rule.index]).args[1]
    start, stride = expand(flat.xreplace({vec: V0})), expand(flat.diff(vec))
    if stride.has(vec) or stride.free_symbols & set(taps):
        raise LoweringError(f'{rule.name}: the targets are not evenly spaced along {vec}')
    vlo, vhi = inside[vec]

    def shares(lanes, factor, at=None, tag=''):   # (nodes, name) of the chunk's values, with the taps ``at``
        nodes, x, h = [], S.One, Symbol('h')
        for k, f in enumerate(arrays):
            name = Symbol(f'x{k}{tag}')
            nodes += _load(_tensors(rule)[f.base], f.xreplace(at or {}), vec, name, FMASK if lanes else None)
            x *= name
        factor = factor.xreplace(at or {})
        if vec in factor.free_symbols:
            h = Symbol(f'h{tag}')
            nodes.append(Lanes(h.name, vec, V0, factor))
        nodes.append(Declare(f'shares{tag}', 'vec', x * h if factor != 1 else x))
        return nodes, Symbol(f'shares{tag}')

    def chunk(lanes, factor=factor, store=False):   # ``store``: the chunk's targets are written once
        nodes, values = shares(lanes, factor)
        if lanes:
            nodes.insert(0, Declare(FMASK.name, 'index', LaneMask(*lanes)))
        if store:
            return tuple(nodes) + (VStore(Symbol(out.name), start, stride, values, FMASK if lanes else None),)
        mask = FMASK if lanes else LaneMask(S.Zero, LANES - 1)
        return tuple(nodes) + (VAdd(Symbol(out.name), start, stride, mask, values),)

    def sweep(windows, chunk, taps=taps, rewrite=False):   # the taps outermost, then the rows of windows, chunks
        row = _chunks_to(*windows[vec], chunk, rewrite=rewrite)   # along each row
        scalar = factor != 1 and vec not in factor.free_symbols   # one factor per row, or for the whole block
        if scalar and factor.free_symbols & set(per):
            row = (Declare('h', 'acc', factor),) + row
        for w in reversed(per[:-1]):
            row = (Loop(w, *windows[w], row),)
        for u in reversed(taps):
            row = (Loop(u, *box[u], row),)
        if scalar and not factor.free_symbols & set(per):
            row = (Declare('h', 'acc', factor),) + row
        return row

    row = sweep(inside, chunk)
    lo, hi = box[vec]
    edges = (Loop(vec, lo, _min([vlo, hi + 1]) - 1, visit), Loop(vec, _max([vhi + 1, vlo]), hi, visit))
    if len(per) > 1:
        border = _border_row(term, value / Mul(*arrays), [*outer, *per[:-1]], taps, vec, inside[vec],
                             list(rule.hyps) + lanes_facts, chunk)
        edges = (Branch(tuple(c for w in per[:-1] for c in (w >= inside[w][0], w <= inside[w][1])), edges,
                        border + edges),)
    for w in reversed(per[:-1]):
        edges = (Loop(w, *box[w], edges),)
    def blocks(plane, flags=(), rows_collapsed=True):   # the plane's nest in every block of the outer indices,
        nest = parallel(_box_loops(outer, out.shape[:len(outer)], plane))   # in parallel
        depth = lambda n: n.parallel if rows_collapsed else min(n.parallel, len(outer))
        return _stride_versions(tuple(replace(n, flags=flags, parallel=depth(n)) if isinstance(n, Loop) else n
                                      for n in nest))

    if picks:
        cover = _exact_cover(rule, where, per, taps, box)
        if cover is None or factor != 1 or len(picks) != 1:
            raise LoweringError(f'{rule.name}: selector compares where the windows do not tile the output')
        return _found_chunks(rule, picks[0], vec, per, taps, box, (start, stride), cover, shares, blocks)
    general = blocks(zero + tuple(decls) + row + edges)
    cover = _exact_cover(rule, where, per, taps, box)
    if cover is None:
        return general
    tiled = sweep(box, lambda lanes: chunk(lanes, store=True), rewrite=True)   # every window inside, each
    #                                                                             target written by one
    tiled = blocks(tiled)
    u = _pair_tap(start, stride, [u for u in taps if u not in factor.free_symbols], box, cover)
    if u is None:
        return (Branch(cover, tiled, general),)
    lo = box[u][0]

    def both(lanes):   # the chunk's shares for both taps of u, one interleaved store (a partial chunk: each tap's)
        if lanes:
            return (Loop(u, lo, lo + 1, chunk(lanes, store=True)),)
        first, a = shares(None, factor, {u: lo}, 'a')
        same = value.xreplace({u: lo}) == value.xreplace({u: lo + 1})   # (an average's shares)
        second, b = ([], a) if same else shares(None, factor, {u: lo + 1}, 'b')
        return tuple(first + second) + (VStorePair(Symbol(out.name), start.xreplace({u: lo}), a, b),)
    paired = substitute(sweep(box, both, [t for t in taps if t != u], rewrite=True), {stride: S(2)})
    tiled = fold(tiled, frozenset({Eq(stride, 2)}))   # (its copy for stride 2 cannot run: the pairs take it)
    return (Branch(cover + (Eq(stride, 2),), blocks(paired), (Branch(cover, tiled, general),)),)


def _found_chunks(rule, pick, vec, per: list, taps: list, box: dict, target: tuple, cover: tuple, shares,
                  blocks) -> tuple:
    """A scatter whose windows tile its output, its value a window's array factors where the window's selector
    names the tap (``pick``: derive.pool.max_pool_tiling) and 0 elsewhere: per chunk of windows, every tap in
    turn compares the selectors with the tap's positions (VMatch), stores the factors where they match and +0
    elsewhere (VKeep: an infinite or NaN gradient only where selected), and ORs the matches together; a
    chunk with a window that matched no tap (its selector outside the window) sets MISSING, and the kernel
    then runs the selector scatter (lower._checked_first).  Each output element is stored once, with no
    zeroing and no adds; at stride 2 along the vector, both values of the pair tap in one interleaved store
    (VStorePair), as the average's tiling.  Only the blocks' loops are collapsed under OpenMP, not the rows
    of windows: a row's two chunks then share its index arithmetic (pool2 max backward float32, Zen 4, C
    driver: 0.27 ms with the rows collapsed, 0.20 without; the scatter 0.32)."""
    out, (start, stride) = rule.outputs[0], target
    data, = (a for a in pick.args if isinstance(a, Indexed))
    position, = (a for a in pick.args if a != data)
    ref = access(_tensors(rule)[data.base], data.indices)
    flat = ref.args[1]
    found, missing, selectors = Symbol('found', integer=True), Symbol(MISSING, integer=True), Symbol('selectors')

    def tap(mask, at: dict, tag: str, x) -> tuple:   # (nodes, kept vector) of one tap
        hit, where = Symbol(f'hit{tag}', integer=True), expand(position.xreplace(at))
        match = VMatch(selectors, expand(where.xreplace({vec: V0})), expand(where.diff(vec)), mask)
        return (Declare(hit.name, 'index', match), Assign(found, hit, '|=')), VKeep(x, hit)

    def chunk(lanes, pair=None):
        every = FMASK if lanes else LaneMask(S.Zero, LANES - 1)
        nodes, x = shares(lanes, S.One)
        head = ((Declare(FMASK.name, 'index', LaneMask(*lanes)),) if lanes else ()) + tuple(nodes) + (
            Declare(selectors.name, 'vpos', VSelectors(ref.args[0], expand(flat.xreplace({vec: V0})),
                                                       expand(flat.diff(vec)), every)),)
        if pair is None or lanes:
            matched, kept = tap(every, {}, '', x)
            inner = matched + (VStore(Symbol(out.name), start, stride, kept, FMASK if lanes else None),)
            loops = [(t, *box[t]) for t in taps if pair is None or t != pair]
            loops += [(pair, box[pair][0], box[pair][0] + 1)] if pair is not None else []
        else:
            lo = box[pair][0]
            (ma, ka), (mb, kb) = tap(every, {pair: lo}, 'a', x), tap(every, {pair: lo + 1}, 'b', x)
            inner = ma + mb + (VStorePair(Symbol(out.name), start.xreplace({pair: lo}), ka, kb),)
            loops = [(t, *box[t]) for t in taps if t != pair]
        for t, lo, hi in reversed(loops):
            inner = (Loop(t, lo, hi, inner),)
        return head + (Declare(found.name, 'index', S.Zero),) + inner + (
            Guard((Ne(found, every),), (Assign(missing, S.One),)),)

    def sweep(chunk) -> tuple:
        row = _chunks_to(*box[vec], chunk, rewrite=True)
        for w in reversed(per[:-1]):
            row = (Loop(w, *box[w], row),)
        return row

    plain = blocks(sweep(chunk), (MISSING,), rows_collapsed=False)
    u = _pair_tap(start, stride, taps, box, cover)
    if u is not None:
        paired = substitute(sweep(lambda lanes: chunk(lanes, u)), {stride: S(2)})
        paired = blocks(paired, (MISSING,), rows_collapsed=False)
        plain = (Branch((Eq(stride, 2),), paired, fold(plain, frozenset({Eq(stride, 2)}))),)
    plane = Mul(*out.shape[len(out.shape) - len(per):])   # the selectors' int32 lanes hold its positions
    return (Branch((plane <= 2 ** 31 - 1,), plain, (Assign(missing, S.One),)),)


def _pair_tap(start, stride, taps: list, box: dict, cover: tuple):
    """The tap u whose coefficient in the target is 1 and whose box is, under the exact cover, as long as
    the stride of the targets along the vector (derive.zsum.exact_cover: the tap box's length is the
    window step), or None.  At stride 2 the tap takes two values, whose targets are 1 apart: the chunk's
    two taps then fill 2 LANES contiguous elements, stored interleaved (VStorePair) in place of two
    stride-2 stores."""
    for u in taps:
        length = box[u][1] - box[u][0] + 1 - stride
        if expand(start.diff(u)) == 1 and any(expand(c.lhs - c.rhs - length) == 0 for c in cover):
            return u
    return None


def _exact_cover(rule, where: dict, per: list, taps: list, box: dict) -> tuple | None:
    """Conditions under which the windows tile the scatter's output exactly (derive.zsum.exact_cover on
    each axis, a window variable and a tap of its own per axis): every tap of every window then lies
    inside, and each output element is written by one of them, so the kernel stores the shares without
    zeroing the output first and without adds (pool2 average backward 0.40 -> 0.26 ms).  None when
    the targets are not of that shape."""
    out, conds, used = rule.outputs[0], [], []
    for axis, v in enumerate(rule.index):
        if v not in where:
            continue
        windows, tapped = ([x for x in group if x in where[v].free_symbols] for group in (per, taps))
        if len(windows) != 1 or len(tapped) != 1:
            return None
        (w,), (u,) = windows, tapped
        cover = exact_cover(where[v], w, box[w], u, box[u], out.shape[axis])
        if cover is None:
            return None
        conds += cover
        used += [w, u]
    return tuple(conds) if sorted(used, key=str) == sorted(per + taps, key=str) else None


def _border_row(term, factor: Expr, known: list, taps: list, vec, interior: tuple, facts: list, chunk) -> tuple:
    """The chunks over ``interior`` = (lo, hi) of the vector variable in a row of windows outside the
    interior box of the other window variables: every tap loops over its range in this row (the
    constraints that involve the vector variable hold in the interior for every tap in its box:
    ``facts``), the factor simplified under these facts, once per row when the vector variable drops
    out of it."""
    factor = within(factor, facts)
    if factor.has(Indexed):
        raise LoweringError('a factor of the scattered value reads an array')
    conds = [c for c in term.conds if c.free_symbols & set(taps) and vec not in c.free_symbols]
    row = _chunks_to(*interior, lambda lanes: chunk(lanes, factor))
    nest = tuple(_nest(term, taps, set(known), conds, [], [], row, {}))   # no divisibility: no lattice steps
    scalar = factor != 1 and vec not in factor.free_symbols
    return ((Declare('h', 'acc', factor),) if scalar else ()) + nest
