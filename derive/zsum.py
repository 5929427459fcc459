"""The rule-checked summation layer.

A Z-sum is

    sum over v in Z^k of  body(v) * prod_c [c(v) >= 0] * prod_(e, s) [s | e(v)]

with integer-valued index expressions.  Every finite index sum of the lecture
(eq 1-22) and of the PyTorch layers is one of these.  SymPy's own ``Sum`` is not
trusted for this (Karr's convention for empty ranges, ``doit`` of a Kronecker
delta with a non-unit coefficient forgets integrality, ``simplify`` leaks bound
variables: see shared/research/symbolic-proofs.md), so every rewrite here is a
rule that checks its side condition and raises :class:`RuleRefused` otherwise:

* ``from_sum``: sum_{v=a}^{b} g = sum_{v in Z} g [v - a >= 0][b - v >= 0],
  valid only when b - a + 1 >= 0 follows from the hypotheses (Karr condition).
* ``substitute``: v -> +-u + c is a bijection of Z, so it may rename a summation
  variable.
* ``eliminate_delta``: sum_{v in Z} g(v) KD(c v + r, t) = [c | t - r] g((t - r)/c)
  for an integer c != 0 (the divisibility side condition is recorded, never
  dropped: this is what strided backward passes need).
* ``lattice``: sum_v h(v) [s | v + r] = sum_u h(s u - r) for s >= 1.
* ``drop_implied``: a constraint implied by the others and the hypotheses may be
  removed.

Implication between linear constraints is decided by an exact rational LP (the
affine Farkas lemma, solved by a small simplex over Fractions): a proof over the
reals is a proof over the integers (sound, not complete).  Constraints are first
tightened over the integers (divide by the gcd of the coefficients, round the
constant down), and sums of pairs are rounded too (Chvatal-Gomory cuts), which
recovers integer facts LP alone misses.  Non-linear monomials (a symbolic
stride times an index) are treated as fresh variables, with products of pairs
of facts added as facts of degree two: a relaxation, hence still sound.

>>> from sympy import symbols, Sum, IndexedBase
>>> i, n = symbols('i n', integer=True)
>>> z, _ = from_sum(Sum(IndexedBase('g')[i], (i, 0, n - 1)), hyps=[n])
>>> z
ZSum(vars=(i,), body=g[i], conds=(i, -i + n - 1), divs=())
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache, reduce
from itertools import combinations, combinations_with_replacement

from sympy import (
    Add,
    And,
    Dummy,
    Eq,
    Expr,
    Indexed,
    KroneckerDelta,
    Max,
    Min,
    Mod,
    Mul,
    Piecewise,
    Rel,
    S,
    Sum,
    Symbol,
    ceiling,
    default_sort_key,
    expand,
    floor,
    fraction,
    igcd,
    sympify,
    together,
)


class RuleRefused(ValueError):
    """A rewrite whose side condition could not be established."""

    def __init__(self, rule: str, condition: str):
        super().__init__(f'{rule} refused: {condition}')
        self.rule = rule
        self.condition = condition


# ----------------------------------------------------------------------------- constraints

INTEGER_FUNCTIONS = (KroneckerDelta, Min, Max, floor, ceiling)


def canon(expr: Expr) -> Expr:
    """Expand index expressions: inside Indexed objects (also inside derivatives) and in the
    arguments of integer-valued functions (Kronecker deltas, min, max, floor, ceiling)."""
    expr = expr.xreplace({ix: ix.base[tuple(expand(t) for t in ix.indices)] for ix in expr.atoms(Indexed)})
    return expr.replace(lambda e: isinstance(e, INTEGER_FUNCTIONS), lambda e: e.func(*map(expand, e.args)))


def _positive_factor(factor: Expr) -> bool:
    return bool(factor.is_positive)


@lru_cache(maxsize=65536)
def normalize(expr: Expr) -> Expr:
    """Canonical form of the constraint ``expr >= 0`` over the integers.

    Positive denominators and positive factors are cleared, then the constraint
    is tightened: sum a_i t_i + c >= 0 with g = gcd(a_i) becomes
    sum (a_i/g) t_i + floor(c/g) >= 0 (sound because every monomial t_i is an
    integer).  Raises RuleRefused when a symbol is not declared integer or a
    denominator has no known sign.
    """
    expr = expand(sympify(expr))
    if expr.is_number:
        return expr
    bad = [s for s in expr.free_symbols if not s.is_integer]
    if bad:
        raise RuleRefused('normalize', f'symbols {sorted(map(str, bad))} are not declared integer')
    num, den = fraction(together(expr))
    if not den.is_positive:
        raise RuleRefused('normalize', f'cannot clear the denominator {den} of {expr} (sign unknown)')
    num = expand(num)
    prim = num.as_content_primitive()[1]
    factors = [f for f in Mul.make_args(prim.factor()) if not _positive_factor(f)]
    num = expand(Mul(*factors)) if factors else S.One
    const, rest = num.as_coeff_Add()
    coeffs = [t.as_coeff_Mul()[0] for t in rest.as_ordered_terms()] if rest != 0 else []
    if coeffs and all(c.is_Integer for c in coeffs) and const.is_Rational:
        g = reduce(igcd, [int(abs(c)) for c in coeffs])
        if g > 1:
            num = expand(rest / g + floor(const / g))
    return num


def ge0(rel: Rel) -> Expr:
    """An integer relation as ``e`` with (rel <=> e >= 0)."""
    if rel.rel_op not in ('>=', '>', '<=', '<'):
        raise RuleRefused('relation', f'{rel} is not an inequality')
    diff = rel.lhs - rel.rhs if rel.rel_op[0] == '>' else rel.rhs - rel.lhs
    return normalize(diff - 1 if len(rel.rel_op) == 1 else diff)


def assumption_facts(symbols) -> list[Expr]:
    """Facts that SymPy's assumptions state about integer symbols (s >= 1, s >= 0)."""
    facts = []
    for s in sorted(symbols, key=default_sort_key):
        if s.is_positive:
            facts.append(s - 1)
        elif s.is_nonnegative:
            facts.append(s)
    return facts


