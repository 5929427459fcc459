"""Assemble generated/: every emitted file, byte-deterministic; write only what changed,
or report (as a unified diff) how generated/ differs from what the rules print.

    # [KernelRule] -> {relative path: text}
"""
from __future__ import annotations

import difflib
from pathlib import Path

from sympy import Symbol

from derive import layer, pool

from .lower import kernel_params
from .lower_numpy import lower_numpy
from .printers import NumpyPrinter, identifier
from .render import C_FILES, MARK, c_files, c_kernel_view, c_sources, environment, header, template_header
from .spec import kernel_rules

ROOT = Path(__file__).resolve().parent.parent / 'generated'
RUNTIME = Path(__file__).resolve().parent / 'runtime'
COPIES = {'_api.py': 'api.py', 'numpy/_runtime.py': 'nprt.py', 'c/_build.py': 'cbuild.py'}


def render(template: str, **context) -> str:
    return environment().get_template(template).render(**context)


def copies(rules) -> dict:
    out = {}
    for target, source in COPIES.items():
        text = (RUNTIME / source).read_text()
        out[target] = render('python/copy.py.j2', source=text.rstrip('\n'),
                             header=header('#', f'codegen/runtime/{source} (copied)', rules, [text]))
    return out


def formulas_file(rules) -> str:
    p = NumpyPrinter()
    s = pool.pool_symbols(1)
    rename = {s[k][0]: Symbol(k, integer=True) for k in ('H', 'K', 'S', 'D', 'P', 'o')}
    items = [
        ('conv_output_size', 'H, K, S, D, PL, PR', layer.output_size(),
         'derive.layer.output_size: positions whose dilated window ends inside the padded input'),
        ('pool_output_size_floor', 'H, K, S, D, P', pool.output_size(1, False)[0].xreplace(rename),
         'derive.pool.output_size(ceil_mode=False)'),
        ('pool_output_size_ceil', 'H, K, S, D, P', pool.output_size(1, True)[0].xreplace(rename),
         'derive.pool.output_size(ceil_mode=True): windows may start in the left padding, never in the right'),
        ('pool_window_taps', 'o, H, K, S, D, P', pool.window_taps().xreplace(rename),
         'derive.pool.window_taps: taps of window o inside the input (o may be an integer array)'),
    ]
    views = [dict(name=n, args=args, expr=p.doprint(e), doc=doc) for n, args, e, doc in items]
    return render('python/formulas.py.j2', header=template_header('#', 'python/formulas.py.j2', rules), formulas=views)


def numpy_kernels_file(rules) -> str:
    views = []
    for r in rules:
        k = lower_numpy(r)
        views.append(dict(name=k.name, arrays=', '.join(k.arrays), unpack=_unpack(k.params), lines=k.lines,
                          doc=f'{r.name}: {r.source}.'))
    return render('numpy/kernels.py.j2', header=template_header('#', 'numpy/kernels.py.j2', rules), kernels=views)


def _size(name: str) -> str:
    return f"sizes['{name}']"


class _SizesPrinter(NumpyPrinter):
    """Python over a kernel's mapping of sizes (a bound function's failure messages)."""

    def _print_Symbol(self, expr):
        return _size(expr.name)


def _failures(messages: dict) -> str:
    """The C kernel's failure statuses -> their messages with the sizes of the call (Python source)."""
    p = _SizesPrinter()
    items = (f'{code}: {what!r}.format({", ".join(p.doprint(s) for s in sizes)})'
             for code, (what, sizes) in messages.items())
    return '{' + ', '.join(items) + '}'


def _unpack(params) -> str:
    """The kernel's sizes and scalar parameters as locals (a mapping's subscripts cost less than keywords)."""
    return f"{', '.join(params)} = {', '.join(_size(p) for p in params)}"


def _prototype(symbol: str, signature: str) -> str:
    return f'int {symbol}({signature.replace("restrict ", "")})'


def _packed(view: dict, arrays: tuple, params: int) -> tuple:
    """(symbol, prototype, definition) of a wrapper compiled into the cffi module only: the kernel's arrays,
    then its integer sizes as one int64 array (a cffi call converts 20 arguments in 433 ns, 5 in 213 ns)."""
    symbol = view['symbol'].replace('bpgen_', 'bpgen_packed_', 1)
    head = _prototype(symbol, ', '.join([view['parameters'][a] for a in arrays] + ['const int64_t *size']))
    call = ', '.join([*arrays, *(f'size[{i}]' for i in range(params))])
    return symbol, f'{head};', f'{head} {{ return {view["symbol"]}({call}); }}'


def _pointers(rule, arrays: tuple, copied: bool) -> str:
    """A kernel's array arguments in its binding: each array's pointer (of a contiguous copy of each input
    when ``copied``)."""
    out = []
    for i, (name, t) in enumerate(zip(arrays, rule.outputs + rule.inputs)):
        ctype = 'INDEX_POINTER' if t.index_array else 'real'
        array = f'contiguous({name})' if copied and i >= len(rule.outputs) else name
        out.append((f'NULL if {name} is None else ' if t.optional else '') + f'from_buffer({ctype}, {array})')
    return ', '.join(out)


