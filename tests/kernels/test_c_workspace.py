"""The C kernels' stack (their only extra memory): each kernel's _workspace function against the arrays its
fast paths declare, the sizes a public call prepares (generated._api.recording), and the bench's figure.

A tile of several chunks per row whose rows have padding copies the rows it reads into a zero-padded
stack array: C_in/groups x kh x (row + taps - 1) elements for the forward pass, C_out/groups x kh x (row +
taps - 1) for the input gradient, unless that exceeds 32768 elements (lower_vector._padded).  The portable
build (-DBPGEN_NO_VECTOR) has no such tile and holds nothing."""
import os

import numpy as np
import pytest
from conftest import BACKENDS, DTYPES

pytestmark = pytest.mark.skipif('c' not in BACKENDS, reason='C backend not selected')
VECTOR = '-DBPGEN_NO_VECTOR' not in os.environ.get('BPGEN_CFLAGS', '')
WIDE = 64   # a row of several chunks on every target (3 x 8 lanes AVX2 float32, 2 x 16 AVX-512)


@pytest.fixture(scope='module')
def c():
    import generated.c as c
    return c


def prepared(call) -> list:
    """(name, sizes, dtype) of each kernel a call runs."""
    from generated import _api
    with _api.recording() as kernels:
        call()
    return kernels


def workspace(c, call) -> int:
    (kernel,) = prepared(call)
    return c.workspace(*kernel)


@pytest.mark.parametrize('dtype', DTYPES)
def test_padded_rows_are_the_stack_of_forward_and_input_gradient(c, dtype):
    x = np.ones((1, 16, 4, WIDE), dtype)
    w = np.ones((8, 16, 3, 3), dtype)
    g = np.ones((1, 8, 4, WIDE), dtype)
    size = np.dtype(dtype).itemsize
    row = WIDE + 3 - 1
    assert workspace(c, lambda: c.conv2d(x, w, padding=1)) == VECTOR * 16 * 3 * row * size
    assert workspace(c, lambda: c.conv2d_input(x.shape, w, g, padding=1)) == VECTOR * 8 * 3 * row * size
    assert workspace(c, lambda: c.conv2d(x, w, padding=0)) == 0   # no padding: nothing copied


def test_rows_too_long_to_copy_take_no_stack(c):
    # widths that are whole vectors on every target (a row whose width is not, and whose input rows are
    # contiguous, runs the flat tile, which copies nothing: 600 does on AVX-512)
    x, w = np.ones((1, 16, 3, 704), np.float32), np.ones((8, 16, 3, 3), np.float32)   # 16 x 3 x 706 > 32768
    assert workspace(c, lambda: c.conv2d(x, w, padding=1)) == 0
    assert workspace(c, lambda: c.conv2d(x[..., :592], w, padding=1)) == VECTOR * 16 * 3 * 594 * 4


READS = dict(fwd=('input', 'weight'), dX=('weight', 'grad_output'), dW=('input', 'grad_output'), db=('grad_output',),
             max_fwd=('input',), max_bwd=('grad_output', 'indices'), avg_fwd=('input',), avg_bwd=('grad_output',))


@pytest.mark.parametrize('threads', [1, 2])
def test_every_bench_case_holds_less_than_the_arrays_it_reads(c, threads):
    """The issue's bound on extra memory, the stack of every thread counted (the bench's figure).  tiny's
    weight gradient (one channel in, one out) parks one accumulator a tap: 288 bytes (AVX2), 576 (AVX-512),
    not a full register block's 12 or 16 (3456 and 9216 bytes: more than its 3136-byte input)."""
    from codegen import bench
    rng = np.random.default_rng(0)
    held = {}
    for case in bench.cases(list(bench.SHAPES), list(bench.OPS), ['float32'], [threads]):
        arrays = bench.make_inputs(case, rng)
        with bench.thread_count(threads, dict(c=c)):
            held[case.shape.name, case.op] = bench.c_workspace(bench.bind(c, case, arrays))
        assert held[case.shape.name, case.op] <= sum(arrays[a].nbytes for a in READS[case.op]), case
        assert held[case.shape.name, case.op] <= arrays['input'].nbytes, case   # the issue's: not past the input
    if VECTOR and threads == 1:   # the padded rows of resnet: 64 channels x 3 rows x 58 columns, where 56
        # columns are whole vectors (AVX2); AVX-512's 16 lanes do not divide them: the flat tile copies nothing
        assert held['resnet', 'fwd'] == held['resnet', 'dX'] in (64 * 3 * 58 * 4, 0)


