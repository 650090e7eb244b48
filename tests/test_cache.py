"""The on-disk Measurement cache (geometry_checks.cache): served without loading the model,
keyed by everything that decides the numbers, written atomically, and a corrupt or partial
entry is detected, reported with a warning and recomputed, never used."""
from __future__ import annotations

import json
import warnings

import pytest

from geometry_checks import cache as K
from geometry_checks import capture as C
from geometry_checks import loader
from geometry_checks.cli import main as cli_main
from geometry_checks.lab import Lab
from geometry_checks.sentences import SentenceSet
from geometry_checks.streaming import DEFAULT_MAX_PCA_TOKENS, PCA_SEED

pytestmark = pytest.mark.minilm

SMALL = SentenceSet("tiny", ("Cats sleep a lot during the day", "Hello", "The market fell after the bank raised rates",
                             "A storm knocked out power across the town"))


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    directory = tmp_path / "cache"
    monkeypatch.setenv(K.ENV, str(directory))
    return directory


@pytest.fixture(scope="module")
def lab():
    """One Lab (MiniLM loaded once); tests call lab.measure, which is not memoized."""
    return Lab(device="cpu")


@pytest.fixture(scope="module")
def good(lab):
    """SMALL's Measurement, computed once without the cache."""
    lab.cache = False
    try:
        return measure_quietly(lab)
    finally:
        lab.cache = True


def fields(**changes) -> dict:
    kw = {"device": "cpu", "dtype": "float32", "sentences": SMALL, "batch_size": 64, "poolings": ("mean",),
          "max_pca_tokens": DEFAULT_MAX_PCA_TOKENS, "seed": PCA_SEED}
    kw.update(changes)
    return K.key_fields(loader.resolve("minilm"), **kw)


def measure_quietly(lab: Lab):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lab.measure("minilm", SMALL)


def test_a_new_lab_is_served_from_the_cache_without_loading_the_model(cache_dir):
    with pytest.warns(UserWarning, match="'Hello': fewer than 2 content tokens"):
        first = Lab(device="cpu").measurement("minilm", SMALL)
    entries = list(cache_dir.iterdir())
    assert [p.suffix for p in entries] == [".json"] and entries[0].name == f"{K.key_of(fields())}.json"
    second = Lab(device="cpu")
    with pytest.warns(UserWarning, match="'Hello': fewer than 2 content tokens"):  # warned again on a hit
        again = second.measurement("minilm", SMALL)
    assert second._models == {} and second.cache_hits == {("minilm", SMALL.sha256): str(entries[0])}
    assert again.to_json() == first.to_json()


def _corrupt(path, how: str) -> None:
    text = path.read_text()
    data = json.loads(text)
    if how == "truncated":
        path.write_text(text[: len(text) // 2])
    elif how == "empty":
        path.write_text("")
    elif how == "number changed":
        data["measurement"]["curves"]["intra_sentence_cosine"][1] += 0.25
        path.write_text(json.dumps(data))
    elif how == "other key":
        data["key"] = "0" * 64
        path.write_text(json.dumps(data))
    elif how == "not a measurement":
        data["measurement"] = {"model": "minilm"}
        data["sha256"] = K._checksum(data["measurement"])
        path.write_text(json.dumps(data))
    elif how == "binary":
        path.write_bytes(b"\xff\xfe\x00garbage")
    elif how == "older schema":  # a schema-1 measurement (no bootstrap intervals) under today's key
        for key in ("intervals", "scalar_intervals", "interval_not_computed"):
            data["measurement"].pop(key)
        data["measurement"]["schema"] = 1
        data["sha256"] = K._checksum(data["measurement"])
        path.write_text(json.dumps(data))


@pytest.mark.filterwarnings("ignore:.*fewer than 2 content tokens")
@pytest.mark.parametrize("how", ["truncated", "empty", "number changed", "other key", "not a measurement", "binary",
                                 "older schema"])
def test_corrupt_entry_is_reported_recomputed_and_replaced(lab, good, cache_dir, how):
    path = K.store(fields(), good)
    _corrupt(path, how)
    with pytest.warns(UserWarning, match="is corrupt") as record:
        again = lab.measure("minilm", SMALL)
    assert len([w for w in record if "corrupt" in str(w.message)]) == 1
    assert again.curves == good.curves  # recomputed, not the corrupt numbers
    assert K.load(fields()).to_json() == again.to_json()  # and the entry is valid again
    assert not list(cache_dir.glob("*.tmp")) and not list(cache_dir.glob(".*"))


def test_failed_write_leaves_no_entry_and_no_temporary_file(good, cache_dir, monkeypatch):
    def full_disk(fd):  # the entry's text is in the temporary file; making it durable fails
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(K.os, "fsync", full_disk)
    with pytest.warns(UserWarning, match="cannot write cache entry .*No space left"):
        assert K.store(fields(), good) is None
    assert not cache_dir.exists() or list(cache_dir.iterdir()) == []


@pytest.mark.filterwarnings("ignore:.*fewer than 2 content tokens")
def test_unwritable_cache_location_is_a_warning_not_an_error(lab, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(K.ENV, str(blocker / "cache"))
    with pytest.warns(UserWarning, match="cannot write cache entry"):
        result = lab.measure("minilm", SMALL)
    assert result.curves


def test_key_covers_every_input_that_decides_the_numbers(monkeypatch):
    base = K.key_of(fields())
    assert K.key_of(fields()) == base
    variants = [fields(batch_size=32), fields(dtype="float64"), fields(poolings=("mean", "cls")),
                fields(max_pca_tokens=1000), fields(seed=1), fields(sublayers=True), fields(method="hooks"),
                fields(sentences=SentenceSet("tiny", SMALL.sentences[:3])),
                fields(sentences=SentenceSet("renamed", SMALL.sentences))]
    monkeypatch.setattr(K, "code_version", lambda: "another version of the metric code")
    variants.append(fields())
    keys = [K.key_of(v) for v in variants]
    assert base not in keys and len(set(keys)) == len(keys)
    f = fields()
    for name in ("torch", "transformers", "device", "threads"):
        assert name in f
    assert f["model"]["weights"] == C.MODELS["minilm"].weights_sha256 and f["model"]["files"]["tokenizer.json"]


def test_code_version_hashes_the_metric_sources():
    assert len(K.code_version()) == 64
    assert {"metrics.py", "measure.py", "streaming.py", "intervals.py"} <= set(K.CODE_FILES)


def test_cache_off_and_no_cache_flag(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(K.ENV, "off")
    assert K.cache_dir() is None
    directory = tmp_path / "cache"
    monkeypatch.setenv(K.ENV, str(directory))
    sentences = tmp_path / "s.txt"
    sentences.write_text("\n".join(s for s in SMALL.sentences if s != "Hello"))
    args = ["measure", "--sentences", str(sentences), "--device", "cpu"]
    assert cli_main([*args, "--out", str(tmp_path / "a.json"), "--no-cache"]) == 0
    assert not directory.exists()
    assert cli_main([*args, "--out", str(tmp_path / "b.json")]) == 0
    assert cli_main([*args, "--out", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "from the cache" not in out[1] and f"from the cache {directory}" in out[2]
    assert (tmp_path / "b.json").read_text() == (tmp_path / "c.json").read_text()
    assert len(list(directory.iterdir())) == 1


def test_default_location_is_the_user_cache_directory(monkeypatch):
    import platformdirs

    monkeypatch.delenv(K.ENV, raising=False)
    assert K.cache_dir() == __import__("pathlib").Path(platformdirs.user_cache_dir("geometry-checks")) / "measurements"