def _linearize(exprs: list[Expr]) -> list[Expr]:
    """Replace each monomial by a fresh assumption-free real variable.

    For non-linear monomials this is a relaxation (sound).
    """
    table: dict = {}
    out = []
    for e in exprs:
        terms = []
        for t in expand(e).as_ordered_terms():
            c, mono = t.as_coeff_Mul()
            if mono == 1:
                terms.append(c)
                continue
            if mono not in table:
                table[mono] = Symbol(f'_lp{len(table)}')
            terms.append(c * table[mono])
        out.append(sum(terms, S.Zero))
    return out


def _lp_implies(target: Expr, facts: list[Expr]) -> bool:
    """target >= 0 on {facts >= 0}, by the affine Farkas lemma: find lam >= 0 with
    target = sum lam_i fact_i + (non-negative constant), an exact rational LP."""
    exprs = _linearize([target] + facts)
    coeffs = [e.as_coefficients_dict() for e in exprs]
    variables = sorted({v for c in coeffs for v in c if v != 1}, key=str)
    rows = [[_fraction(c.get(v, 0)) for c in coeffs[1:]] for v in variables]
    rhs = [_fraction(coeffs[0].get(v, 0)) for v in variables]
    cost = [_fraction(c.get(S.One, 0)) for c in coeffs[1:]]
    best = _simplex_min(rows, rhs, cost)       # min sum lam_i b_i over certificates lam
    return best is None or best <= _fraction(coeffs[0].get(S.One, 0))


def _fraction(r) -> Fraction:
    r = sympify(r)
    return Fraction(int(r.p), int(r.q))


def _simplex_min(rows: list, rhs: list, cost: list):
    """min cost.lam subject to rows.lam = rhs, lam >= 0 (exact, Bland's rule).

    Returns the minimum, float('inf') when infeasible, None when unbounded below.
    """
    m, k = len(rows), len(cost)
    table = [[-x for x in r] + [-b] if b < 0 else list(r) + [b] for r, b in zip(rows, rhs)]
    table = [r[:k] + [Fraction(int(i == j)) for j in range(m)] + [r[k]] for i, r in enumerate(table)]
    basis = list(range(k, k + m))
    phase1 = [Fraction(0)] * k + [Fraction(1)] * m
    if _pivot_to_optimum(table, basis, phase1, k + m) is None or _objective(table, basis, phase1) > 0:
        return float('inf')
    for i, b in enumerate(basis):     # drive artificial variables out of the basis
        if b >= k:
            col = next((j for j in range(k) if table[i][j] != 0), None)
            if col is not None:
                _pivot(table, basis, i, col)
    keep = [i for i, b in enumerate(basis) if b < k]
    table = [table[i][:k] + [table[i][-1]] for i in keep]
    basis = [basis[i] for i in keep]
    if _pivot_to_optimum(table, basis, cost, k) is None:
        return None
    return _objective(table, basis, cost)


