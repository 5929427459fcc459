"""Shared pieces of the test suite: the backends, the tolerance table, random data, and an evaluator
of the proven rules at concrete sizes (the oracle the kernels are checked against, independent of torch).

Environment:
    BPGEN_TEST_BACKENDS   comma-separated backends the ``backend`` fixture runs over (default 'numpy,c');
                          the sanitizer run sets it to 'c'.
"""
from __future__ import annotations

import importlib
import itertools
import math
import os
import shutil

import numpy as np
import pytest
from sympy import Dummy, Indexed, KroneckerDelta, Symbol, fraction, lambdify, sympify, together

from derive.zsum import ZSum, bounds

BACKENDS = tuple(b.strip() for b in os.environ.get('BPGEN_TEST_BACKENDS', 'numpy,c').split(',') if b.strip())
DTYPES = (np.float32, np.float64)

# |actual - expected| <= TOLERANCE[dtype] * (max|expected| + scale), elementwise; scale is the magnitude of the
# computation (e.g. conv(|x|, |w|)) when cancellation can make the result small (torch-semantics report, sec. 5).
TOLERANCE = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}
# Kernels against the proven rules evaluated in float64 (same sums, other summation order).
RULE_TOLERANCE = 1e-12
# Central finite differences in float64 (step FD_STEP): truncation ~ step^2, rounding ~ eps / step.
FD_STEP = 1e-6
FD_TOLERANCE = 1e-7
needs_cc = pytest.mark.skipif(shutil.which('cc') is None, reason='no C compiler')
# The SIMD targets the generated C has paths for, as gcc flags: built whatever this CPU is
TARGETS = {'avx2': ['-mavx2', '-mfma', '-mbmi2', '-mno-avx512f'], 'avx512': ['-mavx512f', '-mavx512bw', '-mbmi2']}


def pytest_configure(config):
    config.addinivalue_line('markers', 'sanitize_subset: representative kernel tests re-run by '
                                       'tests/kernels/test_sanitize.py under AddressSanitizer and UBSan')


@pytest.fixture(params=BACKENDS)
def backend(request):
    """The public API of one backend: generated.numpy or generated.c (compiled on first import)."""
    return importlib.import_module(f'generated.{request.param}')


# ----------------------------------------------------------------------------- comparisons

def assert_close(actual, expected, scale: float = 0.0, tolerance: float | None = None, what: str = '') -> None:
    """Same shape and dtype, NaN and infinities in the same places, finite values within the per-dtype bound."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f'{what}: shape {actual.shape} != {expected.shape}'
    assert actual.dtype == expected.dtype, f'{what}: dtype {actual.dtype} != {expected.dtype}'
    nan = np.isnan(expected)
    assert np.array_equal(np.isnan(actual), nan), f'{what}: NaN positions differ'
    infinite = np.isinf(expected)
    assert np.array_equal(actual[infinite], expected[infinite]), f'{what}: infinities differ'
    finite = ~(nan | infinite)
    tol = TOLERANCE[expected.dtype] if tolerance is None else tolerance
    top = float(np.max(np.abs(expected[finite]), initial=0.0))
    bound = tol * (top + scale)
    err = np.abs(actual[finite].astype(np.float64) - expected[finite].astype(np.float64))
    worst = float(np.max(err, initial=0.0))
    assert worst <= bound, f'{what}: max error {worst:.3g} > bound {bound:.3g} (max|expected| {top:.3g})'


def random_array(rng, shape, dtype=np.float64, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    return rng.uniform(low, high, size=shape).astype(dtype)


def non_contiguous(array: np.ndarray) -> np.ndarray:
    """The same values as a non-contiguous view (every other element of a doubled last axis)."""
    doubled = np.repeat(array[..., None], 2, axis=-1)
    view = doubled.reshape(*array.shape[:-1], 2 * array.shape[-1])[..., ::2] if array.ndim else doubled[..., 0]
    assert np.array_equal(view, array, equal_nan=True)
    return view


def numeric_gradient(loss, array: np.ndarray) -> np.ndarray:
    """d loss / d array by central differences (float64), one element at a time; ``array`` is restored."""
    assert array.dtype == np.float64 and array.flags.c_contiguous, 'finite differences on contiguous float64'
    grad = np.empty_like(array)
    flat, out = array.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        keep = flat[i]
        flat[i] = keep + FD_STEP
        up = loss()
        flat[i] = keep - FD_STEP
        down = loss()
        flat[i] = keep
        out[i] = (up - down) / (2 * FD_STEP)
    return grad


def inner(a, b) -> float:
    """<a, b> in float64."""
    return float(np.sum(np.asarray(a, np.float64) * np.asarray(b, np.float64)))


def assert_inner_equal(left: float, right: float, magnitude: float, what: str = '') -> None:
    """Two evaluations of the same inner product agree up to rounding of a sum of ``magnitude``."""
    assert abs(left - right) <= RULE_TOLERANCE * magnitude, f'{what}: {left!r} != {right!r}'


# ----------------------------------------------------------------------------- the proven rules, evaluated

def _symbols_of(rule) -> set:
    syms = set()
    for t in rule.outputs + rule.inputs:
        for s in t.shape:
            syms |= sympify(s).free_symbols
    for term, _ in rule.terms:
        syms |= _expanded(rule, term).free_symbols
    labels = {ix.base.label for term, _ in rule.terms for ix in term.body.atoms(Indexed)}
    return {s for s in syms if isinstance(s, Symbol)} - labels - set(rule.index)


def _expanded(rule, term: ZSum) -> ZSum:
    """The term with the rule's definitions (the avg-pool divisor) written out."""
    body = term.body
    for fn, lam in rule.definitions:
        body = body.replace(fn, lam)
    return ZSum(term.vars, body, term.conds, term.divs)


