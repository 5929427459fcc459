"""The NumPy kernels' workspace: windows materialized in parts, col2im in blocks, temporaries in per-thread
buffers kept across calls (generated/numpy/_runtime.py).

Splitting must not change a result (every part boundary, windows that read only padding), nor may a kept
buffer's stale contents, and the extra memory of a call must stay below its input."""
import threading
import tracemalloc

import numpy as np
import pytest
from conftest import BACKENDS, assert_close

pytestmark = pytest.mark.skipif('numpy' not in BACKENDS, reason='NumPy backend not selected')


@pytest.fixture
def runtime():
    import generated.numpy._runtime as runtime
    return runtime


def padded_reference(array, pads, origin, shape, steps):
    padded = np.pad(array, pads)
    out = np.empty(shape)
    for u in np.ndindex(*shape):
        out[u] = padded[tuple(o + sum(s[i] * k for s, k in zip(steps, u)) for i, o in enumerate(origin))]
    return out


@pytest.mark.parametrize('steps,origin', [
    (((0, 2), (0, 1), (1, 0)), (0, 0)),       # stride 2 columns, a tap axis, rows
    (((0, -1), (1, 0)), (0, 4)),             # columns read backwards (a flipped kernel)
])
def test_window_parts_read_what_the_whole_window_reads(runtime, steps, origin):
    rng = np.random.default_rng(0)
    array, pads = rng.standard_normal((3, 4)), ((2, 1), (1, 2))
    shape = (3, 2, 6) if len(steps) == 3 else (5, 6)
    window = runtime.window_view(array, pads, origin, shape, steps)
    whole = padded_reference(array, pads, origin, shape, steps)
    assert_close(window.view(), whole)
    for axis, n in enumerate(shape):
        for lo in range(n):
            for hi in range(lo + 1, n + 1):
                part = window.part(axis, lo, hi).view()
                assert_close(part, whole[(slice(None),) * axis + (slice(lo, hi),)])


def test_a_window_part_inside_the_padding_reads_zeros(runtime):
    window = runtime.window_view(np.ones((2, 3)), ((3, 0), (0, 0)), (0, 0), (5, 3), ((1, 0), (0, 1)))
    assert np.all(window.part(0, 0, 3).view() == 0) and np.all(window.part(0, 3, 5).view() == 1)


CASES = [
    (2, dict(stride=1, padding=1), (3, 6, 9, 11), (5, 6, 3, 3)),
    (2, dict(stride=2, padding=(1, 0), dilation=(1, 2)), (2, 4, 12, 13), (6, 4, 3, 2)),
    (2, dict(groups=2, padding='same'), (2, 4, 8, 7), (6, 2, 3, 3)),
    (1, dict(stride=3, padding=2), (3, 5, 17), (4, 5, 4)),
    (3, dict(padding=1, dilation=2), (2, 3, 5, 6, 7), (4, 3, 2, 3, 2)),
]


def conv_passes(dims, params, x_shape, w_shape) -> dict:
    """The three passes of a convolution case of CASES on random operands, as calls of generated.numpy."""
    import generated.numpy as K
    rng = np.random.default_rng(len(x_shape))
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    g = rng.standard_normal(getattr(K, f'conv{dims}d')(x, w, **params).shape)
    return {'forward': lambda: getattr(K, f'conv{dims}d')(x, w, **params),
            'input gradient': lambda: getattr(K, f'conv{dims}d_input')(x.shape, w, g, **params),
            'weight gradient': lambda: getattr(K, f'conv{dims}d_weight')(x, w.shape, g, **params)}


@pytest.mark.parametrize('dims,params,x_shape,w_shape', CASES)
def test_contractions_in_the_smallest_parts_equal_one_contraction(runtime, monkeypatch, dims, params, x_shape,
                                                                  w_shape):
    """With no workspace floor, a quarter of an operand is a few rows: every window and col2im block splits."""
    passes = conv_passes(dims, params, x_shape, w_shape)
    whole = {name: run() for name, run in passes.items()}
    splits = []
    spans = runtime.spans
    monkeypatch.setattr(runtime, 'spans', lambda *a: splits.append(len(spans(*a))) or spans(*a))
    monkeypatch.setattr(runtime, 'WORKSPACE_FLOOR', 0)
    for name, run in passes.items():
        splits.clear()
        assert_close(run(), whole[name])
        assert max(splits, default=0) > 1, f'the {name} ran in one part (its window or col2im)'


def test_max_pool_backward_in_blocks_of_planes_equals_one_bincount(runtime, monkeypatch):
    """Overlapping windows (3x3, stride 2) send several gradients to one position: every block sums its own."""
    import generated.numpy as K
    x = np.random.default_rng(3).standard_normal((3, 5, 9, 8))
    y, idx = K.max_pool2d(x, 3, 2, 1, return_indices=True)
    g = np.random.default_rng(4).standard_normal(y.shape)
    whole = K.max_pool2d_backward(g, x, 3, 2, 1, indices=idx)
    monkeypatch.setattr(runtime, 'WORKSPACE_FLOOR', 0)
    assert len(runtime.spans(15, 8 * (x.size + y.size), runtime.budget(idx, g))) > 1
    assert_close(K.max_pool2d_backward(g, x, 3, 2, 1, indices=idx), whole)