def _objective(table, basis, cost) -> Fraction:
    return sum((cost[b] * table[i][-1] for i, b in enumerate(basis)), Fraction(0))


def _pivot(table, basis, row, col) -> None:
    p = table[row][col]
    table[row] = [x / p for x in table[row]]
    for i, r in enumerate(table):
        if i != row and r[col] != 0:
            f = r[col]
            table[i] = [a - f * b for a, b in zip(r, table[row])]
    basis[row] = col


def _pivot_to_optimum(table, basis, cost, ncols):
    while True:
        duals = [cost[j] - sum((cost[b] * table[i][j] for i, b in enumerate(basis)), Fraction(0))
                 for j in range(ncols)]
        col = next((j for j in range(ncols) if duals[j] < 0), None)
        if col is None:
            return table
        ratios = [(r[-1] / r[col], basis[i], i) for i, r in enumerate(table) if r[col] > 0]
        if not ratios:
            return None
        _pivot(table, basis, min(ratios)[2], col)


def implied(cond: Expr, facts, degree2: bool = True) -> bool:
    """facts (each >= 0) |- cond >= 0 over the integers.  Sound, not complete.

    With ``degree2``, an unproved ``cond`` is tried again with products of pairs of
    facts (a Positivstellensatz certificate of degree two, for non-linear monomials)
    and with the integer rounding of sums of pairs of linear facts (Chvatal-Gomory
    cuts: 2K - 2P - 1 >= 0 gives K - P - 1 >= 0 over the integers).
    """
    cond = normalize(cond)
    if cond.is_number:
        return bool(cond >= 0)
    facts = [normalize(f) for f in facts]
    if cond in facts or cond.is_nonnegative:
        return True
    symbols = set(cond.free_symbols).union(*(f.free_symbols for f in facts))
    facts = _connected(cond, facts + assumption_facts(symbols))
    if _lp_implies(cond, facts):
        return True
    if not degree2:
        return False
    wanted = _monomials(cond) - {1} - set(symbols)
    products = [p for p in (expand(a * b) for a, b in combinations_with_replacement(facts, 2))
                if _monomials(p) & wanted]
    linear = [f for f in facts if not _monomials(f) - {1} - set(symbols)]
    cuts = [normalize(a + b) for a, b in combinations(linear, 2)]
    return _lp_implies(cond, facts + products + cuts)


def within(expr: Expr, facts: list) -> Expr:
    """``expr`` with each Min / Max whose order the facts decide (exact LP, :func:`implied`)
    replaced by that argument: in the interior a window's clipped size is its full size."""
    def first(e):
        for a in e.args:
            if all(b == a or holds(b - a if isinstance(e, Min) else a - b, facts) for b in e.args):
                return a
        return e
    return expr.replace(lambda e: isinstance(e, (Min, Max)), first)


def holds(e: Expr, facts: list) -> bool:
    """facts |- e >= 0, False when undecided (not a linear question either)."""
    try:
        return implied(expand(e), facts)
    except ValueError:     # not a linear question: undecided
        return False


def _connected(cond: Expr, facts: list[Expr]) -> list[Expr]:
    """The facts linked to ``cond`` through shared symbols.  A Farkas certificate for a
    satisfiable system never needs the others, so dropping them keeps the LP sound and small."""
    reach, left, grew = set(cond.free_symbols), list(facts), True
    while grew:
        grew = False
        for f in list(left):
            if f.free_symbols & reach:
                reach |= f.free_symbols
                left.remove(f)
                grew = True
    return [f for f in facts if f not in left]


def _monomials(e: Expr) -> set:
    return {t.as_coeff_Mul()[1] for t in expand(e).as_ordered_terms()}


def _sorted(exprs) -> tuple:
    return tuple(sorted(set(exprs), key=default_sort_key))


def _normalize_div(expr: Expr, modulus: Expr) -> tuple[Expr, Expr] | None:
    """Canonical (e, s) for s | e, or None when it always holds."""
    expr, modulus = expand(expr), sympify(modulus)
    if modulus.could_extract_minus_sign():
        modulus = -modulus
    if modulus == 1:
        return None
    expr = Add(*(t for t in Add.make_args(expr) if not multiple_of(t, modulus)))   # s | s k t + e <=> s | e
    if expr == 0:
        return None
    if modulus.is_Integer:
        const, rest = expr.as_coeff_Add()
        expr = rest + const % modulus
    if _orientation(-expr) < _orientation(expr):
        expr = expand(-expr)
    return expr, modulus


