"""The benchmark harness, not the kernels' speed: options, the NumPy reference against torch and the generated
kernels, interleaved sampling, the checks that keep a wrong result from getting a speed, and the table and JSON
of a quick run.  No test asserts a timing."""
import argparse
import contextlib
import hashlib
import importlib
import importlib.util
import io
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from codegen import bench

HAS_TORCH = importlib.util.find_spec('torch') is not None


def parse(*argv):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- options, shapes, work

def test_defaults_run_everything_and_quick_narrows_them():
    args = parse()
    assert (args.shapes, args.ops, args.impls) == (list(bench.SHAPES), list(bench.OPS), list(bench.IMPLS))
    assert bench.settings(args) == (bench.FULL_PLAN, ['float32', 'float64'], [1, 2])
    assert bench.settings(parse('--quick')) == (bench.QUICK_PLAN, ['float32'], [1, 2])


def test_explicit_options_override_the_quick_defaults():
    plan, dtypes, threads = bench.settings(parse('--quick', '--repeat', '5', '--budget', '0.5', '--dtypes',
                                                 'float64', '--threads', '2', '2'))
    assert (plan.repeat, plan.budget_s, plan.min_samples, dtypes, threads) == (5, 0.5, 1, ['float64'], [2])


@pytest.mark.parametrize('argv', [('--shapes', 'vgg'), ('--ops', 'bwd'), ('--threads', '0'), ('--impls', 'mkl'),
                                  ('--repeat', '0'), ('--dtypes', 'float16')])
def test_bad_options_are_refused(argv, capsys):
    with pytest.raises(SystemExit):
        parse(*argv)
    assert f'argument {argv[0]}' in capsys.readouterr().err


def test_shapes_and_flops_follow_the_performance_anchors():
    assert bench.SHAPES['resnet'].output() == (8, 64, 56, 56)
    assert bench.SHAPES['s2'].output() == (8, 64, 16, 16)
    assert bench.SHAPES['dil2'].output() == (4, 16, 60, 60)
    assert bench.SHAPES['pool2'].output() == bench.SHAPES['pool3'].output() == (8, 64, 28, 28)
    case = bench.Case(bench.SHAPES['lenet'], 'dW', 'float32', 1)
    assert bench.work(case, bench.make_inputs(case, np.random.default_rng(0))) == (2.0 * 32 * 8 * 25 * 24 * 24,
                                                                                  'GFLOP/s')


def test_bias_and_pooling_count_bytes_read_and_written():
    case = bench.Case(bench.SHAPES['pool2'], 'max_bwd', 'float64', 1)
    arrays = bench.make_inputs(case, np.random.default_rng(0))
    output, plane = 8 * 64 * 28 * 28, 8 * 64 * 56 * 56
    assert bench.work(case, arrays) == (8.0 * output + 8 * output + 8 * plane, 'GB/s')


def test_conv_shapes_get_conv_ops_and_pool_shapes_pool_ops():
    chosen = bench.cases(['tiny', 'pool2'], ['fwd', 'max_bwd'], ['float32'], [1, 2])
    assert [(c.shape.name, c.op, c.threads) for c in chosen] == [
        ('tiny', 'fwd', 1), ('pool2', 'max_bwd', 1), ('tiny', 'fwd', 2), ('pool2', 'max_bwd', 2)]


# ----------------------------------------------------------------------------- the NumPy reference

SMALL = (
    bench.ConvShape('plain', (2, 3, 7, 8), (4, 3, 3, 2)),
    bench.ConvShape('strided', (2, 3, 9, 7), (4, 3, 3, 3), stride=2, padding=1),
    bench.ConvShape('dilated', (1, 2, 9, 9), (3, 2, 2, 3), padding=2, dilation=2),
    bench.ConvShape('uncovered', (1, 2, 8, 8), (2, 2, 3, 3), stride=3),     # the last rows meet no window
    bench.PoolShape('pool2', (2, 3, 8, 9), 2, 2),
    bench.PoolShape('pool3', (2, 3, 9, 8), 3, 2, 1),
    bench.PoolShape('overlap', (1, 2, 7, 7), 3, 1, 1),
)
SMALL_CASES = [bench.Case(shape, op, 'float64', 1) for shape in SMALL
               for op in (bench.CONV_OPS if isinstance(shape, bench.ConvShape) else bench.POOL_OPS)]


