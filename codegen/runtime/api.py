"""The public functions of bpgen's generated kernels (copied into generated/_api.py).

Signatures and results follow torch.nn.functional and torch.nn.grad: NCHW
layout, int or tuple parameters, PyTorch's output sizes (printed from derive/
into _formulas).  Bad input raises TypeError or ValueError naming the
parameter; nothing reaches a kernel unchecked.  Both backends call this module
with their own table of low-level kernels, which take a mapping of their sizes
(the names of derive/'s symbols) and their arrays (by keyword, or in the
kernel's order: how the plans call them, a tenth cheaper), inputs of any
strides (each backend copies what it needs contiguous, and only then).

A call's checks end in a plan: the function of its arrays that allocates the
results and runs the kernel with its sizes bound (``kernels.prepare``).  Plans
are kept per call signature -- the function, each array's type, shape and
dtype, each parameter's value and type -- which is everything the checks look
at, so a repeated call runs its plan at once (a few microseconds: the checks
cost more than a small kernel).  Only plain parameters (int, str, bool, None)
make a signature: a tuple may hide a bool among its ints, so a call with tuple
parameters is checked afresh (its geometry is cached).
"""
from __future__ import annotations

import contextlib
import functools
import numbers
import operator

import numpy as np

from . import _formulas as formulas

REAL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
ndarray = np.ndarray


# ----------------------------------------------------------------------------- plans

PLANS: dict = {}     # call signature -> plan
PLAN_LIMIT = 4096    # signatures kept; the table starts afresh beyond
PLAIN = frozenset((int, str, bool, type(None)))


def remember(key: tuple, plan, *params):
    """``plan``, kept for ``key`` when every parameter is plain (its value and type, both in the key, are all
    the checks saw of it)."""
    if all(type(p) in PLAIN for p in params):
        if len(PLANS) >= PLAN_LIMIT:
            PLANS.clear()
        PLANS[key] = plan
    return plan


PREPARED: list | None = None   # while recording(): what the calls prepared


def prepare(kernels, name: str, sizes: dict, dtype, shape=None):
    """``kernels.prepare``: the low-level kernel ``name`` with its sizes bound (noted while recording); with
    ``shape``, a function of its arrays after the first, which it returns new (numpy.empty)."""
    if PREPARED is not None:
        PREPARED.append((name, dict(sizes), np.dtype(dtype)))
    return kernels.prepare(name, sizes, dtype, shape)


@contextlib.contextmanager
def recording():
    """Within: calls are checked afresh (no kept plan), and the list yielded gets (name, sizes, dtype) of
    each low-level kernel they prepare: what they run (e.g. to ask a C kernel its workspace)."""
    global PLANS, PREPARED
    kept, PLANS, PREPARED = PLANS, {}, []
    try:
        yield PREPARED
    finally:
        PLANS, PREPARED = kept, None


def plan_tag(kernels, fn: str) -> str:
    """The first item of a signature: the backend and the function (both backends share the plans)."""
    return f'{kernels.__name__}:{fn}'


# ----------------------------------------------------------------------------- argument checks

def real_array(value, name: str, fn: str) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise TypeError(f'{fn}: {name} must be a numpy.ndarray, got {type(value).__name__}')
    if value.dtype not in REAL_DTYPES:
        raise TypeError(f'{fn}: {name} must have dtype float32 or float64, got {value.dtype}')
    return value if value.flags.c_contiguous else np.ascontiguousarray(value)


def same_dtype(fn: str, reference: str, ref: np.ndarray, **others) -> None:
    for name, arr in others.items():
        if arr is not None and arr.dtype != ref.dtype:
            raise TypeError(f'{fn}: {name} has dtype {arr.dtype} but {reference} has dtype {ref.dtype}')


def integer(value, name: str, fn: str, minimum: int | None = None) -> int:
    if type(value) is not int and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
        raise TypeError(f'{fn}: {name} must be an int, got {type(value).__name__} {value!r}')
    value = operator.index(value)
    if minimum is not None and value < minimum:
        raise ValueError(f'{fn}: {name} must be >= {minimum}, got {value}')
    return value


