"""A change of a rule changes the kernel: variants of conv1d's proven rule (the kernel flipped, which makes it a
true convolution; the body scaled; the stride divisibility of the input gradient dropped) are lowered, printed,
run (NumPy module executed, C compiled with cc and called through ctypes) and compared with the changed rule
evaluated point by point, and with np.convolve."""
import ctypes
import dataclasses
import subprocess

import numpy as np
from conftest import RULE_TOLERANCE, assert_close, evaluate_rule, needs_cc
from sympy import Indexed

from codegen.generate import numpy_kernels_file
from codegen.lower import LoweringError
from codegen.lower_numpy import lower_numpy
from codegen.render import c_files, c_kernel_view, c_sources, c_symbol
from codegen.spec import rule
from derive.zsum import ZSum

SIZES = dict(N=2, G=1, CG=2, KG=3, H0=9, K0=3, S0=1, D0=1, P0=0, O0=7)


def with_term(base, name: str, change) -> object:
    """``base`` with its first term replaced by ``change(term)``."""
    (term, optional), *rest = base.terms
    return dataclasses.replace(base, name=name, terms=((change(term), optional), *rest))


def flip_kernel(term: ZSum) -> ZSum:
    weight = next(ix for ix in term.body.atoms(Indexed) if ix.base.label.name == 'w')
    *head, m = weight.indices
    size = next(s for s in rule('conv1d').inputs[1].shape[-1:])
    return ZSum(term.vars, term.body.xreplace({weight: weight.base[(*head, size - 1 - m)]}), term.conds, term.divs)


def scale(term: ZSum) -> ZSum:
    return ZSum(term.vars, 2 * term.body, term.conds, term.divs)


def numpy_kernel(kernel_rule):
    """The kernel function of the NumPy module printed for ``kernel_rule`` alone."""
    text = numpy_kernels_file([kernel_rule]).replace('from . import _runtime as runtime',
                                                     'from codegen.runtime import nprt as runtime')
    namespace = {}
    exec(compile(text, f'<numpy kernel {kernel_rule.name}>', 'exec'), namespace)
    return namespace[kernel_rule.name]


def c_kernel(kernel_rule, tmp_path):
    """The float64 C function printed for ``kernel_rule`` alone, compiled into a shared library."""
    (source,) = c_sources([kernel_rule])
    for path, text in c_files([kernel_rule]).items():
        (tmp_path / path.split('/')[-1]).write_text(text)
    library = tmp_path / f'{kernel_rule.name}.so'
    subprocess.run(['cc', '-std=c99', '-O0', '-shared', '-fPIC', '-o', str(library), str(tmp_path / f'{source}.c'),
                    '-lm'], check=True, capture_output=True)
    function = getattr(ctypes.CDLL(str(library)), c_symbol(kernel_rule.name, 'float64'))
    names = [part.split()[-1] for part in c_kernel_view(kernel_rule, 'float64')['signature'].split(', ')]

    def call(sizes, **arrays):
        arguments = {**sizes, **arrays}
        values = []
        for name in names:
            value = arguments[name]
            values.append(ctypes.c_void_p(value.ctypes.data) if isinstance(value, np.ndarray)
                          else ctypes.c_void_p(None) if value is None else ctypes.c_int64(value))
        assert function(*values) == 0
    return call


def conv_arrays(rng) -> dict:
    return dict(input=rng.standard_normal((2, 2, 9)), weight=rng.standard_normal((3, 2, 3)),
                bias=None, grad_output=rng.standard_normal((2, 3, 7)))


def inputs(kernel_rule, arrays) -> dict:
    """The arrays ``kernel_rule`` reads (the kernels take no others)."""
    return {t.name: arrays[t.name] for t in kernel_rule.inputs}


def run(kernel_rule, kernel, out_shape, arrays):
    out = np.zeros(out_shape)
    kernel(SIZES, **{kernel_rule.outputs[0].name: out}, **inputs(kernel_rule, arrays))
    return out


def printed(view: dict) -> tuple:
    """A C kernel's printed loop nests: its body and the parallel loops outlined from it."""
    return view['body'], view['parts']


