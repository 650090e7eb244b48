"""Issue 23: untrained controls (`NAME@init:SEED`) and the thesis verdict of the claim x model matrix.

A control is the registered architecture's config and tokenizer with the weights its
family's initialisation draws from a seed: nothing is read from a weights file, the same
seed gives the same weights, and it is never taken for the trained model.
"""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from geometry_checks import claims as CL
from geometry_checks import loader
from geometry_checks import report as R
from geometry_checks.errors import InputError
from geometry_checks.registry import (
    ALL_MODELS,
    control_name,
    control_spec,
    parse_control,
)
from geometry_checks.thesis import THESES, member_state, thesis_verdict

# --------------------------------------------------------------------------- names and specs


@pytest.mark.parametrize("name, expected", [
    ("minilm@init", ("minilm", 0)), ("minilm@init:2", ("minilm", 2)), ("gemma3@init:10", ("gemma3", 10)),
    ("/some/dir@init:1", ("/some/dir", 1)), ("minilm", None), ("org/model", None), ("minilm@initial", None),
])
def test_parse_control(name, expected):
    assert parse_control(name) == expected


@pytest.mark.parametrize("name", ["minilm@init:x", "minilm@init:-1", "minilm@init:", "minilm@init:1.5",
                                  f"minilm@init:{2 ** 64}"])
def test_a_bad_seed_is_one_line(name):
    with pytest.raises(InputError, match=r"BASE@init:SEED with SEED a non-negative integer") as info:
        parse_control(name)
    assert "\n" not in str(info.value)


def test_control_spec_keeps_the_layout_and_drops_every_pin():
    for base in ALL_MODELS.values():
        spec = control_spec(base, 3)
        assert spec.name == control_name(base.name, 3) == f"{base.name}@init:3"
        assert (spec.init_seed, spec.objective, spec.source) == (3, "untrained", "init")
        assert spec.weights is None and spec.weights_sha256 is None and spec.revision is None
        assert not spec.listed and not spec.installed
        for field in ("layers", "hidden_size", "pooling", "causal", "blocks_module", "embeddings_module",
                      "attn_output_module", "final_norm_module", "family"):
            assert getattr(spec, field) == getattr(base, field), field
    assert {s.objective for s in ALL_MODELS.values()} == {"contrastive", "late-interaction", "next-token"}


# --------------------------------------------------------------------------- loading


@pytest.fixture(scope="module")
def minilm_init():
    return [loader.load(loader.resolve(f"minilm@init:{seed}"), device="cpu") for seed in (0, 0, 1)]


def test_the_seed_decides_the_weights_and_nothing_else_does(minilm_init):
    a, b, c = minilm_init
    ua, ub, uc = (m.provenance["untrained"] for m in (a, b, c))
    assert ua["seed"] == 0 and uc["seed"] == 1
    assert ua["parameters_sha256"] == ub["parameters_sha256"] != uc["parameters_sha256"]
    pa, pc = dict(a.model.named_parameters()), dict(c.model.named_parameters())
    w = "encoder.layer.0.attention.self.query.weight"
    assert torch.equal(pa[w], dict(b.model.named_parameters())[w]) and not torch.equal(pa[w], pc[w])
    # the family's own initialisation: BERT draws weights from N(0, initializer_range = 0.02)
    assert ua["initializer_range"] == 0.02 and abs(float(pa[w].detach().std()) - 0.02) < 0.001
    assert torch.equal(pa["embeddings.LayerNorm.weight"], torch.ones(384))


def test_a_control_is_no_trained_model(minilm_init):
    a = minilm_init[0]
    assert a.provenance["objective"] == "untrained" and a.provenance["weights_sha256"] is None
    assert a.spec.name == "minilm@init:0" and a.spec.layers == 6
    trained = loader.load(loader.resolve("minilm"), device="cpu")
    w = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(dict(trained.model.named_parameters())[w], dict(a.model.named_parameters())[w])
    assert trained.provenance["objective"] == "contrastive" and "untrained" not in trained.provenance


