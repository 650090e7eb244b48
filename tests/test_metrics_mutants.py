"""Tests written to kill the mutants of geometry_checks/metrics.py that the oracle and
property tests let survive (mutmut, see benchmarks/mutation.md). Each states a piece of
the metrics' contract those tests did not pin: argument validation and its messages,
float64 results, pool order on ties, and defaults. Mutants that cannot change a result on
CPU (a `device=` argument dropped, an einsum spelled in capitals) are listed as
equivalent in benchmarks/mutation.md instead.
"""
from __future__ import annotations

import pytest
import torch

from geometry_checks import metrics as M


def _scores(p: int = 2, q: int = 2, n: int = 4) -> torch.Tensor:
    return torch.arange(p * q * n, dtype=torch.float64).reshape(p, q, n)


# --------------------------------------------------------------------------- recall


@pytest.mark.parametrize(("pos", "qi", "k", "message"), [
    ([0, 1], [-1, -1], 0, "k must be >= 1, got 0"),
    ([0, 1, 2], [-1, -1], 1, "positive_idx and query_idx_in_pool must be [Q]"),
    ([0, 1], [-1, -1, -1], 1, "positive_idx and query_idx_in_pool must be [Q]"),
    ([0, 4], [-1, -1], 1, "bad positive_idx / query_idx_in_pool"),   # positive == N
    ([-1, 0], [-1, -1], 1, "bad positive_idx / query_idx_in_pool"),  # positive < 0
    ([0, 1], [4, -1], 1, "bad positive_idx / query_idx_in_pool"),    # query == N
    ([0, 1], [-2, -1], 1, "bad positive_idx / query_idx_in_pool"),   # query < -1
    ([0, 1], [0, -1], 1, "bad positive_idx / query_idx_in_pool"),    # query is its own positive
], ids=["k0", "pos-shape", "query-shape", "pos-eq-n", "pos-neg", "query-eq-n", "query-below-minus-1",
        "query-is-positive"])
def test_recall_rejects_bad_indices_with_its_message(pos, qi, k, message):
    with pytest.raises(ValueError) as info:
        M.maxsim_recall_at_k(_scores(), torch.tensor(pos), torch.tensor(qi), k)
    assert str(info.value) == message


def test_recall_accepts_the_last_pool_index_and_minus_one():
    # Scores rise with the pool index: text 3 ranks first, unless it is the query itself.
    assert M.maxsim_recall_at_k(_scores(), torch.tensor([3, 2]), torch.tensor([-1, -1]), 1).tolist() == [0.5, 0.5]
    assert M.maxsim_recall_at_k(_scores(), torch.tensor([3, 2]), torch.tensor([-1, 3]), 1).tolist() == [1.0, 1.0]


def test_recall_accepts_int32_indices():
    want = M.maxsim_recall_at_k(_scores(), torch.tensor([3, 2]), torch.tensor([-1, 3]), 1)
    got = M.maxsim_recall_at_k(_scores(), torch.tensor([3, 2], dtype=torch.int32),
                               torch.tensor([-1, 3], dtype=torch.int32), 1)
    assert torch.equal(got, want)


def test_recall_accepts_int16_indices():
    """Indices of any integer dtype are made int64 (gather takes only int32/int64)."""
    want = M.maxsim_recall_at_k(_scores(), torch.tensor([3, 2]), torch.tensor([-1, 3]), 1)
    got = M.maxsim_recall_at_k(_scores(), torch.tensor([3, 2], dtype=torch.int16),
                               torch.tensor([-1, 3], dtype=torch.int16), 1)
    assert torch.equal(got, want)


def test_recall_ranks_by_float64_cosines():
    """cos 1 - 5e-11 vs 1: a tie in float32 (pool order would put text 0 first), not in float64."""
    query = torch.tensor([[[1.0, 0.0]]])
    pool = torch.tensor([[[1.0, 1e-5], [1.0, 0.0], [0.0, 1.0]]])
    assert M.recall_at_k(query, pool, torch.tensor([1]), torch.tensor([-1]), 1).tolist() == [1.0]



