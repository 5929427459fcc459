"""Outer-product form of a weight gradient: the vector over output channels, the taps in registers.

    # KernelRule, reduction Tile -> (run-time conditions, loop nest) | None

lower_vector's reduction tile runs a weight gradient

    dW[k, c, m] = sum_{n, o} g[n, k, o] x[n, c, S o + D m - P]

along the row o1: 8 output channels x 2 input channels of products take 10 vector loads, most of them
split across two cache lines (a row of 56 floats is not a whole number of lines, and the taps shift the
input), and a row of 56 pays 64 lanes.  Here the vector runs over LANES output channels k instead, the
index only the upstream gradient reads.  A band of its rows is first copied with k innermost into a stack
array (PACK, of at most PACK_ELEMENTS).  Each position o then loads one vector from it and adds it, times
the input value each tap reads (a broadcast), into one accumulator per tap and input channel of a block:
3^d taps x CB channels, one vector load and 3^d CB broadcasts per 3^d CB FMAs.  The window is
specialized to 3 on every axis: its taps are constants, unrolled in registers.

* the positions where every tap is inside the input (each axis's constraints at its extreme taps) run
  without checks; elsewhere each tap runs under its constraints: a tap on the padding adds nothing, as in
  the rule's sum (an infinite gradient there leaves it finite, as does torch's oneDNN path; its im2col
  path and generated.numpy multiply the padding's zeros: NaN);
* the threads share blocks of LANES output channels x CHUNK input channels: as many input channels as
  make the blocks at least the threads, at most MAX_CHANNELS (each block packs the band again: blocks of
  8 channels read grad_output 8 times, resnet 19.5 -> 22.7 ms; the results are the same whatever the
  blocks); a block's accumulators are parked (PARKED) across the batch and the bands, then stored once,
  LANES output channels a strided store, masked past the last;
* runs where the target has 32 vector registers, the output channels fill a vector at least (tiny's one
  channel took 15 KiB of stack for a 3 KiB input) and a row of the pack fits it; a band is at most the
  rows there are.

resnet float32 weight gradient (8x64x56x56, 3x3, padding 1), Zen 4, C driver: 25.5 -> 19.4 ms at 1 thread,
14 -> 9.6 ms at 2 (a prototype: bands of 4-16 rows alike, the whole plane packed 20-22 ms); in the bench
1.18-1.31x -> 0.98x torch at 1 thread, 1.22x -> 0.87x at 2.
"""
from __future__ import annotations

from math import prod

from sympy import Eq, Max, Min, S, Symbol, expand

from .ir import (ArrayRef, Assign, Branch, CeilDiv, Declare, FloorDiv, Guard, LaneMask, Loop, VLoad, VSplat, VStore,
                 one_by_one, substitute)
from .lower import THREADS, LoweringError, _bounds, _tensors, access, parallel
from .stack import LANES

WINDOW = 3           # the window size the form is specialized to, on every axis
BLOCK_ACCUMULATORS = 18   # the taps x a block of input channels, of 32 registers (3^3 taps: 27; 3 x 9 ran as fast)
PACK_ELEMENTS = 4096   # the pack's size: a band of at least one row (16 KiB of floats)
MAX_CHANNELS = 64   # input channels of a parallel block at most (their parked accumulators: 36 KiB of vectors)
PACK, PARKED, GV = Symbol('pack'), Symbol('parked'), Symbol('gv')
KB, CC, CHUNK, LANE, B0, B1, BAND, CB, T = (Symbol(n, integer=True)
                                           for n in ('kb', 'cc', 'chunk', 'lane', 'b0', 'b1', 'band', 'cb', 't'))