def test_loading_a_control_leaves_the_callers_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    loader.load(loader.resolve("minilm@init:5"), device="cpu")
    assert torch.equal(torch.rand(3), expected)


def test_a_control_reads_no_weights_file(tmp_path):
    """A directory with config and tokenizer but no weights: no model of its own, a control yes."""
    source = loader.bundled_minilm_dir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (source / name).is_file():
            shutil.copy(source / name, tmp_path / name)
    with pytest.raises(InputError, match="has no weights"):
        loader.resolve(str(tmp_path))
    ref = loader.resolve(f"{tmp_path}@init:0")
    loaded = loader.load(ref, device="cpu")
    assert loaded.provenance["untrained"]["parameters_sha256"] == loader.load(
        loader.resolve("minilm@init:0"), device="cpu").provenance["untrained"]["parameters_sha256"]


def test_a_control_of_a_model_not_here_says_how_to_supply_it(monkeypatch):
    monkeypatch.setattr(loader, "hub_cache_dir", lambda *a, **k: None)
    with pytest.raises(loader.ModelNotAvailable, match=r"mxbai@init:0: the untrained control needs mxbai's "
                                                          r"config.json and tokenizer: weights for mxbai"):
        loader.resolve("mxbai@init:0")


def test_a_control_is_measured_apart_and_never_gets_the_trained_models_expected_failures(tmp_path, monkeypatch):
    from geometry_checks.lab import Lab

    monkeypatch.setenv("GEOMETRY_CHECKS_CACHE", str(tmp_path))
    lab = Lab(device="cpu")
    assert lab.identity("minilm@init:0") == "minilm@init:0"  # not `minilm`, whose weights file it shares
    fields = [lab._cache_fields(m, lab.default_sentences, ("mean",)) for m in ("minilm", "minilm@init:0",
                                                                               "minilm@init:1")]
    assert len({str(f["model"]["spec"]) for f in fields}) == 3
    m = lab.measurement("minilm@init:0")
    assert m.provenance["untrained"]["seed"] == 0 and "same_weights_as" not in m.provenance
    facts = R.model_facts("minilm@init:0", m)
    assert facts == {"layers": 6, "kind": "control", "objective": "untrained", "base": "minilm", "seed": 0}
    # random weights do not collapse minilm's tokens (the trained model goes 0.056 -> 0.392)
    verdict = CL.run_dense_check(CL.dense_claims()["dense-collapse"], m, "minilm@init:0")
    assert not verdict.passed and verdict.measured.startswith("intra ")


# --------------------------------------------------------------------------- the thesis verdict


@pytest.mark.parametrize("outcomes, state", [
    (["passed"], "holds"), (["xfailed"], "does not hold"), (["failed", "failed"], "does not hold"),
    (["passed", "failed", "passed"], "mixed"), (["passed", "inconclusive"], "mixed"),
    (["failed", "inconclusive"], "inconclusive"),
    (["inconclusive"], "inconclusive"), (["not run"], None), ([], None), (["xpassed", "passed"], "holds"),
])
def test_member_state(outcomes, state):
    assert member_state(outcomes) == state


H, N, M, U = "holds", "does not hold", "mixed", "inconclusive"


