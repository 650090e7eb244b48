"""The streaming path (geometry_checks.streaming) against the in-memory one (measure.measure).

- on MiniLM, fixtures/core.json and a generated 300-sentence set (with a repeated
  sentence, a one-content-token sentence and core.json's pairs and retrieval), the two
  Measurements have the same layout (keys, list lengths, integers, strings) and every
  float agrees to 1e-5; also with a PCA token cap below the set's token count (the same
  seeded sample), with cls pooling, with a projection head, with the open question's
  sublayer and word-class curves (`sublayers=True`), and on states already captured
  (`measure_states`, what Lab.measure runs when it holds them);
- each fast per-batch reduction (word-class pair sums included) equals its metrics.py
  function on random states with zero vectors, single-token sentences, excluded markers
  and NaN padding;
- bad input stays a one-line InputError (no content token, NaN states) and the
  excluded-sentence warning still comes.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import warnings
from pathlib import Path

import pytest
import torch

from geometry_checks import capture as C
from geometry_checks import metrics as M
from geometry_checks import streaming as ST
from geometry_checks.errors import InputError
from geometry_checks.measure import measure
from geometry_checks.sentences import SentenceSet, load_sentence_set

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from gen_sentences import generate

TOL = 1e-5
CORE = load_sentence_set(ROOT / "fixtures" / "core.json")


def assert_same(a, b, path: str = "", worst: list | None = None) -> float:
    """Same layout; floats within TOL; everything else equal. Returns the largest float deviation."""
    worst = [0.0] if worst is None else worst
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{path}: keys differ: {set(a) ^ set(b)}"
        for k in a:
            if path == "/provenance" and k == "date":
                continue
            assert_same(a[k], b[k], f"{path}/{k}", worst)
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{path}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]", worst)
    elif isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, float) and isinstance(b, float), f"{path}: {a!r} vs {b!r}"
        assert math.isclose(a, b, abs_tol=TOL), f"{path}: {a} vs {b}"
        worst[0] = max(worst[0], abs(a - b))
    else:
        assert a == b, f"{path}: {a!r} vs {b!r}"
    return worst[0]


@pytest.fixture(scope="module")
def minilm():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return C.load(C.resolve("minilm"), "cpu")


def both(loaded, sentences, poolings=("mean",), batch_size=64, cap=ST.DEFAULT_MAX_PCA_TOKENS, sublayers=False,
         held=False):
    """(the in-memory reference, the streaming engine) as JSON; held: the engine on the
    captured states (streaming.measure_states) instead of its own forward passes."""
    # one thread throughout: metrics.py's per-sentence SVDs and a busy 2-core CI runner (docs/performance.md)
    with warnings.catch_warnings(), ST.cpu_threads(1):
        warnings.simplefilter("ignore")
        states = C.capture(loaded, sentences, batch_size, sublayers=sublayers)
        memory = measure(states, sentences, poolings, max_pca_tokens=cap, sublayers=sublayers).to_json()
        if held:
            streamed = ST.measure_states(states, sentences, poolings, batch_size, max_pca_tokens=cap,
                                         sublayers=sublayers).to_json()
        else:
            streamed = ST.measure_streaming(loaded, sentences, poolings, batch_size, max_pca_tokens=cap,
                                            sublayers=sublayers).to_json()
    return memory, streamed


@pytest.fixture(scope="module")
def generated() -> SentenceSet:
    texts = generate(300, seed=1)
    texts[7:7] = ["Hello", texts[3]]  # one content token (excluded with a warning); a repeated sentence
    return dataclasses.replace(CORE, name="generated-300", sentences=tuple(texts) + CORE.sentences)


@pytest.mark.minilm
def test_core_streaming_equals_in_memory_with_cls_pooling(minilm):
    memory, streamed = both(minilm, CORE, ("mean", "cls"))
    assert_same(memory, streamed)
    assert streamed["by_pooling"]["cls"]["curves"] and streamed["scalars"]["pca_tokens"] < ST.DEFAULT_MAX_PCA_TOKENS


@pytest.mark.minilm
def test_generated_set_streaming_equals_in_memory(minilm, generated):
    memory, streamed = both(minilm, generated, batch_size=32)
    deviation = assert_same(memory, streamed)
    assert streamed["excluded"] == memory["excluded"] and [e["sentence"] for e in streamed["excluded"]] == ["Hello"]
    assert "pca_tokens_sampled" not in streamed["scalars"]
    print(f"max deviation streaming vs in memory: {deviation:.2e}")


@pytest.mark.minilm
def test_generated_set_with_sublayers_streaming_equals_in_memory(minilm, generated):
    """Issue 13: --sublayers (the @attn curves, the word-class curves and shares, the
    attractor) through the streaming engine, against measure(..., sublayers=True)."""
    memory, streamed = both(minilm, generated, batch_size=32, sublayers=True)
    assert_same(memory, streamed)
    assert len(streamed["curves"]["intra_sentence_cosine@attn"]) == 7
    assert streamed["scalars"]["pairs[function]"] > 0 and "pair_cosine_all_peak_depth" in streamed["scalars"]


@pytest.mark.minilm
def test_held_states_take_the_same_engine(minilm):
    """Lab.measure on states it already holds: streaming.measure_states, with and without
    sublayer states (without them the @attn curves are not_computed, as in measure)."""
    memory, streamed = both(minilm, CORE, ("mean", "cls"), sublayers=True, held=True)
    assert_same(memory, streamed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = C.capture(minilm, CORE)
        want = measure(plain, CORE, sublayers=True, max_pca_tokens=ST.DEFAULT_MAX_PCA_TOKENS).to_json()
        got = ST.measure_states(plain, CORE, sublayers=True).to_json()
    assert_same(want, got)
    assert "intra_sentence_cosine@attn" in got["not_computed"] and "intra_sentence_cosine@attn" not in got["curves"]


@pytest.mark.minilm
def test_token_sample_above_the_cap_is_the_in_memory_sample(minilm, generated):
    small = dataclasses.replace(generated, sentences=generated.sentences[:60])
    memory, streamed = both(minilm, small, batch_size=16, cap=300)
    assert streamed["scalars"]["pca_tokens_sampled"] == 300 < streamed["scalars"]["pca_tokens"]
    assert_same(memory, streamed)


@pytest.mark.minilm
def test_projection_head_is_measured_the_same(minilm):
    torch.manual_seed(0)
    head = torch.nn.Linear(minilm.spec.hidden_size, 48).eval()
    with_head = dataclasses.replace(minilm, projection=head)
    small = dataclasses.replace(CORE, sentences=CORE.sentences[:8])
    memory, streamed = both(with_head, small)
    assert set(streamed["proj"]) == {"intra_sentence_cosine", "cross_sentence_cosine", "sentence_signal",
                                     "separability_ratio", "token_norm"}
    assert_same(memory, streamed)


@pytest.mark.minilm
def test_excluded_sentence_warns(minilm):
    small = SentenceSet("s", ("Cats sleep a lot during the day", "Hello", "Dogs bark at the mailman"))
    with pytest.warns(UserWarning, match="'Hello': fewer than 2 content tokens"):
        result = ST.measure_streaming(minilm, small)
    assert result.excluded[0]["sentence"] == "Hello"


@pytest.mark.minilm
def test_sentence_without_content_token_is_a_one_line_input_error(minilm):
    with pytest.raises(InputError, match="has no content token") as err:
        ST.measure_streaming(minilm, SentenceSet("s", ("Cats sleep a lot", "[SEP]")))
    assert "\n" not in str(err.value)


def _poisoned_forward(where: str):
    original = C._forward

    def forward(loaded, batch, method, sublayers, scratch=None):
        states, mid, proj = original(loaded, batch, method, sublayers, scratch)
        states = states.clone()
        mask = batch["attention_mask"].bool()
        if where == "padding":
            states[:, ~mask] = float("nan")
        else:
            states[3, 0, 1] = float("inf")
        return states, mid, proj

    return forward


@pytest.mark.minilm
def test_nan_states_are_a_one_line_input_error(minilm, monkeypatch):
    monkeypatch.setattr(C, "_forward", _poisoned_forward("token"))
    with pytest.raises(InputError, match="hidden states contain NaN or inf") as err:
        ST.measure_streaming(minilm, SentenceSet("s", ("Cats sleep a lot", "The market fell sharply today")))
    assert "\n" not in str(err.value)


@pytest.mark.minilm
def test_nan_padding_is_never_read(minilm, monkeypatch):
    small = SentenceSet("s", ("Cats sleep", "The market fell sharply after the bank raised its rates", "A storm"))
    clean = ST.measure_streaming(minilm, small).to_json()
    monkeypatch.setattr(C, "_forward", _poisoned_forward("padding"))
    assert_same(clean, ST.measure_streaming(minilm, small).to_json())


# ------------------------------------------------------------------ fast reductions vs metrics.py


def _random_batch(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    states = torch.randn(4, 7, 9, 16, generator=gen) + torch.randn(16, generator=gen)
    attn = torch.zeros(7, 9, dtype=torch.bool)
    for s, length in enumerate((9, 8, 3, 4, 5, 9, 4)):
        attn[s, :length] = True
    content = attn.clone()
    content[:, 0] = False  # CLS
    content[torch.arange(7), attn.sum(1) - 1] = False  # SEP
    content[0, 4] = False  # a marker inside sentence 0
    states[:, 4, 2] = 0.0  # a zero vector (unit vector 0)
    states[:, ~attn] = float("nan")  # padding is never read
    return states, content, attn


def test_batch_reductions_equal_metrics():
    states, content, attn = _random_batch()
    red = ST.batch_reductions(states, content, attn)
    total, sq, n = M.cross_sentence_stats(states, content)
    expected = {
        "pool": M.mean_pool(states, attn),
        "means": M.content_means(states, content),
        "within": M.within_scatter(states, content),
        "intra": M.intra_sentence_cosine_per_sentence(states, content),
        "pc1": M.pc1_mean_cosine_per_sentence(states, content),
        "delta": M.delta_coherence_per_sentence(states, content),
        "norm_sum": M.token_norm(states, content) * n.sum(),
    }
    for name, want in expected.items():
        got = red[name]
        assert got.shape == want.shape and torch.equal(got.isnan(), want.isnan()), name
        assert torch.allclose(got.nan_to_num(), want.nan_to_num(), atol=1e-6, rtol=1e-6), name
    assert torch.equal(red["n"], n)
    assert torch.allclose(red["unit_sums"].sum(1), total, atol=1e-6)
    assert torch.allclose((red["unit_sums"] ** 2).sum((1, 2)), sq, atol=1e-5)
    assert red["pc1"][:, 2].isnan().all() and red["intra"][:, 2].isnan().all()  # one content token


def test_batch_class_sums_equal_metrics():
    """The open question's word-class pair sums (issue 13) against metrics.class_pair_sums."""
    states, content, attn = _random_batch(3)
    gen = torch.Generator().manual_seed(4)
    function = content & (torch.rand(content.shape, generator=gen) < 0.4)
    function[6] = content[6]  # a sentence of function words only
    function[2] = False  # and one without any
    red = ST.batch_reductions(states, content, attn, pc1_delta=False, function=function)
    words = content & ~function
    for k, masks in enumerate(((words,), (function,), (words, function))):
        sums, pairs = M.class_pair_sums(states, *masks)
        assert torch.allclose(red["class_sums"][..., k], sums, atol=1e-6), k
        assert torch.equal(red["class_pairs"][:, k], pairs), k
    assert torch.equal(red["n_function"], function.sum(1))
    assert torch.equal(red["intra"].isnan(), M.intra_sentence_cosine_per_sentence(states, content).isnan())