def int_tuple(value, name: str, fn: str, dims: int, minimum: int) -> tuple:
    """An int, or a sequence of 1 or ``dims`` ints (as torch), each >= minimum."""
    if isinstance(value, (list, tuple)):
        items = tuple(integer(v, name, fn) for v in value)
        if len(items) == 1:
            items *= dims
        if len(items) != dims:
            raise ValueError(f'{fn}: {name} must be an int or a sequence of {dims} ints, got {value!r}')
    else:
        items = (integer(value, name, fn),) * dims
    if any(v < minimum for v in items):
        raise ValueError(f'{fn}: {name} must be >= {minimum} in every dimension, got {value!r}')
    return items


def check_rank(arr: np.ndarray, name: str, fn: str, ranks: tuple) -> None:
    if arr.ndim not in ranks:
        expected = ' or '.join(str(r) for r in ranks)
        raise ValueError(f'{fn}: {name} must have {expected} dimensions, got shape {arr.shape}')


def check_shape(arr: np.ndarray, name: str, fn: str, expected: tuple) -> None:
    if tuple(arr.shape) != tuple(expected):
        raise ValueError(f'{fn}: {name} must have shape {tuple(expected)}, got {tuple(arr.shape)}')


def size_tuple(value, name: str, fn: str, rank: int) -> tuple:
    if isinstance(value, (str, bytes)) or not hasattr(value, '__len__'):
        raise TypeError(f'{fn}: {name} must be a sequence of {rank} ints, got {value!r}')
    items = tuple(integer(v, name, fn, minimum=0) for v in value)
    if len(items) != rank:
        raise ValueError(f'{fn}: {name} must have {rank} entries (batch, channels, spatial), got {value!r}')
    return items


def geometry(kind, *args):
    """kind(*args), cached when every argument is None, an int, a bool, a str or a tuple of ints and
    strs (shapes, names and the usual parameters): repeated calls with the same shapes and parameters
    skip the checks, which cost more than a small kernel.  The key holds each argument's type, so a
    cached result never stands for an argument that compares equal to a valid one but must be refused
    (True == 1 as a stride, 1 == True as ceil_mode); any other argument (a list, a float, a NumPy
    integer) is checked afresh."""
    for a in args:
        t = type(a)
        if t is tuple:
            for v in a:
                if type(v) is not int and type(v) is not str:
                    return kind(*args)
        elif t is not int and t is not str and t is not bool and a is not None:
            return kind(*args)
    return _cached_geometry(kind, args, tuple(map(type, args)))


@functools.lru_cache(maxsize=1024)
def _cached_geometry(kind, args, types):
    return kind(*args)


def spatial(prefix: str, values) -> dict:
    return {f'{prefix}{d}': int(v) for d, v in enumerate(values)}


# ----------------------------------------------------------------------------- convolution

class ConvGeometry:
    """Sizes of one convolution call, checked; ``params`` are the kernels' keyword sizes."""

    def __init__(self, fn, dims, input_shape, weight_shape, stride, padding, dilation, groups,
                 names=('input', 'weight')):
        self.fn, self.dims = fn, dims
        stride = int_tuple(stride, 'stride', fn, dims, 1)
        dilation = int_tuple(dilation, 'dilation', fn, dims, 1)
        groups = integer(groups, 'groups', fn, minimum=1)
        kernel = tuple(weight_shape[2:])
        left, right = conv_padding(padding, fn, dims, stride, dilation, kernel)
        n, c_in, *size = input_shape
        c_out = weight_shape[0]
        if c_out % groups:
            raise ValueError(f'{fn}: groups={groups} must divide the {c_out} output channels of weight')
        if weight_shape[1] * groups != c_in:
            raise ValueError(f'{fn}: input has {c_in} channels but weight expects {weight_shape[1]} per group '
                             f'x groups={groups} = {weight_shape[1] * groups}')
        if min(kernel) < 1 or min(size) < 1 or c_in < 1 or c_out < 1:
            raise ValueError(f'{fn}: channels, spatial sizes and kernel sizes must be >= 1, got {names[0]} '
                             f'{tuple(input_shape)} and {names[1]} {tuple(weight_shape)}')
        out = tuple(formulas.conv_output_size(h, k, s, d, pl, pr)
                    for h, k, s, d, pl, pr in zip(size, kernel, stride, dilation, left, right))
        if min(out) < 1:
            span = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
            padded = tuple(h + pl + pr for h, pl, pr in zip(size, left, right))
            raise ValueError(f'{fn}: kernel size {span} (dilated) is larger than the padded input {padded}')
        self.output_shape = (n, c_out) + out
        self.params = dict(N=n, G=groups, CG=c_in // groups, KG=c_out // groups, **spatial('H', size),
                           **spatial('K', kernel), **spatial('O', out), **spatial('S', stride),
                           **spatial('D', dilation), **spatial('P', left))


