"""Array helpers of the generated NumPy kernels (copied into generated/numpy/_runtime.py).

window_view turns an affine index expression into a lazy strided view (zero padding
makes the in-bounds constraints of a sum vacuous); contract evaluates a sum of
products over labelled axes with one BLAS matrix product (batched over shared
axes) when there are two operands, as numpy.einsum does without batch support,
in parts when a window would not fit the workspace budget.
"""
from __future__ import annotations

import functools
import itertools
import math
import threading

import numpy as np
from numpy.lib.stride_tricks import as_strided


class Window:
    """v[u_0, ..., u_k] = padded[origin + sum_j steps[j] * u_j], read-only and lazy: ``part`` narrows it
    without touching memory, ``view`` pads only the block of ``array`` the window reads and returns the
    strided view (so a contraction split into parts never holds a padded copy of the whole array).

    pads: (before, after) zeros per axis of ``array``; origin: start per axis in the padded array;
    steps: for each view axis, the multiplier of every array axis (all Python ints).
    """

    def __init__(self, array: np.ndarray, pads, origin, shape, steps):
        self.array, self.pads, self.origin, self.shape, self.steps = array, pads, origin, tuple(shape), steps
        self.reach = []     # first and last padded index read, per array axis
        for i, o in enumerate(self.origin):
            lo = hi = o
            for step, n in zip(self.steps, self.shape):
                if step[i] > 0:
                    hi += step[i] * (n - 1)
                elif step[i] < 0:
                    lo += step[i] * (n - 1)
            self.reach.append((lo, hi))
        if min(self.shape) > 0 and any(lo < 0 or hi >= n + b + a for (lo, hi), n, (b, a)
                                       in zip(self.reach, array.shape, self.pads)):
            raise AssertionError(f'window leaves its array: reach {self.reach}, shape {array.shape}, pads {pads}')

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.array.itemsize

    def part(self, axis: int, lo: int, hi: int) -> 'Window':
        """The window with view axis ``axis`` narrowed to [lo, hi)."""
        origin = tuple(o + self.steps[axis][i] * lo for i, o in enumerate(self.origin))
        shape = self.shape[:axis] + (hi - lo,) + self.shape[axis + 1:]
        return Window(self.array, self.pads, origin, shape, self.steps)

    def view(self, slot: str = 'window') -> np.ndarray:
        """The strided view; its padded block (when the window reads padding) lives in the
        :func:`scratch` buffer ``slot`` until the next call that uses that slot."""
        if min(self.shape) == 0:
            return np.zeros(self.shape, self.array.dtype)
        block, pads = [], []
        for (lo, hi), (before, _), n in zip(self.reach, self.pads, self.array.shape):
            first, last = max(lo - before, 0), min(hi - before, n - 1)   # the array's part of the reach
            first, last = (first, last) if first <= last else (0, -1)
            block.append(slice(first, last + 1))
            pads.append((first - (lo - before), (hi - before) - last) if last >= first else (hi - lo + 1, 0))
        block = self.array[tuple(block)]
        if any(b or a for b, a in pads):   # numpy.pad costs 15 us a call: the borders' zeros and one copy
            padded = scratch(slot, [n + b + a for n, (b, a) in zip(block.shape, pads)], block.dtype)
            for axis, (b, a) in enumerate(pads):
                head = (slice(None),) * axis
                padded[head + (slice(0, b),)] = 0
                padded[head + (slice(padded.shape[axis] - a, None),)] = 0
            padded[tuple(slice(b, b + n) for n, (b, _) in zip(block.shape, pads))] = block
            block = padded
        base = block[tuple(slice(o - lo, None) for o, (lo, _) in zip(self.origin, self.reach))]
        strides = tuple(sum(k * s for k, s in zip(step, base.strides)) for step in self.steps)
        return as_strided(base, self.shape, strides, writeable=False)


def window_view(array: np.ndarray, pads, origin, shape, steps) -> Window:
    """The :class:`Window` of ``array`` (a kernel's operand; ``contract`` materializes it in parts)."""
    return Window(array, pads, origin, shape, steps)


