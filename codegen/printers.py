"""Printers: small subclasses of SymPy's C99 and NumPy printers, one _print_<Node> per node.

Index arithmetic is int64 in C; the exact and rounding divisions of the
lowering print as helper calls defined in every generated C file (bp_floordiv,
bp_ceildiv: correct for negative numerators, unlike C's '/').  Piecewise prints
as one nested conditional.  Identifiers: a prime (the lecture's i', m') becomes
a trailing underscore.
"""
from __future__ import annotations

from sympy import And, Integer, default_sort_key, expand, fraction, together
from sympy.codegen.ast import float32, real
from sympy.printing.c import C99CodePrinter
from sympy.printing.numpy import NumPyPrinter
from sympy.printing.precedence import precedence

from .ir import CeilDiv, FloorDiv


def identifier(name: str) -> str:
    return name.replace("'", '_')


class IndexPrinting:
    """What both printers share: identifiers, nested binary min/max, floor and ceiling of a quotient
    as FloorDiv / CeilDiv (each printer says how to divide), squares as products."""

    def _print_Symbol(self, expr):
        return identifier(expr.name)

    def _nest(self, fn, args):
        out = self._print(args[-1])
        for a in reversed(args[:-1]):
            out = f'{fn}({self._print(a)}, {out})'
        return out

    def _print_floor(self, expr):
        num, den = fraction(together(expr.args[0]))
        return self._print(FloorDiv(expand(num), den))

    def _print_ceiling(self, expr):
        num, den = fraction(together(expr.args[0]))
        return self._print(CeilDiv(expand(num), den))

    def _square(self, base) -> str:
        b = self.parenthesize(base, 100)
        return f'({b}*{b})'


class CPrinter(IndexPrinting, C99CodePrinter):
    """C99 for one real type ('float' or 'double'); integers are int64_t."""

    def __init__(self, real_type: str = 'double'):
        settings = {'type_aliases': {real: float32}} if real_type == 'float' else {}
        super().__init__(settings)
        self.real_type = real_type

    def _print_Symbol(self, expr):
        if expr.name == 'LANES':
            return f'BP_LANES_{self.suffix.upper()}'
        if expr.name == 'VREGS':
            return 'BP_VREGS'
        if expr.name == 'THREADS':
            return 'bp_threads()'
        return super()._print_Symbol(expr)

    def _print_Or(self, expr):
        """Each conjunction in parentheses: C's && binds tighter already, but GCC's -Wparentheses asks."""
        return ' || '.join(f'({self._print(a)})' if isinstance(a, And) else self.parenthesize(a, precedence(expr))
                           for a in sorted(expr.args, key=default_sort_key))

    def _print_ArrayRef(self, expr):
        array, flat = expr.args
        return f'{self._print(array)}[{self._print(flat)}]'

    def _print_FloorDiv(self, expr):
        return f'bp_floordiv({self._print(expr.args[0])}, {self._print(expr.args[1])})'

    def _print_CeilDiv(self, expr):
        return f'bp_ceildiv({self._print(expr.args[0])}, {self._print(expr.args[1])})'

    def _print_ExactDiv(self, expr):
        return f'(({self._print(expr.args[0])}) / {self.parenthesize(expr.args[1], 100)})'

    def _print_LatticeStart(self, expr):
        return 'bp_lattice_start(' + ', '.join(self._print(a) for a in expr.args) + ')'

    def _print_IGcd(self, expr):
        return f'bp_gcd({self._print(expr.args[0])}, {self._print(expr.args[1])})'

    def _print_Mod(self, expr):
        return f'(({self._print(expr.args[0])}) % {self.parenthesize(expr.args[1], 100)})'

    def _print_Min(self, expr):
        return self._nest('bp_min', expr.args)

    def _print_Max(self, expr):
        return self._nest('bp_max', expr.args)

    def _print_Piecewise(self, expr):
        *pairs, (last, cond) = expr.args
        if cond is not True and cond != True:  # noqa: E712 (SymPy true)
            raise ValueError(f'Piecewise without a default branch: {expr}')
        out = self._print(last)
        for value, c in reversed(pairs):
            out = f'({self._print(c)} ? {self._print(value)} : {out})'
        return out

    def _print_Pow(self, expr):
        base, exp = expr.args
        if exp == 2:
            return self._square(base)
        if exp == -1:
            return f'(({self.real_type})1/({self.real_type})({self._print(base)}))'
        return super()._print_Pow(expr)

    def _print_Mul(self, expr):
        """A quotient divides in the real type (index quotients are ExactDiv, never a Mul)."""
        num, den = fraction(expr, exact=True)
        if den != 1:
            return f'(({self.real_type})({self._print(num)})/({self.real_type})({self._print(den)}))'
        return super()._print_Mul(expr)

    @property
    def suffix(self) -> str:
        return 'f' if self.real_type == 'float' else 'd'

    def _print_VLoad(self, expr):
        array, flat, stride = expr.args
        return f'bp_vload_{self.suffix}({self._print(array)} + ({self._print(flat)}), {self._print(stride)})'


    def _print_LaneMask(self, expr):
        return f'bp_lane_mask_{self.suffix}({self._print(expr.args[0])}, {self._print(expr.args[1])})'

    def _print_VLoadMasked(self, expr):
        array, flat, stride, mask = (self._print(a) for a in expr.args)
        return f'bp_vload_masked_{self.suffix}({array}, {flat}, {stride}, {mask})'

    def _print_VLoadOr(self, expr):
        array, flat, stride, mask, fill = (self._print(a) for a in expr.args)
        return f'bp_vload_or_{self.suffix}({array}, {flat}, {stride}, {mask}, {fill})'

    def _print_VKeep(self, expr):
        return f'bp_vkeep_{self.suffix}({self._print(expr.args[0])}, {self._print(expr.args[1])})'

    def _print_VSelectors(self, expr):
        array, flat, stride, mask = (self._print(a) for a in expr.args)
        return f'bp_vselectors_{self.suffix}({array} + ({flat}), {stride}, {mask})'

    def _print_VMatch(self, expr):
        return f'bp_vmatch_{self.suffix}({", ".join(self._print(a) for a in expr.args)})'

    def _print_VTaps(self, expr):
        return f'bp_vtaps_{self.suffix}({", ".join(self._print(a) for a in expr.args)})'

    def _print_VNext(self, expr):
        return f'bp_vnext_{self.suffix}({", ".join(self._print(a) for a in expr.args)})'

    def _print_HSum(self, expr):
        return f'bp_hsum_{self.suffix}({self._print(expr.args[0])})'

    def _print_VSplat(self, expr):
        return f'bp_vsplat_{self.suffix}({self._print(expr.args[0])})'

    def _print_VNotFinite(self, expr):
        return f'bp_vnot_finite_{self.suffix}({self._print(expr.args[0])})'

    def _print_VAnyNaN(self, expr):
        return f'bp_vany_nan_{self.suffix}({self._print(expr.args[0])})'

    def _print_IsNaN(self, expr):
        return f'isnan({self._print(expr.args[0])})'

    def _print_Present(self, expr):
        return f'({self._print(expr.args[0])} != NULL)'

    def _print_InRange(self, expr):
        x, n = (self._print(a) for a in expr.args)
        return f'((uint64_t)({x}) < (uint64_t)({n}))'

    def _print_Infinity(self, expr):
        return 'INFINITY'

    def _print_NegativeInfinity(self, expr):
        return '(-INFINITY)'

    def _print_Rational(self, expr):
        if isinstance(expr, Integer):
            return str(expr.p)
        suffix = 'F' if self.real_type == 'float' else ''
        return f'({float(expr.p)!r}{suffix}/{float(expr.q)!r}{suffix})'


