"""The lowering emits only memory-safe kernels: an access that may leave its array (unproved by exact LP under
the rule's constraints and hypotheses) is refused with LoweringError; the same access, guarded, is accepted."""
import pytest
from sympy import IndexedBase, Symbol

from codegen.lower import LoweringError, lower
from codegen.lower_numpy import lower_numpy
from codegen.spec import KernelRule, TensorArg, kernel_rules
from derive.zsum import ZSum

SIZE = Symbol('n', integer=True, positive=True)
WINDOW = Symbol('K', integer=True, positive=True)
I, M = Symbol('i', integer=True), Symbol('m', integer=True)
X, Y = IndexedBase('x'), IndexedBase('y')


def one_dimensional_rule(term: ZSum, family: str = 'conv') -> KernelRule:
    """y[i] = term, for 0 <= i < n, reading x of size n."""
    return KernelRule('probe', family, 'forward', 1, (TensorArg('output', Y, (SIZE,)),),
                      (TensorArg('input', X, (SIZE,)),), (I,), ((term, ''),), 'sum', (SIZE - 1, WINDOW - 1),
                      (WINDOW,) if term.vars else ())


OUT_OF_RANGE = {
    'x[i + 1]': ZSum.make((), X[I + 1]),
    'x[i - 1]': ZSum.make((), X[I - 1]),
    'x[2 i]': ZSum.make((), X[2 * I]),
    'sum_m x[i + m]': ZSum.make((M,), X[I + M], [M, WINDOW - 1 - M]),
    'sum_m x[i + m], i + m <= n': ZSum.make((M,), X[I + M], [M, WINDOW - 1 - M, SIZE - I - M]),
}
GUARDED = {
    'x[i]': ZSum.make((), X[I]),
    'x[i + 1], i + 1 <= n - 1': ZSum.make((), X[I + 1], [SIZE - 2 - I]),
    'x[n - 1 - i]': ZSum.make((), X[SIZE - 1 - I]),
    'sum_m x[i + m], i + m <= n - 1': ZSum.make((M,), X[I + M], [M, WINDOW - 1 - M, SIZE - 1 - I - M]),
}


@pytest.mark.parametrize('family', ['conv', 'activation'])
@pytest.mark.parametrize('access', sorted(OUT_OF_RANGE))
def test_lowering_refuses_an_access_that_may_leave_its_array(access, family):
    with pytest.raises(LoweringError, match='may leave input'):
        lower(one_dimensional_rule(OUT_OF_RANGE[access], family))


@pytest.mark.parametrize('access', sorted(GUARDED))
def test_lowering_accepts_the_access_once_guarded(access):
    kernel = lower(one_dimensional_rule(GUARDED[access]))
    assert kernel.name == 'probe' and kernel.body


def test_every_public_function_has_a_rule_that_lowers():
    import generated.numpy
    names = [lower(r).name for r in kernel_rules()]
    assert len(names) == len(set(names))
    assert set(names) == {n for n in generated.numpy.__all__ if not n.endswith('num_threads')}


@pytest.mark.xfail(strict=True, reason='lower_numpy never checks accesses: x[i + 1] over 0 <= i < n is emitted (a '
                                       'window view that fails only when run), unlike codegen.lower.lower')
def test_numpy_lowering_refuses_an_access_that_may_leave_its_array():
    with pytest.raises(LoweringError):
        lower_numpy(one_dimensional_rule(OUT_OF_RANGE['x[i + 1]']))


@pytest.mark.xfail(strict=True, reason='lower_numpy prints an elementwise (activation) rule without its index, '
                                       'guards or sums: y[i] = x[i + 1] (guarded) and sum_m x[i + m] both print '
                                       "'output_r[...] = input_r', the kernel of y[i] = x[i]")
@pytest.mark.parametrize('access', ['x[i + 1], i + 1 <= n - 1', 'sum_m x[i + m], i + m <= n - 1'])
def test_numpy_elementwise_lowering_follows_the_rule(access):
    identity = lower_numpy(one_dimensional_rule(GUARDED['x[i]'], 'activation')).lines
    assert lower_numpy(one_dimensional_rule(GUARDED[access], 'activation')).lines != identity
