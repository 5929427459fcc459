"""Computational graphs and reverse-mode dynamic programming (the lecture's first half).

Slides "Recursive nesting is ugly!" through "Variables for both pre-activation and
post-activation values".

A computational graph is a DAG whose node i holds a variable y(i) (a SymPy Symbol)
defined by an expression of its parents' variables; inputs are plain symbols; the
last node is the output o.  Symbols that are not graph variables (weights) are
constants of the graph.  On an edge (i, j) the local derivative is

    z(i, j) = dy(j) / dy(i)                                 (slide "Path-wise Aggregation Lemma")

and, P being the set of paths from w to o,

    S(w, o) = do/dw = sum_{p in P} prod_{(i, j) in p} z(i, j)        (path-wise aggregation lemma)

Enumerating P is exponential (slide "EXPTIME algorithm for computing partial
derivatives"); the dynamic programme of slide "Dynamic programming update",

    S(o, o) = 1,    S(i, o) = sum_{j in A(i)} S(j, o) z(i, j)   (A(i): heads of the edges out of i)

run in reverse topological order, does one multiply-add per edge.  For a
multilayer perceptron with activation Phi, pre-activations a_j = sum_i w_ij h_i and
post-activations h_j = Phi(a_j) (slides "Pre-activation variables ..." and
"Post-activation variables ..."):

    delta(i, o) = Phi'(a_i) sum_j w_ij delta(j, o),     delta(o, o) = L'(o) Phi'(a_o)
    Delta(i, o) = sum_j w_ij Delta(j, o) Phi'(a_j),     Delta(o, o) = L'(o)
    dL/dw_ij    = delta(j, o) h_i      (the slide writes delta(i, o) h_i: an erratum)

Every claim is checked against sympy.diff of the fully substituted output.

>>> w = Symbol('w'); y, o = symbols('y o')
>>> g = Graph((w,), (Node(y, w**2), Node(o, cos(y))))
>>> at_forward(g, backprop(g).S(w))
-2*w*sin(w**2)
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise

from sympy import (
    Add,
    Dummy,
    Expr,
    Function,
    Id,
    Lambda,
    Mul,
    S,
    Symbol,
    cos,
    diff,
    exp,
    expand,
    sin,
    symbols,
    tanh,
)

from .claims import FALSE, PROVED, Identity, Note, Verdict, claim, grid

# ----------------------------------------------------------------------------- graphs


@dataclass(frozen=True)
class Node:
    """y(i) = expr, an expression of earlier graph variables (and constants)."""

    symbol: Symbol
    expr: Expr


@dataclass(frozen=True)
class Graph:
    """A DAG of nodes in topological order; the last node is the output o."""

    inputs: tuple
    nodes: tuple

    def __post_init__(self):
        names = set(self.inputs) | {n.symbol for n in self.nodes}
        seen = set(self.inputs)
        for node in self.nodes:
            if node.symbol in seen:
                raise ValueError(f'variable {node.symbol} defined twice')
            late = (node.expr.free_symbols & names) - seen
            if late:
                raise ValueError(f'node {node.symbol} uses {sorted(map(str, late))} before their definition')
            seen.add(node.symbol)

    @property
    def variables(self) -> tuple:
        return tuple(self.inputs) + tuple(n.symbol for n in self.nodes)

    @property
    def output(self) -> Symbol:
        return self.nodes[-1].symbol


def parents(graph: Graph) -> dict:
    """Parents of every node, in topological order."""
    order = {v: k for k, v in enumerate(graph.variables)}
    return {n.symbol: tuple(sorted((s for s in n.expr.free_symbols if s in order), key=order.get))
            for n in graph.nodes}


def successors(graph: Graph) -> dict:
    """A(i): the heads of the edges out of every variable i."""
    out = {v: [] for v in graph.variables}
    for head, tails in parents(graph).items():
        for tail in tails:
            out[tail].append(head)
    return {v: tuple(heads) for v, heads in out.items()}


def edges(graph: Graph) -> tuple:
    return tuple((tail, head) for head, tails in parents(graph).items() for tail in tails)


def local_derivatives(graph: Graph) -> dict:
    """z(i, j) = dy(j)/dy(i) on every edge, in terms of the parents' variables."""
    exprs = {n.symbol: n.expr for n in graph.nodes}
    return {(i, j): diff(exprs[j], i) for i, j in edges(graph)}