class NumpyPrinter(IndexPrinting, NumPyPrinter):
    """NumPy expressions that work on Python ints and on integer arrays alike.

    ``scalars``: names of symbols known to be Python scalars (or True: every
    symbol is); a Piecewise whose conditions use only those prints as a Python
    conditional, so the branch not taken is never evaluated (no 1/0 in an unused
    divisor), and with True, Min and Max print as Python's min and max.
    """

    _default_settings = {**NumPyPrinter._default_settings, 'scalars': frozenset()}

    def _print_FloorDiv(self, expr):
        return f'(({self._print(expr.args[0])}) // ({self._print(expr.args[1])}))'

    def _print_CeilDiv(self, expr):
        return f'(-((-({self._print(expr.args[0])})) // ({self._print(expr.args[1])})))'

    def _print_ExactDiv(self, expr):
        return f'(({self._print(expr.args[0])}) // ({self._print(expr.args[1])}))'

    def _print_Mod(self, expr):
        return f'(({self._print(expr.args[0])}) % ({self._print(expr.args[1])}))'

    def _print_KroneckerDelta(self, expr):
        return f'numpy.equal({self._print(expr.args[0])}, {self._print(expr.args[1])})'

    def _print_Min(self, expr):
        if self._settings['scalars'] is True:
            return 'min(' + ', '.join(self._print(a) for a in expr.args) + ')'
        return self._nest('numpy.minimum', expr.args)

    def _print_Max(self, expr):
        if self._settings['scalars'] is True:
            return 'max(' + ', '.join(self._print(a) for a in expr.args) + ')'
        return self._nest('numpy.maximum', expr.args)

    def _print_Piecewise(self, expr):
        *pairs, (last, cond) = expr.args
        out = self._print(last)
        for value, c in reversed(pairs):
            if self._scalar(c):
                out = f'({self._print(value)} if {self._print(c)} else {out})'
            else:
                out = f'numpy.where({self._print(c)}, {self._print(value)}, {out})'
        return out

    def _scalar(self, expr) -> bool:
        scalars = self._settings['scalars']
        return scalars is True or {s.name for s in expr.free_symbols} <= scalars

    def _print_Relational(self, expr):
        if self._scalar(expr):
            return f'({self._print(expr.lhs)} {expr.rel_op} {self._print(expr.rhs)})'
        return super()._print_Relational(expr)

    def _print_Pow(self, expr):
        base, exp = expr.args
        if exp == 2:
            return self._square(base)
        if exp == -1:
            return f'(1/{self.parenthesize(base, 100)})'
        return super()._print_Pow(expr)

    def _print_Rational(self, expr):
        if isinstance(expr, Integer):
            return str(expr.p)
        return f'({expr.p}/{expr.q})'


__all__ = ['CPrinter', 'NumpyPrinter', 'identifier']
