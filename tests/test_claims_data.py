"""The claim registry itself: every CLAIMS.md ID has exactly one check, data is well formed."""
import json
import re
from pathlib import Path

import pytest

from geometry_checks import claims as CL
from geometry_checks.errors import InputError

ROOT = Path(__file__).resolve().parent.parent


# The claim IDs of the project brief's CLAIMS.md, in its order (the brief lives outside this
# repository, and no test reads anything outside it). Each must have exactly one published
# figure (baselines/published/claims.json), one check (claims.ARTICLE_CHECKS) and one row of
# docs/claims.md.
CLAIMS_MD_IDS = (
    "collapse",
    "baseline-gap",
    "nonmonotonic-dip",
    "fixed-pca-smooth",
    "refit-pca-inflation",
    "meanpool-drift",
    "late-writes",
    "dims-overwritten",
    "late-discrimination",
    "matryoshka-bands",
    "separability-jump",
    "recall-easy",
    "recall-hard",
    "negation-pair",
    "role-reversal-pair",
    "stable-norms",
    "coherent-push",
    "cls-alignment",
    "pc1-orthogonal",
    "colbert-spread",
    "colbert-peak",
    "colbert-separability",
    "objective-fingerprint",
)


def test_every_claims_md_id_has_exactly_one_check():
    assert len(set(CLAIMS_MD_IDS)) == len(CLAIMS_MD_IDS)
    assert set(CLAIMS_MD_IDS) == set(CL.load_article_claims()) == set(CL.ARTICLE_CHECKS)


def test_docs_claims_md_has_one_row_per_claim():
    rows = re.findall(r"^\| ([a-z0-9-]+) +\|", (ROOT / "docs" / "claims.md").read_text(), flags=re.M)
    assert [r for r in rows if r in CLAIMS_MD_IDS] == list(CLAIMS_MD_IDS)


def test_published_curves_have_one_value_per_depth():
    claims = CL.load_article_claims()
    curves = next(iter(claims.values())).curves
    for model, data in curves.items():
        for name, curve in data["curves"].items():
            assert len(curve) == data["depths"], (model, name)


def test_docs_claims_md_is_up_to_date():
    assert (ROOT / "docs" / "claims.md").read_text() == CL.claims_markdown(), (
        "regenerate with: python -m geometry_checks.claims > docs/claims.md")


def test_corrupt_published_baseline_is_one_line(tmp_path):
    (tmp_path / "claims.json").write_text("{not json")
    (tmp_path / "embedding-layers.json").write_text("{}")
    with pytest.raises(InputError, match="corrupt baseline file") as info:
        CL.load_article_claims(tmp_path)
    assert "\n" not in str(info.value)


def test_published_baseline_missing_a_model_is_reported(tmp_path):
    (tmp_path / "claims.json").write_text(json.dumps({"claims": {}}))
    (tmp_path / "embedding-layers.json").write_text(json.dumps({"models": {}}))
    with pytest.raises(InputError, match="corrupt published baseline"):
        CL.load_article_claims(tmp_path)


def test_a_failing_check_names_model_claim_and_numbers():
    claim = CL.dense_claims()["dense-collapse"]

    class Flat:
        depths, last = 3, 2
        def curve(self, name):
            return [0.3, 0.31, 0.32]

    verdict = CL.run_dense_check(claim, Flat(), "toy")
    assert not verdict.passed
    assert verdict.message == (
        'toy / dense-collapse: measured intra 0.300 -> 0.320 (1.1x); expected >= 3.0x '
        '(tolerance min ratio 3.0): intra rises only 1.07x')