# ----------------------------------------------------------------------------- lemma and DP


def paths(graph: Graph, start: Symbol) -> tuple:
    """Every path from ``start`` to the output, as a tuple of variables (exponentially many)."""
    after = successors(graph)

    def walk(v):
        if v == graph.output:
            return ((v,),)
        return tuple((v,) + rest for head in after[v] for rest in walk(head))
    return walk(start)


def path_sum(graph: Graph, start: Symbol) -> Expr:
    """The path-wise aggregation lemma: sum over paths of the product of local derivatives."""
    z = local_derivatives(graph)
    return Add(*[Mul(*[z[e] for e in pairwise(p)]) for p in paths(graph, start)])


@dataclass(frozen=True)
class Backward:
    """The result of the dynamic programme: S(i, o) for every variable, and its cost."""

    values: tuple            # ((variable, S(variable, o)), ...) in reverse topological order
    multiply_adds: int       # one per edge visited

    def S(self, var: Symbol) -> Expr:
        return dict(self.values)[var]


def backprop(graph: Graph, seed: Expr = S.One) -> Backward:
    """S(o, o) = seed (1 for do/dy(i); dL/do for a loss); S(i, o) = sum_{j in A(i)} S(j, o) z(i, j),
    in reverse topological order."""
    z, after = local_derivatives(graph), successors(graph)
    values, count = {graph.output: seed}, 0
    for v in reversed(graph.variables[:-1]):
        values[v] = Add(*[values[j] * z[(v, j)] for j in after[v]])
        count += len(after[v])
    return Backward(tuple(values.items()), count)


def _to_output_counts(graph: Graph) -> dict:
    after = successors(graph)
    counts = {graph.output: 1}
    for v in reversed(graph.variables[:-1]):
        counts[v] = sum(counts[j] for j in after[v])
    return counts


def count_paths(graph: Graph, start: Symbol) -> int:
    """|P| by dynamic programming (no enumeration): N(o) = 1, N(i) = sum_{j in A(i)} N(j)."""
    return _to_output_counts(graph)[start]


def backprop_cost(graph: Graph) -> int:
    """Multiply-adds of the dynamic programme (one per edge), without computing derivatives."""
    return len(edges(graph))


def lemma_factor_count(graph: Graph, start: Symbol) -> int:
    """Local-derivative factors the lemma multiplies: sum over paths of their length, by DP."""
    to_output, before = _to_output_counts(graph), parents(graph)
    from_start = {v: int(v == start) for v in graph.inputs}
    for node in graph.nodes:
        from_start[node.symbol] = int(node.symbol == start) + sum(from_start[p] for p in before[node.symbol])
    return sum(from_start[i] * to_output[j] for i, j in edges(graph))


# ----------------------------------------------------------------------------- checking against sympy.diff


def forward_values(graph: Graph, keep: tuple = ()) -> dict:
    """Every variable in terms of the inputs and of the variables in ``keep`` (held free)."""
    values = {v: v for v in graph.inputs}
    for node in graph.nodes:
        free = node.symbol in keep
        values[node.symbol] = node.symbol if free else node.expr.xreplace(values)
    return values


def at_forward(graph: Graph, expr: Expr, keep: tuple = ()) -> Expr:
    """Substitute the forward values of the variables (except ``keep``) into ``expr``."""
    values = forward_values(graph, keep)
    return expr.subs([(v, e) for v, e in values.items() if v != e])


