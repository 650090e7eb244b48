"""The article's open question: sublayer capture, word classes, the attractor, the answer row.

- the new metric functions equal their loop oracles (tests/oracles.py) on ragged random
  batches, and the pair-class shares add up to intra_sentence_cosine;
- on MiniLM: the hook path with sublayers reproduces output_hidden_states exactly, and
  `mid` (sublayers['attn']) is block d's post-attention state: NaN at depth 0, different
  from out[d-1] and out[d], equal to LN1(out[d-1] + Attn(out[d-1])), and block d's
  feed-forward turns it into out[d];
- the word classes, derived here independently from the tokenizer's pre-tokenizer, and
  every open-question curve of `measure(..., sublayers=True)` equal loop oracles;
- `measure --sublayers` on a .txt file writes the curves; the open-question row and chart;
- on MPNet (12 layers, `attention` returns LN(attn + input), a relative position bias
  shared by all blocks): hooks equal output_hidden_states, and `mid` re-runs from the
  block's pieces with the encoder's position bias.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from geometry_checks import capture as C
from geometry_checks import loader
from geometry_checks import metrics as M
from geometry_checks import openquestion as OQ
from geometry_checks.measure import measure
from geometry_checks.result import Measurement
from geometry_checks.sentences import SentenceSet

try:
    from tests import oracles as O
except ImportError:  # tests/ on sys.path instead of the repo root
    import oracles as O

TOL = {"atol": 1e-5, "rtol": 1e-5}
TEXTS = SentenceSet("oq", (
    "The stock market surged after the central bank cut interest rates",
    "It wasn't what they had expected, but the hippopotamus stayed anyway.",
    "Unbelievably, nobody noticed the gigantic CRYSTAL chandelier",
    "Hello world",
    "Hi",
    "It is what it is.",
))


# --------------------------------------------------------------------------- metrics


def _ragged(seed: int, p: int = 3, h: int = 8):
    """States with padding garbage, [CLS]/[SEP] outside content, classes of every size."""
    g = torch.Generator().manual_seed(seed)
    lengths = [9, 3, 6, 4, 7]  # sentence 1: one content token
    s, t = len(lengths), max(lengths)
    states = torch.randn(p, s, t, h, generator=g, dtype=torch.float64)
    states[1, 0, 2] = 0.0  # a zero vector: cosine 0, its pairs still count
    attn = torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]
    content = attn.clone()
    content[:, 0] = False
    content[torch.arange(s), torch.tensor(lengths) - 1] = False
    states = torch.where(attn[None, :, :, None], states, torch.full_like(states, float("nan")))
    function = content & (torch.rand(s, t, generator=g) < 0.4)
    function[4] = content[4]  # sentence 4: only function words
    return states, attn, content, content & ~function, function


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_class_pair_cosines_equal_loop_oracle(seed):
    x, _, _, cw, fw = _ragged(seed)
    for got, (want, pairs) in (
        (M.intra_class_cosine(x, cw), O.intra_class_cosine(x, cw)),
        (M.intra_class_cosine(x, fw), O.intra_class_cosine(x, fw)),
        (M.cross_class_cosine(x, cw, fw), O.cross_class_cosine(x, cw, fw)),
    ):
        np.testing.assert_allclose(got[0].numpy(), want, **TOL)
        assert got[1] == pairs
    per = M.class_pair_cosine_per_sentence(x, fw, cw).numpy()
    np.testing.assert_allclose(per, O.class_pair_cosine_per_sentence(x, fw, cw), **TOL)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_class_shares_equal_loop_oracle_and_add_up_to_intra(seed):
    x, _, content, cw, fw = _ragged(seed)
    shares = torch.stack(M.class_pair_shares(x, content, cw, fw))
    np.testing.assert_allclose(shares.numpy(), O.class_pair_shares(x, content, cw, fw), **TOL)
    np.testing.assert_allclose(shares.sum(0).numpy(), M.intra_sentence_cosine(x, content).numpy(), **TOL)


def test_class_masks_must_split_the_content_mask():
    x, _, content, cw, fw = _ragged(0)
    with pytest.raises(ValueError, match="overlap"):
        M.class_pair_sums(x, cw | fw, fw)
    with pytest.raises(ValueError, match="split the content"):
        M.class_pair_shares(x, content, cw, fw & False)


@pytest.mark.parametrize("seed", [0, 1])
def test_pair_cosine_all_equals_loop_oracle(seed):
    x, attn, *_ = _ragged(seed)
    pools = M.mean_pool(x, attn)
    np.testing.assert_allclose(M.pair_cosine_all(pools).numpy(), O.pair_cosine_all(pools.numpy()), **TOL)
    assert math.isnan(float(M.pair_cosine_all(pools[:, :1])[0]))


def test_stop_words_are_scikit_learns():
    """openquestion reads the list from scikit-learn's module file (no sklearn import, issue 13)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    assert OQ.STOP_WORDS == frozenset(ENGLISH_STOP_WORDS) and len(OQ.STOP_WORDS) > 300


