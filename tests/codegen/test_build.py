"""The C artefacts and their build: every generated .c compiles alone (C99, -Wall -Wextra -Werror) next to its
own header only; the cache key follows flags, sources and cdef; BPGEN_NO_CACHE bypasses the cache; two
processes importing generated.c into one empty cache both succeed (lock, temporary build, atomic rename)."""
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
from conftest import TARGETS, needs_cc

from codegen.runtime import cbuild

REPO = Path(__file__).resolve().parents[2]
GENERATED_C = REPO / 'generated' / 'c'
TINY = {'tiny.c': '#include "tiny.h"\nint bp_tiny(int a) { return a + 40; }\n', 'tiny.h': 'int bp_tiny(int a);\n'}
EXT = sysconfig.get_config_var('EXT_SUFFIX')


MODES = {'vector': [], 'scalar': ['-DBPGEN_NO_VECTOR'], 'native-openmp': ['-march=native', '-fopenmp'], **TARGETS}


@needs_cc
@pytest.mark.parametrize('mode', sorted(MODES))
@pytest.mark.parametrize('source', sorted(p.name for p in GENERATED_C.glob('*.c')))
def test_generated_c_file_compiles_alone_with_warnings_as_errors(tmp_path, source, mode):
    """C99 next to its own header only: default target, the portable scalar path (-DBPGEN_NO_VECTOR), the
    build's own target and OpenMP, and the AVX2 and AVX-512 paths whatever this CPU runs (compiled only)."""
    header = re.search(r'#include "(\w+\.h)"', (GENERATED_C / source).read_text())[1]
    for name in (source, header):
        shutil.copy(GENERATED_C / name, tmp_path / name)
    run = subprocess.run(['cc', '-std=c99', '-Wall', '-Wextra', '-Werror', *MODES[mode], '-c', source, '-o', 'out.o'],
                         cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-4000:]


@pytest.fixture
def clean_env(monkeypatch):
    for name in ('BPGEN_CFLAGS', 'BPGEN_SANITIZE', 'BPGEN_NO_CACHE'):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@needs_cc
def test_cache_key_is_stable_and_follows_flags_sources_and_cdef(clean_env):
    cdef = 'int bp_tiny(int a);'
    base = cbuild.cache_key(TINY, cdef)
    assert cbuild.cache_key(dict(reversed(list(TINY.items()))), cdef) == base
    assert cbuild.cache_key({**TINY, 'tiny.c': TINY['tiny.c'].replace('40', '41')}, cdef) != base
    assert cbuild.cache_key(TINY, cdef + ' ') != base
    assert cbuild.cache_key(TINY, cdef, 'int w(void) { return 1; }') != base   # the module's own C
    clean_env.setenv('BPGEN_CFLAGS', '-DBP_VARIANT=1')
    first = cbuild.cache_key(TINY, cdef)
    assert '-DBP_VARIANT=1' in cbuild.compile_flags() and first != base
    clean_env.setenv('BPGEN_CFLAGS', '-DBP_VARIANT=2')
    assert cbuild.cache_key(TINY, cdef) not in (base, first)
    clean_env.delenv('BPGEN_CFLAGS')
    clean_env.setenv('BPGEN_SANITIZE', '1')
    assert cbuild.cache_key(TINY, cdef) != base
    clean_env.delenv('BPGEN_SANITIZE')
    assert cbuild.cache_key(TINY, cdef) == base


def test_only_the_convolution_sources_take_the_pre_register_allocation_schedule(clean_env):
    """It keeps the weight gradient's rows in registers and made pool3's average backward a third slower."""
    for name in ('bpgen_conv1d.c', 'bpgen_conv2d.c', 'bpgen_conv3d.c'):
        assert set(cbuild.SCHEDULE) <= set(cbuild.compile_flags(name)), name
    for name in ('bpgen_pool.c', 'bpgen_activation.c', 'bpgen_runtime.c', ''):
        assert not set(cbuild.SCHEDULE) & set(cbuild.compile_flags(name)), name
    assert cbuild.compile_flags('bpgen_pool.c') == cbuild.OPTIMIZE
    conv = {'bpgen_conv2d.c': TINY['tiny.c'], 'tiny.h': TINY['tiny.h']}
    pool = {'bpgen_pool.c': TINY['tiny.c'], 'tiny.h': TINY['tiny.h']}
    keys = [cbuild.cache_key(sources, 'int bp_tiny(int a);') for sources in (conv, pool)]
    clean_env.setattr(cbuild, 'SCHEDULE', ('-fschedule-insns',))   # a source's own flags are in the key
    assert [cbuild.cache_key(sources, 'int bp_tiny(int a);') == key for sources, key in zip((conv, pool), keys)] == [
        False, True]


