"""The C kernels under AddressSanitizer and UBSan: the tests marked ``sanitize_subset`` (kernels against the
proven rules, dot-product tests, the pinned semantics: conv/pool/activation forward and backward with strides,
dilation, padding, groups, ceil_mode, ties and NaN) re-run in a subprocess on the C backend only, built with
BPGEN_SANITIZE=1 into a fresh cache, the sanitizer runtimes preloaded."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.sanitize
REPO = Path(__file__).resolve().parents[2]


def runtime_library(name: str) -> str:
    """Absolute path of a gcc runtime library, or skip."""
    if shutil.which('gcc') is None:
        pytest.skip('gcc is not installed')
    path = subprocess.run(['gcc', f'-print-file-name={name}'], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(path) or not os.path.exists(path):
        pytest.skip(f'{name} is not installed')
    return path


OVERFLOW = """
import numpy as np
from generated.c import _binding
_binding.relu({'numel': 2000}, output=np.zeros(1000), input=np.zeros(2000))   # writes 1000 elements past the end
"""


# UBSan's signed-overflow check makes GCC's instrumented build of the vector files six times slower (bpgen_pool.c
# at -O0: 36 s with it, 6.6 s without; the kernel files of one vector path took four minutes of CI).  It runs on
# the scalar path (every kernel's element loops); the vector paths keep ASan and UBSan's other checks (shifts,
# bounds, alignment, null and overflowing pointers, ...), and their tests' sizes are far from int64's range.
FAST_UBSAN = ' -fno-sanitize=signed-integer-overflow'
FLAGS = {'vector': FAST_UBSAN, 'scalar': ' -DBPGEN_NO_VECTOR', 'native': ' -march=native' + FAST_UBSAN}


@pytest.mark.parametrize('path', sorted(FLAGS))
def test_c_kernels_are_clean_under_address_and_undefined_behaviour_sanitizers(tmp_path, path):
    """Every C path: the GCC-vector one for the baseline target (default), the portable scalar one
    (-DBPGEN_NO_VECTOR) and the machine's own SIMD (-march=native: AVX-512's permutes and row registers here,
    the cached build's paths); -O0 keeps the instrumented build of the large generated files quick (the
    sanitizers check the same at every level)."""
    preload = ' '.join(runtime_library(name) for name in ('libasan.so', 'libubsan.so'))
    env = dict(os.environ, BPGEN_SANITIZE='1', BPGEN_CACHE_DIR=str(tmp_path / 'cache'), BPGEN_TEST_BACKENDS='c',
               LD_PRELOAD=preload, ASAN_OPTIONS='detect_leaks=0', UBSAN_OPTIONS='print_stacktrace=1',
               PYTHONPATH=str(REPO), BPGEN_CFLAGS='-O0' + FLAGS[path])
    env.pop('BPGEN_NO_CACHE', None)
    command = [sys.executable, '-m', 'pytest', '-o', 'addopts=', '-v', '-p', 'no:cacheprovider', '-m',
               'sanitize_subset', str(REPO / 'tests' / 'kernels')]
    run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    assert 'AddressSanitizer' not in output and 'runtime error' not in output, output[-6000:]
    ran = [line for line in run.stdout.splitlines() if line.endswith(('PASSED', 'XFAIL')) or ' PASSED ' in line]
    assert len(ran) >= 100, output[-2000:]
    assert not [line for line in ran if 'numpy' in line.split('::')[-1]], 'the C backend only'
    canary = subprocess.run([sys.executable, '-c', OVERFLOW], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert canary.returncode != 0 and 'AddressSanitizer: heap-buffer-overflow' in canary.stderr, \
        'the harness detects an out-of-bounds write'
