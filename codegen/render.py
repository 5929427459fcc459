"""Rendering: Kernel IR -> printed nodes -> Jinja templates -> file contents.

The Jinja environment is strict (StrictUndefined) and the templates receive
only printed strings and lists: no arithmetic happens in a template.
"""
from __future__ import annotations

import hashlib
import re
from functools import cache

import jinja2
import sympy
from sympy import Or, S, Symbol

from .ir import Kernel
from .lower import PARALLEL_WORK, lower
from .printers import CPrinter, identifier
from .spec import KernelRule
from .stack import stack_nodes

REAL = {'float32': ('float', 'f32'), 'float64': ('double', 'f64')}
VECTOR = {'float': 'bp_vf', 'double': 'bp_vd'}
C_FILES = {'conv': 'bpgen_conv', 'max_pool': 'bpgen_pool', 'avg_pool': 'bpgen_pool', 'activation': 'bpgen_activation'}
SPLIT_BY_DIMS = {'bpgen_conv'}
MARK = '@' + 'generated'   # spelled in two pieces so this file is not itself taken for generated


@cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader('codegen', 'templates'), undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True, autoescape=False)


def template_source(name: str) -> str:
    env = environment()
    return env.loader.get_source(env, name)[0]


def spec_hash(rules, texts) -> str:
    """Digest of what a file is printed from: its rules and the template (or source) texts."""
    h = hashlib.sha256()
    for r in rules:
        h.update(repr((r.name, r.index, [(str(t), o) for t, o in r.terms], [o.shape for o in r.outputs],
                       [i.shape for i in r.inputs], r.hyps, r.reduction, r.definitions,
                       [(str(w), str(v.terms)) for w, v in r.variants])).encode())
    for t in texts:
        h.update(t.encode())
    return h.hexdigest()[:16]


def header(comment: str, origin: str, rules, texts=()) -> str:
    """The do-not-edit header: generator, origin (template or copied source), spec hash, SymPy version."""
    lines = [f'{MARK} by bpgen (codegen) from {origin} -- do not edit.',
             f'spec hash {spec_hash(rules, texts)}, SymPy {sympy.__version__}; regenerate with `bpgen generate`.']
    if comment == '/*':
        return '/* ' + '\n * '.join(lines) + ' */'
    return '\n'.join(f'# {line}' for line in lines)


def template_header(comment: str, template: str, rules, also=()) -> str:
    return header(comment, f'template {template}', rules, [template_source(t) for t in (template, *also)])


# ----------------------------------------------------------------------------- C

def c_symbol(name: str, dtype: str) -> str:
    return f'bpgen_{name}_{REAL[dtype][1]}'


def c_parameters(kernel: Kernel, rule: KernelRule, dtype: str) -> dict:
    """{name: its declaration} of a kernel's parameters, in signature order."""
    real = REAL[dtype][0]
    args = {name: f'{"int64_t" if idx else real} *restrict {name}' for name, idx in kernel.outputs}
    args |= {name: f'const {"int64_t" if idx else real} *restrict {name}' for name, idx, _ in kernel.inputs}
    for p in kernel.params:
        args[identifier(p.name)] = f'{real if p in rule.real_params else "int64_t"} {identifier(p.name)}'
    return args


def _conjunction(conds, printer: CPrinter) -> str:
    """The conditions joined by &&, a disjunction among them in parentheses (C's && binds tighter)."""
    return ' && '.join(f'({printer.doprint(c)})' if isinstance(c, Or) else printer.doprint(c) for c in conds)


