"""Each vectorized metric equals its slow loop oracle (tests/oracles.py) to 1e-5.

Inputs are fixed random ragged batches: varying lengths with padding (filled
with garbage or NaN, which must never be read), [CLS]/[SEP] and one inner
marker excluded from the content mask, and a sentence with a single content
token (left out of the pair metrics only).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geometry_checks import metrics as M

try:
    from tests import oracles as O
except ImportError:  # tests/ on sys.path instead of the repo root
    import oracles as O

TOL = dict(atol=1e-5, rtol=1e-5)
LENGTHS = [7, 3, 9, 5, 4, 8]  # sentence 1 = [CLS] w [SEP]: one content token
SINGLE = 1


def make_batch(seed: int, dtype: torch.dtype, pad: str, p: int = 4, h: int = 16):
    """States [P, S, T, H] that drift with depth around a growing common direction."""
    g = torch.Generator().manual_seed(seed)
    s, t = len(LENGTHS), max(LENGTHS)
    common = torch.randn(h, generator=g, dtype=torch.float64)
    x = [torch.randn(s, t, h, generator=g, dtype=torch.float64)]
    for d in range(1, p):
        x.append(x[-1] + 0.6 * torch.randn(s, t, h, generator=g, dtype=torch.float64) + 0.4 * d * common)
    states = torch.stack(x)
    lengths = torch.tensor(LENGTHS)
    attn = torch.arange(t)[None, :] < lengths[:, None]
    content = attn.clone()
    content[:, 0] = False  # [CLS]
    content[torch.arange(s), lengths - 1] = False  # [SEP]
    content[3, 1] = False  # a ColBERT-style marker inside sentence 3
    states[:, ~attn] = float("nan") if pad == "nan" else 1e6
    return states.to(dtype), attn, content


CASES = [(0, torch.float32, "garbage"), (1, torch.float64, "garbage"), (2, torch.float32, "nan"),
         (3, torch.float64, "nan")]


@pytest.fixture(params=CASES, ids=lambda c: f"seed{c[0]}-{str(c[1])[6:]}-{c[2]}pad")
def batch(request):
    return make_batch(*request.param)


def same(fast, oracle, **tol):
    fast = fast.detach().cpu().double().numpy() if isinstance(fast, torch.Tensor) else np.asarray(fast)
    np.testing.assert_allclose(fast, np.asarray(oracle, np.float64), equal_nan=True, **(tol or TOL))


def np_states(states):
    return states.double().numpy()


# ----------------------------------------------------------- token cloud


@pytest.mark.parametrize("name", ["intra_sentence_cosine", "pc1_mean_cosine", "delta_coherence"])
def test_pair_metric_matches_oracle(batch, name):
    states, _, content = batch
    per_sentence = getattr(M, f"{name}_per_sentence")(states, content)
    same(per_sentence, getattr(O, f"{name}_per_sentence")(np_states(states), content.numpy()))
    same(getattr(M, name)(states, content), getattr(O, name)(np_states(states), content.numpy()))
    assert torch.isnan(per_sentence[:, SINGLE]).all()
    assert not torch.isnan(per_sentence[1:, [0, 2, 3, 4, 5]]).any()


@pytest.mark.parametrize("name", ["cross_sentence_cosine", "separability_ratio", "token_norm",
                                  "content_means", "within_scatter", "content_tokens"])
def test_set_metric_matches_oracle(batch, name):
    states, _, content = batch
    same(getattr(M, name)(states, content), getattr(O, name)(np_states(states), content.numpy()))


def test_sentence_signal_matches_oracle(batch):
    states, _, content = batch
    fast = M.sentence_signal(M.intra_sentence_cosine(states, content), M.cross_sentence_cosine(states, content))
    same(fast, O.sentence_signal(np_states(states), content.numpy()))


def test_single_token_sentence_counts_in_set_metrics(batch):
    """Dropping the one-token sentence changes cross/separability/token_norm (it is included)."""
    states, _, content = batch
    keep = [s for s in range(len(LENGTHS)) if s != SINGLE]
    for name in ["cross_sentence_cosine", "separability_ratio", "token_norm"]:
        f = getattr(M, name)
        assert not torch.allclose(f(states, content), f(states[:, keep], content[keep]))
    assert M.pair_eligible(content).tolist() == [s != SINGLE for s in range(len(LENGTHS))]
    assert M.content_counts(content).tolist() == [5, 1, 7, 2, 2, 6]


def test_streaming_batches_match_whole_set(batch):
    states, _, content = batch
    parts = [slice(0, 2), slice(2, 6)]
    for name in ["intra_sentence_cosine", "pc1_mean_cosine", "delta_coherence"]:
        f = getattr(M, f"{name}_per_sentence")
        joined = torch.cat([f(states[:, p], content[p]) for p in parts], dim=1)
        same(torch.nanmean(joined, dim=1), getattr(M, name)(states, content), atol=1e-12, rtol=1e-12)
    stats = [M.cross_sentence_stats(states[:, p], content[p]) for p in parts]
    streamed = M.cross_sentence_cosine_from_stats(
        sum(s[0] for s in stats), sum(s[1] for s in stats), torch.cat([s[2] for s in stats]))
    same(streamed, M.cross_sentence_cosine(states, content), atol=1e-12, rtol=1e-12)
    m = torch.cat([M.content_means(states[:, p], content[p]) for p in parts], dim=1)
    w = torch.cat([M.within_scatter(states[:, p], content[p]) for p in parts], dim=1)
    same(M.separability_ratio_from(m, w), M.separability_ratio(states, content), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("name", ["intra_sentence_cosine", "cross_sentence_cosine", "separability_ratio",
                                  "token_norm", "pc1_mean_cosine", "delta_coherence", "content_tokens"])
def test_sentence_without_content_token_is_an_input_error(batch, name):
    states, _, content = batch
    content = content.clone()
    content[4] = False
    with pytest.raises(ValueError, match=r"\[4\]"):
        getattr(M, name)(states, content)


def test_half_precision_input_is_upcast(batch):
    states, attn, content = batch
    if torch.isnan(states).any():
        states = torch.nan_to_num(states, nan=0.0)
    low = states.to(torch.bfloat16)
    for f in [M.intra_sentence_cosine, M.cross_sentence_cosine, M.separability_ratio, M.delta_coherence]:
        out = f(low, content)
        assert out.dtype == torch.float64
        same(out, f(low.float(), content), atol=1e-6, rtol=1e-6)
    assert M.mean_pool(low, attn).dtype == torch.float64


# ----------------------------------------------------------------- pooled


def test_mean_pool_and_cls_alignment_match_oracle(batch):
    states, attn, _ = batch
    same(M.mean_pool(states, attn), O.mean_pool(np_states(states), attn.numpy()))
    same(M.cls_pool(states), np_states(states)[:, :, 0])
    same(M.cls_mean_alignment(states, attn), O.cls_mean_alignment(np_states(states), attn.numpy()))


def test_drift_and_pair_cosines_match_oracle(batch):
    states, attn, _ = batch
    pools = M.mean_pool(states, attn)
    same(M.meanpool_drift(pools), O.meanpool_drift(pools.numpy()))
    a, b = pools[:, 0], pools[:, 2]
    same(M.pair_cosine(a, b), O.pair_cosine(a.numpy(), b.numpy()))
    for lo, hi in [(0, 4), (4, 8), (8, None), (5, 6)]:
        same(M.band_cosine(a, b, lo, hi), O.band_cosine(a.numpy(), b.numpy(), lo, hi))
    va, vb = states[:, 0, 2], states[:, 5, 3]  # two token states
    same(M.token_pair_cosine(va, vb), O.token_pair_cosine(va.double().numpy(), vb.double().numpy()))


def test_bands_for():
    assert M.bands_for(768) == [(0, 64), (64, 128), (128, 256), (256, 512), (512, 768)]
    assert M.bands_for(384) == [(0, 64), (64, 128), (128, 256), (256, 384)]
    assert M.bands_for(128) == [(0, 64), (64, 128)]
    assert M.bands_for(100) == [(0, 64), (64, 100)]


@pytest.mark.parametrize("k", [1, 2, 3, 6])
def test_recall_at_k_matches_oracle(batch, k):
    states, attn, _ = batch
    pools = M.mean_pool(states, attn)
    queries = pools[:, [0, 2, 5]]
    positive = torch.tensor([1, 3, 4])
    in_pool = torch.tensor([0, 2, -1])  # the third query's text is not in the pool (its vector is)
    same(M.recall_at_k(queries, pools, positive, in_pool, k),
         O.recall_at_k(queries.numpy(), pools.numpy(), positive.tolist(), in_pool.tolist(), k))


def test_recall_ties_keep_pool_order():
    pool = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 1.0]]])  # texts 0, 1, 2 tie
    query = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    # query 0 is text 3: positive 1 ranks second behind text 0; query 1 is text 0: positive 2 ranks second
    got = [M.recall_at_k(query, pool, torch.tensor([1, 2]), torch.tensor([3, 0]), k).item() for k in (1, 2)]
    assert got == [0.0, 1.0]


def test_maxsim_matches_oracle(batch):
    states, _, content = batch
    scores = torch.stack([M.maxsim_scores(states[:, q], content[q], states, content) for q in range(3)], dim=1)
    for q in range(3):
        same(scores[:, q], O.maxsim_scores(np_states(states)[:, q], content[q].numpy(), np_states(states),
                                           content.numpy()))
    positive, in_pool = torch.tensor([2, 0, 5]), torch.tensor([0, 1, 2])
    for k in (1, 2, 4):
        same(M.maxsim_recall_at_k(scores, positive, in_pool, k),
             O.maxsim_recall_at_k(scores.numpy(), positive.tolist(), in_pool.tolist(), k))


# ---------------------------------------------------------- per dimension


def test_write_depth_metrics_match_oracle(batch):
    states, attn, _ = batch
    pools = M.mean_pool(states, attn)
    same(M.write_depth(pools), O.write_depth(pools.numpy()), atol=0, rtol=0)
    same(M.write_depth_histogram(pools), O.write_depth_histogram(pools.numpy()), atol=0, rtol=0)
    same(M.late_write_fraction(pools), O.late_write_fraction(pools.numpy()))
    same(M.dim_correlation(pools), O.dim_correlation(pools.numpy()))


def test_dim_correlation_nan_for_constant_dimension():
    pools = torch.randn(3, 5, 4, dtype=torch.float64)
    pools[0, :, 1] = 0.1
    pools[-1, :, 2] = 3.0
    r = M.dim_correlation(pools)
    assert torch.isnan(r[1:3]).all() and not torch.isnan(r[[0, 3]]).any()


def test_discriminative_dims_match_oracle(batch):
    states, attn, _ = batch
    pools = M.mean_pool(states, attn)
    for a, b in [(0, 1), (2, 5)]:
        dims, curves, half = M.discriminative_dims(pools[:, a], pools[:, b], k=5)
        o_dims, o_curves, o_half = O.discriminative_dims(pools[:, a].numpy(), pools[:, b].numpy(), k=5)
        assert dims.tolist() == o_dims.tolist() and half.tolist() == o_half.tolist()
        same(curves, o_curves)


# ------------------------------------------------------------- trajectory


@pytest.mark.parametrize("name", ["fixed_pca_step", "refit_pca_step", "teleological_distance"])
def test_trajectory_matches_sklearn_oracle(batch, name):
    states, _, content = batch
    tokens = M.content_tokens(states, content)
    same(getattr(M, name)(tokens), getattr(O, name)(tokens.double().numpy()))


def test_pca_fit_matches_sklearn(batch):
    from sklearn.decomposition import PCA

    states, _, content = batch
    tokens = M.content_tokens(states, content).double()
    for d in range(tokens.shape[0]):
        mean, comps = M.pca_fit(tokens[d])
        ref = PCA(n_components=2, svd_solver="full").fit(tokens[d].numpy())
        same(mean, ref.mean_, atol=1e-10, rtol=0)
        same(comps, ref.components_, atol=1e-8, rtol=0)
