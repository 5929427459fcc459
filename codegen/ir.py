"""Loop-nest IR: what a proven index sum becomes before it is printed.

Expressions stay SymPy objects until the printers; the few integer operations
that SymPy has no exact node for are small Function subclasses here.  A kernel
is a tree of Loop / Guard / statement nodes over the free indices of its
output and the summation variables of its rule.
"""
from __future__ import annotations

from dataclasses import dataclass

from sympy import Function, Integer


class FloorDiv(Function):
    """floor(p / q) for integers p and q > 0."""

    @classmethod
    def eval(cls, p, q):
        if isinstance(p, Integer) and isinstance(q, Integer):
            return Integer(p.p // q.p)
        if q == 1:
            return p


class CeilDiv(Function):
    """ceil(p / q) for integers p and q > 0."""

    @classmethod
    def eval(cls, p, q):
        if isinstance(p, Integer) and isinstance(q, Integer):
            return Integer(-((-p.p) // q.p))
        if q == 1:
            return p


class ExactDiv(Function):
    """p / q for integers where q divides p (guarded by a divisibility condition)."""

    @classmethod
    def eval(cls, p, q):
        if q == 1:
            return p


class ArrayRef(Function):
    """Element ``flat`` of the array named by the Symbol ``array`` (a printed memory access)."""


class IsNaN(Function):
    pass


# ----------------------------------------------------------------------------- nodes

@dataclass(frozen=True)
class Loop:
    var: object          # Symbol
    lower: object        # Expr, inclusive
    upper: object        # Expr, inclusive
    body: tuple
    kind: str = 'loop'


@dataclass(frozen=True)
class Guard:
    conds: tuple         # SymPy booleans, all must hold
    body: tuple
    kind: str = 'guard'


@dataclass(frozen=True)
class Declare:
    name: str
    ctype: str           # 'acc' (the kernel's scalar type), 'index'
    value: object
    kind: str = 'declare'


@dataclass(frozen=True)
class Assign:
    target: object       # Symbol or ArrayRef
    value: object
    op: str = '='        # '=' or '+='
    kind: str = 'assign'


@dataclass(frozen=True)
class SelectMax:
    """best, position = value, candidate if the selector rule takes the candidate."""

    best: str
    position: str
    value: object
    candidate: object
    kind: str = 'select_max'


@dataclass(frozen=True)
class Kernel:
    name: str
    outputs: tuple       # (name, is_index_array) pairs
    inputs: tuple        # (name, is_index_array, optional) triples
    params: tuple        # integer size / parameter symbols, in signature order
    checks: tuple        # expressions e on the params; the kernel verifies e >= 0 first
    body: tuple