def other_backend(name: str):
    if name == 'torch':
        return bench.torch_backend(pytest.importorskip('torch'))
    return importlib.import_module('generated.numpy')


@pytest.mark.parametrize('other', ['torch', 'numpy'])
@pytest.mark.parametrize('case', SMALL_CASES, ids=lambda c: f'{c.shape.name}-{c.op}')
def test_reference_agrees_with_torch_and_the_generated_kernels(case, other):
    backend = other_backend(other)
    arrays = bench.make_inputs(case, np.random.default_rng(1))
    want = bench.as_arrays(bench.bind(backend, case, bench.backend_arrays(backend, arrays))())
    got = bench.as_arrays(bench.bind(bench.REFERENCE, case, arrays)())
    assert bench.compare(got, want, 'float64')[1] == ''
    assert all(g.flags.c_contiguous for g in got)


# ----------------------------------------------------------------------------- checks and sampling

def test_compare_accepts_rounding_and_names_what_is_wrong():
    values = np.linspace(-1.0, 1.0, 12).reshape(3, 4)
    indices = np.arange(12).reshape(3, 4)
    assert bench.compare((values.astype(np.float32), indices), (values, indices), 'float32')[1] == ''
    nan = values.copy()
    nan[1, 1] = np.nan
    assert 'error' in bench.compare((values + 1e-3,), (values,), 'float64')[1]
    assert 'error' in bench.compare((nan,), (values,), 'float64')[1]
    assert 'shape' in bench.compare((values[:2],), (values,), 'float64')[1]
    assert 'dtype' in bench.compare((values,), (values,), 'float32')[1]
    assert 'indices' in bench.compare((values, indices[::-1]), (values, indices), 'float64')[1]
    assert 'results' in bench.compare((values,), (values, indices), 'float64')[1]


def test_check_marks_errors_and_wrong_results_and_measures_numpy_workspace():
    truth = (np.full(3, 2e6),)
    failing, wrong = bench.Trial('c', lambda: 1 / 0), bench.Trial('c', lambda: truth[0] + 1)
    traced = bench.Trial('reference', lambda: 2 * np.ones((3, 10 ** 6)).sum(axis=1))
    for trial in (failing, wrong, traced):
        bench.check(trial, truth, 'float64')
    assert (failing.status, wrong.status, traced.status) == ('ERROR', 'WRONG', 'OK')
    assert 'ZeroDivisionError' in failing.detail and wrong.workspace is None
    assert traced.workspace >= 3 * 10 ** 6 * 8


def test_numpy_workspace_counts_the_buffers_an_earlier_call_left():
    """generated.numpy keeps its im2col copy (2.25 MiB for the s2 forward) for the next call: the checked call
    must build it again, or its extra memory would read as almost nothing."""
    K = other_backend('numpy')
    x = np.ones((8, 32, 32, 32), np.float32)
    w = np.ones((64, 32, 3, 3), np.float32)
    truth = (K.conv2d(x, w, None, stride=2, padding=1),)     # leaves the buffers behind
    trial = bench.Trial('numpy', lambda: K.conv2d(x, w, None, stride=2, padding=1))
    bench.check(trial, truth, 'float32')
    assert trial.status == 'OK' and trial.workspace >= 8 * 16 * 16 * 32 * 9 * 4


def test_sampling_is_round_robin_with_the_order_rotated_and_skips_wrong_results():
    calls = []
    trials = [bench.Trial(name, lambda name=name: calls.append(name)) for name in 'abc']
    trials.append(bench.Trial('wrong', lambda: calls.append('wrong'), status='WRONG'))
    slow = bench.Trial('slow', lambda: calls.append('slow'), per_call_s=100.0)   # its check call warmed it up
    bench.sample(trials + [slow], bench.Plan(repeat=3, budget_s=10.0, min_samples=1, sample_s=0.0))
    assert calls == ['a', 'b', 'c'] + ['a', 'b', 'c', 'slow'] + ['b', 'c', 'a'] + ['c', 'a', 'b']
    assert [len(t.samples) for t in trials + [slow]] == [3, 3, 3, 0, 1]


