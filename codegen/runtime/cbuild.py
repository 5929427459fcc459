"""Build the generated C kernels with cffi on first use, and cache the extension
(copied into generated/c/_build.py).

The cache key is a digest of the sources, the cdef, the compiler's identity,
the flags, the CPU features (for -march=native), the Python ABI and the cffi
version.  One lock per key (fcntl), build in a temporary directory, then an
atomic rename: parallel processes build once and never load a half-written
file.  Environment:

    BPGEN_CACHE_DIR   where the cache lives (default ~/.cache/bpgen)
    BPGEN_NO_CACHE=1  build into a fresh temporary directory every time
    BPGEN_SANITIZE=1  build with -fsanitize=address,undefined (run under LD_PRELOAD of libasan)
    BPGEN_CFLAGS      extra compiler flags
    CC                the compiler (default cc)
"""
from __future__ import annotations

import fcntl
import hashlib
import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from functools import cache
from pathlib import Path

OPTIMIZE = ('-O3', '-march=native', '-std=c99', '-ffp-contract=fast', '-fno-math-errno', '-fopenmp')
# Register-pressure-aware scheduling keeps the weight gradient's loaded rows in registers instead of
# re-reading them as memory operands (resnet dW 37 -> 30 ms), so the convolutions' sources (their names'
# prefix SCHEDULED) take it; the pooling kernels lose by it (Zen 4, C driver, float32: pool3 average
# backward 0.38 -> 0.51 ms, the others within 3 %).
SCHEDULE = ('-fschedule-insns', '-fsched-pressure')
SCHEDULED = 'bpgen_conv'
SANITIZE = ('-O1', '-g', '-std=c99', '-fno-omit-frame-pointer', '-fsanitize=address,undefined',
            '-fno-sanitize-recover=undefined')


def compile_flags(source: str = '') -> tuple:
    """The compiler's flags for the C source named ``source`` (the extension module's own: '')."""
    if os.environ.get('BPGEN_SANITIZE') == '1':
        flags = SANITIZE
    else:
        flags = OPTIMIZE + (SCHEDULE if source.startswith(SCHEDULED) else ())
    return flags + tuple(os.environ.get('BPGEN_CFLAGS', '').split())


def link_flags() -> tuple:
    return ('-fsanitize=address,undefined',) if os.environ.get('BPGEN_SANITIZE') == '1' else ('-fopenmp',)


@cache
def compiler_identity() -> str:
    cc = os.environ.get('CC', 'cc')
    try:
        out = subprocess.run([cc, '--version'], capture_output=True, text=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f'bpgen: no working C compiler ({cc}): {exc}; set CC or install gcc/clang') from exc
    return f'{cc}: {out.splitlines()[0] if out else "?"}'


def cpu_features() -> str:
    try:
        with open('/proc/cpuinfo') as fh:
            return next((line for line in fh if line.startswith('flags')), '')
    except OSError:
        return sys.platform


def cache_key(sources: dict, cdef: str, module_source: str = '') -> str:
    import cffi
    h = hashlib.sha256()
    for name in sorted(sources):
        for part in (name, sources[name], ' '.join(compile_flags(name))):
            h.update(part.encode() + b'\0')
    for part in (cdef, module_source, compiler_identity(), ' '.join(compile_flags()), ' '.join(link_flags()),
                 cpu_features(), sys.implementation.cache_tag or '', sysconfig.get_config_var('EXT_SUFFIX') or '',
                 cffi.__version__):
        h.update(part.encode() + b'\0')
    return h.hexdigest()


def cache_root() -> Path:
    return Path(os.environ.get('BPGEN_CACHE_DIR') or Path.home() / '.cache' / 'bpgen')


def load(source_dir: Path, source_names: tuple, cdef: str, module_source: str = ''):
    """Return (lib, ffi) of the extension built from ``source_names`` in ``source_dir``, with
    ``module_source`` (C after the headers) compiled into the extension module itself."""
    sources = {n: (source_dir / n).read_text() for n in source_names}
    key = cache_key(sources, cdef, module_source)
    module = f'_bpgen_{key[:20]}'
    if os.environ.get('BPGEN_NO_CACHE') == '1':
        work = Path(tempfile.mkdtemp(prefix='bpgen-'))
        try:   # a loaded extension stays usable after its file is removed
            return _import(_build(module, sources, cdef, work, module_source), module)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    target = cache_root() / key[:2] / f'{module}{sysconfig.get_config_var("EXT_SUFFIX")}'
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.parent / f'{module}.lock', 'w') as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not target.exists():
                work = Path(tempfile.mkdtemp(prefix=f'{module}-', dir=target.parent))
                try:
                    os.replace(_build(module, sources, cdef, work, module_source), target)
                finally:
                    shutil.rmtree(work, ignore_errors=True)
    return _import(target, module)


def _build(module: str, sources: dict, cdef: str, work: Path, module_source: str) -> Path:
    import cffi
    for name, text in sources.items():
        (work / name).write_text(text)
    ffi = cffi.FFI()
    ffi.cdef(cdef)
    headers = ''.join(f'#include "{n}"\n' for n in sorted(sources) if n.endswith('.h'))
    try:
        objects = _objects([work / n for n in sorted(sources) if n.endswith('.c')])
        ffi.set_source(module, headers + module_source, extra_objects=objects, include_dirs=[str(work)],
                       extra_compile_args=list(compile_flags()), extra_link_args=list(link_flags()))
        return Path(ffi.compile(tmpdir=str(work), verbose=False))
    except Exception as exc:  # cffi raises VerificationError / CompileError subclasses
        raise RuntimeError(f'bpgen: building the C kernels failed ({compiler_identity()}, flags '
                           f'{" ".join(compile_flags())}): {exc}') from exc


def _objects(paths: list) -> list:
    """Each C source compiled to an object file, as many at a time as there are cores (the convolution
    kernels alone take a minute at -O3)."""
    from concurrent.futures import ThreadPoolExecutor

    def compile_one(path: Path) -> str:
        obj = path.with_suffix('.o')
        done = subprocess.run([os.environ.get('CC', 'cc'), *compile_flags(path.name), '-fPIC', '-I', str(path.parent),
                               '-c', str(path), '-o', str(obj)], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f'{path.name}: {done.stderr.strip()[-2000:]}')
        return str(obj)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(compile_one, sorted(paths, key=lambda p: -p.stat().st_size)))


def _import(path: Path, module: str):
    loader = importlib.machinery.ExtensionFileLoader(module, str(path))
    spec = importlib.util.spec_from_file_location(module, str(path), loader=loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod.lib, mod.ffi