def printed_nodes(nodes, printer: CPrinter, real: str, collapsed: int = 0) -> list:
    """Printed nodes for the templates.  A loop's upper bound that is not a plain symbol or number is
    computed once, in the loop's init (C evaluates the condition every iteration, and a compiler does
    not always hoist a division out of it); loops under OpenMP keep the canonical form it requires."""
    out = []
    for n in nodes:
        if n.kind == 'loop':
            var = printer.doprint(n.var)
            step = f'++{var}' if n.step == 1 else f'{var} += {printer.doprint(n.step)}'
            upper, end = printer.doprint(n.upper), ''
            if not (n.parallel or collapsed or S(n.upper).is_Atom):
                upper, end = f'{var}_end', f', {var}_end = {upper}'
            inner = n.parallel - 1 if n.parallel else max(collapsed - 1, 0)
            out.append(dict(kind='loop', var=var, lower=printer.doprint(n.lower) + end, upper=upper,
                            step=step, parallel=n.parallel, work=printer.doprint(n.work), flags=n.flags,
                            unroll=n.unroll, team=False, body=printed_nodes(n.body, printer, real, inner)))
        elif n.kind == 'guard':
            out.append(dict(kind='guard', cond=_conjunction(n.conds, printer),
                            body=printed_nodes(n.body, printer, real, collapsed)))
        elif n.kind == 'declare' and n.ctype == 'vbuf':   # a stack buffer of vectors (C99 VLA)
            out.append(dict(kind='call', call=f'{VECTOR[real]} {identifier(n.name)}[{printer.doprint(n.value)}]',
                            name=identifier(n.name)))
        elif n.kind == 'declare' and n.ctype == 'buf':   # a stack array of scalars (C99 VLA)
            out.append(dict(kind='call', call=f'{real} {identifier(n.name)}[{printer.doprint(n.value)}]',
                            name=identifier(n.name)))
        elif n.kind == 'declare' and n.ctype == 'vindex':
            out.append(dict(kind='call', call=f'{VECTOR[real]}p {n.name} = bp_vtap_{printer.suffix}('
                            f'{printer.doprint(n.value)})', name=n.name))
        elif n.kind == 'declare':
            vector = VECTOR[real]
            ctype = {'acc': real, 'vec': vector, 'index': 'int64_t', 'vpos': f'{vector}p'}[n.ctype]
            value = '{0}' if n.ctype == 'vec' and n.value == 0 else printer.doprint(n.value)
            out.append(dict(kind='declare', name=identifier(n.name), ctype=ctype, value=value))
        elif n.kind in ('branch', 'ifdef'):
            cond = n.macro if n.kind == 'ifdef' else _conjunction(n.conds, printer)
            out.append(dict(kind=n.kind, cond=cond, then=printed_nodes(n.then, printer, real),
                            otherwise=printed_nodes(n.otherwise, printer, real)))
        elif n.kind == 'vstore':
            name = 'bp_vstore' if n.mask is None else 'bp_vstore_masked'
            args = [printer.doprint(n.stride)] + ([] if n.mask is None else [printer.doprint(n.mask)])
            out.append(dict(kind='vstore', call=f'{name}_{printer.suffix}({printer.doprint(n.array)} + '
                            f'({printer.doprint(n.flat)}), {", ".join(args)}, {printer.doprint(n.value)})'))
        elif n.kind == 'vstore_pair':
            args = ', '.join(printer.doprint(a) for a in (n.first, n.second))
            out.append(dict(kind='call', call=f'bp_vstore_pair_{printer.suffix}({printer.doprint(n.array)} + '
                            f'({printer.doprint(n.flat)}), {args})'))
        elif n.kind == 'vadd':
            args = ', '.join(printer.doprint(a) for a in (n.array, n.flat, n.stride, n.mask, n.value))
            out.append(dict(kind='call', call=f'bp_vadd_{printer.suffix}({args})'))
        elif n.kind == 'vselect_max':
            name = 'bp_vmerge_max' if n.lanes else 'bp_vselect_max'
            out.append(dict(kind='call', call=f'{name}_{printer.suffix}(&{n.best}, &{n.position}, '
                            f'{printer.doprint(n.value)}, {printer.doprint(n.tap)})'))
        elif n.kind == 'vstore_index':
            start, step = printer.doprint(n.start), printer.doprint(n.step)
            out.append(dict(kind='call', call=f'bp_vstore_index_{printer.suffix}({printer.doprint(n.array)} + '
                            f'({printer.doprint(n.flat)}), &{n.value}, {start}, {step})'))
        elif n.kind == 'lanes':
            out.append(dict(kind='lanes', name=n.name, vtype=None if n.declared else VECTOR[real],
                            lanes=printer.doprint(Symbol('LANES')),
                            var=printer.doprint(n.var), start=printer.doprint(n.start), expr=printer.doprint(n.expr)))
        elif n.kind == 'assign':
            out.append(dict(kind='assign', target=printer.doprint(n.target), op=n.op, value=printer.doprint(n.value)))
        elif n.kind == 'select_max':
            out.append(dict(kind='select_max', suffix=printer.suffix, best=n.best, position=n.position,
                            value=printer.doprint(n.value), candidate=printer.doprint(n.candidate),
                            unset='0' if n.started else f'{n.position} < 0'))
        else:
            raise ValueError(f'unknown node {n}')
    return out


