"""Every model family measured right (issue 22), on tiny random-weight models built from
config at test time (2-3 blocks, hidden 32-64; nothing shipped): BERT, MPNet, XLM-R,
ModernBERT (post-norm and pre-norm encoders) and Llama, Qwen3, Gemma3 (pre-norm decoders).

For each family:
- the shape contract of LayerStates (depths 0..L, the `final` stage where the model ends in
  a final norm, the summary token);
- depth semantics against a plain per-sentence reference written here: the sentence alone
  through the model with output_hidden_states and this module's own hooks on the blocks,
  so depth d is the residual stream after block d at EVERY depth (the last included), and
  the final norm's output is the stage `final` (transformers puts it at depth L);
- pooling: the model's sentence embedding is its default pooling (mean for encoders, the
  last non-pad token for decoders) of the final stage; `cls` reads the summary token;
- batch invariance with a tokenizer that pads left and one that pads right;
- the sublayer capture `mid`: the block's output is its FFN sublayer applied to `mid`, and
  in a pre-norm block `mid` = block input + attention output (the residual after attention).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from geometry_checks import capture as C
from geometry_checks import loader
from geometry_checks import metrics as M
from geometry_checks.errors import InputError
from geometry_checks.registry import read_pooling, read_st_pipeline
from geometry_checks.sentences import SentenceSet

transformers = pytest.importorskip("transformers")

TEXTS = (
    "The cat sat on the mat.",
    "A quick brown fox jumps over the lazy dog by the river bank.",
    "Hi there",
    "Language models write most of their sentence signal late.",
    "Rain fell.",
)
CORPUS = list(TEXTS) + [
    "the of and to in is that it was for on are as with his they at be this from",
    "Sentence embeddings pool the token states of a model into one vector per text.",
    "Padding on the left shifts positions unless the position ids are corrected.",
]
BERT_VOCAB = 30522


def _minilm_tokenizer(target: Path) -> None:
    source = loader.bundled_minilm_dir()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(source / name, target / name)


def _bpe_tokenizer(target: Path, template: str) -> int:
    """A small byte-level BPE tokenizer trained here on CORPUS; `template` is its single-text
    post-processor (e.g. `<bos> $A` as Llama/Gemma, `$A <eos>` as Qwen3-Embedding)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(s, tok.token_to_id(s)) for s in ("<bos>", "<eos>")])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
                                   unk_token="<unk>", model_max_length=128)
    fast.save_pretrained(target)
    return tok.get_vocab_size()


# family -> (config class name, config kwargs, tokenizer: "bert" or a BPE template, pre-norm, causal)
SMALL = dict(num_hidden_layers=3, num_attention_heads=4, initializer_range=0.2)
FAMILIES = {
    "bert": ("BertConfig", dict(hidden_size=32, intermediate_size=64, max_position_embeddings=128, **SMALL),
             "bert", False, False),
    "mpnet": ("MPNetConfig", dict(hidden_size=32, intermediate_size=64, max_position_embeddings=130,
                                  pad_token_id=0, **SMALL), "bert", False, False),
    "xlm-roberta": ("XLMRobertaConfig", dict(hidden_size=32, intermediate_size=64, max_position_embeddings=130,
                                             pad_token_id=0, bos_token_id=101, eos_token_id=102, **SMALL),
                    "bert", False, False),
    "modernbert": ("ModernBertConfig", dict(hidden_size=64, intermediate_size=96, max_position_embeddings=128,
                                            pad_token_id=0, cls_token_id=101, sep_token_id=102, bos_token_id=101,
                                            eos_token_id=102, global_attn_every_n_layers=2, local_attention=8,
                                            **SMALL), "bert", True, False),
    "llama": ("LlamaConfig", dict(hidden_size=64, intermediate_size=96, num_key_value_heads=2,
                                  max_position_embeddings=128, **SMALL), "<bos> $A", True, True),
    "qwen3": ("Qwen3Config", dict(hidden_size=64, intermediate_size=96, num_key_value_heads=2, head_dim=16,
                                  max_position_embeddings=128, **SMALL), "$A <eos>", True, True),
    "gemma3_text": ("Gemma3TextConfig", dict(hidden_size=64, intermediate_size=96, num_key_value_heads=2,
                                             head_dim=16, max_position_embeddings=128, sliding_window=8,
                                             **SMALL), "<bos> $A", True, True),
}