def multiple_of(term: Expr, modulus: Expr) -> bool:
    """``term`` = ``modulus`` times an integer (every symbol of the quotient is an integer)."""
    q = together(term / modulus)
    num, den = fraction(q)
    return den == 1 and num.as_coeff_Mul()[0].is_Integer and all(v.is_integer for v in num.free_symbols)


def _orientation(expr: Expr) -> tuple:
    """Prefer the sign of an expression with fewer negative terms (``i + P - D m`` over ``D m - P - i``)."""
    negatives = sum(t.could_extract_minus_sign() for t in expr.as_ordered_terms())
    return negatives, default_sort_key(expr)


# ----------------------------------------------------------------------------- the Z-sum

@dataclass(frozen=True)
class ZSum:
    """sum over ``vars`` in Z^k of body * [c >= 0 for c in conds] * [s | e for (e, s) in divs]."""

    vars: tuple
    body: Expr
    conds: tuple = ()
    divs: tuple = ()

    @staticmethod
    def make(vars, body, conds=(), divs=()) -> ZSum:
        """Build with canonical constraints (normalized, sorted, duplicates and true ones removed)."""
        norm = [normalize(c) for c in conds]
        for c in norm:
            if c.is_number and c < 0:
                return ZSum(tuple(vars), S.Zero, (), ())
        ds = [d for d in (_normalize_div(e, s) for e, s in divs) if d is not None]
        return ZSum(tuple(vars), canon(sympify(body)), _sorted(c for c in norm if not c.is_number),
                    tuple(sorted(set(ds), key=default_sort_key)))

    def replace(self, mapping: dict, vars=None) -> ZSum:
        """Substitute ``mapping`` in body and constraints (no side condition: callers check)."""
        def sub(e):
            return expand(e.xreplace(mapping)) if not isinstance(e, Expr) or e.is_Atom else e.xreplace(mapping)
        return ZSum.make(self.vars if vars is None else vars, sub(self.body),
                         [expand(c.xreplace(mapping)) for c in self.conds],
                         [(expand(e.xreplace(mapping)), s.xreplace(mapping)) for e, s in self.divs])

    @property
    def free_symbols(self) -> set:
        syms = set(self.body.free_symbols).union(*(c.free_symbols for c in self.conds))
        syms = syms.union(*(e.free_symbols | s.free_symbols for e, s in self.divs))
        return syms - set(self.vars)

    def constraints_on(self, var: Symbol) -> tuple:
        return tuple(c for c in self.conds if var in c.free_symbols)

    def __str__(self) -> str:
        parts = [f'[{c} >= 0]' for c in self.conds] + [f'[{s} | {e}]' for e, s in self.divs]
        over = ', '.join(map(str, self.vars))
        return f'sum_{{{over}}} {self.body} ' + ' '.join(parts) if self.vars else f'{self.body} ' + ' '.join(parts)


# ----------------------------------------------------------------------------- rules

def rule(title: str):
    """Name a rule; the title is what a proof prints for the step."""
    def mark(fn):
        fn.title = title
        return fn
    return mark


@rule('Sum limits to constraints (Karr condition checked)')
def from_sum(expr: Expr, hyps) -> tuple[ZSum, str]:
    """SymPy Sum(Piecewise((g, conds), (0, True)), limits...) -> ZSum."""
    vars, conds, body, notes = [], [], sympify(expr), []
    hyps = list(hyps)
    while True:
        body = _pull_into_sum(body)
        if not isinstance(body, Sum):
            break
        for v, lo, hi in body.limits:
            if not implied(hi - lo + 1, hyps + conds):
                raise RuleRefused(from_sum.title, f'{hi} - ({lo}) + 1 >= 0 does not follow from the hypotheses')
            notes.append(f'{lo} <= {v} <= {hi}')
            vars.append(v)
            conds += [v - lo, hi - v]
        body = body.function
    factors, divs = [], []
    for fac in Mul.make_args(body):
        if isinstance(fac, Piecewise):
            fac, cs, ds = _split_piecewise(fac, set(expr.free_symbols) | set(vars))
            conds += cs
            divs += ds
        factors.append(fac)
    z = ZSum.make(vars, Mul(*factors), conds, divs)
    return z, 'limits ' + ', '.join(notes) if notes else 'no limits'