IDENTIFIER = re.compile(r'[A-Za-z_][A-Za-z_0-9]*')


def _identifiers(printed) -> set:
    """Every identifier in the strings of a printed node and its children."""
    if isinstance(printed, str):
        return set(IDENTIFIER.findall(printed))
    values = printed.values() if isinstance(printed, dict) else printed if isinstance(printed, list) else ()
    return set().union(*map(_identifiers, values))


def outlined(nodes: list, symbol: str, parts: list, scope: dict, macros: tuple = ()) -> list:
    """The printed nodes with each parallel loop moved into a function of its own (appended to ``parts``):
    the kernel calls it inside an OpenMP region when the loop's work is large enough, else plainly, and
    its loop is shared out among the threads of whichever team runs it (``omp for``; outside a region
    that is the calling thread alone).  A ``parallel for`` whose if() clause is false still starts and
    ends a region, ~0.25 us a call: a fifth of a tiny convolution.  Its parameters are what the loop
    reads of ``scope`` (name -> declaration of a parameter carrying it, or None: the kernel's parameters
    and the locals declared around the loop); a loop ORing flags together, or reading a local array,
    keeps its ``parallel for``.  A function is compiled under the macros its call is (``macros``: the
    printed #if conditions around it)."""
    scope, out = dict(scope), []
    for n in nodes:
        kind = n['kind']
        if kind == 'loop' and n['parallel'] and not n['flags']:
            read = _identifiers({k: v for k, v in n.items() if k != 'work'})   # the call site computes the work
            used = [name for name in scope if name in read]
            if all(scope[u] for u in used):
                name = f'{symbol}_part{len(parts)}'
                parts.append(dict(name=name, loop=dict(n, team=True), macros=' && '.join(macros),
                                  parameters=', '.join(scope[u] for u in used)))
                out.append(dict(kind='region', work=n['work'], call=f'{name}({", ".join(used)})'))
                continue
        if kind == 'loop':
            inner = {**scope, n['var']: f'int64_t {n["var"]}'}
            out.append(dict(n, body=outlined(n['body'], symbol, parts, inner, macros)))
        elif kind == 'guard':
            out.append(dict(n, body=outlined(n['body'], symbol, parts, scope, macros)))
        elif kind == 'branch':
            out.append(dict(n, then=outlined(n['then'], symbol, parts, scope, macros),
                            otherwise=outlined(n['otherwise'], symbol, parts, scope, macros)))
        elif kind == 'ifdef':
            out.append(dict(n, then=outlined(n['then'], symbol, parts, scope, macros + (f'defined({n["cond"]})',)),
                            otherwise=outlined(n['otherwise'], symbol, parts, scope,
                                               macros + (f'!defined({n["cond"]})',))))
        else:
            if kind == 'declare':
                scope[n['name']] = f'{n["ctype"]} {n["name"]}'
            elif 'name' in n:   # a local array or vector a parameter cannot carry by value
                scope[n['name']] = None
            out.append(n)
    return out


def _read_without(printed, macro: str) -> set:
    """The identifiers of printed nodes compiled when ``macro`` is not defined (the other arm of its #ifdef)."""
    names = set()
    for n in printed:
        if n['kind'] == 'ifdef' and n['cond'] == macro:
            names |= _read_without(n['otherwise'], macro)
        elif n['kind'] in ('branch', 'ifdef'):
            names |= _identifiers({k: v for k, v in n.items() if k not in ('then', 'otherwise')})
            names |= _read_without(n['then'], macro) | _read_without(n['otherwise'], macro)
        elif n['kind'] in ('loop', 'guard'):
            names |= _identifiers({k: v for k, v in n.items() if k != 'body'}) | _read_without(n['body'], macro)
        else:
            names |= _identifiers(n)
    return names