@pytest.mark.parametrize("groups, verdict", [
    ({"contrastive": {"a": H, "b": H}, "next-token": {"l": N, "g": N}, "untrained": {"a0": N, "l0": N}},
     "contrastive only"),
    ({"contrastive": {"a": H}, "next-token": {"l": H, "g": H}, "untrained": {"a0": N}}, "every trained model"),
    ({"contrastive": {"a": H}, "next-token": {"l": H, "g": N}, "untrained": {"a0": N}}, "trained, some LMs"),
    ({"contrastive": {"a": H}, "next-token": {"l": N}, "untrained": {"a0": H, "l0": H}}, "at init too"),
    ({"contrastive": {"a": H}, "next-token": {"l": N}, "untrained": {"a0": H, "l0": N}}, "partly at init"),
    ({"contrastive": {"a": H}, "untrained": {"a0": M}}, "partly at init"),
    # a control that holds makes it at least partly the architecture; an inconclusive one only
    # keeps it from `at init too` (thesis.py's decision)
    ({"contrastive": {"a": H}, "next-token": {"l": N}, "untrained": {"a0": H, "l0": U}}, "partly at init"),
    ({"contrastive": {"a": N, "b": N}, "untrained": {"a0": H}}, "not contrastive"),
    ({"contrastive": {"a": H, "b": N}, "next-token": {"l": H}}, "some contrastive"),
    ({"next-token": {"l": H}, "untrained": {"a0": H}}, "undecided"),
    ({"contrastive": {"a": U, "b": H}}, "undecided"),
    ({"contrastive": {"a": H}, "next-token": {"l": N}}, "undecided"),  # no control: cannot rule out the architecture
    ({"contrastive": {"a": H}, "untrained": {"a0": N}}, "undecided"),  # no LM: contrastive or any training?
    ({"contrastive": {"a": H}, "next-token": {"l": U}, "untrained": {"a0": N}}, "undecided"),
    ({"contrastive": {"a": H, "x": None}, "next-token": {"l": N}, "untrained": {"a0": N, "l0": None}},
     "contrastive only"),  # a column without a verdict (not run) is left out
])
def test_thesis_verdict(groups, verdict):
    out = thesis_verdict(groups)
    assert out["verdict"] == verdict and out["text"].startswith(THESES[verdict])


def test_thesis_text_carries_its_counts():
    out = thesis_verdict({"contrastive": {"a": H, "b": H}, "next-token": {"l": N, "g": N},
                          "untrained": {"a0": N, "l0": M}})
    assert out["verdict"] == "partly at init"
    assert out["text"].endswith("(contrastive 2/2, next-token 0/2, untrained 1/2)")
    assert out["counts"]["untrained"] == {"holds": 1, "of": 2, "inconclusive": []}


# --------------------------------------------------------------------------- the matrix


def _row(cid, model, outcome, measured, facts):
    claim = CL.dense_claims()[cid]
    verdict = CL.Verdict(cid, model, outcome in ("passed", "xpassed"), measured, "> 0.5", "exact",
                         "" if outcome == "passed" else "low")
    return {**R._row(claim, model, verdict, outcome), "_facts": facts}


def _facts(layers, objective=None, kind="registered", **more):
    return {"layers": layers, "kind": kind, **({"objective": objective} if objective else {}), **more}


def test_matrix_groups_columns_by_objective_merges_seeds_and_gives_the_thesis():
    cid = "dense-collapse"
    rows = [
        _row(cid, "smollm2", "passed", "intra 0.005 -> 0.624", _facts(30, "next-token")),
        _row(cid, "minilm", "passed", "intra 0.056 -> 0.392", _facts(6, "contrastive")),
        *(_row(cid, f"smollm2@init:{s}", "passed", f"intra 0.00{s} -> 0.9",
               _facts(30, "untrained", "control", base="smollm2", seed=s)) for s in (0, 1, 2)),
        _row(cid, "/x/other", "failed", "intra 0.1 -> 0.1", _facts(4, kind="directory")),
        *(_row(cid, f"minilm@init:{s}", "failed" if s else "passed", f"intra 0.3{s} -> 0.4",
               _facts(6, "untrained", "control", base="minilm", seed=s)) for s in (0, 1)),
    ]
    matrix = R.claims_matrix(rows)
    assert [m["column"] for m in matrix["models"]] == [
        "contrastive: minilm (L=6)", "next-token LM: smollm2 (L=30)", "other (L=4) (directory)",
        "untrained control: smollm2@init (L=30, 3 seeds)", "untrained control: minilm@init (L=6, 2 seeds)"]
    row = next(r for r in matrix["rows"] if r["claim"] == cid)
    assert row["cells"]["smollm2@init"]["text"] == "intra 0.000 -> 0.9 (seed 0); holds on 3 of 3 seeds"
    assert row["cells"]["minilm@init"]["verdict"] == "mixed"
    assert row["cells"]["minilm@init"]["text"].endswith("holds on 1 of 2 seeds")
    assert set(row["cells"]["minilm@init"]["seeds"]) == {"0", "1"}
    assert row["holds"]["text"] == "2 of 2"  # the controls and the directory are not counted
    assert row["thesis"]["verdict"] == "partly at init"  # minilm@init holds on one seed of two
    assert row["thesis"]["text"] == (f"{THESES['partly at init']} (contrastive 1/1, next-token 1/1, untrained 2/2)")
    frame = R.matrix_frame(matrix)
    assert list(frame.columns)[-2:] == ["holds", "thesis"]