def test_recall_texts_parallel_to_the_query_tie_at_cos_1():
    """Texts parallel to the query all score cos 1 (clamped: (1, 1, 1) with itself rounds to
    1.0000000000000002, 3 (1, 1, 1) to 1.0), so they tie and pool order ranks them."""
    query = torch.tensor([[[1.0, 1.0, 1.0]]], dtype=torch.float64)
    pool = torch.tensor([[[3.0, 3.0, 3.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]], dtype=torch.float64)
    assert M.recall_at_k(query, pool, torch.tensor([0]), torch.tensor([-1]), 1).tolist() == [1.0]


def test_recall_texts_opposite_to_the_query_tie_at_cos_minus_1():
    """The same at the other end: -(1, 1, 1) and -3 (1, 1, 1) both score cos -1 (clamped), so
    pool order puts text 0 ahead of the positive, text 1."""
    query = torch.tensor([[[1.0, 1.0, 1.0]]], dtype=torch.float64)
    pool = torch.tensor([[[-1.0, -1.0, -1.0], [-3.0, -3.0, -3.0]]], dtype=torch.float64)
    assert M.recall_at_k(query, pool, torch.tensor([1]), torch.tensor([-1]), 1).tolist() == [0.0]

# --------------------------------------------------------------------------- maxsim


def test_maxsim_rejects_a_query_without_content_tokens():
    with pytest.raises(ValueError) as info:
        M.maxsim_scores(torch.ones(1, 2, 3), torch.tensor([False, False]), torch.ones(1, 2, 2, 3),
                        torch.tensor([[True, True], [True, False]]))
    assert str(info.value) == "query or text without content tokens"


def test_maxsim_rejects_one_text_without_content_tokens():
    with pytest.raises(ValueError) as info:
        M.maxsim_scores(torch.ones(1, 2, 3), torch.tensor([True, True]), torch.ones(1, 2, 2, 3),
                        torch.tensor([[True, True], [False, False]]))
    assert str(info.value) == "query or text without content tokens"


def test_maxsim_scores_are_float64_sums():
    g = torch.Generator().manual_seed(0)
    q, d = torch.randn(2, 3, 4, generator=g), torch.randn(2, 5, 6, 4, generator=g)
    scores = M.maxsim_scores(q, torch.tensor([True, False, True]), d, torch.ones(5, 6, dtype=torch.bool))
    assert scores.dtype == torch.float64 and scores.shape == (2, 5)


# --------------------------------------------------------------------------- bands, dims


def test_band_cosine_rejects_an_empty_band():
    pools = torch.randn(2, 8)
    with pytest.raises(ValueError) as info:
        M.band_cosine(pools, pools, 5, 5)
    assert str(info.value) == "empty band 5:5"


@pytest.mark.parametrize("k", [0, 9])
def test_discriminative_dims_rejects_k_out_of_range(k):
    with pytest.raises(ValueError) as info:
        M.discriminative_dims(torch.zeros(3, 8), torch.ones(3, 8), k)
    assert str(info.value) == f"k={k} out of range for H=8"


def test_discriminative_dims_default_is_top_5_in_float64():
    a = torch.arange(24, dtype=torch.float32).reshape(3, 8)
    dims, curves, half = M.discriminative_dims(a, torch.zeros(3, 8))
    assert dims.tolist() == [7, 6, 5, 4, 3]
    assert curves.dtype == torch.float64 and curves.shape == (5, 3) and half.shape == (5,)


def test_discriminative_dims_ties_keep_the_lower_index_first():
    """Thousands of tied differences: an unstable sort would pick any of them."""
    diff = torch.tensor([1.0, 2.0] * 3000)
    pool_a = torch.stack([torch.zeros_like(diff), diff])
    dims, _, _ = M.discriminative_dims(pool_a, torch.zeros_like(pool_a), 5)
    assert dims.tolist() == [1, 3, 5, 7, 9]


def test_cosine_stays_within_minus_one_one_despite_rounding():
    """(1, 1, 1) / |(1, 1, 1)| dotted with itself is 1.0000000000000002 in float64: the
    documented clamp keeps cos(v, v) at 1 and cos(v, -v) at -1."""
    v = torch.ones(3, dtype=torch.float64)
    assert M.cosine(v, v).item() == 1.0
    assert M.cosine(v, -v).item() == -1.0


def test_cosine_of_float32_inputs_is_their_float64_cosine():
    """Both operands are upcast before normalising: the result equals the float64 cosine of
    the same (exactly representable) values, in either argument order."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g)
    want = M.cosine(a.double(), b.double())
    assert torch.equal(M.cosine(a, b), want) and torch.equal(M.cosine(b, a), want)


def test_dim_correlation_of_float32_pools_is_float64():
    """Returned floats are float64 (the contract test above feeds it mean_pool's float64 pools)."""
    pools = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0))
    assert M.dim_correlation(pools).dtype == torch.float64


