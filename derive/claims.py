"""The claims registry: every statement of the lecture with its machine-checked verdict.

A claim names the slide (and equation number) it comes from, states what is
checked, and says whether the lecture's statement is expected to hold.  Its
check returns a :class:`Verdict`: proved for all sizes, checked exhaustively on
a stated grid, or false -- and then the verdict carries the corrected
statement, whether the correction was itself verified, and a concrete
counterexample checked against numbers.

Subject modules register their claims with the :func:`claim` decorator;
:func:`all_claims` imports them all and returns the registry in slide order.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from sympy import Expr, latex

PROVED = 'proved for all sizes'
FALSE = 'false'


def grid(description: str) -> str:
    """The method string of an exhaustive check, e.g. grid('H, W in 3..7, k in 1..4 (361 sizes)')."""
    return f'checked on grid {description}'


@dataclass(frozen=True)
class Identity:
    """Evidence that lhs == rhs, established by ``how`` (e.g. 'expand(lhs - rhs) == 0')."""

    name: str
    lhs: Expr
    rhs: Expr
    how: str

    def text(self) -> str:
        return f'{self.name}: {self.lhs} == {self.rhs}   [{self.how}]'

    def latex(self) -> str:
        return f'{self.name}: ${latex(self.lhs)} = {latex(self.rhs)}$ ({self.how})'


@dataclass(frozen=True)
class Note:
    """Evidence in words (a grid count, a numeric counterexample)."""

    body: str

    def text(self) -> str:
        return self.body

    def latex(self) -> str:
        from .proof import _tex_text
        return _tex_text(self.body)


@dataclass(frozen=True)
class Verdict:
    method: str                  # PROVED, grid(...), or FALSE
    holds: bool                  # does the lecture's statement, as checked, hold?
    evidence: tuple = ()         # Proof / Derivation / Identity / Note objects (text() and latex())
    correction: str = ''         # for false statements: the corrected statement
    correction_verified: bool = False
    counterexample: str = ''     # for false statements: numbers that refute the lecture


@dataclass(frozen=True)
class Claim:
    id: str
    slide: str
    equation: str
    statement: str
    expected: bool               # True: must hold; False: an erratum that must be found false
    check: Callable[[], Verdict] = field(compare=False, repr=False)

    def passes(self, verdict: Verdict) -> bool:
        """The verdict is what the project stands for: true claims proved, errata refuted and corrected."""
        if self.expected:
            return verdict.holds and verdict.method != FALSE
        return (not verdict.holds) and verdict.method == FALSE and verdict.correction_verified \
            and bool(verdict.counterexample)


_REGISTRY: dict[str, Claim] = {}

SUBJECTS = ('derive.graphs', 'derive.jacobian', 'derive.activations', 'derive.conv', 'derive.layer',
            'derive.pool')


def claim(id: str, slide: str, statement: str, equation: str = '', expected: bool = True):
    """Register the decorated zero-argument function as the check of a claim."""
    def register(check: Callable[[], Verdict]) -> Callable[[], Verdict]:
        if id in _REGISTRY:
            raise ValueError(f'claim id {id!r} registered twice')
        _REGISTRY[id] = Claim(id, slide, equation, statement, expected, check)
        return check
    return register


def all_claims() -> list[Claim]:
    for name in SUBJECTS:
        importlib.import_module(name)
    return list(_REGISTRY.values())


def select(ids) -> list[Claim]:
    """Claims whose id equals or starts with one of ``ids`` (all when empty); unknown ids raise KeyError."""
    claims = all_claims()
    if not ids:
        return claims
    chosen = []
    for wanted in ids:
        hits = [c for c in claims if c.id == wanted or c.id.startswith(wanted + '.')]
        if not hits:
            raise KeyError(f'no claim {wanted!r}; known: {", ".join(c.id for c in claims)}')
        chosen += [c for c in hits if c not in chosen]
    return chosen