def test_peak_depth_ignores_nan_and_takes_the_first_maximum():
    assert M.peak_depth(torch.tensor([float("nan"), 0.2, 0.5, 0.5, 0.1])) == 2
    assert M.peak_depth(torch.tensor([float("nan")] * 3)) == -1


# --------------------------------------------------------------------------- answer (no model)


def _measurement(intra, mid, classes=None, pca=None, model="toy"):
    p = len(intra)
    classes = classes or {k: list(intra) for k in OQ.CLASSES}
    curves = {OQ.INTRA: list(intra), OQ.INTRA + OQ.ATTN: list(mid),
              "pair_cosine_all": list(pca or [0.1 * d for d in range(p)])}
    for k in OQ.CLASSES:
        curves[f"{OQ.INTRA}[{k}]"] = classes[k]
        curves[f"{OQ.INTRA}_share[{k}]"] = [v / 3 for v in intra]
    scalars = {f"pairs[{k}]": 10 for k in OQ.CLASSES}
    return Measurement(model=model, sentence_set="toy", depths=p, curves=curves, scalars=scalars)


def test_row_without_a_dip_says_so_with_the_curve():
    m = _measurement([0.1, 0.2, 0.3, 0.4], [None, 0.25, 0.35, 0.45], pca=[0.1, 0.2, 0.3, 0.4])
    row = OQ.open_question_row(m)
    assert row["verdict"] == "no dip" and row["claim"] == "open-question"
    assert "no dip: intra_sentence_cosine is 0.100, 0.200, 0.300, 0.400 (d=0..3)" in row["measured"]
    assert "attractor does not show" in row["measured"]  # peaks at the last depth


def test_row_without_a_dip_splits_the_weakest_rise():
    intra = [0.1, 0.3, 0.31, 0.5, 0.6]
    m = _measurement(intra, [None, 0.4, 0.45, 0.6, 0.7], pca=[0.1, 0.6, 0.5, 0.3, 0.2])
    a = OQ.answer(m)
    assert a["dips"] == [] and a["weakest_rise"]["depth"] == 2
    assert a["weakest_rise"]["attention_step"] == pytest.approx(0.15)
    assert a["weakest_rise"]["feed_forward_step"] == pytest.approx(-0.14)
    # the other blocks' mean steps leave the weakest rise out: blocks 1, 3, 4
    assert a["typical_steps"]["attention_step"] == pytest.approx((0.3 + 0.29 + 0.2) / 3)
    assert a["typical_steps"]["feed_forward_step"] == pytest.approx(-0.1)
    row = OQ.open_question_row(m)
    assert row["verdict"] == "no dip"
    assert "weakest rise at d=2/4 (relative depth 0.50): intra 0.300 (d=1) -> 0.310 -> 0.500 (d=3)" in row["measured"]
    assert "attractor shows: pair_cosine_all peaks at d=1/4" in row["measured"]


def test_row_splits_a_dip_into_attention_and_feed_forward_steps():
    intra = [0.1, 0.3, 0.2, 0.5]
    classes = {"content": [0.1, 0.3, 0.1, 0.5], "function": [0.1, 0.3, 0.35, 0.5],
               "content-function": [0.1, 0.3, 0.25, 0.5]}
    m = _measurement(intra, [None, 0.4, 0.35, 0.6], classes, pca=[0.1, 0.6, 0.5, 0.2])
    a = OQ.answer(m)
    (dip,) = a["dips"]
    assert dip["depth"] == 2
    assert dip["attention_step"] == pytest.approx(0.05) and dip["feed_forward_step"] == pytest.approx(-0.15)
    assert dip["lowered_by"] == "feed-forward"
    assert dip["class_change"]["content"] == pytest.approx(-0.2)
    assert a["attractor"] and a["peak_depth"] == 1
    row = OQ.open_question_row(m)
    assert row["verdict"] == "answered"
    assert "attention step +0.050" in row["measured"] and "feed-forward step -0.150" in row["measured"]
    assert "[content] -0.200" in row["measured"]


