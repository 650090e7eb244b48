"""Stand-ins load and capture through the real code path.

Each stand-in (random weights, real architecture) is built once per session into a
temporary directory, loaded with loader.resolve/loader.load as a real checkpoint would
be, and captured on a handful of texts. What is checked is the path, not the numbers:
25 depths of width 1024, the content mask, the projection, hooks against
output_hidden_states, and the two ways jina's code differs from BERT's (custom code that
ignores output_hidden_states; a projection the model class does not own).
"""
from __future__ import annotations

import json
import string
import time

import pytest
import torch
from safetensors import safe_open

from geometry_checks import capture, standins
from geometry_checks import loader
from geometry_checks.errors import InputError
from geometry_checks.registry import MODELS, read_pooling
from geometry_checks.sentences import RetrievalItem, SentenceSet
from geometry_checks.standins import COLBERT_VOCAB_SIZE, STAMP, build_standin

pytestmark = pytest.mark.standin

DOCS = (
    "The stock market surged after the central bank cut interest rates",
    "The stock market plunged after the central bank raised interest rates",
    "A heavy storm knocked out power across the coastal town overnight",
)
QUERY = "Why did the stock market surge?"
SENTENCES = SentenceSet(
    name="standin-smoke",
    sentences=DOCS,
    retrieval=(RetrievalItem(kind="easy", query=QUERY, positive=DOCS[0], negatives=(DOCS[2],)),),
)


def _load(standin_dirs, name):
    ref = loader.resolve(name, {name: str(standin_dirs(name))})
    return loader.load(ref, device="cpu", dtype="float32")


@pytest.fixture(scope="class")
def mxbai(standin_dirs):
    loaded = _load(standin_dirs, "mxbai")
    yield loaded
    del loaded


@pytest.fixture(scope="class")
def colbert(standin_dirs):
    loaded = _load(standin_dirs, "colbert")
    yield loaded
    del loaded


def check_states_common(states, loaded, specials):
    """Shape contract, finiteness and content mask shared by both stand-ins."""
    n = len(capture.texts_of(SENTENCES))
    assert states.states.shape[:2] == (25, n)
    assert states.states.shape[-1] == 1024
    assert states.depths == loaded.spec.layers + 1 == 25
    assert torch.isfinite(states.states[:, states.attn]).all()
    for row, tokens in enumerate(states.tokens):
        content = states.content[row, : len(tokens)].tolist()
        for token, is_content in zip(tokens, content):
            assert is_content == (token not in specials), (token, tokens)
        assert not states.content[row, len(tokens) :].any()


class TestMxbaiStandin:
    def test_spec_and_files_match_the_real_model(self, mxbai, standin_dirs):
        config = mxbai.model.config
        assert type(mxbai.model).__name__ == "BertModel"
        assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (24, 1024, 16)
        assert (config.intermediate_size, config.vocab_size, config.max_position_embeddings) == (4096, 30522, 512)
        assert sum(p.numel() for p in mxbai.model.parameters()) == 335_141_888  # BERT-large with pooler
        assert mxbai.spec == MODELS["mxbai"]
        assert read_pooling(standin_dirs("mxbai")) == "cls"

    def test_capture_hidden_states_and_hooks_agree_exactly(self, mxbai):
        by_hidden = capture.capture(mxbai, SENTENCES, method="hidden_states")
        by_hooks = capture.capture(mxbai, SENTENCES, method="hooks")
        check_states_common(by_hidden, mxbai, {"[CLS]", "[SEP]", "[PAD]"})
        assert by_hidden.proj is None
        assert torch.equal(by_hidden.states, by_hooks.states)
        assert by_hidden.tokens[0][:3] == ["[CLS]", "the", "stock"]

    def test_tokenizer_covers_ascii_without_unknowns(self, mxbai):
        ids = mxbai.tokenizer(string.printable.strip() + " Hello, world!")["input_ids"]
        assert mxbai.tokenizer.unk_token_id not in ids
        assert max(ids) < mxbai.model.config.vocab_size