def _pull_into_sum(body: Expr) -> Expr:
    """c * Sum(g) -> Sum(c * g) when c is free of the summation variables."""
    if isinstance(body, Mul):
        sums = [t for t in body.args if isinstance(t, Sum)]
        if len(sums) > 1:
            raise RuleRefused(from_sum.title, 'a product of several sums: flatten it first')
        if sums:
            inner = sums[0]
            rest = Mul(*[t for t in body.args if t is not inner])
            if rest.free_symbols & set(inner.variables):
                raise RuleRefused(from_sum.title, 'factor shares a summation variable')
            return Sum(rest * inner.function, *inner.limits)
    return body


def _split_piecewise(pw: Piecewise, scope: set):
    if len(pw.args) != 2 or pw.args[1] != (0, True):
        raise RuleRefused(from_sum.title, f'only Piecewise((g, cond), (0, True)) is an indicator: {pw}')
    value, cond = pw.args[0]
    if not cond.free_symbols <= scope:
        raise RuleRefused(from_sum.title, f'condition {cond} mentions a variable bound elsewhere')
    conds, divs = [], []
    for rel in (cond.args if isinstance(cond, And) else (cond,)):
        if isinstance(rel, Eq):
            if not (isinstance(rel.lhs, Mod) and rel.rhs == 0):
                raise RuleRefused(from_sum.title, f'equality {rel} is not a divisibility Eq(Mod(e, s), 0)')
            divs.append(tuple(rel.lhs.args))
        elif rel is S.true:
            continue
        else:
            conds.append(ge0(rel))
    return value, conds, divs


@rule('change of summation variable (bijection of Z)')
def substitute(z: ZSum, var: Symbol, new: Symbol, expr: Expr) -> tuple[ZSum, str]:
    """var -> expr where expr = +-new + c, c free of var and new."""
    expr = expand(expr)
    coeff = expr.coeff(new)
    rest = expand(expr - coeff * new)
    if var not in z.vars:
        raise RuleRefused(substitute.title, f'{var} is not a summation variable')
    if coeff not in (1, -1) or new in rest.free_symbols:
        raise RuleRefused(substitute.title, f'{var} -> {expr} is not +-{new} + c')
    if rest.free_symbols & set(z.vars) or new in z.vars or new in z.free_symbols:
        raise RuleRefused(substitute.title, f'{new} clashes with a variable of the sum')
    vars = tuple(new if v == var else v for v in z.vars)
    return z.replace({var: expr}, vars), f'{var} = {expr}'


def linear_symbols(expr: Expr) -> set:
    """Symbols of ``expr`` outside Indexed objects (those a delta can be solved for)."""
    return expr.xreplace({ix: Dummy('indexed') for ix in expr.atoms(Indexed)}).free_symbols


def solvable_vars(z: ZSum, lin: Expr) -> list:
    """Summation variables that ``lin == 0`` determines: linear, integer coefficient free of the others."""
    inside = set().union(*(ix.free_symbols for ix in lin.atoms(Indexed)))
    out = []
    for v in z.vars:
        if v not in linear_symbols(lin) or v in inside:
            continue
        c = lin.coeff(v)
        if c != 0 and not (c.free_symbols & set(z.vars)) and not expand(lin - c * v).has(v):
            out.append(v)
    return out


def _delta_variable(z: ZSum, lin: Expr, prefer, among=None) -> Symbol | None:
    cands = [v for v in solvable_vars(z, lin) if among is None or v in among]
    if not cands:
        return None
    order = {v: i for i, v in enumerate(prefer)}
    return min(cands, key=lambda v: (order.get(v, len(order)), lin.coeff(v) not in (1, -1), z.vars.index(v)))


@rule('Kronecker-delta elimination (divisibility recorded)')
def eliminate_delta(z: ZSum, prefer=(), among=None) -> tuple[ZSum, str]:
    """sum_{v in Z} g(v) KD(c v + r, t) = [c | t - r] g((t - r) / c), c a nonzero integer.  With
    ``among``, only those summation variables are eliminated (the other deltas stay)."""
    for delta in Mul.make_args(z.body):
        if not isinstance(delta, KroneckerDelta):
            continue
        lin = expand(delta.args[0] - delta.args[1])
        var = _delta_variable(z, lin, prefer, among)
        if var is None:
            continue
        c = lin.coeff(var)
        if not (c.is_integer and (c.is_nonzero or c.is_positive or c.is_negative)):
            raise RuleRefused(eliminate_delta.title, f'coefficient {c} of {var} is not a nonzero integer')
        rest = expand(lin - c * var)
        solution = expand(-rest / c)
        body = Mul(*[f for f in Mul.make_args(z.body) if f is not delta])
        vars = tuple(v for v in z.vars if v != var)
        shrunk = ZSum(vars, body, z.conds, z.divs + ((rest, c),)).replace({var: solution}, vars)
        recorded = _normalize_div(rest, c)
        note = f'{var} = {solution}' + (f', recorded {recorded[1]} | {recorded[0]}' if recorded else '')
        return shrunk, note
    raise RuleRefused(eliminate_delta.title, 'no Kronecker delta involving a summation variable')