@needs_cc
def test_flipping_the_kernel_in_the_rule_makes_the_kernels_convolve(tmp_path):
    original, flipped = rule('conv1d'), with_term(rule('conv1d'), 'conv1d_flipped', flip_kernel)
    arrays = conv_arrays(np.random.default_rng(0))
    expected = evaluate_rule(flipped, SIZES, arrays).reshape(2, 3, 7)
    x, w = arrays['input'], arrays['weight']
    convolved = np.array([[sum(np.convolve(x[n, c], w[k, c], 'valid') for c in range(2)) for k in range(3)]
                          for n in range(2)])
    assert_close(expected, convolved, tolerance=RULE_TOLERANCE)
    for kernel in (numpy_kernel(flipped), c_kernel(flipped, tmp_path)):
        assert_close(run(flipped, kernel, (2, 3, 7), arrays), expected, tolerance=RULE_TOLERANCE)
    assert not np.allclose(run(original, numpy_kernel(original), (2, 3, 7), arrays), expected)
    assert printed(c_kernel_view(flipped, 'float64')) != printed(c_kernel_view(original, 'float64'))


def strided_input_gradient_case(rng):
    arrays = conv_arrays(rng)
    arrays['grad_output'] = arrays['grad_output'][..., :5].copy()
    return arrays, dict(SIZES, S0=2, P0=1, O0=5)


@needs_cc
def test_scaling_the_rule_scales_the_c_kernel(tmp_path):
    base = rule('conv1d_input')
    doubled = with_term(base, 'conv1d_input_doubled', scale)
    arrays, sizes = strided_input_gradient_case(np.random.default_rng(1))
    expected = evaluate_rule(doubled, sizes, arrays).reshape(2, 2, 9)
    out = np.zeros((2, 2, 9))
    c_kernel(doubled, tmp_path)(sizes, grad_input=out, **inputs(doubled, arrays))
    assert_close(out, expected, tolerance=RULE_TOLERANCE)
    original = np.zeros((2, 2, 9))
    numpy_kernel(base)(sizes, grad_input=original, **inputs(base, arrays))
    assert_close(2 * original, expected, tolerance=RULE_TOLERANCE)


def test_scaling_the_rule_scales_the_numpy_kernel():
    doubled = with_term(rule('conv1d_input'), 'conv1d_input_doubled', scale)
    arrays, sizes = strided_input_gradient_case(np.random.default_rng(1))
    out = np.zeros((2, 2, 9))
    numpy_kernel(doubled)(sizes, grad_input=out, **inputs(doubled, arrays))
    assert_close(out, evaluate_rule(doubled, sizes, arrays).reshape(2, 2, 9), tolerance=RULE_TOLERANCE)


def printed_or_refused(printer, kernel_rule):
    """The printed kernel, or the LoweringError that refuses it."""
    try:
        return printer(kernel_rule)
    except LoweringError as error:
        return f'refused: {error}'


def test_dropping_the_stride_divisibility_changes_the_printed_kernels():
    """Without S | i + P - D m the quotient (i + P - D m)/S is no index: the kernels change or are refused."""
    base = rule('conv1d_input')
    assert base.terms[0][0].divs, 'the proven input gradient carries the condition S | i + P - D m'
    dropped = with_term(base, base.name, lambda t: ZSum(t.vars, t.body, t.conds, ()))
    for dtype in ('float32', 'float64'):
        body = lambda r, dtype=dtype: printed(c_kernel_view(r, dtype))
        assert printed_or_refused(body, dropped) != printed_or_refused(body, base)
    lines = lambda r: lower_numpy(r).lines
    assert printed_or_refused(lines, dropped) != printed_or_refused(lines, base)


def test_a_rule_change_changes_the_spec_hash_in_the_header():
    base = rule('conv1d')
    flipped = with_term(base, base.name, flip_kernel)
    header = [c_files([r])['c/bpgen_conv1d.c'].splitlines()[1] for r in (base, flipped)]
    assert 'spec hash' in header[0] and header[0] != header[1]