def aligned(array: np.ndarray, labels: str, target: str) -> np.ndarray:
    """Sum out labels missing from ``target``, then order and broadcast axes as ``target``."""
    if labels == target:
        return array
    gone, order, where = _alignment(labels, target)
    if gone:
        array = array.sum(axis=gone)
    array = array.transpose(order)
    return array.reshape([1 if w is None else array.shape[w] for w in where])


@functools.cache
def _alignment(labels: str, target: str) -> tuple:
    """(axes summed out, the transposition of the rest, for each target label its axis or None): a
    kernel aligns the same labels once per tap (measured 5.6 -> 1.4 us a call)."""
    gone = tuple(i for i, c in enumerate(labels) if c not in target)
    labels = ''.join(c for c in labels if c in target)
    order = tuple(sorted(range(len(labels)), key=lambda i: target.index(labels[i])))
    kept = ''.join(labels[i] for i in order)
    return gone, order, tuple(kept.index(c) if c in kept else None for c in target)


# bytes: a temporary of a size in this range lives in a per-thread buffer kept across calls (see scratch)
SCRATCH_RANGE = (1 << 18, 1 << 25)
_scratch = threading.local()


def scratch(slot: str, shape, dtype) -> np.ndarray:
    """An uninitialized array for a temporary that every call of a kernel rebuilds: a view of this
    thread's buffer ``slot``, kept across calls, when its size lies in SCRATCH_RANGE.  A fresh allocation
    of megabytes page-faults again whenever glibc has mapped or trimmed it anew, which depends on the
    process's history: the s2 forward at 2 threads took 1196 faults and 4.3 ms a call, against 0.9 ms
    without faults, in a process that had run one torch convolution."""
    dtype = np.dtype(dtype)
    size = math.prod(shape) * dtype.itemsize
    if not SCRATCH_RANGE[0] <= size <= SCRATCH_RANGE[1]:
        return np.empty(shape, dtype)
    buffers = _scratch.__dict__.setdefault('buffers', {})
    if slot not in buffers or buffers[slot].nbytes < size:
        buffers[slot] = np.empty(size, np.uint8)
    return buffers[slot][:size].view(dtype).reshape(shape)


def release_scratch() -> int:
    """Free this thread's scratch buffers; returns the bytes they held (the bench traces a first call's
    workspace from none)."""
    return sum(b.nbytes for b in _scratch.__dict__.pop('buffers', {}).values())


def _merged(array: np.ndarray, shape: tuple, slot: str) -> np.ndarray:
    """array.reshape(shape), where shape merges runs of consecutive axes: a view when the strides allow,
    else a copy into the scratch buffer ``slot`` (a small one is reshaped at once: the stride walk cost
    tiny's input gradient 2 us a call)."""
    if array.nbytes < SCRATCH_RANGE[0] or array.flags.c_contiguous:
        return array.reshape(shape)
    axes = [(n, st) for n, st in zip(array.shape, array.strides) if n != 1]
    for extent in shape:
        size, stride = 1, None
        while size < extent and axes:
            n, st = axes.pop(0)
            if stride is not None and st * n != stride:
                break
            size, stride = size * n, st
        if size != extent:
            copy = scratch(slot, array.shape, array.dtype)
            np.copyto(copy, array)
            return copy.reshape(shape)
    return array.reshape(shape)


def _matmul(a, la, b, lb, out_labels):
    a_order, a_shape, b_order, b_shape, shape, labels = _matmul_plan(la, a.shape, lb, b.shape, out_labels)
    a2, b2 = _merged(a.transpose(a_order), a_shape, 'left'), _merged(b.transpose(b_order), b_shape, 'right')
    # nothing summed (one input channel): an outer product, which matmul runs in its slow loop (tiny 15 -> 2 us)
    if a_shape[2] == 1:
        result = a2 * b2
    else:
        result = np.matmul(a2, b2, out=scratch('product', (a_shape[0], a_shape[1], b_shape[2]),
                                                       np.result_type(a2, b2)))
    return result.reshape(shape), labels