def test_recording_checks_each_call_afresh_and_keeps_the_plans(c):
    from generated import _api
    x, w = np.ones((1, 2, 5, 5)), np.ones((3, 2, 3, 3))
    c.conv2d(x, w, stride=2)
    kept = dict(_api.PLANS)
    (first,) = prepared(lambda: c.conv2d(x, w, stride=2))
    assert prepared(lambda: c.conv2d(x, w, stride=2)) == [first]   # not served from a kept plan
    name, sizes, dtype = first
    assert (name, dtype, sizes['S0'], sizes['O1'], sizes['CG'], sizes['KG']) == ('conv2d', np.float64, 2, 2, 2, 3)
    assert _api.PLANS == kept and _api.PREPARED is None
    assert [k[0] for k in prepared(lambda: c.max_pool2d_backward(np.ones((1, 2, 2, 2)), x, 2))] == [
        'max_pool2d_backward', 'max_pool2d']   # no indices given: the selection is prepared too


def test_sizes_breaking_a_precondition_are_refused(c):
    (kernel,) = prepared(lambda: c.conv2d(np.ones((1, 2, 5, 5)), np.ones((3, 2, 3, 3))))
    name, sizes, dtype = kernel
    with pytest.raises(ValueError, match='precondition 1 of conv2d'):
        c.workspace(name, dict(sizes, N=0), dtype)
    with pytest.raises(KeyError):
        c.workspace(name, {k: v for k, v in sizes.items() if k != 'H0'}, dtype)


def _avx512_build() -> bool:
    from codegen import bench
    return VECTOR and 'avx512f' in bench.cpu_flags() and '-mno-avx512f' not in os.environ.get('BPGEN_CFLAGS', '')


@pytest.mark.skipif(not _avx512_build(), reason='the outer-product form needs 32 vector registers (AVX-512)')
@pytest.mark.parametrize('dtype', DTYPES)
def test_outer_product_weight_gradient_holds_its_pack_and_parked_accumulators(c, dtype):
    """The outer-product form of the weight gradient (codegen.lower_outer) runs where the output channels fill
    a vector (16 floats, 8 doubles), at any thread count.  Each thread holds the parked accumulators of a
    block of input channels (9 vectors each; the 6 channels split in as many blocks as make the blocks of
    output channels x input channels at least the threads) and a band of the upstream gradient's rows packed
    channel-innermost (4096 // (lanes x row) rows, at most all 10)."""
    lanes, size = 64 // np.dtype(dtype).itemsize, np.dtype(dtype).itemsize
    x = np.ones((1, 6, 10, 40), dtype)
    for threads in (1, 2):
        for c_out in (20, 16, 8):
            g = np.ones((1, c_out, 10, 40), dtype)
            before = c.get_num_threads()
            c.set_num_threads(threads)
            try:
                held = workspace(c, lambda g=g, c_out=c_out: c.conv2d_weight(x, (c_out, 6, 3, 3), g, padding=1))
            finally:
                c.set_num_threads(before)
            blocks = -(-c_out // lanes)
            chunk = -(-6 // -(-threads // blocks))
            outer = (chunk * 9 * lanes + min(10, 4096 // (lanes * 40)) * 40 * lanes) * size
            assert (held == outer) == (c_out >= lanes), (threads, c_out, held, outer)
