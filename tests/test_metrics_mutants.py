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


def test_recall_ranks_by_float64_cosines():
    """cos 1 - 5e-11 vs 1: a tie in float32 (pool order would put text 0 first), not in float64."""
    query = torch.tensor([[[1.0, 0.0]]])
    pool = torch.tensor([[[1.0, 1e-5], [1.0, 0.0], [0.0, 1.0]]])
    assert M.recall_at_k(query, pool, torch.tensor([1]), torch.tensor([-1]), 1).tolist() == [1.0]


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