def test_row_names_the_block_layout_of_its_steps():
    """A pre-norm model (one with a final norm) keeps the raw residual stream in mid and out, so
    its steps are the sublayers' writes; a post-norm model's are re-normalised states."""
    m = _measurement([0.1, 0.3, 0.2, 0.5], [None, 0.4, 0.35, 0.6])
    assert "post-LayerNorm sublayers are not additive" in OQ.open_question_row(m)["notes"]
    assert "causal model" not in OQ.open_question_row(m)["notes"]
    m.provenance = {"final_norm": "norm", "causal": True}
    notes = OQ.open_question_row(m)["notes"]
    assert "pre-norm blocks: mid = out[d-1] + attention write" in notes and "post-LayerNorm" not in notes
    assert "causal model: the first position" in notes


def test_row_and_chart_need_the_curves(tmp_path):
    m = Measurement(model="x", sentence_set="s", depths=3, curves={OQ.INTRA: [0.1, 0.2, 0.3]})
    assert OQ.open_question_row(m) is None
    assert OQ.plot_open_question(m, tmp_path / "oq.png") is False
    assert not (tmp_path / "oq.png").exists()


# --------------------------------------------------------------------------- MiniLM


@pytest.fixture(scope="module")
def minilm(lab):
    return lab.model("minilm")


@pytest.fixture(scope="module")
def captured(minilm):
    return C.capture(minilm, TEXTS, method="hooks", sublayers=True)


@pytest.fixture(scope="module")
def measured(captured):
    with pytest.warns(UserWarning, match="'Hi': fewer than 2 content tokens"):
        return measure(captured, TEXTS, sublayers=True)


@pytest.mark.minilm
def test_hooks_with_sublayers_reproduce_block_outputs_exactly(minilm, captured):
    plain = C.capture(minilm, TEXTS, method="hidden_states")
    assert torch.equal(captured.states, plain.states)
    assert captured.sublayers["attn"].shape == captured.states.shape


@pytest.mark.minilm
def test_mid_is_block_d_post_attention_state(minilm, captured):
    """mid[d] = LN1(out[d-1] + Attn(out[d-1])), out[d] = LN2(mid[d] + FFN(mid[d]))."""
    mid, out = captured.sublayers["attn"], captured.states
    assert torch.isnan(mid[0]).all()
    blocks = minilm.model.get_submodule(minilm.spec.blocks_module)
    real = captured.attn
    for d in range(1, out.shape[0]):
        gap_before = ((mid[d] - out[d - 1]).abs().amax(-1))[real]
        gap_after = ((mid[d] - out[d]).abs().amax(-1))[real]
        assert float(gap_before.min()) > 1e-2 and float(gap_after.min()) > 1e-2, d
        block = blocks[d - 1]
        with torch.inference_mode():
            np.testing.assert_allclose(block.feed_forward_chunk(mid[d]).numpy()[real.numpy()],
                                       out[d].numpy()[real.numpy()], atol=1e-4)
            for n in range(len(TEXTS.sentences)):  # one unpadded text at a time: no mask needed
                width = int(real[n].sum())
                again = block.attention(out[d - 1][n : n + 1, :width])[0]
                np.testing.assert_allclose(again[0].numpy(), mid[d][n, :width].numpy(), atol=1e-4)


def _classes_from_pre_tokenizer(tokenizer, states):
    """Function-word mask derived without LayerStates.words: the tokenizer's pre-tokenizer
    splits the raw text into words with spans; a token is in the word whose span holds it."""
    function = torch.zeros(states.content.shape, dtype=torch.bool)
    for n, text in enumerate(states.model_texts):
        words = tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)
        for t, (start, end) in enumerate(states.offsets[n]):
            if not states.content[n, t]:
                continue
            (word,) = [w for w, (a, b) in words if a <= start and end <= b]
            function[n, t] = word.lower() in OQ.STOP_WORDS
    return states.content & ~function, function