def test_pc1_flat_cloud_and_float64_path_equal_metrics():
    states, content, attn = _random_batch(1)
    states[:, 5, 1:8] = states[:, 5, 1:2]  # sentence 5: identical content tokens, no scatter direction
    want = M.pc1_mean_cosine_per_sentence(states, content)
    for got in (ST.pc1_mean_cosine_per_sentence(states, content), ST.batch_reductions(states, content, attn)["pc1"]):
        assert torch.equal(got.isnan(), want.isnan()) and got[:, 5].isnan().all()
        assert torch.allclose(got.nan_to_num(), want.nan_to_num(), atol=1e-9)


@pytest.mark.parametrize("shape", [(5, 400, 24), (4, 50, 80)], ids=["N>H covariance", "N<H svd"])
def test_trajectory_curves_equal_metrics(shape):
    gen = torch.Generator().manual_seed(2)
    tokens = torch.randn(*shape, generator=gen) * torch.linspace(0.2, 3.0, shape[-1]) + 4.0
    got = ST.trajectory_curves(tokens)
    for name, f in (("fixed_pca_step", M.fixed_pca_step), ("refit_pca_step", M.refit_pca_step),
                    ("teleological_distance", M.teleological_distance)):
        want = f(tokens)
        assert torch.equal(got[name].isnan(), want.isnan())
        assert torch.allclose(got[name].nan_to_num(), want.nan_to_num(), atol=1e-10), name


def test_first_pooling_must_be_mean():
    with pytest.raises(ValueError, match="first pooling must be mean"):
        ST.measure_streaming(None, CORE, ("cls",))


def test_progress_bar_only_on_a_terminal(monkeypatch):
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert C._progress(10, "minilm") is None
    monkeypatch.setattr(sys, "stderr", Terminal())
    bar = C._progress(10, "minilm")
    assert bar is not None and bar.total == 10
    bar.close()
