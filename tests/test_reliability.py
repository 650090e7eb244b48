"""Issue 14: bad input never destroys a file, never measures weights that did not load, never
truncates in silence, and always ends in one line and a non-zero exit (docs/reliability.md).

One section per rule. The CLI runs in-process (`cli.main`) where a subprocess would only
add start-up time; the MiniLM fixtures are the bundled model's files, linked into temporary
directories with one thing changed.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geometry_checks import capture as C
from geometry_checks import loader
from geometry_checks import report as R
from geometry_checks.cli import main as cli_main
from geometry_checks.errors import InputError
from geometry_checks.lab import Lab
from geometry_checks.sentences import SentenceSet, load_sentence_set

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("market", "river", "storm", "bank", "rates", "quietly", "tomorrow", "garden")


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("geometry-checks: error")]
    assert len(lines) == 1, err
    return lines[0]


def run(capsys, *args) -> tuple[int, str, str]:
    """cli.main in-process: (exit status, stdout, stderr), the warnings it gave on stderr as
    the CLI prints them (`warning: ...`), pytest's warning capture notwithstanding."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = cli_main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err + "".join(f"warning: {w.message}\n" for w in caught)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOMETRY_CHECKS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def sentences(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("Cats sleep a lot during the day\nThe market fell after the bank raised rates\n")
    return path


def _fail_if_loaded(monkeypatch):
    def load(*a, **k):
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.setattr(loader, "load", load)


# --------------------------------------------------------------------------- 1. outputs


def test_out_symlink_is_refused_and_its_target_kept(tmp_path, sentences, capsys, monkeypatch):
    target = tmp_path / "target.json"
    target.write_text("keep me")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    _fail_if_loaded(monkeypatch)
    rc, _, err = run(capsys, "measure", "--sentences", sentences, "--out", link)
    assert rc == 2 and "is a symbolic link" in one_error_line(err)
    assert link.is_symlink() and target.read_text() == "keep me"


def test_out_fifo_is_refused(tmp_path, sentences, capsys, monkeypatch):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    _fail_if_loaded(monkeypatch)
    rc, _, err = run(capsys, "measure", "--sentences", sentences, "--out", fifo)
    assert rc == 2 and "is a FIFO" in one_error_line(err)
    assert Path(fifo).is_fifo()


def test_out_directory_is_one_line_and_leaves_nothing(tmp_path, sentences, capsys, monkeypatch):
    out = tmp_path / "dir"
    out.mkdir()
    _fail_if_loaded(monkeypatch)
    rc, _, err = run(capsys, "measure", "--sentences", sentences, "--out", out)
    assert rc == 2 and "is a directory" in one_error_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "s.txt"] and not any(out.iterdir())


def test_out_equal_to_the_sentence_file_is_refused(sentences, capsys, monkeypatch):
    before = sentences.read_bytes()
    _fail_if_loaded(monkeypatch)
    rc, _, err = run(capsys, "measure", "--sentences", sentences, "--out", sentences)
    assert rc == 2 and "is also an input of this run" in one_error_line(err)
    assert sentences.read_bytes() == before


@pytest.mark.parametrize("where", ["parent-is-file", "cannot-hold-files"])
def test_out_in_an_impossible_place(tmp_path, sentences, capsys, monkeypatch, where):
    if where == "parent-is-file":
        (tmp_path / "plain").write_text("x")
        out, fragment = tmp_path / "plain" / "sub" / "o.json", "is a file, not a directory"
    else:
        out, fragment = Path("/proc/geometry-checks-test/o.json"), "cannot write in /proc"
    _fail_if_loaded(monkeypatch)
    rc, _, err = run(capsys, "measure", "--sentences", sentences, "--out", out)
    assert rc == 2 and fragment in one_error_line(err)


