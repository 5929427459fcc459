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