@pytest.mark.minilm
def test_word_classes_follow_the_stop_word_list(minilm, captured):
    cw, fw = OQ.word_class_masks(captured)
    want_cw, want_fw = _classes_from_pre_tokenizer(minilm.tokenizer, captured)
    assert torch.equal(cw, want_cw) and torch.equal(fw, want_fw)
    n = captured.index("It wasn't what they had expected, but the hippopotamus stayed anyway.")
    tokens = captured.tokens[n]
    by_class = {tok: ("f" if fw[n, t] else "c" if cw[n, t] else "-") for t, tok in enumerate(tokens)}
    assert by_class["[CLS]"] == by_class["[SEP]"] == "-"
    assert by_class["it"] == by_class["what"] == by_class["had"] == by_class["anyway"] == "f"
    assert by_class["expected"] == by_class["stayed"] == by_class[","] == "c"
    hippo = [t for t, w in enumerate(captured.word_ids[n]) if w is not None and captured.words(n)[w] == "hippopotamus"]
    assert len(hippo) > 1 and all(cw[n, t] for t in hippo)  # sub-tokens take their word's class


@pytest.mark.minilm
def test_open_question_curves_equal_loop_oracles(minilm, captured, measured):
    m = measured
    x, mid, content = captured.states.numpy(), captured.sublayers["attn"].numpy(), captured.content.numpy()
    cw, fw = (mask.numpy() for mask in _classes_from_pre_tokenizer(minilm.tokenizer, captured))

    def curve(name):
        return np.array([np.nan if v is None else v for v in m.curves[name]])

    for name, (want, pairs) in {
        "content": O.intra_class_cosine(x, cw),
        "function": O.intra_class_cosine(x, fw),
        "content-function": O.cross_class_cosine(x, cw, fw),
    }.items():
        np.testing.assert_allclose(curve(f"intra_sentence_cosine[{name}]"), want, **TOL)
        assert m.scalars[f"pairs[{name}]"] == pairs
    for name, oracle in (("intra_sentence_cosine", O.intra_sentence_cosine),
                         ("cross_sentence_cosine", O.cross_sentence_cosine),
                         ("separability_ratio", O.separability_ratio)):
        got = m.curves[f"{name}@attn"]
        assert got[0] is None and len(got) == captured.depths
        np.testing.assert_allclose(curve(f"{name}@attn")[1:], oracle(mid[1:], content), **TOL)
    pca = O.pair_cosine_all(O.mean_pool(x, captured.attn.numpy()))
    np.testing.assert_allclose(curve("pair_cosine_all"), pca, **TOL)
    assert m.scalars["pair_cosine_all_peak_depth"] == int(np.argmax(pca))
    assert m.scalars["pair_cosine_all_peak_fraction"] == pytest.approx(int(np.argmax(pca)) / (captured.depths - 1))
    # Without sublayers=True none of these curves is added.
    with pytest.warns(UserWarning):
        plain = measure(captured, TEXTS)
    assert set(m.curves) - set(plain.curves) == {k for k in m.curves if "@attn" in k or k.startswith(
        ("intra_sentence_cosine[", "intra_sentence_cosine_share[", "pair_cosine_all"))}
    assert set(plain.curves) <= set(m.curves)


@pytest.mark.minilm
def test_measure_sublayers_cli_writes_attn_and_word_class_curves(minilm, tmp_path, capsys, monkeypatch):
    from geometry_checks.cli import main

    monkeypatch.setattr(loader, "load", lambda ref, device="auto", dtype="float32": minilm)  # loaded once

    src = tmp_path / "few.txt"
    src.write_text("\n".join(TEXTS.sentences) + "\n")
    out = tmp_path / "m.json"
    assert main(["measure", "--sentences", str(src), "--out", str(out), "--sublayers", "--device", "cpu"]) == 0
    data = json.loads(out.read_text())
    curves = data["curves"]
    for name in ("intra_sentence_cosine@attn", "cross_sentence_cosine@attn", "separability_ratio@attn"):
        assert curves[name][0] is None and all(isinstance(v, float) for v in curves[name][1:])
    for name in OQ.CLASSES:
        assert len(curves[f"intra_sentence_cosine[{name}]"]) == data["depths"] == 7
        assert data["scalars"][f"pairs[{name}]"] > 0
    assert len(curves["pair_cosine_all"]) == 7
    assert 0 <= data["scalars"]["pair_cosine_all_peak_fraction"] <= 1
    assert "wrote" in capsys.readouterr().out