def test_a_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    from geometry_checks import outputs as O

    target = tmp_path / "new" / "deeper" / "o.json"

    def crash(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(O.os, "replace", crash)
    with pytest.raises(InputError, match="No space left on device"):
        O.write_text(target, "{}")
    assert list(tmp_path.iterdir()) == []  # neither the temporary file nor the directories it made


def test_write_replaces_only_a_regular_file(tmp_path):
    from geometry_checks import outputs as O

    path = O.write_text(tmp_path / "a" / "o.json", "1")
    O.write_text(path, "2")
    assert path.read_text() == "2" and [p.name for p in path.parent.iterdir()] == ["o.json"]


def test_report_owns_its_directory(tmp_path, monkeypatch):
    """An earlier report's chart that this run does not draw is removed; a file no report
    wrote makes the run refuse before anything is measured."""
    monkeypatch.setattr(loader, "hub_cache_dir", lambda *a, **k: None)
    out = tmp_path / "report"
    out.mkdir()
    (out / "findings.md").write_text("old")
    (out / "minilm-old-chart.png").write_bytes(b"png")
    (out / "findings.json").write_text(json.dumps({"charts": [{"file": "minilm-old-chart.png"}]}))
    lab = Lab(device="cpu")
    result = R.build_report(lab, [], out)  # no dense model: article rows only (weights absent), no charts
    data = json.loads((out / "findings.json").read_text())
    listed = {"findings.md", "findings.json", *(c["file"] for c in data["charts"])}
    assert {p.name for p in out.iterdir()} == listed
    assert result["path"] == out / "findings.md"

    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"holds files this command did not write \(notes.txt\)"):
        R.build_report(lab, [], out)
    assert (out / "notes.txt").read_text() == "mine"


def test_report_cli_refuses_a_foreign_directory_before_loading(tmp_path, sentences, capsys, monkeypatch):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "thesis.tex").write_text("mine")
    _fail_if_loaded(monkeypatch)
    rc, _, err = run(capsys, "report", "--sentences", sentences, "--out", tmp_path / "x")
    assert rc == 2 and "holds files this command did not write (thesis.tex)" in one_error_line(err)


def test_findings_md_unwritable_is_checked_at_start():
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_plugin.py",
                           "--findings-md", "/proc/geometry-checks-test/findings.md", "-k", "no_such_test"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in text, text
    assert "--findings-md /proc/geometry-checks-test/findings.md: cannot write in /proc" in text


def test_an_unwritable_recorded_dir_fails_the_check_in_one_line(tmp_path):
    from geometry_checks.result import Measurement
    from geometry_checks.plugin import recorded_getter

    (tmp_path / "plain").write_text("x")
    get = recorded_getter(True, tmp_path / "plain", {}, [])
    m = Measurement(model="minilm", sentence_set="tiny", depths=2, curves={"token_norm": [1.0, 2.0]},
                    provenance={"model": "minilm"})
    with pytest.raises(pytest.fail.Exception, match="is a file, not a directory") as info:
        get(m)
    assert "\n" not in str(info.value)
    assert (tmp_path / "plain").read_text() == "x"


# --------------------------------------------------------------------------- 2. loading


def _variant(tmp_path: Path, name: str, config: dict | None = None, drop=(), weights=None) -> Path:
    """The bundled MiniLM linked into tmp_path/name, with config.json changed, files dropped
    or model.safetensors replaced by `weights` (bytes)."""
    src = loader.bundled_minilm_dir()
    d = tmp_path / name
    d.mkdir()
    for f in src.iterdir():
        if f.name in drop or (config and f.name == "config.json") or (weights is not None and f.suffix == ".safetensors"):
            continue
        (d / f.name).symlink_to(f)
    if config:
        data = json.loads((src / "config.json").read_text())
        data.update(config)
        (d / "config.json").write_text(json.dumps(data))
    if weights is not None:
        (d / "model.safetensors").write_bytes(weights)
    return d


def _load_error(directory: Path) -> str:
    with pytest.raises(InputError) as info:
        loader.load(loader.resolve(str(directory)), "cpu")
    message = str(info.value)
    assert "\n" not in message and str(directory) in message
    return message


