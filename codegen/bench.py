"""``bpgen bench``: the generated kernels against their anchors, measured side by side in one process.

Only ratios measured in one run mean anything on a shared, noisy machine
(shared/research/performance-anchors.md), so every case times all
implementations interleaved: each is checked once against a float64 oracle
(torch when importable, else the NumPy reference below), warmed up, then
sampled round-robin with the order rotated every round (with several threads,
the implementations of each thread pool in a pass of their own: the C kernels
with torch, generated.numpy with the reference).  A sample averages
as many calls as fit in ``Plan.sample_s`` (one at least); an implementation
whose samples would exceed ``Plan.budget_s`` per case gets fewer of them.
The machine's ceilings (sgemm/dgemm through numpy.matmul, copy bandwidth of
an 8 MiB array counted as STREAM does, 2x the bytes, split over Python
threads) are measured in the same run, per thread count, and so is the share
of the CPUs other processes took (column others%): with one core busy
elsewhere, two-thread rows measure the neighbour, not the kernel.

Implementations: ``c`` (generated.c), ``numpy`` (generated.numpy),
``reference`` (plain hand NumPy: im2col by sliding_window_view + tensordot,
col2im by strided adds; a yardstick, not part of bpgen) and ``torch``
(torch.nn.functional, torch.nn.grad and aten backward ops).

Work per call: convolution passes count 2*N*K*(C/groups)*kh*kw*Ho*Wo flops;
the bias gradient and pooling count the bytes they must read and write.
A row whose result disagrees with the oracle is marked WRONG and gets no speed.
Extra memory (column extra KiB): the peak NumPy allocation during the checked
call minus its result, by tracemalloc, for generated.numpy (started without the
buffers it keeps across calls, so they count) and the reference;
for the C kernels, which allocate only stack arrays, the threads times the
bytes one thread holds at most (each kernel's _workspace function, for the
sizes the call prepares); torch's is not visible.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import itertools
import json
import math
import os
import platform
import sys
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from types import SimpleNamespace
from typing import Callable, Iterator

# OpenBLAS's workers spin 2^28 cycles after each call by default, taking the second core from whatever
# is sampled next: interleaved two-thread rows would time the spinner.  A short spin (2^4 cycles) keeps
# them honest; it must be set before NumPy loads OpenBLAS (as with `bpgen bench`).
os.environ.setdefault('OPENBLAS_THREAD_TIMEOUT', '4')

import numpy as np  # noqa: E402
from numpy.lib.stride_tricks import sliding_window_view


# ----------------------------------------------------------------------------- shapes and operations

@dataclasses.dataclass(frozen=True)
class ConvShape:
    name: str
    input: tuple
    weight: tuple
    stride: int = 1
    padding: int = 0
    dilation: int = 1

    def params(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation)

    def output(self) -> tuple:
        (n, _, *size), (k, _, *kernel) = self.input, self.weight
        return (n, k) + tuple((h + 2 * self.padding - self.dilation * (kk - 1) - 1) // self.stride + 1
                              for h, kk in zip(size, kernel))


@dataclasses.dataclass(frozen=True)
class PoolShape:
    name: str
    input: tuple
    kernel_size: int
    stride: int
    padding: int = 0

    def params(self) -> dict:
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding)

    def output(self) -> tuple:
        n, c, *size = self.input
        return (n, c) + tuple((h + 2 * self.padding - self.kernel_size) // self.stride + 1 for h in size)


SHAPES = {s.name: s for s in (
    ConvShape('tiny', (1, 1, 28, 28), (1, 1, 3, 3)),
    ConvShape('lenet', (32, 1, 28, 28), (8, 1, 5, 5)),
    ConvShape('resnet', (8, 64, 56, 56), (64, 64, 3, 3), padding=1),
    ConvShape('s2', (8, 32, 32, 32), (64, 32, 3, 3), stride=2, padding=1),
    ConvShape('dil2', (4, 16, 64, 64), (16, 16, 3, 3), dilation=2),
    PoolShape('pool2', (8, 64, 56, 56), 2, 2),
    PoolShape('pool3', (8, 64, 56, 56), 3, 2, 1),
)}
CONV_OPS = ('fwd', 'dX', 'dW', 'db')
POOL_OPS = ('max_fwd', 'max_bwd', 'avg_fwd', 'avg_bwd')
OPS = CONV_OPS + POOL_OPS
FLOP_OPS = ('fwd', 'dX', 'dW')
DTYPES = ('float32', 'float64')
IMPLS = ('c', 'numpy', 'reference', 'torch')
TRACED = ('numpy', 'reference')     # NumPy allocations are visible to tracemalloc
# The thread pool each implementation's calls wake: with several threads each is sampled in its own pass.
POOLS = {'c': 'openmp', 'torch': 'openmp', 'numpy': 'blas', 'reference': 'blas'}
# max|result - oracle| / max|oracle| allowed; a wrong kernel is off by O(1)
TOLERANCE = {'float32': 1e-3, 'float64': 1e-9}
GEMM_SIZE = 2048
BUSY_WARNING = 10.0     # percent of the CPUs used by other processes during the run
COPY_BYTES = 8 << 20


@dataclasses.dataclass(frozen=True)
class Case:
    shape: ConvShape | PoolShape
    op: str
    dtype: str
    threads: int


@dataclasses.dataclass(frozen=True)
class Plan:
    """How to sample: at most ``repeat`` samples of at least ``sample_s`` each, fewer (not below
    ``min_samples``) when an implementation's samples would exceed ``budget_s`` per case; with several
    threads, each sample after waiting up to ``settle_s`` for the process's other threads to go idle
    (settle)."""
    repeat: int
    budget_s: float
    min_samples: int
    sample_s: float
    settle_s: float = 0.0


FULL_PLAN = Plan(repeat=10, budget_s=3.0, min_samples=3, sample_s=5e-3, settle_s=0.015)
QUICK_PLAN = Plan(repeat=3, budget_s=0.25, min_samples=1, sample_s=2e-3, settle_s=0.015)
SETTLE_STEP_S = 1e-3   # settle's polling interval


# ----------------------------------------------------------------------------- NumPy reference (a yardstick)

def _pair(value) -> tuple:
    return (value, value) if isinstance(value, int) else tuple(value)


def _pad(x: np.ndarray, padding: tuple, value: float = 0.0) -> np.ndarray:
    (ph, pw) = padding
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def _windows(padded: np.ndarray, kernel: tuple, stride: tuple, dilation: tuple) -> np.ndarray:
    """The im2col view (N, C, Ho, Wo, kh, kw) of a padded NCHW array, without a copy."""
    span = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    view = sliding_window_view(padded, span, axis=(2, 3))
    return view[:, :, ::stride[0], ::stride[1], ::dilation[0], ::dilation[1]]


def _tap(index: int, dilation: int, stride: int, count: int) -> slice:
    """The positions of the padded input that kernel tap ``index`` meets over ``count`` outputs."""
    return slice(index * dilation, index * dilation + stride * (count - 1) + 1, stride)


def _col2im(taps: Callable, input_shape: tuple, out_size: tuple, kernel: tuple, stride: tuple,
            padding: tuple, dilation: tuple, dtype) -> np.ndarray:
    """Sum ``taps(i, j)`` (N, C, Ho, Wo) into the padded input at tap (i, j); crop the padding."""
    n, c, h, w = input_shape
    padded = np.zeros((n, c, h + 2 * padding[0], w + 2 * padding[1]), dtype)
    for i, j in itertools.product(range(kernel[0]), range(kernel[1])):
        padded[:, :, _tap(i, dilation[0], stride[0], out_size[0]),
               _tap(j, dilation[1], stride[1], out_size[1])] += taps(i, j)
    return np.ascontiguousarray(padded[:, :, padding[0]:padding[0] + h, padding[1]:padding[1] + w])


def ref_conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1):
    cols = _windows(_pad(input, _pair(padding)), weight.shape[2:], _pair(stride), _pair(dilation))
    out = np.tensordot(cols, weight, axes=([1, 4, 5], [1, 2, 3]))
    if bias is not None:
        out += bias
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def ref_conv2d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1):
    cols = np.tensordot(grad_output, weight, axes=([1], [0]))      # N, Ho, Wo, C, kh, kw
    return _col2im(lambda i, j: cols[..., i, j].transpose(0, 3, 1, 2), tuple(input_size),
                   grad_output.shape[2:], weight.shape[2:], _pair(stride), _pair(padding), _pair(dilation),
                   weight.dtype)


def ref_conv2d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1):
    cols = _windows(_pad(input, _pair(padding)), tuple(weight_size[2:]), _pair(stride), _pair(dilation))
    return np.tensordot(grad_output, cols, axes=([0, 2, 3], [0, 2, 3]))


def ref_conv2d_bias(grad_output):
    return grad_output.sum(axis=(0, 2, 3))


def ref_max_pool2d(input, kernel_size, stride, padding=0, return_indices=False):
    """Max pooling (dilation 1, floor mode); indices are flat positions in each input plane."""
    kernel, stride, padding = _pair(kernel_size), _pair(stride), _pair(padding)
    cols = _windows(_pad(input, padding, -np.inf), kernel, stride, (1, 1))
    flat = cols.reshape(*cols.shape[:4], -1)
    tap = flat.argmax(axis=-1)                       # the first maximum in window order, as torch
    rows = np.arange(tap.shape[2])[:, None] * stride[0] - padding[0] + tap // kernel[1]
    columns = np.arange(tap.shape[3])[None, :] * stride[1] - padding[1] + tap % kernel[1]
    values = flat.max(axis=-1)
    return (values, rows * input.shape[3] + columns) if return_indices else values


def ref_max_pool2d_backward(grad_output, input, kernel_size, stride, padding=0, *, indices):
    n, c, h, w = input.shape
    planes = np.arange(n * c).reshape(n, c, 1, 1) * (h * w)
    grad_input = np.zeros(input.size, input.dtype)
    np.add.at(grad_input, (planes + indices).ravel(), grad_output.ravel())
    return grad_input.reshape(input.shape)


def ref_avg_pool2d(input, kernel_size, stride, padding=0):
    """Average pooling with count_include_pad=True, floor mode."""
    kernel = _pair(kernel_size)
    cols = _windows(_pad(input, _pair(padding)), kernel, _pair(stride), (1, 1))
    return cols.sum(axis=(4, 5)) / (kernel[0] * kernel[1])


def ref_avg_pool2d_backward(grad_output, input, kernel_size, stride, padding=0):
    kernel = _pair(kernel_size)
    share = grad_output / (kernel[0] * kernel[1])
    return _col2im(lambda i, j: share, input.shape, grad_output.shape[2:], kernel, _pair(stride),
                   _pair(padding), (1, 1), input.dtype)


REFERENCE = SimpleNamespace(
    conv2d=ref_conv2d, conv2d_input=ref_conv2d_input, conv2d_weight=ref_conv2d_weight,
    conv2d_bias=ref_conv2d_bias, max_pool2d=ref_max_pool2d, max_pool2d_backward=ref_max_pool2d_backward,
    avg_pool2d=ref_avg_pool2d, avg_pool2d_backward=ref_avg_pool2d_backward)


# ----------------------------------------------------------------------------- backends

def torch_backend(torch) -> SimpleNamespace:
    """torch under bpgen's names and signatures (the tensors share memory with the NumPy inputs)."""
    functional, aten = torch.nn.functional, torch.ops.aten

    def max_pool2d_backward(grad_output, input, kernel_size, stride, padding=0, *, indices):
        return aten.max_pool2d_with_indices_backward(grad_output, input, _pair(kernel_size), _pair(stride),
                                                     _pair(padding), [1, 1], False, indices)

    def avg_pool2d_backward(grad_output, input, kernel_size, stride, padding=0):
        return aten.avg_pool2d_backward(grad_output, input, _pair(kernel_size), _pair(stride), _pair(padding),
                                        False, True, None)

    return SimpleNamespace(
        conv2d=functional.conv2d, conv2d_input=torch.nn.grad.conv2d_input,
        conv2d_weight=torch.nn.grad.conv2d_weight, conv2d_bias=lambda grad_output: grad_output.sum((0, 2, 3)),
        max_pool2d=functional.max_pool2d, max_pool2d_backward=max_pool2d_backward,
        avg_pool2d=functional.avg_pool2d, avg_pool2d_backward=avg_pool2d_backward,
        set_num_threads=torch.set_num_threads, get_num_threads=torch.get_num_threads,
        tensor=torch.from_numpy, version=torch.__version__)