def conv_padding(padding, fn, dims, stride, dilation, kernel) -> tuple:
    """(left, right) padding per dimension; 'same' puts the odd element on the right, as torch."""
    if isinstance(padding, str):
        if padding == 'valid':
            return (0,) * dims, (0,) * dims
        if padding != 'same':
            raise ValueError(f"{fn}: padding must be an int, a tuple, 'valid' or 'same', got {padding!r}")
        if any(s != 1 for s in stride):
            raise ValueError(f"{fn}: padding='same' needs stride 1, got stride={stride}")
        total = tuple(d * (k - 1) for k, d in zip(kernel, dilation))
        return tuple(t // 2 for t in total), tuple(t - t // 2 for t in total)
    pad = int_tuple(padding, 'padding', fn, dims, 0)
    return pad, pad


def conv_forward(dims: int, kernels):
    fn = f'conv{dims}d'
    tag = plan_tag(kernels, fn)

    def checked(input, weight, bias, stride, padding, dilation, groups):
        x, w = real_array(input, 'input', fn), real_array(weight, 'weight', fn)
        b = None if bias is None else real_array(bias, 'bias', fn)
        same_dtype(fn, 'input', x, weight=w, bias=b)
        check_rank(x, 'input', fn, (dims + 1, dims + 2))
        check_rank(w, 'weight', fn, (dims + 2,))
        batched = x.ndim == dims + 2
        geo = geometry(ConvGeometry, fn, dims, x.shape if batched else (1,) + x.shape, w.shape, stride, padding,
                       dilation, groups)
        if b is not None:
            check_shape(b, 'bias', fn, (w.shape[0],))
        shape, dtype = geo.output_shape, x.dtype
        plan = prepare(kernels, fn, geo.params, dtype, shape)   # the output new: the kernels write all of it
        if not shape[0]:   # (no call: a kernel takes a batch of images)
            return lambda input, weight, bias: np.empty(shape, dtype)
        return plan if batched else lambda input, weight, bias: plan(input[None], weight, bias)[0]

    def conv(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        if type(input) is ndarray and type(weight) is ndarray and (bias is None or type(bias) is ndarray):
            key = (tag, input.shape, input.dtype, weight.shape, weight.dtype, bias is None or (bias.shape, bias.dtype),
                   stride, padding, dilation, groups, type(stride), type(padding), type(dilation), type(groups))
            try:
                plan = PLANS[key]
            except (KeyError, TypeError):   # a new signature, or an unhashable parameter
                plan = remember(key, checked(input, weight, bias, stride, padding, dilation, groups), stride,
                                padding, dilation, groups)
            return plan(input, weight, bias)
        return checked(input, weight, bias, stride, padding, dilation, groups)(input, weight, bias)
    conv.__name__ = conv.__qualname__ = fn
    conv.__doc__ = f'torch.nn.functional.{fn}: cross-correlation of input with weight, plus bias.'
    return conv


def conv_input(dims: int, kernels):
    fn = f'conv{dims}d_input'
    tag = plan_tag(kernels, fn)

    def checked(input_size, weight, grad_output, stride, padding, dilation, groups):
        w, g = real_array(weight, 'weight', fn), real_array(grad_output, 'grad_output', fn)
        same_dtype(fn, 'weight', w, grad_output=g)
        check_rank(w, 'weight', fn, (dims + 2,))
        check_rank(g, 'grad_output', fn, (dims + 2,))
        shape = size_tuple(input_size, 'input_size', fn, dims + 2)
        geo = geometry(ConvGeometry, fn, dims, shape, w.shape, stride, padding, dilation, groups,
                       ('input_size', 'weight'))
        check_shape(g, 'grad_output', fn, geo.output_shape)
        run, dtype = prepare(kernels, fn, geo.params, w.dtype), w.dtype

        def plan(weight, grad_output):
            out = np.empty(shape, dtype)   # the kernels write every element (tests/kernels/test_outputs_written.py)
            if shape[0]:
                run(out, grad_output, weight)
            return out
        return plan

    def grad_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1):
        if type(weight) is ndarray and type(grad_output) is ndarray and type(input_size) is tuple:
            key = (tag, input_size, tuple(map(type, input_size)), weight.shape, weight.dtype, grad_output.shape,
                   grad_output.dtype, stride, padding, dilation, groups, type(stride), type(padding), type(dilation),
                   type(groups))
            try:
                plan = PLANS[key]
            except (KeyError, TypeError):
                plan = remember(key, checked(input_size, weight, grad_output, stride, padding, dilation, groups),
                                stride, padding, dilation, groups)
            return plan(weight, grad_output)
        return checked(input_size, weight, grad_output, stride, padding, dilation, groups)(weight, grad_output)
    grad_input.__name__ = grad_input.__qualname__ = fn
    grad_input.__doc__ = f'torch.nn.grad.{fn}: gradient of conv{dims}d with respect to its input.'
    return grad_input


def conv_weight(dims: int, kernels):
    fn = f'conv{dims}d_weight'
    tag = plan_tag(kernels, fn)

    def checked(input, weight_size, grad_output, stride, padding, dilation, groups):
        x, g = real_array(input, 'input', fn), real_array(grad_output, 'grad_output', fn)
        same_dtype(fn, 'input', x, grad_output=g)
        check_rank(x, 'input', fn, (dims + 2,))
        check_rank(g, 'grad_output', fn, (dims + 2,))
        shape = size_tuple(weight_size, 'weight_size', fn, dims + 2)
        geo = geometry(ConvGeometry, fn, dims, x.shape, shape, stride, padding, dilation, groups,
                       ('input', 'weight_size'))
        check_shape(g, 'grad_output', fn, geo.output_shape)
        run, dtype, images = prepare(kernels, fn, geo.params, x.dtype), x.dtype, x.shape[0]

        def plan(input, grad_output):
            out = np.zeros(shape, dtype)
            if images:
                run(out, grad_output, input)
            return out
        return plan

    def grad_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1):
        if type(input) is ndarray and type(grad_output) is ndarray and type(weight_size) is tuple:
            key = (tag, input.shape, input.dtype, weight_size, tuple(map(type, weight_size)), grad_output.shape,
                   grad_output.dtype, stride, padding, dilation, groups, type(stride), type(padding), type(dilation),
                   type(groups))
            try:
                plan = PLANS[key]
            except (KeyError, TypeError):
                plan = remember(key, checked(input, weight_size, grad_output, stride, padding, dilation, groups),
                                stride, padding, dilation, groups)
            return plan(input, grad_output)
        return checked(input, weight_size, grad_output, stride, padding, dilation, groups)(input, grad_output)
    grad_weight.__name__ = grad_weight.__qualname__ = fn
    grad_weight.__doc__ = f'torch.nn.grad.{fn}: gradient of conv{dims}d with respect to its weight.'
    return grad_weight


