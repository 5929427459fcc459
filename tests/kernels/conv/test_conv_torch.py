"""conv{1,2,3}d and its three gradients against PyTorch autograd: a seeded sweep of configurations, a
hypothesis property test, and the semantics the torch-semantics report singles out."""
import warnings
from functools import cache

import numpy as np
import pytest
from conftest import BACKENDS, DTYPES, assert_close, non_contiguous
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip('torch')
torch.set_num_threads(1)      # tiny problems: waking a thread pool would cost more than the work
F = torch.nn.functional

CHUNKS, PER_CHUNK = 25, 20


def conv_output_size(h, k, s, d, left, right) -> int:
    return (h + left + right - d * (k - 1) - 1) // s + 1


def parameter_form(rng, values: tuple):
    """An int (when all equal), a tuple, or a list, as torch accepts them."""
    form = rng.integers(3)
    if form == 0 and len(set(values)) == 1:
        return int(values[0])
    return tuple(int(v) for v in values) if form < 2 else [int(v) for v in values]


def padding_choice(rng, dims: int, stride: tuple):
    """(padding argument, left pads, right pads)."""
    kind = rng.choice(['int', 'tuple', 'same', 'valid'], p=[0.35, 0.35, 0.2, 0.1])
    if kind == 'same' and max(stride) == 1:
        return 'same', None, None
    if kind == 'valid':
        return 'valid', (0,) * dims, (0,) * dims
    pads = tuple(int(p) for p in rng.integers(0, 4, size=dims))
    if kind == 'int':
        return int(pads[0]), (pads[0],) * dims, (pads[0],) * dims
    return pads, pads, pads


def random_conv_config(rng) -> dict:
    dims = int(rng.choice([1, 2, 3], p=[0.35, 0.4, 0.25]))
    groups = int(rng.choice([1, 1, 1, 2, 3]))
    kernel = tuple(int(k) for k in rng.integers(1, 5 if dims < 3 else 4, size=dims))
    dilation = tuple(int(d) for d in rng.choice([1, 1, 2, 3], size=dims))
    stride = tuple(int(s) for s in rng.choice([1, 1, 2, 3, 5], size=dims))
    padding, left, right = padding_choice(rng, dims, stride)
    if padding == 'same':
        left = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
        right = tuple(d * (k - 1) - lf for k, d, lf in zip(kernel, dilation, left))
    span = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    low = tuple(max(1, s - lf - r) for s, lf, r in zip(span, left, right))
    size = tuple(int(rng.integers(lo, lo + (6 if dims < 3 else 4))) for lo in low)
    if rng.random() < 0.2:                                 # wide rows: the C kernels' vector tiles and edges
        size = size[:-1] + (int(rng.integers(max(low[-1], 15), 45)),)
    if rng.random() < 0.1 and padding != 'same':          # kernel equal to the input
        padding, size, dilation = 0, kernel, (1,) * dims
    return dict(dims=dims, batch=int(rng.integers(1, 4)), unbatched=bool(rng.random() < 0.15),
                c_in=groups * int(rng.integers(1, 3)), c_out=groups * int(rng.integers(1, 3)), groups=groups,
                size=size, kernel=kernel, stride=parameter_form(rng, stride), padding=padding,
                dilation=parameter_form(rng, dilation), bias=bool(rng.random() < 0.7),
                dtype=DTYPES[int(rng.integers(2))], non_contiguous=bool(rng.random() < 0.2),
                seed=int(rng.integers(2**31)))


@cache
def sweep() -> tuple:
    rng = np.random.default_rng(2013)
    return tuple(random_conv_config(rng) for _ in range(CHUNKS * PER_CHUNK))