def build(family: str, target: Path, padding_side: str = "right") -> Path:
    """A tiny random-weight model of `family` saved with its tokenizer in `target`."""
    cls_name, kwargs, tokenizer, _, _ = FAMILIES[family]
    target.mkdir(parents=True, exist_ok=True)
    if tokenizer == "bert":
        _minilm_tokenizer(target)
        vocab = BERT_VOCAB
        extra = {}
    else:
        vocab = _bpe_tokenizer(target, tokenizer)
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(target)
        extra = dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    config_file = target / "tokenizer_config.json"
    tok_config = json.loads(config_file.read_text())
    tok_config["padding_side"] = padding_side
    config_file.write_text(json.dumps(tok_config))
    config = getattr(transformers, cls_name)(vocab_size=vocab, **{**kwargs, **extra})
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(config).eval()
    model.save_pretrained(target)
    return target


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """family -> (directory right-padded, directory left-padded, loaded (right))."""
    out = {}

    def get(family):
        if family not in out:
            root = tmp_path_factory.mktemp(family)
            right = build(family, root / "right", "right")
            left = build(family, root / "left", "left")
            out[family] = (right, left, loader.load(loader.resolve(str(right)), device="cpu"))
        return out[family]

    return get


def _set(texts=TEXTS) -> SentenceSet:
    return SentenceSet(name="arch", sentences=tuple(texts))


def _blocks(model):
    for path in ("encoder.layer", "layers"):
        try:
            return model.get_submodule(path)
        except AttributeError:
            continue
    raise AssertionError("no blocks")