def test_pair_cosine_all_is_float64():
    out = M.pair_cosine_all(torch.randn(2, 4, 3))
    assert out.dtype == torch.float64


def test_pair_cosine_all_of_two_sentences_is_their_cosine():
    pools = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    assert M.pair_cosine_all(pools).tolist() == pytest.approx([2 ** -0.5])


# --------------------------------------------------------------------------- token classes


def _class_batch():
    states = torch.randn(2, 1, 4, 3, generator=torch.Generator().manual_seed(0))
    content = torch.tensor([[False, True, True, True]])
    a, b = torch.tensor([[False, True, True, False]]), torch.tensor([[False, False, False, True]])
    return states, content, a, b


def test_class_pair_counts_are_integers():
    states, _, a, b = _class_batch()
    assert M.class_pair_sums(states, a)[1].tolist() == [1]
    assert M.class_pair_sums(states, a)[1].dtype == torch.long
    assert M.class_pair_sums(states, a, b)[1].dtype == torch.long


def test_class_mask_errors_say_what_is_wrong():
    states, content, a, b = _class_batch()
    with pytest.raises(ValueError) as info:
        M.class_pair_sums(states, a, a)
    assert str(info.value) == "class_pair_sums: the two masks overlap"
    with pytest.raises(ValueError) as info:
        M.class_pair_shares(states, content, a, a & False)
    assert str(info.value) == "class_pair_shares: the masks must split the content mask"


# --------------------------------------------------------------------------- dtypes, per dimension, PCA


def _float32_batch():
    g = torch.Generator().manual_seed(1)
    states = torch.randn(3, 4, 6, 5, generator=g)  # [P, S, T, H] float32
    attn = torch.ones(4, 6, dtype=torch.bool)
    attn[1, 4:] = False
    content = attn.clone()
    content[:, 0] = False
    return states, attn, content


