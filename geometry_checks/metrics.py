"""Layer-by-layer geometry metrics, exactly as defined in METRICS.md.

Pure, vectorized torch functions: tensors in, tensors out, on the inputs'
device. No I/O, no models.

Tensor conventions (a fixed contract other modules rely on):

- ``states``: float ``[P, S, T, H]``: ``P = L + 1`` depths (0 = embeddings),
  ``S`` sentences, ``T`` padded token positions, ``H`` hidden size.
- ``attn``: bool ``[S, T]``, the attention mask (``T_s``, specials included).
- ``content``: bool ``[S, T]``, the content-token mask (``C_s``, subset of attn).
- ``pools``: float ``[P, S, H]``; ``tokens``: float ``[P, N, H]`` (all content
  tokens of all sentences, same order at every depth; see ``content_tokens``).
- A curve is a ``[P]`` tensor, NaN where a depth has no value (a step into
  depth 0). Per-sentence metrics come as ``[P, S]`` (NaN for a sentence the
  metric leaves out) plus a set-level mean over the non-NaN sentences, so a
  streaming caller can concatenate the ``[P, S]`` of its batches.

Numerics: padding positions are never read (masked with ``torch.where``, so
NaN/garbage there is harmless). Elementwise work runs in float32 (half/bf16 are
upcast; float64 stays float64); sums and every returned float are float64
(float32 on MPS, which has no float64).

Zero vectors: a vector with norm <= ``EPS`` has unit vector 0, so its cosine
with anything is 0 (and a pair involving it still counts in pair averages).

Eligibility: a sentence with < 2 content tokens is NaN in (left out of)
``intra_sentence_cosine``, ``delta_coherence`` and ``pc1_mean_cosine`` only;
``pair_eligible`` tells the caller which, so it can warn. A sentence with no
content token raises ``ValueError`` in every content-token metric.
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-12
MATRYOSHKA_BANDS = ((0, 64), (64, 128), (128, 256), (256, 512), (512, None))

__all__ = [
    "EPS", "MATRYOSHKA_BANDS", "content_counts", "pair_eligible", "content_tokens",
    "intra_sentence_cosine_per_sentence", "intra_sentence_cosine",
    "cross_sentence_stats", "cross_sentence_cosine_from_stats", "cross_sentence_cosine",
    "sentence_signal", "content_means", "within_scatter", "separability_ratio_from",
    "separability_ratio", "token_norm", "pc1_mean_cosine_per_sentence", "pc1_mean_cosine",
    "delta_coherence_per_sentence", "delta_coherence", "mean_pool", "cls_pool", "last_token_pool",
    "max_pool", "weighted_mean_pool", "summary_token", "pool", "cosine",
    "cls_mean_alignment", "meanpool_drift", "pair_cosine", "band_cosine", "bands_for",
    "token_pair_cosine", "recall_at_k", "maxsim_scores", "maxsim_units",
    "maxsim_scores_of_units", "maxsim_recall_at_k", "write_depth", "write_depth_histogram",
    "late_write_fraction", "dim_correlation",
    "discriminative_dims", "pca_fit", "fixed_pca_step", "refit_pca_step",
    "teleological_distance",
]


# ----------------------------------------------------------------- helpers


def _acc(device: torch.device) -> torch.dtype:
    """Accumulation / result dtype: float64, except on MPS (no float64)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _work(x: Tensor) -> Tensor:
    """Working dtype for big elementwise work: float64 stays, the rest -> float32."""
    return x if x.dtype == torch.float64 else x.float()


def _unit(x: Tensor) -> Tensor:
    """x / |x| along the last axis; 0 where |x| <= EPS."""
    n = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return torch.where(n > EPS, x / n.clamp_min(EPS), torch.zeros((), dtype=x.dtype, device=x.device))


def _mask(mask: Tensor, x: Tensor) -> Tensor:
    return mask.to(device=x.device, dtype=torch.bool)


def _masked_sum(x: Tensor, mask: Tensor) -> Tensor:
    """Sum of x[P, S, T, ...] over the T positions where mask[S, T]; -> [P, S, ...] in acc."""
    m = mask.reshape(mask.shape + (1,) * (x.dim() - 3))
    return torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(2, dtype=_acc(x.device))


def _nan_step(steps: Tensor) -> Tensor:
    """Prepend a NaN for depth 0 to a [P-1, ...] tensor of steps."""
    nan = torch.full((1, *steps.shape[1:]), float("nan"), dtype=steps.dtype, device=steps.device)
    return torch.cat([nan, steps], dim=0)


def _checked_counts(content: Tensor, device: torch.device) -> Tensor:
    n = content_counts(content).to(device)
    empty = torch.nonzero(n == 0).flatten().tolist()
    if empty:
        raise ValueError(f"sentences {empty} have no content token")
    return n


# ----------------------------------------------------------- token cloud


def content_counts(content: Tensor) -> Tensor:
    """|C_s| per sentence: LongTensor [S]."""
    return content.to(torch.bool).sum(1)


def pair_eligible(content: Tensor) -> Tensor:
    """Bool [S]: sentences with >= 2 content tokens (the ones pair metrics keep)."""
    return content_counts(content) >= 2


def content_tokens(states: Tensor, content: Tensor) -> Tensor:
    """All content tokens of all sentences, sentence-major then position: [P, N, H]."""
    _checked_counts(content, states.device)
    return states[:, _mask(content, states)]