GENERATED = {'c': 'generated.c', 'numpy': 'generated.numpy'}


def load_backends(names) -> tuple[dict, dict]:
    """(backends, problems): every requested backend that imports, plus torch whenever it imports (the
    oracle); ``problems`` maps a backend that did not import to the reason."""
    backends, problems = {}, {}
    for name in (n for n in names if n in GENERATED):
        try:
            backends[name] = importlib.import_module(GENERATED[name])
        except Exception as exc:  # e.g. the C kernels do not compile: report it, bench the others
            problems[name] = f'{type(exc).__name__}: {exc}'
    if 'reference' in names:
        backends['reference'] = REFERENCE
    try:
        backends['torch'] = torch_backend(importlib.import_module('torch'))
    except ImportError as exc:
        problems['torch'] = f'not importable ({exc}); the NumPy reference is the oracle'
    for name, problem in problems.items():
        print(f'bpgen bench: no {name} rows: {problem}', file=sys.stderr)
    return backends, problems


@contextmanager
def thread_count(threads: int, backends: dict) -> Iterator[None]:
    """Run the C kernels, torch and (with threadpoolctl) NumPy's BLAS with ``threads`` threads."""
    setters = [b for b in backends.values() if hasattr(b, 'set_num_threads')]
    before = [b.get_num_threads() for b in setters]
    with ExitStack() as stack:
        if importlib.util.find_spec('threadpoolctl'):
            stack.enter_context(importlib.import_module('threadpoolctl').threadpool_limits(threads, 'blas'))
        for b in setters:
            b.set_num_threads(threads)
        try:
            yield
        finally:
            for b, count in zip(setters, before):
                b.set_num_threads(count)