@functools.lru_cache(maxsize=1024)
def _matmul_plan(la: str, a_shape: tuple, lb: str, b_shape: tuple, out_labels: str) -> tuple:
    """The transpositions and shapes of :func:`_matmul` (batch, left, summed x batch, summed, right), kept
    per signature: a small call spent more time planning than multiplying."""
    batch = [c for c in la if c in lb and c in out_labels]
    summed = [c for c in la if c in lb and c not in out_labels]
    left = [c for c in la if c not in lb]
    right = [c for c in lb if c not in la]
    sizes = {c: n for c, n in zip(la + lb, a_shape + b_shape)}
    prod = (lambda cs: math.prod(sizes[c] for c in cs))   # Python ints: numpy.prod costs 5 us a call
    return (tuple(la.index(c) for c in batch + left + summed), (prod(batch), prod(left), prod(summed)),
            tuple(lb.index(c) for c in batch + summed + right), (prod(batch), prod(summed), prod(right)),
            tuple(sizes[c] for c in batch + left + right), ''.join(batch + left + right))


# bytes: what a kernel materializes at once stays below max(a quarter of what it reads, this)
WORKSPACE_FLOOR = 1 << 22


def contract(out: np.ndarray, out_labels: str, operands, accumulate: bool) -> None:
    """out (+)= sum over the labels absent from out_labels of the product of the operands.

    operands: (array or Window, labels) pairs; a label absent from every other operand and
    from the output is summed first.  A window that repeats its array's elements (an im2col: 9x the
    array for a 3x3 kernel) and is larger than max(a quarter of the array, WORKSPACE_FLOOR) is
    materialized in parts along one of its labels (see :func:`_split`): the extra memory of a large
    call stays below its input, and a small call (a few MiB) runs as one matrix product.
    """
    split = _split(out, out_labels, operands)
    if split is None:
        value = contracted(out_labels, [(a.view(f'window{k}') if isinstance(a, Window) else a, lb)
                                        for k, (a, lb) in enumerate(operands)])
        if accumulate:
            out += value
        else:
            out[...] = value
        return
    label, ranges = split
    for lo, hi in ranges:
        parts = [(_narrowed(a, lb.index(label), lo, hi) if label in lb else a, lb) for a, lb in operands]
        if label in out_labels:
            contract(_narrowed(out, out_labels.index(label), lo, hi), out_labels, parts, accumulate)
        else:
            contract(out, out_labels, parts, accumulate or lo > 0)


def budget(*reads) -> int:
    """Bytes a kernel reading ``reads`` may materialize at once: a quarter of the largest, at least
    WORKSPACE_FLOOR."""
    return _budget(max(a.nbytes for a in reads), WORKSPACE_FLOOR)