def test_settle_waits_while_another_thread_uses_the_cpu_and_not_otherwise(monkeypatch):
    """settle's decision on the CPU time others_cpu_s reports: another thread busy all the time (its CPU
    time grows as the wall clock) holds it to its limit; no growth lets it go after one poll."""
    monkeypatch.setattr(bench, 'others_cpu_s', time.perf_counter)
    start = time.perf_counter()
    bench.settle(0.02)
    assert time.perf_counter() - start >= 0.02
    monkeypatch.setattr(bench, 'others_cpu_s', lambda: 0.0)
    start = time.perf_counter()
    bench.settle(5.0)
    assert time.perf_counter() - start < 1.0


def test_others_cpu_s_counts_another_thread_to_the_millisecond():
    """A spinning thread's CPU time, read through its own clock, grows within one of settle's 1 ms polls
    and never by more than the wall time of the poll (the process clock, read instead, jumps by a scheduler
    tick of 4 ms at once, and a 1 ms poll saw an OpenMP worker spinning for 8 ms as idle in three of four).
    The machine may be loaded: the polls are spread over 2 s until one finds the spinner running."""
    stop = threading.Event()
    block = bytes(1 << 20)

    def spin():   # hashing releases the GIL (a spinning OpenMP worker never holds it): no hand-over to wait for
        while not stop.is_set():
            hashlib.sha256(block).digest()
    bench.settle(5.0)   # BLAS workers of earlier tests stopped (~0.1 s)
    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        seen, excess, deadline = [], [], time.perf_counter() + 2.0
        while time.perf_counter() < deadline and not seen:
            start, cpu = time.perf_counter(), bench.others_cpu_s()
            time.sleep(bench.SETTLE_STEP_S)
            used, wall = bench.others_cpu_s() - cpu, time.perf_counter() - start
            excess.append(used - wall)
            if used >= bench.SETTLE_STEP_S / 4:
                seen.append(used)
        assert seen, 'the spinner never showed in a poll'
        assert max(excess) < 1e-3   # one thread: at most the poll's wall time (a 4 ms tick would be 3 ms over)
    finally:
        stop.set()
        spinner.join()


def test_sampling_settles_only_with_several_threads(monkeypatch):
    settled = []
    monkeypatch.setattr(bench, 'settle', settled.append)
    plan = bench.Plan(repeat=2, budget_s=10.0, min_samples=1, sample_s=0.0, settle_s=0.01)
    bench.sample([bench.Trial('a', lambda: None)], plan)
    assert settled == []
    bench.sample([bench.Trial('a', lambda: None), bench.Trial('b', lambda: None)], plan, threads=2)
    assert settled == [0.01] * 4


def test_several_threads_sample_each_thread_pool_in_a_pass_of_its_own():
    trials = [bench.Trial(name, lambda: None) for name in ('c', 'numpy', 'reference', 'torch')]
    assert bench.passes(trials, 1) == [trials]
    assert [[t.impl for t in family] for family in bench.passes(trials, 2)] == [['c', 'torch'],
                                                                              ['numpy', 'reference']]


def test_thread_count_sets_and_restores_the_runtimes():
    backends = {'c': importlib.import_module('generated.c')}
    if HAS_TORCH:
        backends['torch'] = bench.torch_backend(importlib.import_module('torch'))
    before = {name: b.get_num_threads() for name, b in backends.items()}
    with bench.thread_count(1, backends):
        assert {name: b.get_num_threads() for name, b in backends.items()} == dict.fromkeys(backends, 1)
    assert {name: b.get_num_threads() for name, b in backends.items()} == before


def test_others_busy_is_the_machine_time_not_spent_by_this_process():
    assert bench.others_busy(None, (1.0, 1.0, 1.0)) is None
    assert bench.others_busy((10.0, 1.0, 100.0), (12.0, 2.0, 101.0)) == pytest.approx(100.0 / os.cpu_count())
    assert bench.cpu_snapshot() is None or len(bench.cpu_snapshot()) == 3


# ----------------------------------------------------------------------------- whole runs