def chain_rule(graph: Graph, var: Symbol) -> Expr:
    """d o / d var by sympy.diff of the output written in terms of var (held free) and the inputs."""
    return diff(forward_values(graph, keep=(var,))[graph.output], var)


def lemma_dp_diff_agree(graph: Graph, via: tuple = ('lemma', 'dp')) -> tuple[bool, str]:
    """For every variable w: the lemma and/or the DP (as asked by ``via``) equal sympy.diff."""
    dp = backprop(graph)
    for var in graph.variables[:-1]:
        truth = chain_rule(graph, var)
        computed = {'lemma': path_sum(graph, var), 'dp': dp.S(var)}
        for name in via:
            if expand(at_forward(graph, computed[name], keep=(var,)) - truth) != 0:
                return False, f'{name} differs from sympy.diff at {var}'
    return True, f'{len(graph.variables) - 1} variables agree'


_UNARY = (Id, sin, cos, exp)
_COMBINE = (Add, Mul)


def random_graph(rng: random.Random, n_inputs: int = 2, n_nodes: int = 5) -> Graph:
    """A random DAG: each node is sin/cos/exp/identity of a sum or product of 1-2 earlier variables;
    the output is the sum of the nodes nobody uses (so every node reaches it)."""
    variables = list(symbols(f'x0:{n_inputs}'))
    nodes = []
    for k in range(n_nodes):
        chosen = rng.sample(variables, rng.randint(1, min(2, len(variables))))
        expr = rng.choice(_UNARY)(rng.choice(_COMBINE)(*chosen))
        nodes.append(Node(Symbol(f'y{k}'), expr))
        variables.append(nodes[-1].symbol)
    used = set().union(*(n.expr.free_symbols for n in nodes))
    sinks = [n.symbol for n in nodes if n.symbol not in used]
    nodes.append(Node(Symbol('o'), Add(*sinks)))
    return Graph(tuple(variables[:n_inputs]), tuple(nodes))


def layered_graph(widths: tuple, combine=Add) -> Graph:
    """w -> dense layers of the given widths -> o; every node combines all nodes of the layer before."""
    w = Symbol('w')
    previous, nodes = [w], []
    for layer, width in enumerate(widths, 1):
        current = [Symbol(f'h{layer}_{k}') for k in range(width)]
        nodes += [Node(s, combine(*previous)) for s in current]
        previous = current
    nodes.append(Node(Symbol('o'), combine(*previous)))
    return Graph((w,), tuple(nodes))


def sigmoid(e: Expr) -> Expr:
    """The logistic sigmoid 1 / (1 + exp(-e))."""
    return 1 / (1 + exp(-e))


# ----------------------------------------------------------------------------- multilayer perceptrons

PHI_PRIME = Function("Phi'")
LOSS_PRIME = Function("L'")


class Phi(Function):
    """An undefined activation whose derivative is the undefined function Phi' (no Subs objects)."""

    nargs = 1

    def fdiff(self, argindex=1):
        return PHI_PRIME(self.args[0])


class L(Function):
    """An undefined loss of the output, with derivative L'."""

    nargs = 1

    def fdiff(self, argindex=1):
        return LOSS_PRIME(self.args[0])


PHI, LOSS = Phi, L


@dataclass(frozen=True)
class Mlp:
    """Layers 0..depth; layer 0 holds the inputs x, the last layer the single output o = h_depth."""

    widths: tuple
    pre: tuple       # pre[l][j] = a_j of layer l (pre[0] == ())
    post: tuple      # post[l][j] = h_j = Phi(a_j); post[0] = the inputs
    weights: tuple   # weights[l][i][j]: from node i of layer l - 1 to node j of layer l (weights[0] == ())

    @property
    def depth(self) -> int:
        return len(self.widths) - 1


