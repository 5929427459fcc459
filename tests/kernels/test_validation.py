"""Bad input never crashes and never returns garbage: each case raises ValueError or TypeError whose message
names the offending parameter (both backends).  Includes the checks torch lacks (the batch of input_size
against grad_output, max-pool windows that hold no input element)."""
import numpy as np
import pytest
from conftest import BACKENDS

X = np.zeros((1, 2, 5, 5))
W = np.zeros((4, 2, 3, 3))
GO = np.zeros((1, 4, 3, 3))
RNG = np.random.default_rng(7)
XR, WR, GR = (RNG.standard_normal(a.shape) for a in (X, W, GO))
K_INDICES = np.zeros((1, 2, 2, 2), np.int64)
X1 = np.zeros((1, 1, 6))

# id: (call on the backend K, exception type, words the message must contain)
CASES = {
    # rank
    'conv2d input rank 2': (lambda K: K.conv2d(np.zeros((5, 5)), W), ValueError, ['input']),
    'conv2d input rank 5': (lambda K: K.conv2d(np.zeros((1, 1, 2, 5, 5)), W), ValueError, ['input']),
    'conv1d weight rank 4': (lambda K: K.conv1d(X1, np.zeros((1, 1, 2, 2))), ValueError, ['weight']),
    'conv3d input rank 3': (lambda K: K.conv3d(np.zeros((2, 5, 5)), np.zeros((1, 2, 2, 2, 2))), ValueError,
                            ['input']),
    'conv2d_input grad_output unbatched': (lambda K: K.conv2d_input((1, 2, 5, 5), W, GO[0]), ValueError,
                                           ['grad_output']),
    'conv2d_bias grad_output rank': (lambda K: K.conv2d_bias(np.zeros((4, 3, 3))), ValueError, ['grad_output']),
    'max_pool2d input rank 2': (lambda K: K.max_pool2d(np.zeros((5, 5)), 2), ValueError, ['input']),
    'avg_pool3d input rank 3': (lambda K: K.avg_pool3d(np.zeros((5, 5, 5)), 2), ValueError, ['input']),
    'avg_pool1d input rank 4': (lambda K: K.avg_pool1d(np.zeros((1, 1, 1, 4)), 2), ValueError, ['input']),
    # shapes
    'conv2d channel mismatch': (lambda K: K.conv2d(np.zeros((1, 3, 5, 5)), W), ValueError, ['input', 'weight']),
    'conv2d bias shape': (lambda K: K.conv2d(X, W, np.zeros(5)), ValueError, ['bias']),
    'conv2d bias rank 2': (lambda K: K.conv2d(X, W, np.zeros((4, 1))), ValueError, ['bias']),
    'conv2d bias 0-d': (lambda K: K.conv2d(X, W, np.zeros(())), ValueError, ['bias']),
    'conv2d_input batch of input_size': (lambda K: K.conv2d_input((2, 2, 5, 5), W, GO), ValueError,
                                         ['grad_output']),
    'conv2d_weight batch of input': (lambda K: K.conv2d_weight(np.zeros((2, 2, 5, 5)), W.shape, GO), ValueError,
                                     ['grad_output']),
    'conv1d_input batch of input_size': (lambda K: K.conv1d_input((3, 1, 6), np.zeros((1, 1, 2)),
                                                                  np.zeros((2, 1, 5))), ValueError, ['grad_output']),
    'conv2d_input spatial size': (lambda K: K.conv2d_input((1, 2, 8, 5), W, GO), ValueError, ['grad_output']),
    'conv2d_input grad_output channels': (lambda K: K.conv2d_input((1, 2, 5, 5), W, np.zeros((1, 3, 3, 3))),
                                          ValueError, ['grad_output']),
    'conv2d_input input_size length': (lambda K: K.conv2d_input((2, 5, 5), W, GO), ValueError, ['input_size']),
    'conv2d_input input_size int': (lambda K: K.conv2d_input(5, W, GO), TypeError, ['input_size']),
    'conv2d_input input_size float': (lambda K: K.conv2d_input((1, 2, 5.0, 5), W, GO), TypeError, ['input_size']),
    'conv2d_input input_size bool': (lambda K: K.conv2d_input((True, 2, 5, 5), W, GO), TypeError, ['input_size']),
    'conv2d_weight weight_size kernel': (lambda K: K.conv2d_weight(X, (4, 2, 2, 2), GO), ValueError,
                                         ['grad_output']),
    'conv2d_weight weight_size negative': (lambda K: K.conv2d_weight(X, (4, 2, -1, 3), GO), ValueError,
                                           ['weight_size']),
    'max_pool2d_backward grad_output shape': (lambda K: K.max_pool2d_backward(np.zeros((1, 2, 3, 3)), X, 2),
                                              ValueError, ['grad_output']),
    'avg_pool2d_backward grad_output shape': (lambda K: K.avg_pool2d_backward(np.zeros((2, 2, 2)), X, 2),
                                              ValueError, ['grad_output']),
    'max_pool2d_backward indices shape': (lambda K: K.max_pool2d_backward(np.zeros((1, 2, 2, 2)), X, 2,
                                                                          indices=np.zeros((1, 2, 3, 2), np.int64)),
                                          ValueError, ['indices']),
    'relu_backward shape': (lambda K: K.relu_backward(np.zeros(3), np.zeros(4)), ValueError, ['x']),
    'sigmoid_backward shape': (lambda K: K.sigmoid_backward(np.zeros(3), np.zeros((3, 1))), ValueError, ['output']),
    # dtypes and types
    'conv2d mixed dtypes': (lambda K: K.conv2d(X.astype(np.float32), W), TypeError, ['weight', 'input']),
    'conv2d bias dtype': (lambda K: K.conv2d(X, W, np.zeros(4, np.float32)), TypeError, ['bias']),
    'conv2d_input mixed dtypes': (lambda K: K.conv2d_input(X.shape, W, GO.astype(np.float32)), TypeError,
                                  ['grad_output']),
    'conv2d_weight mixed dtypes': (lambda K: K.conv2d_weight(X.astype(np.float32), W.shape, GO), TypeError,
                                   ['grad_output']),
    'max_pool2d_backward mixed dtypes': (lambda K: K.max_pool2d_backward(np.zeros((1, 2, 2, 2), np.float32), X, 2),
                                         TypeError, ['grad_output']),
    'relu_backward mixed dtypes': (lambda K: K.relu_backward(np.zeros(3), np.zeros(3, np.float32)), TypeError,
                                   ['x']),
    'conv2d int input': (lambda K: K.conv2d(X.astype(np.int64), W), TypeError, ['input']),
    'conv2d float16 input': (lambda K: K.conv2d(X.astype(np.float16), W), TypeError, ['input']),
    'conv2d big-endian input': (lambda K: K.conv2d(X.astype('>f8'), W), TypeError, ['input']),
    'max_pool2d bool input': (lambda K: K.max_pool2d(X.astype(bool), 2), TypeError, ['input']),
    'relu complex': (lambda K: K.relu(np.zeros(3, complex)), TypeError, ['x']),
    'conv2d_input int grad_output': (lambda K: K.conv2d_input(X.shape, W, GO.astype(np.int32)), TypeError,
                                     ['grad_output']),
    'conv2d list input': (lambda K: K.conv2d(X.tolist(), W), TypeError, ['input']),
    'conv2d list bias': (lambda K: K.conv2d(X, W, [0.0] * 4), TypeError, ['bias']),
    'relu None': (lambda K: K.relu(None), TypeError, ['x']),
    'avg_pool2d list input': (lambda K: K.avg_pool2d(X.tolist(), 2), TypeError, ['input']),
    'max_pool2d_backward int32 indices': (lambda K: K.max_pool2d_backward(np.zeros((1, 2, 2, 2)), X, 2,
                                                                          indices=np.zeros((1, 2, 2, 2), np.int32)),
                                          TypeError, ['indices']),
    # parameters
    'conv2d stride 0': (lambda K: K.conv2d(X, W, stride=0), ValueError, ['stride']),
    'conv2d stride negative in a tuple': (lambda K: K.conv2d(X, W, stride=(1, -1)), ValueError, ['stride']),
    'conv2d dilation 0': (lambda K: K.conv2d(X, W, dilation=0), ValueError, ['dilation']),
    'conv2d dilation negative': (lambda K: K.conv2d(X, W, dilation=-1), ValueError, ['dilation']),
    'conv2d padding negative': (lambda K: K.conv2d(X, W, padding=-1), ValueError, ['padding']),
    'conv2d padding negative in a tuple': (lambda K: K.conv2d(X, W, padding=(0, -2)), ValueError, ['padding']),
    'conv2d_input padding negative': (lambda K: K.conv2d_input(X.shape, W, GO, padding=-1), ValueError,
                                      ['padding']),
    "conv2d padding 'same' with stride 2": (lambda K: K.conv2d(X, W, padding='same', stride=2), ValueError,
                                            ['padding', 'stride']),
    "conv1d padding 'same' with stride (2,)": (lambda K: K.conv1d(X1, np.zeros((1, 1, 3)), padding='same',
                                                                  stride=(2,)), ValueError, ['padding', 'stride']),
    "conv2d padding 'SAME'": (lambda K: K.conv2d(X, W, padding='SAME'), ValueError, ['padding']),
    'conv2d padding float': (lambda K: K.conv2d(X, W, padding=0.5), TypeError, ['padding']),
    'conv2d stride length 3': (lambda K: K.conv2d(X, W, stride=(1, 1, 1)), ValueError, ['stride']),
    'conv2d stride empty': (lambda K: K.conv2d(X, W, stride=()), ValueError, ['stride']),
    'conv2d kernel larger than the padded input': (lambda K: K.conv2d(X, np.zeros((4, 2, 7, 7)), padding=0),
                                                   ValueError, ['kernel']),
    'conv2d dilated kernel larger than the input': (lambda K: K.conv2d(X, W, dilation=3), ValueError, ['kernel']),
    'conv1d_input kernel larger than input_size': (lambda K: K.conv1d_input((1, 1, 2), np.zeros((1, 1, 3)),
                                                                           np.zeros((1, 1, 1))), ValueError,
                                                   ['kernel']),
    'conv2d groups do not divide output channels': (lambda K: K.conv2d(X, np.zeros((3, 1, 3, 3)), groups=2),
                                                    ValueError, ['groups']),
    'conv2d groups do not divide input channels': (lambda K: K.conv2d(np.zeros((1, 3, 5, 5)),
                                                                      np.zeros((4, 1, 3, 3)), groups=2),
                                                   ValueError, ['groups']),
    'conv2d groups 0': (lambda K: K.conv2d(X, W, groups=0), ValueError, ['groups']),
    'conv2d groups bool': (lambda K: K.conv2d(X, W, groups=True), TypeError, ['groups']),
    'conv2d groups float': (lambda K: K.conv2d(X, W, groups=1.0), TypeError, ['groups']),
    'conv2d stride bool': (lambda K: K.conv2d(X, W, stride=True), TypeError, ['stride']),
    'conv2d stride float': (lambda K: K.conv2d(X, W, stride=1.0), TypeError, ['stride']),
    'conv2d dilation list of bools': (lambda K: K.conv2d(X, W, dilation=[True, True]), TypeError, ['dilation']),
    'conv2d padding tuple of strings': (lambda K: K.conv2d(X, W, padding=('same', 'same')), TypeError, ['padding']),
    'conv2d zero output channels': (lambda K: K.conv2d(X, np.zeros((0, 2, 3, 3))), ValueError, ['weight']),
    'max_pool2d padding over half the window': (lambda K: K.max_pool2d(X, 2, padding=2), ValueError, ['padding']),
    'max_pool2d padding over half, dilated': (lambda K: K.max_pool2d(X, 2, padding=2, dilation=3), ValueError,
                                              ['padding']),
    'avg_pool2d padding over half the window': (lambda K: K.avg_pool2d(X, 3, padding=2), ValueError, ['padding']),
    'avg_pool1d padding negative': (lambda K: K.avg_pool1d(X1, 2, padding=-1), ValueError, ['padding']),
    'max_pool1d window holding no input': (lambda K: K.max_pool1d(np.zeros((1, 1, 2)), 2, padding=1, dilation=3),
                                           ValueError, ['dilation']),
    'max_pool2d window holding no input': (lambda K: K.max_pool2d(np.zeros((1, 1, 2, 2)), (1, 2), padding=(0, 1),
                                                                  dilation=(1, 3)), ValueError, ['dilation']),
    'max_pool2d_backward window holding no input': (lambda K: K.max_pool1d_backward(
        np.zeros((1, 1, 2)), np.zeros((1, 1, 2)), 2, padding=1, dilation=3), ValueError, ['dilation']),
    'max_pool2d kernel 0': (lambda K: K.max_pool2d(X, 0), ValueError, ['kernel_size']),
    'max_pool2d stride 0': (lambda K: K.max_pool2d(X, 2, 0), ValueError, ['stride']),
    'avg_pool2d stride negative': (lambda K: K.avg_pool2d(X, 2, -1), ValueError, ['stride']),
    'max_pool3d dilation 0': (lambda K: K.max_pool3d(np.zeros((1, 1, 4, 4, 4)), 2, dilation=0), ValueError,
                              ['dilation']),
    'max_pool2d window larger than the input': (lambda K: K.max_pool2d(X, 6), ValueError, ['kernel_size']),
    'avg_pool1d window larger than the input': (lambda K: K.avg_pool1d(X1, 8), ValueError, ['kernel_size']),
    'max_pool2d kernel length 3': (lambda K: K.max_pool2d(X, (2, 2, 2)), ValueError, ['kernel_size']),
    'max_pool2d kernel float': (lambda K: K.max_pool2d(X, 2.0), TypeError, ['kernel_size']),
    'max_pool2d kernel string': (lambda K: K.max_pool2d(X, '2'), TypeError, ['kernel_size']),
    'avg_pool2d stride float': (lambda K: K.avg_pool2d(X, 2, 1.5), TypeError, ['stride']),
    'avg_pool2d padding bool': (lambda K: K.avg_pool2d(X, 2, padding=False), TypeError, ['padding']),
    'max_pool2d dilation bool': (lambda K: K.max_pool2d(X, 2, dilation=True), TypeError, ['dilation']),
    'max_pool2d ceil_mode int': (lambda K: K.max_pool2d(X, 2, ceil_mode=1), TypeError, ['ceil_mode']),
    'avg_pool2d count_include_pad int': (lambda K: K.avg_pool2d(X, 2, count_include_pad=1), TypeError,
                                         ['count_include_pad']),
    'avg_pool2d divisor_override 0': (lambda K: K.avg_pool2d(X, 2, divisor_override=0), ValueError,
                                      ['divisor_override']),
    'avg_pool2d_backward divisor_override 0': (lambda K: K.avg_pool2d_backward(np.zeros((1, 2, 2, 2)), X, 2,
                                                                               divisor_override=0), ValueError,
                                               ['divisor_override']),
    'avg_pool2d divisor_override float': (lambda K: K.avg_pool2d(X, 2, divisor_override=2.0), TypeError,
                                          ['divisor_override']),
    'avg_pool2d divisor_override bool': (lambda K: K.avg_pool2d(X, 2, divisor_override=True), TypeError,
                                         ['divisor_override']),
    'max_pool2d zero channels': (lambda K: K.max_pool2d(np.zeros((1, 0, 5, 5)), 2), ValueError, ['input']),
    'avg_pool2d zero height': (lambda K: K.avg_pool2d(np.zeros((1, 1, 0, 5)), 2), ValueError, ['input']),
    'conv2d zero width': (lambda K: K.conv2d(np.zeros((1, 2, 5, 0)), W), ValueError, ['input']),
    'hardtanh min_val above max_val': (lambda K: K.hardtanh(np.zeros(3), 1.0, -1.0), ValueError,
                                       ['min_val', 'max_val']),
    'hardtanh_backward min_val string': (lambda K: K.hardtanh_backward(np.zeros(3), np.zeros(3), 'a', 1.0),
                                         TypeError, ['min_val']),
    'hardtanh max_val None': (lambda K: K.hardtanh(np.zeros(3), -1.0, None), TypeError, ['max_val']),
}


