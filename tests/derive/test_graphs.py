"""Computational graphs: path enumeration, the reverse-mode DP and the MLP recurrences."""
import doctest
import random

import pytest
from sympy import Symbol, cos, expand, sin, symbols

from derive import graphs
from derive.claims import _REGISTRY
from derive.graphs import (
    POST_ACTIVATION,
    PRE_ACTIVATION,
    Graph,
    Node,
    Recurrence,
    backprop,
    backprop_cost,
    count_paths,
    edges,
    layered_graph,
    lemma_dp_diff_agree,
    lemma_factor_count,
    local_derivatives,
    mlp,
    path_sum,
    paths,
    prove_recurrence,
    random_graph,
    true_weight_gradients,
    weight_gradients,
)

CLAIMS = sorted(i for i in _REGISTRY if i.startswith('graphs.'))


@pytest.mark.parametrize('claim_id', CLAIMS)
def test_claim_passes(claim_id):
    claim = _REGISTRY[claim_id]
    verdict = claim.check()
    assert claim.passes(verdict), verdict


def test_claims_registered():
    assert {'graphs.weight_gradient_slide', 'graphs.pre_activation', 'graphs.post_activation',
            'graphs.million_paths', 'graphs.aggregation_lemma', 'graphs.dp_update'} <= set(CLAIMS)
    assert not _REGISTRY['graphs.weight_gradient_slide'].expected


def test_docstring_example():
    assert doctest.testmod(graphs).failed == 0


@pytest.mark.parametrize('seed', range(12))
def test_lemma_equals_dp_equals_diff_on_fresh_random_dags(seed):
    graph = random_graph(random.Random(1000 + seed), n_inputs=3, n_nodes=6)
    assert lemma_dp_diff_agree(graph) == (True, f'{len(graph.variables) - 1} variables agree')


@pytest.mark.parametrize('seed', range(12))
def test_path_counts_match_enumeration(seed):
    graph = random_graph(random.Random(2000 + seed), n_inputs=2, n_nodes=7)
    for var in graph.variables:
        enumerated = paths(graph, var)
        assert count_paths(graph, var) == len(enumerated)
        assert lemma_factor_count(graph, var) == sum(len(p) - 1 for p in enumerated)
    assert backprop(graph).multiply_adds == len(edges(graph)) == backprop_cost(graph)


def test_layered_counts_without_enumeration():
    graph = layered_graph((3, 4, 5))
    w = graph.inputs[0]
    assert count_paths(graph, w) == 60
    assert backprop_cost(graph) == 3 + 12 + 20 + 5
    assert lemma_factor_count(graph, w) == 4 * 60


def test_two_path_local_derivatives():
    w, y, z, p, q, o = symbols('w y z p q o')
    graph = Graph((w,), (Node(y, w**2), Node(z, w**2), Node(p, cos(y)), Node(q, sin(z)), Node(o, p + q)))
    assert local_derivatives(graph) == {(w, y): 2 * w, (w, z): 2 * w, (y, p): -sin(y), (z, q): cos(z),
                                        (p, o): 1, (q, o): 1}
    assert paths(graph, w) == ((w, y, p, o), (w, z, q, o))
    assert expand(path_sum(graph, w) - (-2 * w * sin(y) + 2 * w * cos(z))) == 0


def test_unreachable_variable_has_zero_derivative():
    x, u, o = symbols('x u o')
    graph = Graph((x, u), (Node(o, sin(x)),))
    assert count_paths(graph, u) == 0
    assert backprop(graph).S(u) == 0 and path_sum(graph, u) == 0


def test_graph_rejects_use_before_definition():
    x, y, z = symbols('x y z')
    with pytest.raises(ValueError, match='before their definition'):
        Graph((x,), (Node(y, z), Node(z, x)))
    with pytest.raises(ValueError, match='defined twice'):
        Graph((x,), (Node(x, x**2),))


@pytest.mark.parametrize('widths', [(1, 1, 1), (2, 2, 1), (2, 3, 2, 1)])
def test_recurrences_proved(widths):
    assert prove_recurrence(mlp(widths), PRE_ACTIVATION)[0]
    assert prove_recurrence(mlp(widths), POST_ACTIVATION)[0]


@pytest.mark.parametrize('wrong', [
    Recurrence('pre', 'head', True),     # pre-activation with Phi'_j instead of Phi'_i
    Recurrence('pre', 'tail', False),    # delta(o, o) without Phi'_o
    Recurrence('post', 'tail', False),   # post-activation with Phi'_i instead of Phi'_j
    Recurrence('post', 'head', True),    # Delta(o, o) with a spurious Phi'_o
])
@pytest.mark.parametrize('widths', [(1, 1, 1), (2, 3, 1)])
def test_wrong_recurrence_not_proved(wrong, widths):
    ok, detail = prove_recurrence(mlp(widths), wrong)
    assert not ok and 'differs from the chain rule' in detail


def test_weight_gradient_uses_head_delta():
    net = mlp((2, 2, 1))
    truth, head, tail = true_weight_gradients(net), weight_gradients(net), weight_gradients(net, head=False)
    assert all(expand(head[w] - truth[w]) == 0 for w in truth)
    assert tail and all(expand(tail[w] - truth[w]) != 0 for w in tail)


def test_weight_gradient_erratum_counterexample():
    verdict = _REGISTRY['graphs.weight_gradient_slide'].check()
    assert '0.217274' in verdict.counterexample and '0.341748' in verdict.counterexample
    assert verdict.correction.startswith('dL/dw_ij = delta(j,o) * h_i')


def test_mlp_requires_single_output():
    with pytest.raises(ValueError):
        mlp((2, 2))


def test_dp_seed_scales_every_value():
    w, y, o = symbols('w y o')
    graph = Graph((w,), (Node(y, w**2), Node(o, sin(y))))
    seed = Symbol('s')
    assert expand(backprop(graph, seed).S(w) - seed * backprop(graph).S(w)) == 0