def mlp(widths: tuple) -> Mlp:
    if len(widths) < 2 or widths[-1] != 1:
        raise ValueError(f'widths {widths}: need an input layer and a single output node')
    post = [symbols(f'x0:{widths[0]}')]
    pre = [()]
    weights = [()]
    for layer in range(1, len(widths)):
        pre.append(symbols(f'a{layer}_0:{widths[layer]}'))
        post.append(symbols(f'h{layer}_0:{widths[layer]}'))
        weights.append(tuple(tuple(Symbol(f'w{layer}_{i}_{j}') for j in range(widths[layer]))
                             for i in range(widths[layer - 1])))
    return Mlp(tuple(widths), tuple(pre), tuple(post), tuple(weights))


def hidden(net: Mlp, view: str, layer: int, i: int) -> Expr:
    """h_i of a layer as seen from the view's variables ('pre': Phi(a_i); 'post': h_i; inputs: x_i)."""
    return net.post[layer][i] if view == 'post' or layer == 0 else PHI(net.pre[layer][i])


def pre_value(net: Mlp, view: str, layer: int, j: int) -> Expr:
    """a_j = sum_i w_ij h_i over the layer before, in the view's variables."""
    return Add(*[row[j] * hidden(net, view, layer - 1, i) for i, row in enumerate(net.weights[layer])])


def _value(net: Mlp, view: str, layer: int, j: int) -> Expr:
    return pre_value(net, view, layer, j) if view == 'pre' else PHI(pre_value(net, view, layer, j))


def _variables(net: Mlp, view: str, layer: int) -> tuple:
    return net.pre[layer] if view == 'pre' else net.post[layer]


def express_in_layer(net: Mlp, view: str, layer: int, expr: Expr) -> Expr:
    """Rewrite an expression of deeper variables in terms of the view's variables of ``layer``."""
    for m in range(net.depth, layer, -1):
        expr = expr.xreplace({v: _value(net, view, m, j) for j, v in enumerate(_variables(net, view, m))})
    return expr


def loss_in_layer(net: Mlp, view: str, layer: int) -> Expr:
    """L(o) written in terms of the view's variables of ``layer`` (layer 0: the inputs)."""
    return express_in_layer(net, view, layer, LOSS(hidden(net, view, net.depth, 0)))


@dataclass(frozen=True)
class Recurrence:
    """S(i, o) = [Phi'_i] sum_j w_ij S(j, o) [Phi'_j],  S(o, o) = L'(o) [Phi'_o]."""

    view: str        # 'pre': variables a_i;  'post': variables h_i
    phi_at: str      # 'tail': Phi'_i outside the sum;  'head': Phi'_j inside it
    seed_phi: bool   # S(o, o) carries Phi'_o


PRE_ACTIVATION = Recurrence('pre', 'tail', True)
POST_ACTIVATION = Recurrence('post', 'head', False)


def _phi_prime(net: Mlp, view: str, layer: int, j: int) -> Expr:
    a = net.pre[layer][j] if view == 'pre' else pre_value(net, view, layer, j)
    return PHI_PRIME(a)


def recurrence(net: Mlp, rec: Recurrence) -> dict:
    """S(v, o) for every variable v of the view, by the recurrence ``rec``."""
    depth, first = net.depth, 1 if rec.view == 'pre' else 0
    out = _variables(net, rec.view, depth)[0]
    values = {out: LOSS_PRIME(hidden(net, rec.view, depth, 0))
              * (_phi_prime(net, rec.view, depth, 0) if rec.seed_phi else 1)}
    for layer in range(depth - 1, first - 1, -1):
        heads = _variables(net, rec.view, layer + 1)
        for i, v in enumerate(_variables(net, rec.view, layer)):
            terms = [net.weights[layer + 1][i][j] * values[h]
                     * (_phi_prime(net, rec.view, layer + 1, j) if rec.phi_at == 'head' else 1)
                     for j, h in enumerate(heads)]
            values[v] = Add(*terms) * (_phi_prime(net, rec.view, layer, i) if rec.phi_at == 'tail' else 1)
    return values


