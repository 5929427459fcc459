"""conv{1,2,3}d kernels against the proven rules of derive.layer (codegen.spec.kernel_rules), evaluated point
by point at tiny sizes: the printed kernels agree with the proofs, independently of torch."""
from functools import cache

import numpy as np
import pytest
from conftest import RULE_TOLERANCE, assert_close, evaluate_rule, random_array

from codegen.spec import rule

# dims, N, G, CG, KG, input size, kernel, stride, dilation, padding (an int tuple or 'same')
CONFIGS = [
    (1, 2, 2, 1, 2, (7,), (3,), (2,), (1,), (1,)),
    (1, 1, 1, 2, 1, (5,), (2,), (1,), (2,), (3,)),                    # padding larger than the kernel
    (1, 1, 1, 1, 1, (6,), (4,), (1,), (1,), 'same'),                  # even kernel: padding (1, 2)
    (2, 1, 2, 1, 1, (5, 6), (2, 3), (2, 1), (1, 2), (1, 0)),
    (2, 2, 1, 2, 2, (3, 3), (3, 3), (1, 1), (1, 1), (0, 0)),          # kernel equal to the input
    (2, 1, 1, 2, 1, (4, 5), (1, 1), (3, 2), (1, 1), (0, 1)),          # 1x1 kernel, stride > kernel
    (3, 1, 1, 1, 2, (3, 4, 3), (2, 1, 2), (1, 2, 3), (1, 1, 1), (1, 0, 0)),
    (3, 1, 2, 1, 1, (3, 3, 3), (2, 2, 2), (1, 1, 1), (2, 1, 1), 'same'),
]
ROLES = ('', '_input', '_weight', '_bias')


def geometry(config) -> tuple:
    """(sizes by derive's symbol names, public keyword arguments) of one configuration."""
    dims, n, g, cg, kg, size, kernel, stride, dilation, padding = config
    if padding == 'same':
        left = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
        right = tuple(d * (k - 1) - lf for k, d, lf in zip(kernel, dilation, left))
    else:
        left = right = padding
    out = tuple((h + pl + pr - d * (k - 1) - 1) // s + 1
                for h, k, s, d, pl, pr in zip(size, kernel, stride, dilation, left, right))
    sizes = dict(N=n, G=g, CG=cg, KG=kg)
    for name, values in (('H', size), ('K', kernel), ('S', stride), ('D', dilation), ('P', left), ('O', out)):
        sizes.update({f'{name}{d}': v for d, v in enumerate(values)})
    params = dict(stride=stride, padding=padding, dilation=dilation, groups=g)
    return sizes, params


@cache
def case(index: int):
    """Arrays, sizes, parameters and the rule values of every role for CONFIGS[index] (float64)."""
    config = CONFIGS[index]
    dims, n, g, cg, kg, size, kernel = config[:7]
    sizes, params = geometry(config)
    rng = np.random.default_rng(index)
    out_shape = (n, g * kg) + tuple(sizes[f'O{d}'] for d in range(dims))
    arrays = dict(input=random_array(rng, (n, g * cg) + size), weight=random_array(rng, (g * kg, cg) + kernel),
                  bias=random_array(rng, (g * kg,)), grad_output=random_array(rng, out_shape))
    expected = {role: evaluate_rule(rule(f'conv{dims}d{role}'), sizes, arrays) for role in ROLES}
    return arrays, params, expected


def run(backend, dims: int, role: str, arrays: dict, params: dict) -> np.ndarray:
    x, w, b, g = arrays['input'], arrays['weight'], arrays['bias'], arrays['grad_output']
    if role == '':
        return getattr(backend, f'conv{dims}d')(x, w, b, **params)
    if role == '_input':
        return getattr(backend, f'conv{dims}d_input')(x.shape, w, g, **params)
    if role == '_weight':
        return getattr(backend, f'conv{dims}d_weight')(x, w.shape, g, **params)
    return getattr(backend, f'conv{dims}d_bias')(g)


@pytest.mark.sanitize_subset
@pytest.mark.parametrize('role', ROLES, ids=lambda r: r or '_forward')
@pytest.mark.parametrize('index', range(len(CONFIGS)))
def test_conv_kernel_equals_proven_rule(backend, index, role):
    arrays, params, expected = case(index)
    dims = CONFIGS[index][0]
    got = run(backend, dims, role, arrays, params)
    assert_close(got, expected[role].reshape(got.shape), tolerance=RULE_TOLERANCE, what=f'conv{dims}d{role}')


def test_rule_oracle_detects_a_wrong_stride():
    """The oracle is sharp: the rule evaluated with stride 1 differs from the kernel run with stride 2."""
    arrays, params, expected = case(0)
    sizes, _ = geometry(CONFIGS[0])
    wrong = evaluate_rule(rule('conv1d'), {**sizes, 'S0': 1}, arrays)
    assert not np.allclose(wrong, expected[''])
