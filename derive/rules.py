"""Layers as forward index sums, and their backward rules derived by the chain rule.

One mechanism for every layer (slides "Backpropagation (2/9)"-"(9/9)", eq 10
and eq 16): a layer is

    output[index] = sum over its terms of Z-sums in the free symbols ``index``

and the gradient of a loss E with respect to an input tensor T is

    dE/dT[t] = sum_{index in box(output)} grad_output[index] * d output[index] / d T[t]   (chain rule)

Differentiating under a finite sum is linear, so the derivative enters the
Z-sum; SymPy's ``diff`` of an Indexed product gives Kronecker deltas;
eliminating them (preferring the output's own indices, so the remaining sum
runs over kernel taps or reduction axes) turns the chain-rule sum into
**gather form**: each element of dE/dT is one finite sum in the free symbols
``t``, with no scatter.  Every step is a checked rule of :mod:`derive.zsum` and
is recorded in a :class:`~derive.proof.Derivation`.

Max pooling is the same mechanism: its forward value is written as
sum_m sel[m] x[...] where sel is the one-hot selector of the first maximum
(PyTorch's convention), held constant under differentiation.
"""
from __future__ import annotations

from dataclasses import dataclass

from sympy import Expr, Indexed, IndexedBase, KroneckerDelta, diff, expand

from .proof import Derivation
from .zsum import RuleRefused, ZSum, drop_implied, eliminate_delta, rule, solvable_vars


@dataclass(frozen=True)
class Tensor:
    """A tensor of the layer: its public name, SymPy base and axis sizes."""

    name: str
    base: IndexedBase
    shape: tuple

    def __getitem__(self, index) -> Expr:
        """The element at ``index``; a tensor with no axes is its base's label (a scalar symbol)."""
        return self.base[tuple(index)] if len(index) else self.base.label

    def occurs_in(self, expr: Expr) -> bool:
        return expr.has(self.base if self.shape else self.base.label)

    def box(self, index) -> list[Expr]:
        """The constraints 0 <= index[i] <= shape[i] - 1, as expressions >= 0."""
        return [c for i, n in zip(index, self.shape) for c in (i, n - 1 - i)]


@dataclass(frozen=True)
class Layer:
    """output[index] = sum(terms); ``reduction`` says how the forward kernel evaluates it.

    reduction 'sum': the terms are the value.  reduction 'max': a single term
    sum_m KD(selector[index], position(m)) * x[...], the selector holding the
    position of the chosen maximum of x over the term's domain (the forward
    kernel computes that maximum and stores the position).  ``definitions`` are
    (Function, Lambda) pairs for functions of the indices that the terms use by
    name (the average-pool divisor): constants under differentiation, expanded
    by the code generator.
    """

    name: str
    output: Tensor
    index: tuple
    terms: tuple
    inputs: tuple
    params: tuple
    hyps: tuple
    reduction: str = 'sum'
    selector: Tensor | None = None
    definitions: tuple = ()

    def tensor(self, name: str) -> Tensor:
        for t in self.inputs:
            if t.name == name:
                return t
        raise KeyError(f'{self.name} has no input {name!r}')


@dataclass(frozen=True)
class Gradient:
    """dE/d(wrt)[index] as one Z-sum in gather form, with the derivation that produced it."""

    layer: str
    wrt: Tensor
    upstream: Tensor
    index: tuple
    value: ZSum
    derivation: Derivation
    definitions: tuple = ()


@rule('chain rule: dE/dT[t] = sum over the output box of grad_output * d output / d T[t] (eq 16)')
def chain_rule(term: ZSum, layer: Layer, upstream: Tensor, target: Indexed) -> tuple[ZSum, str]:
    """Differentiate one term under its sum and sum against the upstream gradient."""
    clash = (set(layer.index) | set(term.vars)) & set(target.free_symbols)
    if clash:
        raise RuleRefused(chain_rule.title, f'gradient indices {sorted(map(str, clash))} clash with the layer')
    body = diff(term.body, target)
    vars = tuple(layer.index) + tuple(term.vars)
    value = ZSum.make(vars, upstream[layer.index] * body,
                      list(term.conds) + layer.output.box(layer.index), term.divs)
    return value, f'd/d{target}, summed against {upstream.name}[{", ".join(map(str, layer.index))}]'


def gradient(layer: Layer, wrt: str, index: tuple, upstream_base: str = 'grad_output') -> Gradient:
    """Derive dE/d(wrt) in gather form for the element ``wrt[index]``."""
    tensor, upstream, terms, d = _chain_rule_sum(layer, wrt, index, upstream_base)
    d = to_gather(d, layer.index, list(layer.hyps) + tensor.box(index))
    leaked = d.result.free_symbols & (set(layer.index) | set(terms[0].vars))
    if leaked:
        raise RuleRefused('gather form', f'{sorted(map(str, leaked))} still free: not a gather form')
    return Gradient(layer.name, tensor, upstream, tuple(index), d.result, d, layer.definitions)


def to_gather(d: Derivation, prefer, hyps) -> Derivation:
    """Eliminate every delta a summation variable solves (preferring those in ``prefer``), then drop
    the constraints the others and ``hyps`` imply: from the chain-rule sum (or a scatter form) to
    gather form."""
    while _has_eliminable_delta(d.result):
        d = d.apply(eliminate_delta, prefer=prefer)
    return d.apply(drop_implied, hyps)


def scatter_form(layer: Layer, wrt: str, index: tuple, among: tuple) -> Derivation:
    """dE/d(wrt) in scatter form: the chain-rule sum with only the deltas of the summation variables
    ``among`` eliminated (the batch and channel indices).  The sum then runs over the output
    positions and the taps, and each remaining delta names the element of ``wrt`` a summand
    reaches: a kernel visits every summand once and adds it there."""
    tensor, _, _, d = _chain_rule_sum(layer, wrt, index, 'grad_output')
    while _has_eliminable_delta(d.result, among):
        d = d.apply(eliminate_delta, among=among)
    return d.apply(drop_implied, list(layer.hyps) + tensor.box(index))


def _chain_rule_sum(layer: Layer, wrt: str, index: tuple, upstream_base: str):
    """(wrt tensor, upstream tensor, the layer's terms with wrt, derivation up to the chain rule)."""
    tensor = layer.tensor(wrt)
    upstream = Tensor('grad_output', IndexedBase(upstream_base), layer.output.shape)
    terms = [t for t in layer.terms if tensor.occurs_in(t.body)]
    if len(terms) != 1:
        raise RuleRefused(chain_rule.title, f'{wrt} must appear in exactly one term, found {len(terms)}')
    start = ZSum.make(terms[0].vars, terms[0].body, terms[0].conds, terms[0].divs)
    d = Derivation.given(f'd E / d {wrt} of {layer.name}', start, f'forward term of {layer.name}')
    return tensor, upstream, terms, d.apply(chain_rule, layer, upstream, tensor[index])


def _has_eliminable_delta(z: ZSum, among=None) -> bool:
    return any(set(solvable_vars(z, expand(d.args[0] - d.args[1]))) & set(z.vars if among is None else among)
               for d in z.body.atoms(KroneckerDelta))
