"""generated/ is what the rules print: byte-deterministic, headers present, the stale check reports a modified,
missing or extra file, write() restores it, and `bpgen generate --check` passes on the repository."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sympy

from codegen import generate
from codegen.render import MARK

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope='module')
def expected() -> dict:
    return generate.files()


@pytest.fixture
def copy(tmp_path, expected, monkeypatch):
    """A temporary copy of generated/, and generate.files() answered from the module's first call."""
    root = tmp_path / 'generated'
    shutil.copytree(generate.ROOT, root, ignore=shutil.ignore_patterns('__pycache__'))
    monkeypatch.setattr(generate, 'files', lambda: dict(expected))
    return root


def test_generation_is_byte_deterministic(expected):
    again = generate.files()
    assert list(again) == list(expected)
    assert all(again[p].encode() == expected[p].encode() for p in expected)


def test_every_generated_file_carries_the_do_not_edit_header(expected):
    assert {'c/bpgen_conv2d.c', 'c/bpgen_conv.h', 'numpy/_kernels.py', 'c/_binding.py', '_api.py'} <= set(expected)
    for path, text in expected.items():
        head = '\n'.join(text.splitlines()[:3])
        assert MARK in head and 'do not edit' in head and 'spec hash' in head, path
        assert f'SymPy {sympy.__version__}' in head, path


def test_repository_is_up_to_date(expected, monkeypatch):
    monkeypatch.setattr(generate, 'files', lambda: dict(expected))
    _, differing = generate.stale()
    assert differing == [], f'generated/ is stale in {differing}: run `bpgen generate`'


def test_stale_reports_a_modified_file(copy):
    target = copy / 'c' / 'bpgen_pool.c'
    target.write_text(target.read_text().replace('return 0;', 'return 1;', 1))
    assert generate.stale(copy)[1] == ['c/bpgen_pool.c']
    text = generate.diff(copy)
    assert '--- generated/c/bpgen_pool.c (on disk)' in text and '+++ generated/c/bpgen_pool.c (from the rules)' in text
    changed = [(line[0], line[1:].strip()) for line in text.splitlines()[2:] if line[:1] in '+-']
    assert changed == [('-', 'return 1;'), ('+', 'return 0;')]


def test_stale_reports_a_missing_and_an_extra_generated_file(copy):
    (copy / 'numpy' / '_kernels.py').unlink()
    (copy / 'c' / 'bpgen_extra.c').write_text(f'/* {MARK} by hand */\n')
    (copy / 'c' / 'notes.c').write_text('/* not generated: left alone */\n')
    assert generate.stale(copy)[1] == ['c/bpgen_extra.c', 'numpy/_kernels.py']


def test_write_restores_exactly_the_stale_files(copy):
    target = copy / 'numpy' / '_kernels.py'
    target.write_text(target.read_text() + '\n# edited\n')
    untouched = copy / 'c' / 'bpgen_conv2d.c'
    before = untouched.stat().st_mtime_ns
    assert generate.write(copy) == ['numpy/_kernels.py']
    assert generate.stale(copy)[1] == [] and generate.write(copy) == []
    assert untouched.stat().st_mtime_ns == before, 'unchanged files are not rewritten'


def test_cli_generate_check_passes_on_the_repository():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    run = subprocess.run([sys.executable, '-m', 'codegen.cli', 'generate', '--check'], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert 'up to date' in run.stdout