def prove_recurrence(net: Mlp, rec: Recurrence) -> tuple[bool, str]:
    """The recurrence equals dL/dv by sympy.diff for every variable v (expanded difference is 0)."""
    values = recurrence(net, rec)
    for layer in range(net.depth, 0 if rec.view == 'pre' else -1, -1):
        loss = loss_in_layer(net, rec.view, layer)
        for v in _variables(net, rec.view, layer):
            truth = diff(loss, v)
            if expand(express_in_layer(net, rec.view, layer, values[v]) - truth) != 0:
                return False, f'differs from the chain rule at {v}'
    return True, f'{sum(net.widths) - (net.widths[0] if rec.view == "pre" else 0)} variables agree'


def _weights(net: Mlp) -> tuple:
    """(layer, i, j, w_ij) for every weight."""
    return tuple((layer, i, j, w) for layer in range(1, net.depth + 1)
                 for i, row in enumerate(net.weights[layer]) for j, w in enumerate(row))


def weight_gradients(net: Mlp, head: bool = True) -> dict:
    """delta(j, o) h_i (head=True: the chain rule) or delta(i, o) h_i (head=False: the slide's words,
    only for weights out of a hidden node), in terms of the inputs."""
    deltas = recurrence(net, PRE_ACTIVATION)
    out = {}
    for layer, i, j, w in _weights(net):
        if head or layer > 1:
            delta = deltas[net.pre[layer][j] if head else net.pre[layer - 1][i]]
            out[w] = express_in_layer(net, 'pre', 0, delta * hidden(net, 'pre', layer - 1, i))
    return out


def true_weight_gradients(net: Mlp) -> dict:
    """dL/dw_ij by sympy.diff of the loss written in the inputs and weights."""
    loss = loss_in_layer(net, 'post', 0)
    return {w: diff(loss, w) for *_, w in _weights(net)}


# ----------------------------------------------------------------------------- claims

def _prove_graph(graph: Graph, var: Symbol, expected: Expr, name: str) -> tuple[bool, tuple]:
    """DP, lemma and sympy.diff of the substituted output all equal ``expected`` (in the inputs)."""
    dp = at_forward(graph, backprop(graph).S(var))
    lemma = at_forward(graph, path_sum(graph, var))
    truth = chain_rule(graph, var)
    ok = all(expand(e - expected) == 0 for e in (dp, lemma, truth))
    return ok, (Identity(f'{name}: DP', dp, expected, 'expand(lhs - rhs) == 0'),
                Identity(f'{name}: sympy.diff', truth, expected, 'expand(lhs - rhs) == 0'))


@claim('graphs.nested_sigmoid', 'Recursive nesting is ugly!',
       'w -> y = sigmoid(w) -> o = sigmoid(y) composes to 1/(1+exp(-1/(1+exp(-w)))); DP == lemma == diff')
def _nested_sigmoid() -> Verdict:
    w, y, o = symbols('w y o')
    graph = Graph((w,), (Node(y, sigmoid(w)), Node(o, sigmoid(y))))
    slide = 1 / (1 + exp(-1 / (1 + exp(-w))))
    composed = forward_values(graph)[o]
    ok, evidence = _prove_graph(graph, w, diff(slide, w), 'do/dw')
    return Verdict(PROVED, ok and composed == slide,
                   (Identity('f(g(w))', composed, slide, 'structurally equal'),) + evidence)


@claim('graphs.single_path', 'Backpropagation along single path',
       'o = cos(y), y = w^2 (one path): product of local derivatives = -2 w sin(w^2) = d cos(w^2)/dw')
def _single_path() -> Verdict:
    w, y, o = symbols('w y o')
    graph = Graph((w,), (Node(y, w**2), Node(o, cos(y))))
    ok, evidence = _prove_graph(graph, w, -2 * w * sin(w**2), 'do/dw')
    return Verdict(PROVED, ok and count_paths(graph, w) == 1, evidence)