@pytest.mark.minilm
def test_open_question_row_on_minilm_reports_measured_numbers(measured, tmp_path):
    m = measured
    row = OQ.open_question_row(m)
    assert set(row) == {"claim", "model", "finding", "expected", "measured", "tolerance", "verdict", "notes",
                        "outcome", "interval"}
    assert row["claim"] == "open-question" and row["model"] == "minilm"
    assert row["verdict"] in ("answered", "dip within noise", "no dip")
    a = OQ.answer(m)
    if row["verdict"] in ("answered", "dip within noise"):
        dip = (a["dips"] or a["uncertain_dips"])[0]
        assert dip["attention_step"] + dip["feed_forward_step"] == pytest.approx(dip["at"] - dip["before"])
        assert f"at d={dip['depth']}/6" in row["measured"]
        assert f"attention step {dip['attention_step']:+.3f}" in row["measured"]
        assert f"feed-forward step {dip['feed_forward_step']:+.3f}" in row["measured"]
    else:
        assert f"{a['intra'][-1]:.3f} (d=0..6)" in row["measured"]
    assert "attractor" in row["measured"] and f"d={a['peak_depth']}/6" in row["measured"]
    png = tmp_path / "oq.png"
    assert OQ.plot_open_question(m, png) is True
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- MPNet


@pytest.fixture(scope="module")
def mpnet(lab):
    return lab.model("mpnet")


@pytest.fixture(scope="module")
def mpnet_captured(mpnet):
    return C.capture(mpnet, TEXTS, method="hooks", sublayers=True)


@pytest.mark.mpnet
def test_mpnet_hooks_reproduce_hidden_states_exactly(mpnet, mpnet_captured):
    """hidden_states_reliable: output_hidden_states and the hooks (with sublayers) agree bit for bit."""
    plain = C.capture(mpnet, TEXTS, method="hidden_states")
    assert torch.equal(mpnet_captured.states, plain.states)
    assert mpnet_captured.states.shape[0] == 13 and mpnet_captured.sublayers["attn"].shape == plain.states.shape


@pytest.mark.mpnet
def test_mpnet_mid_is_block_d_post_attention_state(mpnet, mpnet_captured):
    """MPNet: mid[d] = LN_attn(out[d-1] + Attn(out[d-1], relative position bias)) and
    out[d] = LN_out(mid[d] + FFN(mid[d])), re-run from the block's pieces: `attention.attn`
    (self-attention), `attention.LayerNorm`, `intermediate`, `output`. The encoder computes the
    relative position bias once and passes it to every block; the re-run computes it again
    for each unpadded text."""
    mid, out = mpnet_captured.sublayers["attn"], mpnet_captured.states
    assert torch.isnan(mid[0]).all()
    encoder = mpnet.model.encoder
    blocks = mpnet.model.get_submodule(mpnet.spec.blocks_module)
    real = mpnet_captured.attn
    for d in range(1, out.shape[0]):
        gap_before = ((mid[d] - out[d - 1]).abs().amax(-1))[real]
        gap_after = ((mid[d] - out[d]).abs().amax(-1))[real]
        assert float(gap_before.min()) > 1e-2 and float(gap_after.min()) > 1e-2, d
        block = blocks[d - 1]
        with torch.inference_mode():
            ffn = block.output(block.intermediate(mid[d]), mid[d])
            np.testing.assert_allclose(ffn.numpy()[real.numpy()], out[d].numpy()[real.numpy()], atol=1e-4)
            for n in range(len(TEXTS.sentences)):  # one unpadded text at a time: no mask needed
                width = int(real[n].sum())
                x = out[d - 1][n : n + 1, :width]
                bias = encoder.compute_position_bias(x)
                attn = block.attention.attn(x, None, bias)[0]
                again = block.attention.LayerNorm(attn + x)
                np.testing.assert_allclose(again[0].numpy(), mid[d][n, :width].numpy(), atol=1e-4)
                # and without the position bias the state is measurably different: it is used
                plain = block.attention.LayerNorm(block.attention.attn(x, None, None)[0] + x)
                assert float((plain - again).abs().max()) > 1e-3


@pytest.mark.mpnet
def test_open_question_row_on_mpnet_reports_measured_numbers(mpnet_captured):
    with pytest.warns(UserWarning, match="'Hi': fewer than 2 content tokens"):
        m = measure(mpnet_captured, TEXTS, sublayers=True)
    row = OQ.open_question_row(m)
    a = OQ.answer(m)
    assert row["model"] == "mpnet" and row["verdict"] in ("answered", "dip within noise", "no dip")
    where = (a["dips"] or a["uncertain_dips"] or [a["weakest_rise"]])[0]
    d = where["depth"]
    assert f"at d={d}/12 (relative depth {d / 12:.2f})" in row["measured"]
    assert where["attention_step"] + where["feed_forward_step"] == pytest.approx(where["at"] - where["before"])
    assert "attractor" in row["measured"] and f"d={a['peak_depth']}/12" in row["measured"]