def _float_outputs():
    states, attn, content = _float32_batch()
    pools = M.mean_pool(states, attn)
    tokens = M.content_tokens(states, content)
    cw = content.clone()
    cw[:, 1] = False
    yield "intra_sentence_cosine", M.intra_sentence_cosine(states, content)
    yield "cross_sentence_cosine", M.cross_sentence_cosine(states, content)
    yield "separability_ratio", M.separability_ratio(states, content)
    yield "token_norm", M.token_norm(states, content)
    yield "pc1_mean_cosine", M.pc1_mean_cosine(states, content)
    yield "delta_coherence", M.delta_coherence(states, content)
    yield "mean_pool", pools
    yield "cls_pool", M.cls_pool(states)
    yield "cls_mean_alignment", M.cls_mean_alignment(states, attn)
    yield "meanpool_drift", M.meanpool_drift(pools)
    yield "pair_cosine", M.pair_cosine(pools[:, 0], pools[:, 1])
    yield "band_cosine", M.band_cosine(pools[:, 0], pools[:, 1], 0, 3)
    yield "late_write_fraction", torch.as_tensor(M.late_write_fraction(pools))
    yield "dim_correlation", M.dim_correlation(pools)
    yield "pca_fit", M.pca_fit(tokens[0])[1]
    yield "fixed_pca_step", M.fixed_pca_step(tokens)
    yield "refit_pca_step", M.refit_pca_step(tokens)
    yield "teleological_distance", M.teleological_distance(tokens)
    yield "class_pair_cosine_per_sentence", M.class_pair_cosine_per_sentence(states, cw)
    yield "intra_class_cosine", M.intra_class_cosine(states, cw)[0]
    yield "pair_cosine_all", M.pair_cosine_all(pools)


@pytest.mark.parametrize(("name", "value"), list(_float_outputs()), ids=lambda x: x if isinstance(x, str) else "")
def test_every_metric_returns_float64_from_float32_states(name, value):
    """The module's contract: sums and every returned float are float64 (on CPU)."""
    assert value.dtype == torch.float64, name


def test_write_metrics_need_two_depths():
    with pytest.raises(ValueError) as info:
        M.write_depth(torch.zeros(1, 3, 4))
    assert str(info.value) == "per-dimension write metrics need L >= 1 (P >= 2 depths)"



def test_write_depth_compares_the_steps_of_float32_pools_in_float64():
    """Depth 1 moves 1 - 2^-30 (float32 arithmetic rounds it to 1, a tie the first depth would
    win), depth 2 moves 1: the larger step, at depth 2, is the write depth."""
    pools = torch.tensor([[[2.0 ** -30]], [[1.0]], [[2.0]]])  # [P=3, S=1, H=1] float32
    assert M.write_depth(pools).tolist() == [2]

@pytest.mark.parametrize("side", [0, -1], ids=["constant-at-depth-0", "constant-at-depth-L"])
def test_dim_correlation_is_nan_for_a_constant_dimension_despite_rounding(side):
    """0.1 seven times has a mean that is not exactly 0.1: r would be 1e-17, not NaN."""
    g = torch.Generator().manual_seed(0)
    pools = torch.randn(2, 7, 3, generator=g, dtype=torch.float64)
    pools[side, :, 0] = 0.1
    r = M.dim_correlation(pools)
    assert torch.isnan(r[0]) and not torch.isnan(r[1:]).any()


def test_dim_correlation_of_exact_linear_relations_is_within_minus_one_one():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 400, generator=g, dtype=torch.float64)
    r_up = M.dim_correlation(torch.stack([x, 3 * x + 1]))
    r_down = M.dim_correlation(torch.stack([x, -3 * x + 1]))
    assert r_up.max() <= 1.0 and r_down.min() >= -1.0
    assert r_up.min() == pytest.approx(1.0) and r_down.max() == pytest.approx(-1.0)


def test_pca_fit_takes_one_component_and_rejects_too_many():
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mean, comps = M.pca_fit(x, 1)
    assert comps.shape == (1, 4)
    with pytest.raises(ValueError) as info:
        M.pca_fit(x, 5)
    assert str(info.value) == "n_components=5 needs N, H >= it (N=6, H=4)"



def test_mean_pool_names_the_sentences_with_an_empty_attention_mask():
    attn = torch.tensor([[True, False], [False, False], [True, True], [False, False]])
    with pytest.raises(ValueError) as info:
        M.mean_pool(torch.ones(1, 4, 2, 3), attn)
    assert str(info.value) == "sentences [1, 3] have an empty attention mask"

# --------------------------------------------------------------------------- token cloud