@claim('graphs.multivariate_chain_rule', 'Backpropagation along multiple paths',
       'd f(g_1(w),...,g_k(w))/dw = sum_i df/dg_i * g_i\'(w) for undefined f, g_i; DP == diff; k = 1..4')
def _multivariate_chain_rule() -> Verdict:
    w, o = symbols('w o')
    f = Function('f')
    for k in range(1, 5):
        gs = symbols(f'g1:{k + 1}')
        inner = [Function(f'G{n}')(w) for n in range(1, k + 1)]
        graph = Graph((w,), tuple(Node(g, G) for g, G in zip(gs, inner)) + (Node(o, f(*gs)),))
        slide = Add(*[diff(f(*gs), g) * diff(G, w) for g, G in zip(gs, inner)])
        dp = backprop(graph).S(w)
        if expand(dp - slide) != 0 or expand(at_forward(graph, dp) - chain_rule(graph, w)) != 0:
            return Verdict(grid('k = 1..4'), False, (Note(f'fails at k = {k}'),))
    shown = Identity('k = 4', at_forward(graph, slide), chain_rule(graph, w), 'expand(lhs - rhs) == 0')
    return Verdict(grid('k = 1..4 (undefined f and g_i)'), True, (shown,))


@claim('graphs.two_path_example', 'Example of multivariate chain rule',
       'o = K(p,q) = p + q, p = cos(y), q = sin(z), y = z = w^2: two paths, '
       'do/dw = -2w sin(w^2) + 2w cos(w^2)')
def _two_path_example() -> Verdict:
    w, y, z, p, q, o = symbols('w y z p q o')
    graph = Graph((w,), (Node(y, w**2), Node(z, w**2), Node(p, cos(y)), Node(q, sin(z)), Node(o, p + q)))
    ok, evidence = _prove_graph(graph, w, -2 * w * sin(w**2) + 2 * w * cos(w**2), 'do/dw')
    return Verdict(PROVED, ok and count_paths(graph, w) == 2, evidence)


RANDOM_SEED, RANDOM_GRAPHS = 2021, 24


@lru_cache(maxsize=1)
def random_graphs() -> tuple:
    rng = random.Random(RANDOM_SEED)
    return tuple(random_graph(rng, n_inputs=2, n_nodes=rng.randint(3, 6)) for _ in range(RANDOM_GRAPHS))


def _random_verdict(via: str) -> Verdict:
    graphs = random_graphs()
    for n, graph in enumerate(graphs):
        ok, detail = lemma_dp_diff_agree(graph, (via,))
        if not ok:
            return Verdict(grid('random DAGs'), False, (Note(f'graph {n}: {detail}: {graph}'),))
    method = grid(f'{RANDOM_GRAPHS} random DAGs (random.Random({RANDOM_SEED}), 2 inputs, 3-6 nodes of '
                  'sin/cos/exp/identity of sums or products), every variable')
    variables = sum(len(g.variables) - 1 for g in graphs)
    return Verdict(method, True, (Note(f'{variables} derivatives S(i, o) by the {via} equal sympy.diff'),))


@claim('graphs.aggregation_lemma', 'Path-wise Aggregation Lemma',
       'S(w,o) = sum over paths of the product of z(i,j) equals sympy.diff, for every variable w of '
       'random DAGs')
def _aggregation_lemma() -> Verdict:
    return _random_verdict('lemma')


@claim('graphs.exponential_paths', 'EXPTIME algorithm for computing partial derivatives',
       'width-2 layered graphs of depth L: |P| = 2^L paths (lemma: (L+1) 2^L factors), DP: 4L multiply-adds')
def _exponential_paths() -> Verdict:
    for depth in range(1, 31):
        graph = layered_graph((2,) * depth)
        w = graph.inputs[0]
        counts = (count_paths(graph, w), lemma_factor_count(graph, w), backprop_cost(graph))
        if counts != (2**depth, (depth + 1) * 2**depth, 4 * depth):
            return Verdict(grid('depth L = 1..30'), False, (Note(f'L = {depth}: {counts}'),))
    note = Note(f'L = 30: {counts[0]} paths, {counts[1]} lemma factors, {counts[2]} DP multiply-adds')
    return Verdict(grid('depth L = 1..30'), True, (note,))