# --------------------------------------------------------------------------- stand-in


@pytest.mark.standin
@pytest.mark.slow
def test_open_question_runs_on_the_mxbai_standin(request, tmp_path_factory):
    standins = pytest.importorskip("geometry_checks.standins")
    try:  # the session's shared stand-in (tests/conftest.py), built once for every stand-in test
        directory = request.getfixturevalue("standin_dirs")("mxbai")
    except pytest.FixtureLookupError:
        directory = standins.build_standin("mxbai", tmp_path_factory.mktemp("oq") / "mxbai", seed=0)
    loaded = loader.load(loader.resolve("mxbai", {"mxbai": str(directory)}), device="cpu", dtype="float32")
    sentences = SentenceSet("oq-standin", TEXTS.sentences[:3])
    st = C.capture(loaded, sentences, method="hooks", sublayers=True)
    assert torch.equal(st.states, C.capture(loaded, sentences, method="hidden_states").states)
    m = measure(st, sentences, sublayers=True)
    assert len(m.curves["intra_sentence_cosine@attn"]) == 25 and m.curves["intra_sentence_cosine@attn"][0] is None
    row = OQ.open_question_row(m)
    assert row["model"] == "mxbai" and row["verdict"] in ("answered", "dip within noise", "no dip")
    assert OQ.plot_open_question(m, tmp_path_factory.mktemp("oq-png") / "oq.png")


# --------------------------------------------------------------------------- the decoder LMs


@pytest.fixture(scope="module", params=[pytest.param("smollm2", marks=pytest.mark.smollm2),
                                        pytest.param("gemma3", marks=pytest.mark.gemma3)])
def lm_captured(request, lab):
    ref = loader.resolve(request.param)
    if not ref.is_dir:
        pytest.skip(loader.how_to_supply(ref.spec))
    return request.param, C.capture(lab.model(request.param), TEXTS, sublayers=True)


def test_decoder_word_classes_come_from_the_text(lm_captured):
    """SmolLM2 (byte-level BPE, no <bos>): its first position is a content token and a word
    like any other; Gemma 3 (one tokenizer word id per text, a <bos>): its words are split
    from the text, and <bos> is in neither class. Every word is a stop word or not by its
    text alone, without the space before it."""
    name, st = lm_captured
    cw, fw = OQ.word_class_masks(st)
    n = st.index("It wasn't what they had expected, but the hippopotamus stayed anyway.")
    words = st.words(n)
    assert words[:2] == ["It", "wasn"] and "hippopotamus" in words and words[-2:] == ["anyway", "."]
    by_word = {}
    for t, w in enumerate(st.word_ids[n]):
        if w is not None:
            by_word.setdefault(words[w], set()).add("f" if fw[n, t] else "c" if cw[n, t] else "-")
    assert by_word["It"] == by_word["what"] == by_word["had"] == by_word["anyway"] == by_word["the"] == {"f"}
    assert by_word["expected"] == by_word["hippopotamus"] == by_word[","] == {"c"}
    first_is_special = name == "gemma3"
    assert bool(st.content[n, 0]) is not first_is_special  # <bos> out, SmolLM2's first word in
    assert bool(fw[n, 0] or cw[n, 0]) is not first_is_special
    assert int(fw.sum()) + int(cw.sum()) == int(st.content.sum())


def test_decoder_open_question_row_reads_the_pre_norm_split(lm_captured):
    name, st = lm_captured
    with pytest.warns(UserWarning, match="'Hi'"):
        m = measure(st, TEXTS, sublayers=True)
    row = OQ.open_question_row(m)
    assert row["model"] == name and "pre-norm blocks" in row["notes"]
    a = OQ.answer(m)
    layers = {"smollm2": 30, "gemma3": 18}[name]
    assert a["layers"] == layers and math.isnan(a["mid"][0])  # no block before depth 0
    for d in range(1, layers + 1):  # the two steps add up to the block's change
        attn, ffn = a["mid"][d] - a["intra"][d - 1], a["intra"][d] - a["mid"][d]
        assert attn + ffn == pytest.approx(a["intra"][d] - a["intra"][d - 1])