def lattice_point(z: ZSum, var: Symbol, new: Symbol) -> tuple[Expr, tuple]:
    """(value, (e, s)): the divisibility constraint s | +-var + r of ``z`` and var = s new - +-r."""
    found = [(e, s) for e, s in z.divs
             if var in e.free_symbols and e.coeff(var) in (1, -1) and not expand(e - e.coeff(var) * var).has(var)]
    if not found:
        raise RuleRefused(lattice.title, f'no divisibility constraint s | +-{var} + r')
    e, s = found[0]
    if not s.is_positive or not s.is_integer:
        raise RuleRefused(lattice.title, f'modulus {s} is not a positive integer')
    rest = expand(e - e.coeff(var) * var)
    return (expand(s * new - rest) if e.coeff(var) == 1 else expand(s * new + rest)), (e, s)


@rule('lattice parametrization of a divisibility constraint')
def lattice(z: ZSum, var: Symbol, new: Symbol) -> tuple[ZSum, str]:
    """sum_v h(v) [s | v + r] = sum_u h(s u - r) for s >= 1 (v has coefficient 1 in v + r)."""
    value, used = lattice_point(z, var, new)
    if new in z.vars or new in z.free_symbols:
        raise RuleRefused(lattice.title, f'{new} clashes with a variable of the sum')
    vars = tuple(new if v == var else v for v in z.vars)
    divs = tuple(d for d in z.divs if d != used)
    return ZSum(vars, z.body, z.conds, divs).replace({var: value}, vars), f'{var} = {value}'


@rule('residue split of a free index (i = s t + r, 0 <= r < s)')
def split_residue(z: ZSum, var: Symbol, modulus: Expr, quotient: Symbol, residue: Symbol) -> tuple[ZSum, str]:
    """The sum at i = s t + r: the divisibilities modulo s then lose their multiples of s (s | s k t + e
    <=> s | e), so for a fixed residue r they no longer depend on t (polyphase decomposition).  Every
    integer i has exactly one such (t, r) with 0 <= r < s; the caller loops over both."""
    if var in z.vars:
        raise RuleRefused(split_residue.title, f'{var} is a summation variable, not a free index')
    if not (sympify(modulus).is_integer and sympify(modulus).is_positive):
        raise RuleRefused(split_residue.title, f'the modulus {modulus} is not a positive integer')
    clash = {quotient, residue} & (set(z.vars) | z.free_symbols)
    if clash or not (quotient.is_integer and residue.is_integer):
        raise RuleRefused(split_residue.title, f'{quotient}, {residue} must be fresh integer symbols')
    return z.replace({var: modulus * quotient + residue}), f'{var} = {modulus} {quotient} + {residue}'


@rule('drop constraints implied by the others and the hypotheses')
def drop_implied(z: ZSum, hyps) -> tuple[ZSum, str]:
    """Remove each constraint that follows linearly from the remaining ones and the hypotheses."""
    kept = list(z.conds)
    dropped = []
    for c in z.conds:
        others = [k for k in kept if k != c]
        if implied(c, others + list(hyps), degree2=False):
            kept = others
            dropped.append(c)
    out = ZSum.make(z.vars, z.body, kept, z.divs)
    return out, 'dropped ' + ', '.join(f'{c} >= 0' for c in dropped) if dropped else 'nothing to drop'


@rule('instantiate symbols')
def instantiate(z: ZSum, values: dict) -> tuple[ZSum, str]:
    """Substitute values for free symbols (sizes, strides); summation variables are untouched."""
    if set(values) & set(z.vars):
        raise RuleRefused(instantiate.title, 'cannot instantiate a summation variable')
    return z.replace({k: sympify(v) for k, v in values.items()}), ', '.join(f'{k} = {v}' for k, v in values.items())