def arrays_of(config: dict) -> dict:
    rng = np.random.default_rng(config['seed'])
    shape = (config['c_in'],) + config['size']
    if not config['unbatched']:
        shape = (config['batch'],) + shape
    dtype = config['dtype']
    return dict(input=rng.standard_normal(shape).astype(dtype),
                weight=rng.standard_normal((config['c_out'], config['c_in'] // config['groups']) + config['kernel'])
                .astype(dtype),
                bias=rng.standard_normal(config['c_out']).astype(dtype) if config['bias'] else None)


def params_of(config: dict) -> dict:
    return {k: config[k] for k in ('stride', 'padding', 'dilation', 'groups')}


def torch_conv(config: dict, x, w, b, g) -> tuple:
    """(output, grad_input, grad_weight, grad_bias) by autograd; grad_bias None without a bias."""
    conv = getattr(F, f'conv{config["dims"]}d')
    tensors = [torch.from_numpy(a).requires_grad_() for a in (x, w) + ((b,) if b is not None else ())]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)      # 'same' with an even kernel
        y = conv(*tensors[:2], tensors[2] if b is not None else None, **params_of(config))
    if g is None:
        return (y.detach().numpy(),)
    grads = torch.autograd.grad(y, tensors, torch.from_numpy(g))
    return (y.detach().numpy(),) + tuple(t.numpy() for t in grads) + ((None,) if b is None else ())


@cache
def torch_reference(index: int) -> dict:
    """Torch's output and gradients, and their magnitudes (the same computation on absolute values)."""
    config = sweep()[index]
    arrays = arrays_of(config)
    x, w, b = arrays['input'], arrays['weight'], arrays['bias']
    y = torch_conv(config, x, w, b, None)[0]
    g = np.random.default_rng(config['seed'] + 1).standard_normal(y.shape).astype(config['dtype'])
    values = torch_conv(config, x, w, b, g)
    magnitudes = torch_conv(config, np.abs(x), np.abs(w), None if b is None else np.abs(b), np.abs(g))
    return dict(arrays=arrays, grad_output=g, values=values,
                scales=[0.0 if m is None else float(np.max(m, initial=0.0)) for m in magnitudes])


def ours(backend, config: dict, arrays: dict, g) -> tuple:
    dims, params = config['dims'], params_of(config)
    x, w, b = arrays['input'], arrays['weight'], arrays['bias']
    if config['non_contiguous']:
        x, w, g = non_contiguous(x), non_contiguous(w), non_contiguous(g)
    batched_x, batched_g = (x[None], g[None]) if config['unbatched'] else (x, g)
    grads = (getattr(backend, f'conv{dims}d_input')(batched_x.shape, w, batched_g, **params),
             getattr(backend, f'conv{dims}d_weight')(batched_x, w.shape, batched_g, **params),
             getattr(backend, f'conv{dims}d_bias')(batched_g) if b is not None else None)
    if config['unbatched']:
        grads = (grads[0][0],) + grads[1:]
    return (getattr(backend, f'conv{dims}d')(x, w, b, **params),) + grads


def check_against_torch(backend, index: int) -> None:
    config, ref = sweep()[index], torch_reference(index)
    got = ours(backend, config, ref['arrays'], ref['grad_output'])
    for name, mine, theirs, scale in zip(('output', 'grad_input', 'grad_weight', 'grad_bias'), got, ref['values'],
                                         ref['scales']):
        if theirs is not None:
            assert_close(mine, theirs, scale=scale, what=f'{name} of config {index}: {config}')


@pytest.mark.parametrize('chunk', range(CHUNKS))
def test_conv_sweep_matches_torch(backend, chunk):
    for index in range(chunk * PER_CHUNK, (chunk + 1) * PER_CHUNK):
        check_against_torch(backend, index)


def test_conv_sweep_covers_the_required_cases():
    configs = sweep()
    stride_one = [c for c in configs if c['stride'] in (1, (1,) * c['dims'], [1] * c['dims'])]
    assert len(configs) >= 500
    assert {c['dims'] for c in configs} == {1, 2, 3}
    assert any(c['padding'] == 'same' and any(k % 2 == 0 for k in c['kernel']) for c in configs)
    assert any(c['padding'] == 'valid' for c in configs) and stride_one
    assert any(isinstance(c['padding'], tuple) for c in configs)
    assert any(c['groups'] > 1 for c in configs) and any(c['unbatched'] for c in configs)
    assert any(c['size'] == c['kernel'] and c['padding'] == 0 for c in configs)
    assert any(min(c['kernel']) == 1 for c in configs) and any(c['non_contiguous'] for c in configs)
    assert {np.dtype(c['dtype']).name for c in configs} == {'float32', 'float64'}
    assert any(c['batch'] > 1 and not c['unbatched'] for c in configs)
    assert sum(c['size'][-1] >= 16 for c in configs) >= 50, 'rows as wide as a vector of floats'
    strides = [(c['stride'],) * c['dims'] if isinstance(c['stride'], int) else c['stride'] for c in configs]
    assert any(s > k for st, c in zip(strides, configs) for s, k in zip(st, c['kernel']))


# ----------------------------------------------------------------------------- hypothesis

@st.composite
def conv_cases(draw):
    dims = draw(st.integers(1, 3))
    kernel = tuple(draw(st.lists(st.integers(1, 3), min_size=dims, max_size=dims)))
    stride = tuple(draw(st.lists(st.integers(1, 4), min_size=dims, max_size=dims)))
    dilation = tuple(draw(st.lists(st.integers(1, 3), min_size=dims, max_size=dims)))
    padding = tuple(draw(st.lists(st.integers(0, 3), min_size=dims, max_size=dims)))
    size = tuple(max(1, d * (k - 1) + 1 - 2 * p) + draw(st.integers(0, 4))
                 for k, d, p in zip(kernel, dilation, padding))
    groups = draw(st.sampled_from([1, 2]))
    return dict(dims=dims, batch=draw(st.integers(1, 2)), unbatched=False, c_in=groups * draw(st.integers(1, 2)),
                c_out=groups * draw(st.integers(1, 2)), groups=groups, size=size, kernel=kernel, stride=stride,
                padding=padding, dilation=dilation, bias=draw(st.booleans()),
                dtype=draw(st.sampled_from(DTYPES)), non_contiguous=draw(st.booleans()),
                seed=draw(st.integers(0, 2**31 - 1)))


@settings(max_examples=40, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=conv_cases())
def test_conv_property_matches_torch(backend, config):
    arrays = arrays_of(config)
    x, w, b = arrays['input'], arrays['weight'], arrays['bias']
    y = torch_conv(config, x, w, b, None)[0]
    g = np.random.default_rng(config['seed']).standard_normal(y.shape).astype(config['dtype'])
    expected = torch_conv(config, x, w, b, g)
    scales = torch_conv(config, np.abs(x), np.abs(w), None if b is None else np.abs(b), np.abs(g))
    for mine, theirs, scale in zip(ours(backend, config, arrays, g), expected, scales):
        if theirs is not None:
            assert_close(mine, theirs, scale=float(np.max(scale)), what=str(config))


# ----------------------------------------------------------------------------- named semantics

@pytest.mark.parametrize('kernel,dilation', [(4, 1), (2, 1), (6, 1), (4, 3), (3, 2)])
def test_same_padding_puts_the_extra_element_on_the_right(backend, kernel, dilation):
    rng = np.random.default_rng(kernel * 10 + dilation)
    x, w = rng.standard_normal((1, 2, 9)), rng.standard_normal((3, 2, kernel))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        expected = F.conv1d(torch.from_numpy(x), torch.from_numpy(w), padding='same', dilation=dilation).numpy()
    got = backend.conv1d(x, w, padding='same', dilation=dilation)
    assert got.shape == x.shape[:1] + (3, 9)
    assert_close(got, expected)
    total = dilation * (kernel - 1)
    explicit = backend.conv1d(np.pad(x, ((0, 0), (0, 0), (total // 2, total - total // 2))), w, dilation=dilation)
    assert_close(got, explicit)


def test_same_padding_2d_even_kernel_gradients(backend):
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((2, 2, 5, 6)), rng.standard_normal((2, 2, 2, 4))
    xt, wt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        y = F.conv2d(xt, wt, padding='same', dilation=(1, 2))
    g = rng.standard_normal(y.shape)
    gx, gw = torch.autograd.grad(y, (xt, wt), torch.from_numpy(g))
    assert_close(backend.conv2d(x, w, padding='same', dilation=(1, 2)), y.detach().numpy())
    assert_close(backend.conv2d_input(x.shape, w, g, padding='same', dilation=(1, 2)), gx.numpy())
    assert_close(backend.conv2d_weight(x, w.shape, g, padding='same', dilation=(1, 2)), gw.numpy())


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize('width, kernel, padding, dilation, groups', [
    (17, 3, 1, 1, 1), (56, 3, 1, 1, 1), (40, 5, 2, 1, 2), (24, 3, 2, 2, 1), (20, (3, 1), (1, 0), 1, 1),
    (35, (1, 3), (0, 1), 1, 1), (19, 2, 'same', 1, 1)])
def test_rows_of_the_input_width_match_torch(backend, dtype, width, kernel, padding, dilation, groups):
    """Stride 1 with the output as wide as the input: the C forward and input gradient run over the
    flattened plane (chunks across row ends, lane masks from the rule's constraints) when a row is not
    a whole number of vectors."""
    rng = np.random.default_rng(width)
    x = rng.standard_normal((2, 4, 5, width)).astype(dtype)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    w = rng.standard_normal((6, 4 // groups, kh, kw)).astype(dtype)
    params = dict(padding=padding, dilation=dilation, groups=groups)
    xt, wt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        y = F.conv2d(xt, wt, **params)
    assert y.shape[-1] == width
    g = rng.standard_normal(tuple(y.shape)).astype(dtype)
    gx, gw = torch.autograd.grad(y, (xt, wt), torch.from_numpy(g))
    assert_close(backend.conv2d(x, w, **params), y.detach().numpy())
    assert_close(backend.conv2d_input(x.shape, w, g, **params), gx.numpy())
    assert_close(backend.conv2d_weight(x, w.shape, g, **params), gw.numpy())


@pytest.mark.sanitize_subset
@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize('padding', [0, 1])
@pytest.mark.parametrize('width', [16, 24, 31, 32, 40, 48, 56, 64, 70])
def test_rows_of_several_vectors_with_channel_blocks_match_torch(backend, dtype, width, padding):
    """Channels in blocks of 8 plus a partial block, rows of one to nine vectors: the C forward and input
    gradient compute consecutive vectors of a row per tile -- with AVX-512 two (8 channels), with AVX2
    three (the block's channels 4 at a time) --, then single chunks, then the last chunk overlapping its
    neighbour; border groups lane-guarded.  The weight gradient's tiles: 8 x 2 or 4 x 3 channels."""
    rng = np.random.default_rng(width + 100 * padding)
    x = rng.standard_normal((2, 9, 4, width + 2 - 2 * padding)).astype(dtype)
    w = rng.standard_normal((10, 9, 3, 3)).astype(dtype)
    xt, wt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
    y = F.conv2d(xt, wt, padding=padding)
    assert y.shape[-1] == width
    g = rng.standard_normal(tuple(y.shape)).astype(dtype)
    gx, gw = torch.autograd.grad(y, (xt, wt), torch.from_numpy(g))
    assert_close(backend.conv2d(x, w, padding=padding), y.detach().numpy())
    assert_close(backend.conv2d_input(x.shape, w, g, padding=padding), gx.numpy())
    assert_close(backend.conv2d_weight(x, w.shape, g, padding=padding), gw.numpy())


@pytest.mark.sanitize_subset
@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize('dims, stride, padding', [(2, 1, 0), (2, 2, 1), (2, 1, 1), (3, 2, 1), (3, 1, 0)])
@pytest.mark.parametrize('width', [7, 8, 13, 16])
def test_weight_gradient_of_rows_of_one_vector_matches_torch(backend, dtype, dims, stride, padding, width):
    """Output rows of at most one vector (float32: 16 lanes, float64: 8), channels in blocks plus
    partial blocks: the C weight gradient then walks the rows inside each chunk column (the full
    chunk, then the lane-guarded rest)."""
    rng = np.random.default_rng(width + 10 * dims + 100 * stride + 1000 * padding)
    size = stride * (width - 1) + 3 - 2 * padding
    x = rng.standard_normal((2, 3) + (5,) * (dims - 1) + (size,)).astype(dtype)
    w = rng.standard_normal((9, 3) + (3,) * dims).astype(dtype)
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    y = getattr(F, f'conv{dims}d')(xt, wt, stride=stride, padding=padding)
    assert y.shape[-1] == width
    g = rng.standard_normal(tuple(y.shape)).astype(dtype)
    expected = getattr(torch.nn.grad, f'conv{dims}d_weight')(xt, w.shape, torch.from_numpy(g), stride=stride,
                                                               padding=padding)
    got = getattr(backend, f'conv{dims}d_weight')(x, w.shape, g, stride=stride, padding=padding)
    assert_close(got, expected.numpy())


@pytest.mark.sanitize_subset
@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize('out, kernel, stride, padding, dilation', [
    ((33, 40), 3, 1, 0, 1), ((33, 40), 3, 1, 1, 1), ((16, 16), 3, 2, 1, 1), ((17, 19), 3, 2, 0, 1),
    ((16, 17), (2, 5), (1, 2), (1, 2), (2, 1)), ((16, 16), 9, 1, 4, 1)])
def test_weight_gradient_in_passes_per_image_matches_torch(backend, dtype, out, kernel, stride, padding, dilation):
    """Channels in blocks plus partial blocks, >= 256 output positions per image: the C weight gradient
    then runs one pass per image over all its taps, the accumulators parked in a stack buffer between the
    passes (strides 1 and 2); a 9x9 kernel has more taps than the buffer holds and runs the other way."""
    rng = np.random.default_rng(sum(out))
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    (sh, sw), (ph, pw), (dh, dw) = (v if isinstance(v, tuple) else (v, v) for v in (stride, padding, dilation))
    size = (sh * (out[0] - 1) + dh * (kh - 1) + 1 - 2 * ph, sw * (out[1] - 1) + dw * (kw - 1) + 1 - 2 * pw)
    x = rng.standard_normal((3, 5) + size).astype(dtype)
    w = rng.standard_normal((9, 5, kh, kw)).astype(dtype)
    params = dict(stride=stride, padding=padding, dilation=dilation)
    xt, wt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
    y = F.conv2d(xt, wt, **params)
    assert tuple(y.shape[-2:]) == out
    g = rng.standard_normal(tuple(y.shape)).astype(dtype)
    gw, = torch.autograd.grad(y, (wt,), torch.from_numpy(g))
    assert_close(backend.conv2d_weight(x, w.shape, g, **params), gw.numpy())


@pytest.mark.sanitize_subset
@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize('c_out, c_in, size, padding', [
    (9, 3, (20, 37), 1), (12, 5, (9, 16), 0), (3, 3, (18, 18), 1), (8, 1, (24, 24), 0), (17, 7, (5, 70), 2)])
def test_weight_gradient_with_partial_register_blocks_matches_torch(backend, dtype, c_out, c_in, size, padding):
    """Output and input channels that are not whole register blocks (8 x 2 for the C weight gradient): the
    channels past the last full block run tiles with a block of 1 for their index (an RGB input's 3
    channels: one block of 2 and one tile of 1), with and without per-image passes."""
    rng = np.random.default_rng(c_out * 100 + c_in)
    x = rng.standard_normal((2, c_in) + size).astype(dtype)
    w = rng.standard_normal((c_out, c_in, 3, 3)).astype(dtype)
    xt, wt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
    y = F.conv2d(xt, wt, padding=padding)
    g = rng.standard_normal(tuple(y.shape)).astype(dtype)
    gx, gw = torch.autograd.grad(y, (xt, wt), torch.from_numpy(g))
    assert_close(backend.conv2d_weight(x, w.shape, g, padding=padding), gw.numpy())
    assert_close(backend.conv2d_input(x.shape, w, g, padding=padding), gx.numpy())


OUTER_CASES = [   # dims, c_out, c_in, groups, size, stride, padding, dilation
    (2, 20, 5, 1, (35, 41), 1, 1, 1),          # partial vectors of output channels (16 + 4 floats), an odd channel
    (2, 34, 4, 2, (20, 21), 2, 0, 1),          # groups of 17 output channels, stride 2, no padding
    (2, 17, 3, 1, (12, 50), 1, 2, 2),          # dilation 2: the interior starts 2 positions in
    (2, 17, 2, 1, (4, 5), 1, 2, 1),            # padding 2: no position has all its taps inside
    (2, 33, 2, 1, (70, 9), (1, 2), (1, 0), 1),  # several bands of rows, strides and paddings per axis
    (2, 16, 70, 1, (9, 10), 1, 1, 1),          # input channels past a parallel block's 64 (64 + 6, or 35 + 35)
    (3, 17, 2, 1, (5, 6, 7), 1, 1, 1)]         # 27 taps, one input channel at a time


@pytest.mark.sanitize_subset
@pytest.mark.skipif('c' not in BACKENDS, reason='C backend not selected')
@pytest.mark.parametrize('threads', [1, 2])
@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize('dims, c_out, c_in, groups, size, stride, padding, dilation', OUTER_CASES)
def test_weight_gradient_in_the_outer_product_form_matches_torch(threads, dtype, dims, c_out, c_in, groups, size,
                                                                stride, padding, dilation):
    """3-wide windows with more output channels per group than a vector holds (AVX-512: 16 floats, 8 doubles):
    the C weight gradient's outer-product form (codegen.lower_outer) at 1 and 2 threads.  Then one gradient
    is infinite at the first position: the taps that read padding there are left as they were with a 0 in
    its place (the rule's sum has no term there; torch's oneDNN path agrees, its im2col path and
    generated.numpy give NaN, 0 x inf)."""
    import generated.c as c
    rng = np.random.default_rng(c_out * 100 + sum(size))
    x = rng.standard_normal((2, c_in * groups) + size).astype(dtype)
    w = rng.standard_normal((c_out, c_in) + (3,) * dims).astype(dtype)
    params = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    conv = getattr(F, f'conv{dims}d')
    xt, wt = torch.from_numpy(x), torch.from_numpy(w).requires_grad_()
    y = conv(xt, wt, **params)
    g = rng.standard_normal(tuple(y.shape)).astype(dtype)
    gw, = torch.autograd.grad(y, (wt,), torch.from_numpy(g))
    weight = getattr(c, f'conv{dims}d_weight')
    before = c.get_num_threads()
    c.set_num_threads(threads)
    try:
        assert_close(weight(x, w.shape, g, **params), gw.numpy())
        first = (1, 0) + (0,) * dims
        g[first] = 0.0
        zero = weight(x, w.shape, g, **params)
        g[first] = np.inf
        infinite = weight(x, w.shape, g, **params)
    finally:
        c.set_num_threads(before)
    pads, steps = (v if isinstance(v, tuple) else (v,) * dims for v in (padding, dilation))
    on_padding = np.zeros((3,) * dims, bool)
    for axis, (p, d) in enumerate(zip(pads, steps)):
        taps = [slice(None)] * dims
        taps[axis] = [m for m in range(3) if d * m < p]
        on_padding[tuple(taps)] = True
    np.testing.assert_array_equal(infinite[0][:, on_padding], zero[0][:, on_padding])
    assert np.isinf(infinite[0][:, ~on_padding]).all()
    np.testing.assert_array_equal(infinite[1:], zero[1:])


@pytest.mark.sanitize_subset
@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize('dims, size, stride, padding, kernel', [
    (2, (14, 14), 1, 1, 3), (2, (7, 7), 1, 1, 3), (2, (28, 28), 2, 1, 3), (2, (14, 14), 2, 0, 1), (2, (5, 3), 1, 0, 1),
    (2, (9, 15), 1, 1, 3), (2, (4, 2), 1, 0, 1), (3, (3, 6, 6), 1, 1, 3), (3, (4, 8, 13), (1, 2, 2), 1, 3)])
def test_rows_narrower_than_a_vector_match_torch(backend, dtype, dims, size, stride, padding, kernel):
    """ResNet's later stages: rows of 14 or 7 outputs, narrower than a vector (16 floats, 8 doubles), 9
    and 10 channels (a block of 8 and a partial one).  The C forward and input gradient run chunks over
    the flattened plane (several rows a chunk, a lane mask from each row's constraints) where the input
    rows are as wide as the output's, else one chunk a row with its loads and store masked."""
    rng = np.random.default_rng(sum(size) + 10 * dims)
    x = rng.standard_normal((2, 9) + size).astype(dtype)
    w = rng.standard_normal((10, 9) + (kernel,) * dims).astype(dtype)
    params = dict(stride=stride, padding=padding)
    conv = getattr(F, f'conv{dims}d')
    xt, wt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
    y = conv(xt, wt, **params)
    g = rng.standard_normal(tuple(y.shape)).astype(dtype)
    gx, gw = torch.autograd.grad(y, (xt, wt), torch.from_numpy(g))
    assert_close(getattr(backend, f'conv{dims}d')(x, w, **params), y.detach().numpy())
    assert_close(getattr(backend, f'conv{dims}d_input')(x.shape, w, g, **params), gx.numpy())
    assert_close(getattr(backend, f'conv{dims}d_weight')(x, w.shape, g, **params), gw.numpy())


@pytest.mark.sanitize_subset
@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize('dims, channels, size, padding, dilation', [
    (2, 1, (28, 28), 0, 1), (2, 3, (13, 40), 1, 1), (2, 2, (9, 7), 1, 1), (2, 1, (7, 20), 0, 1),
    (2, 2, (26, 19), (1, 0), 1), (2, 2, (20, 20), 1, (1, 2)), (3, 2, (4, 12, 18), 1, 1)])
def test_one_channel_tiles_in_row_blocks_match_torch(backend, dtype, dims, channels, size, padding, dilation):
    """One input and one output channel a group (tiny, depthwise convolutions): the C forward and input
    gradient run the rows whose taps are all inside in blocks, a 3-wide undilated window with its taps
    unrolled in blocks of 8 rows; rows before and after the blocks (padding), fewer rows than a block,
    rows narrower than a vector, a remainder of rows, a dilated row axis (the general blocks), 3d."""
    rng = np.random.default_rng(sum(size) + channels)
    x = rng.standard_normal((2, channels) + size).astype(dtype)
    w = rng.standard_normal((channels, 1) + (3,) * dims).astype(dtype)
    b = rng.standard_normal(channels).astype(dtype)
    params = dict(padding=padding, dilation=dilation, groups=channels)
    conv = getattr(F, f'conv{dims}d')
    xt, wt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
    y = conv(xt, wt, torch.from_numpy(b), **params)
    g = rng.standard_normal(tuple(y.shape)).astype(dtype)
    gx, = torch.autograd.grad(y, (xt,), torch.from_numpy(g))
    assert_close(getattr(backend, f'conv{dims}d')(x, w, b, **params), y.detach().numpy())
    assert_close(getattr(backend, f'conv{dims}d_input')(x.shape, w, g, **params), gx.numpy())


@pytest.mark.sanitize_subset
@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize('dims, c_in, size, kernel, stride, padding, groups', [
    (2, 20, (9, 21), 7, 1, 3, 1), (2, 20, (8, 32), 7, 1, 0, 1), (2, 40, (12, 12), 5, 2, 2, 2),
    (2, 130, (5, 7), 3, 1, 1, 1), (1, 100, (40,), 9, 1, 4, 1), (3, 24, (3, 5, 18), 5, 1, 2, 1)])
def test_forward_with_its_input_channels_in_blocks_matches_torch(backend, dtype, dims, c_in, size, kernel, stride,
                                                                  padding, groups):
    """A register block's weights larger than L1 (8 output channels x input channels x taps > 6144): the C
    forward sums the input channels in blocks outside the positions, the first block storing its partial
    sum and the bias, the later ones adding theirs (the last chunk of a row then covers the remaining lanes
    only).  Rows of whole vectors, ragged rows, narrow rows, strides, groups, 11 output channels (a block
    and a partial one)."""
    rng = np.random.default_rng(c_in + sum(size))
    x = rng.standard_normal((2, c_in) + size).astype(dtype)
    w = rng.standard_normal((11 * groups, c_in // groups) + (kernel,) * dims).astype(dtype)
    b = rng.standard_normal(11 * groups).astype(dtype)
    params = dict(stride=stride, padding=padding, groups=groups)
    expected = getattr(F, f'conv{dims}d')(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), **params)
    assert_close(getattr(backend, f'conv{dims}d')(x, w, b, **params), expected.numpy())


def test_c_weight_gradient_writes_every_element_of_its_output():
    """The low-level C kernel zeroes what it accumulates into: an output full of NaN comes back exact."""
    if 'c' not in BACKENDS:
        pytest.skip('C backend not selected')
    from generated.c import _binding
    rng = np.random.default_rng(43)
    x, g = rng.standard_normal((3, 5, 35, 42)), rng.standard_normal((3, 9, 33, 40))
    sizes = dict(CG=5, D0=1, D1=1, G=1, H0=35, H1=42, K0=3, K1=3, KG=9, N=3, O0=33, O1=40, P0=0, P1=0, S0=1, S1=1)
    out = np.full((9, 5, 3, 3), np.nan)
    _binding.conv2d_weight(sizes, grad_weight=out, grad_output=g, input=x)
    expected = torch.nn.grad.conv2d_weight(torch.from_numpy(x), (9, 5, 3, 3), torch.from_numpy(g)).numpy()
    assert_close(out, expected)


@pytest.mark.parametrize('extra', [0, 1, 2])
def test_conv_input_accepts_a_larger_input_size(backend, extra):
    """Any input size whose forward output matches grad_output (an implicit output padding), as torch."""
    rng = np.random.default_rng(extra)
    w, g = rng.standard_normal((4, 2, 3, 3)), rng.standard_normal((2, 4, 3, 3))
    size = (2, 2, 9 + extra, 9 + extra)
    expected = torch.nn.grad.conv2d_input(size, torch.from_numpy(w), torch.from_numpy(g), stride=3).numpy()
    got = backend.conv2d_input(size, w, g, stride=3)
    assert_close(got, expected)
    if extra:
        assert np.all(got[..., 9:, :] == 0) and np.all(got[..., :, 9:] == 0)


def test_conv_weight_with_a_larger_input(backend):
    rng = np.random.default_rng(3)
    x, g = rng.standard_normal((2, 2, 9, 10)), rng.standard_normal((2, 4, 3, 3))
    expected = torch.nn.grad.conv2d_weight(torch.from_numpy(x), (4, 2, 3, 3), torch.from_numpy(g), stride=3)
    assert_close(backend.conv2d_weight(x, (4, 2, 3, 3), g, stride=3), expected.numpy())


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: np.dtype(d).name)
def test_conv_accepts_transposed_and_sliced_arrays(backend, dtype):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((7, 6, 3, 2)).astype(dtype).transpose(3, 2, 1, 0)     # (2, 3, 6, 7), F-ordered
    w = rng.standard_normal((4, 3, 6, 3)).astype(dtype)[:, :, ::2, :]             # (4, 3, 3, 3), strided
    b = rng.standard_normal(8).astype(dtype)[::2]
    assert not (x.flags.c_contiguous or w.flags.c_contiguous or b.flags.c_contiguous)
    xt, wt, bt = (torch.from_numpy(np.ascontiguousarray(a)) for a in (x, w, b))
    y = F.conv2d(xt, wt, bt, padding=1)
    g = rng.standard_normal((4, 4, 7, 6)).astype(dtype).transpose(0, 1, 3, 2)[:2, :]
    gx, gw = (torch.nn.grad.conv2d_input(x.shape, wt, torch.from_numpy(np.ascontiguousarray(g)), padding=1),
              torch.nn.grad.conv2d_weight(xt, w.shape, torch.from_numpy(np.ascontiguousarray(g)), padding=1))
    assert_close(backend.conv2d(x, w, b, padding=1), y.numpy(), scale=30.0)
    assert_close(backend.conv2d_input(x.shape, w, g, padding=1), gx.numpy(), scale=30.0)
    assert_close(backend.conv2d_weight(x, w.shape, g, padding=1), gw.numpy(), scale=30.0)
    assert_close(backend.conv2d_bias(g), np.ascontiguousarray(g).sum(axis=(0, 2, 3)), scale=30.0)


def test_outputs_are_new_contiguous_arrays_of_the_input_dtype(backend):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32).transpose(0, 1, 3, 2)
    w = rng.standard_normal((3, 2, 2, 2)).astype(np.float32)
    g = np.ones((1, 3, 4, 4), np.float32)
    for y in (backend.conv2d(x, w), backend.conv2d_input(x.shape, w, g), backend.conv2d_weight(x, w.shape, g),
              backend.conv2d_bias(g)):
        assert y.dtype == np.float32 and y.flags.c_contiguous and y.flags.owndata
        assert not np.shares_memory(y, x) and not np.shares_memory(y, g)


@pytest.mark.parametrize('backend_name,width', [(b, width) for b in ('numpy', 'c') for width in (3, 20)])
def test_infinite_weight_over_padding_matches_torch(backend_name, width):
    """An infinite weight over zero padding: torch (im2col and oneDNN) gives NaN (0 * inf), as do
    generated.numpy and the C vector path, rows narrower than a vector included (their chunk's masked
    loads read zeros).  The portable C path (-DBPGEN_NO_VECTOR) skips padded taps and gives a finite
    value."""
    import importlib
    module = importlib.import_module(f'generated.{backend_name}')
    x, w = np.ones((1, 1, width)), np.array([[[np.inf, 1.0, 1.0]]])
    expected = F.conv1d(torch.from_numpy(x), torch.from_numpy(w), padding=1).numpy()
    with np.errstate(invalid='ignore'):
        got = module.conv1d(x, w, padding=1)
    assert np.isnan(expected[0, 0, 0])
    np.testing.assert_array_equal(got, expected)