@cache
def c_kernel_view(rule: KernelRule, dtype: str) -> dict:
    kernel = lower(rule)
    real = REAL[dtype][0]
    printer = CPrinter(real)
    checks = [f'{printer.doprint(c)} >= 0' for c in kernel.checks]
    outs = ', '.join(n for n, _ in kernel.outputs)
    ins = ', '.join(n + (' (may be NULL)' if opt else '') for n, _, opt in kernel.inputs)
    codes = [(flag, len(checks) + 1 + i, what, sizes) for i, (flag, what, sizes) in enumerate(kernel.failures)]
    failure_text = '; '.join(f'returns {code} after the run if {what.format(*map(printer.doprint, sizes))}'
                             for _, code, what, sizes in codes)
    symbol, parts, parameters = c_symbol(rule.name, dtype), [], c_parameters(kernel, rule, dtype)
    body = outlined(printed_nodes(kernel.body, printer, real), symbol, parts, parameters)
    sizes = [p.name for p in kernel.params if p not in rule.real_params]
    read = _identifiers(checks) | _read_without(body, 'BP_VECTOR')
    stack = printed_nodes(stack_nodes(kernel.body), printer, real)
    workspace = dict(symbol=f'{symbol}_workspace', body=stack, sizes=sizes,
                     signature=', '.join(parameters[identifier(s)] for s in sizes) or 'void',
                     unused=[identifier(s) for s in sizes if identifier(s) not in _identifiers(checks)])
    return dict(symbol=symbol, real=real, signature=', '.join(parameters.values()), parameters=parameters,
                unused=[name for name in parameters if name not in read],
                parts=parts, workspace=workspace, checks=checks, check_text='; '.join(checks),
                failures=[(flag, code) for flag, code, _, _ in codes], failure_text=failure_text,
                failure_messages={code: (what, sizes) for _, code, what, sizes in codes}, body=body,
                doc=f'{rule.name}, {real}: {outs} from {ins}. Rule: {rule.source}.')


def c_sources(rules) -> dict[str, list]:
    """{C file name without extension: its rules}.  The files of SPLIT_BY_DIMS have one source per
    dimension count (bpgen_conv2d.c, ...) under their one header: a C compiler takes minutes over all
    the convolution kernels at -O3, and the sources compile in parallel."""
    sources = {}
    for r in rules:
        base = C_FILES[r.family]
        sources.setdefault(f'{base}{len(r.window)}d' if base in SPLIT_BY_DIMS else base, []).append(r)
    return dict(sorted(sources.items()))


def c_files(rules) -> dict[str, str]:
    """{relative path: content} for the C sources and headers."""
    files = {}
    for base in sorted(set(C_FILES.values())):
        chosen = [r for r in rules if C_FILES[r.family] == base]
        parts = [('c/kernels.h.j2', f'{base}.h', chosen)]
        parts += [('c/kernels.c.j2', f'{name}.c', mine) for name, mine in c_sources(chosen).items()]
        for template, name, mine in parts:
            text = environment().get_template(template).render(
                header=template_header('/*', template, mine, ('c/macros.j2',)), header_name=f'{base}.h',
                kernels=[c_kernel_view(r, dt) for r in mine for dt in REAL], parallel_work=PARALLEL_WORK,
                guard=f'BPGEN_{base.upper()}_H')
            files[f'c/{name}'] = text
    for template, name in (('c/runtime.h.j2', 'bpgen_runtime.h'), ('c/runtime.c.j2', 'bpgen_runtime.c')):
        files[f'c/{name}'] = environment().get_template(template).render(
            header=template_header('/*', template, ()), header_name='bpgen_runtime.h', guard='BPGEN_RUNTIME_H')
    return files


__all__ = ['c_files', 'c_sources', 'header', 'template_header', 'environment']