def bind(backend, case: Case, arrays: dict) -> Callable[[], object]:
    """One call of ``case`` on ``backend`` with ``arrays`` (already in the backend's array type)."""
    p, a = case.shape.params(), arrays
    calls = {
        'fwd': lambda: backend.conv2d(a['input'], a['weight'], None, **p),
        'dX': lambda: backend.conv2d_input(tuple(a['input'].shape), a['weight'], a['grad_output'], **p),
        'dW': lambda: backend.conv2d_weight(a['input'], tuple(a['weight'].shape), a['grad_output'], **p),
        'db': lambda: backend.conv2d_bias(a['grad_output']),
        'max_fwd': lambda: backend.max_pool2d(a['input'], **p, return_indices=True),
        'max_bwd': lambda: backend.max_pool2d_backward(a['grad_output'], a['input'], **p, indices=a['indices']),
        'avg_fwd': lambda: backend.avg_pool2d(a['input'], **p),
        'avg_bwd': lambda: backend.avg_pool2d_backward(a['grad_output'], a['input'], **p),
    }
    return calls[case.op]


def backend_arrays(backend, arrays: dict) -> dict:
    convert = getattr(backend, 'tensor', None)
    return {k: convert(v) for k, v in arrays.items()} if convert else arrays


# ----------------------------------------------------------------------------- inputs, work, checks

def make_inputs(case: Case, rng: np.random.Generator) -> dict:
    dtype = np.dtype(case.dtype)
    shape = case.shape
    arrays = dict(input=rng.standard_normal(shape.input).astype(dtype),
                  grad_output=rng.standard_normal(shape.output()).astype(dtype))
    if isinstance(shape, ConvShape):
        arrays['weight'] = rng.standard_normal(shape.weight).astype(dtype)
    if case.op == 'max_bwd':
        arrays['indices'] = ref_max_pool2d(arrays['input'], **shape.params(), return_indices=True)[1]
    return arrays