@claim('graphs.product_graph', 'Example : Deep computational graph with product nodes',
       'w -> 5 layers of 2 product nodes -> O = product: 32 paths, each path product w^31, dO/dw = 32 w^31')
def _product_graph() -> Verdict:
    graph = layered_graph((2, 2, 2, 2, 2), combine=Mul)
    w = graph.inputs[0]
    z = local_derivatives(graph)
    products = {expand(at_forward(graph, Mul(*[z[e] for e in pairwise(p)]))) for p in paths(graph, w)}
    ok, evidence = _prove_graph(graph, w, 32 * w**31, 'dO/dw')
    holds = ok and count_paths(graph, w) == 32 and products == {w**31}
    note = Note(f'{count_paths(graph, w)} paths, path products {products}')
    return Verdict(PROVED, holds, evidence + (note,))


@claim('graphs.million_paths', 'Example : Deep computational graph with product nodes',
       'w -> 3 dense layers of 100 nodes -> o: 10^6 paths (4*10^6 lemma factors) vs 20200 DP multiply-adds')
def _million_paths() -> Verdict:
    graph = layered_graph((100, 100, 100))
    w = graph.inputs[0]
    paths_, factors, cost = count_paths(graph, w), lemma_factor_count(graph, w), backprop_cost(graph)
    note = Note(f'|P| = {paths_}, lemma factors = {factors}, DP multiply-adds = {cost} (= edges)')
    return Verdict(grid('the slide\'s graph: 1 input, 3 dense layers of 100, 1 output'),
                   (paths_, factors, cost) == (10**6, 4 * 10**6, 20200), (note,))


@claim('graphs.shared_subexpression', 'Differentiating Composition Functions',
       'f(w) = sin(w^2) + cos(w^2) with y = w^2 shared: DP uses z(w,y) = 2w once (the lemma twice); '
       'DP == diff')
def _shared_subexpression() -> Verdict:
    w, y, s, c, o = symbols('w y s c o')
    graph = Graph((w,), (Node(y, w**2), Node(s, sin(y)), Node(c, cos(y)), Node(o, s + c)))
    ok, evidence = _prove_graph(graph, w, 2 * w * cos(w**2) - 2 * w * sin(w**2), 'df/dw')
    dp, z_wy = backprop(graph), local_derivatives(graph)[(w, y)]
    uses_in_lemma = sum(1 for p in paths(graph, w) if p[:2] == (w, y))
    once = dp.S(w) == dp.S(y) * z_wy
    note = Note(f'edge (w, y) lies on {uses_in_lemma} paths; the DP multiplies z(w, y) = {z_wy} once: '
                f'S(w, o) = S(y, o) * {z_wy} = {dp.S(w)} ({dp.multiply_adds} multiply-adds)')
    return Verdict(PROVED, ok and uses_in_lemma == 2 and once, evidence + (note,))


@claim('graphs.dp_update', 'Dynamic programming update',
       'S(o,o) = 1, S(i,o) = sum_{j in A(i)} S(j,o) z(i,j) equals sympy.diff, for every variable of '
       'random DAGs')
def _dp_update() -> Verdict:
    return _random_verdict('dp')


MLP_GRID = ((1, 1, 1), (2, 2, 1), (2, 3, 1), (3, 2, 1), (2, 2, 2, 1), (2, 3, 2, 1), (3, 3, 3, 1),
            (2, 2, 2, 2, 1))
_MLP_GRID_TEXT = 'MLP widths ' + ', '.join(map(str, MLP_GRID)) + ' (symbolic weights, undefined Phi and L)'