def _integer_function(expr, variables):
    """A fast exact evaluator of an integer-valued index expression (a linear form over a constant)."""
    num, den = fraction(together(expr))
    den = int(den)
    numerator = lambdify(variables, num, modules='math')

    def value(*point):
        top = numerator(*point)
        assert top % den == 0, f'index {expr} is not an integer at {point}'
        return int(top) // den
    return value


class RuleEvaluator:
    """One term of a KernelRule at concrete sizes: its integer points and its body as Python functions."""

    def __init__(self, rule, term: ZSum, values: dict):
        first = rule.outputs[0]
        self.values = values
        box = [c for i, n in zip(rule.index, first.shape) for c in (i, n - 1 - i)]
        z = ZSum.make(tuple(rule.index) + term.vars, term.body, list(term.conds) + box, term.divs)
        z = ZSum(z.vars, z.body.xreplace(values), tuple(c.xreplace(values) for c in z.conds),
                 tuple((e.xreplace(values), s.xreplace(values)) for e, s in z.divs))
        self.z, self.vars = z, list(z.vars)
        self.box = bounds(z, {})
        self.conds = [_integer_function(c, self.vars) for c in z.conds]
        self.divs = [(_integer_function(e, self.vars), int(s)) for e, s in z.divs]
        self.out_index = [_integer_function(i, self.vars) for i in rule.index]
        tensors = {t.base: t for t in rule.inputs + rule.outputs}
        accesses = sorted(z.body.atoms(Indexed), key=str)
        self.arrays = [tensors[ix.base].name for ix in accesses]
        self.shapes = [tuple(int(sympify(n).xreplace(values)) for n in tensors[ix.base].shape) for ix in accesses]
        self.indices = [[_integer_function(e, self.vars) for e in ix.indices] for ix in accesses]
        holders = [Dummy(f'a{k}') for k in range(len(accesses))]
        self.body = lambdify(self.vars + holders, z.body.xreplace(dict(zip(accesses, holders))), modules='math')

    def points(self):
        """Integer points in lexicographic order of (output index, summation variables): window order."""
        ranges = [range(self.box[v][0], self.box[v][1] + 1) for v in self.vars]
        for point in itertools.product(*ranges):
            if all(c(*point) >= 0 for c in self.conds) and all(e(*point) % s == 0 for e, s in self.divs):
                yield point

    def read(self, arrays: dict, point) -> list:
        """The elements the body reads at ``point``; an access outside its array is a failure."""
        out = []
        for name, shape, index in zip(self.arrays, self.shapes, self.indices):
            position = tuple(f(*point) for f in index)
            assert all(0 <= p < n for p, n in zip(position, shape)), f'{name}{position} outside {shape}'
            out.append(arrays[name].reshape(shape)[position])
        return out

    def value(self, arrays: dict, point) -> float:
        return self.body(*point, *self.read(arrays, point))

    def output_position(self, point) -> tuple:
        return tuple(f(*point) for f in self.out_index)


def rule_sizes(rule, sizes: dict) -> dict:
    """{Symbol: int} for every size and parameter symbol of ``rule``, looked up by name in ``sizes``."""
    missing = sorted(s.name for s in _symbols_of(rule) if s.name not in sizes)
    assert not missing, f'{rule.name}: no value for {missing}'
    return {s: sympify(sizes[s.name]) for s in _symbols_of(rule)}


def evaluate_rule(rule, sizes: dict, arrays: dict) -> np.ndarray:
    """outputs[0] of ``rule`` (a sum rule) in float64, summed point by point from its Z-sums."""
    values = rule_sizes(rule, sizes)
    shape = tuple(int(sympify(n).xreplace(values)) for n in rule.outputs[0].shape)
    out = np.full(shape, -0.0)    # the neutral element of +, keeping the sign of a single -0.0 term
    for term, optional in rule.terms:
        if optional and arrays.get(optional) is None:
            continue
        ev = RuleEvaluator(rule, _expanded(rule, term), values)
        for point in ev.points():
            out[ev.output_position(point)] += ev.value(arrays, point)
    return out


def evaluate_max_rule(rule, sizes: dict, arrays: dict) -> tuple:
    """(output, indices) of a 'max' rule: over the points of its window in order, the first maximum wins and
    a NaN always replaces the running maximum (the selector of derive.pool)."""
    values = rule_sizes(rule, sizes)
    (term, _), = rule.terms
    shape = tuple(int(sympify(n).xreplace(values)) for n in rule.outputs[0].shape)
    best, where = np.full(shape, -math.inf), np.full(shape, -1, dtype=np.int64)
    selector = rule.outputs[1].base
    delta = next(f for f in term.body.args if isinstance(f, KroneckerDelta))
    candidate = next(a for a in delta.args if not (isinstance(a, Indexed) and a.base == selector))
    ev = RuleEvaluator(rule, ZSum(term.vars, term.body.xreplace({delta: 1}), term.conds, term.divs), values)
    position = _integer_function(candidate.xreplace(values), ev.vars)
    for point in ev.points():
        at = ev.output_position(point)
        v = ev.value(arrays, point)
        if where[at] < 0 or v > best[at] or math.isnan(v):
            best[at], where[at] = v, position(*point)
    return best, where
