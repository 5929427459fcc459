"""The lecture's convolution equations: proofs hold, false readings are refused, errata refuted."""
import pytest

from derive import conv
from derive.claims import all_claims
from derive.proof import prove_equal

CLAIMS = {c.id: c for c in all_claims()}


@pytest.mark.parametrize('cid', sorted(c for c in CLAIMS if c.startswith('conv.')))
def test_conv_claim(cid):
    claim = CLAIMS[cid]
    verdict = claim.check()
    assert claim.passes(verdict), verdict


def test_refusals():
    refused = conv.refusals()
    assert refused['eq22-true-convolution'][0] is False
    assert 'bodies differ' in refused['eq22-true-convolution'][1]
    assert refused['off-by-one'][0] is False
    assert refused['without-H>=k1'][0] is False and 'Karr' in refused['without-H>=k1'][1]


def test_eq14_read_as_cross_correlation_is_refused():
    proof = prove_equal('eq 14 as xcorr', conv.chain('weight'), conv.eq14('xcorr'), list(conv.AT_W))
    assert not proof.holds


def test_star_readings_table():
    sizes = [(4, 5, 2, 3), (5, 4, 3, 1), (3, 3, 1, 1)]
    table = conv.star_readings(sizes)
    assert table[('conv', 'valid', 'as written')][0] == 3       # eq 14 true as valid convolution
    assert table[('xcorr', 'full', 'as written')][1] == 3       # eq 22 true as full cross-correlation
    assert table[('conv', 'full', 'as written')][1] < 3         # eq 22 false as the lecture's convolution


def test_numeric_helpers_match_definitions():
    a = [[1, 2, 3], [4, 5, 6]]
    k = [[1, -1]]
    assert conv.correlate(a, k, 'valid') == [[-1, -1], [-1, -1]]
    assert conv.convolve(a, k, 'valid') == [[1, 1], [1, 1]]
    assert conv.convolve(a, k, 'full') == [[1, 1, 1, -3], [4, 1, 1, -6]]
    assert conv.correlate(a, k, 'full') == [[-1, -1, -1, 3], [-4, -1, -1, 6]]
    assert len(conv.correlate(a, [[1, 2, 3]], 'same')[0]) == 3
    assert conv.rot180(a) == [[6, 5, 4], [3, 2, 1]]


def test_lecture_gradients_evaluate_to_the_explicit_sums():
    from sympy import Derivative, IndexedBase

    from derive.zsum import evaluate
    values = {conv.H: 4, conv.W: 3, conv.k1: 2, conv.k2: 2}
    dx = conv.chain('input').result
    at = evaluate(dx, {**values, conv.ip: 1, conv.jp: 1})
    d, w = IndexedBase('delta'), IndexedBase('w')
    fprime = Derivative(conv.f(conv.x[1, 1]), conv.x[1, 1])
    expected = sum(d[1 - p, 1 - q] * w[p, q] for p in range(2) for q in range(2)) * fprime
    assert (at - expected).expand() == 0