@pytest.fixture(autouse=True)
def empty_geometry_cache():
    """Each case starts without cached argument checks (their own hazard: test_cached_checks_keep_checking_types)."""
    import generated._api as api
    api._cached_geometry.cache_clear()
    api.PLANS.clear()


def raised(backend, call, kind):
    with pytest.raises((ValueError, TypeError)) as info:
        call(backend)
    assert info.type is kind or issubclass(info.type, kind), f'{info.type.__name__}: {info.value}'
    return str(info.value)


@pytest.mark.parametrize('case', sorted(CASES))
def test_bad_input_is_refused_naming_the_parameter(backend, case):
    call, kind, names = CASES[case]
    message = raised(backend, call, kind)
    for name in names:
        assert name in message, f'{name!r} not named in: {message}'


# ----------------------------------------------------------------------------- bugs found

@pytest.mark.parametrize('call,name', [
    (lambda K: K.conv2d_input((1, 2, 0, 5), W, GO), 'input_size'),
    (lambda K: K.conv2d_weight(X, (4, 2, 0, 3), GO), 'weight_size'),
], ids=['input_size', 'weight_size'])
def test_zero_sizes_name_input_size_and_weight_size(backend, call, name):
    assert name in raised(backend, call, ValueError)


@pytest.mark.parametrize('call,valid,invalid', [
    (lambda K, v: K.conv2d(X, W, stride=v), 2, 2.0),
    (lambda K, v: K.conv2d(X, W, groups=v), 1, True),
    (lambda K, v: K.conv1d_input((1, 1, 6), np.ones((1, 1, 2)), np.ones((1, 1, 5)), dilation=v), 1, 1.0),
    (lambda K, v: K.max_pool2d(X, 2, ceil_mode=v), True, 1),
    (lambda K, v: K.avg_pool2d(X, v), 2, 2.0),
], ids=['stride', 'groups', 'dilation', 'ceil_mode', 'kernel_size'])
def test_cached_checks_keep_checking_types(backend, call, valid, invalid):
    call(backend, valid)                  # fills the cache of argument checks
    with pytest.raises(TypeError):
        call(backend, invalid)


