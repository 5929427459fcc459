"""Proof objects: a derivation is a chain of checked rewrites of a Z-sum; a proof
compares two derivations under hypotheses.  Both print as text and LaTeX.

A derivation starts from a SymPy expression (a ``Sum`` with ``Piecewise``
indicators, or the result of ``diff``) turned into a Z-sum by the Karr rule, and
every later step is a rule of :mod:`derive.zsum` whose side condition was
checked when the step was made.  A proof holds when the two final Z-sums are
equal by :func:`derive.zsum.compare`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sympy import Expr, latex

from .zsum import ZSum, compare, from_sum


@dataclass(frozen=True)
class Step:
    rule: str
    detail: str
    result: ZSum


@dataclass(frozen=True)
class Derivation:
    """A chain of rule applications; ``result`` is the last Z-sum."""

    title: str
    source: Expr
    steps: tuple = ()

    @staticmethod
    def start(title: str, expr: Expr, hyps) -> Derivation:
        z, detail = from_sum(expr, hyps)
        return Derivation(title, expr, (Step(from_sum.title, detail, z),))

    @staticmethod
    def given(title: str, z: ZSum, note: str) -> Derivation:
        """Start from a Z-sum built by another derivation (``note`` says which)."""
        return Derivation(title, z.body, (Step('given', note, z),))

    def apply(self, rule, *args, **kwargs) -> Derivation:
        z, detail = rule(self.result, *args, **kwargs)
        return Derivation(self.title, self.source, self.steps + (Step(rule.title, detail, z),))

    @property
    def result(self) -> ZSum:
        return self.steps[-1].result

    def text(self) -> str:
        lines = [f'{self.title}:', f'    start: {self.source}']
        for s in self.steps:
            lines += [f'  = by {s.rule} ({s.detail})', f'    {s.result}']
        return '\n'.join(lines)

    def latex(self) -> str:
        rows = [f'& {zsum_latex(s.result)} && \\text{{{_tex_text(s.rule)}}}' for s in self.steps]
        return ('\\paragraph{' + _tex_text(self.title) + '}\n\\begin{align*}\n'
                + ' \\\\\n= '.join(rows) + '\n\\end{align*}')


@dataclass(frozen=True)
class Proof:
    statement: str
    hyps: tuple
    left: Derivation
    right: Derivation
    holds: bool
    reason: str
    extra: tuple = field(default=())

    def text(self) -> str:
        hyps = ', '.join(f'{h} >= 0' for h in self.hyps) or 'none'
        verdict = 'PROVED' if self.holds else 'NOT PROVED'
        return '\n'.join([f'Claim: {self.statement}', f'Hypotheses: {hyps}', self.left.text(),
                          self.right.text(), f'{verdict}: {self.reason}'])

    def latex(self) -> str:
        hyps = ',\\ '.join(f'{latex(h)} \\geq 0' for h in self.hyps) or '\\text{none}'
        verdict = 'proved' if self.holds else 'not proved'
        return '\n'.join([f'\\textbf{{Claim.}} {_tex_text(self.statement)}\\\\',
                          f'Hypotheses: ${hyps}$', self.left.latex(), self.right.latex(),
                          f'\\textit{{{verdict}: {_tex_text(self.reason)}}}'])


def prove_equal(statement: str, left: Derivation, right: Derivation, hyps) -> Proof:
    holds, reason = compare(left.result, right.result, hyps)
    return Proof(statement, tuple(hyps), left, right, holds, reason)


def zsum_latex(z: ZSum) -> str:
    factors = [f'[{latex(c)} \\geq 0]' for c in z.conds]
    factors += [f'[{latex(s)} \\mid {latex(e)}]' for e, s in z.divs]
    body = latex(z.body)
    if not z.vars:
        return ' '.join([body] + factors)
    over = ', '.join(latex(v) for v in z.vars)
    return f'\\sum_{{{over} \\in \\mathbb{{Z}}}} {body}\\, ' + '\\,'.join(factors)


_TEX = {'\\': '\\textbackslash{}', '_': '\\_', '%': '\\%', '&': '\\&', '#': '\\#', '{': '\\{',
        '}': '\\}', '|': '$|$', '^': '\\^{}', '~': '\\~{}', '$': '\\$'}


def _tex_text(s: str) -> str:
    return ''.join(_TEX.get(ch, ch) for ch in s)