@pytest.mark.minilm
@pytest.mark.parametrize(("layers", "blocks"), [(8, 6), (4, 6)])
def test_config_that_contradicts_the_weights(tmp_path, layers, blocks):
    message = _load_error(_variant(tmp_path, f"l{layers}", {"num_hidden_layers": layers}))
    assert f"num_hidden_layers {layers} but the weights hold {blocks} blocks" in message


@pytest.mark.minilm
def test_hidden_size_mismatch_names_the_tensors(tmp_path):
    message = _load_error(_variant(tmp_path, "h768", {"hidden_size": 768}))
    assert "another shape than config.json declares" in message and "above report" not in message


@pytest.mark.minilm
def test_a_missing_tensor_is_never_random_initialised(tmp_path):
    from safetensors.torch import load_file, save_file

    tensors = load_file(loader.bundled_minilm_dir() / "model.safetensors")
    del tensors["encoder.layer.3.output.dense.weight"]
    tmp = tmp_path / "w.safetensors"
    save_file(tensors, tmp, metadata={"format": "pt"})
    message = _load_error(_variant(tmp_path, "missing", weights=tmp.read_bytes()))
    assert "1 parameters the model declares are not in the weights" in message
    assert "encoder.layer.3.output.dense.weight" in message


@pytest.mark.minilm
def test_an_extra_tensor_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file
    import torch

    tensors = load_file(loader.bundled_minilm_dir() / "model.safetensors")
    tensors["encoder.layer.0.surprise.weight"] = torch.zeros(3)
    tmp = tmp_path / "w.safetensors"
    save_file(tensors, tmp, metadata={"format": "pt"})
    message = _load_error(_variant(tmp_path, "extra", weights=tmp.read_bytes()))
    assert "not used by the model" in message and "encoder.layer.0.surprise.weight" in message