@pytest.mark.parametrize('call,valid,invalid', [
    (lambda K, v: K.conv2d_input(v, W, GO), X.shape, (True,) + X.shape[1:]),
    (lambda K, v: K.conv2d_weight(X, v, GO), W.shape, W.shape[:3] + (True,)),
    (lambda K, v: K.conv2d(v, W), X, X.astype(X.dtype.newbyteorder())),
    (lambda K, v: K.conv2d(X, W, v), np.ones(4), np.ones(4, np.int64)),
    (lambda K, v: K.max_pool2d_backward(K.max_pool2d(X, 2), X, 2, indices=v), K_INDICES, K_INDICES.astype(np.int32)),
], ids=['input_size bool', 'weight_size bool', 'byte order', 'bias dtype', 'indices dtype'])
def test_plans_keep_checking_what_a_signature_hides(backend, call, valid, invalid):
    """A planned call signature holds the types of the elements of a size tuple and the dtype (byte order
    included) of every array: values equal to those of a valid call must still be refused."""
    call(backend, valid)
    with pytest.raises(TypeError):
        call(backend, invalid)


PLANNED = {
    'conv2d': lambda K: K.conv2d(XR, WR, padding=1),
    'conv2d bias': lambda K: K.conv2d(XR, WR, np.arange(4.0), 1, 'same'),
    'conv2d_input': lambda K: K.conv2d_input(X.shape, WR, GR),
    'conv2d_weight': lambda K: K.conv2d_weight(XR, W.shape, GR),
    'conv2d_bias': lambda K: K.conv2d_bias(GR),
    'max_pool2d': lambda K: K.max_pool2d(XR, 2, return_indices=True),
    'max_pool2d_backward': lambda K: K.max_pool2d_backward(GR[:, :2], XR, 2, ceil_mode=True),
    'avg_pool2d': lambda K: K.avg_pool2d(XR, 3, 2, 1, False, True, None),
    'avg_pool2d_backward': lambda K: K.avg_pool2d_backward(GR[:, :2, :2, :2], XR, 2),
    'unbatched': lambda K: K.max_pool2d_backward(GR[0, :2, :2, :2], XR[0], 2),
}