def work(case: Case, arrays: dict) -> tuple[float, str]:
    """(amount, unit) of one call: flops for the conv passes, bytes read + written otherwise."""
    out, x = arrays['grad_output'], arrays['input']
    if case.op in FLOP_OPS:
        k, c, kh, kw = arrays['weight'].shape
        return 2.0 * out.shape[0] * k * c * kh * kw * out.shape[2] * out.shape[3], 'GFLOP/s'
    index_bytes = out.size * np.dtype(np.int64).itemsize
    moved = {'db': out.nbytes + out.shape[1] * out.itemsize, 'max_fwd': x.nbytes + out.nbytes + index_bytes,
             'max_bwd': out.nbytes + index_bytes + x.nbytes, 'avg_fwd': x.nbytes + out.nbytes,
             'avg_bwd': out.nbytes + x.nbytes}
    return float(moved[case.op]), 'GB/s'


def as_arrays(result) -> tuple:
    return tuple(np.asarray(r) for r in (result if isinstance(result, tuple) else (result,)))


def compare(got: tuple, truth: tuple, dtype: str) -> tuple[float, str]:
    """(error, problem): the largest error relative to max|truth|; problem is '' when within tolerance."""
    if len(got) != len(truth):
        return math.inf, f'{len(got)} results, expected {len(truth)}'
    worst = 0.0
    for g, t in zip(got, truth):
        if g.shape != t.shape:
            return math.inf, f'shape {g.shape}, expected {t.shape}'
        if t.dtype.kind == 'i':
            if not np.array_equal(g, t):
                return math.inf, 'indices differ'
            continue
        if g.dtype != np.dtype(dtype):
            return math.inf, f'dtype {g.dtype}, expected {dtype}'
        error = float(np.max(np.abs(g.astype(np.float64) - t), initial=0.0)) / (np.max(np.abs(t)) or 1.0)
        worst = max(worst, error if math.isfinite(error) else math.inf)
    return worst, '' if worst <= TOLERANCE[dtype] else f'error {worst:.3g} > {TOLERANCE[dtype]:g}'


# ----------------------------------------------------------------------------- timing

@dataclasses.dataclass
class Trial:
    """One implementation in one case: its check, then its samples (seconds per call)."""
    impl: str
    call: Callable[[], object]
    status: str = 'OK'
    detail: str = ''
    error: float | None = None
    workspace: int | None = None
    per_call_s: float = 0.0
    wanted: int = 0
    samples: list = dataclasses.field(default_factory=list)     # seconds per call, one entry per sample
    calls: list = dataclasses.field(default_factory=list)       # calls averaged in each sample


def timed_for(call: Callable[[], object], duration: float) -> tuple[float, int]:
    """Call repeatedly for at least ``duration`` seconds (at least once): (seconds per call, calls)."""
    count, start = 0, time.perf_counter()
    while True:
        call()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= duration:
            return elapsed / count, count


def first_call(trial: Trial, traced: bool) -> tuple:
    """The result of one call, its time, and (when traced) the peak NumPy allocation during it."""
    if not traced:
        start = time.perf_counter()
        result = as_arrays(trial.call())
        trial.per_call_s = time.perf_counter() - start
        return result, 0
    if trial.impl == 'numpy':   # its temporaries' buffers, kept from the last call, would hide them
        importlib.import_module('generated.numpy._runtime').release_scratch()
    tracemalloc.start()
    try:
        start = time.perf_counter()
        result = as_arrays(trial.call())
        trial.per_call_s = time.perf_counter() - start
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def check(trial: Trial, truth: tuple, dtype: str) -> None:
    """Call once against the oracle: WRONG or ERROR rows are never timed; record the extra memory."""
    traced = trial.impl in TRACED
    try:
        result, peak = first_call(trial, traced)
    except Exception as exc:  # a kernel under rewrite may raise anything: report it, keep benchmarking
        trial.status, trial.detail = 'ERROR', f'{type(exc).__name__}: {exc}'
        return
    trial.error, trial.detail = compare(result, truth, dtype)
    trial.status = 'WRONG' if trial.detail else 'OK'
    if traced:
        trial.workspace = max(0, peak - sum(r.nbytes for r in result))
    elif trial.impl == 'c' and not trial.detail:
        trial.workspace = c_workspace(trial.call)


def c_workspace(call: Callable[[], object]) -> int:
    """The bytes of stack arrays a call of generated.c takes at most: its threads times the most one thread
    of the kernels it runs holds (their _workspace functions, on the sizes the call prepares)."""
    c, api = importlib.import_module('generated.c'), importlib.import_module('generated._api')
    with api.recording() as prepared:
        call()
    return c.get_num_threads() * max((c.workspace(*p) for p in prepared), default=0)


def warm_up(trials: list, plan: Plan) -> None:
    """Warm each fast trial up (the check call warmed the slow ones) and plan its samples."""
    for t in trials:
        if t.per_call_s < plan.budget_s:
            t.per_call_s = timed_for(t.call, plan.sample_s)[0]
        affordable = int(plan.budget_s / max(plan.sample_s, t.per_call_s, 1e-9))
        t.wanted = max(plan.min_samples, min(plan.repeat, affordable))


