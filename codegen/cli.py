"""The ``bpgen`` command line."""
from __future__ import annotations

import argparse
import sys


def _prove(args) -> int:
    from . import prove
    try:
        outcomes = prove.run(args.claims)
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return 2
    text = prove.FORMATS[args.format](outcomes)
    if args.output:
        with open(args.output, 'w') as fh:
            fh.write(text + '\n')
        print(prove.table(outcomes).splitlines()[-1])
    else:
        print(text)
    return 0 if all(o.ok for o in outcomes) else 1


def _errata(args) -> int:
    from derive.claims import all_claims

    from . import prove
    outcomes = prove.run([c.id for c in all_claims() if not c.expected])
    print(prove.errata(outcomes))
    return 0 if all(o.ok for o in outcomes) else 1


def _generate(args) -> int:
    from . import generate
    if args.check:
        text = generate.diff()
        if text:
            print(text, end='')
            print('generated/ is stale: run `bpgen generate`', file=sys.stderr)
            return 1
        print('generated/ is up to date')
        return 0
    changed = generate.write()
    print('\n'.join(f'wrote generated/{p}' for p in changed) or 'generated/ is up to date')
    return 0


WIDTH = 38  # the longest stage name, 'numpy: vs torch autograd, activation', plus a margin


def _all(args) -> int:
    """The main job: prove, generate (or check), build, verify; one summary table."""
    import importlib
    import importlib.util
    import time
    from . import generate, prove, verify
    rows = []

    def stage(name, fn):
        start = time.perf_counter()
        ok, detail = fn()
        rows.append((name, 'ok' if ok else 'FAILED', detail, time.perf_counter() - start))
        print(f'{name:<{WIDTH}} {"ok" if ok else "FAILED":<7} {detail}', flush=True)
        return ok

    def claims():
        out = prove.run()
        failed = [o.claim.id for o in out if not o.ok]
        errata = sum(not o.claim.expected for o in out)
        return not failed, f'{len(out)} claims ({errata} errata refuted)' + (f', failed: {failed}' if failed else '')

    def generated():
        if args.check:
            changed = generate.stale()[1]
            return not changed, 'up to date' if not changed else f'stale: {changed}'
        changed = generate.write()
        return True, f'{len(changed)} files rewritten' if changed else 'up to date'

    def build():
        module = importlib.import_module('generated.c')
        return True, f'{len(module.__all__)} public functions, {module.get_num_threads()} OpenMP threads'

    stage('prove the lecture\'s claims', claims)
    stage('generate' if not args.check else 'check generated/', generated)
    stage('build the C kernels (cffi, cached)', build)
    backends = {'numpy': importlib.import_module('generated.numpy'), 'c': importlib.import_module('generated.c')}
    low = {'numpy': importlib.import_module('generated.numpy._kernels'),
           'c': importlib.import_module('generated.c._binding')}
    for name in backends:
        stage(f'{name}: vs the proven rules', lambda n=name: _result(verify.symbolic_sweep(low[n], n)))
        if importlib.util.find_spec('torch') is None:
            rows.append((f'{name}: vs torch', 'skipped', 'torch not installed', 0.0))
            print(f'{name}: vs torch: skipped (torch not installed)')
            continue
        for family in ('conv', 'pool', 'activation'):
            stage(f'{name}: vs torch autograd, {family}',
                  lambda n=name, f=family: _result(verify.torch_sweep(backends[n], n, f, args.cases)))
    print(f'\n{"stage":<{WIDTH}} {"result":<7} {"seconds":>8}')
    for name, result, _, seconds in rows:
        print(f'{name:<{WIDTH}} {result:<7} {seconds:8.1f}')
    return 0 if all(r[1] != 'FAILED' for r in rows) else 1


def _result(r) -> tuple:
    return r.ok, f'{r.cases} cases, worst error {r.worst:.3g} x tolerance'


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='bpgen', description='Machine-checked backpropagation for CNNs.')
    sub = p.add_subparsers(dest='command', required=True)
    pr = sub.add_parser('prove', help='check the lecture\'s claims; table of verdicts and times')
    pr.add_argument('claims', nargs='*', help='claim ids or id prefixes (default: all)')
    pr.add_argument('--format', choices=('text', 'markdown', 'latex'), default='text',
                    help='text: the table; markdown/latex: the derivations with their steps')
    pr.add_argument('--output', '-o', help='write to this file instead of standard output')
    pr.set_defaults(run=_prove)
    er = sub.add_parser('errata', help='the lecture\'s false statements, corrected, with counterexamples')
    er.set_defaults(run=_errata)
    al = sub.add_parser('all', help='the main job: prove the claims, generate, build, verify both backends')
    al.add_argument('--check', action='store_true', help='check generated/ instead of rewriting it')
    al.add_argument('--cases', type=int, default=100, help='random configurations per family against torch')
    al.set_defaults(run=_all)
    ge = sub.add_parser('generate', help='print the kernels into generated/ (only files whose content changed)')
    ge.add_argument('--check', action='store_true', help='write nothing; exit 1 with a diff if generated/ is stale')
    ge.set_defaults(run=_generate)
    be = sub.add_parser('bench', help='time the kernels against a NumPy reference, PyTorch and the machine '
                                      'ceilings, side by side in one run')
    from . import bench
    bench.add_arguments(be)
    be.set_defaults(run=bench.run)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    return args.run(args)


if __name__ == '__main__':
    sys.exit(main())