@pytest.mark.parametrize('case', sorted(PLANNED))
def test_repeated_calls_run_their_plan_without_checks(backend, case, monkeypatch):
    """The checks of a call with plain parameters (ints, strs, bools, None) run once per signature: they cost
    more than a small kernel.  A repeated call must not run them, and must give the same result, on
    non-contiguous copies of its arrays too."""
    import generated._api as api
    first = PLANNED[case](backend)

    def refuse(*args, **kwargs):
        raise AssertionError('checked again')
    for name in ('real_array', 'geometry', 'check_shape', 'size_tuple'):
        monkeypatch.setattr(api, name, refuse)
    again = PLANNED[case](backend)
    for a, b in zip(first if isinstance(first, tuple) else (first,), again if isinstance(again, tuple) else (again,)):
        np.testing.assert_array_equal(a, b)


def test_plans_take_non_contiguous_arrays(backend):
    """A signature's plan serves views too: the same shapes and dtypes, any strides."""
    expected = backend.conv2d(XR, WR, padding=1)
    x, w = np.asfortranarray(XR), WR[:, :, ::-1, ::-1].copy()[:, :, ::-1, ::-1]
    assert not (x.flags.c_contiguous or w.flags.c_contiguous)
    np.testing.assert_array_equal(backend.conv2d(x, w, padding=1), expected)
    np.testing.assert_array_equal(backend.conv2d_input(X.shape, w, np.asfortranarray(GR)),
                                  backend.conv2d_input(X.shape, WR, GR))
    # each contiguous call first: it leaves the plan the strided call then runs (from_buffer refuses those)
    g, y, idx = np.asfortranarray(GR), *backend.max_pool2d(XR, 2, return_indices=True)
    gy = RNG.standard_normal(y.shape)
    ga = RNG.standard_normal(backend.avg_pool2d(XR, 3, 2, 1).shape)
    pairs = [(lambda a, b, c: backend.conv2d_weight(a, W.shape, b), (XR, GR, None), (x, g, None)),
             (lambda a, b, c: backend.conv2d_bias(a), (GR, None, None), (g, None, None)),
             (lambda a, b, c: backend.conv2d(a, b, padding=1), (XR[0], WR, None), (x[0], w, None)),
             (lambda a, b, c: backend.max_pool2d(a, 2, return_indices=True), (XR, None, None), (x, None, None)),
             (lambda a, b, c: backend.max_pool2d_backward(a, b, 2, indices=c), (gy, XR, idx),
              (np.asfortranarray(gy), x, np.asfortranarray(idx))),
             (lambda a, b, c: backend.avg_pool2d(a, 3, 2, 1), (XR, None, None), (x, None, None)),
             (lambda a, b, c: backend.avg_pool2d_backward(a, b, 3, 2, 1), (ga, XR, None),
              (np.asfortranarray(ga), x, None))]
    for call, dense, strided in pairs:
        want, got = call(*dense), call(*strided)
        for a, b in zip(want if isinstance(want, tuple) else (want,), got if isinstance(got, tuple) else (got,)):
            np.testing.assert_allclose(b, a, rtol=1e-13, atol=0)   # NumPy may sum in the layout's order


