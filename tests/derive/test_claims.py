"""The registry covers every slide with a formula or a stated rule, and the CLI reports it."""
import pytest

from codegen import cli, prove
from derive.claims import all_claims, select

SLIDES_WITH_RULES = [
    'Recursive nesting is ugly!', 'Backpropagation along single path', 'Backpropagation along multiple paths',
    'Example of multivariate chain rule', 'Path-wise Aggregation Lemma',
    'EXPTIME algorithm for computing partial derivatives', 'Example : Deep computational graph with product nodes',
    'Differentiating Composition Functions', 'Dynamic programming update',
    'Pre-activation variables to create Computational graph',
    'Post-activation variables to create computation graph', 'Converting scalar updates to vector form',
    'The Jacobian matrix', 'Forward & Backward propagation', 'Example', 'Vanishing and exploding gradient problems',
    'Convolution & Cross correlation', 'Convolution as a matrix multiplication', 'Convolutional neural Network',
    'Forward propagation (1/2)', 'Backpropagation (2/9)', 'Backpropagation (3/9)', 'Backpropagation (6/9)',
    'Backpropagation (8/9)', 'Backpropagation (9/9)', 'Pooling']
EQUATIONS = ['3', '4-5', '11-12', '10-13', '14', '16-17', '18-19', '20', '21', '22']
ERRATA = ['conv.output-size', 'pool.avg-multiplied', 'conv.eq3', 'conv.star-clash', 'pool.max-ties']


def test_every_slide_with_a_rule_has_claims():
    slides = ' | '.join(c.slide for c in all_claims())
    missing = [s for s in SLIDES_WITH_RULES if s not in slides]
    assert not missing


def test_every_numbered_equation_has_a_claim():
    equations = {c.equation for c in all_claims()}
    assert not [e for e in EQUATIONS if e not in equations]


def test_required_errata_are_registered_as_false():
    claims = {c.id: c for c in all_claims()}
    for cid in ERRATA:
        assert claims[cid].expected is False


def test_ids_are_unique_and_selectable():
    ids = [c.id for c in all_claims()]
    assert len(ids) == len(set(ids))
    assert [c.id for c in select(['conv.eq22'])] == ['conv.eq22']
    assert all(c.id.startswith('layer.conv1d.') for c in select(['layer.conv1d']))
    with pytest.raises(KeyError):
        select(['no.such.claim'])


def test_cli_prove_and_errata(capsys, tmp_path):
    assert cli.main(['prove', 'conv.eq20', 'conv.eq3']) == 0
    out = capsys.readouterr().out
    assert 'conv.eq20' in out and 'proved for all sizes' in out and 'ok (erratum)' in out
    assert cli.main(['prove', 'conv.eq22', '--format', 'latex', '-o', str(tmp_path / 'p.tex')]) == 0
    assert '\\begin{align*}' in (tmp_path / 'p.tex').read_text()
    assert cli.main(['prove', 'conv.eq22', '--format', 'markdown']) == 0
    assert '## conv.eq22' in capsys.readouterr().out
    assert cli.main(['prove', 'nope']) == 2
    assert cli.main(['errata']) == 0
    out = capsys.readouterr().out
    for cid in ERRATA:
        assert f'[{cid}]' in out
    assert 'Counterexample' in out


def test_a_failing_or_crashing_claim_makes_prove_fail(monkeypatch, capsys):
    import dataclasses

    from derive import claims
    from derive.claims import Verdict

    def crash():
        raise ZeroDivisionError('boom')

    original = claims._REGISTRY['conv.eq20']
    monkeypatch.setitem(claims._REGISTRY, 'conv.eq20', dataclasses.replace(
        original, check=lambda: Verdict('proved for all sizes', False)))
    assert cli.main(['prove', 'conv.eq20']) == 1
    assert 'FAILED' in capsys.readouterr().out
    monkeypatch.setitem(claims._REGISTRY, 'conv.eq20', dataclasses.replace(original, check=crash))
    outcome = prove.run(['conv.eq20'])[0]
    assert not outcome.ok and 'ZeroDivisionError: boom' in outcome.error


def test_an_erratum_found_true_fails():
    import dataclasses

    from derive.claims import PROVED, Verdict
    erratum = select(['conv.eq3'])[0]
    assert not erratum.passes(Verdict(PROVED, True))
    assert not dataclasses.replace(erratum, expected=True).passes(erratum.check())
