"""The streaming path (geometry_checks.streaming) against the in-memory one (measure.measure).

- on MiniLM, fixtures/core.json and a generated 300-sentence set (with a repeated
  sentence, a one-content-token sentence and core.json's pairs and retrieval), the two
  Measurements have the same layout (keys, list lengths, integers, strings) and every
  float agrees to 1e-5; also with a PCA token cap below the set's token count (the same
  seeded sample), with cls pooling, with a projection head, with the open question's
  sublayer and word-class curves (`sublayers=True`), and on states already captured
  (`measure_states`, what Lab.measure runs when it holds them);
- each fast per-batch reduction (word-class pair sums and issue 23's massive-activation
  reductions included) equals its metrics.py function on random states with zero vectors, single-token sentences, excluded markers
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
from geometry_checks import loader
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
        return loader.load(loader.resolve("minilm"), "cpu")


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
    # issue 24: the same bootstrap intervals (assert_same compared them), per pooling too
    assert set(streamed["by_pooling"]["cls"]["intervals"]) == {"write_depth_histogram"}
    assert streamed["provenance"]["bootstrap"]["resamples"] == 1000 and streamed["provenance"]["bootstrap"]["seed"] == 0


@pytest.mark.minilm
def test_generated_set_streaming_equals_in_memory(minilm, generated):
    memory, streamed = both(minilm, generated, batch_size=32)
    deviation = assert_same(memory, streamed)
    assert streamed["excluded"] == memory["excluded"] and [e["sentence"] for e in streamed["excluded"]] == ["Hello"]
    assert "pca_tokens_sampled" not in streamed["scalars"]
    # issue 24: every curve and scalar has an interval or a reason for having none
    assert {"intra_sentence_cosine", "cross_sentence_cosine", "sentence_signal", "separability_ratio", "token_norm",
            "pc1_mean_cosine", "delta_coherence", "cls_mean_alignment", "meanpool_drift",
            "write_depth_histogram", "massive_dims_norm_share", "massive_dims_cosine_share",
            "first_position_norm_share", "first_position_norm_ratio", "first_position_cosine"} <= set(streamed["intervals"])
    # issue 23: the dimensions behind the shares (compared exactly by assert_same): K per depth
    assert all(len(dims) == 3 for dims in streamed["massive_dims"]["norm"])
    assert set(streamed["curves"]) == set(streamed["intervals"]) | (
        set(streamed["curves"]) & set(streamed["interval_not_computed"]))
    assert set(streamed["scalars"]) <= set(streamed["scalar_intervals"]) | set(streamed["interval_not_computed"])
    intra = streamed["intervals"]["intra_sentence_cosine"]
    assert all(lo <= v <= hi for lo, v, hi in zip(intra["lo"], streamed["curves"]["intra_sentence_cosine"], intra["hi"]))
    print(f"max deviation streaming vs in memory: {deviation:.2e}")


@pytest.mark.minilm
def test_generated_set_with_sublayers_streaming_equals_in_memory(minilm, generated):
    """Issue 13: --sublayers (the @attn curves, the word-class curves and shares, the
    attractor) through the streaming engine, against measure(..., sublayers=True)."""
    memory, streamed = both(minilm, generated, batch_size=32, sublayers=True)
    assert_same(memory, streamed)
    assert len(streamed["curves"]["intra_sentence_cosine@attn"]) == 7
    for name in ("intra_sentence_cosine@attn", "separability_ratio@attn", "cross_sentence_cosine@attn",
                 "intra_sentence_cosine[function]", "intra_sentence_cosine_share[content]", "pair_cosine_all"):
        assert name in streamed["intervals"], name
    assert "pair_cosine_all_peak_depth" in streamed["scalar_intervals"]
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
        states, mid, proj, final = original(loaded, batch, method, sublayers, scratch)
        states = states.clone()
        mask = batch["attention_mask"].bool()
        if where == "padding":
            states[:, ~mask] = float("nan")
        else:
            states[3, 0, 1] = float("inf")
        return states, mid, proj, final

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


@pytest.mark.parametrize("first_is_content", [False, True], ids=["first-special", "first-content"])
def test_batch_massive_reductions_equal_metrics(first_is_content):
    """Issue 23's per-batch reductions against metrics.py: the per-dimension energies and
    cosine terms, and the first position against the other content tokens, with position 0
    a special token (an encoder's CLS) or a content token (SmolLM2's first word), a sentence
    whose only content token is position 0 (NaN in the first-position values), zero vectors
    and NaN padding."""
    states, content, attn = _random_batch(5)
    if first_is_content:
        content[:, 0] = True
        content[2] = False
        content[2, 0] = True  # only position 0: no other token to compare with
    states[:, 3, 0] = 0.0  # a zero first position
    red = ST.batch_reductions(states, content, attn, massive=True)
    expected = {"energy": M.dim_energy_per_sentence(states, content),
                "cos_terms": M.cosine_dim_contributions_per_sentence(states, content),
                **{f"first_{k}": v for k, v in M.first_position_per_sentence(states, content).items()}}
    for name, want in expected.items():
        got = red[name]
        assert got.shape == want.shape and torch.equal(got.isnan(), want.isnan()), name
        assert torch.allclose(got.nan_to_num(), want.nan_to_num(), atol=1e-6, rtol=1e-6), name
    assert red["first_norm_ratio"][:, 2].isnan().all() == first_is_content
    assert torch.allclose(red["cos_terms"].sum(-1), red["intra"], atol=1e-6, equal_nan=True)


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


def _scaled_tokens(shape, second=None, seed=2):
    """Random tokens whose coordinates have standard deviations 0.2 .. 3.0. With `second`,
    each depth is whitened first (its sample covariance made the identity), so that the
    sample variances are exactly the squared scales, the second largest second^2."""
    gen = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.2, 3.0, shape[-1], dtype=torch.float64)
    z = torch.randn(*shape, generator=gen, dtype=torch.float64)
    if second is not None:
        scale[-2] = second
        z = z - z.mean(-2, keepdim=True)
        chol = torch.linalg.cholesky(z.transpose(-1, -2) @ z / shape[-2])
        z = torch.linalg.solve_triangular(chol, z.transpose(-1, -2), upper=False).transpose(-1, -2)
    return (z * scale + 4.0).float()


# (shape, the second largest standard deviation (None: the linspace's), relative tolerance):
# N >= H takes the float32 covariance (streaming._fit), within about 1e-7 of metrics.py's
# float64 SVD (H = 24 < 4 x _TOP_BLOCK: eigh; the subspace iteration has its own test
# below); with the top two variances within TRAJ_GAP of each other it refits in float64
# (to rounding); N < H takes metrics.pca_fit's SVD itself.
@pytest.mark.parametrize("shape, second, rtol", [((5, 400, 24), None, 1e-6), ((5, 400, 24), 3.0 * 0.99 ** 0.5, 1e-10),
                                                 ((4, 50, 80), None, 1e-10)],
                         ids=["N>H float32 covariance", "N>H top eigenvalues 1% apart: float64", "N<H svd"])
def test_trajectory_curves_equal_metrics(shape, second, rtol, monkeypatch):
    tokens = _scaled_tokens(shape, second)
    refits = []
    monkeypatch.setattr(ST, "_close_top", lambda values, f=ST._close_top: refits.append(f(values)) or refits[-1])
    got = ST.trajectory_curves(tokens)
    if shape[1] >= shape[2]:
        assert all(refits) if second else not any(refits)
    for name, f in (("fixed_pca_step", M.fixed_pca_step), ("refit_pca_step", M.refit_pca_step),
                    ("teleological_distance", M.teleological_distance)):
        want = f(tokens)
        assert torch.equal(got[name].isnan(), want.isnan())
        assert torch.allclose(got[name].nan_to_num(), want.nan_to_num(), rtol=rtol, atol=0), name



def test_trajectory_curves_by_subspace_iteration_equal_metrics(monkeypatch):
    """With H >= 4 x _TOP_BLOCK and clear gaps among the top three variances (4, 6.25, 9),
    every fit's top two directions come from _top_eigenpairs (no eigh, no float64 refit):
    the trajectory curves within 1e-6 (relative) of metrics.py's float64 SVD."""
    H = 96
    scale = torch.linspace(0.2, 1.5, H, dtype=torch.float64)
    scale[-3:] = torch.tensor([2.0, 2.5, 3.0], dtype=torch.float64)
    z = torch.randn(3, 3000, H, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    tokens = (z * scale + 4.0).float()
    answered, refits = [], []
    monkeypatch.setattr(ST, "_top_eigenpairs", lambda cov, sep=ST.TOP_SEPARATION, f=ST._top_eigenpairs:
                        answered.append(f(cov, sep)) or answered[-1])
    monkeypatch.setattr(ST, "_close_top", lambda values, f=ST._close_top: refits.append(f(values)) or refits[-1])
    got = ST.trajectory_curves(tokens)
    assert len(answered) == 3 and all(a is not None for a in answered) and not any(refits)
    for name, f in (("fixed_pca_step", M.fixed_pca_step), ("refit_pca_step", M.refit_pca_step),
                    ("teleological_distance", M.teleological_distance)):
        want = f(tokens)
        assert torch.equal(got[name].isnan(), want.isnan())
        assert torch.allclose(got[name].nan_to_num(), want.nan_to_num(), rtol=1e-6, atol=0), name

def _spectrum_batch(values, seed=0):
    """Symmetric matrices [len(values), T, T] with the given eigenvalues (rows of `values`)
    and random eigenvectors; (matrices, eigenvectors)."""
    gen = torch.Generator().manual_seed(seed)
    vals = torch.tensor(values, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(vals.shape[0], vals.shape[1], vals.shape[1], dtype=torch.float64,
                                       generator=gen))
    return q @ torch.diag_embed(vals) @ q.transpose(-1, -2), q


def _spectrum(values, seed=0):
    """A symmetric matrix with the given eigenvalues (any order) and random eigenvectors
    (float64); (matrix, eigenvectors as columns, in the order of values)."""
    matrices, q = _spectrum_batch([values], seed)
    return matrices[0], q[0]


def test_top_eigenpairs_equal_eigh():
    """The PCA fits' top two eigenvectors by subspace iteration (issue 13): those of eigh,
    to rounding, with the three largest eigenvalues."""
    H = 200
    tail = [0.6 * 0.97 ** k for k in range(H - 2)]
    cov, q = _spectrum([1.0, 0.8] + tail)
    vals, vecs = ST._top_eigenpairs(cov)
    assert vals.tolist() == pytest.approx([0.6, 0.8, 1.0], rel=1e-12)
    for col, want in ((2, 0), (1, 1)):
        assert abs(float(vecs[:, col] @ q[:, want])) == pytest.approx(1.0, abs=1e-13)
    data = torch.randn(500, 80, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * torch.arange(1, 81)
    data -= data.mean(0)
    comps, values = ST._top_components(data.T @ data)
    exact, all_values = ST._top_components(data.T @ data, exact=True)
    assert torch.allclose(comps, exact, atol=1e-12) and values.shape == (3,)
    assert torch.allclose(values, all_values[-3:], rtol=1e-12)


@pytest.mark.parametrize("values", [[1.0] + [0.999] * 120, [1.0, 0.5, 0.5] + [0.1] * 100,
                                    [1.0, 1.0 - 1e-5, 0.5] + [0.1] * 100],
                         ids=["converges too slowly", "third eigenvalue ties the second", "top two 1e-5 apart"])
def test_top_eigenpairs_refuses_what_it_cannot_prove(values):
    """No answer (eigh then) where the block has not converged in _TOP_MAX_STEPS products,
    or where two of the top three eigenvalues are within TOP_SEPARATION."""
    cov, _ = _spectrum(values)
    assert ST._top_eigenpairs(cov) is None
    assert ST._top_eigenpairs(cov.float()) is None  # float32: eigh


def test_top_eigenpairs_certificate_catches_a_missed_eigenvector():
    """A top eigenvector orthogonal to the seeded start block: the iteration converges to
    the next ones (small residuals), and only the Cholesky certificate can tell."""
    H, k = 100, ST._TOP_BLOCK
    start = torch.randn((H, k), generator=torch.Generator().manual_seed(ST.PCA_SEED), dtype=torch.float64)
    basis = torch.linalg.qr(start, mode="complete")[0]  # columns k.. are orthogonal to the start block
    vals = torch.tensor([1.0, 0.5, 0.3, 0.2] + [0.05] * (H - 4), dtype=torch.float64)
    order = [k] + list(range(k)) + list(range(k + 1, H))  # the top eigenvector outside the start's span
    q = basis[:, order]
    cov = (q * vals) @ q.T
    assert ST._top_eigenpairs(cov) is None
    comps, _ = ST._top_components(cov)  # eigh finds it
    assert abs(float(comps[0] @ q[:, 0])) == pytest.approx(1.0, abs=1e-12)


def test_top_eigenpairs_proves_the_gap_below_the_second():
    """The third eigenvalue decides the float64 refit (_close_top): a third eigenvector
    outside the seeded block (spectrum 1, 0.9, 0.885: l2 - l3 = 1.5% < TRAJ_GAP) leaves a
    third Ritz value that is too small, and only the certificate at tau = t2 - TRAJ_GAP t1
    can tell; at a larger scale (1e80) the answer is the same matrix's, scaled."""
    H, k = 100, ST._TOP_BLOCK
    start = torch.randn((H, k), generator=torch.Generator().manual_seed(ST.PCA_SEED), dtype=torch.float64)
    basis = torch.linalg.qr(start, mode="complete")[0]
    vals = torch.tensor([1.0, 0.9, 0.885] + [0.875 * 0.9 ** i for i in range(H - 3)], dtype=torch.float64)
    order = [0, 1, k] + list(range(2, k)) + list(range(k + 1, H))  # the third eigenvector outside the block
    q = basis[:, order]
    cov = (q * vals) @ q.T
    assert ST._top_eigenpairs(cov, ST.TRAJ_GAP) is None
    assert ST._close_top(torch.linalg.eigvalsh(cov))  # what eigh then tells _fit: refit
    found, big = ST._top_eigenpairs(cov), ST._top_eigenpairs(cov * 1e80)  # l2 - l3 > TOP_SEPARATION: proven
    assert found is not None and big is not None
    assert torch.allclose(big[0], found[0] * 1e80, rtol=1e-12) and torch.allclose(big[1], found[1], atol=1e-12)


def test_top_eigenvector_by_squaring():
    """pc1's eigenvector (issue 13): exact where the gap is clear, `sure` only where the
    relative gap (l1 - l2) / l1 is certainly at least PC1_GAP, no NaN on a zero matrix."""
    T = 12
    rows = []
    for l2 in (0.5, 0.97, 0.995, 0.999999):  # gaps 50%, 3%, 0.5%, 1e-6
        rows.append([1.0, l2] + [0.3 * 0.8 ** k for k in range(T - 2)])
    gram, q = _spectrum_batch([r[::-1] for r in rows])  # ascending, as eigh orders them
    lam1, v, sure = ST._top_eigenvector(torch.cat([gram, torch.zeros(1, T, T, dtype=torch.float64)]))
    assert sure.tolist() == [True, True, False, False, False]
    top = q[:, :, -1:]
    for i in (0, 1):
        assert abs(float((v[i] * top[i]).sum())) == pytest.approx(1.0, abs=1e-13)
        assert float(lam1[i]) == pytest.approx(1.0, rel=1e-13)
    assert torch.isfinite(v[-1]).all() and not sure[-1]


def test_batch_gram_row_blocks_equal_one_product():
    gen = torch.Generator().manual_seed(5)
    for T in (12, 16, 23, 29, 30):
        x = torch.randn(3, 4, T, 40, generator=gen)
        assert torch.allclose(ST._batch_gram(x), x @ x.transpose(-1, -2), rtol=1e-5, atol=1e-5), T


def test_scratch_reuses_its_memory():
    scratch = C.Scratch()
    a = scratch.take("x", (2, 3, 4), torch.float32, "cpu")
    b = scratch.take("x", (2, 2, 4), torch.float32, "cpu")  # smaller: the same memory
    assert a.shape == (2, 3, 4) and b.shape == (2, 2, 4) and a.data_ptr() == b.data_ptr()
    c = scratch.take("x", (5, 3, 4), torch.float32, "cpu")  # larger: a new buffer with headroom
    assert c.shape == (5, 3, 4) and scratch.take("x", (6, 3, 4), torch.float32, "cpu").data_ptr() == c.data_ptr()
    assert scratch.take("y", (2,), torch.float64, "cpu").dtype == torch.float64


@pytest.mark.minilm
def test_reused_batches_are_the_same_states(minilm):
    """iter_batches(reuse=True), as measure_streaming runs it: each batch's states equal a
    fresh capture's, and consecutive batches share memory (so the engine must reduce each
    before asking for the next)."""
    items = C.texts_of(CORE)
    fresh = list(C.iter_batches(minilm, items, 8))
    pointers = []
    for (rows, batch), (rows_f, batch_f) in zip(C.iter_batches(minilm, items, 8, reuse=True), fresh):
        assert rows == rows_f and torch.equal(batch.states, batch_f.states)
        pointers.append(batch.states.data_ptr())
    assert len(set(pointers)) < len(pointers)


@pytest.mark.minilm
def test_token_ids_reuse_fit_to_limit_and_match_the_tokenizer(minilm, monkeypatch):
    long = "word " * 600  # over MiniLM's 256-token limit: cut by fit_to_limit, truncated by token_ids
    sentences = SentenceSet("s", ("Cats sleep a lot", long.strip()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loader.fit_to_limit(minilm, sentences)
    items = [("Cats sleep a lot", "doc"), (long.strip(), "doc")]
    assert C._model_text(minilm.spec, *items[0]) in minilm.recent_ids
    assert C._model_text(minilm.spec, *items[1]) not in minilm.recent_ids
    want = minilm.tokenizer([t for t, _ in items], add_special_tokens=True, truncation=True,
                            max_length=minilm.max_tokens, return_attention_mask=False)["input_ids"]
    asked = []
    tokenizer = minilm.tokenizer

    def spy(texts, *args, **kwargs):
        asked.append(list(texts))
        return tokenizer(texts, *args, **kwargs)

    monkeypatch.setattr(minilm, "tokenizer", spy)
    assert C.token_ids(minilm, items) == want
    assert asked == [[long.strip()]]  # only the text fit_to_limit did not keep ids for


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