def binding_file(rules) -> str:
    views = []
    for r in rules:
        k32, k64 = c_kernel_view(r, 'float32'), c_kernel_view(r, 'float64')
        kernel = lower_numpy(r)
        sizes = [_size(identifier(p.name)) for p in kernel_params(r)]   # the C kernel's (its variants' too)
        packed = not r.real_params   # a real parameter among the sizes: the kernel itself, every argument converted
        view = dict(name=r.name, fresh=r.fresh, signature=', '.join(kernel.arrays), first=kernel.arrays[0],
                    rest=', '.join(kernel.arrays[1:]),
                    call=_pointers(r, kernel.arrays, False), call_copies=_pointers(r, kernel.arrays, True),
                    failures=_failures(k32['failure_messages']), bound_call='size' if packed else '*args',
                    bound=f'size = new_sizes([{", ".join(sizes)}])' if packed else f'args = ({", ".join(sizes)},)')
        for suffix, k in (('f32', k32), ('f64', k64)):
            symbol, prototype, wrapper = (_packed(k, kernel.arrays, len(sizes)) if packed else
                                          (k['symbol'], _prototype(k['symbol'], k['signature']) + ';', ''))
            view.update({f'symbol_{suffix}': symbol, f'prototype_{suffix}': prototype, f'wrapper_{suffix}': wrapper,
                         f'workspace_symbol_{suffix}': k['workspace']['symbol'],
                         f'workspace_{suffix}': f'int64_t {k["workspace"]["symbol"]}({k["workspace"]["signature"]});'})
        view['workspace_sizes'] = repr(tuple(k32['workspace']['sizes']))
        views.append(view)
    sources = sorted([f'{b}.h' for b in {*C_FILES.values(), 'bpgen_runtime'}]
                     + [f'{b}.c' for b in [*c_sources(rules), 'bpgen_runtime']])
    return render('c/binding.py.j2', header=template_header('#', 'c/binding.py.j2', rules), kernels=views,
                  sources=sources)


def package_file(rules, doc: str, module: str, extra=()) -> str:
    return render('python/package.py.j2', header=template_header('#', 'python/package.py.j2', rules), doc=doc,
                  kernels_module=module, extra=extra)


NUMPY_DOC = ('NumPy backend of bpgen: the public functions (torch.nn.functional / torch.nn.grad signatures) on '
             'vectorized kernels printed from the proven rules.  Needs numpy only.')
C_DOC = ('C backend of bpgen: the same public functions on C99 kernels printed from the proven rules, compiled '
         'with cffi on first import and cached (see _build.py).')
ROOT_DOC = ('"""Emitted by bpgen from the proven rules of derive/: do not edit.\n\n'
            'generated.numpy and generated.c offer the same public functions (torch.nn.functional signatures).\n"""\n')


def files() -> dict[str, str]:
    rules = kernel_rules()
    out = {'__init__.py': header('#', 'codegen/generate.py', [], [ROOT_DOC]) + '\n' + ROOT_DOC,
           '_formulas.py': formulas_file(rules),
           'numpy/_kernels.py': numpy_kernels_file(rules),
           'numpy/__init__.py': package_file(rules, NUMPY_DOC, '_kernels'),
           'c/_binding.py': binding_file(rules),
           'c/__init__.py': package_file(rules, C_DOC, '_binding', ('set_num_threads', 'get_num_threads', 'workspace'))}
    out.update(copies(rules))
    out.update(c_files(rules))
    return dict(sorted(out.items()))


def marked(root: Path = ROOT) -> dict[str, str]:
    """The generated files under ``root`` (sources carrying the mark), by path under it."""
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob('*'))
            if p.is_file() and p.suffix in ('.py', '.c', '.h') and MARK in p.read_text(errors='replace')}


def stale(root: Path = ROOT) -> tuple[dict, list]:
    """(expected files, paths whose content differs or that should not exist)."""
    expected = files()
    changed = [p for p, text in expected.items() if not (root / p).exists() or (root / p).read_text() != text]
    extra = [p for p in marked(root) if p not in expected]
    return expected, sorted(changed + extra)


def write(root: Path = ROOT) -> list[str]:
    expected, differing = stale(root)
    for path in differing:
        target = root / path
        if path in expected:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(expected[path])
        else:
            target.unlink()
    return differing


def diff(root: Path = ROOT) -> str:
    expected, differing = stale(root)
    chunks = []
    for path in differing:
        old = (root / path).read_text().splitlines(keepends=True) if (root / path).exists() else []
        new = expected.get(path, '').splitlines(keepends=True)
        chunks += difflib.unified_diff(old, new, f'generated/{path} (on disk)', f'generated/{path} (from the rules)')
    return ''.join(chunks)
