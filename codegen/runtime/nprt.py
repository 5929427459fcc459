"""Array helpers of the generated NumPy kernels (copied into generated/numpy/_runtime.py).

window_view turns an affine index expression into a strided view (zero padding
makes the in-bounds constraints of a sum vacuous); contract evaluates a sum of
products over labelled axes with one BLAS matrix product (batched over shared
axes) when there are two operands, as numpy.einsum does without batch support.
"""
from __future__ import annotations

import functools

import numpy as np
from numpy.lib.stride_tricks import as_strided


def window_view(array: np.ndarray, pads, origin, shape, steps) -> np.ndarray:
    """View v with v[u_0, ..., u_k] = padded[origin + sum_j steps[j] * u_j] (read-only).

    pads: (before, after) zeros per axis of ``array``; origin: start per axis in the
    padded array; steps: for each view axis, the multiplier of every array axis.
    """
    if any(b or a for b, a in pads):
        array = np.pad(array, [(int(b), int(a)) for b, a in pads])
    last = [int(o) + sum(int(s[j]) * (int(n) - 1) for s, n in zip(steps, shape)) for j, o in enumerate(origin)]
    if min(shape) > 0 and (min(origin) < 0 or any(e >= n or e < 0 for e, n in zip(last, array.shape))):
        raise AssertionError(f'window view leaves its array: origin {origin}, last {last}, shape {array.shape}')
    base = array[tuple(slice(int(o), None) for o in origin)]
    strides = tuple(sum(int(k) * s for k, s in zip(step, base.strides)) for step in steps)
    return as_strided(base, tuple(int(n) for n in shape), strides, writeable=False)


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


def _matmul(a, la, b, lb, out_labels):
    batch = [c for c in la if c in lb and c in out_labels]
    summed = [c for c in la if c in lb and c not in out_labels]
    left = [c for c in la if c not in lb]
    right = [c for c in lb if c not in la]
    sizes = {c: n for c, n in zip(la + lb, a.shape + b.shape)}
    prod = (lambda cs: int(np.prod([sizes[c] for c in cs], dtype=np.int64)))
    a2 = np.transpose(a, [la.index(c) for c in batch + left + summed]).reshape(prod(batch), prod(left), prod(summed))
    b2 = np.transpose(b, [lb.index(c) for c in batch + summed + right]).reshape(prod(batch), prod(summed),
                                                                                   prod(right))
    result = np.matmul(a2, b2).reshape([sizes[c] for c in batch + left + right])
    return result, ''.join(batch + left + right)


def contract(out: np.ndarray, out_labels: str, operands, accumulate: bool) -> None:
    """out (+)= sum over the labels absent from out_labels of the product of the operands.

    operands: (array, labels) pairs; a label absent from every other operand and
    from the output is summed first.
    """
    value = contracted(out_labels, operands)
    if accumulate:
        out += value
    else:
        out[...] = value


def contracted(out_labels: str, operands) -> np.ndarray:
    """The contraction of :func:`contract` as an array (a view when it can be) with the axes of
    out_labels: when these are the matrix product's own order, no copy follows it."""
    ops = []
    for k, (array, labels) in enumerate(operands):
        others = ''.join(lb for j, (_, lb) in enumerate(operands) if j != k) + out_labels
        ops.append((aligned(array, labels, ''.join(c for c in labels if c in others)),
                    ''.join(c for c in labels if c in others)))
    if len(ops) == 2 and any(c in ops[1][1] and c not in out_labels for c in ops[0][1]):
        value, labels = _matmul(ops[0][0], ops[0][1], ops[1][0], ops[1][1], out_labels)
        ops = [(value, labels)]
    if len(ops) > 2 and any(c not in out_labels for _, lb in ops for c in lb):
        value = np.einsum(','.join(lb for _, lb in ops) + '->' + out_labels, *(a for a, _ in ops), optimize=True)
        ops = [(value, out_labels)]
    value = aligned(ops[0][0], ops[0][1], out_labels)
    for array, labels in ops[1:]:
        value = value * aligned(array, labels, out_labels)
    return value


def select_max(best: np.ndarray, position: np.ndarray, value: np.ndarray, candidate: np.ndarray) -> None:
    """The max-pool selector: take the candidate if nothing is selected yet, if it is larger, or if it is
    NaN (first maximum in window order wins ties; the last NaN wins)."""
    take = (position < 0) | (value > best) | np.isnan(value)
    np.copyto(best, value, where=take)
    np.copyto(position, np.broadcast_to(candidate, position.shape), where=take)
