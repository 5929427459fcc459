"""Which kernels exist, and the rule each one prints (taken from derive/).

A KernelRule is the data the lowering needs: output and input tensors, the free
indices of one output element, the Z-sums whose total is that element, how
they combine (sum, or max with a selector), and the hypotheses the kernel
checks before it runs.  Everything index-related in it comes from derive/.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from sympy import And, Indexed, IndexedBase, Mul, Not, Symbol

from derive import activations, layer, pool
from derive.rules import Layer
from derive.zsum import ZSum

DTYPES = ('float32', 'float64')


@dataclass(frozen=True)
class TensorArg:
    name: str                 # the public name: input, weight, grad_output, indices, output, grad_input ...
    base: IndexedBase         # the rule's name for it
    shape: tuple              # size symbols
    index_array: bool = False  # int64 positions (max-pool indices) rather than the kernel's real type
    optional: bool = False


@dataclass(frozen=True)
class KernelRule:
    name: str                 # public kernel name, e.g. conv2d_input
    family: str               # conv, max_pool, avg_pool, activation
    role: str                 # forward, input, weight, bias, backward
    dims: int                 # spatial dimensions (0 for elementwise)
    outputs: tuple            # TensorArg, the first one receives the rule's value
    inputs: tuple             # TensorArg
    index: tuple              # free indices of one element of outputs[0]
    terms: tuple              # (ZSum, name of the optional input the term needs, or '')
    reduction: str            # 'sum' or 'max'
    hyps: tuple               # expressions >= 0 on the size symbols, checked by the kernel
    window: tuple = ()        # window size symbols: their summation variables are kernel taps
    definitions: tuple = ()   # (Function, Lambda) pairs expanded in the body
    real_params: tuple = ()   # real-valued scalar parameters (hardtanh limits)
    source: str = ''          # where in derive/ the rule comes from
    at: tuple = ()            # the output element of the free indices (default: index; split: S t + r)
    extents: tuple = ()       # loop extent of each free index (default: the output's shape)
    box: tuple = ()           # constraints >= 0 on the free indices (default: 0 <= index < shape)
    residues: tuple = ()      # free indices that are residues of a split (i = S t + r: the r)
    variants: tuple = ()      # (condition, KernelRule): the same output in another proven form, run where
    #                           the condition holds (a faster one for those sizes)
    fresh: bool = False       # the public function hands the kernel a new, uninitialized first output (it
    #                           writes every element: tests/kernels/test_outputs_written.py), allocated by the
    #                           binding's prepare when given its shape

    @property
    def output_at(self) -> tuple:
        return self.at or tuple(self.index)

    @property
    def sizes(self) -> tuple:
        return self.extents or tuple(self.outputs[0].shape)

    @property
    def index_box(self) -> tuple:
        return self.box or tuple(c for i, n in zip(self.index, self.outputs[0].shape) for c in (i, n - 1 - i))


def _arg(tensor, name=None, **kw) -> TensorArg:
    return TensorArg(name or tensor.name, tensor.base, tuple(tensor.shape), **kw)


def _bases(expr) -> set:
    return {ix.base for ix in expr.atoms(Indexed)}


def _forward(lay: Layer, family: str, dims: int, window) -> KernelRule:
    inputs = tuple(_arg(t, optional=t.name == 'bias') for t in lay.inputs)
    optional = {t.base: t.name for t in inputs if t.optional}
    outputs = (_arg(lay.output),)
    if lay.selector is not None:
        outputs += (_arg(lay.selector, index_array=True),)
    terms = tuple((t, next((optional[b] for b in _bases(t.body) if b in optional), '')) for t in lay.terms)
    return KernelRule(lay.name, family, 'forward', dims, outputs, inputs, lay.index, terms, lay.reduction,
                      lay.hyps, window, lay.definitions, source=f'derive: {lay.name} forward definition',
                      fresh=family in ('conv', 'avg_pool'))


def _conv_backward(lay: Layer, grad, role: str, dims: int, window) -> KernelRule:
    tensors = {t.base: t for t in (*lay.inputs, grad.upstream)}
    used = _bases(grad.value.body)
    inputs = tuple(_arg(tensors[b]) for b in sorted(used, key=str) if b in tensors)
    out = TensorArg(f'grad_{grad.wrt.name}', IndexedBase(f'grad_{grad.wrt.name}'), tuple(grad.wrt.shape))
    return KernelRule(f'conv{dims}d_{role}', 'conv', role, dims, (out,), inputs, grad.index, ((grad.value, ''),),
                      'sum', lay.hyps, window, grad.definitions,
                      source=f'derive: chain rule of {lay.name} w.r.t. {grad.wrt.name}, gather form')


def _max_pool_backward(lay: Layer, grad, dims: int, window) -> KernelRule:
    """The scatter form: grad_input seen as (N, C, plane), one visit per window (claim pool.max-scatter); where
    the windows tile the input, the form per window and tap, each input stored once where its window's
    selector names it, the scatter run instead when a selector names none of its window's taps
    (pool.max-tiling)."""
    index, term = pool.max_pool_scatter(dims)
    plane = tuple(grad.wrt.shape[:2]) + (Mul(*grad.wrt.shape[2:]),)
    out = TensorArg('grad_input', IndexedBase('grad_input'), plane)
    inputs = (_arg(lay.selector, index_array=True), _arg(grad.upstream))
    when, tiled = pool.max_pool_tiling(dims)
    tiling = KernelRule(f'max_pool{dims}d_backward', 'max_pool', 'backward', dims,
                        (TensorArg('grad_input', IndexedBase('grad_input'), tuple(grad.wrt.shape)),), inputs,
                        grad.index, ((tiled, ''),), 'sum', lay.hyps, window,
                        source=f'derive: chain rule of {lay.name} w.r.t. input per window and tap, where the windows '
                               f'tile the input (pool.max-tiling)')
    return KernelRule(f'max_pool{dims}d_backward', 'max_pool', 'backward', dims, (out,), inputs, index,
                      ((term, ''),), 'sum', lay.hyps, window,
                      source=f'derive: chain rule of {lay.name} w.r.t. input, scatter form (pool.max-scatter)',
                      variants=((when, tiling),))


def _avg_pool_backward(lay: Layer, grad, dims: int, window) -> KernelRule:
    """The scatter form: one visit per tap of each window, the divisor once per window (pool.avg-scatter);
    where every window has the same divisor, the gather form with that constant (pool.avg-uniform): each
    input element written once, no zeroing pass (pool3 average backward 0.89 -> 0.57 ms) -- but where
    the windows tile the input, whose scatter stores each share once (pool.avg-tiling: pool2 0.22 ms,
    the gather 0.48)."""
    out = TensorArg('grad_input', IndexedBase('grad_input'), tuple(grad.wrt.shape))
    when = And(pool.uniform_divisor(dims)[0], Not(pool.avg_tiling(dims)))
    uniform = KernelRule(f'avg_pool{dims}d_backward', 'avg_pool', 'backward', dims, (out,), (_arg(grad.upstream),),
                         grad.index, ((pool.avg_pool_uniform(dims).result, ''),), 'sum', lay.hyps, window,
                         source=f'derive: chain rule of {lay.name} w.r.t. input, gather form with one divisor '
                                f'(pool.avg-uniform)')
    return KernelRule(f'avg_pool{dims}d_backward', 'avg_pool', 'backward', dims, (out,), (_arg(grad.upstream),),
                      grad.index, ((pool.avg_pool_scatter(dims).result, ''),), 'sum', lay.hyps, window,
                      grad.definitions,
                      source=f'derive: chain rule of {lay.name} w.r.t. input, scatter form (pool.avg-scatter)',
                      variants=((when, uniform),))


@cache
def kernel_rules() -> tuple:
    """Every kernel of the project, in a fixed order."""
    rules = []
    for dims in (1, 2, 3):
        conv = layer.conv_layer(dims)
        window = layer.conv_symbols(dims)['K']
        grads = layer.conv_gradients(dims)
        rules.append(_forward(conv, 'conv', dims, window))
        for role in ('input', 'weight', 'bias'):
            rules.append(_conv_backward(conv, grads[role], role, dims, window))
        pwin = pool.pool_symbols(dims)['K']
        mx, av = pool.max_pool_layer(dims), pool.avg_pool_layer(dims)
        pgrads = pool.pool_gradients(dims)
        rules.append(_forward(mx, 'max_pool', dims, pwin))
        rules.append(_max_pool_backward(mx, pgrads['max'], dims, pwin))
        rules.append(_forward(av, 'avg_pool', dims, pwin))
        rules.append(_avg_pool_backward(av, pgrads['avg'], dims, pwin))
    for act in activations.ACTIVATIONS.values():
        rules += list(activation_rules(act))
    return tuple(rules)


NUMEL = Symbol('numel', integer=True, positive=True)
FLAT = Symbol('e', integer=True)


def activation_rules(act) -> tuple:
    """Elementwise rules: out[e] = forward(input[e]); grad_input[e] = backward(grad_output[e], saved[e])."""
    x, y, g = (IndexedBase(n) for n in ('input', 'output', 'grad_output'))
    shape = (NUMEL,)
    params = tuple(p for p, _ in act.params)
    fwd = ZSum.make((), act.forward.xreplace({activations.X: x[FLAT]}))
    saved = 'input' if act.saved == 'input' else 'output'
    sym = activations.X if act.saved == 'input' else activations.Y
    bwd = ZSum.make((), act.backward.xreplace({activations.G: g[FLAT], sym: IndexedBase(saved)[FLAT]}))
    hyps = (NUMEL - 1,)
    return (
        KernelRule(act.name, 'activation', 'forward', 0, (TensorArg('output', y, shape),),
                   (TensorArg('input', x, shape),), (FLAT,), ((fwd, ''),), 'sum', hyps, real_params=params,
                   source=f'derive: activations.{act.name} forward'),
        KernelRule(f'{act.name}_backward', 'activation', 'backward', 0,
                   (TensorArg('grad_input', IndexedBase('grad_input'), shape),),
                   (TensorArg('grad_output', g, shape), TensorArg(saved, IndexedBase(saved), shape)),
                   (FLAT,), ((bwd, ''),), 'sum', hyps, real_params=params,
                   source=f'derive: activations.{act.name} backward (reads the {saved})'),
    )


def rule(name: str) -> KernelRule:
    for r in kernel_rules():
        if r.name == name:
            return r
    raise KeyError(f'no kernel {name!r}')
