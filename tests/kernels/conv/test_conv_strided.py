"""Strided input gradients on rows wide enough for whole vectors along t after the residue split
(i = S t + r, codegen.split): every residue, both vector-store strides (S = 1 specialized, S >= 2 general),
the lane-guarded edges and the scalar rest, against an independent NumPy adjoint (taps scattered)."""
import itertools

import numpy as np
import pytest
from conftest import assert_close

pytestmark = pytest.mark.sanitize_subset


def adjoint_input(shape, w, g, stride, padding, dilation, groups):
    """dE/dx of conv with PyTorch semantics: every output position sends w * g to S o + D m - P."""
    n, c_in, *size = shape
    c_out, cg, *kernel = w.shape
    kg = c_out // groups
    dims = len(size)
    padded = np.zeros((n, c_in) + tuple(h + 2 * padding for h in size), np.float64)
    out_size = g.shape[2:]
    for m in itertools.product(*(range(k) for k in kernel)):
        window = tuple(slice(d * mm, d * mm + s * (o - 1) + 1, s)
                       for mm, s, d, o in zip(m, stride, dilation, out_size))
        for grp in range(groups):
            wk = w[(slice(grp * kg, (grp + 1) * kg), slice(None)) + m].astype(np.float64)   # (kg, cg)
            gk = g[:, grp * kg:(grp + 1) * kg].astype(np.float64)             # (n, kg, o...)
            padded[(slice(None), slice(grp * cg, (grp + 1) * cg)) + window] += np.einsum('nk...,kc->nc...', gk, wk)
    inner = (slice(None), slice(None)) + tuple(slice(padding, padding + h) for h in size)
    assert dims == len(kernel)
    return padded[inner]


CASES = [
    # dims, width, kernel, stride, padding, dilation, groups
    (1, 70, 3, 2, 1, 1, 1),
    (1, 71, 4, 3, 2, 2, 2),
    (1, 90, 5, 2, 0, 1, 1),
    (2, 67, 3, 2, 1, 1, 1),
    (2, 70, 3, 3, 0, 2, 2),
    (2, 66, 2, 2, 0, 1, 1),
    (2, 69, 1, 2, 0, 1, 1),
]


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
@pytest.mark.parametrize('dims,width,kernel,stride,padding,dilation,groups', CASES)
def test_strided_input_gradient_on_wide_rows(backend, dims, width, kernel, stride, padding, dilation, groups, dtype):
    rng = np.random.default_rng(width * 7 + stride)
    size = (5,) * (dims - 1) + (width,)
    x = rng.standard_normal((2, 4 * groups) + size).astype(dtype)
    w = rng.standard_normal((3 * groups, 4) + (kernel,) * dims).astype(dtype)
    y = getattr(backend, f'conv{dims}d')(x, w, stride=stride, padding=padding, dilation=dilation, groups=groups)
    g = rng.standard_normal(y.shape).astype(dtype)
    got = getattr(backend, f'conv{dims}d_input')(x.shape, w, g, stride=stride, padding=padding, dilation=dilation,
                                                 groups=groups)
    expected = adjoint_input(x.shape, w, g, (stride,) * dims, padding, (dilation,) * dims, groups)
    scale = float(np.sum(np.abs(w)) * np.max(np.abs(g)))   # magnitude of the summed products
    assert_close(got, expected.astype(dtype), scale=scale)


ROW_BLOCK_CASES = [
    # dims, size, kernel, stride, padding, dilation, channels per group, output channels per group
    (2, (23, 37), 3, 2, 1, 1, 1, 1),    # depthwise, MobileNet's stride-2 layers
    (2, (30, 20), 3, 2, 1, 2, 1, 2),    # depthwise with a multiplier, dilated
    (2, (26, 41), 5, 3, 2, 1, 3, 1),
    (2, (19, 70), 3, 1, 1, 1, 1, 1),    # stride 1: the specialized rule, no residues
    (3, (17, 9, 21), 3, 2, 1, 1, 1, 1),
]


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
@pytest.mark.parametrize('dims,size,kernel,stride,padding,dilation,cg,kg', ROW_BLOCK_CASES)
def test_strided_input_gradient_of_few_channels_in_row_blocks(backend, dims, size, kernel, stride, padding, dilation,
                                                              cg, kg, dtype):
    """Fewer input channels per group than a register block (depthwise): the C kernels run the rows of the
    residue split whose taps all fall inside in blocks of rows, one accumulator chain a row
    (lower_vector._row_blocks), the other rows one at a time -- tall enough planes for several blocks and
    a rest, every residue."""
    groups = 4
    rng = np.random.default_rng(sum(size) * 7 + stride)
    x = rng.standard_normal((2, groups * cg) + size).astype(dtype)
    w = rng.standard_normal((groups * kg, cg) + (kernel,) * dims).astype(dtype)
    params = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    g = rng.standard_normal(getattr(backend, f'conv{dims}d')(x, w, **params).shape).astype(dtype)
    got = getattr(backend, f'conv{dims}d_input')(x.shape, w, g, **params)
    expected = adjoint_input(x.shape, w, g, (stride,) * dims, padding, (dilation,) * dims, groups)
    assert_close(got, expected.astype(dtype), scale=float(np.sum(np.abs(w)) * np.max(np.abs(g))))
