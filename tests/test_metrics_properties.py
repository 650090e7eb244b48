"""Hypothesis properties of geometry_checks.metrics: agreement with the loop oracles
(tests/oracles.py) and the invariants the definitions imply (bounds, sentence order,
rotation, scaling, translation, duplication, padding, streaming).

Inputs: small ragged float64 batches (P <= 4, S <= 5, T <= 6, H <= 8) with bounded
finite entries; values below 1e-3 in magnitude are snapped to 0, so a token is
either exactly zero (cosine 0 by convention) or clearly non-zero.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from geometry_checks import metrics as M

try:
    from tests import oracles as O
except ImportError:  # tests/ on sys.path instead of the repo root
    import oracles as O

pytestmark = pytest.mark.property

FLOATS = st.floats(-10, 10, allow_nan=False, allow_infinity=False).map(lambda v: 0.0 if abs(v) < 1e-3 else v)
TIGHT = dict(atol=1e-9, rtol=1e-9)
LOOSE = dict(atol=1e-7, rtol=1e-7)  # invariances: the two sides round differently


def close(a, b, **tol):
    a = a.detach().double().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, np.float64)
    b = b.detach().double().numpy() if isinstance(b, torch.Tensor) else np.asarray(b, np.float64)
    np.testing.assert_allclose(a, b, equal_nan=True, **(tol or TIGHT))


@st.composite
def batches(draw, min_p=1, min_s=1, min_h=1):
    """(states [P, S, T, H] float64, attn [S, T], content [S, T]); every sentence has a content token."""
    p, s = draw(st.integers(min_p, 4)), draw(st.integers(min_s, 5))
    t, h = draw(st.integers(1, 6)), draw(st.integers(min_h, 8))
    states = draw(arrays(np.float64, (p, s, t, h), elements=FLOATS, fill=st.nothing()))
    lengths = np.array(draw(st.lists(st.integers(1, t), min_size=s, max_size=s)))
    attn = np.arange(t)[None, :] < lengths[:, None]
    content = draw(arrays(np.bool_, (s, t), elements=st.booleans(), fill=st.nothing())) & attn
    for i in range(s):
        if not content[i].any():
            content[i, draw(st.integers(0, lengths[i] - 1))] = True
    states[:, ~attn] = draw(st.sampled_from([0.0, 1e6, np.nan]))  # padding is never read
    return torch.from_numpy(states), torch.from_numpy(attn), torch.from_numpy(content)


def rotation(seed: int, h: int) -> torch.Tensor:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((h, h)))
    return torch.from_numpy(q * np.sign(np.diag(r)))


def pc1_well_posed(states, content) -> bool:
    """Every eligible sentence either has identical tokens (NaN both sides) or a clear top
    singular value (direction stable to rounding) and a mean clear of zero."""
    x = states.numpy()
    for d in range(x.shape[0]):
        for s in range(x.shape[1]):
            toks = x[d, s][content[s].numpy()]
            if len(toks) < 2 or (toks == toks[0]).all():
                continue
            scale = max(np.linalg.norm(toks, axis=1).max(), 1e-3)
            sv = np.linalg.svd(toks - toks.mean(0), compute_uv=False)
            gap = sv[0] - (sv[1] if len(sv) > 1 else 0.0)
            if sv[0] < 1e-6 * scale or gap < 1e-4 * sv[0]:
                return False
            if 1e-13 < np.linalg.norm(toks.mean(0)) < 1e-6 * scale:
                return False
    return True


# ------------------------------------------------------- oracle agreement


@settings(deadline=None)
@given(batches())
def test_intra_cosine_matches_oracle(b):
    states, _, content = b
    close(M.intra_sentence_cosine_per_sentence(states, content),
          O.intra_sentence_cosine_per_sentence(states.numpy(), content.numpy()))


@settings(deadline=None)
@given(batches())
def test_cross_cosine_matches_oracle(b):
    states, _, content = b
    close(M.cross_sentence_cosine(states, content), O.cross_sentence_cosine(states.numpy(), content.numpy()))


@settings(deadline=None)
@given(batches())
def test_delta_coherence_matches_oracle(b):
    states, _, content = b
    close(M.delta_coherence_per_sentence(states, content),
          O.delta_coherence_per_sentence(states.numpy(), content.numpy()))


@settings(deadline=None)
@given(batches())
def test_separability_and_token_norm_match_oracle(b):
    states, _, content = b
    close(M.token_norm(states, content), O.token_norm(states.numpy(), content.numpy()))
    close(M.within_scatter(states, content), O.within_scatter(states.numpy(), content.numpy()))
    scattered = (M.within_scatter(states, content).mean(1) > 1e-3).numpy()  # W clear of 0
    close(M.separability_ratio(states, content).numpy()[scattered],
          O.separability_ratio(states.numpy(), content.numpy())[scattered])


@settings(deadline=None)
@given(batches())
def test_pc1_mean_cosine_matches_oracle(b):
    states, _, content = b
    assume(pc1_well_posed(states, content))
    close(M.pc1_mean_cosine_per_sentence(states, content),
          O.pc1_mean_cosine_per_sentence(states.numpy(), content.numpy()), atol=1e-8, rtol=1e-8)


@settings(deadline=None)
@given(batches())
def test_pooled_cosines_match_oracle(b):
    states, attn, _ = b
    pools = M.mean_pool(states, attn)
    close(pools, O.mean_pool(states.numpy(), attn.numpy()))
    close(M.cls_mean_alignment(states, attn), O.cls_mean_alignment(states.numpy(), attn.numpy()))
    close(M.meanpool_drift(pools), O.meanpool_drift(pools.numpy()))
    close(M.pair_cosine(pools[:, 0], pools[:, -1]), O.pair_cosine(pools[:, 0].numpy(), pools[:, -1].numpy()))


@settings(deadline=None)
@given(batches(min_s=2), st.integers(1, 6), st.data())
def test_maxsim_matches_oracle(b, k, data):
    states, _, content = b
    s_ = states.shape[1]
    queries = data.draw(st.lists(st.integers(0, s_ - 1), min_size=1, max_size=3))
    scores = torch.stack([M.maxsim_scores(states[:, q], content[q], states, content) for q in queries], dim=1)
    for i, q in enumerate(queries):
        close(scores[:, i], O.maxsim_scores(states.numpy()[:, q], content[q].numpy(), states.numpy(),
                                            content.numpy()))
    # rank against the oracle's own scores so near-ties cannot flip between implementations
    ref = np.stack([O.maxsim_scores(states.numpy()[:, q], content[q].numpy(), states.numpy(), content.numpy())
                    for q in queries], axis=1)
    positive = [(q + 1) % s_ for q in queries]
    close(M.maxsim_recall_at_k(torch.from_numpy(ref), torch.tensor(positive), torch.tensor(queries), k),
          O.maxsim_recall_at_k(ref, positive, queries, k), atol=0, rtol=0)


# ------------------------------------------------------------------ bounds


@settings(deadline=None)
@given(batches())
def test_cosines_bounded(b):
    states, attn, content = b
    for curve in [M.intra_sentence_cosine(states, content), M.cross_sentence_cosine(states, content),
                  M.delta_coherence(states, content), M.cls_mean_alignment(states, attn),
                  M.meanpool_drift(M.mean_pool(states, attn))]:
        c = curve[~torch.isnan(curve)]
        assert ((c >= -1 - 1e-12) & (c <= 1 + 1e-12)).all()
    pc1 = M.pc1_mean_cosine_per_sentence(states, content)
    pc1 = pc1[~torch.isnan(pc1)]
    assert ((pc1 >= 0) & (pc1 <= 1)).all()


@settings(deadline=None)
@given(batches())
def test_intra_cosine_at_least_minus_one_over_n_minus_one(b):
    """|sum of n unit vectors|^2 >= 0 forces the mean pairwise cosine >= -1/(n-1)."""
    states, _, content = b
    n = M.content_counts(content).double()
    per = M.intra_sentence_cosine_per_sentence(states, content)
    ok = ~torch.isnan(per)
    assert (per[ok] >= (-1 / (n - 1)).expand_as(per)[ok] - 1e-12).all()


@settings(deadline=None)
@given(batches(min_s=2))
def test_pearson_r_bounded(b):
    states, attn, _ = b
    pools = M.mean_pool(states, attn)
    r = M.dim_correlation(pools)
    close(r, O.dim_correlation(pools.numpy()), atol=1e-8, rtol=1e-8)
    finite = r[~torch.isnan(r)]
    assert ((finite >= -1) & (finite <= 1)).all()


# -------------------------------------------------------------- invariants


def _set_level(states, attn, content):
    return {
        "intra": M.intra_sentence_cosine(states, content),
        "cross": M.cross_sentence_cosine(states, content),
        "delta": M.delta_coherence(states, content),
        "token_norm": M.token_norm(states, content),
        "separability": M.separability_ratio(states, content),
        "cls_align": M.cls_mean_alignment(states, attn),
    }


def _cosine_metrics(states, attn, content):
    out = _set_level(states, attn, content)
    out.pop("token_norm"), out.pop("separability")
    out["drift"] = M.meanpool_drift(M.mean_pool(states, attn))
    return out


@settings(deadline=None)
@given(batches(), st.randoms(use_true_random=False))
def test_metrics_invariant_to_sentence_order(b, rnd):
    states, attn, content = b
    perm = list(range(states.shape[1]))
    rnd.shuffle(perm)
    before, after = _set_level(states, attn, content), _set_level(states[:, perm], attn[perm], content[perm])
    for name in before:
        close(after[name], before[name], **LOOSE)
    close(M.intra_sentence_cosine_per_sentence(states[:, perm], content[perm]),
          M.intra_sentence_cosine_per_sentence(states, content)[:, perm], **LOOSE)
    if states.shape[0] >= 2:
        pools = M.mean_pool(states, attn)
        if _clear_write_depth(pools):  # else a reordered sum may legitimately flip a near-tie
            assert torch.equal(M.write_depth(pools[:, perm]), M.write_depth(pools))
        close(M.dim_correlation(pools[:, perm]), M.dim_correlation(pools), **LOOSE)


@settings(deadline=None)
@given(batches(), st.integers(0, 2**32 - 1))
def test_cosine_metrics_invariant_to_global_rotation(b, seed):
    states, attn, content = b
    rotated = states @ rotation(seed, states.shape[-1])
    before, after = _cosine_metrics(states, attn, content), _cosine_metrics(rotated, attn, content)
    for name in before:
        close(after[name], before[name], atol=1e-6, rtol=1e-6)
    close(M.token_norm(rotated, content), M.token_norm(states, content), **LOOSE)


@settings(deadline=None)
@given(batches(), st.integers(0, 2**32 - 1))
def test_pc1_invariant_to_global_rotation(b, seed):
    states, _, content = b
    assume(pc1_well_posed(states, content))
    rotated = states @ rotation(seed, states.shape[-1])
    close(M.pc1_mean_cosine(rotated, content), M.pc1_mean_cosine(states, content), atol=1e-6, rtol=1e-6)


@settings(deadline=None)
@given(batches(), st.floats(0.1, 10))
def test_cosine_metrics_invariant_to_positive_scaling(b, c):
    states, attn, content = b
    scaled = states * c
    before, after = _cosine_metrics(states, attn, content), _cosine_metrics(scaled, attn, content)
    for name in before:
        close(after[name], before[name], atol=1e-6, rtol=1e-6)
    close(M.token_norm(scaled, content), c * M.token_norm(states, content), **LOOSE)


@settings(deadline=None)
@given(batches(), st.integers(0, 2**32 - 1), arrays(np.float64, 8, elements=FLOATS), st.floats(0.1, 10))
def test_separability_invariant_to_rotation_scaling_and_translation(b, seed, shift, c):
    states, _, content = b
    h = states.shape[-1]
    scattered = M.within_scatter(states, content).mean(1) > 1e-2  # W clear of 0
    moved = c * (states @ rotation(seed, h)) + torch.from_numpy(shift[:h])
    close(M.separability_ratio(moved, content)[scattered], M.separability_ratio(states, content)[scattered],
          atol=1e-6, rtol=1e-6)


@settings(deadline=None)
@given(batches())
def test_duplicate_sentence_leaves_intra_metrics_unchanged(b):
    """Per-sentence values of a duplicated sentence are duplicated; doubling every
    sentence leaves the set-level means of the pair metrics unchanged."""
    states, _, content = b
    twice = list(range(states.shape[1])) * 2
    for name in ["intra_sentence_cosine", "delta_coherence", "pc1_mean_cosine"]:
        per = getattr(M, f"{name}_per_sentence")
        close(per(states[:, twice], content[twice]), per(states, content)[:, twice], atol=0, rtol=0)
        close(getattr(M, name)(states[:, twice], content[twice]), getattr(M, name)(states, content), **LOOSE)


@settings(deadline=None)
@given(batches(), st.sampled_from([0.0, -3.0, 1e6, np.nan]))
def test_padding_is_never_read(b, fill):
    states, attn, content = b
    padded = states.clone()
    padded[:, ~attn] = fill
    padded = torch.cat([padded, torch.full_like(states[:, :, :1], fill)], dim=2)
    attn2 = torch.cat([attn, torch.zeros_like(attn[:, :1])], dim=1)
    content2 = torch.cat([content, torch.zeros_like(content[:, :1])], dim=1)
    before, after = _set_level(states, attn, content), _set_level(padded, attn2, content2)
    for name in before:
        close(after[name], before[name], atol=1e-12, rtol=1e-12)
    close(M.pc1_mean_cosine_per_sentence(padded, content2), M.pc1_mean_cosine_per_sentence(states, content),
          atol=1e-12, rtol=1e-12)


@settings(deadline=None)
@given(batches(min_s=2), st.data())
def test_streamed_batches_equal_whole_set(b, data):
    states, _, content = b
    cut = data.draw(st.integers(1, states.shape[1] - 1))
    parts = [slice(0, cut), slice(cut, None)]
    stats = [M.cross_sentence_stats(states[:, p], content[p]) for p in parts]
    streamed = M.cross_sentence_cosine_from_stats(stats[0][0] + stats[1][0], stats[0][1] + stats[1][1],
                                                  torch.cat([stats[0][2], stats[1][2]]))
    close(streamed, M.cross_sentence_cosine(states, content), **LOOSE)
    per = torch.cat([M.intra_sentence_cosine_per_sentence(states[:, p], content[p]) for p in parts], dim=1)
    close(per, M.intra_sentence_cosine_per_sentence(states, content), atol=0, rtol=0)


# ------------------------------------------------------------------ pooled


@settings(deadline=None)
@given(batches())
def test_meanpool_drift_is_one_at_depth_zero_and_full_band_is_pair_cosine(b):
    states, attn, _ = b
    pools = M.mean_pool(states, attn)
    drift0 = M.meanpool_drift(pools)[0]
    nonzero = torch.linalg.vector_norm(pools[0], dim=-1) > M.EPS
    close(drift0[nonzero], torch.ones(int(nonzero.sum()), dtype=torch.float64), atol=1e-12, rtol=0)
    a, b_ = pools[:, 0], pools[:, -1]
    close(M.band_cosine(a, b_, 0, None), M.pair_cosine(a, b_), atol=0, rtol=0)
    h = pools.shape[-1]
    bands = M.bands_for(h)
    assert bands[0][0] == 0 and bands[-1][1] == h and all(x[1] == y[0] for x, y in zip(bands, bands[1:]))


@st.composite
def retrieval(draw):
    p, n, h = draw(st.integers(1, 3)), draw(st.integers(2, 7)), draw(st.integers(1, 6))
    pool = draw(arrays(np.float64, (p, n, h), elements=FLOATS, fill=st.nothing()))
    q = draw(st.integers(1, 4))
    in_pool = [draw(st.integers(-1, n - 1)) for _ in range(q)]
    positive = [draw(st.sampled_from([j for j in range(n) if j != i])) for i in in_pool]
    queries = np.stack([pool[:, i] if i >= 0 else draw(arrays(np.float64, (p, h), elements=FLOATS))
                        for i in in_pool], axis=1)
    return torch.from_numpy(queries), torch.from_numpy(pool), torch.tensor(positive), torch.tensor(in_pool)


@settings(deadline=None)
@given(retrieval())
def test_recall_monotone_in_k(r):
    queries, pool, positive, in_pool = r
    recalls = [M.recall_at_k(queries, pool, positive, in_pool, k) for k in range(1, pool.shape[1] + 1)]
    for lo, hi in zip(recalls, recalls[1:]):
        assert (lo <= hi).all()
    assert (recalls[-1] == 1).all()  # k = N: every candidate is in the top k
    q = queries.shape[1]
    for rec in recalls:  # hits / queries as one division: the same float on every device
        assert torch.equal(rec, torch.round(rec * q) / q)
    if (in_pool >= 0).all():
        assert (recalls[-2] == 1).all()  # the query's own text is never a candidate: N - 1 of them


@settings(deadline=None)
@given(retrieval(), st.integers(1, 7))
def test_recall_matches_oracle(r, k):
    queries, pool, positive, in_pool = r
    ref = O.cosine_scores(queries.numpy(), pool.numpy())
    # no near-ties with the positive: otherwise rounding could legitimately reorder them
    pos_scores = np.take_along_axis(ref, positive.numpy()[None, :, None], axis=2)
    gaps = np.abs(ref - pos_scores)
    assume(np.all((gaps == 0) | (gaps > 1e-9)))
    exact_ties = (gaps == 0).sum() > ref.shape[0] * ref.shape[1]
    if exact_ties:  # tie only between bitwise-identical vectors, which score identically
        assume(_ties_are_identical_vectors(pool.numpy(), ref, positive.numpy()))
    close(M.recall_at_k(queries, pool, positive, in_pool, k),
          O.recall_at_k(queries.numpy(), pool.numpy(), positive.tolist(), in_pool.tolist(), k), atol=0, rtol=0)


def _ties_are_identical_vectors(pool, ref, positive):
    for d in range(ref.shape[0]):
        for q in range(ref.shape[1]):
            for j in range(ref.shape[2]):
                if j != positive[q] and ref[d, q, j] == ref[d, q, positive[q]]:
                    if not np.array_equal(pool[d, j], pool[d, positive[q]]):
                        return False
    return True


@settings(deadline=None)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(2, 7), st.integers(1, 7), st.data())
def test_ranking_ties_keep_pool_order(p, q, n, k, data):
    """On small-integer scores (many exact ties), ranking equals a stable sort of the pool."""
    scores = data.draw(arrays(np.float64, (p, q, n), elements=st.integers(-2, 2).map(float), fill=st.nothing()))
    in_pool = [data.draw(st.integers(-1, n - 1)) for _ in range(q)]
    positive = [data.draw(st.sampled_from([j for j in range(n) if j != i])) for i in in_pool]
    close(M.maxsim_recall_at_k(torch.from_numpy(scores), torch.tensor(positive), torch.tensor(in_pool), k),
          O.recall_from_scores(scores, positive, in_pool, k), atol=0, rtol=0)


# ---------------------------------------------------------- per dimension


def _clear_write_depth(pools) -> bool:
    """True if, for every dimension, the best step beats the runner-up by > 1e-9."""
    steps = np.abs(np.diff(pools.numpy(), axis=0)).mean(1)  # [L, H]
    if steps.shape[0] < 2:
        return True
    top2 = np.sort(steps, axis=0)[-2:]
    return bool(np.all(top2[1] - top2[0] > 1e-9))


INT_POOLS = st.tuples(st.integers(2, 4), st.integers(1, 5), st.integers(1, 8)).flatmap(
    lambda shape: arrays(np.float64, shape, elements=st.integers(-3, 3).map(float), fill=st.nothing()))


@settings(deadline=None)
@given(INT_POOLS)
def test_write_depth_matches_oracle_with_exact_ties(pools):
    """Integer pools make ties exact on both sides: the first maximising depth wins."""
    pools = torch.from_numpy(pools)
    close(M.write_depth(pools), O.write_depth(pools.numpy()), atol=0, rtol=0)
    close(M.late_write_fraction(pools), O.late_write_fraction(pools.numpy()), atol=1e-15, rtol=0)


@settings(deadline=None)
@given(batches(min_p=2))
def test_write_depth_histogram_sums_to_H(b):
    states, attn, _ = b
    pools = M.mean_pool(states, attn)
    hist, depth = M.write_depth_histogram(pools), M.write_depth(pools)
    p_, h = pools.shape[0], pools.shape[-1]
    assert hist.shape == (p_,) and hist[0] == 0 and int(hist.sum()) == h
    assert ((depth >= 1) & (depth <= p_ - 1)).all()
    close(M.late_write_fraction(pools), hist[max(p_ - 2, 1):].sum().item() / h, atol=1e-15, rtol=0)
    if _clear_write_depth(pools):
        close(depth, O.write_depth(pools.numpy()), atol=0, rtol=0)


@settings(deadline=None)
@given(st.integers(1, 5), st.integers(1, 8), st.data())
def test_half_rise_depth_definition(p, h, data):
    a = torch.from_numpy(data.draw(arrays(np.float64, (p, h), elements=FLOATS, fill=st.nothing())))
    b = torch.from_numpy(data.draw(arrays(np.float64, (p, h), elements=FLOATS, fill=st.nothing())))
    k = data.draw(st.integers(1, h))
    dims, curves, half = M.discriminative_dims(a, b, k)
    final = (a[-1] - b[-1]).abs()
    assert len(set(dims.tolist())) == k
    others = [j for j in range(h) if j not in dims.tolist()]
    assert all(final[j] <= final[dims].min() for j in others)  # they are the top k
    for curve, d in zip(curves, half.tolist()):
        assert (curve[d:] >= curve[-1] / 2).all()  # stays at or above half from d on
        assert d == 0 or curve[d - 1] < curve[-1] / 2  # and d is the first such depth
    o_dims, o_curves, o_half = O.discriminative_dims(a.numpy(), b.numpy(), k)
    assert dims.tolist() == o_dims.tolist() and half.tolist() == o_half.tolist()
    close(curves, o_curves, atol=0, rtol=0)


# ------------------------------------------------------------- trajectory


def _pca_well_posed(x: np.ndarray) -> bool:
    """Distinct top-3 singular values and a unique largest |coordinate| per component,
    so the 2 components (and their signs) are defined up to rounding."""
    sv = np.linalg.svd(x - x.mean(0), compute_uv=False)
    sv = np.concatenate([sv, np.zeros(3)])
    if sv[1] < 1e-3 * max(sv[0], 1e-12) or sv[0] - sv[1] < 1e-4 * sv[0] or sv[1] - sv[2] < 1e-4 * sv[0]:
        return False
    comps = np.abs(np.linalg.svd(x - x.mean(0))[2][:2])
    top2 = np.sort(comps, axis=1)[:, -2:]
    return bool(np.all(top2[:, 1] - top2[:, 0] > 1e-6))


@settings(deadline=None)
@given(st.integers(2, 4), st.integers(3, 8), st.integers(2, 6), st.data())
def test_pca_steps_match_sklearn(p, n, h, data):
    tokens = data.draw(arrays(np.float64, (p, n, h), elements=FLOATS, fill=st.nothing()))
    assume(all(_pca_well_posed(tokens[d]) for d in range(p)))
    t = torch.from_numpy(tokens)
    for name in ["fixed_pca_step", "refit_pca_step", "teleological_distance"]:
        close(getattr(M, name)(t), getattr(O, name)(tokens), atol=1e-7, rtol=1e-7)
    mean, comps = M.pca_fit(t[0])
    ref = O.fit_pca(tokens[0])
    close(mean, ref.mean_, atol=1e-12, rtol=0)
    close(comps, ref.components_, atol=1e-7, rtol=0)
    assert math.isnan(M.fixed_pca_step(t)[0]) and M.teleological_distance(t)[-1] == 0