def python(code: str, env: dict, **kw):
    """Start ``code`` in a fresh interpreter with the repository importable."""
    full = dict(os.environ, PYTHONPATH=str(REPO), **env)
    for name in ('BPGEN_SANITIZE', 'BPGEN_NO_CACHE', 'LD_PRELOAD'):
        if name not in env:
            full.pop(name, None)
    return subprocess.Popen([sys.executable, '-c', code], env=full, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


LOAD_TINY = '''
import sys
from pathlib import Path
from codegen.runtime import cbuild
lib, ffi = cbuild.load(Path(sys.argv[1]), ('tiny.c', 'tiny.h'), 'int bp_tiny(int a);')
assert lib.bp_tiny(2) == 42
'''


def tiny_sources(root: Path) -> Path:
    source = root / 'src'
    source.mkdir()
    for name, text in TINY.items():
        (source / name).write_text(text)
    return source


def finished(process, timeout: float = 600) -> str:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, out[-3000:] + err[-3000:]
    return out


@needs_cc
def test_tiny_build_goes_to_the_cache_and_is_reused(tmp_path):
    source, cache = tiny_sources(tmp_path), tmp_path / 'cache'
    finished(python(LOAD_TINY.replace('sys.argv[1]', repr(str(source))), {'BPGEN_CACHE_DIR': str(cache)}))
    built = sorted(cache.rglob(f'*{EXT}'))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    finished(python(LOAD_TINY.replace('sys.argv[1]', repr(str(source))), {'BPGEN_CACHE_DIR': str(cache)}))
    assert sorted(cache.rglob(f'*{EXT}')) == built and built[0].stat().st_mtime_ns == stamp


@needs_cc
def test_no_cache_switch_builds_outside_the_cache(tmp_path):
    source, cache = tiny_sources(tmp_path), tmp_path / 'cache'
    temp = tmp_path / 'tmp'
    temp.mkdir()
    env = {'BPGEN_CACHE_DIR': str(cache), 'BPGEN_NO_CACHE': '1', 'TMPDIR': str(temp)}
    for _ in range(2):
        finished(python(LOAD_TINY.replace('sys.argv[1]', repr(str(source))), env))
    assert not cache.exists() or not any(cache.rglob('*'))


@needs_cc
def test_no_cache_switch_leaves_no_build_directory_behind(tmp_path):
    source, temp = tiny_sources(tmp_path), tmp_path / 'tmp'
    temp.mkdir()
    env = {'BPGEN_CACHE_DIR': str(tmp_path / 'cache'), 'BPGEN_NO_CACHE': '1', 'TMPDIR': str(temp)}
    finished(python(LOAD_TINY.replace('sys.argv[1]', repr(str(source))), env))
    assert list(temp.iterdir()) == []


IMPORT_GENERATED = '''
import time
time.sleep(max(0.0, {start} - time.time()))
import numpy as np
import generated.c as K
assert K.relu(np.array([-1.0, 2.0])).tolist() == [0.0, 2.0]
assert K.conv1d(np.ones((1, 1, 4)), np.ones((1, 1, 2))).tolist() == [[[2.0, 2.0, 2.0]]]
print('ok')
'''


@needs_cc
def test_two_processes_importing_generated_c_into_an_empty_cache_both_succeed(tmp_path):
    cache = tmp_path / 'cache'
    env = {'BPGEN_CACHE_DIR': str(cache), 'BPGEN_CFLAGS': '-O0 -w'}     # a quick build; the race is the point
    code = IMPORT_GENERATED.format(start=time.time() + 3.0)
    processes = [python(code, env) for _ in range(2)]
    assert [finished(p).strip() for p in processes] == ['ok', 'ok']
    assert len(list(cache.rglob(f'_bpgen_*{EXT}'))) == 1, 'built once'
    assert [p for p in cache.rglob('*') if p.is_dir() and p.parent != cache] == [], 'no half-built work directory'