def reference(loaded: C.LoadedModel, text: str):
    """The plain per-sentence reference: `text` alone, with output_hidden_states; the raw
    residual after every block from this test's own hooks on the blocks. Returns
    (depths [L+1, T, H], final [T, H] or None, hidden_states [L+1, T, H])."""
    model, tok = loaded.model, loaded.tokenizer
    enc = tok([text], return_tensors="pt")
    outs = []
    handles = [b.register_forward_hook(lambda m, i, o: outs.append(o[0] if isinstance(o, tuple) else o))
               for b in _blocks(model)]
    try:
        with torch.inference_mode():
            hidden = model(**enc, output_hidden_states=True).hidden_states
    finally:
        for h in handles:
            h.remove()
    hidden = torch.stack([h[0] for h in hidden]).float()
    raw = torch.cat([hidden[:1], torch.stack([o[0] for o in outs]).float()])
    final = hidden[-1] if loaded.spec.final_norm_module else None
    return raw, final, hidden


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest relative difference of token vectors: max ||a - b|| / ||b||."""
    return float((torch.linalg.vector_norm(a - b, dim=-1) / torch.linalg.vector_norm(b, dim=-1).clamp_min(1e-30)).max())


@pytest.mark.parametrize("family", list(FAMILIES))
def test_shape_contract_and_layout(models, family):
    _, _, loaded = models(family)
    _, _, _, pre_norm, causal = FAMILIES[family]
    spec = loaded.spec
    assert (spec.final_norm_module is not None) == pre_norm and spec.causal == causal
    assert spec.pooling == ("lasttoken" if causal else "mean")
    st = C.capture(loaded, _set(), batch_size=8)
    P, N, T, H = st.states.shape
    assert (P, N, H) == (spec.layers + 1, len(TEXTS), spec.hidden_size) == (4, 5, H)
    assert st.attn.shape == st.content.shape == st.input_ids.shape == (N, T)
    assert st.summary == ("last" if causal else "first") == loaded.provenance["summary_token"]
    if pre_norm:
        assert st.final.shape == (N, T, H) and torch.isfinite(st.final[st.attn]).all()
    else:
        assert st.final is None
    specials = torch.isin(st.input_ids, torch.tensor(loaded.tokenizer.all_special_ids))
    assert torch.equal(st.content, st.attn & ~specials) and st.content.any(1).all()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_depth_is_the_residual_stream_as_the_per_sentence_reference(models, family):
    """Batched and padded capture == each sentence alone through the model, at every depth 0..L:
    depths 0..L-1 are output_hidden_states' own, depth L is the last block's raw output (not
    the final norm's, which transformers puts there), and `final` is that norm's output."""
    _, _, loaded = models(family)
    for method in ("auto", "hooks", "hidden_states"):
        st = C.capture(loaded, _set(), batch_size=8, method=method)
        worst = [0.0] * st.depths
        for n, text in enumerate(TEXTS):
            raw, final, hidden = reference(loaded, text)
            got = st.states[:, n][:, st.attn[n]]
            assert got.shape == raw.shape
            for d in range(st.depths):
                worst[d] = max(worst[d], _rel(got[d], raw[d]))
            assert torch.equal(raw[:-1], hidden[:-1])  # the reference's two routes agree below L
            if final is not None:
                assert _rel(st.final[n][st.attn[n]], final) < 1e-5
                # the last depth is the raw stream: the final norm of it gives hidden_states[L]
                norm = loaded.model.get_submodule(loaded.spec.final_norm_module)
                with torch.inference_mode():
                    assert _rel(norm(raw[-1][None])[0].float(), hidden[-1]) < 1e-5
                assert _rel(got[-1], hidden[-1]) > 1e-2  # ... which is another kind of state
            else:
                assert torch.equal(raw[-1], hidden[-1])
        print(f"\n{family} [{method}] largest relative difference per depth vs reference: "
              + ", ".join(f"{w:.2e}" for w in worst))
        assert max(worst) < 1e-5, worst


@pytest.mark.parametrize("family", list(FAMILIES))
def test_pooling_is_the_models_own_on_the_final_stage(models, family):
    _, _, loaded = models(family)
    causal = FAMILIES[family][4]
    st = C.capture(loaded, _set(), batch_size=8)
    emb = C.sentence_embeddings(st)
    for n, text in enumerate(TEXTS):
        raw, final, _ = reference(loaded, text)
        last = final if final is not None else raw[-1]
        want = last[-1] if causal else last.mean(0)  # decoders: the last token; encoders: the mean
        assert _rel(emb[n].float()[None], want[None]) < 1e-5
        # `cls` pooling and cls_mean_alignment read the summary token: never a decoder's first
        token = M.pool(st.states, st.attn, "cls", st.summary)[:, n].float()
        assert _rel(token, raw[:, -1 if causal else 0]) < 1e-5
    align = M.cls_mean_alignment(st.states, st.attn, st.summary)
    want = M.cosine(M.summary_token(st.states, st.attn, st.summary), M.mean_pool(st.states, st.attn)).mean(1)
    assert torch.allclose(align, want)
    if causal:
        assert not torch.allclose(align, M.cls_mean_alignment(st.states, st.attn, "first"))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_batch_invariance_with_left_and_right_padding(models, family):
    """The same sentences in one padded batch and one by one, from a tokenizer that pads on the
    left and one that pads on the right: the same states (capture always pads right)."""
    right, left, _ = models(family)
    alone = None
    for side, directory in (("right", right), ("left", left)):
        loaded = loader.load(loader.resolve(str(directory)), device="cpu")
        assert loaded.provenance["tokenizer_padding_side"] == side
        batched = C.capture(loaded, _set(), batch_size=8)
        record = loaded.provenance["batch_invariance"]
        assert record["texts"] >= 2 and record["max_rel_diff"] < 1e-4
        single = C.capture(loaded, _set(), batch_size=1)
        rel = 0.0
        for n in range(len(TEXTS)):
            a = torch.cat([batched.states[:, n], *([batched.final[n][None]] if batched.final is not None else [])])
            b = torch.cat([single.states[:, n], *([single.final[n][None]] if single.final is not None else [])])
            rel = max(rel, _rel(a[:, batched.attn[n]], b[:, single.attn[n]]))
            if alone is not None:  # the left-padding tokenizer's numbers equal the right's
                assert _rel(a[:, batched.attn[n]], alone[n]) < 1e-5
        alone = [torch.cat([single.states[:, n], *([single.final[n][None]] if single.final is not None else [])])
                 [:, single.attn[n]] for n in range(len(TEXTS))]
        print(f"\n{family} tokenizer padding {side}: batch vs alone {rel:.2e}, "
              f"run's check {record['max_rel_diff']:.2e}")
        assert rel < 1e-4


@pytest.mark.parametrize("family", list(FAMILIES))
def test_sublayer_mid_is_the_residual_after_attention(models, family):
    """`mid` of block d: the block's output is its FFN sublayer applied to mid; in a pre-norm
    block mid = block input + attention output (this test's own hook on the attention)."""
    _, _, loaded = models(family)
    model, pre_norm = loaded.model, FAMILIES[family][3]
    st = C.capture(loaded, _set(), batch_size=8, sublayers=True)
    mid = st.sublayers["attn"]
    assert mid.shape == st.states.shape and torch.isnan(mid[0]).all()
    blocks = _blocks(model)
    attn_out = []
    if pre_norm:  # the attention sublayer's contribution to the residual, by this test's hooks
        names = {"gemma3_text": "post_attention_layernorm", "modernbert": "attn"}
        name = names.get(family, "self_attn")
        handles = [b.get_submodule(name).register_forward_hook(
            lambda m, i, o: attn_out.append(o[0] if isinstance(o, tuple) else o)) for b in blocks]
        enc = loaded.tokenizer(list(st.model_texts), padding=True, return_tensors="pt")
        try:
            with torch.inference_mode():
                model(**enc)
        finally:
            for h in handles:
                h.remove()
        assert torch.equal(enc["attention_mask"].bool(), st.attn)
    worst = 0.0
    with torch.inference_mode():
        for d, block in enumerate(blocks, start=1):
            m, out, x = mid[d][st.attn], st.states[d][st.attn], st.states[d - 1][st.attn]
            if family in ("bert", "xlm-roberta", "mpnet"):
                ffn = block.output(block.intermediate(m), m)
            elif family == "modernbert":
                ffn = m + block.mlp(block.mlp_norm(m))
            elif family == "gemma3_text":
                ffn = m + block.post_feedforward_layernorm(block.mlp(block.pre_feedforward_layernorm(m)))
            else:
                ffn = m + block.mlp(block.post_attention_layernorm(m))
            worst = max(worst, _rel(ffn.float(), out))
            if pre_norm:
                worst = max(worst, _rel(m, x + attn_out[d - 1][st.attn].float()))
    print(f"\n{family} sublayer mid: largest relative difference {worst:.2e}")
    assert worst < 1e-5


def test_unknown_architecture_whose_depths_disagree_is_refused(models, tmp_path, monkeypatch):
    """A pre-norm model the registry does not know (its model_type unlisted) keeps BERT's
    module paths, which it does not have: load refuses it with one line."""
    right, _, _ = models("llama")
    from geometry_checks import registry

    monkeypatch.delitem(registry.ARCHITECTURES, "llama")
    with pytest.raises(InputError, match="does not know") as err:
        loader.load(loader.resolve(str(right)), device="cpu")
    assert "\n" not in str(err.value)
    # ... and one whose modules are found but whose final norm is not declared
    monkeypatch.setitem(registry.ARCHITECTURES, "llama", dict(embeddings_module="embed_tokens",
                                                             blocks_module="layers"))
    with pytest.raises(InputError, match="last depth 3 are not the output of its last block"):
        loader.load(loader.resolve(str(right)), device="cpu")


def test_a_batch_dependent_capture_fails_the_run_with_one_line(models):
    """BERT's absolute positions: padding on the left without corrected position ids shifts
    every position, so the run's invariance check must fail, naming the model and the text."""
    right, _, _ = models("bert")
    loaded = loader.load(loader.resolve(str(right)), device="cpu")
    loaded.tokenizer.padding_side = "left"  # what capture refuses to do
    with pytest.raises(InputError, match=r"depend on its batch") as err:
        C.capture(loaded, _set(), batch_size=8)
    assert loaded.spec.name in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(("keys", "want"), [
    ({"pooling_mode_cls_token": True}, "cls"), ({"pooling_mode_mean_tokens": True}, "mean"),
    ({"pooling_mode_max_tokens": True}, "max"), ({"pooling_mode_lasttoken": True}, "lasttoken"),
    ({"pooling_mode_weightedmean_tokens": True}, "weightedmean"), ({}, None)])
def test_sentence_transformers_pooling_modes_are_read(tmp_path, keys, want):
    (tmp_path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pool", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
        {"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (tmp_path / "1_Pool").mkdir()
    (tmp_path / "1_Pool" / "config.json").write_text(json.dumps({"word_embedding_dimension": 8, **keys}))
    (tmp_path / "2_Dense").mkdir()
    (tmp_path / "2_Dense" / "config.json").write_text(json.dumps(
        {"in_features": 8, "out_features": 4, "activation_function": "torch.nn.modules.activation.Tanh"}))
    assert read_pooling(tmp_path) == want
    pipeline = read_st_pipeline(tmp_path)
    assert pipeline["modules"] == ["Transformer", "Pooling", "Dense", "Normalize"] and pipeline["normalize"]
    assert pipeline["dense"] == [{"path": "2_Dense", "in_features": 8, "out_features": 4,
                                  "activation": "torch.nn.modules.activation.Tanh"}]


def test_combined_or_unsupported_pooling_is_refused(tmp_path):
    (tmp_path / "1_Pooling").mkdir()
    config = tmp_path / "1_Pooling" / "config.json"
    config.write_text(json.dumps({"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True}))
    with pytest.raises(InputError, match="not one the suite measures"):
        read_pooling(tmp_path)
    config.write_text(json.dumps({"pooling_mode_mean_sqrt_len_tokens": True}))
    with pytest.raises(InputError, match="not one the suite measures"):
        read_pooling(tmp_path)


def test_a_decoder_directory_pools_as_its_sentence_transformers_files_say(models, tmp_path):
    right, _, _ = models("qwen3")
    target = tmp_path / "qwen3_st"
    shutil.copytree(right, target)
    (target / "1_Pooling").mkdir()
    (target / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    loaded = loader.load(loader.resolve(str(target)), device="cpu")
    assert loaded.spec.pooling == "mean" and loaded.spec.causal and loaded.provenance["summary_token"] == "last"


def test_an_unreadable_modules_json_falls_back_to_1_pooling_and_is_recorded(tmp_path):
    (tmp_path / "modules.json").write_text("not json")
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    assert read_pooling(tmp_path) == "cls"
    assert "unreadable" in read_st_pipeline(tmp_path)["unreadable"]


@pytest.mark.parametrize("family", ["qwen3", "modernbert"])
def test_streaming_equals_in_memory_with_the_final_stage_and_the_models_pooling(models, family):
    """Both measuring paths on a pre-norm model: the same `final` stage metrics, the same
    pooled curves under the model's own pooling (a decoder's last token), the same
    cls_mean_alignment read from its summary token; core.json's pairs and retrieval included."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_streaming import CORE, assert_same, both

    _, _, loaded = models(family)
    poolings = tuple(dict.fromkeys(("mean", loaded.spec.pooling, "cls", "max", "weightedmean")))
    memory, streamed = both(loaded, CORE, poolings, batch_size=16)
    deviation = assert_same(memory, streamed)
    assert set(memory["final"]) == {"intra_sentence_cosine", "cross_sentence_cosine", "sentence_signal",
                                    "separability_ratio", "token_norm"}
    assert set(streamed["by_pooling"]) == set(poolings) - {"mean"}
    assert streamed["provenance"]["summary_token"] == ("last" if loaded.spec.causal else "first")
    assert streamed["provenance"]["batch_invariance"]["max_rel_diff"] < 1e-4
    # the final norm's output is another kind of state than depth L (RMS/LayerNorm: norm ~ sqrt(H))
    assert memory["final"]["token_norm"] != pytest.approx(memory["curves"]["token_norm"][-1], rel=0.05)
    print(f"\n{family}: streaming vs in memory, largest deviation {deviation:.2e}")