@pytest.mark.parametrize('call', [
    lambda K: K.conv2d(X, W, stride=(1, 1), padding=(1, 1)),
    lambda K: K.max_pool2d(X, (2, 2)),
    lambda K: K.avg_pool2d(X, (2, 2), None, 0, False, True, None),
], ids=['conv2d', 'max_pool2d', 'avg_pool2d'])
def test_tuple_parameters_reuse_their_checked_geometry(backend, call):
    """A tuple parameter is checked afresh (it may hide a bool among its ints), its geometry cached."""
    import generated._api as api
    call(backend)
    before = api._cached_geometry.cache_info()
    call(backend)
    after = api._cached_geometry.cache_info()
    assert after.misses == before.misses and after.hits > before.hits


def test_conv_refuses_a_zero_dimensional_bias(backend):
    message = raised(backend, lambda K: K.conv2d(np.ones((1, 2, 3, 3)), np.ones((1, 2, 2, 2)), np.array(0.5)),
                     ValueError)
    assert 'bias' in message


@pytest.mark.parametrize('threads', [0, -1, 1.5, True, '2'])
def test_set_num_threads_refuses_non_positive_and_non_int(threads):
    if 'c' not in BACKENDS:
        pytest.skip('C backend not selected')
    import generated.c as KC
    before = KC.get_num_threads()
    with pytest.raises((ValueError, TypeError), match='threads'):
        KC.set_num_threads(threads)
    assert KC.get_num_threads() == before