@pytest.mark.minilm
def test_truncated_weights_file(tmp_path, capsys):
    full = (loader.bundled_minilm_dir() / "model.safetensors").read_bytes()
    d = _variant(tmp_path, "trunc", weights=full[: len(full) // 3])
    rc, _, err = run(capsys, "measure", "--model", d, "--out", tmp_path / "o.json")
    line = one_error_line(err)
    assert rc == 2 and "model.safetensors is corrupt or truncated" in line and str(d) in line
    assert not (tmp_path / "o.json").exists()


def test_directory_without_tokenizer_files(tmp_path, capsys):
    d = _variant(tmp_path, "notok", drop=("tokenizer.json", "tokenizer_config.json", "vocab.txt",
                                          "special_tokens_map.json"))
    rc, _, err = run(capsys, "measure", "--model", d, "--out", tmp_path / "o.json")
    line = one_error_line(err)
    assert rc == 2 and "has no tokenizer files" in line and "content token" not in line


# --------------------------------------------------------------------------- 3. long input


@pytest.fixture(scope="module")
def minilm():
    return loader.load(loader.resolve("minilm"), "cpu")


@pytest.mark.minilm
def test_the_token_limit_is_the_models_own(minilm, tmp_path):
    assert minilm.max_tokens == 256  # sentence_bert_config.json max_seq_length, not the tokenizer's 512
    assert minilm.provenance["max_tokens"] == 256
    bare = loader.load(loader.resolve(str(_variant(tmp_path, "bare", drop=("sentence_bert_config.json",)))), "cpu")
    assert bare.max_tokens == 512  # tokenizer limit, capped by 512 positions


@pytest.mark.minilm
def test_long_sentences_are_cut_with_one_warning(tmp_path, capsys, private_cache):
    long = " ".join(WORDS[i % len(WORDS)] for i in range(400))
    huge = " ".join(WORDS[i % len(WORDS)] for i in range(600_000))  # ~4.5 MB on one line
    path = tmp_path / "s.txt"
    path.write_text(f"Cats sleep a lot during the day\n# a comment\n{long}\nDogs bark at night\n{huge}\n")
    rc, _, err = run(capsys, "measure", "--sentences", path, "--out", tmp_path / "o.json")
    assert rc == 0, err
    warned = [line for line in err.splitlines() if "longer than the model's limit" in line]
    assert len(warned) == 1, err
    assert "2 text(s) longer than the model's limit of 256 tokens (line 3, line 5)" in warned[0]
    data = json.loads((tmp_path / "o.json").read_text())
    measured = data["per_sentence"]["sentences"]
    assert long.startswith(measured[1]) and len(measured[1]) < len(long)
    assert data["provenance"]["truncated"] == {"max_tokens": 256, "count": 2, "where": ["line 3", "line 5"]}
    assert (tmp_path / "o.json").stat().st_size < 200_000  # the 4.5 MB line is not copied
    entries = list(private_cache.glob("*.json"))
    assert entries and all(e.stat().st_size < 200_000 for e in entries)
    # the cut text fits the limit exactly as it was measured
    ids = loader.load(loader.resolve("minilm"), "cpu").tokenizer(measured[1])["input_ids"]
    assert 250 <= len(ids) <= 256

    # served from the cache: the same warning; --no-truncate refuses, naming the lines
    rc, _, err = run(capsys, "measure", "--sentences", path, "--out", tmp_path / "p.json")
    assert rc == 0 and "(line 3, line 5)" in err
    rc, _, err = run(capsys, "measure", "--sentences", path, "--out", tmp_path / "q.json", "--no-truncate")
    assert rc == 2 and "(line 3, line 5); --no-truncate rejects them" in one_error_line(err)
    assert not (tmp_path / "q.json").exists()


# --------------------------------------------------------------------------- 4. degenerate sets


@pytest.mark.minilm
@pytest.mark.parametrize("text", ["The cat sat on the mat today", "Hello"])
def test_one_sentence_measures_what_can_be_measured(tmp_path, capsys, text):
    path = tmp_path / "one.txt"
    path.write_text(text + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc, _, err = run(capsys, "measure", "--sentences", path, "--out", tmp_path / "o.json")
    assert rc == 0, err
    data = json.loads((tmp_path / "o.json").read_text())
    for name in ("cross_sentence_cosine", "sentence_signal", "separability_ratio"):
        assert all(v is None for v in data["curves"][name]), name
        assert data["not_computed"][name].startswith("needs at least 2 sentences")
    for name in ("write_depth_histogram", "late_write_fraction", "dim_correlation"):
        assert "needs at least 2 sentences" in data["not_computed"][name]
    # every curve has a number somewhere, or a reason
    for name, curve in data["curves"].items():
        assert any(v is not None for v in curve) or name in data["not_computed"], name
    assert all(v is not None for v in data["curves"]["token_norm"])
    if text == "Hello":  # one content token: the token-pair and PCA metrics are undefined, with reasons
        assert "2 content tokens" in data["not_computed"]["intra_sentence_cosine"]
        assert "2 content tokens" in data["not_computed"]["fixed_pca_step"]


@pytest.mark.minilm
def test_one_sentence_both_paths_agree(minilm):
    from geometry_checks.measure import measure
    from geometry_checks.streaming import measure_streaming

    one = SentenceSet("one", ("The cat sat on the mat today",))
    a = measure(C.capture(minilm, one), one).to_json()
    b = measure_streaming(minilm, one).to_json()
    assert a["not_computed"] == b["not_computed"]
    assert a["curves"]["separability_ratio"] == b["curves"]["separability_ratio"] == [None] * 7


@pytest.mark.minilm
def test_single_token_sentences_give_null_not_infinity(minilm):
    """Two sentences of one content token each: no within-sentence scatter, so the ratio is
    undefined (it came out inf, and `measure --out` crashed writing it as JSON)."""
    from geometry_checks.measure import measure
    from geometry_checks.streaming import measure_streaming

    two = SentenceSet("two", ("0", "1"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = [measure(C.capture(minilm, two), two), measure_streaming(minilm, two)]
    for result in results:
        assert result.curves["separability_ratio"] == [None] * 7
        assert "within-sentence scatter is 0" in result.not_computed["separability_ratio"]
        json.dumps(result.to_json(), allow_nan=False)


# --------------------------------------------------------------------------- 5. text files


@pytest.mark.parametrize("suffix", [".txt", ".json"])
def test_a_byte_order_mark_is_dropped(tmp_path, suffix):
    texts = ["First sentence here", "Second one"]
    body = "\n".join(texts) if suffix == ".txt" else json.dumps({"sentences": texts})
    plain, bom = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
    plain.write_text(body, encoding="utf-8")
    bom.write_bytes(b"\xef\xbb\xbf" + body.encode())
    a, b = load_sentence_set(plain), load_sentence_set(bom)
    assert b.sentences == tuple(texts) and a.sha256 == b.sha256


def test_the_sets_hash_is_that_of_its_sentences(tmp_path):
    (tmp_path / "a.txt").write_bytes("\ufeffOne two\r\nThree four\r\n".encode())
    (tmp_path / "b.json").write_text(json.dumps({"sentences": ["One two", "Three four"]}))
    assert load_sentence_set(tmp_path / "a.txt").sha256 == load_sentence_set(tmp_path / "b.json").sha256


def test_a_sentence_fifo_is_refused_not_read(tmp_path):
    fifo = tmp_path / "s.txt"
    os.mkfifo(fifo)
    proc = subprocess.run([sys.executable, "-m", "geometry_checks", "measure", "--sentences", str(fifo),
                           "--out", str(tmp_path / "o.json")], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2 and "is not a regular file" in one_error_line(proc.stderr)


@pytest.mark.parametrize(("config", "fragment"), [
    ("[1, 2]", "not a JSON object"),
    ('{"num_hidden_layers": "six", "hidden_size": 384}', "num_hidden_layers must be a positive integer"),
])
def test_a_config_that_is_not_a_config(tmp_path, capsys, monkeypatch, config, fragment):
    d = _variant(tmp_path, "cfg", drop=("config.json",))
    (d / "config.json").write_text(config)
    _fail_if_loaded(monkeypatch)
    rc, _, err = run(capsys, "measure", "--model", d, "--out", tmp_path / "o.json")
    assert rc == 2 and fragment in one_error_line(err)


# --------------------------------------------------------------------------- 6. options


@pytest.mark.parametrize("value", ["0", "-3"])
def test_batch_size_is_checked_before_any_model_loads(tmp_path, sentences, capsys, monkeypatch, value):
    _fail_if_loaded(monkeypatch)
    for command in ("measure", "report"):
        out = tmp_path / ("o.json" if command == "measure" else "rep")
        rc, _, err = run(capsys, command, "--sentences", sentences, "--out", out, "--batch-size", value)
        assert rc == 2 and f"--batch-size must be at least 1, got {value}" in one_error_line(err)


# --------------------------------------------------------------------------- 7. hints


def test_regenerate_hints_carry_the_runs_options(tmp_path):
    from geometry_checks import baselines as B
    from geometry_checks import plugin as P

    class Config:
        options = {"--sentences": str(tmp_path / "my set.json"), "--recorded-dir": str(tmp_path / "rec")}

        def getoption(self, name):
            return self.options.get(name)

    extra = P._run_options(Config(), {"mxbai": "/models/mxbai"})
    assert f"--recorded-dir {tmp_path / 'rec'}" in extra and "--model-path=mxbai=/models/mxbai" in extra
    assert f"--sentences '{tmp_path / 'my set.json'}'" in extra
    B.set_run_options(extra)
    try:
        assert B.regenerate_command("minilm") == "pytest -m minilm --update-baselines" + extra
        assert B.compare("minilm", "token_norm", [1.0], [2.0]).message.endswith(
            f"regenerate with `pytest -m minilm --update-baselines{extra}`")
    finally:
        B.set_run_options("")


def test_uncached_hub_id_hint_works(monkeypatch):
    monkeypatch.setattr(loader, "hub_cache_dir", lambda *a, **k: None)
    ref = loader.resolve("someorg/some-encoder")
    message = loader.how_to_supply(ref.spec)
    assert "--model=DIR" in message and "--model-path" not in message
    assert "--model-path=minilm=DIR" in loader.how_to_supply(C.MODELS["minilm"])


def test_comments_only_file_is_not_called_empty(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("# one\n\n   # two\n")
    with pytest.raises(InputError, match="every line is blank or a comment"):
        load_sentence_set(path)


@pytest.mark.minilm
@pytest.mark.parametrize("suffix", [".txt", ".json"])
def test_sentence_error_names_file_and_line(tmp_path, capsys, suffix):
    texts = ["Cats sleep a lot", "\U0001F600\U0001F680"]
    path = tmp_path / f"s{suffix}"
    path.write_text("\n".join(texts) if suffix == ".txt" else json.dumps({"sentences": texts}, indent=1))
    rc, _, err = run(capsys, "measure", "--sentences", path, "--out", tmp_path / "o.json")
    line = one_error_line(err)
    where = f"{path} line 2" if suffix == ".txt" else f"{path} sentences[1], line 4"
    assert rc == 2 and where in line and "has no content token" in line


# --------------------------------------------------------------------------- 8. fuzz


def _json_values():
    leaves = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


_KEYS = st.sampled_from(["name", "description", "sentences", "retrieval", "pairs", "colour"])
_SHAPES = (st.binary(max_size=300).map(lambda b: ("txt", b))
           | st.text(max_size=200).map(lambda t: ("txt", t.encode("utf-8", "surrogatepass")))
           | st.dictionaries(_KEYS, _json_values(), max_size=5).map(lambda d: ("json", json.dumps(d).encode()))
           | _json_values().map(lambda v: ("json", json.dumps(v).encode()))
           | st.binary(max_size=200).map(lambda b: ("json", b)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_SHAPES)
def test_fuzz_sentence_files_load_or_give_one_line(tmp_path, shape):
    suffix, data = shape
    path = tmp_path / f"fuzz.{suffix}"
    path.write_bytes(data)
    try:
        result = load_sentence_set(path)
    except InputError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(str(path))
        return
    assert result.sentences and all(t and t == t.strip() for t in result.sentences)


@pytest.fixture(scope="module")
def shared_minilm(minilm):
    return minilm


@pytest.mark.minilm
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_SHAPES | st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=4).map(
    lambda xs: ("json", json.dumps({"sentences": xs, "pairs": {"p": xs[:2]} if len(xs) > 1 else {}}).encode())))
def test_fuzz_measure_gives_a_measurement_or_one_line(tmp_path, capsys, monkeypatch, shared_minilm, shape):
    """Through the whole CLI (the model loaded once for the test: the fuzz is about the input)."""
    monkeypatch.setattr(Lab, "_load", lambda self, model: shared_minilm)
    monkeypatch.setenv("GEOMETRY_CHECKS_CACHE", "off")
    suffix, data = shape
    path = tmp_path / f"fuzz.{suffix}"
    path.write_bytes(data)
    out = tmp_path / "o.json"
    out.unlink(missing_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc, _, err = run(capsys, "measure", "--sentences", path, "--out", out, "--device", "cpu")
    if rc == 0:
        assert json.loads(out.read_text())["curves"]
    else:
        assert rc == 2 and one_error_line(err) and not out.exists()
    # a file that loads and whose every text has a content token is measured (degenerate or not)
    try:
        sentences = load_sentence_set(path)
    except InputError:
        return
    from geometry_checks.streaming import content_counts

    counts = content_counts(shared_minilm, C.token_ids(shared_minilm, C.texts_of(sentences)))
    if min(counts) > 0:
        assert rc == 0, err
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
