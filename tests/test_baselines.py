"""The regression gate's code. The gate itself, `test_recorded`, is a check of a model and
ships with the package (geometry_checks/checks/test_recorded.py); `pytest -m minilm
--update-baselines` re-records. This pins the behaviour of geometry_checks/baselines.py
and of the plugin's `recorded_baseline` fixture: the failure text, atomic writes,
provenance, corrupt files, the CI rule, and that a re-saved checkpoint measured without
padding stays within the tolerances and is one warning line, not an error.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from geometry_checks import baselines as B
from geometry_checks.claims import PUBLISHED
from geometry_checks.errors import InputError
from geometry_checks.result import Measurement
from geometry_checks.plugin import recorded_getter
from geometry_checks.registry import MODELS
from geometry_checks.sentences import load_sentence_set

ROOT = Path(__file__).resolve().parent.parent
PROVENANCE = ("hub_id", "revision", "weights_sha256", "torch", "transformers", "numpy", "dtype", "device", "date",
              "sentence_set_sha256")


# --------------------------------------------------------------------------- comparison


def test_failure_message_names_model_metric_worst_depth_errors_and_command():
    result = B.compare("minilm", "intra_sentence_cosine", [0.1, 0.2, 0.35, 0.4, None],
                       [0.1, 0.2, 0.3, 0.4, None])
    assert not result.passed
    assert result.message == (
        "minilm / intra_sentence_cosine: 1 of 5 depths differ from the recorded baseline; "
        "worst at depth 2: measured 0.35 vs recorded 0.3; max |error| 0.05, mean |error| 0.0125 "
        "(atol 1e-07, rtol 0); if the change is intended, regenerate with `pytest -m minilm --update-baselines`"
    )


def test_scalar_failure_message():
    result = B.compare("mxbai", "late_write_fraction", 0.875, 0.9)
    assert result.message == (
        "mxbai / late_write_fraction: measured 0.875 vs recorded 0.9; |error| 0.025 (atol 0, rtol 0); "
        "if the change is intended, regenerate with `pytest -m mxbai --update-baselines`"
    )


def test_worst_depth_is_the_largest_error_not_the_first():
    result = B.compare("minilm", "pair_cosine[negation]", [0.5, 0.61, 0.9], [0.5, 0.6, 0.7])
    assert "2 of 3 depths differ" in result.message
    assert "worst at depth 2: measured 0.9 vs recorded 0.7" in result.message


def test_tolerance_is_atol_plus_rtol_times_recorded():
    assert B.compare("m", "x", [1.0 + 1.5e-7], [1.0], atol=1e-7, rtol=1e-7).passed
    assert not B.compare("m", "x", [1.0 + 2.5e-7], [1.0], atol=1e-7, rtol=1e-7).passed
    # the default comes from TOLERANCES
    atol, _ = B.tolerance_for("intra_sentence_cosine")
    assert B.compare("m", "intra_sentence_cosine", [0.5 + atol / 2], [0.5]).passed
    assert not B.compare("m", "intra_sentence_cosine", [0.5 + atol * 2], [0.5]).passed


@pytest.mark.parametrize(("measured", "recorded"), [
    ([None, 0.5], [0.1, 0.5]),          # a value became null
    ([0.1, 0.5], [None, 0.5]),          # a null became a value
    ([float("nan"), 0.5], [0.1, 0.5]),  # NaN never passes
], ids=["value-to-null", "null-to-value", "nan"])
def test_null_and_nan_mismatches_fail(measured, recorded):
    assert not B.compare("m", "intra_sentence_cosine", measured, recorded).passed


def test_depth_count_mismatch_fails_with_both_counts():
    result = B.compare("minilm", "token_norm", [1.0, 2.0], [1.0, 2.0, 3.0])
    assert not result.passed
    assert "measured 2 depths, recorded 3 depths" in result.message


def test_metric_recorded_but_not_measured_fails():
    result = B.compare_recorded("minilm", "gone", {"curves": {}}, {"curves": {"gone": [1.0]}})
    assert not result.passed and "recorded but no longer measured" in result.message


def test_exact_metrics_are_exact():
    assert not B.compare("m", "recall_at_k[hard,1]", [0.8, 0.9], [0.8, 0.8]).passed
    assert not B.compare("m", "write_depth_histogram", [0, 25, 1], [0, 24, 2]).passed


def test_every_tolerance_entry_is_used_and_every_recorded_metric_has_its_own():
    """No stale TOLERANCES entry, and no recorded MiniLM metric falls through to the fallback."""
    recorded = B.load_recorded("minilm", "core")
    if recorded is None:
        pytest.skip(f"no recorded MiniLM baseline: `{B.regenerate_command('minilm')}`")
    names = B.metric_names(recorded)
    prefixes = [p for p, _, _ in B.TOLERANCES if p]
    unused = [p for p in prefixes if not any(n.startswith(p) for n in names)]
    fallback = [n for n in names if not any(n.startswith(p) for p in prefixes)]
    assert not unused, f"TOLERANCES entries no recorded metric uses: {unused}"
    assert not fallback, f"recorded metrics without a measured tolerance: {fallback}"


# --------------------------------------------------------------------------- files


def _measurement(model="minilm", sentence_set="tiny", **provenance) -> Measurement:
    prov = {"model": model, "hub_id": "sentence-transformers/all-MiniLM-L6-v2", "revision": "abc",
            "weights_sha256": "5" * 64, "torch": "2.13.0", "transformers": "5.24.0", "dtype": "float32",
            "device": "cpu", "date": "2026-01-01T00:00:00Z", "sentence_set_sha256": "f" * 64,
            "location": "/somewhere/local", **provenance}
    return Measurement(
        model=model, sentence_set=sentence_set, depths=3,
        curves={"intra_sentence_cosine": [0.1, 0.2, 0.30000000000000004], "delta_coherence": [None, 0.5, 0.25]},
        scalars={"late_write_fraction": 0.75, "pca_tokens": 12},
        discriminative_dims={"negation": {"dims": [3, 1], "curves": [[0.0, 0.1, 0.2]] * 2, "half_rise": [2, 1]}},
        by_pooling={"cls": {"curves": {"pair_cosine[negation]": [0.9, 0.8, 0.7]}, "scalars": {}}},
        proj={"token_norm": 3.5},
        provenance=prov,
    )


def test_record_round_trips_every_number_with_provenance(tmp_path):
    path = B.record(_measurement(), tmp_path)
    assert path == tmp_path / "minilm" / "tiny.json"
    data = B.load_recorded("minilm", "tiny", tmp_path)
    assert data["curves"]["intra_sentence_cosine"] == [0.1, 0.2, 0.30000000000000004]
    assert data["curves"]["delta_coherence"][0] is None
    assert data["curves"]["pair_cosine[negation]@cls"] == [0.9, 0.8, 0.7]
    assert data["scalars"] == {"late_write_fraction": 0.75, "pca_tokens": 12, "token_norm@proj": 3.5}
    assert data["vectors"] == {"discriminative_dims[negation].dims": [3, 1],
                               "discriminative_dims[negation].half_rise": [2, 1]}
    assert set(PROVENANCE) <= set(data["provenance"])
    assert "location" not in data["provenance"]  # no machine-specific paths in a committed file
    assert [p.name for p in path.parent.iterdir()] == ["tiny.json"]  # no temporary file left


def test_a_failed_write_leaves_the_old_baseline_intact(tmp_path, monkeypatch):
    path = B.record(_measurement(), tmp_path)
    before = path.read_text()

    def crash(src, dst):
        raise OSError("disk full")

    from geometry_checks import outputs as O

    monkeypatch.setattr(O.os, "replace", crash)
    with pytest.raises(InputError, match="disk full"):
        B.record(_measurement(revision="new"), tmp_path)
    assert path.read_text() == before
    assert [p.name for p in path.parent.iterdir()] == ["tiny.json"]


def test_record_never_writes_among_the_published_baselines():
    before = {p: p.read_bytes() for p in PUBLISHED.rglob("*") if p.is_file()}
    with pytest.raises(InputError, match="published"):
        B.record(_measurement(), PUBLISHED)
    with pytest.raises(InputError, match="published"):
        B.record(_measurement(model="."), PUBLISHED.parent / "published")
    assert {p: p.read_bytes() for p in PUBLISHED.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(("content", "reason"), [
    ("{not json", "Expecting property name"),
    ('{"kind": "claims"}', "not a recorded baseline"),
    ('{"kind": "recorded-baseline", "schema": 1, "provenance": {}, "curves": {"x": ["a"]}, "vectors": {}, '
     '"scalars": {}}', "curve x is not a list of numbers"),
    ('{"kind": "recorded-baseline", "schema": 99}', "schema 99"),
    ("\udcff", "UnicodeEncodeError"),
], ids=["json", "kind", "curve", "schema", "bytes"])
def test_corrupt_baseline_is_a_one_line_error(tmp_path, content, reason):
    path = tmp_path / "minilm" / "core.json"
    path.parent.mkdir()
    if reason == "UnicodeEncodeError":
        path.write_bytes(b"\xff\xfe{")
        reason = "codec can't decode"
    else:
        path.write_text(content)
    with pytest.raises(InputError) as info:
        B.load_recorded("minilm", "core", tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: corrupt recorded baseline (")
    assert reason in message
    assert message.endswith("regenerate with `pytest -m minilm --update-baselines`")


def test_provenance_difference_is_one_line_naming_each_field():
    line = B.provenance_warning("minilm", B.RECORDED / "minilm" / "core.json",
                                {"weights_sha256": "a" * 64, "torch": "2.13.0", "revision": None},
                                {"weights_sha256": "b" * 64, "torch": "2.12.0", "revision": "1110a24"})
    assert line == (
        "minilm: measured vs recorded (baselines/recorded/minilm/core.json) provenance differs: "
        "revision None vs 1110a24, weights_sha256 aaaaaaaaaaaa… vs bbbbbbbbbbbb…, torch 2.13.0 vs 2.12.0; "
        "compared against the recorded geometry"
    )
    assert B.provenance_warning("minilm", Path("x"), {"torch": "1"}, {"torch": "1"}) is None


# --------------------------------------------------------------------------- the fixture's rules


def _getter(tmp_path, update=False):
    notes, written = {}, []
    return recorded_getter(update, tmp_path, notes, written), notes, written


def test_missing_baseline_skips_locally_with_the_command(tmp_path, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    get, _, _ = _getter(tmp_path)
    with pytest.raises(pytest.skip.Exception) as info:
        get(_measurement())
    assert "no recorded baseline for minilm on sentence set 'tiny'" in str(info.value)
    assert "create it with `pytest -m minilm --update-baselines` and commit it" in str(info.value)


def test_missing_baseline_fails_in_ci(tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    get, _, _ = _getter(tmp_path)
    with pytest.raises(pytest.fail.Exception, match=r"CI=true: no recorded baseline .* --update-baselines"):
        get(_measurement())


def test_corrupt_baseline_fails_with_one_line(tmp_path):
    (tmp_path / "minilm").mkdir()
    (tmp_path / "minilm" / "tiny.json").write_text("[]")
    get, _, _ = _getter(tmp_path)
    with pytest.raises(pytest.fail.Exception) as info:
        get(_measurement())
    assert "\n" not in str(info.value) and "corrupt recorded baseline" in str(info.value)


def test_update_records_once_then_compares_equal(tmp_path):
    get, notes, written = _getter(tmp_path, update=True)
    measurement = _measurement()
    data = get(measurement)
    get(measurement)
    assert written == [tmp_path / "minilm" / "tiny.json"]
    measured = B.recordable(measurement)
    assert all(B.compare_recorded("minilm", n, measured, data).passed for n in B.metric_names(data))
    assert notes == {}


def test_other_weights_are_a_warning_line_not_an_error(tmp_path):
    B.record(_measurement(), tmp_path)
    get, notes, _ = _getter(tmp_path)
    data = get(_measurement(weights_sha256="6" * 64, revision=None))
    assert data["curves"]["intra_sentence_cosine"]
    assert notes["minilm"]["recorded"].startswith(
        "minilm: measured vs recorded (") and "weights_sha256 666666666666… vs 555555555555…" in notes["minilm"][
        "recorded"]


# --------------------------------------------------------------------------- real model


def _resaved_copy(directory: Path) -> Path:
    """The bundled MiniLM with model.safetensors re-saved: the same tensors, another sha256."""
    from safetensors.torch import load_file, save_file

    from geometry_checks.loader import bundled_minilm_dir

    source = bundled_minilm_dir()
    shutil.copytree(source, directory, ignore=shutil.ignore_patterns("model.safetensors"))
    save_file(load_file(source / "model.safetensors"), directory / "model.safetensors",
              metadata={"format": "pt", "note": "re-saved by tests/test_baselines.py"})
    return directory


@pytest.fixture(scope="module")
def resaved_unpadded(tmp_path_factory):
    """MiniLM from a re-saved checkpoint, measured one text per batch (no padding at all)."""
    import warnings

    from geometry_checks.lab import Lab

    copy = _resaved_copy(tmp_path_factory.mktemp("resaved") / "minilm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Lab({"minilm": str(copy)}, device="cpu", batch_size=1).measurement("minilm")


@pytest.mark.minilm
def test_unpadded_measurement_of_a_resaved_checkpoint_passes_every_recorded_metric(resaved_unpadded):
    """Batch size 1 vs 64 is not a change of the model: the tolerances absorb it here too."""
    recorded = B.load_recorded("minilm", "core")
    if recorded is None:
        pytest.skip(f"no recorded MiniLM baseline: `{B.regenerate_command('minilm')}`")
    measured = B.recordable(resaved_unpadded)
    failures = [c.message for c in (B.compare_recorded("minilm", n, measured, recorded)
                                    for n in B.metric_names(recorded)) if not c.passed]
    assert not failures, "\n".join(failures)


@pytest.mark.minilm
def test_resaved_checkpoint_is_one_provenance_warning_line(resaved_unpadded):
    recorded = B.load_recorded("minilm", "core")
    if recorded is None:
        pytest.skip(f"no recorded MiniLM baseline: `{B.regenerate_command('minilm')}`")
    assert resaved_unpadded.provenance["weights_sha256"] != MODELS["minilm"].weights_sha256
    line = B.provenance_warning("minilm", B.path_for("minilm", "core"), B.provenance_of(resaved_unpadded),
                                recorded["provenance"])
    assert "\n" not in line
    assert f"weights_sha256 {resaved_unpadded.provenance['weights_sha256'][:12]}… vs 53aa51172d14…" in line


def test_committed_minilm_baseline_carries_provenance():
    recorded = B.load_recorded("minilm", "core")
    if recorded is None:
        pytest.skip(f"no recorded MiniLM baseline: `{B.regenerate_command('minilm')}`")
    prov = recorded["provenance"]
    assert all(prov.get(k) for k in PROVENANCE), {k: prov.get(k) for k in PROVENANCE}
    spec = MODELS["minilm"]
    assert (prov["hub_id"], prov["revision"], prov["weights_sha256"]) == (spec.hub_id, spec.revision,
                                                                          spec.weights_sha256)
    assert prov["sentence_set_sha256"] == load_sentence_set(ROOT / "fixtures" / "core.json").sha256
    assert (prov["dtype"], prov["device"]) == ("float32", "cpu")


@pytest.mark.minilm
def test_update_baselines_end_to_end(tmp_path):
    """`pytest -m minilm --update-baselines` writes the file (and only it), then the gate passes on it."""
    sentences = tmp_path / "tiny.txt"
    sentences.write_text("The cat sat on the mat\nStock markets fell sharply today\nA storm hit the coast\n")
    recorded = tmp_path / "recorded"
    published = {p: p.read_bytes() for p in PUBLISHED.rglob("*") if p.is_file()}
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    args = [sys.executable, "-m", "pytest", "geometry_checks/checks/test_recorded.py", "-m", "minilm", "-q", "-p", "no:randomly",
            "-k", "test_recorded", "--sentences", str(sentences), "--recorded-dir", str(recorded)]
    proc = subprocess.run([*args, "--update-baselines"], capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    path = recorded / "minilm" / "tiny.json"
    assert f"geometry-checks: recorded {path}" in proc.stdout
    data = json.loads(path.read_text())
    assert set(PROVENANCE) <= set(data["provenance"])
    assert data["provenance"]["weights_sha256"] == MODELS["minilm"].weights_sha256
    assert {p: p.read_bytes() for p in PUBLISHED.rglob("*") if p.is_file()} == published
    assert [p.name for p in path.parent.iterdir()] == ["tiny.json"]