def _mean_pair_cosine(x: Tensor, content: Tensor) -> Tensor:
    """Per sentence, mean cos over unordered content pairs i < j: [P, S], NaN if |C_s| < 2.

    sum_{i<j} cos = (|sum u|^2 - sum |u|^2) / 2 with u the unit vectors.
    """
    mask = _mask(content, x)
    n = _checked_counts(mask, x.device).to(_acc(x.device))
    u = _unit(_work(x))
    s = _masked_sum(u, mask)  # [P, S, H]
    self_dots = _masked_sum((u * u).sum(-1), mask)  # [P, S]
    pair_sum = ((s * s).sum(-1) - self_dots) / 2
    out = pair_sum / (n * (n - 1) / 2).clamp_min(1)
    return torch.where(n >= 2, out, torch.full_like(out, float("nan")))


def intra_sentence_cosine_per_sentence(states: Tensor, content: Tensor) -> Tensor:
    """intra_sentence_cosine per sentence: mean cos(h_i, h_j) over pairs i < j in C_s. [P, S].

    >>> states = torch.tensor([[[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [[1.0, 0.0], [5.0, 5.0], [9.0, 9.0]]]])
    >>> content = torch.tensor([[False, True, True], [True, False, False]])  # 2nd: one content token
    >>> intra_sentence_cosine_per_sentence(states, content)
    tensor([[0.7071,    nan]], dtype=torch.float64)
    """
    return _mean_pair_cosine(states, content)


def intra_sentence_cosine(states: Tensor, content: Tensor) -> Tensor:
    """intra_sentence_cosine: mean over eligible sentences (|C_s| >= 2). [P]."""
    return torch.nanmean(intra_sentence_cosine_per_sentence(states, content), dim=1)