def _budget(largest: int, floor: int) -> int:
    return max(largest // 4, floor)


def spans(n: int, size: int, limit: int) -> list:
    """[lo, hi] ranges (inclusive) cutting n items that take ``size`` bytes in all into blocks within
    ``limit`` bytes (blocks of one item when even those exceed it)."""
    parts = -(-size // limit)
    step = n if parts <= 1 else -(-n // min(parts, n))
    return [(lo, min(lo + step, n) - 1) for lo in range(0, n, step)]


def blocks(labels: str, operands, split: str):
    """Blocks of an array with axes ``labels`` (extents read off the operands' (array, labels)): for
    each label of ``split``, (lo, hi) inclusive, the first label split first, so that a block stays
    within the budget of the operands."""
    shapes = tuple((a.shape, lb) for a, lb in operands)
    return _blocks_plan(labels, shapes, operands[0][0].itemsize, split, WORKSPACE_FLOOR)


@functools.lru_cache(maxsize=1024)
def _blocks_plan(labels: str, shapes: tuple, itemsize: int, split: str, floor: int) -> tuple:
    """The blocks of :func:`blocks`, kept per signature and workspace floor (a tiny kernel spent 15 us a
    call planning them)."""
    extents = {c: n for shape, lb in shapes for c, n in zip(lb, shape)}
    size = math.prod(extents[c] for c in labels) * itemsize
    limit = _budget(max(math.prod(shape) for shape, _ in shapes) * itemsize, floor)
    ranges = []
    for c in split:
        ranges.append(spans(extents[c], size, limit))
        size = size * (ranges[-1][0][1] + 1) // extents[c]
    return tuple(itertools.product(*ranges))


def _narrowed(array, axis: int, lo: int, hi: int):
    """``array`` (or a Window) with axis ``axis`` narrowed to [lo, hi] (inclusive, as spans)."""
    if isinstance(array, Window):
        return array.part(axis, lo, hi + 1)
    return array[(slice(None),) * axis + (slice(lo, hi + 1),)]


def _split(out: np.ndarray, out_labels: str, operands):
    """(label, its spans) to contract in parts, or None when the largest window fits its budget.
    The label is the window's one that costs least to split: an operand without it is aligned (copied)
    again for every part, and a summed label adds every part into the whole output; ties go to the
    longer axis."""
    windows = [(a, lb) for a, lb in operands if isinstance(a, Window)]
    if not windows:
        return None
    window, labels = max(windows, key=lambda w: w[0].nbytes)
    limit = budget(window.array)
    if window.nbytes <= max(limit, window.array.nbytes):   # a view that repeats nothing costs no copy
        return None
    extents = dict(zip(labels, window.shape))

    def cost(label):
        lacking = sum(a.nbytes for a, lb in operands if label not in lb)
        return lacking + (0 if label in out_labels else out.nbytes), -extents[label]
    label = min((c for c in labels if extents[c] > 1), key=cost, default=None)
    if label is None:
        return None
    return label, spans(extents[label], window.nbytes, limit)


def contracted(out_labels: str, operands) -> np.ndarray:
    """The contraction of :func:`contract` as an array (a view when it can be) with the axes of
    out_labels: when these are the matrix product's own order, no copy follows it."""
    kept, product = _contraction(out_labels, tuple(lb for _, lb in operands))
    ops = [(aligned(array, labels, keep), keep) for (array, labels), keep in zip(operands, kept)]
    if product == 'matmul':
        ops = [_matmul(ops[0][0], ops[0][1], ops[1][0], ops[1][1], out_labels)]
    elif product == 'einsum':
        value = np.einsum(','.join(kept) + '->' + out_labels, *(a for a, _ in ops), optimize=True)
        ops = [(value, out_labels)]
    value = aligned(ops[0][0], ops[0][1], out_labels)
    for array, labels in ops[1:]:
        value = value * aligned(array, labels, out_labels)
    return value


@functools.lru_cache(maxsize=1024)
def _contraction(out_labels: str, labels: tuple) -> tuple:
    """(for each operand the labels it keeps: those another operand or the output has, the rest summed
    first; how the kept operands are combined: 'matmul', 'einsum' or elementwise ''), kept per signature
    (the label logic took 4 of a bias gradient's 6 us)."""
    kept = tuple(''.join(c for c in lb if c in ''.join(labels[:k] + labels[k + 1:]) + out_labels)
                 for k, lb in enumerate(labels))
    if len(kept) == 2 and any(c in kept[1] and c not in out_labels for c in kept[0]):
        return kept, 'matmul'
    if len(kept) > 2 and any(c not in out_labels for lb in kept for c in lb):
        return kept, 'einsum'
    return kept, ''


def select_max(best: np.ndarray, position: np.ndarray, value: np.ndarray, candidate: np.ndarray) -> None:
    """The max-pool selector: take the candidate if nothing is selected yet, if it is larger, or if it is
    NaN (first maximum in window order wins ties; the last NaN wins)."""
    take = (position < 0) | (value > best) | np.isnan(value)
    np.copyto(best, value, where=take)
    np.copyto(position, np.broadcast_to(candidate, position.shape), where=take)