def test_a_0_1_mask_of_another_dtype_means_the_same_as_the_bool_mask():
    """Masks are read as truth values (normalised to bool): an int64 or uint8 0/1 mask, as a
    tokenizer's attention_mask comes, gives the bool mask's results."""
    states, attn, content = _float32_batch()
    for dtype in (torch.int64, torch.uint8):
        assert torch.equal(M.mean_pool(states, attn.to(dtype)), M.mean_pool(states, attn))
        assert torch.equal(M.intra_sentence_cosine(states, content.to(dtype)), M.intra_sentence_cosine(states, content))
        assert torch.equal(M.token_norm(states, content.to(dtype)), M.token_norm(states, content))

@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_pc1_no_scatter_threshold_is_relative_to_the_token_norm(scale):
    """pc1_mean_cosine is scale-invariant, its NaN included: tokens 1e-13 of their norm apart
    have no scatter direction (NaN) at every scale, tokens 1e-6 apart have one."""
    content = torch.tensor([[True, True]])
    flat = torch.tensor([[[[1.0, 0.0], [1.0, 1e-13]]]], dtype=torch.float64) * scale
    spread = torch.tensor([[[[1.0, 0.0], [1.0, 1e-6]]]], dtype=torch.float64) * scale
    assert torch.isnan(M.pc1_mean_cosine_per_sentence(flat, content)).all()
    assert not torch.isnan(M.pc1_mean_cosine_per_sentence(spread, content)).any()


def test_pc1_no_scatter_decision_depends_on_the_sentence_alone():
    """A sentence 1e-10 wide at norm 1 has a scatter direction, next to a sentence of norm 1e4
    as much as alone: the threshold scales with its own largest token norm."""
    content = torch.ones(2, 2, dtype=torch.bool)
    states = torch.tensor([[[[1.0, 0.0], [1.0, 1e-10]], [[1e4, 0.0], [0.0, 1e4]]]], dtype=torch.float64)
    alone = M.pc1_mean_cosine_per_sentence(states[:, :1], content[:1])
    together = M.pc1_mean_cosine_per_sentence(states, content)
    assert not torch.isnan(alone).any() and torch.equal(together[:, :1], alone)


@pytest.mark.parametrize(("top_singular_value", "nan"), [(999.5, True), (1000.5, False)])
def test_pc1_no_scatter_threshold_is_1000_eps_times_the_token_norm(top_singular_value, nan):
    """Two tokens of norm 1, d apart: the centred top singular value is d / sqrt(2). The
    documented cut (NaN if <= 1000 eps times the largest token norm) falls between 999.5 eps
    and 1000.5 eps."""
    d = top_singular_value * torch.finfo(torch.float64).eps * 2 ** 0.5
    states = torch.tensor([[[[1.0, 0.0], [1.0, d]]]], dtype=torch.float64)
    out = M.pc1_mean_cosine_per_sentence(states, torch.tensor([[True, True]]))
    assert bool(torch.isnan(out).all()) is nan


def test_pc1_of_all_zero_tokens_is_nan():
    """Zero vectors have no scatter direction (singular value 0 <= the cut 0): NaN, not the
    cosine 0 a zero mean would give."""
    states = torch.zeros(2, 1, 3, 4, dtype=torch.float64)
    out = M.pc1_mean_cosine_per_sentence(states, torch.tensor([[True, True, True]]))
    assert torch.isnan(out).all()


def test_intra_cosine_of_a_long_sentence_counts_its_pairs_exactly():
    """6,002 identical tokens: 18,009,001 pairs, each cos 1. The count is exact in float64
    (not in float32), so the mean is exactly 1 (long sentences: jina-colbert-v2 takes 8,192 tokens)."""
    states = torch.zeros(1, 1, 6002, 2)
    states[..., 0] = 1.0
    out = M.intra_sentence_cosine(states, torch.ones(1, 6002, dtype=torch.bool))
    assert out.tolist() == [1.0]