def others_cpu_s() -> float:
    """CPU seconds used so far by this process's threads other than the caller.

    On Linux each thread's own CPU clock (clockid ``~tid << 3 | 6``, glibc's pthread_getcpuclockid for a
    thread id), which is brought up to date when read.  The process clock is not: it adds a thread running
    on another core only at each scheduler tick (4 ms at HZ=250), so a 1 ms poll of it saw an OpenMP worker
    spinning for 8 ms as idle in three polls of four.  Elsewhere the process clock, less the caller's."""
    try:
        me = threading.get_native_id()
        tids = [int(t) for t in os.listdir('/proc/self/task') if int(t) != me]
    except OSError:
        return time.process_time() - time.thread_time()
    total = 0.0
    for tid in tids:
        with suppress(OSError):   # the thread ended since the listing
            total += time.clock_gettime(~tid << 3 | 6)
    return total


def settle(limit_s: float) -> None:
    """Wait, at most ``limit_s``, until no other thread of this process uses the CPU.

    An OpenMP runtime's workers spin after each parallel region (~8 ms by libgomp's default GOMP_SPINCOUNT,
    Zen 4; the generated C and torch each bring one), so a 2-thread sample of another implementation taken
    at once runs on one free core: NumPy rows measured 2-5x slower, their IQR up to 160 %.  OpenBLAS's
    workers go on for ~100 ms after a call, yielding: the limit caps the wait for them."""
    deadline = time.perf_counter() + limit_s
    while time.perf_counter() < deadline:
        cpu = others_cpu_s()
        time.sleep(SETTLE_STEP_S)
        if others_cpu_s() - cpu < SETTLE_STEP_S / 4:
            return


def sample(trials: list, plan: Plan, threads: int = 1) -> None:
    """Round-robin over the trials, the order rotated each round, until each has its samples (with
    several ``threads``, each after settle)."""
    active = [t for t in trials if t.status == 'OK']
    warm_up(active, plan)
    for round_ in range(max((t.wanted for t in active), default=0)):
        shift = round_ % len(active)
        for t in active[shift:] + active[:shift]:
            if len(t.samples) < t.wanted:
                if threads > 1:
                    settle(plan.settle_s)
                per_call, count = timed_for(t.call, plan.sample_s)
                t.samples.append(per_call)
                t.calls.append(count)


def passes(trials: list, threads: int) -> list:
    """The groups of trials sampled together: all at one thread; with several, those of each thread pool
    (POOLS) in a pass of their own.  NumPy's calls hand work to OpenBLAS's workers several times a call;
    interleaved with the two OpenMP runtimes' (the C kernels', torch's), three pools took turns on two
    cores and single NumPy calls stalled for 4-13 ms (IQR of its rows up to 714 %).  The ratios the
    criteria read (C / torch, generated.numpy / reference) stay within one pass."""
    if threads == 1:
        return [trials]
    families = {}
    for t in trials:
        families.setdefault(POOLS.get(t.impl, t.impl), []).append(t)
    return list(families.values())


def cpu_snapshot() -> tuple | None:
    """(busy CPU seconds of the whole machine, CPU seconds of this process, wall clock); None without /proc."""
    try:
        with open('/proc/stat') as fh:
            ticks = [int(v) for v in fh.readline().split()[1:9]]    # user nice system idle iowait irq softirq steal
    except OSError:
        return None
    busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf('SC_CLK_TCK')
    return busy, sum(os.times()[:2]), time.perf_counter()


def others_busy(before: tuple | None, after: tuple | None) -> float | None:
    """Percent of the machine's CPUs used by other processes (and the hypervisor) between two snapshots."""
    if before is None or after is None:
        return None
    busy, own, wall = (a - b for a, b in zip(after, before))
    return max(0.0, 100.0 * (busy - own) / (wall * (os.cpu_count() or 1)))


# ----------------------------------------------------------------------------- ceilings