def conv_bias(dims: int, kernels):
    fn = f'conv{dims}d_bias'
    tag = plan_tag(kernels, fn)

    def checked(grad_output):
        g = real_array(grad_output, 'grad_output', fn)
        check_rank(g, 'grad_output', fn, (dims + 2,))
        n, c, *size = g.shape
        run = prepare(kernels, fn, dict(N=n, G=1, KG=c, **spatial('O', size)), g.dtype)
        dtype, empty = g.dtype, not (n and c and min(size) > 0)

        def plan(grad_output):
            out = np.zeros((c,), dtype)
            if not empty:
                run(out, grad_output)
            return out
        return plan

    def grad_bias(grad_output):
        if type(grad_output) is ndarray:
            key = (tag, grad_output.shape, grad_output.dtype)
            plan = PLANS.get(key) or remember(key, checked(grad_output))
            return plan(grad_output)
        return checked(grad_output)(grad_output)
    grad_bias.__name__ = grad_bias.__qualname__ = fn
    grad_bias.__doc__ = f'Gradient of conv{dims}d with respect to its bias: grad_output summed over batch and space.'
    return grad_bias


# ----------------------------------------------------------------------------- pooling

class PoolGeometry:
    def __init__(self, fn, dims, shape, kernel_size, stride, padding, dilation, ceil_mode):
        kernel = int_tuple(kernel_size, 'kernel_size', fn, dims, 1)
        stride = kernel if stride is None or stride == [] or stride == () else int_tuple(stride, 'stride', fn, dims, 1)
        pad = int_tuple(padding, 'padding', fn, dims, 0)
        dilation = int_tuple(dilation, 'dilation', fn, dims, 1)
        if not isinstance(ceil_mode, (bool, np.bool_)):
            raise TypeError(f'{fn}: ceil_mode must be a bool, got {ceil_mode!r}')
        if any(2 * p > k for p, k in zip(pad, kernel)):
            raise ValueError(f'{fn}: padding must be at most half of kernel_size, got padding={pad} and '
                             f'kernel_size={kernel}')
        n, c, *size = shape
        if c < 1 or min(size) < 1:
            raise ValueError(f'{fn}: input must have channels and spatial sizes >= 1, got shape {tuple(shape)}')
        size_of = formulas.pool_output_size_ceil if ceil_mode else formulas.pool_output_size_floor
        out = tuple(int(size_of(h, k, s, d, p)) for h, k, s, d, p in zip(size, kernel, stride, dilation, pad))
        if min(out) < 1:
            raise ValueError(f'{fn}: kernel_size {kernel} with dilation {dilation} is larger than the padded '
                             f'input {tuple(h + 2 * p for h, p in zip(size, pad))}')
        for h, k, s, d, p, o in zip(size, kernel, stride, dilation, pad, out):
            if np.min(formulas.pool_window_taps(np.arange(o), h, k, s, d, p)) < 1:
                raise ValueError(f'{fn}: with dilation={dilation} and padding={pad} some window holds no input '
                                 'element (only padding); reduce padding or dilation')
        self.output_shape = (n, c) + out
        self.params = dict(N=n, C=c, **spatial('H', size), **spatial('K', kernel), **spatial('O', out),
                           **spatial('S', stride), **spatial('D', dilation), **spatial('P', pad))