@pytest.mark.parametrize('bad', [-1, 16, 2 ** 62, -2 ** 63])
def test_max_pool_backward_refuses_indices_outside_the_plane(backend, bad):
    """Each side of [0, plane) alone (the C check is one unsigned comparison), and values whose unsigned
    forms are huge; the plane's first and last positions pass."""
    g, x = np.ones((1, 1, 2)), np.zeros((1, 1, 4))
    message = raised(backend, lambda K: K.max_pool1d_backward(g, x, 2, indices=np.array([[[9, -5]]])), ValueError)
    assert 'indices' in message
    g, x, indices = np.ones((1, 2, 2, 2)), np.zeros((1, 2, 4, 4)), np.array([[[[0, 3], [12, 15]]] * 2])
    grad = backend.max_pool2d_backward(g, x, 2, indices=indices)
    assert grad.sum() == 8.0 and grad[0, :, 0, 0].tolist() == grad[0, :, 3, 3].tolist() == [1.0, 1.0]
    indices[0, 1, 1, 0] = bad
    message = raised(backend, lambda K: K.max_pool2d_backward(g, x, 2, indices=indices), ValueError)
    assert 'indices' in message and '[0, 16)' in message   # the plane's size, not its formula


def test_max_pool_backward_with_indices_outside_their_window(backend):
    x, g = np.arange(6.0)[None, None], np.array([[[1.0, 10.0, 100.0]]])
    indices = np.array([[[5, 0, 1]]])                # windows [0, 1], [2, 3], [4, 5]
    try:
        grad = backend.max_pool1d_backward(g, x, 2, indices=indices)
    except ValueError as error:
        assert 'indices' in str(error)
        return
    np.testing.assert_array_equal(grad[0, 0], [10.0, 100.0, 0.0, 0.0, 0.0, 1.0])   # torch 2.13, aten op


def test_each_backend_keeps_its_own_plans():
    """Both backends share the module of public functions: a signature planned by one must not run the
    other's kernel."""
    if 'c' not in BACKENDS:
        pytest.skip('C backend not selected')
    import generated._api as api
    import generated.c as KC
    import generated.numpy as KN
    KN.conv2d(XR, WR)
    KC.conv2d(XR, WR)
    tags = sorted(key[0] for key in api.PLANS)
    assert tags == ['generated.c._binding:conv2d', 'generated.numpy._kernels:conv2d']