def quick(path, *argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = bench.run(parse('--quick', '--threads', '1', '--json', str(path), *argv))
    return code, json.loads(path.read_text()), out.getvalue()


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
    return quick(tmp_path_factory.mktemp('bench') / 'bench.json', '--shapes', 'tiny', 'pool2', '--ops', 'fwd',
                 'db', 'max_fwd', 'avg_bwd')


def test_quick_run_checks_and_times_every_implementation(quick_run):
    code, report, _ = quick_run
    assert code == 0
    impls = [i for i in bench.IMPLS if i != 'torch' or HAS_TORCH]
    cases = list(dict.fromkeys((r['shape'], r['op']) for r in report['results']))
    assert cases == [('tiny', 'fwd'), ('tiny', 'db'), ('pool2', 'max_fwd'), ('pool2', 'avg_bwd')]
    for case in cases:
        assert [r['impl'] for r in report['results'] if (r['shape'], r['op']) == case] == impls
    for row in report['results']:
        assert row['status'] == 'OK' and row['max_error'] <= bench.TOLERANCE['float32']
        assert len(row['samples_s']) >= 1 and row['median_ms'] > 0 and row['rate'] > 0
        assert row['unit'] == ('GFLOP/s' if row['op'] == 'fwd' else 'GB/s')
        assert (row['workspace_bytes'] is None) == (row['impl'] == 'torch')


def test_quick_run_records_the_machine_the_ceilings_and_the_ratios(quick_run):
    _, report, _ = quick_run
    machine = report['machine']
    assert machine['cpu_model'] and machine['logical_cpus'] >= 1
    flags = Path('/proc/cpuinfo').read_text() if Path('/proc/cpuinfo').exists() else ''
    assert machine['simd'] in {name for _, name in bench.SIMD_LEVELS} | {'unknown'}
    if ' avx2' in flags:   # the ISA the kernels ran: AVX2 and AVX-512 take different paths
        assert machine['simd'] == ('AVX-512' if ' avx512f' in flags else 'AVX2')
    assert len(machine['loadavg_before']) == len(machine['loadavg_after']) == 3
    assert [(c['name'], c['threads']) for c in report['ceilings']] == [('sgemm', 1), ('copy', 1)]
    assert all(c['rate'] > 0 and c['samples_s'] for c in report['ceilings'])
    for row in report['results']:
        same = {r['impl']: r for r in report['results'] if (r['shape'], r['op']) == (row['shape'], row['op'])}
        assert row['ratio_reference'] == pytest.approx(row['median_ms'] / same['reference']['median_ms'])
        if HAS_TORCH:
            assert row['ratio_torch'] == pytest.approx(row['median_ms'] / same['torch']['median_ms'])
        assert row['percent_of_ceiling'] > 0


def test_quick_run_prints_one_table_line_per_result(quick_run):
    _, report, out = quick_run
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith('shape'))
    for column in ('median ms', 'IQR %', 'min ms', 'rate', '%ceil', '/torch', '/ref', 'extra KiB', 'others%'):
        assert column in lines[head]
    body = lines[head + 2:head + 2 + len(report['results'])]
    assert [line.split()[:5] for line in body] == [
        [r['shape'], r['op'], r['dtype'], str(r['threads']), r['impl']] for r in report['results']]
    assert all(line.split()[-1] == 'OK' for line in body)


@pytest.mark.parametrize('replacement, status', [
    (lambda grad_output: np.zeros(grad_output.shape[1], grad_output.dtype), 'WRONG'),
    (lambda grad_output: np.zeros(grad_output.shape[1], np.float64), 'WRONG'),
    (lambda grad_output: 1 / 0, 'ERROR')], ids=['zeros', 'float64', 'raises'])
def test_a_wrong_kernel_is_marked_and_gets_no_speed(replacement, status, monkeypatch, tmp_path):
    monkeypatch.setattr(importlib.import_module('generated.numpy'), 'conv2d_bias', replacement)
    code, report, out = quick(tmp_path / 'bench.json', '--shapes', 'tiny', '--ops', 'db', '--impls', 'numpy',
                              'reference')
    assert code == 1
    wrong, reference = report['results']
    assert (wrong['impl'], wrong['status'], reference['status']) == ('numpy', status, 'OK')
    assert wrong['samples_s'] == [] and wrong['median_ms'] is None and wrong['rate'] is None
    assert status in out


def test_plot_without_matplotlib_fails_before_benchmarking(monkeypatch, tmp_path, capsys):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'matplotlib'
                        else find_spec(name, *a))
    assert bench.run(parse('--quick', '--plot', str(tmp_path / 'b.png'), '--json', str(tmp_path / 'b.json'))) == 2
    assert 'matplotlib' in capsys.readouterr().err
    assert not (tmp_path / 'b.json').exists()


def test_plot_draws_a_png(quick_run, tmp_path):
    pytest.importorskip('matplotlib')
    bench.plot(quick_run[1]['results'], str(tmp_path / 'b.png'))
    assert (tmp_path / 'b.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