def outer_nodes(rule, tile, sizes: dict, arrays, taps, batch):
    """(conditions, nest) of the outer-product form of the reduction ``tile`` (blocks: the index only the
    upstream factor reads, the one the taps shift), ``arrays`` its two factors, ``taps`` the window's free
    indices, ``batch`` the summed index looped outside the positions; None where the form does not apply."""
    found = _roles(rule, tile, arrays, taps, batch)
    if found is None:
        return None
    lane, chan, upstream, shifted, positions = found
    window = {sizes[t]: S(WINDOW) for t in taps}
    conds = [expand(c.xreplace(window)) for c in tile.term.conds]
    among = {batch, *positions, *taps}
    count = WINDOW ** len(taps)
    others = [v for v in rule.index if v not in (lane, chan, *taps)]
    try:
        boxes = [_box(v, conds, among) for v in positions]
        form = _Form(rule, sizes, lane, chan, upstream, shifted, positions, boxes, taps, conds)
        nest = form.nest(batch, _box(batch, conds, among), max(1, BLOCK_ACCUMULATORS // count))
    except LoweringError:
        return None
    for v in reversed(others):
        nest = (Loop(v, S.Zero, sizes[v] - 1, nest),)
    blocks = prod((sizes[v] for v in others), start=S.One) * CeilDiv(sizes[lane], LANES)
    chunk = Min(MAX_CHANNELS, CeilDiv(sizes[chan], CeilDiv(THREADS, blocks)))
    conditions = (*(Eq(sizes[t], WINDOW) for t in taps), sizes[lane] >= LANES, LANES * form.row <= PACK_ELEMENTS)
    return conditions, (Declare(CHUNK.name, 'index', chunk),) + parallel(substitute(nest, window))


def _roles(rule, tile, arrays, taps, batch):
    """(lane index, input-channel index, upstream factor, shifted factor, positions) or None."""
    if tile.vec_free or len(tile.blocks) != 2 or len(arrays) != 2 or tile.term.divs or tile.hoisted != 1:
        return None
    if batch is None or len(taps) < 2 or rule.at or tile.special:
        return None
    (first, r1), (second, r2) = tile.blocks
    if {r1, r2} != {8, 2}:
        return None
    lane, chan = (first, second) if r1 == 8 else (second, first)
    readers = {v: [f for f in arrays if any(v in e.free_symbols for e in f.indices)] for v in (lane, chan)}
    if len(readers[lane]) != 1 or len(readers[chan]) != 1 or readers[lane][0] == readers[chan][0]:
        return None
    upstream, shifted = readers[lane][0], readers[chan][0]
    if set().union(*(e.free_symbols for e in upstream.indices)) & set(taps):
        return None
    positions = [v for v in tile.term.vars if v != batch]
    return lane, chan, upstream, shifted, positions


def _box(var, conds, among: set) -> tuple:
    """(lo, hi) of ``var`` from the constraints on it alone (none of the other variables ``among``)."""
    lo, hi, _ = _bounds(var, [c for c in conds if c.free_symbols & among == {var}], {var})
    return lo, hi


class _Form:
    """The nest's parts, sharing the rule's pieces."""

    def __init__(self, rule, sizes, lane, chan, upstream, shifted, positions, boxes, taps, conds):
        self.rule, self.sizes = rule, sizes
        self.lane, self.chan, self.upstream, self.shifted = lane, chan, upstream, shifted
        self.positions, self.boxes, self.taps, self.conds = positions, boxes, taps, conds
        self.row = prod((hi - lo + 1 for lo, hi in boxes[1:]), start=S.One)   # a row's positions (after the first)
        self.tensors = _tensors(rule)
        self.combos = [()]
        for _ in taps:
            self.combos = [c + (m,) for c in self.combos for m in range(WINDOW)]

    def nest(self, batch, batch_box, block) -> tuple:
        """The blocks of LANES output channels x CHUNK input channels (parallel): the block's parked
        accumulators cleared, its passes over the batch and the bands of rows, its stores."""
        sizes, lane, chan = self.sizes, self.lane, self.chan
        count = len(self.combos)
        first_lo, first_hi = self.boxes[0]
        blo, bhi = batch_box
        passes = (Loop(batch, blo, bhi, (
            Loop(B0, first_lo, first_hi, (Declare(B1.name, 'index', Min(B0 + BAND - 1, first_hi)),)
                 + self._pack() + self._channel_blocks(block), BAND),)),)
        clear = Loop(T, S.Zero, CHUNK * count - 1, (Assign(ArrayRef(PARKED, T), VSplat(S.Zero)),))
        zero = Guard((sizes[lane] - KB < LANES,),
                     (Loop(T, S.Zero, BAND * self.row * LANES - 1, (Assign(ArrayRef(PACK, T), S.Zero),)),))
        body = (Declare(PARKED.name, 'vbuf', CHUNK * count), clear,
                Declare(BAND.name, 'index', Max(1, Min(first_hi - first_lo + 1,
                                                       FloorDiv(PACK_ELEMENTS, LANES * self.row)))),
                Declare(PACK.name, 'buf', BAND * self.row * LANES), zero) + passes + (self._stores(),)
        return (Loop(KB, S.Zero, sizes[lane] - 1, (Loop(CC, S.Zero, sizes[chan] - 1, body, CHUNK),), LANES),)

    def _slot(self) -> object:
        """The first element of the current position's vector in the pack."""
        flat = self.positions[0] - B0
        for v, (lo, hi) in zip(self.positions[1:], self.boxes[1:]):
            flat = flat * (hi - lo + 1) + v - lo
        return expand(flat * LANES)

    def _pack(self) -> tuple:
        """The band's rows of the upstream factor, the LANES output channels of the block innermost."""
        at = self.upstream.xreplace({self.lane: KB + LANE})
        copy = (Loop(LANE, S.Zero, Min(LANES, self.sizes[self.lane] - KB) - 1,
                     (Assign(ArrayRef(PACK, self._slot() + LANE), access(self.tensors[at.base], at.indices)),)),)
        for v, (lo, hi) in reversed(list(zip(self.positions, self.boxes))):
            copy = (Loop(v, B0, B1, copy) if v == self.positions[0] else Loop(v, lo, hi, copy),)
        return copy

    def _channel_blocks(self, block) -> tuple:
        """The input channels of the parallel block in register blocks of ``block`` (the last ones one at a
        time)."""
        last = Min(CC + CHUNK, self.sizes[self.chan]) - 1
        full = self._block(CB, block)
        if block == 1:
            return (Loop(CB, CC, last, full),)
        single = (one_by_one(CB, last, self._block(CB, 1)),)
        return (Loop(CB, CC, last, (Branch((CB + block - 1 <= last,), full, single),), block),)

    def _name(self, ci, combo) -> Symbol:
        return Symbol('v_' + '_'.join(str(k) for k in (ci, *combo)))

    def _parked(self, channel, j):
        """The parked accumulator of tap ``j`` of an input channel of the parallel block."""
        return ArrayRef(PARKED, (channel - CC) * len(self.combos) + j)

    def _block(self, base, width) -> tuple:
        """``width`` input channels from ``base``: the accumulators from the parking, every position of
        the band, the accumulators back."""
        slots = [(ci, j, combo) for ci in range(width) for j, combo in enumerate(self.combos)]
        load = tuple(Declare(self._name(ci, c).name, 'vec', self._parked(base + ci, j)) for ci, j, c in slots)
        back = tuple(Assign(self._parked(base + ci, j), self._name(ci, c)) for ci, j, c in slots)
        return load + self._positions(0, base, width) + back

    def _interior(self, var) -> tuple:
        """(lo, hi) of the position ``var`` where its constraints hold at every tap: each constraint at the
        end of each tap's range that minimizes it."""
        conds = []
        for c in self.conds:
            if var in c.free_symbols and c.free_symbols & set(self.taps):
                for t in sorted(c.free_symbols & set(self.taps), key=str):
                    a = c.coeff(t)
                    if not (a.is_positive or a.is_negative):
                        raise LoweringError(f'coefficient of {t} in {c} has no known sign')
                    c = expand(c.xreplace({t: 0 if a.is_positive else WINDOW - 1}))
                conds.append(c)
        lo, hi, _ = _bounds(var, conds, {var})
        return lo, hi

    def _positions(self, k, base, width) -> tuple:
        """Loops over the positions from the k-th on: the rows (all but the last) checked for the interior,
        the last split into its interior and the checked parts on either side."""
        var = self.positions[k]
        lo, hi = (B0, B1) if k == 0 else self.boxes[k]
        if k == len(self.positions) - 1:
            ilo, ihi = self._interior(var)
            edge = self._position(base, width, {var})
            return (Loop(var, lo, Min(ilo - 1, hi), edge),
                    Loop(var, Max(ilo, lo), Min(ihi, hi), self._position(base, width, set())),
                    Loop(var, Max(ihi + 1, ilo, lo), hi, edge))
        ilo, ihi = self._interior(var)
        inside = self._positions(k + 1, base, width)
        guarded = self._guarded_rest(k + 1, base, width)
        return (Loop(var, lo, hi, (Branch((var - ilo >= 0, ihi - var >= 0), inside, guarded),)),)

    def _guarded_rest(self, k, base, width) -> tuple:
        """The positions from the k-th on, every tap checked on every axis (a row outside the interior)."""
        body = self._position(base, width, set(self.positions))
        for var, (lo, hi) in reversed(list(zip(self.positions[k:], self.boxes[k:]))):
            body = (Loop(var, lo, hi, body),)
        return body

    def _position(self, base, width, guarded: set) -> tuple:
        """One position: its vector of output channels from the pack, added times each tap's input value
        into that tap's accumulator, each tap under its constraints on the positions ``guarded``."""
        out = [Declare(GV.name, 'vec', VLoad(PACK, self._slot(), S.One))]
        for ci in range(width):
            for combo in self.combos:
                values = dict(zip(self.taps, combo))
                at = self.shifted.xreplace({self.chan: base + ci, **values})
                step = Assign(self._name(ci, combo), GV * VSplat(access(self.tensors[at.base], at.indices)), '+=')
                checks = tuple(c.xreplace(values) >= 0 for c in self.conds
                               if c.free_symbols & set(self.taps) and c.free_symbols & guarded)
                out.append(Guard(checks, (step,)) if checks else step)
        return tuple(out)

    def _stores(self) -> Loop:
        """The parallel block's parked accumulators into the output: LANES output channels a strided store
        (masked past the last)."""
        out, c = self.rule.outputs[0], Symbol('c_out', integer=True)
        lanes = LaneMask(S.Zero, Min(LANES, self.sizes[self.lane] - KB) - 1)
        stores = []
        for j, combo in enumerate(self.combos):
            at = [e.xreplace({self.lane: KB, self.chan: c, **dict(zip(self.taps, combo))}) for e in self.rule.index]
            ref = access(out, at)
            stride = expand(access(out, [e + 1 if e == KB else e for e in at]).args[1] - ref.args[1])
            stores.append(VStore(ref.args[0], ref.args[1], stride, self._parked(c, j), lanes))
        return Loop(c, CC, Min(CC + CHUNK, self.sizes[self.chan]) - 1, tuple(stores))