def ceiling_trials(dtypes, threads: int, pool: ThreadPoolExecutor, rng: np.random.Generator) -> list:
    """sgemm/dgemm through numpy.matmul at GEMM_SIZE^3, and an 8 MiB copy split over ``threads``."""
    trials = []
    for dtype in dtypes:
        a, b = (rng.standard_normal((GEMM_SIZE, GEMM_SIZE)).astype(dtype) for _ in range(2))
        trials.append(Trial({'float32': 'sgemm', 'float64': 'dgemm'}[dtype], lambda a=a, b=b: a @ b))
    source = np.ones(COPY_BYTES // 8)
    target = np.empty_like(source)
    if threads == 1:
        trials.append(Trial('copy', lambda: np.copyto(target, source)))
        return trials
    bounds = np.linspace(0, source.size, threads + 1).astype(int)
    parts = [(target[lo:hi], source[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])]
    trials.append(Trial('copy', lambda: list(pool.map(lambda pair: np.copyto(*pair), parts))))
    return trials


CEILING_WORK = {'sgemm': 2.0 * GEMM_SIZE ** 3, 'dgemm': 2.0 * GEMM_SIZE ** 3, 'copy': 2.0 * COPY_BYTES}


def measure_ceilings(dtypes, threads: int, plan: Plan, rng: np.random.Generator) -> list:
    """The machine's ceilings at ``threads`` threads, as JSON records (rate in GFLOP/s or GB/s)."""
    with ThreadPoolExecutor(threads) as pool:
        trials = ceiling_trials(dtypes, threads, pool, rng)
        for t in trials:
            t.per_call_s = timed_for(t.call, 0.0)[0]
        sample(trials, plan, threads)
    return [dict(name=t.impl, threads=threads, samples_s=t.samples, calls=t.calls,
                 median_s=float(np.median(t.samples)),
                 rate=CEILING_WORK[t.impl] / float(np.median(t.samples)) / 1e9,
                 unit='GB/s' if t.impl == 'copy' else 'GFLOP/s') for t in trials]


def ceiling_rate(ceilings: list, case: Case, unit: str) -> float | None:
    name = 'copy' if unit == 'GB/s' else {'float32': 'sgemm', 'float64': 'dgemm'}[case.dtype]
    rates = [c['rate'] for c in ceilings if c['name'] == name and c['threads'] == case.threads]
    return rates[0] if rates else None


# ----------------------------------------------------------------------------- cases and rows

def run_case(case: Case, backends: dict, impls: list, plan: Plan, rng: np.random.Generator,
             ceilings: list) -> list:
    """Check every implementation of ``case`` against the float64 oracle, time the correct ones."""
    arrays = make_inputs(case, rng)
    oracle = backends.get('torch', REFERENCE)
    exact = {k: v.astype(np.float64) if v.dtype.kind == 'f' else v for k, v in arrays.items()}
    truth = as_arrays(bind(oracle, case, backend_arrays(oracle, exact))())
    trials = [Trial(name, bind(backends[name], case, backend_arrays(backends[name], arrays))) for name in impls]
    for t in trials:
        check(t, truth, case.dtype)
    before = cpu_snapshot()
    for family in passes(trials, case.threads):
        sample(family, plan, case.threads)
    rows = case_rows(case, trials, work(case, arrays), ceilings)
    others = others_busy(before, cpu_snapshot())
    return [dict(row, others_cpu_percent=others) for row in rows]


def case_rows(case: Case, trials: list, amount: tuple, ceilings: list) -> list:
    per_call, unit = amount
    ceiling = ceiling_rate(ceilings, case, unit)
    medians = {t.impl: float(np.median(t.samples)) for t in trials if t.samples}
    rows = []
    for t in trials:
        row = dict(shape=case.shape.name, op=case.op, dtype=case.dtype, threads=case.threads, impl=t.impl,
                   status=t.status, detail=t.detail, max_error=t.error if t.error != math.inf else None,
                   workspace_bytes=t.workspace, calls=t.calls, samples_s=t.samples,
                   work=per_call, unit=unit)
        row.update(speed(t.samples, per_call, ceiling, medians))
        rows.append(row)
    return rows


def speed(samples: list, per_call: float, ceiling: float | None, medians: dict) -> dict:
    """Median, quartiles, minimum (ms), rate, % of ceiling and time ratios; all None without samples."""
    keys = ('median_ms', 'q1_ms', 'q3_ms', 'min_ms', 'rate', 'percent_of_ceiling', 'ratio_torch',
            'ratio_reference')
    if not samples:
        return dict.fromkeys(keys)
    q1, median, q3 = (float(q) for q in np.percentile(samples, (25, 50, 75)))
    rate = per_call / median / 1e9
    return dict(zip(keys, (1e3 * median, 1e3 * q1, 1e3 * q3, 1e3 * min(samples), rate,
                           100.0 * rate / ceiling if ceiling else None,
                           median / medians['torch'] if 'torch' in medians else None,
                           median / medians['reference'] if 'reference' in medians else None)))


def cases(shapes, ops, dtypes, threads) -> list:
    chosen = []
    for count, name, dtype in itertools.product(threads, shapes, dtypes):
        shape = SHAPES[name]
        shape_ops = CONV_OPS if isinstance(shape, ConvShape) else POOL_OPS
        chosen += [Case(shape, op, dtype, count) for op in shape_ops if op in ops]
    return chosen


def benchmark(chosen: list, backends: dict, impls: list, plan: Plan) -> tuple:
    """(ceilings, rows): the ceilings of each thread count, measured before its cases."""
    rng = np.random.default_rng(0)
    ceilings, rows = [], []
    for threads, group in itertools.groupby(chosen, key=lambda c: c.threads):
        group = list(group)
        with thread_count(threads, backends):
            ceilings += measure_ceilings(list(dict.fromkeys(c.dtype for c in group)), threads, plan, rng)
            for case in group:
                print(f'[{chosen.index(case) + 1}/{len(chosen)}] {case.shape.name} {case.op} {case.dtype} '
                      f'{threads}T', file=sys.stderr, flush=True)
                rows += run_case(case, backends, impls, plan, rng, ceilings)
    return ceilings, rows


# ----------------------------------------------------------------------------- report

def cpuinfo(key: str) -> str:
    """The value of the first ``key`` line of /proc/cpuinfo (Linux), or ''."""
    try:
        with open('/proc/cpuinfo') as fh:
            return next((line.split(':', 1)[1].strip() for line in fh if line.split(':', 1)[0].strip() == key), '')
    except OSError:
        return ''


def cpu_model() -> str:
    return cpuinfo('model name') or platform.processor() or 'unknown'


def cpu_flags() -> set:
    return set(cpuinfo('flags').split())


SIMD_LEVELS = (('avx512f', 'AVX-512'), ('avx2', 'AVX2'), ('avx', 'AVX'), ('sse2', 'SSE2'))


def simd() -> str:
    """The widest SIMD of the CPU (what the C kernels' -march=native build uses): the kernels take other
    paths on AVX2 and on AVX-512, so timings from the two are not comparable."""
    flags = cpu_flags()
    return next((name for flag, name in SIMD_LEVELS if flag in flags), 'unknown')


def numpy_threads() -> dict:
    """How NumPy's BLAS threads (used by numpy.matmul, the reference and generated.numpy) are set."""
    if importlib.util.find_spec('threadpoolctl') is None:
        return dict(controlled=False, note='threadpoolctl not installed: NumPy, the reference and the gemm '
                                           'ceilings run with BLAS\'s default threads in every row')
    info = importlib.import_module('threadpoolctl').threadpool_info()
    return dict(controlled=True, note='threadpoolctl limits NumPy\'s BLAS to each row\'s threads',
                blas=[{k: i.get(k) for k in ('internal_api', 'version', 'num_threads')} for i in info])


def machine_info() -> dict:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    return dict(cpu_model=cpu_model(), simd=simd(), logical_cpus=os.cpu_count(), usable_cpus=usable,
                platform=platform.platform(), python=platform.python_version(), numpy=np.__version__,
                numpy_threads=numpy_threads(), loadavg_before=list(os.getloadavg()))


COLUMNS = (  # heading, width, row key, format
    ('shape', 6, 'shape', 's'), ('op', 7, 'op', 's'), ('dtype', 7, 'dtype', 's'), ('thr', 3, 'threads', 'd'),
    ('impl', 9, 'impl', 's'), ('median ms', 10, 'median_ms', '.4g'), ('IQR %', 6, 'iqr_percent', '.1f'),
    ('min ms', 9, 'min_ms', '.4g'), ('n', 3, 'samples', 'd'), ('rate', 7, 'rate', '.3g'), ('unit', 7, 'unit', 's'),
    ('%ceil', 6, 'percent_of_ceiling', '.1f'), ('/torch', 7, 'ratio_torch', '.2f'),
    ('/ref', 7, 'ratio_reference', '.2f'), ('extra KiB', 9, 'workspace_kib', '.0f'),
    ('others%', 7, 'others_cpu_percent', '.0f'), ('status', 6, 'status', 's'))


def table_line(texts: list) -> str:
    return ' '.join(f'{text:<{width}}' if spec == 's' else f'{text:>{width}}'
                    for text, (_, width, _, spec) in zip(texts, COLUMNS)).rstrip()


def row_texts(values: dict) -> list:
    return ['-' if values.get(key) is None else format(values[key], spec) for _, _, key, spec in COLUMNS]


def table(report: dict) -> str:
    machine = report['machine']
    others = machine['others_cpu_percent']
    lines = [f"{machine['cpu_model']} ({machine.get('simd', '?')}), {machine['usable_cpus']} CPUs; load average "
             f"{machine['loadavg_before'][0]:.2f} before, {machine['loadavg_after'][0]:.2f} after; other processes "
             f"used {'?' if others is None else f'{others:.0f}'} % of the CPUs (column others%: during each case)",
             f"oracle: {report['oracle']} in float64; {machine['numpy_threads']['note']}"]
    lines += [f'no {name} rows: {problem[:150]}' for name, problem in report['backend_problems'].items()]
    for threads in dict.fromkeys(c['threads'] for c in report['ceilings']):
        lines.append(f'ceilings, {threads} thread(s): ' + ', '.join(
            f"{c['name']} {c['rate']:.1f} {c['unit']}" for c in report['ceilings'] if c['threads'] == threads)
            + ' (working sets smaller than 8 MiB may beat the copy ceiling from cache)')
    head = table_line([title for title, *_ in COLUMNS])
    lines += [head, '-' * len(head)]
    for row in report['results']:
        count = len(row['samples_s'])
        shown = dict(row, samples=count or None, iqr_percent=None if count < 3 else
                     100 * (row['q3_ms'] - row['q1_ms']) / row['median_ms'],
                     workspace_kib=None if row['workspace_bytes'] is None else row['workspace_bytes'] / 1024)
        lines.append(table_line(row_texts(shown)) + (f"  {row['detail']}" if row['detail'] else ''))
    lines.append(f"{len(report['results'])} rows, {sum(r['status'] != 'OK' for r in report['results'])} not OK, "
                 f"{report['elapsed_s']:.1f} s")
    if (others or 0) > BUSY_WARNING:
        lines.append(f'warning: other processes used {others:.0f} % of the CPUs: timings are unreliable, most of '
                     'all in rows with more threads than idle CPUs')
    return '\n'.join(lines)


def plot(rows: list, path: str) -> None:
    """Bars of each implementation's time relative to torch's (the reference's without torch), one panel
    per dtype and thread count."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    base = 'torch' if any(r['impl'] == 'torch' and r['samples_s'] for r in rows) else 'reference'
    panels = list(dict.fromkeys((r['dtype'], r['threads']) for r in rows))
    groups = list(dict.fromkeys((r['shape'], r['op']) for r in rows))
    impls = [i for i in dict.fromkeys(r['impl'] for r in rows) if i != base]
    ratio = {(r['dtype'], r['threads'], r['shape'], r['op'], r['impl']): r[f'ratio_{base}'] for r in rows}
    width, positions = 0.8 / max(1, len(impls)), np.arange(len(groups))
    fig, axes = plt.subplots(len(panels), 1, squeeze=False, figsize=(max(8.0, 0.45 * len(groups)),
                                                                     3.2 * len(panels)))
    for ax, panel in zip(axes[:, 0], panels):
        for k, impl in enumerate(impls):
            heights = [ratio.get(panel + group + (impl,)) or np.nan for group in groups]
            ax.bar(positions + k * width, heights, width, label=impl)
        ax.set_yscale('log')
        ax.axhline(1.0, color='black', linewidth=0.8)
        ax.set_title(f'{panel[0]}, {panel[1]} thread(s)', fontsize=9)
        ax.set_ylabel(f'time / {base} time', fontsize=8)
        ax.set_xticks(positions + 0.4 - width / 2, [f'{s} {o}' for s, o in groups], rotation=60, ha='right',
                      fontsize=7)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- command line

def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be >= 1, got {value}')
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``bpgen bench``."""
    parser.add_argument('--shapes', nargs='+', choices=SHAPES, default=list(SHAPES), metavar='SHAPE',
                        help=f'benchmark shapes (default all): {", ".join(SHAPES)}')
    parser.add_argument('--ops', nargs='+', choices=OPS, default=list(OPS), metavar='OP',
                        help=f'operations (default all): conv {", ".join(CONV_OPS)}; pool {", ".join(POOL_OPS)}')
    parser.add_argument('--dtypes', nargs='+', choices=DTYPES, metavar='DTYPE',
                        help='float32 and/or float64 (default both; --quick: float32)')
    parser.add_argument('--threads', nargs='+', type=positive_int, metavar='N',
                        help='thread counts for the C kernels, torch and NumPy\'s BLAS (default 1 2)')
    parser.add_argument('--impls', nargs='+', choices=IMPLS, default=list(IMPLS), metavar='IMPL',
                        help=f'implementations (default all): {", ".join(IMPLS)}')
    parser.add_argument('--repeat', type=positive_int, metavar='N',
                        help=f'samples per implementation and case (default {FULL_PLAN.repeat}; '
                             f'--quick: {QUICK_PLAN.repeat}); slow calls get fewer, see --budget')
    parser.add_argument('--budget', type=float, metavar='SECONDS',
                        help='timed seconds per implementation and case beyond which fewer samples are taken '
                             f'(default {FULL_PLAN.budget_s:g}; --quick: {QUICK_PLAN.budget_s:g})')
    parser.add_argument('--quick', action='store_true',
                        help='a smoke run in well under a minute: float32, threads 1 2, few samples')
    parser.add_argument('--json', metavar='PATH', help='raw samples and machine info (default bench-<time>.json)')
    parser.add_argument('--plot', metavar='PATH', help='PNG bar chart of time ratios (needs matplotlib)')


def settings(args) -> tuple:
    """(plan, dtypes, threads) from the options, --quick choosing the defaults not given."""
    plan = QUICK_PLAN if args.quick else FULL_PLAN
    plan = dataclasses.replace(plan, repeat=args.repeat or plan.repeat,
                               budget_s=plan.budget_s if args.budget is None else args.budget,
                               min_samples=min(plan.min_samples, args.repeat or plan.repeat))
    dtypes = args.dtypes or (['float32'] if args.quick else list(DTYPES))
    threads = args.threads or [1, 2]
    return plan, list(dict.fromkeys(dtypes)), list(dict.fromkeys(threads))


def run(args) -> int:
    """``bpgen bench``: print the table, write the JSON (and the plot); exit 1 if a result was not OK
    or a generated backend did not import, 2 if the plot cannot be drawn."""
    if args.plot and importlib.util.find_spec('matplotlib') is None:
        print('bpgen bench: --plot needs matplotlib (pip install matplotlib, or bpgen[plot])', file=sys.stderr)
        return 2
    plan, dtypes, threads = settings(args)
    machine, snapshot, start = machine_info(), cpu_snapshot(), time.perf_counter()
    backends, problems = load_backends(args.impls)
    impls = [name for name in dict.fromkeys(args.impls) if name in backends]
    chosen = cases(list(dict.fromkeys(args.shapes)), args.ops, dtypes, threads)
    ceilings, rows = benchmark(chosen, backends, impls, plan)
    machine.update(loadavg_after=list(os.getloadavg()), others_cpu_percent=others_busy(snapshot, cpu_snapshot()))
    report = dict(machine=machine, oracle='torch' if 'torch' in backends else 'reference',
                  torch=getattr(backends.get('torch'), 'version', None), plan=dataclasses.asdict(plan),
                  options=dict(shapes=args.shapes, ops=args.ops, dtypes=dtypes, threads=threads, impls=impls,
                               quick=args.quick), backend_problems=problems,
                  ceilings=ceilings, results=rows, elapsed_s=time.perf_counter() - start)
    print(table(report))
    path = args.json or f'bench-{time.strftime("%Y%m%d-%H%M%S")}.json'
    with open(path, 'w') as fh:
        json.dump(report, fh, indent=1)
    print(f'wrote {path}')
    if args.plot:
        plot(rows, args.plot)
        print(f'wrote {args.plot}')
    failed = [r for r in rows if r['status'] != 'OK'] or [n for n in problems if n in GENERATED]
    return 1 if failed else 0