class TestColbertStandin:
    def test_custom_code_with_the_real_module_names(self, colbert, standin_dirs):
        model = colbert.model
        assert type(model).__module__.startswith("transformers_modules."), "not loaded as remote code"
        config = model.config
        assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (24, 1024, 16)
        assert (config.intermediate_size, config.position_embedding_type) == (4096, "rotary")
        assert config.vocab_size == COLBERT_VOCAB_SIZE
        names = dict(model.named_parameters())
        for name in (
            "embeddings.word_embeddings.weight",
            "embeddings.token_type_embeddings.weight",
            "emb_ln.weight",
            "encoder.layers.0.mixer.Wqkv.weight",
            "encoder.layers.0.mixer.out_proj.weight",
            "encoder.layers.0.norm1.weight",
            "encoder.layers.0.mlp.fc1.weight",
            "encoder.layers.0.mlp.fc2.weight",
            "encoder.layers.23.norm2.bias",
        ):
            assert name in names, name
        assert names["encoder.layers.0.mixer.Wqkv.weight"].shape == (3072, 1024)
        assert not any("position" in name for name in names), "rotary models have no position table"
        assert not hasattr(model, "linear"), "AutoModel should drop linear.weight, as for the real checkpoint"
        with safe_open(str(standin_dirs("colbert") / "model.safetensors"), framework="pt") as handle:
            keys = set(handle.keys())
        assert keys == {f"roberta.{name}" for name in names} | {"linear.weight"}
        assert colbert.spec == MODELS["colbert"]
        assert config.use_flash_attn is False, "the registry's config override did not reach the model"

    def test_capture_uses_hooks_projection_and_markers(self, colbert, standin_dirs):
        states = capture.capture(colbert, SENTENCES, method="auto", sublayers=True)
        specials = {"<s>", "</s>", "<pad>", "[QueryMarker]", "[DocumentMarker]"}
        check_states_common(states, colbert, specials)
        for tokens, role in zip(states.tokens, states.roles):
            marker = "[QueryMarker]" if role == "query" else "[DocumentMarker]"
            assert tokens[:2] == ["<s>", marker] and tokens[-1] == "</s>"
        assert "query" in states.roles

        # The projection is the checkpoint's linear.weight applied to the last depth.
        assert states.proj.shape == (*states.states.shape[1:3], 128)
        with safe_open(str(standin_dirs("colbert") / "model.safetensors"), framework="pt") as handle:
            weight = handle.get_tensor("linear.weight").float()
        expected = states.states[-1] @ weight.T
        assert torch.allclose(states.proj[states.attn], expected[states.attn], atol=1e-5, rtol=1e-4)

        # Sublayer `mid` from norm1: NaN at depth 0, finite and distinct from block outputs after.
        mid = states.sublayers["attn"]
        assert mid.shape == states.states.shape
        assert torch.isnan(mid[0]).all()
        assert torch.isfinite(mid[1:, states.attn]).all()
        assert not torch.equal(mid[1:], states.states[1:])

    def test_output_hidden_states_is_ignored(self, colbert):
        one = SentenceSet(name="one", sentences=("Rates rose.",))
        with pytest.raises(InputError, match="ignored output_hidden_states"):
            capture.capture(colbert, one, method="hidden_states")

    def test_tokenizer_covers_ascii_and_markers_are_special(self, colbert):
        tok = colbert.tokenizer
        ids = tok(string.printable.strip() + " Hello, world!")["input_ids"]
        assert tok.unk_token_id not in ids
        markers = tok.convert_tokens_to_ids(["[QueryMarker]", "[DocumentMarker]"])
        assert set(markers) <= set(tok.all_special_ids)
        assert max(markers) < colbert.model.config.vocab_size


def test_rebuilding_a_built_directory_is_a_no_op(standin_dirs):
    directory = standin_dirs("colbert")
    before = (directory / "model.safetensors").stat().st_mtime_ns
    started = time.perf_counter()
    assert build_standin("colbert", directory, seed=0) == directory
    assert time.perf_counter() - started < 1.0
    assert (directory / "model.safetensors").stat().st_mtime_ns == before
    assert (directory / STAMP).is_file()


def test_unknown_model_and_foreign_directory_are_refused(tmp_path):
    with pytest.raises(InputError, match="no stand-in for model 'minilm'"):
        build_standin("minilm", tmp_path / "x")
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty and not a stand-in"):
        build_standin("mxbai", tmp_path / "y")
    (tmp_path / "z").write_text("a file")
    with pytest.raises(InputError, match="is a file"):
        build_standin("mxbai", tmp_path / "z")


def test_directory_bookkeeping_with_a_tiny_builder(tmp_path, monkeypatch):
    """Reuse, rebuild on another seed, rebuild after an interrupted build; global RNG untouched."""
    calls = []

    def tiny(directory):
        calls.append(directory)
        (directory / "weights.txt").write_text(repr(torch.rand(2).tolist()))

    monkeypatch.setitem(standins.BUILDERS, "tiny", tiny)
    directory = tmp_path / "tiny"
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    build_standin("tiny", directory, seed=0)
    assert torch.equal(torch.rand(1), expected_next), "build_standin must not consume the global RNG"
    first = (directory / "weights.txt").read_text()

    build_standin("tiny", directory, seed=0)
    assert len(calls) == 1, "same name and seed: reused"

    (directory / "stale.txt").write_text("left over")
    build_standin("tiny", directory, seed=1)
    assert len(calls) == 2 and not (directory / "stale.txt").exists()
    assert (directory / "weights.txt").read_text() != first

    stamp = json.loads((directory / STAMP).read_text())
    (directory / STAMP).write_text(json.dumps({**stamp, "complete": False}))  # as if interrupted
    build_standin("tiny", directory, seed=1)
    assert len(calls) == 3 and json.loads((directory / STAMP).read_text()) == stamp