def test_findings_md_counts_the_controls_apart(tmp_path):
    cid = "dense-collapse"
    rows = [_row(cid, "minilm", "passed", "intra 0.056 -> 0.392", _facts(6, "contrastive")),
            _row(cid, "minilm@init:0", "failed", "intra 0.327 -> 0.366", _facts(6, "untrained", "control",
                                                                                 base="minilm", seed=0))]
    R.write_findings(rows, tmp_path / "findings.md")
    md = (tmp_path / "findings.md").read_text()
    assert "2 checks" not in md and "1 checks: 1 verdict (1 passed)" in md
    assert "## Untrained controls" in md and "| dense-collapse | minilm@init:0 | intra 0.327 -> 0.366" in md
    lines = R.model_summaries(rows)
    assert lines == ["minilm (L=6): 1 verdict (1 passed)",
                     ("minilm@init (L=6), untrained control: the findings hold on seed 0 0/1 checks (the null model; "
                      "not counted)")]

    data = json.loads((tmp_path / "findings.json").read_text())
    assert data["summary"]["checks"] == 1 and [r["control"] for r in data["rows"]] == [False, True]


def test_a_directory_named_like_a_control_is_that_directory(tmp_path):
    source = loader.bundled_minilm_dir()
    directory = tmp_path / "ckpt@init:final"
    shutil.copytree(source, directory)
    ref = loader.resolve(str(directory))
    assert ref.spec.init_seed is None and ref.location == str(directory)


def test_a_seed_without_a_verdict_keeps_a_control_from_holding_on_every_seed():
    cid = "dense-collapse"
    facts = [_facts(6, "untrained", "control", base="minilm", seed=s) for s in (0, 1)]
    rows = [_row(cid, "minilm@init:0", "passed", "intra 0.1 -> 0.5", facts[0]),
            {**R._row(CL.dense_claims()[cid], "minilm@init:1", None, "failed", "error: RuntimeError: boom"),
             "_facts": facts[1]}]
    cell = next(r for r in R.claims_matrix(rows)["rows"] if r["claim"] == cid)["cells"]["minilm@init"]
    assert cell["state"] == "mixed" and cell["text"].endswith("holds on 1 of 1 seed; 1 without a verdict")


def test_a_failed_control_is_one_row_and_the_report_goes_on(tmp_path, monkeypatch):
    """A control that cannot be measured (here: its load fails) gives one failed row, marked
    as a control's, and the report is written."""
    from geometry_checks.lab import Lab

    monkeypatch.setattr(loader, "hub_cache_dir", lambda *a, **k: None)
    real = loader.load

    def load(ref, *a, **k):
        if ref.spec.init_seed is not None:
            raise InputError(f"{ref.spec.name}: cannot load: non-finite hidden states")
        return real(ref, *a, **k)

    monkeypatch.setattr(loader, "load", load)
    # no measurement cache: a control measured by another test would never reach the failing load
    result = R.build_report(Lab(device="cpu", cache=False), ["minilm"], tmp_path / "out", control_seeds=(0,))
    failed = [r for r in result["rows"] if r["model"] == "minilm@init:0"]
    assert [(r["claim"], r["verdict"]) for r in failed] == [("dense-*", "failed")]
    assert R.is_control(failed[0]) and "non-finite hidden states" in failed[0]["measured"]
    md = (tmp_path / "out" / "findings.md").read_text()
    assert "## Untrained controls" in md and "1 checks on minilm@init:0" in md
