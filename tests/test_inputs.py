"""Bad input: one clear line on stderr, a non-zero exit, never a traceback."""
import json
import shutil
import subprocess
import sys

import pytest
import torch

from geometry_checks.loader import bundled_minilm_dir
from geometry_checks.errors import InputError
from geometry_checks.sentences import load_sentence_set


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "geometry_checks", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def assert_one_line_error(proc, fragment):
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("geometry-checks: error")]
    assert len(lines) == 1, proc.stderr
    assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(("content", "fragment"), [
    (None, "sentence file not found"),
    ('{"sentences": [', "invalid JSON at line 1"),
    ('{"sentences": []}', "'sentences' is empty"),
    ('{"sentences": ["ok", 3]}', "sentences[1] must be a non-empty string"),
    ('{"sentences": ["a b"], "pairs": {"x": ["a"]}}', "exactly two sentences"),
    ('{"sentences": ["a b"], "retrieval": [{"query": "q"}]}', "retrieval[0] lacks positive"),
    ('{"sentences": ["a b"], "colour": 1}', "unknown field(s) colour"),
    ("", "no sentences"),
    (b"\xff\xfe\xfa", "cannot read sentence file"),
])
def test_bad_sentence_file(tmp_path, content, fragment):
    path = tmp_path / ("s.txt" if content in ("", b"\xff\xfe\xfa") else "s.json")
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=None) as info:
        load_sentence_set(path)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_cli_missing_sentence_file(tmp_path):
    assert_one_line_error(run_cli("measure", "--sentences", str(tmp_path / "nope.json"), "--out", str(tmp_path / "o.json")),
                          "sentence file not found")


def test_cli_broken_json(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"sentences": ["a",]}')
    assert_one_line_error(run_cli("report", "--sentences", str(bad), "--out", str(tmp_path)), "invalid JSON")


@pytest.mark.parametrize(("args", "fragment"), [
    (["--model", "/nonexistent/model"], "does not exist"),
    (["--model-path", "minilm=/nonexistent/model", "--model", "minilm"], "does not exist"),
    (["--model-path", "nosuch=/tmp", "--model", "minilm"], "unknown model 'nosuch'"),
    (["--model", "not-a-model"], "unknown model"),
])
def test_cli_bad_model(tmp_path, args, fragment):
    assert_one_line_error(run_cli("measure", *args, "--out", str(tmp_path / "o.json")), fragment)


def test_cli_directory_without_weights(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert_one_line_error(run_cli("measure", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "o.json")),
                          "has no weights")


@pytest.fixture(scope="module")
def nan_model(tmp_path_factory):
    """A copy of MiniLM whose embedding LayerNorm is NaN: every hidden state is NaN."""
    from safetensors.torch import load_file, save_file

    target = tmp_path_factory.mktemp("nan") / "minilm-nan"
    shutil.copytree(bundled_minilm_dir(), target)
    weights = load_file(target / "model.safetensors")
    key = next(k for k in weights if k.endswith("embeddings.LayerNorm.weight"))
    weights[key] = torch.full_like(weights[key], float("nan"))
    save_file(weights, target / "model.safetensors", metadata={"format": "pt"})
    return target


@pytest.mark.minilm
def test_cli_nan_hidden_states(tmp_path, nan_model):
    proc = run_cli("measure", "--model-path", f"minilm={nan_model}", "--model", "minilm",
                   "--out", str(tmp_path / "o.json"))
    assert_one_line_error(proc, "hidden states contain NaN or inf")
    assert not (tmp_path / "o.json").exists()


@pytest.mark.minilm
def test_cli_short_sentence_is_left_out_with_a_warning(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("Cats sleep a lot during the day\nHello\nDogs bark at the mailman\n")
    proc = run_cli("measure", "--sentences", str(path), "--out", str(tmp_path / "o.json"))
    assert proc.returncode == 0, proc.stderr
    assert "'Hello': fewer than 2 content tokens" in proc.stderr
    data = json.loads((tmp_path / "o.json").read_text())
    assert data["excluded"][0]["sentence"] == "Hello"
    assert data["not_computed"]["recall_at_k"] == "the sentence file has no retrieval items"
    assert all(v is not None for v in data["curves"]["intra_sentence_cosine"])


@pytest.mark.minilm
def test_cli_sentence_without_content_tokens(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("Cats sleep a lot\n[SEP]\n")
    assert_one_line_error(run_cli("measure", "--sentences", str(path), "--out", str(tmp_path / "o.json")),
                          "has no content token")


def test_pytest_model_path_pointing_nowhere(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pytest", "--model-path", "minilm=/nonexistent", "-m", "minilm",
                           "--co", "-q"], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "--model-path minilm=/nonexistent: directory /nonexistent does not exist" in proc.stderr + proc.stdout