@rule('count of the integer points of a box')
def count_box(z: ZSum, hyps) -> tuple[Expr, str]:
    """sum_{v in Z^k} prod [a v + r >= 0] = prod_v (min upper - max lower + 1) when each constraint
    bounds a single variable with a coefficient of known sign.  A factor whose non-emptiness does not
    follow from the hypotheses is wrapped in Max(0, .)."""
    if z.body != 1 or z.divs:
        raise RuleRefused(count_box.title, 'the body must be 1 and there must be no divisibility constraint')
    total, notes = S.One, []
    for v in z.vars:
        lows, highs = [], []
        for c in z.constraints_on(v):
            a, rest = c.coeff(v), expand(c - c.coeff(v) * v)
            if rest.free_symbols & set(z.vars) or not (a.is_positive or a.is_negative):
                raise RuleRefused(count_box.title, f'{c} >= 0 is not a bound on {v} alone')
            (lows if a.is_positive else highs).append((a, rest))
        if not lows or not highs:
            raise RuleRefused(count_box.title, f'{v} is unbounded')
        lo = Max(*[ceiling(-r / a) for a, r in lows])
        hi = Min(*[floor(r / -a) for a, r in highs])
        nonempty = all(implied(expand(-b * r + a * t), hyps) for a, r in lows for b, t in highs)
        total *= (hi - lo + 1) if nonempty else Max(0, hi - lo + 1)
        notes.append(f'{lo} <= {v} <= {hi}' + ('' if nonempty else ' (possibly empty)'))
    return total, '; '.join(notes)


def exact_cover(target: Expr, window: Symbol, window_box: tuple, tap: Symbol, tap_box: tuple,
                extent: Expr) -> tuple | None:
    """Conditions on the sizes under which ``target`` = a window + tap + c, as (window, tap) range over
    their boxes (lo, hi), reaches every point of [0, extent - 1] exactly once: the division algorithm,
    a = the length of the tap box (windows one after the other, none overlapping, no gap), the first
    window's first tap at 0, the last window's last tap at extent - 1 (average pooling with kernel =
    stride, no padding and no remainder: its backward stores, no zeroing, no adds).  None when the
    target is not of that shape (a tap step other than 1, a window step that depends on either).
    Checked against counting, claim pool.avg-tiling.

    >>> from sympy import symbols
    >>> o, m, S, K, P, O, H = symbols('o m S K P O H', integer=True)
    >>> exact_cover(S * o + m - P, o, (0, O - 1), m, (0, K - 1), H)
    (Eq(K, S), Eq(P, 0), Eq(K + O*S - P - S, H))
    """
    target = expand(target)
    step = target.diff(window)
    if target.diff(tap) != 1 or step.free_symbols & {window, tap}:
        return None
    (wlo, whi), (ulo, uhi) = window_box, tap_box
    first, last = target.subs({window: wlo, tap: ulo}), target.subs({window: whi, tap: uhi})
    return Eq(uhi - ulo + 1, step), Eq(-first, 0), Eq(expand(last + 1), extent)


# ----------------------------------------------------------------------------- equality

def compare(left: ZSum, right: ZSum, hyps) -> tuple[bool, str]:
    """Equal for every value of the free symbols that satisfies ``hyps``.

    Same summation variables, bodies equal after expansion, each constraint set
    implied by the other (with the hypotheses), same divisibility constraints.
    """
    if set(left.vars) != set(right.vars):
        return False, f'summation variables differ: {left.vars} vs {right.vars}'
    if expand(canon(left.body) - canon(right.body)) != 0:
        return False, f'bodies differ: {left.body} vs {right.body}'
    hyps = list(hyps)
    for a, b in ((left, right), (right, left)):
        for c in a.conds:
            if c not in b.conds and not implied(c, list(b.conds) + hyps):
                return False, f'constraint {c} >= 0 does not follow from the other side'
    if set(left.divs) != set(right.divs):
        return False, f'divisibility constraints differ: {left.divs} vs {right.divs}'
    return True, 'same body, mutually implied constraints, same divisibility'