def pool_input(fn: str, dims: int, input, name: str = 'input'):
    """(the input checked, whether it has a batch axis)."""
    x = real_array(input, name, fn)
    check_rank(x, name, fn, (dims + 1, dims + 2))
    return x, x.ndim == dims + 2


def batch(arr: np.ndarray, batched: bool) -> np.ndarray:
    """The array with a batch axis."""
    return arr if batched else arr[None]


def max_pool(dims: int, kernels):
    fn = f'max_pool{dims}d'
    tag = plan_tag(kernels, fn)

    def checked(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
        x, batched = pool_input(fn, dims, input)
        geo = geometry(PoolGeometry, fn, dims, x.shape if batched else (1,) + x.shape, kernel_size, stride, padding,
                       dilation, ceil_mode)
        run, shape, dtype = prepare(kernels, fn, geo.params, x.dtype), geo.output_shape, x.dtype

        def plan(input):
            y, idx = np.empty(shape, dtype), np.empty(shape, np.int64)
            if shape[0]:
                run(y, idx, batch(input, batched))
            y, idx = (y, idx) if batched else (y[0], idx[0])
            return (y, idx) if return_indices else y
        return plan

    def forward(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
        params = (kernel_size, stride, padding, dilation, ceil_mode, return_indices)
        if type(input) is ndarray:
            key = (tag, input.shape, input.dtype, *params, *map(type, params))
            try:
                plan = PLANS[key]
            except (KeyError, TypeError):
                plan = remember(key, checked(input, *params), *params)
            return plan(input)
        return checked(input, *params)(input)
    forward.__name__ = forward.__qualname__ = fn
    forward.__doc__ = (f'torch.nn.functional.{fn}; indices are flat positions in each input plane; ties go to the '
                       'first maximum in window order, a NaN to the last NaN (PyTorch CPU).')
    return forward


def max_pool_backward(dims: int, kernels):
    fn = f'max_pool{dims}d_backward'
    tag = plan_tag(kernels, fn)

    def checked(grad_output, input, indices, kernel_size, stride, padding, dilation, ceil_mode):
        x, batched = pool_input(fn, dims, input)
        g = real_array(grad_output, 'grad_output', fn)
        same_dtype(fn, 'input', x, grad_output=g)
        shape = x.shape if batched else (1,) + x.shape
        geo = geometry(PoolGeometry, fn, dims, shape, kernel_size, stride, padding, dilation, ceil_mode)
        g_batched = batched or g.ndim != dims + 1
        check_shape(g if g_batched else g[None], 'grad_output', fn, geo.output_shape)
        run, dtype = prepare(kernels, fn, geo.params, x.dtype), x.dtype
        select = prepare(kernels, f'max_pool{dims}d', geo.params, x.dtype) if indices is None else None
        i_batched = True
        if indices is not None:
            if not isinstance(indices, np.ndarray) or indices.dtype != np.int64:
                raise TypeError(f'{fn}: indices must be an int64 numpy.ndarray (as returned with return_indices)')
            i_batched = batched or indices.ndim != dims + 1
            # the kernels refuse positions outside the plane
            check_shape(indices if i_batched else indices[None], 'indices', fn, geo.output_shape)

        def plan(grad_output, input, indices):
            if indices is None:
                idx = np.empty(geo.output_shape, np.int64)
                if shape[0]:
                    select(np.empty(geo.output_shape, dtype), idx, batch(input, batched))
            else:
                idx = batch(indices, i_batched)
            out = np.empty(shape, dtype)   # the kernels write every element (zero, then scatter)
            if out.size:
                run(out, idx, batch(grad_output, g_batched))
            return out if batched else out[0]
        return plan

    def backward(grad_output, input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                 indices=None):
        params = (kernel_size, stride, padding, dilation, ceil_mode)
        if type(grad_output) is ndarray and type(input) is ndarray and (indices is None or type(indices) is ndarray):
            key = (tag, grad_output.shape, grad_output.dtype, input.shape, input.dtype,
                   indices is None or (indices.shape, indices.dtype), *params, *map(type, params))
            try:
                plan = PLANS[key]
            except (KeyError, TypeError):
                plan = remember(key, checked(grad_output, input, indices, *params), *params)
            return plan(grad_output, input, indices)
        return checked(grad_output, input, indices, *params)(grad_output, input, indices)
    backward.__name__ = backward.__qualname__ = fn
    backward.__doc__ = (f'Gradient of {fn[:-9]} with respect to its input: each window sends its upstream gradient '
                        'to the input position its index names (indices recomputed unless given; given ones may '
                        'name any position of the plane, as in torch).')
    return backward


def avg_options(fn: str, count_include_pad, divisor_override) -> dict:
    if not isinstance(count_include_pad, (bool, np.bool_)):
        raise TypeError(f'{fn}: count_include_pad must be a bool, got {count_include_pad!r}')
    if divisor_override is None:
        override = 0
    else:
        override = integer(divisor_override, 'divisor_override', fn)
        if override == 0:
            raise ValueError(f'{fn}: divisor_override must be nonzero (or None), got 0')
    return dict(count_include_pad=int(bool(count_include_pad)), divisor_override=override)


def avg_pool(dims: int, kernels):
    fn = f'avg_pool{dims}d'
    tag = plan_tag(kernels, fn)

    def checked(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
        x, batched = pool_input(fn, dims, input)
        geo = geometry(PoolGeometry, fn, dims, x.shape if batched else (1,) + x.shape, kernel_size, stride, padding,
                       1, ceil_mode)
        options = avg_options(fn, count_include_pad, divisor_override)
        shape, dtype = geo.output_shape, x.dtype
        plan = prepare(kernels, fn, {**geo.params, **options}, dtype, shape)   # the output new: all of it written
        if not shape[0]:   # (no call: a kernel takes a batch)
            return lambda input: np.empty(shape, dtype)
        return plan if batched else lambda input: plan(input[None])[0]

    def forward(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                divisor_override=None):
        params = (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
        if type(input) is ndarray:
            key = (tag, input.shape, input.dtype, *params, *map(type, params))
            try:
                plan = PLANS[key]
            except (KeyError, TypeError):
                plan = remember(key, checked(input, *params), *params)
            return plan(input)
        return checked(input, *params)(input)
    forward.__name__ = forward.__qualname__ = fn
    forward.__doc__ = f'torch.nn.functional.{fn} (divisor_override accepted for every dimension).'
    return forward


def avg_pool_backward(dims: int, kernels):
    fn = f'avg_pool{dims}d_backward'
    tag = plan_tag(kernels, fn)

    def checked(grad_output, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
        x, batched = pool_input(fn, dims, input)
        g = real_array(grad_output, 'grad_output', fn)
        same_dtype(fn, 'input', x, grad_output=g)
        shape = x.shape if batched else (1,) + x.shape
        geo = geometry(PoolGeometry, fn, dims, shape, kernel_size, stride, padding, 1, ceil_mode)
        g_batched = batched or g.ndim != dims + 1
        check_shape(g if g_batched else g[None], 'grad_output', fn, geo.output_shape)
        options = avg_options(fn, count_include_pad, divisor_override)
        run, dtype = prepare(kernels, fn, {**geo.params, **options}, x.dtype), x.dtype

        def plan(grad_output):
            out = np.empty(shape, dtype)   # the kernels write every element (zero, then scatter)
            if shape[0]:
                run(out, batch(grad_output, g_batched))
            return out if batched else out[0]
        return plan

    def backward(grad_output, input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        params = (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
        if type(grad_output) is ndarray and type(input) is ndarray:
            key = (tag, grad_output.shape, grad_output.dtype, input.shape, input.dtype, *params, *map(type, params))
            try:
                plan = PLANS[key]
            except (KeyError, TypeError):
                plan = remember(key, checked(grad_output, input, *params), *params)
            return plan(grad_output)
        return checked(grad_output, input, *params)(grad_output)
    backward.__name__ = backward.__qualname__ = fn
    backward.__doc__ = f'Gradient of avg_pool{dims}d with respect to its input.'
    return backward


# ----------------------------------------------------------------------------- activations

def limits(fn: str, min_val, max_val) -> dict:
    for name, v in (('min_val', min_val), ('max_val', max_val)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f'{fn}: {name} must be a real number, got {v!r}')
    if min_val > max_val:
        raise ValueError(f'{fn}: min_val ({min_val}) must not exceed max_val ({max_val})')
    return dict(min_val=float(min_val), max_val=float(max_val))


def activation_forward(name: str, kernels, x, extra: dict) -> np.ndarray:
    arr = real_array(x, 'x', name)
    out = np.empty_like(arr)
    if arr.size:
        getattr(kernels, name)(dict(numel=arr.size, **extra), output=out, input=arr)
    return out


def activation_backward(name: str, kernels, grad_output, saved: tuple, extra: dict) -> np.ndarray:
    """``saved`` = (public name, kernel name, array): the input (relu, hardtanh) or output (sigmoid, tanh)."""
    fn = f'{name}_backward'
    public, kernel_name, value = saved
    g = real_array(grad_output, 'grad_output', fn)
    s = real_array(value, public, fn)
    same_dtype(fn, 'grad_output', g, **{public: s})
    check_shape(s, public, fn, g.shape)
    out = np.empty_like(g)
    if g.size:
        getattr(kernels, fn)(dict(numel=g.size, **extra), grad_input=out, grad_output=g, **{kernel_name: s})
    return out


def activation_functions(kernels) -> dict:
    def relu(x):
        return activation_forward('relu', kernels, x, {})

    def relu_backward(grad_output, x):
        return activation_backward('relu', kernels, grad_output, ('x', 'input', x), {})

    def sigmoid(x):
        return activation_forward('sigmoid', kernels, x, {})

    def sigmoid_backward(grad_output, output):
        return activation_backward('sigmoid', kernels, grad_output, ('output', 'output', output), {})

    def tanh(x):
        return activation_forward('tanh', kernels, x, {})

    def tanh_backward(grad_output, output):
        return activation_backward('tanh', kernels, grad_output, ('output', 'output', output), {})

    def hardtanh(x, min_val=-1.0, max_val=1.0):
        return activation_forward('hardtanh', kernels, x, limits('hardtanh', min_val, max_val))

    def hardtanh_backward(grad_output, x, min_val=-1.0, max_val=1.0):
        return activation_backward('hardtanh', kernels, grad_output, ('x', 'input', x),
                                   limits('hardtanh_backward', min_val, max_val))

    return {f.__name__: f for f in (relu, relu_backward, sigmoid, sigmoid_backward, tanh, tanh_backward, hardtanh,
                                    hardtanh_backward)}


def public_functions(kernels) -> dict:
    """Every public function, built on the backend's low-level ``kernels``."""
    api = {}
    for dims in (1, 2, 3):
        for make in (conv_forward, conv_input, conv_weight, conv_bias, max_pool, max_pool_backward, avg_pool,
                     avg_pool_backward):
            f = make(dims, kernels)
            api[f.__name__] = f
    api.update(activation_functions(kernels))
    return api