@pytest.mark.parametrize('order,shape', [
    ((0, 1, 2, 3), (6, 20)), ((0, 1, 2, 3), (2, 60)), ((1, 0, 2, 3), (3, 2, 20)), ((0, 1, 3, 2), (6, 20)),
    ((2, 3, 0, 1), (20, 6)), ((0, 2, 1, 3), (2, 12, 5)), ((3, 2, 1, 0), (120,)), ((0, 1, 2, 3), (1, 6, 1, 20)),
])
def test_merged_axes_are_a_view_when_the_strides_allow_else_a_copy(runtime, monkeypatch, order, shape):
    monkeypatch.setattr(runtime, 'SCRATCH_RANGE', (0, 1 << 20))     # the stride walk, not the small-array path
    array = np.arange(120.0).reshape(2, 3, 4, 5).transpose(order)
    merged = runtime._merged(array, shape, 'left')
    np.testing.assert_array_equal(merged, array.reshape(shape))
    assert np.shares_memory(merged, array) == np.shares_memory(array.reshape(shape), array)


def test_scratch_buffers_are_kept_per_slot_and_per_thread(runtime, monkeypatch):
    monkeypatch.setattr(runtime, 'SCRATCH_RANGE', (64, 1 << 20))
    runtime.release_scratch()
    a = runtime.scratch('left', (4, 8), np.float64)
    assert np.shares_memory(runtime.scratch('left', (16,), np.float32), a)      # the same bytes, reused
    assert not np.shares_memory(runtime.scratch('right', (4, 8), np.float64), a)
    bigger = runtime.scratch('left', (8, 8), np.float64)                          # grown: a new buffer
    assert bigger.shape == (8, 8) and not np.shares_memory(bigger, a)
    assert not np.shares_memory(runtime.scratch('left', (2,), np.float64), runtime.scratch('left', (4,), np.int8))
    other = []
    thread = threading.Thread(target=lambda: other.append(runtime.scratch('left', (8, 8), np.float64)))
    thread.start()
    thread.join()
    assert not np.shares_memory(other[0], bigger)
    assert runtime.release_scratch() == 512 + 256
    assert not np.shares_memory(runtime.scratch('left', (8, 8), np.float64), bigger)


@pytest.mark.parametrize('dims,params,x_shape,w_shape', CASES)
def test_kept_buffers_with_stale_contents_change_no_result(runtime, monkeypatch, dims, params, x_shape, w_shape):
    """Every temporary in a kept buffer (padded windows, im2col copies, products), each filled with NaN before
    a call: a kernel must write all it reads, the zeros of the padding included."""
    passes = conv_passes(dims, params, x_shape, w_shape)
    fresh = {name: run() for name, run in passes.items()}
    monkeypatch.setattr(runtime, 'SCRATCH_RANGE', (0, 1 << 30))
    runtime.release_scratch()
    for run in passes.values():
        run()
    buffers = runtime._scratch.buffers
    assert {'window1', 'product'} <= set(buffers), sorted(buffers)
    for name, run in passes.items():
        for buffer in buffers.values():
            buffer[...] = 0xFF      # NaN in float32 and float64
        assert_close(run(), fresh[name])


def extra_memory(call) -> int:
    import generated.numpy._runtime as runtime
    runtime.release_scratch()   # what the call keeps for the next one counts as its own
    tracemalloc.start()
    try:
        result = call()
        return tracemalloc.get_traced_memory()[1] - result.nbytes
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize('name,params', [
    ('resnet', dict(padding=1)),
    ('s2', dict(stride=2, padding=1)),
    ('dil2', dict(padding=2, dilation=2)),
])
def test_the_extra_memory_of_a_large_call_stays_below_its_input(name, params):
    """im2col of a 3x3 kernel is 9x the input (56 MiB here), a float64 bincount over every plane 2x: the
    kernels hold at most a part of them (the indices of max pooling given, as the bench times it)."""
    import generated.numpy as K
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 64, 56, 56)).astype(np.float32)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    y = K.conv2d(x, w, **params)
    pooled, idx = K.max_pool2d(x, 3, 2, 1, return_indices=True)
    for label, call in (('fwd', lambda: K.conv2d(x, w, **params)),
                        ('dX', lambda: K.conv2d_input(x.shape, w, y, **params)),
                        ('dW', lambda: K.conv2d_weight(x, w.shape, y, **params)),
                        ('avg_pool', lambda: K.avg_pool2d(x, 3, 2, 1)),
                        ('avg_pool_backward', lambda: K.avg_pool2d_backward(pooled, x, 3, 2, 1)),
                        ('max_pool_backward', lambda: K.max_pool2d_backward(pooled, x, 3, 2, 1, indices=idx))):
        assert extra_memory(call) <= x.nbytes, f'{name} {label}'