def cross_sentence_stats(states: Tensor, content: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Streamable sufficient statistics of cross_sentence_cosine.

    Returns (sum of all content unit vectors [P, H], sum over sentences of
    |sum of the sentence's unit vectors|^2 [P], |C_s| [S]). Over batches: add
    the first two, concatenate the third.
    """
    mask = _mask(content, states)
    n = _checked_counts(mask, states.device)
    per_sentence = _masked_sum(_unit(_work(states)), mask)  # [P, S, H]
    return per_sentence.sum(1), (per_sentence * per_sentence).sum((1, 2)), n


def cross_sentence_cosine_from_stats(total_unit_sum: Tensor, sentence_sq_sum: Tensor,
                                     n_per_sentence: Tensor) -> Tensor:
    """cross_sentence_cosine from its statistics:
    (|sum_all u|^2 - sum_s |sum_{i in s} u|^2) / (N^2 - sum_s n_s^2). NaN if < 2 sentences."""
    n = n_per_sentence.to(device=total_unit_sum.device, dtype=total_unit_sum.dtype)
    pairs = n.sum() ** 2 - (n * n).sum()  # ordered pairs (i in s, j in t), s != t
    num = (total_unit_sum * total_unit_sum).sum(-1) - sentence_sq_sum
    return torch.where(pairs > 0, num / pairs.clamp_min(1), torch.full_like(num, float("nan")))


def cross_sentence_cosine(states: Tensor, content: Tensor) -> Tensor:
    """cross_sentence_cosine: mean cos over all content pairs of different sentences. [P]."""
    return cross_sentence_cosine_from_stats(*cross_sentence_stats(states, content))


def sentence_signal(intra: Tensor, cross: Tensor) -> Tensor:
    """sentence_signal = intra_sentence_cosine - cross_sentence_cosine. [P]."""
    return intra - cross


def content_means(states: Tensor, content: Tensor) -> Tensor:
    """m_s: mean of h_i over C_s. [P, S, H]."""
    mask = _mask(content, states)
    n = _checked_counts(mask, states.device)
    return _masked_sum(_work(states), mask) / n.to(_acc(states.device))[:, None]


def within_scatter(states: Tensor, content: Tensor) -> Tensor:
    """w_s: mean over i in C_s of |h_i - m_s| (0 for a single-token sentence). [P, S]."""
    mask = _mask(content, states)
    x = _work(states)
    m = content_means(states, mask)
    dist = torch.linalg.vector_norm(x - m.to(x.dtype)[:, :, None, :], dim=-1)  # [P, S, T]
    return _masked_sum(dist, mask) / content_counts(mask).to(m.dtype)


def separability_ratio_from(m: Tensor, w: Tensor) -> Tensor:
    """B / W with B = mean_s |m_s - mean_s m_s| and W = mean_s w_s. [P] (inf/NaN if W = 0)."""
    b = torch.linalg.vector_norm(m - m.mean(1, keepdim=True), dim=-1).mean(1)
    return b / w.mean(1)


def separability_ratio(states: Tensor, content: Tensor) -> Tensor:
    """separability_ratio: B / W over all sentences (single-token ones included). [P]."""
    return separability_ratio_from(content_means(states, content), within_scatter(states, content))


def token_norm(states: Tensor, content: Tensor) -> Tensor:
    """token_norm: mean of |h_i| over all content tokens, each token weighted equally. [P]."""
    mask = _mask(content, states)
    n = _checked_counts(mask, states.device)
    norms = torch.linalg.vector_norm(_work(states), dim=-1)
    return _masked_sum(norms, mask).sum(1) / n.sum()


def pc1_mean_cosine_per_sentence(states: Tensor, content: Tensor) -> Tensor:
    """pc1_mean_cosine per sentence: |cos(u_s, m_s)|, u_s the first principal direction
    (first right singular vector) of the centred content tokens of s. [P, S].

    NaN if |C_s| < 2, or if the tokens have no scatter direction (all identical:
    top singular value <= 1000 eps times the largest token norm).
    """
    mask = _mask(content, states)
    n = _checked_counts(mask, states.device)
    acc = _acc(states.device)
    x = states.to(acc)
    m = content_means(x, mask)
    zero = torch.zeros((), dtype=acc, device=x.device)
    centred = torch.where(mask[..., None], x - m[:, :, None, :], zero)  # rows masked AFTER centring
    _, sv, vh = torch.linalg.svd(centred, full_matrices=False)
    out = cosine(vh[..., 0, :], m).abs()
    scale = torch.where(mask, torch.linalg.vector_norm(x, dim=-1), zero).amax(-1)
    bad = (n < 2) | (sv[..., 0] <= 1e3 * torch.finfo(acc).eps * scale)
    return torch.where(bad, torch.full_like(out, float("nan")), out)


def pc1_mean_cosine(states: Tensor, content: Tensor) -> Tensor:
    """pc1_mean_cosine: mean over eligible sentences of |cos(u_s, m_s)|. [P]."""
    return torch.nanmean(pc1_mean_cosine_per_sentence(states, content), dim=1)


def delta_coherence_per_sentence(states: Tensor, content: Tensor) -> Tensor:
    """delta_coherence per sentence: mean over pairs i < j in C_s of
    cos(h_i^d - h_i^(d-1), h_j^d - h_j^(d-1)). [P, S], NaN at depth 0."""
    x = _work(states)
    return _nan_step(_mean_pair_cosine(x[1:] - x[:-1], content))


def delta_coherence(states: Tensor, content: Tensor) -> Tensor:
    """delta_coherence: mean over eligible sentences. [P], NaN at depth 0."""
    return torch.nanmean(delta_coherence_per_sentence(states, content), dim=1)


# ----------------------------------------------------------------- pooled


def mean_pool(states: Tensor, attn: Tensor) -> Tensor:
    """pool(s, d): mean of h_i over T_s (specials included). [P, S, H]."""
    mask = _mask(attn, states)
    n = mask.sum(1)
    if (n == 0).any():
        raise ValueError(f"sentences {torch.nonzero(n == 0).flatten().tolist()} have an empty attention mask")
    return _masked_sum(_work(states), mask) / n.to(_acc(states.device))[:, None]


def cls_pool(states: Tensor) -> Tensor:
    """h_CLS: the state at position 0. [P, S, H]."""
    return states[:, :, 0].to(_acc(states.device))


def last_token_pool(states: Tensor, attn: Tensor) -> Tensor:
    """The state at the last position of T_s (the last non-pad token, whichever side pads). [P, S, H]."""
    mask = _mask(attn, states)
    pos = torch.arange(mask.shape[1], device=mask.device)
    last = torch.where(mask, pos, -1).amax(1)  # [S]
    if (last < 0).any():
        raise ValueError(f"sentences {torch.nonzero(last < 0).flatten().tolist()} have an empty attention mask")
    return states[:, torch.arange(mask.shape[0], device=mask.device), last].to(_acc(states.device))


def max_pool(states: Tensor, attn: Tensor) -> Tensor:
    """Per dimension, the largest h_i[k] over T_s (sentence-transformers' max pooling). [P, S, H]."""
    mask = _mask(attn, states)[None, :, :, None]
    return torch.where(mask, _work(states), float("-inf")).amax(2).to(_acc(states.device))


def weighted_mean_pool(states: Tensor, attn: Tensor) -> Tensor:
    """sum_i i h_i / sum_i i over T_s, i = the 1-based rank of position i among T_s
    (sentence-transformers' weightedmean: positions 1..n of a right-padded text). [P, S, H]."""
    mask = _mask(attn, states)
    weights = torch.cumsum(mask.long(), 1).to(_acc(states.device)) * mask  # [S, T]
    total = (_work(states).to(_acc(states.device)) * weights[None, :, :, None]).sum(2)
    return total / weights.sum(1)[None, :, None]


def summary_token(states: Tensor, attn: Tensor, summary: str = "first") -> Tensor:
    """The state of the model's summary token: position 0 (`first`, an encoder's CLS) or the
    last non-pad position (`last`, a causal model, whose first position sees only itself). [P, S, H]."""
    if summary == "first":
        return cls_pool(states)
    if summary == "last":
        return last_token_pool(states, attn)
    raise ValueError(f"summary must be first or last, not {summary!r}")


def pool(states: Tensor, attn: Tensor, pooling: str, summary: str = "first") -> Tensor:
    """The sentence pool of one of registry.POOLINGS; `cls` is the model's summary token. [P, S, H]."""
    if pooling == "mean":
        return mean_pool(states, attn)
    if pooling == "cls":
        return summary_token(states, attn, summary)
    if pooling == "lasttoken":
        return last_token_pool(states, attn)
    if pooling == "max":
        return max_pool(states, attn)
    if pooling == "weightedmean":
        return weighted_mean_pool(states, attn)
    raise ValueError(f"unknown pooling {pooling!r}")


def cosine(a: Tensor, b: Tensor, dim: int = -1) -> Tensor:
    """cos(a, b) = a.b / (|a| |b|) along dim (0 if either norm <= EPS), clamped to [-1, 1].

    >>> cosine(torch.tensor([[3.0, 4.0], [1.0, 0.0]]), torch.tensor([[6.0, 8.0], [0.0, 0.0]])).tolist()
    [1.0, 0.0]
    """
    acc = _acc(a.device)
    a, b = a.to(acc).movedim(dim, -1), b.to(acc).movedim(dim, -1)
    return (_unit(a) * _unit(b)).sum(-1).clamp(-1.0, 1.0)


def cls_mean_alignment(states: Tensor, attn: Tensor, summary: str = "first") -> Tensor:
    """cls_mean_alignment: mean over sentences of cos(h_CLS, pool(s, d)). [P].
    h_CLS is the model's summary token (summary_token): the first position of an encoder,
    the last non-pad one of a causal model."""
    return cosine(summary_token(states, attn, summary), mean_pool(states, attn)).mean(1)


def meanpool_drift(pools: Tensor) -> Tensor:
    """meanpool_drift: cos(pool(s, 0), pool(s, d)) per sentence. [P, S]."""
    return cosine(pools[:1], pools)


def pair_cosine(pool_a: Tensor, pool_b: Tensor) -> Tensor:
    """pair_cosine: cos(pool(a, d), pool(b, d)); pool_a, pool_b [P, H] -> [P]."""
    return cosine(pool_a, pool_b)


def bands_for(h: int) -> list[tuple[int, int]]:
    """MATRYOSHKA_BANDS for hidden size h: hi None -> h, hi clamped to h, bands with lo >= h dropped.

    >>> bands_for(384)
    [(0, 64), (64, 128), (128, 256), (256, 384)]
    """
    return [(lo, h if hi is None else min(hi, h)) for lo, hi in MATRYOSHKA_BANDS if lo < h]


def band_cosine(pool_a: Tensor, pool_b: Tensor, lo: int, hi: int | None) -> Tensor:
    """band_cosine: the pair cosine on dimensions lo <= k < hi only (hi None: D). [P]."""
    hi = pool_a.shape[-1] if hi is None else hi
    if not 0 <= lo < hi:
        raise ValueError(f"empty band {lo}:{hi}")
    return cosine(pool_a[..., lo:hi], pool_b[..., lo:hi])


def token_pair_cosine(vec_a: Tensor, vec_b: Tensor) -> Tensor:
    """token_pair_cosine: cos of two token states; vec_a, vec_b [P, H] -> [P]."""
    return cosine(vec_a, vec_b)


def _recall_from_scores(scores: Tensor, positive_idx: Tensor, query_idx_in_pool: Tensor, k: int) -> Tensor:
    """Hit@k per depth, averaged over queries, from scores [P, Q, N].

    The query's own pool entry is never ranked. Ties keep pool order (a stable
    descending sort): the positive's rank is the number of other candidates
    scoring higher, plus those scoring equal that come before it in the pool.
    """
    p_, q_, n_ = scores.shape
    pos = positive_idx.to(device=scores.device, dtype=torch.long)
    qi = query_idx_in_pool.to(device=scores.device, dtype=torch.long)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if pos.shape != (q_,) or qi.shape != (q_,):
        raise ValueError("positive_idx and query_idx_in_pool must be [Q]")
    if ((pos < 0) | (pos >= n_)).any() or ((qi < -1) | (qi >= n_)).any() or (pos == qi).any():
        raise ValueError("bad positive_idx / query_idx_in_pool")
    j = torch.arange(n_, device=scores.device)
    pos_score = scores.gather(2, pos.view(1, q_, 1).expand(p_, q_, 1))
    ahead = (scores > pos_score) | ((scores == pos_score) & (j < pos[:, None]))
    ahead &= j != qi[:, None]
    # hits counted as integers, then one correctly rounded division: the same value on
    # every device (a float mean's reduction order gave 0.7000000000000001 on CUDA)
    hits = (ahead.sum(-1) < k).sum(1)
    return hits.to(_acc(scores.device)) / q_


def recall_at_k(query_vecs: Tensor, pool_vecs: Tensor, positive_idx: Tensor,
                query_idx_in_pool: Tensor, k: int) -> Tensor:
    """recall_at_k: rank every pool text except the query by cos(query, text); hit if the
    positive is in the top k (ties: pool order). Mean over queries. [P].

    query_vecs [P, Q, H], pool_vecs [P, N, H], positive_idx [Q] (pool index),
    query_idx_in_pool [Q] (-1 if the query text is not in the pool).

    Texts 0 and 1 tie with the query (text 2); the positive, text 1, comes second:

    >>> pool = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [1.0, 0.0]]])
    >>> [recall_at_k(pool[:, 2:], pool, torch.tensor([1]), torch.tensor([2]), k).item() for k in (1, 2)]
    [0.0, 1.0]
    """
    acc = _acc(query_vecs.device)
    scores = (_unit(query_vecs.to(acc)) @ _unit(pool_vecs.to(acc)).transpose(1, 2)).clamp(-1.0, 1.0)
    return _recall_from_scores(scores, positive_idx, query_idx_in_pool, k)


def maxsim_scores(q_tokens: Tensor, q_mask: Tensor, d_tokens: Tensor, d_mask: Tensor) -> Tensor:
    """ColBERT late interaction: sum over query content tokens i of max over a text's content
    tokens j of cos(h_i, h_j). q_tokens [P, Tq, H], q_mask [Tq], d_tokens [P, N, Td, H],
    d_mask [N, Td] -> [P, N]."""
    return maxsim_scores_of_units(maxsim_units(q_tokens), q_mask, maxsim_units(d_tokens), d_mask)


def maxsim_units(tokens: Tensor) -> Tensor:
    """The token unit vectors maxsim_scores compares (float32 work, 0 for a zero vector)."""
    return _unit(_work(tokens))


def maxsim_scores_of_units(q_units: Tensor, q_mask: Tensor, d_units: Tensor, d_mask: Tensor) -> Tensor:
    """maxsim_scores from the tokens' maxsim_units, so that a caller scoring many queries
    against the same texts normalises the texts once."""
    qm, dm = _mask(q_mask, q_units), _mask(d_mask, q_units)
    if not qm.any() or not dm.any(1).all():
        raise ValueError("query or text without content tokens")
    sim = torch.einsum("pqh,pnth->pnqt", q_units, d_units)
    best = sim.masked_fill(~dm[None, :, None, :], float("-inf")).amax(-1)  # [P, N, Tq]
    return torch.where(qm, best, torch.zeros((), dtype=best.dtype, device=best.device)).sum(
        -1, dtype=_acc(best.device))


def maxsim_recall_at_k(scores: Tensor, positive_idx: Tensor, query_idx_in_pool: Tensor, k: int) -> Tensor:
    """maxsim_recall_at_k: recall_at_k's ranking on precomputed scores [P, Q, N] -> [P]."""
    return _recall_from_scores(scores, positive_idx, query_idx_in_pool, k)


# ---------------------------------------------------------- per dimension


def _steps_per_dim(pools: Tensor) -> Tensor:
    if pools.shape[0] < 2:
        raise ValueError("per-dimension write metrics need L >= 1 (P >= 2 depths)")
    p = pools.to(_acc(pools.device))
    return (p[1:] - p[:-1]).abs().mean(1)  # [L, H]


def write_depth(pools: Tensor) -> Tensor:
    """write_depth[k]: the depth d in 1..L maximising mean_s |pool(s,d)[k] - pool(s,d-1)[k]|
    (first such depth on ties). LongTensor [H]."""
    return _steps_per_dim(pools).argmax(0) + 1


def write_depth_histogram(pools: Tensor) -> Tensor:
    """Number of dimensions per write depth. LongTensor [P] (index 0 always 0)."""
    return torch.bincount(write_depth(pools), minlength=pools.shape[0])


def late_write_fraction(pools: Tensor) -> Tensor:
    """late_write_fraction: fraction of dimensions whose write_depth is L - 1 or L. Scalar."""
    last = pools.shape[0] - 1
    return (write_depth(pools) >= last - 1).to(_acc(pools.device)).mean()


def dim_correlation(pools: Tensor) -> Tensor:
    """dim_correlation[k]: Pearson r across sentences of pool(s,0)[k] and pool(s,L)[k].
    [H]; NaN where either is constant across sentences (or S < 2)."""
    p = pools.to(_acc(pools.device))
    x, y = p[0], p[-1]
    xc, yc = x - x.mean(0), y - y.mean(0)
    r = (xc * yc).sum(0) / torch.sqrt((xc * xc).sum(0) * (yc * yc).sum(0))
    constant = (x.amax(0) == x.amin(0)) | (y.amax(0) == y.amin(0))
    return torch.where(constant, torch.full_like(r, float("nan")), r.clamp(-1.0, 1.0))


def discriminative_dims(pool_a: Tensor, pool_b: Tensor, k: int = 5) -> tuple[Tensor, Tensor, Tensor]:
    """discriminative_dims: top k dimensions by |a_L[k] - b_L[k]| (descending; lower index
    first on ties), each one's curve |a_d[k] - b_d[k]| over depths, and its half-rise depth:
    the first depth from which the curve stays >= half its value at L.
    pool_a, pool_b [P, H] -> (dims LongTensor[k], curves [k, P], half_rise LongTensor[k])."""
    if not 1 <= k <= pool_a.shape[-1]:
        raise ValueError(f"k={k} out of range for H={pool_a.shape[-1]}")
    acc = _acc(pool_a.device)
    diff = (pool_a.to(acc) - pool_b.to(acc)).abs()  # [P, H]
    dims = torch.sort(diff[-1], descending=True, stable=True).indices[:k]
    curves = diff[:, dims].T  # [k, P]
    ok = curves >= curves[:, -1:] / 2
    trailing = ok.flip(1).long().cumprod(1).sum(1)  # length of the run of True ending at L
    return dims, curves, curves.shape[1] - trailing


# ------------------------------------------------------------- trajectory


def pca_fit(x: Tensor, n_components: int = 2) -> tuple[Tensor, Tensor]:
    """PCA of x [..., N, H] (centred, via SVD): (mean [..., H], components [..., n, H]).

    Sign convention of scikit-learn (svd_flip, u_based_decision=False): each
    component's largest-|value| coordinate (first on ties) is positive.
    """
    n, h = x.shape[-2:]
    if not 1 <= n_components <= min(n, h):
        raise ValueError(f"n_components={n_components} needs N, H >= it (N={n}, H={h})")
    x = x.to(_acc(x.device))
    mean = x.mean(-2)
    _, _, vh = torch.linalg.svd(x - mean[..., None, :], full_matrices=False)
    comps = vh[..., :n_components, :]
    signs = torch.sign(comps.gather(-1, comps.abs().argmax(-1, keepdim=True)))
    return mean, comps * signs


def _project(x: Tensor, mean: Tensor, comps: Tensor) -> Tensor:
    return (x - mean[..., None, :]) @ comps.transpose(-1, -2)


def fixed_pca_step(tokens: Tensor) -> Tensor:
    """fixed_pca_step: PCA (2 comps) fitted on depth 0 projects every depth (same axes, same
    centre); mean over tokens of |proj_d - proj_(d-1)|. [P], NaN at 0."""
    x = tokens.to(_acc(tokens.device))
    proj = _project(x, *pca_fit(x[0]))
    return _nan_step(torch.linalg.vector_norm(proj[1:] - proj[:-1], dim=-1).mean(1))


def refit_pca_step(tokens: Tensor) -> Tensor:
    """refit_pca_step: as fixed_pca_step, but depth d is projected with the PCA fitted on
    depth d's own tokens. [P], NaN at 0."""
    x = tokens.to(_acc(tokens.device))
    proj = _project(x, *pca_fit(x))  # batched over depths
    return _nan_step(torch.linalg.vector_norm(proj[1:] - proj[:-1], dim=-1).mean(1))


def teleological_distance(tokens: Tensor) -> Tensor:
    """teleological_distance: PCA fitted on depth L; mean over tokens of |proj_d - proj_L|.
    [P], 0 at L."""
    x = tokens.to(_acc(tokens.device))
    proj = _project(x, *pca_fit(x[-1]))
    return torch.linalg.vector_norm(proj - proj[-1:], dim=-1).mean(1)


# ------------------------------------------------- token classes (open question)
#
# Pair cosines restricted to classes of tokens (e.g. content words vs function words),
# and the mean pair cosine between the pooled sentences of a set. Masks are bool [S, T]
# subsets of the content mask; unlike the metrics above, a sentence with too few tokens
# in a class is not an error, only NaN (left out) for that class.

__all__ += [
    "class_pair_cosine_per_sentence", "class_pair_shares", "class_pair_sums",
    "cross_class_cosine", "intra_class_cosine", "pair_cosine_all", "peak_depth",
]


def class_pair_sums(states: Tensor, mask_a: Tensor, mask_b: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per sentence, the sum of cos(h_i, h_j) and the number of pairs: over unordered pairs
    i < j within `mask_a` (mask_b None), or over all (i in mask_a, j in mask_b) (the masks
    must be disjoint). Returns (sums [P, S] in acc, pair counts LongTensor [S]); 0 pairs, sum 0.

    >>> x = torch.tensor([[[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]]])
    >>> a, b = torch.tensor([[True, True, False]]), torch.tensor([[False, False, True]])
    >>> [(s.tolist(), n.tolist()) for s, n in (class_pair_sums(x, a), class_pair_sums(x, a, b))]
    [([[0.0]], [1]), ([[1.4142135381698608]], [2])]
    """
    ma = _mask(mask_a, states)
    u = _unit(_work(states))
    sa = _masked_sum(u, ma)  # [P, S, H]
    na = ma.sum(1)
    if mask_b is None:
        self_dots = _masked_sum((u * u).sum(-1), ma)
        return ((sa * sa).sum(-1) - self_dots) / 2, na * (na - 1) // 2
    mb = _mask(mask_b, states)
    if (ma & mb).any():
        raise ValueError("class_pair_sums: the two masks overlap")
    return (sa * _masked_sum(u, mb)).sum(-1), na * mb.sum(1)


def class_pair_cosine_per_sentence(states: Tensor, mask_a: Tensor, mask_b: Tensor | None = None) -> Tensor:
    """Per sentence, the mean cos over the pairs of `class_pair_sums`. [P, S], NaN where a
    sentence has no such pair (< 2 tokens in mask_a; or none in mask_a or in mask_b)."""
    sums, n = class_pair_sums(states, mask_a, mask_b)
    n = n.to(sums)
    return torch.where(n > 0, sums / n.clamp_min(1), torch.full_like(sums, float("nan")))


def intra_class_cosine(states: Tensor, mask: Tensor) -> tuple[Tensor, int]:
    """intra_sentence_cosine restricted to a token class: mean over sentences with >= 2
    tokens in `mask` of the mean cos over their pairs i < j in the class. Returns
    ([P], the number of pairs behind it, summed over sentences)."""
    per = class_pair_cosine_per_sentence(states, mask)
    return torch.nanmean(per, dim=1), int(class_pair_sums(states[:1], mask)[1].sum())


def cross_class_cosine(states: Tensor, mask_a: Tensor, mask_b: Tensor) -> tuple[Tensor, int]:
    """Mean over sentences with tokens in both classes of the mean cos over pairs
    (i in mask_a, j in mask_b). Returns ([P], the number of pairs, summed over sentences)."""
    per = class_pair_cosine_per_sentence(states, mask_a, mask_b)
    return torch.nanmean(per, dim=1), int(class_pair_sums(states[:1], mask_a, mask_b)[1].sum())


def class_pair_shares(states: Tensor, content: Tensor, mask_a: Tensor, mask_b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Split intra_sentence_cosine exactly by pair class, for disjoint masks a, b covering
    `content`: per sentence with >= 2 content tokens, (sum of cos over its a-a, b-b and
    a-b pairs) / (all its pairs), averaged over those sentences. Returns the three [P]
    shares (a, b, a-b); they add up to intra_sentence_cosine."""
    c, ma, mb = _mask(content, states), _mask(mask_a, states), _mask(mask_b, states)
    if ((ma | mb) != c).any() or (ma & mb).any():
        raise ValueError("class_pair_shares: the masks must split the content mask")
    n = c.sum(1)
    total = (n * (n - 1) // 2).to(_acc(states.device))
    keep = n >= 2
    out = []
    for sums, _ in (class_pair_sums(states, ma), class_pair_sums(states, mb), class_pair_sums(states, ma, mb)):
        out.append((sums[:, keep] / total[keep]).mean(1))
    return tuple(out)


def pair_cosine_all(pools: Tensor) -> Tensor:
    """pair_cosine_all: mean over unordered pairs of distinct sentences s != t of
    cos(pool(s, d), pool(t, d)). pools [P, S, H] -> [P]; NaN if S < 2.

    >>> round(pair_cosine_all(torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])).item(), 6)  # (0 + .7071 + .7071) / 3
    0.471405
    """
    s_ = pools.shape[1]
    u = _unit(pools.to(_acc(pools.device)))
    total = u.sum(1)
    pair_sum = ((total * total).sum(-1) - (u * u).sum((1, 2))) / 2
    if s_ < 2:
        return torch.full_like(pair_sum, float("nan"))
    return pair_sum / (s_ * (s_ - 1) / 2)


def peak_depth(curve: Tensor) -> int:
    """The depth at which a [P] curve is largest (NaN ignored; the first on ties); -1 if all NaN."""
    c = curve.detach().to("cpu", torch.float64)
    if torch.isnan(c).all():
        return -1
    return int(torch.where(torch.isnan(c), torch.full_like(c, float("-inf")), c).argmax())


# ------------------------------------------------------- massive activations (issue 23)
#
# How much of the token norm, and of the within-sentence cosine, a few dimensions and the
# first position carry (Sun et al. 2024, "Massive Activations in Large Language Models";
# Timkey & van Schijndel 2021, "All Bark and No Bite: Rogue Dimensions"). The dimension
# metrics read the content tokens C_s, as every token-cloud metric; the first-position
# metrics compare position 0, whatever its token (an encoder's [CLS], Gemma's <bos>,
# SmolLM2's first word), with the content tokens other than position 0. docs/metrics.md
# gives the definitions and how to read them.

__all__ += [
    "MASSIVE_DIMS", "MASSIVE_MIN_COSINE", "cosine_dim_contributions", "cosine_dim_contributions_per_sentence",
    "dim_energy_per_sentence", "first_position_metrics", "first_position_per_sentence",
    "masked_median", "massive_dims_cosine_share", "massive_dims_norm_share", "top_share",
]

MASSIVE_DIMS = 3  # K: both papers find one to a few such dimensions; a uniform share is K / H
MASSIVE_MIN_COSINE = 0.01  # the cosine share is undefined (NaN) where the cosine it splits is at most this


def top_share(contrib: Tensor, k: int = MASSIVE_DIMS, min_total: float | Tensor = 0.0,
              dims: bool = True) -> tuple[Tensor, Tensor | None]:
    """The share of the k largest entries in the total, along the last axis: contrib [..., H]
    -> (share [...], their indices LongTensor [..., k], largest first, the lower index first
    on ties). The share is NaN where the total is NaN or at most `min_total` (a number, or a
    tensor broadcasting to the total's shape). dims=False: indices None, and no full sort
    (the bootstrap's [R, P, H] replicates: the sum of the k largest values does not depend
    on how ties are ordered).

    >>> share, dims = top_share(torch.tensor([[1.0, 6.0, 1.0, 2.0], [1.0, 1.0, 1.0, 1.0]]), k=2)
    >>> share.tolist(), dims.tolist()
    ([0.8, 0.5], [[1, 3], [0, 1]])
    """
    if not 1 <= k <= contrib.shape[-1]:
        raise ValueError(f"k={k} out of range for H={contrib.shape[-1]}")
    c = contrib.to(_acc(contrib.device))
    total = c.sum(-1)
    if dims:
        idx = torch.sort(c, dim=-1, descending=True, stable=True).indices[..., :k]
        top = c.gather(-1, idx).sum(-1)
    else:
        idx, top = None, torch.topk(c, k, dim=-1, sorted=False).values.sum(-1)
    share = top / total
    ok = torch.isfinite(total) & (total > min_total)
    return torch.where(ok, share, torch.full_like(share, float("nan"))), idx


def dim_energy_per_sentence(states: Tensor, content: Tensor) -> Tensor:
    """Per sentence and dimension, the sum over its content tokens of h_i[k]^2. [P, S, H]."""
    mask = _mask(content, states)
    _checked_counts(mask, states.device)
    x = _work(states)
    return _masked_sum(x * x, mask)


def massive_dims_norm_share(states: Tensor, content: Tensor, k: int = MASSIVE_DIMS) -> tuple[Tensor, Tensor]:
    """massive_dims_norm_share: the k dimensions with the largest sum over all content tokens
    of h_i[k]^2, and their share of the sum of |h_i|^2 (a ratio of sums over the set; at
    least k / H). Returns (share [P], dims LongTensor [P, k]); NaN where every state is 0.

    >>> x = torch.tensor([[[[3.0, 0.0, 1.0], [3.0, 1.0, 0.0]]]])  # one sentence, two tokens
    >>> share, dims = massive_dims_norm_share(x, torch.tensor([[True, True]]), k=1)
    >>> round(share.item(), 4), dims.tolist()
    (0.9, [[0]])
    """
    return top_share(dim_energy_per_sentence(states, content).sum(1), k)


def cosine_dim_contributions_per_sentence(states: Tensor, content: Tensor) -> Tensor:
    """Per sentence, each dimension's term of its mean pair cosine (Timkey & van Schijndel):
    c_s[k] = mean over ordered pairs i != j in C_s of u_i[k] u_j[k] = (U[k]^2 - Q[k]) /
    (n (n - 1)), u the unit vectors, U[k] = sum u_i[k], Q[k] = sum u_i[k]^2. Summed over k
    it is intra_sentence_cosine_per_sentence. [P, S, H], NaN for a sentence with < 2 content
    tokens (left out, as there)."""
    mask = _mask(content, states)
    n = _checked_counts(mask, states.device).to(_acc(states.device))
    u = _unit(_work(states))
    big_u = _masked_sum(u, mask)
    q = _masked_sum(u * u, mask)
    out = (big_u * big_u - q) / (n * (n - 1)).clamp_min(1)[:, None]
    return torch.where((n >= 2)[:, None], out, torch.full_like(out, float("nan")))


def cosine_dim_contributions(states: Tensor, content: Tensor) -> Tensor:
    """Each dimension's term of intra_sentence_cosine: the mean over the eligible sentences of
    c_s[k]; summed over k it is intra_sentence_cosine. [P, H]."""
    return torch.nanmean(cosine_dim_contributions_per_sentence(states, content), dim=1)


def massive_dims_cosine_share(states: Tensor, content: Tensor, k: int = MASSIVE_DIMS) -> tuple[Tensor, Tensor]:
    """massive_dims_cosine_share: the k dimensions with the largest term of
    intra_sentence_cosine (cosine_dim_contributions) and their share of it. Returns (share
    [P], dims LongTensor [P, k]). NaN where intra_sentence_cosine is at most
    MASSIVE_MIN_COSINE (a share of a cosine near 0 or below is no statement about the
    cosine) or undefined. Where other dimensions' terms are negative it can exceed 1 (the k
    dimensions carry more than the whole cosine); it is never below k / H.

    >>> x = torch.tensor([[[[5.0, 1.0, 0.0], [5.0, 0.0, 1.0]]]])
    >>> share, dims = massive_dims_cosine_share(x, torch.tensor([[True, True]]), k=1)
    >>> round(share.item(), 6), dims.tolist()
    (1.0, [[0]])
    """
    return top_share(cosine_dim_contributions(states, content), k, MASSIVE_MIN_COSINE)


def masked_median(values: Tensor, mask: Tensor) -> Tensor:
    """The median of values[..., T] over the positions where mask [..., T] (broadcast), as
    numpy's median: the mean of the two middle values for an even count; NaN where none.
    By a sort (torch.nanquantile is not on every device).

    >>> masked_median(torch.tensor([[4.0, 1.0, 3.0, 2.0], [5.0, 9.0, 9.0, 9.0]]),
    ...               torch.tensor([[True, True, True, True], [True, False, False, False]])).tolist()
    [2.5, 5.0]
    """
    m = mask.expand_as(values)
    ordered = torch.where(m, values, torch.full_like(values, float("inf"))).sort(-1).values
    count = m.sum(-1, keepdim=True)
    lo = ordered.gather(-1, ((count - 1) // 2).clamp_min(0)).squeeze(-1)
    hi = ordered.gather(-1, (count // 2).clamp_max(values.shape[-1] - 1)).squeeze(-1)
    return torch.where(count.squeeze(-1) > 0, (lo + hi) / 2, torch.full_like(lo, float("nan")))


def first_position_per_sentence(states: Tensor, content: Tensor) -> dict[str, Tensor]:
    """The first position against the sentence's other measured tokens, per sentence. Position
    0 is the sequence's first position whatever its token; `others` are the content tokens
    other than position 0. Returns [P, S] each, NaN for a sentence without such a token:

    - `norm_share`: |h_0|^2 / (|h_0|^2 + sum over others of |h_i|^2) (NaN if that is 0);
    - `norm_ratio`: |h_0| / the median |h_i| over the others (the mean of the two middle
      values for an even count, as numpy's median; NaN where the median is <= EPS);
    - `cosine`: the mean over the others of cos(h_0, h_i).

    >>> x = torch.tensor([[[[4.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 3.0]]]])
    >>> out = first_position_per_sentence(x, torch.tensor([[False, True, True, True]]))
    >>> [round(out[k].item(), 4) for k in ("norm_share", "norm_ratio", "cosine")]
    [0.5714, 2.8284, 0.2357]
    """
    mask = _mask(content, states)
    _checked_counts(mask, states.device)
    acc = _acc(states.device)
    others = mask.clone()
    others[:, 0] = False
    n_others = others.sum(1).to(acc)
    x = _work(states)
    norms = torch.linalg.vector_norm(x, dim=-1)  # [P, S, T]
    n0 = norms[:, :, 0].to(acc)
    nan = torch.full_like(n0, float("nan"))
    rest = _masked_sum(norms * norms, others)  # [P, S]
    denom = n0 * n0 + rest
    share = torch.where((n_others > 0) & (denom > 0), n0 * n0 / denom.clamp_min(torch.finfo(acc).tiny), nan)
    median = masked_median(norms.to(acc), others)
    ratio = torch.where(median > EPS, n0 / median.clamp_min(EPS), nan)  # NaN median (no others): NaN
    u = _unit(x)
    cos_sum = (u[:, :, 0].to(acc) * _masked_sum(u, others)).sum(-1)
    cos = torch.where(n_others > 0, cos_sum / n_others.clamp_min(1), nan)
    return {"norm_share": share, "norm_ratio": ratio, "cosine": cos}


def first_position_metrics(states: Tensor, content: Tensor) -> dict[str, Tensor]:
    """first_position_norm_share, first_position_norm_ratio and first_position_cosine: the
    means over sentences (those with a content token besides position 0) of
    first_position_per_sentence. {name: [P]}."""
    per = first_position_per_sentence(states, content)
    return {f"first_position_{k}": torch.nanmean(v, dim=1) for k, v in per.items()}
