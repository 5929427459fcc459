"""generated/ is what the rules print: byte-deterministic and up to date (the one test that generates: two
minutes), headers present, the stale check reports a modified, missing or extra file, write() restores it, and
`bpgen generate --check` passes on the repository and fails on a stale copy.  The tests of the stale check and
the CLI answer generate.files() with the files on disk, which the first test proves equal to a generation: no
test but that one waits for the rules to print (under pytest-xdist each worker would print them again)."""
import shutil

import pytest
import sympy

from codegen import cli, generate
from codegen.render import MARK


def test_generation_is_byte_deterministic_and_the_repository_up_to_date():
    expected, again = generate.files(), generate.files()
    assert list(again) == list(expected)
    assert all(again[p].encode() == expected[p].encode() for p in expected)
    assert expected == generate.marked(), 'generated/ is stale: run `bpgen generate`'
    assert generate.stale()[1] == [], 'generated/ is stale: run `bpgen generate`'


@pytest.fixture
def expected(monkeypatch) -> dict:
    """generate.files() answered with the files on disk (what the first test proves it prints)."""
    files = generate.marked()
    monkeypatch.setattr(generate, 'files', lambda: dict(files))
    return files


@pytest.fixture
def copy(tmp_path, expected):
    """A temporary copy of generated/ (generate.files() answered from disk, by ``expected``)."""
    root = tmp_path / 'generated'
    shutil.copytree(generate.ROOT, root, ignore=shutil.ignore_patterns('__pycache__'))
    return root


def test_every_generated_file_carries_the_do_not_edit_header(expected):
    assert {'c/bpgen_conv2d.c', 'c/bpgen_conv.h', 'numpy/_kernels.py', 'c/_binding.py', '_api.py'} <= set(expected)
    for path, text in expected.items():
        head = '\n'.join(text.splitlines()[:3])
        assert MARK in head and 'do not edit' in head and 'spec hash' in head, path
        assert f'SymPy {sympy.__version__}' in head, path


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


@pytest.mark.parametrize('stale', [False, True])
def test_cli_generate_check(expected, monkeypatch, capsys, stale):
    """`bpgen generate --check` on the repository: exit 0, or 1 with the diff when the rules print something
    else (generate.files() answered with the files on disk: the CLI's own generation took 84 s of CI)."""
    printed = dict(expected)
    if stale:
        printed['c/bpgen_pool.c'] = printed['c/bpgen_pool.c'].replace('return 0;', 'return 1;', 1)
    monkeypatch.setattr(generate, 'files', lambda: dict(printed))
    status = cli.main(['generate', '--check'])
    out, err = capsys.readouterr()
    if stale:
        assert status == 1 and 'stale: run `bpgen generate`' in err
        assert '+++ generated/c/bpgen_pool.c (from the rules)' in out and '+    return 1;' in out
    else:
        assert status == 0 and out == 'generated/ is up to date\n' and not err
