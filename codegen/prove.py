"""Run the claims of derive/ and report them: a table, the errata, or the derivations
as Markdown or LaTeX (``bpgen prove``, ``bpgen errata``)."""
from __future__ import annotations

import textwrap
import time
from dataclasses import dataclass

from derive.claims import FALSE, Claim, Verdict, select


@dataclass(frozen=True)
class Outcome:
    claim: Claim
    verdict: Verdict
    seconds: float
    error: str = ''

    @property
    def ok(self) -> bool:
        return not self.error and self.claim.passes(self.verdict)


def run(ids=()) -> list[Outcome]:
    """Check the selected claims (all when ``ids`` is empty), timing each; a crash is a failure."""
    outcomes = []
    for c in select(ids):
        start = time.perf_counter()
        try:
            verdict, error = c.check(), ''
        except Exception as exc:  # a claim that crashes is reported, never hidden
            verdict, error = Verdict(FALSE, False), f'{type(exc).__name__}: {exc}'
        outcomes.append(Outcome(c, verdict, time.perf_counter() - start, error))
    return outcomes


def table(outcomes: list[Outcome]) -> str:
    width = max(len(o.claim.id) for o in outcomes)
    head = f'{"claim":<{width}}  {"eq":<6} {"slide":<34} {"method":<44} {"s":>6}  verdict'
    lines = [head, '-' * len(head)]
    for o in outcomes:
        verdict = 'ok' if o.ok else 'FAILED'
        if o.ok and not o.claim.expected:
            verdict = 'ok (erratum)'
        lines.append(f'{o.claim.id:<{width}}  {o.claim.equation:<6} {o.claim.slide[:34]:<34} '
                     f'{o.verdict.method[:44]:<44} {o.seconds:6.2f}  {verdict}')
        lines += textwrap.wrap(o.claim.statement, 110, initial_indent='    ', subsequent_indent='    ')
        if o.error:
            lines.append(f'    error: {o.error}')
    total = sum(o.seconds for o in outcomes)
    failed = [o.claim.id for o in outcomes if not o.ok]
    lines.append(f'{len(outcomes)} claims, {sum(not o.claim.expected for o in outcomes)} errata, '
                 f'{len(failed)} failed, {total:.1f} s' + (f': {", ".join(failed)}' if failed else ''))
    return '\n'.join(lines)


def errata(outcomes: list[Outcome]) -> str:
    blocks = []
    for o in (o for o in outcomes if not o.claim.expected):
        eq = f', eq {o.claim.equation}' if o.claim.equation else ''
        status = 'refuted and corrected' if o.ok else 'NOT ESTABLISHED'
        blocks.append('\n'.join([
            f'[{o.claim.id}] slide "{o.claim.slide}"{eq} -- {status}',
            *textwrap.wrap('The lecture: ' + o.claim.statement, 110, subsequent_indent='    '),
            *textwrap.wrap('Correction: ' + o.verdict.correction, 110, subsequent_indent='    '),
            *textwrap.wrap('Counterexample: ' + o.verdict.counterexample, 110, subsequent_indent='    ')]))
    return '\n\n'.join(blocks)


def markdown(outcomes: list[Outcome]) -> str:
    parts = ['# bpgen: the lecture\'s claims, machine-checked', '']
    for o in outcomes:
        parts += [f'## {o.claim.id}: {o.claim.slide}' + (f', eq {o.claim.equation}' if o.claim.equation else ''),
                  '', o.claim.statement, '', f'*{o.verdict.method}*, {o.seconds:.2f} s, '
                  + ('ok' if o.ok else 'FAILED'), '']
        if o.verdict.correction:
            parts += [f'**Correction.** {o.verdict.correction}', '',
                      f'**Counterexample.** {o.verdict.counterexample}', '']
        for e in o.verdict.evidence:
            parts += ['```', e.text(), '```', '']
    return '\n'.join(parts)


def latex(outcomes: list[Outcome]) -> str:
    from derive.proof import _tex_text
    parts = ['\\documentclass{article}', '\\usepackage{amsmath,amssymb}', '\\allowdisplaybreaks',
             '\\begin{document}', '\\section*{bpgen: the lecture\'s claims, machine-checked}']
    for o in outcomes:
        parts += [f'\\subsection*{{{_tex_text(o.claim.id)}: {_tex_text(o.claim.slide)}}}',
                  _tex_text(o.claim.statement) + '\\\\', f'\\emph{{{_tex_text(o.verdict.method)}}}, '
                  f'{o.seconds:.2f} s' + ('' if o.ok else ', \\textbf{FAILED}')]
        if o.verdict.correction:
            parts += [f'\\paragraph{{Correction.}} {_tex_text(o.verdict.correction)}',
                      f'\\paragraph{{Counterexample.}} {_tex_text(o.verdict.counterexample)}']
        parts += [e.latex() for e in o.verdict.evidence]
    parts.append('\\end{document}')
    return '\n\n'.join(parts)


FORMATS = {'text': table, 'markdown': markdown, 'latex': latex}
