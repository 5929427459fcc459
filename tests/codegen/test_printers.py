"""The printers, pinned by exact strings (C float, C double, NumPy) for every node the lowering emits, and the
C integer-division helpers checked against Python's floor division, negative numerators included."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from sympy import Eq, Max, Min, Mod, Piecewise, Rational, Symbol, ceiling, exp, floor, oo, symbols

from codegen.ir import ArrayRef, CeilDiv, ExactDiv, FloorDiv, IsNaN
from codegen.printers import CPrinter, NumpyPrinter, identifier

A, B, N = symbols('a b n', integer=True)
PRIMED = Symbol("i0'", integer=True)
X = Symbol('x', real=True)
GENERATED_C = Path(__file__).resolve().parents[2] / 'generated' / 'c'

# expression: (C float, C double, NumPy)
CASES = [
    (FloorDiv(A - 3, B), 'bp_floordiv(a - 3, b)', 'bp_floordiv(a - 3, b)', '((a - 3) // (b))'),
    (CeilDiv(A, 2), 'bp_ceildiv(a, 2)', 'bp_ceildiv(a, 2)', '(-((-(a)) // (2)))'),
    (ExactDiv(A + N, B), '((a + n) / b)', '((a + n) / b)', '((a + n) // (b))'),
    (ExactDiv(A, 1), 'a', 'a', 'a'),
    (floor((A - 1) / B), 'bp_floordiv(a - 1, b)', 'bp_floordiv(a - 1, b)', '((a - 1) // (b))'),
    (ceiling((A + 2) / 3), 'bp_ceildiv(a + 2, 3)', 'bp_ceildiv(a + 2, 3)', '(-((-(a + 2)) // (3)))'),
    (Min(A, B, N), 'bp_min(a, bp_min(b, n))', 'bp_min(a, bp_min(b, n))', 'numpy.minimum(a, numpy.minimum(b, n))'),
    (Max(A, 0), 'bp_max(0, a)', 'bp_max(0, a)', 'numpy.maximum(0, a)'),
    (Piecewise((0, X < 0), (X, True)), '(x < 0 ? 0 : x)', '(x < 0 ? 0 : x)', 'numpy.where(numpy.less(x, 0), 0, x)'),
    (1 / (1 + exp(-X)), '((float)1/(float)(1 + expf(-x)))', '((double)1/(double)(1 + exp(-x)))',
     '(1/(1 + numpy.exp(-x)))'),
    (Rational(1, 3) * X, '((float)(x)/(float)(3))', '((double)(x)/(double)(3))', '((1/3))*x'),
    (X**2, '(x*x)', '(x*x)', '(x*x)'),
    (PRIMED + 1, 'i0_ + 1', 'i0_ + 1', 'i0_ + 1'),
    (Mod(A - PRIMED, B), '((a - i0_) % b)', '((a - i0_) % b)', '((a - i0_) % (b))'),
    (Eq(Mod(A, B), 0), '((a) % b) == 0', '((a) % b) == 0', 'numpy.equal(((a) % (b)), 0)'),
    (-oo, '(-INFINITY)', '(-INFINITY)', '-numpy.inf'),
]


@pytest.mark.parametrize('expr,c_float,c_double,numpy_text', CASES, ids=[str(c[0]) for c in CASES])
def test_printed_text(expr, c_float, c_double, numpy_text):
    assert CPrinter('float').doprint(expr) == c_float
    assert CPrinter('double').doprint(expr) == c_double
    assert NumpyPrinter().doprint(expr) == numpy_text


def test_array_reference_and_nan_test_print_in_c():
    assert CPrinter().doprint(ArrayRef(Symbol('input'), N * A + PRIMED)) == 'input[a*n + i0_]'
    assert CPrinter('float').doprint(IsNaN(X)) == 'isnan(x)'


def test_piecewise_on_scalars_prints_a_python_conditional():
    """Only the branch taken is evaluated (no 1/0 in an unused divisor)."""
    printer = NumpyPrinter({'scalars': frozenset({'a', 'b'})})
    assert printer.doprint(Piecewise((A, A < B), (1 / B, True))) == '(a if (a < b) else (1/b))'
    assert printer.doprint(Eq(Mod(A, B), 0)) == '(((a) % (b)) == 0)'
    assert NumpyPrinter().doprint(Piecewise((A, A < B), (B, True))) == 'numpy.where(numpy.less(a, b), a, b)'


def test_piecewise_without_a_default_branch_is_refused_in_c():
    with pytest.raises(ValueError, match='default'):
        CPrinter().doprint(Piecewise((X, X > 0), (-X, X < 0)))


def test_primed_symbols_become_identifiers():
    assert identifier("m0'") == 'm0_' and identifier("n'") == 'n_' and identifier('o1') == 'o1'
    assert CPrinter().doprint(Symbol("g'") * Symbol('KG') + Symbol("k'")) == "KG*g_ + k_"


def test_ir_divisions_fold_constants_with_floor_and_ceiling():
    assert FloorDiv(-7, 2) == -4 and CeilDiv(-7, 2) == -3 and FloorDiv(7, 2) == 3 and CeilDiv(7, 2) == 4
    assert FloorDiv(A, 1) == A and CeilDiv(A, 1) == A


HELPER = re.compile(r'^static inline int64_t bp_(floordiv|ceildiv|min|max)\(.*$', re.M)
CHECK = r'''
#include <stdint.h>
#include <stdio.h>
%s
int main(void) {
    int bad = 0;
    for (int64_t a = -60; a <= 60; ++a)
        for (int64_t b = 1; b <= 7; ++b) {
            int64_t q = a / b - ((a %% b != 0) && (a < 0));
            int64_t c = q + (a %% b != 0);
            if (bp_floordiv(a, b) != q || bp_ceildiv(a, b) != c) { printf("%%ld %%ld\n", (long)a, (long)b); bad = 1; }
        }
    return bad || bp_min(-3, 2) != -3 || bp_max(-3, 2) != 2;
}
'''


@pytest.mark.skipif(shutil.which('cc') is None, reason='no C compiler')
def test_c_division_helpers_round_toward_minus_and_plus_infinity(tmp_path):
    source = (GENERATED_C / 'bpgen_conv2d.c').read_text()
    helpers = [m.group(0) for m in HELPER.finditer(source)]
    assert len(helpers) == 4, 'bp_floordiv, bp_ceildiv, bp_min, bp_max defined in the generated C'
    (tmp_path / 'check.c').write_text(CHECK % '\n'.join(helpers))
    subprocess.run(['cc', '-std=c99', '-Wall', '-Werror', '-o', str(tmp_path / 'check'), str(tmp_path / 'check.c')],
                   check=True, capture_output=True)
    run = subprocess.run([str(tmp_path / 'check')], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout


def test_c_printer_parenthesizes_conjunctions_inside_a_disjunction():
    """C's && binds tighter than ||; GCC's -Wparentheses (-Werror in the build tests) still asks."""
    from sympy import And, Ne, Or
    a, b, c = (Symbol(n, integer=True) for n in 'abc')
    assert CPrinter().doprint(Or(And(a >= 0, b >= 0), Ne(c, 0))) == '(a >= 0 && b >= 0) || c != 0'
