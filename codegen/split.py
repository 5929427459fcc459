"""Residue split (polyphase decomposition) of a gather rule with strided divisibility.

    # [KernelRule] -> [KernelRule over (r, t) instead of i]

The gather form of a transposed access (the input gradient of a strided
convolution, average-pooling backward) sums over the taps m with s | i + P - D m.
Looping over i, every element pays a lattice start and exact divisions, and the
vector path cannot run (the lanes would need different taps).  Written
i = s t + r with 0 <= r < s (derive.zsum.split_residue), the divisibility loses
its multiple of s and depends on r only: for each residue the sum is a stride-1
problem in t, whose accesses are affine in t ((s t + r + P - D m)/s = t +
(r + P - D m)/s), so the interior runs vectorized along t, storing s apart.
A tap with unit coefficient in such a divisibility (D = 1: average pooling) is
then parametrized by its lattice (derive.zsum.lattice: m = s k + r + P), so the
access becomes t - k, with no division in the loop; its box [ceil(-(r + P)/s),
floor((K - 1 - r - P)/s)] depends on the residue only, fixed outside the
vector loops (KernelRule.residues).
"""
from __future__ import annotations

from dataclasses import replace

from sympy import Symbol

from derive.zsum import lattice, split_residue

from .ir import FloorDiv
from .spec import KernelRule


def residue_split(rule: KernelRule) -> KernelRule:
    """The rule over (r, t) for every free index i with a divisibility s | +-i + e (s a parameter),
    or the rule itself when there is none."""
    if rule.reduction != 'sum' or len(rule.terms) != 1 or rule.at:
        return rule
    (term, optional), = rule.terms
    moduli = {}
    for e, s in term.divs:
        for v in rule.index:
            if s.is_Symbol and e.coeff(v) in (1, -1):
                moduli.setdefault(v, s)
    if not moduli:
        return rule
    index, at, extents, box, residues = [], [], [], [], []
    for v, size in zip(rule.index, rule.outputs[0].shape):
        if v not in moduli:
            index.append(v)
            at.append(v)
            extents.append(size)
            box += [v, size - 1 - v]
            continue
        s, stem = moduli[v], v.name.rstrip("'")
        r, t = Symbol(f'{stem}r', integer=True), Symbol(f'{stem}q', integer=True)
        term, _ = split_residue(term, v, s, t, r)
        for m in [m for m in term.vars if any(m in e.free_symbols and e.coeff(m) in (1, -1) and d == s
                                              for e, d in term.divs)]:
            term, _ = lattice(term, m, Symbol(f'{m.name}k', integer=True))
        index += [r, t]
        residues.append(r)
        at.append(s * t + r)
        extents += [s, FloorDiv(size - 1 - r, s) + 1]
        box += [r, s - 1 - r, t, size - 1 - s * t - r]
    return replace(rule, index=tuple(index), terms=((term, optional),), at=tuple(at), extents=tuple(extents),
                   box=tuple(box), residues=tuple(residues))
