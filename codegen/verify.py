"""Verification sweep of the generated kernels (``bpgen all``): against the proven rules
evaluated at small sizes, and against PyTorch autograd when it is installed.

The symbolic oracle is independent of the lowering: it enumerates the integer
points of each rule's Z-sums (derive.zsum.points) and evaluates the bodies
with the arrays' numbers; the kernels must agree with it to rounding.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from sympy import Indexed, Symbol

from derive import layer, pool
from derive.zsum import points

from .spec import KernelRule, kernel_rules

TOLERANCE = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}


@dataclass(frozen=True)
class Result:
    check: str
    backend: str
    cases: int
    worst: float      # largest relative error seen
    ok: bool


# ----------------------------------------------------------------------------- symbolic oracle

def conv_sizes(dims: int, rng: random.Random) -> dict:
    s = layer.conv_symbols(dims)
    v = {s['N']: rng.randint(1, 2), s['G']: rng.randint(1, 2), s['CG']: rng.randint(1, 2), s['KG']: rng.randint(1, 2)}
    for d in range(dims):
        K, S, D, P = rng.randint(1, 3), rng.randint(1, 2), rng.randint(1, 2), rng.randint(0, 1)
        H = rng.randint(max(1, D * (K - 1) + 1 - 2 * P), 5)
        v.update({s['K'][d]: K, s['S'][d]: S, s['D'][d]: D, s['P'][d]: P, s['H'][d]: H,
                  s['O'][d]: (H + 2 * P - D * (K - 1) - 1) // S + 1})
    return v


def pool_sizes(dims: int, rng: random.Random, dilated: bool) -> dict:
    s = pool.pool_symbols(dims)
    v = {s['N']: 1, s['C']: rng.randint(1, 2), s['divisor_override']: rng.choice([0, 0, 3]),
         s['count_include_pad']: rng.randint(0, 1)}
    for d in range(dims):
        K = rng.randint(1, 3)
        S, D, P = rng.randint(1, 2), rng.randint(1, 2) if dilated else 1, rng.randint(0, K // 2)
        if D > 1:
            P = 0   # every window must hold an input element
        H = rng.randint(max(1, D * (K - 1) + 1 - 2 * P), 5)
        v.update({s['K'][d]: K, s['S'][d]: S, s['D'][d]: D, s['P'][d]: P, s['H'][d]: H,
                  s['O'][d]: (H + 2 * P - D * (K - 1) - 1) // S + 1})
    return v


def _evaluate(rule: KernelRule, sizes: dict, arrays: dict) -> np.ndarray:
    """The rule's first output, element by element, from the Z-sums' integer points."""
    first = rule.outputs[0]
    shape = tuple(int(sz.xreplace(sizes)) for sz in first.shape)
    out = np.zeros(shape)
    by_base = {t.base: arrays[t.name] for t in rule.inputs + rule.outputs if t.name in arrays}
    for index in np.ndindex(*shape):
        at = {**sizes, **dict(zip(rule.index, index))}
        total = 0.0
        for term, optional in rule.terms:
            if optional and arrays.get(optional) is None:
                continue
            body = term.body
            for fn, lam in rule.definitions:
                body = body.replace(fn, lam)
            for p in points(term, at):
                value = body.xreplace({**at, **p})
                value = value.xreplace({ix: by_base[ix.base][tuple(int(i) for i in ix.indices)]
                                        for ix in value.atoms(Indexed)})
                total += float(value)
        out[index] = total
    return out


def symbolic_case(rule: KernelRule, kernels, rng: random.Random, dtype) -> float:
    """Relative error of the kernel against the rule evaluated at a random small size."""
    dims = rule.dims
    sizes = (conv_sizes(dims, rng) if rule.family == 'conv' else
             pool_sizes(dims, rng, rule.family == 'max_pool'))
    nprng = np.random.default_rng(rng.randrange(2**32))
    arrays = {}
    for t in rule.inputs:
        shape = tuple(int(sz.xreplace(sizes)) for sz in t.shape)
        arrays[t.name] = (nprng.integers(0, int(np.prod(shape[-dims:])), shape) if t.index_array
                          else nprng.standard_normal(shape).astype(dtype))
    if rule.family == 'max_pool' and rule.role == 'forward':
        arrays['input'] = nprng.permutation(arrays['input'].size).reshape(arrays['input'].shape).astype(dtype)
    outputs = {t.name: np.empty(tuple(int(sz.xreplace(sizes)) for sz in t.shape),
                                np.int64 if t.index_array else dtype) for t in rule.outputs}
    params = {str(k): int(v) for k, v in sizes.items() if isinstance(k, Symbol)}
    getattr(kernels, rule.name)(params, **outputs, **arrays)
    if rule.reduction == 'max':
        arrays[rule.outputs[1].name] = outputs[rule.outputs[1].name]
    expected = _evaluate(rule, sizes, {**arrays, **outputs})
    got = outputs[rule.outputs[0].name]
    return float(np.max(np.abs(got - expected)) / (np.max(np.abs(expected)) + 1.0)) if got.size else 0.0


def symbolic_sweep(kernels, backend: str, cases: int = 2, seed: int = 0) -> Result:
    rng = random.Random(seed)
    worst, n = 0.0, 0
    for rule in kernel_rules():
        if rule.family == 'activation' or rule.dims == 3:
            continue
        for dtype in (np.float32, np.float64):
            for _ in range(cases):
                err = symbolic_case(rule, kernels, rng, dtype) / TOLERANCE[np.dtype(dtype)]
                worst, n = max(worst, err), n + 1
    return Result('symbolic rules (1d, 2d, tiny sizes)', backend, n, worst, worst <= 1.0)



# ----------------------------------------------------------------------------- PyTorch oracle

def _relative(got, ref) -> float:
    ref = ref.detach().numpy() if hasattr(ref, 'detach') else ref
    return float(np.max(np.abs(got - ref)) / (np.max(np.abs(ref)) + 1.0)) if ref.size else 0.0


def _conv_case(api, torch, rng, dtype) -> float:
    dims = rng.randint(1, 3)
    groups = rng.randint(1, 2)
    k = [rng.randint(1, 3) for _ in range(dims)]
    kw = dict(stride=[rng.randint(1, 3) for _ in range(dims)], dilation=[rng.randint(1, 2) for _ in range(dims)],
              padding=[rng.randint(0, 2) for _ in range(dims)], groups=groups)
    size = [rng.randint(max(1, d * (kk - 1) + 1 - 2 * p), 9 if dims < 3 else 5)
            for kk, d, p in zip(k, kw['dilation'], kw['padding'])]
    t = torch.from_numpy
    x = t(np.random.default_rng(rng.randrange(2**32)).standard_normal((rng.randint(1, 2), 2 * groups, *size)))
    w = t(np.random.default_rng(rng.randrange(2**32)).standard_normal((3 * groups, 2, *k)))
    x, w = x.to(dtype).requires_grad_(), w.to(dtype).requires_grad_()
    y = getattr(torch.nn.functional, f'conv{dims}d')(x, w, **kw)
    g = torch.randn_like(y)
    y.backward(g)
    xn, wn, gn = x.detach().numpy(), w.detach().numpy(), g.numpy()
    return max(_relative(getattr(api, f'conv{dims}d')(xn, wn, **kw), y),
               _relative(getattr(api, f'conv{dims}d_input')(xn.shape, wn, gn, **kw), x.grad),
               _relative(getattr(api, f'conv{dims}d_weight')(xn, wn.shape, gn, **kw), w.grad),
               _relative(getattr(api, f'conv{dims}d_bias')(gn), g.sum(dim=[0, *range(2, dims + 2)])))


def _pool_case(api, torch, rng, dtype) -> float:
    dims = rng.randint(1, 2)
    k = [rng.randint(1, 3) for _ in range(dims)]
    stride = [rng.randint(1, 3) for _ in range(dims)]
    pad = [rng.randint(0, kk // 2) for kk in k]
    ceil = rng.random() < 0.5
    size = [rng.randint(max(1, kk - 2 * p), 9) for kk, p in zip(k, pad)]
    x = torch.from_numpy(np.random.default_rng(rng.randrange(2**32)).standard_normal((2, 2, *size)))
    x = x.to(dtype).requires_grad_()
    F = torch.nn.functional
    kind = rng.choice(['max', 'avg'])
    opts = {'ceil_mode': ceil}
    if kind == 'avg':
        opts['count_include_pad'] = rng.random() < 0.5
        if dims == 2 and rng.random() < 0.3:
            opts['divisor_override'] = rng.randint(1, 5)
    y = getattr(F, f'{kind}_pool{dims}d')(x, k, stride, pad, **opts)
    g = torch.randn_like(y)
    y.backward(g)
    xn = x.detach().numpy()
    ours = getattr(api, f'{kind}_pool{dims}d')(xn, k, stride, pad, **opts)
    back = getattr(api, f'{kind}_pool{dims}d_backward')(g.numpy(), xn, k, stride, pad, **opts)
    return max(_relative(ours, y), _relative(back, x.grad))


def _activation_case(api, torch, rng, dtype) -> float:
    x = torch.from_numpy(np.random.default_rng(rng.randrange(2**32)).standard_normal(rng.randint(1, 300)) * 3)
    x = x.to(dtype).requires_grad_()
    name = rng.choice(['relu', 'sigmoid', 'tanh', 'hardtanh'])
    y = getattr(torch.nn.functional, name)(x)
    g = torch.randn_like(y)
    y.backward(g)
    xn, yn = x.detach().numpy(), y.detach().numpy()
    saved = yn if name in ('sigmoid', 'tanh') else xn
    return max(_relative(getattr(api, name)(xn), y), _relative(getattr(api, f'{name}_backward')(g.numpy(), saved),
                                                              x.grad))


CASES = {'conv': _conv_case, 'pool': _pool_case, 'activation': _activation_case}


def torch_sweep(api, backend: str, family: str, cases: int, seed: int = 0):
    """Public functions against torch autograd on random configurations; None without torch."""
    try:
        import torch
    except ImportError:
        return None
    rng = random.Random(seed)
    worst = 0.0
    for _ in range(cases):
        dtype = rng.choice([torch.float32, torch.float64])
        tol = TOLERANCE[np.dtype(np.float32 if dtype == torch.float32 else np.float64)]
        worst = max(worst, CASES[family](api, torch, rng, dtype) / tol)
    return Result(f'torch autograd, {family}', backend, cases, worst, worst <= 1.0)