def _recurrence_verdict(rec: Recurrence) -> Verdict:
    for widths in MLP_GRID:
        ok, detail = prove_recurrence(mlp(widths), rec)
        if not ok:
            return Verdict(grid(_MLP_GRID_TEXT), False, (Note(f'{widths}: {detail}'),))
    net = mlp(MLP_GRID[-1])
    v = _variables(net, rec.view, 1)[0]
    shown = Identity(f'S({v}, o), widths {MLP_GRID[-1]}', recurrence(net, rec)[v],
                     diff(loss_in_layer(net, rec.view, 1), v), 'expand after substitution')
    return Verdict(grid(_MLP_GRID_TEXT), True, (shown,))


@claim('graphs.pre_activation', 'Pre-activation variables to create Computational graph',
       "z(i,j) = w_ij Phi'_i; delta(i,o) = Phi'_i sum_j w_ij delta(j,o), delta(o,o) = L'(o) Phi'_o "
       'equals dL/da_i')
def _pre_activation() -> Verdict:
    return _recurrence_verdict(PRE_ACTIVATION)


def _weight_gradients_proved() -> bool:
    """dL/dw_ij == delta(j, o) h_i for every weight of every MLP of the grid."""
    for widths in MLP_GRID:
        net = mlp(widths)
        truth, computed = true_weight_gradients(net), weight_gradients(net)
        if any(expand(computed[w] - truth[w]) != 0 for w in truth):
            return False
    return True


def _tiny_counterexample() -> tuple[Expr, Expr, str]:
    """x -> a1 = w1 x -> h1 = tanh(a1) -> a2 = w2 h1 -> o = tanh(a2), L(o) = o; w2 joins node 1 to node 2."""
    net = mlp((1, 1, 1))
    t = Dummy('t')
    w1, w2, x = net.weights[1][0][0], net.weights[2][0][0], net.post[0][0]
    numbers = {x: 1, w1: S.Half, w2: 2}
    concrete = {PHI: Lambda(t, tanh(t)), PHI_PRIME: Lambda(t, 1 - tanh(t)**2), LOSS: Lambda(t, t),
                LOSS_PRIME: Lambda(t, 1)}

    def evaluate(e):
        return e.subs(concrete).doit().subs(numbers).evalf(6)
    truth = evaluate(true_weight_gradients(net)[w2])
    slide = evaluate(weight_gradients(net, head=False)[w2])
    text = (f'MLP x -> h1 = tanh(w1 x) -> o = tanh(w2 h1), L = o, x = 1, w1 = 1/2, w2 = 2: '
            f'dL/dw2 = {truth} (chain rule = delta(2,o) h1) but delta(1,o) h1 = {slide}')
    return truth, slide, text


@claim('graphs.weight_gradient_slide', 'Pre-activation variables to create Computational graph',
       'slide: dL/dw_ij = delta(i,o) * h_i (delta of the tail node i); checked against sympy.diff',
       expected=False)
def _weight_gradient_slide() -> Verdict:
    truth, slide, text = _tiny_counterexample()
    corrected = _weight_gradients_proved()
    net = mlp((1, 1, 1))
    w2 = net.weights[2][0][0]
    identity = Identity(f'dL/d{w2} (widths (1, 1, 1))', true_weight_gradients(net)[w2],
                        weight_gradients(net)[w2], 'expand(lhs - rhs) == 0')
    return Verdict(FALSE, abs(truth - slide) < 1e-9, (identity, Note(text)),
                   correction='dL/dw_ij = delta(j,o) * h_i: the delta of the HEAD node j times the hidden '
                              f'value of the tail node i (proved for every weight, {_MLP_GRID_TEXT})',
                   correction_verified=corrected, counterexample=text)


@claim('graphs.post_activation', 'Post-activation variables to create computation graph',
       "z(i,j) = w_ij Phi'_j; Delta(i,o) = sum_j w_ij Delta(j,o) Phi'_j, Delta(o,o) = L'(o) equals dL/dh_i")
def _post_activation() -> Verdict:
    return _recurrence_verdict(POST_ACTIVATION)