def zero_padded(z: ZSum, among: set, index: Expr, extent: Expr, hyps) -> bool:
    """Whether the constraints of ``z`` that involve a variable of ``among`` say exactly that ``index``
    lies in [0, extent - 1] and each summation variable of ``among`` in its own box (the constraints on
    it alone), given the other constraints and ``hyps``.  Then ``z`` equals the sum over those boxes of
    its body read at ``index`` from the array extended by zeros: a window's sum is the sum over its
    column taps of the zero-padded rows' sums (the C kernels load a row's columns once, masked by the
    array's bounds, and take every tap from registers).  Sound (mutual implication), not complete.

    >>> from sympy import symbols
    >>> o, m, r, S, K, P, H = symbols('o m r S K P H', integer=True)
    >>> z = ZSum.make((m, r), Symbol('x'), [m, K - 1 - m, S * o + m - P, H - 1 - S * o - m + P, r, 2 - r])
    >>> zero_padded(z, {o, m}, S * o + m - P, H, [])
    True
    >>> zero_padded(z, {o, m}, S * o + m - P, H - 1, [])   # not the array's bounds
    False
    """
    mine = [c for c in z.conds if c.free_symbols & among]
    scope = set(z.vars) | set(among)
    own = [c for c in mine if len(c.free_symbols & scope) == 1 and c.free_symbols & scope <= set(z.vars)]
    padded = [c for c in z.conds if c not in mine] + own + [expand(index), expand(extent - 1 - index)]
    return compare(z, ZSum.make(z.vars, z.body, padded, z.divs), hyps)[0]


# ----------------------------------------------------------------------------- concrete evaluation

def bounds(z: ZSum, values: dict) -> dict:
    """Integer box of every summation variable once the free symbols have ``values``.

    Interval propagation over the linear constraints; raises ValueError when a
    variable is unbounded (the sum would be infinite).
    """
    conds = [expand(c.xreplace(values)) for c in z.conds]
    box = {v: [None, None] for v in z.vars}
    for _ in range(4 * len(z.vars) + 2):
        changed = False
        for c in conds:
            for v in z.vars:
                changed |= _tighten(box, c, v)
        if not changed:
            break
    loose = [v for v, (lo, hi) in box.items() if lo is None or hi is None]
    if loose:
        raise ValueError(f'unbounded summation variables {loose} in {z}')
    return {v: (lo, hi) for v, (lo, hi) in box.items()}


def _tighten(box: dict, cond: Expr, var: Symbol) -> bool:
    a = cond.coeff(var)
    if a == 0 or not a.is_number:
        return False
    rest = expand(cond - a * var)
    hi, terms = rest.as_coeff_Add()
    for t in terms.as_ordered_terms() if terms != 0 else []:
        c, sym = t.as_coeff_Mul()
        bound = box[sym][1 if c > 0 else 0] if sym in box else None
        if bound is None:
            return False
        hi += c * bound
    # a*var + rest >= 0 with rest <= hi:  var >= ceil(-hi/a) (a > 0)  or  var <= floor(hi/-a) (a < 0)
    a, hi = int(a), int(hi)
    new, side = (-(hi // a), 0) if a > 0 else (hi // -a, 1)
    old = box[var][side]
    better = old is None or (new > old if side == 0 else new < old)
    if better:
        box[var][side] = new
    return better


def points(z: ZSum, values: dict):
    """Yield every point of Z^k (as a dict) where the constraints hold, free symbols at ``values``."""
    values = {k: sympify(v) for k, v in values.items()}
    box = bounds(z, values)
    conds = [expand(c.xreplace(values)) for c in z.conds]
    divs = [(expand(e.xreplace(values)), s.xreplace(values)) for e, s in z.divs]
    yield from _enumerate(list(z.vars), box, {}, conds, divs)


def _enumerate(vars, box, fixed, conds, divs):
    if not vars:
        if all(c.xreplace(fixed) >= 0 for c in conds) and all(e.xreplace(fixed) % s == 0 for e, s in divs):
            yield dict(fixed)
        return
    v, rest = vars[0], vars[1:]
    for value in range(box[v][0], box[v][1] + 1):
        fixed[v] = S(value)
        yield from _enumerate(rest, box, fixed, conds, divs)
    fixed.pop(v, None)


def evaluate(z: ZSum, values: dict) -> Expr:
    """The finite sum at concrete free symbols, as a SymPy expression (an oracle for small sizes)."""
    values = {k: sympify(v) for k, v in values.items()}
    body = z.body.xreplace(values)
    return sum((canon(body.xreplace(p)) for p in points(z, values)), S.Zero)


__all__ = [
    'RuleRefused',
    'ZSum',
    'assumption_facts',
    'bounds',
    'canon',
    'compare',
    'count_box',
    'drop_implied',
    'eliminate_delta',
    'evaluate',
    'from_sum',
    'ge0',
    'implied',
    'instantiate',
    'lattice',
    'linear_symbols',
    'multiple_of',
    'normalize',
    'points',
    'rule',
    'solvable_vars',
    'split_residue',
    'substitute',
]
