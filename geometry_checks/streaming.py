"""Measuring in bounded memory: every METRICS.md metric from length-sorted batches.

`measure_streaming(loaded, sentences, ...)` gives the same `Measurement` as
`measure(capture(loaded, sentences), sentences, ...)` (same layout, numbers equal to
1e-5; tests/test_streaming.py holds it to that), but never holds the hidden states of
the whole set. It consumes `capture.iter_batches` one batch at a time and keeps only:

- per sentence and depth: the content mean `m_s`, float32 ``[P, S, H]`` (separability
  needs every one), and the scalars ``[P, S]``: intra-sentence, PC1 and delta-coherence
  cosines, the within scatter `w_s`, `cos(h_CLS, pool)` and the mean-pool drift;
- running sums: the cross-sentence unit-vector sums (`metrics.cross_sentence_stats`),
  the token-norm sum, and per pooling the sums behind the per-dimension metrics
  (`_DimStats`: write_depth, dim_correlation), so no pool is kept;
- the full token states of the few texts that pairs, retrieval and token pairs need;
- a token sample for the PCA trajectory metrics: every content token while the set
  has at most `max_pca_tokens` (default 20,000) of them, above that the same seeded
  sample as `measure(..., max_pca_tokens=N)` takes (seed 0: `torch.randperm` of all
  content tokens in sentence order, first N kept);
- with `sublayers=True` (the open question, issue 13): the same reductions of each
  block's post-attention state `mid` (its content means ``[P - 1, S, H]`` for
  separability@attn, its pair sums), the per-sentence word-class pair sums ``[P, S, 3]``
  (function words from `openquestion.word_class_masks`) and the sums of the mean pools'
  unit vectors (`pair_cosine_all`);
- for the massive activations (issue 23): the per-dimension sums of h_i[k]^2 and of the
  sentences' cosine terms ``[P, H]``, and the first position's three values ``[P, S]``
  (`_massive`: one more batched product per batch, of the squared states);
- for the bootstrap intervals (issue 24, `intervals.py`): the per-sentence token-norm
  sums and |unit-vector sum|^2 ``[P, S]`` (and the pools' |unit|^2 with sublayers), and,
  through one `intervals.Resampler` (1,000 seeded resamples as counts ``[1000, S]``), the
  resampled sums of each sentence's unit-vector sum, |pool step| per dimension (per
  pooling), per-dimension squared activations and cosine terms (issue 23) and, with
  sublayers, pool unit vector: ``[1000, P, H]`` each, float64, added
  batch by batch (no per-sentence ``[P, S, H]`` of them is kept); separability's resamples
  are taken from the kept content means before they are released.

Memory is therefore about S x P x H x 4 bytes (x 2 - 1/P with sublayers) plus the sample
(P x 20,000 x H x 4 bytes), whatever the set's token count: for MiniLM (P = 7, H = 384)
about 11 KB a sentence (20 KB with sublayers). docs/performance.md has the numbers.

`measure_states` runs the same engine over states already captured (Lab.measure, when
the Lab holds them). The in-memory `measure.measure` and `metrics.py` stay the reference
definition; tests/test_streaming.py holds the engine to them.

Differences from the in-memory path, all far below 1e-5 (about 1e-7): the per-batch
reductions (`batch_reductions`) take masked sums as batched matrix products with float32
accumulation over a sentence's tokens, and pc1 and the PCA trajectories take
eigenvectors of small Gram / covariance matrices instead of SVDs; content means are
kept in float32; sums over the set are added batch by batch.
"""
from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Iterable
from itertools import pairwise

import torch

from . import capture as C
from . import intervals as IV
from . import measure as MS
from . import metrics as M
from . import openquestion as OQ
from .errors import InputError
from .openquestion import word_class_masks
from .result import Measurement, mark_undefined
from .sentences import SentenceSet

_CLASSES = ("content", "function", "content-function")  # = openquestion.CLASSES
DEFAULT_MAX_PCA_TOKENS = 20_000
PCA_SEED = 0


@contextlib.contextmanager
def cpu_threads(n: int | None):
    """Run the block with `n` intra-op CPU threads (None: leave as is).

    The metric work is many small operations (and, in metrics.py, batched small SVDs),
    which on a busy CPU run several times (SVDs tens of times) slower with 2+ OpenMP
    threads than with one. See docs/performance.md.
    """
    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def content_counts(loaded: C.LoadedModel, ids: list[list[int]]) -> list[int]:
    """|C_s| of every text from its token ids (capture.token_ids: the same truncation as capture)."""
    flat = torch.tensor([i for seq in ids for i in seq], dtype=torch.long)
    content = ~torch.isin(flat, torch.tensor(C.special_ids(loaded), dtype=torch.long))
    lengths = torch.tensor([len(seq) for seq in ids], dtype=torch.long)
    ends = torch.cumsum(lengths, 0)
    before = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(content.long(), 0)])  # content tokens before
    return (before[ends] - before[ends - lengths]).tolist()


# --------------------------------------------------------------------------- fast equivalents
# Two metrics.py functions spend nearly all their time in LAPACK SVDs whose shape is the
# expensive one: pc1 on wide [T, H] matrices (one per sentence and depth, tens of times
# slower again with 2+ OpenMP threads on a busy CPU) and the PCA trajectories on a tall
# [N, H] matrix per depth. The functions below compute the same quantities from the small
# Gram / covariance matrices ([T, T], [H, H]): pc1's top eigenvector by repeated squaring
# (`_top_eigenvector`, eigh-free; `pc1_mean_cosine_per_sentence` below is its float64
# fallback, with eigh), the PCA fits' top two by subspace iteration with a certificate
# (`_top_eigenpairs`, else eigh), one depth at a time. tests/test_streaming.py holds them
# to metrics.py's (pc1's float64 fallback to 1e-9, the trajectories to 1e-6 relative
# with the float32 covariance and to 1e-10 where a depth is refitted in float64).


def pc1_mean_cosine_per_sentence(states: torch.Tensor, content: torch.Tensor,
                                 means: torch.Tensor | None = None) -> torch.Tensor:
    """= metrics.pc1_mean_cosine_per_sentence: |cos(u_s, m_s)|, u_s the first principal
    direction of the centred content tokens of s, from the top eigenvector v of the Gram
    matrix X X^T (u_s = X^T v); NaN if |C_s| < 2 or the tokens have no scatter direction
    (|X^T v| <= 1000 eps times the largest token norm, as metrics.py). [P, S].

    means: metrics.content_means(states, content), if the caller has it already."""
    mask = content.to(device=states.device, dtype=torch.bool)
    n = M.content_counts(mask)
    if bool((n == 0).any()):
        raise ValueError(f"sentences {torch.nonzero(n == 0).flatten().tolist()} have no content token")
    acc = torch.float32 if states.device.type == "mps" else torch.float64
    m = (M.content_means(states, mask) if means is None else means).to(acc)
    centred = states.to(acc, copy=True)
    centred.sub_(m[:, :, None, :]).masked_fill_(~mask[..., None], 0.0)  # rows masked after centring
    gram = centred @ centred.transpose(-1, -2)  # [P, S, T, T]
    top = torch.linalg.eigh(gram)[1][..., -1:].transpose(-1, -2)  # eigenvalues ascending: the last vector
    u = (top @ centred).squeeze(-2)  # X^T v: [P, S, H], its norm the top singular value
    del centred, gram
    sigma = torch.linalg.vector_norm(u, dim=-1)
    direction = torch.where(sigma[..., None] > 0, u / sigma.clamp_min(torch.finfo(acc).tiny)[..., None], u)
    out = M.cosine(direction, m).abs()
    norms = torch.linalg.vector_norm(states, dim=-1).to(acc)
    scale = torch.where(mask, norms, torch.zeros((), dtype=acc, device=states.device)).amax(-1)
    bad = (n < 2) | (sigma <= 1e3 * torch.finfo(acc).eps * scale)
    return torch.where(bad, torch.full_like(out, float("nan")), out)


PC1_GAP = 0.01  # relative eigengap (l1 - l2) / l1 below which pc1 is recomputed in float64
PC1_FLAT = 1e-3  # top singular value below this times the largest token norm: likewise


def _cosine(a: torch.Tensor, b: torch.Tensor, a_norm: torch.Tensor, b_norm: torch.Tensor) -> torch.Tensor:
    """metrics.cosine(a, b) along the last axis (a, b broadcast), given their norms, as
    a.b / (|a| |b|): 0 where either norm is <= EPS, clamped to [-1, 1]."""
    ok = (a_norm > M.EPS) & (b_norm > M.EPS)
    out = (a * b).sum(-1) / (a_norm * b_norm).clamp_min(torch.finfo(a_norm.dtype).tiny)
    return torch.where(ok, out, torch.zeros_like(out)).clamp(-1.0, 1.0)


def _pair_mean(unit_sums: torch.Tensor, self_dots: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Mean cos over unordered pairs from sum u and sum |u|^2 (metrics._mean_pair_cosine's formula)."""
    pair_sum = ((unit_sums * unit_sums).sum(-1) - self_dots) / 2
    out = pair_sum / (n * (n - 1) / 2).clamp_min(1)
    return torch.where(n >= 2, out, torch.full_like(out, float("nan")))


def _unit32(x: torch.Tensor, norms: torch.Tensor | None = None,
            in_place: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(x / |x| with 0 where |x| <= EPS, |unit|^2): metrics._unit. norms: |x| if known."""
    r = torch.linalg.vector_norm(x, dim=-1) if norms is None else norms
    inv = torch.where(r > M.EPS, 1 / r.clamp_min(M.EPS), torch.zeros((), dtype=x.dtype, device=x.device))
    return (x.mul_(inv[..., None]) if in_place else x * inv[..., None]), (r * inv) ** 2


def _batch_gram(x: torch.Tensor) -> torch.Tensor:
    """x @ x^T for a batch of [T, H] matrices. On a CPU, torch's batched product of
    16 to 29 rows takes a path two to three times slower than one of at most 15 rows
    (MKL, float32, H = 384: 8.8 ms against 3.0 ms for 448 matrices of 20 rows), so such
    matrices are multiplied as row blocks of at most 15 (no faster from 30 rows up)."""
    T = x.shape[-2]
    if x.device.type != "cpu" or not 15 < T < 30:
        return x @ x.transpose(-1, -2)
    blocks = -(-T // 15)
    edges = [T * i // blocks for i in range(blocks + 1)]
    xt = x.transpose(-1, -2)
    return torch.cat([x[..., lo:hi, :] @ xt for lo, hi in pairwise(edges)], dim=-2)


def batch_reductions(states: torch.Tensor, content: torch.Tensor, attn: torch.Tensor,
                     pc1_delta: bool = True, function: torch.Tensor | None = None,
                     scratch: C.Scratch | None = None, massive: bool = False) -> dict | None:
    """Every per-sentence reduction the streaming path keeps, for one batch, in few passes.

    states float32 [P, B, T, H]; content, attn bool [B, T]. Returns (float64 unless noted):
    `pool` = metrics.mean_pool [P, B, H]; `means` = metrics.content_means [P, B, H]; `n`
    = |C_s| [B]; `unit_sums` [P, B, H] and hence metrics.cross_sentence_stats; `intra` =
    metrics.intra_sentence_cosine_per_sentence [P, B]; `within` = metrics.within_scatter
    [P, B]; `norm_sum` = sum of content-token norms [P]; with pc1_delta also `pc1` =
    metrics.pc1_mean_cosine_per_sentence and `delta` = metrics.delta_coherence_per_sentence
    [P, B]. With a function-word mask `function` (bool [B, T], a subset of `content`;
    openquestion.word_class_masks) also `class_sums` [P, B, 3] and `class_pairs` [B, 3]:
    metrics.class_pair_sums of the (content, content), (function, function) and
    (content, function) word pairs, from the same unit vectors (content words' sums are
    all content tokens' minus the function words'). None if an attended state is NaN or
    inf (the caller raises the InputError). scratch: where the two state-sized temporaries
    (centred tokens, depth steps) go (capture.Scratch), instead of new tensors. With
    massive, also issue 23's reductions (`_massive`): `energy` and `cos_terms` [P, B, H],
    `first_norm_share`, `first_norm_ratio`, `first_cosine` [P, B].

    The same quantities as metrics.py, computed differently, to about 1e-7: the masked sums
    over tokens are batched matrix products (float32 accumulation over one sentence's
    tokens, then float64), and pc1 takes the top eigenvector of the float32 Gram matrix of
    the centred tokens (float64 from there, by repeated squaring: _top_eigenvector) instead
    of a float64 SVD per sentence and depth; a sentence whose eigengap is not certainly
    at least PC1_GAP (where float32 rounding could move the
    direction by more than about 1e-6), or whose scatter is below PC1_FLAT of its largest
    token norm (metrics.py's flat-cloud NaN), is recomputed in float64 by
    `pc1_mean_cosine_per_sentence` at that depth (each (depth, sentence) pair on its own).
    tests/test_streaming.py holds each one to metrics.py.
    """
    x = states if states.dtype == torch.float32 else states.float()
    cm = content.to(device=x.device, dtype=torch.bool)
    am = attn.to(device=x.device, dtype=torch.bool)
    n = cm.sum(1)
    if bool((n == 0).any()):
        raise ValueError(f"sentences {torch.nonzero(n == 0).flatten().tolist()} have no content token")
    acc = torch.float32 if x.device.type == "mps" else torch.float64
    norms = torch.linalg.vector_norm(x, dim=-1)  # [P, B, T]
    if not bool(torch.isfinite(norms).all()):  # padding garbage (never read by metrics.py) or bad states
        x = torch.where(am[None, :, :, None], x, torch.zeros((), dtype=x.dtype, device=x.device))
        norms = torch.linalg.vector_norm(x, dim=-1)
        if not bool(torch.isfinite(norms).all()):
            return None
    # Every masked sum over a sentence's tokens in one batched matrix product, the unit
    # vectors' sums included: their 1 / |h_i| goes into the weights (no unit-vector tensor).
    inv = torch.where(norms > M.EPS, 1 / norms.clamp_min(M.EPS), torch.zeros((), dtype=x.dtype, device=x.device))
    unit_sq = (norms * inv) ** 2  # |unit|^2: 1, or 0 for a zero vector
    cw = cm.to(x.dtype)  # [B, T]
    rows = [am.to(x.dtype).expand_as(norms), cw.expand_as(norms), cw * inv]
    if function is not None:
        fm = function.to(device=x.device, dtype=torch.bool) & cm
        rows.append(fm.to(x.dtype) * inv)
    sums = torch.matmul(torch.stack(rows, 2), x).to(acc)  # [P, B, k, H]
    nf = n.to(acc)
    out = {"pool": sums[:, :, 0] / am.sum(1).to(acc)[:, None], "means": sums[:, :, 1] / nf[:, None], "n": n}
    m32 = out["means"].to(x.dtype)

    if scratch is None:
        scratch = C.Scratch()

    def temp(name, shape):
        return scratch.take(name, shape, x.dtype, x.device)

    P, B, T, H = x.shape
    if pc1_delta:
        # The centred tokens with the mean as one more row: their Gram matrix holds the
        # tokens' (x_i - m_s) . m_s in its last column, which pc1's cosine needs (_pc1).
        ext = temp("centred", (P, B, T + 1, H))
        torch.sub(x, m32[:, :, None, :], out=ext[:, :, :T])  # float32 like metrics.within_scatter
        ext[:, :, T] = m32
        full = _batch_gram(ext)  # [P, B, T + 1, T + 1]
        gram, dots = full[..., :T, :T], full[..., :T, T]
        dist = gram.diagonal(dim1=-2, dim2=-1).clamp_min(0).sqrt()  # |x_i - m_s|: the Gram matrix's diagonal
    else:
        dist = torch.linalg.vector_norm(torch.sub(x, m32[:, :, None, :], out=temp("centred", x.shape)), dim=-1)
    out["within"] = (dist * cw).sum(-1, dtype=acc) / nf
    out["norm_sums"] = (norms * cw).sum(-1, dtype=acc)  # [P, B]: per sentence (the bootstrap's token_norm)
    out["norm_sum"] = out["norm_sums"].sum(1)
    if pc1_delta:
        out["pc1"] = _pc1(x, gram, dots, cm, n, out["means"], norms)
        del full, gram, dots
    del dist

    out["unit_sums"] = sums[:, :, 2]  # [P, B, H]
    self_dots = (unit_sq * cw).sum(-1, dtype=acc)
    if function is not None:
        sf = sums[:, :, 3]
        self_f = (unit_sq * fm).sum(-1, dtype=acc)
        sc, self_c = out["unit_sums"] - sf, self_dots - self_f  # content words = content tokens - function words
        n_f = fm.sum(1)
        n_c = n - n_f
        out["class_sums"] = torch.stack([((sc * sc).sum(-1) - self_c) / 2, ((sf * sf).sum(-1) - self_f) / 2,
                                         (sc * sf).sum(-1)], -1)
        out["class_pairs"] = torch.stack([n_c * (n_c - 1) // 2, n_f * (n_f - 1) // 2, n_c * n_f], -1)
        out["n_function"] = n_f
    out["intra"] = _pair_mean(out["unit_sums"], self_dots, nf)
    if massive:
        out.update(_massive(x, cm, norms, inv, out["unit_sums"], nf, temp("centred", x.shape)))
    if pc1_delta:
        steps = torch.sub(x[1:], x[:-1], out=temp("steps", (x.shape[0] - 1, *x.shape[1:])))
        step_norms = torch.linalg.vector_norm(steps, dim=-1)
        step_inv = torch.where(step_norms > M.EPS, 1 / step_norms.clamp_min(M.EPS),
                               torch.zeros((), dtype=x.dtype, device=x.device))
        step_sums = torch.matmul((cw * step_inv)[:, :, None, :], steps).squeeze(-2).to(acc)
        step_sq = ((step_norms * step_inv) ** 2 * cw).sum(-1, dtype=acc)
        del steps
        delta = _pair_mean(step_sums, step_sq, nf)
        out["delta"] = torch.cat([torch.full_like(delta[:1], float("nan")), delta])
    return out


def _massive(x: torch.Tensor, cm: torch.Tensor, norms: torch.Tensor, inv: torch.Tensor, unit_sums: torch.Tensor,
             nf: torch.Tensor, buf: torch.Tensor) -> dict:
    """Issue 23's per-sentence reductions of one batch (x float32 [P, B, T, H], cm [B, T], the
    tokens' norms and 1 / norms [P, B, T], the content unit-vector sums [P, B, H], |C_s| [B]):

    - `energy` = metrics.dim_energy_per_sentence and, from the same squares, the sums of
      u_i[k]^2 that give `cos_terms` = metrics.cosine_dim_contributions_per_sentence (both
      [P, B, H]: one batched product of the squared states, written into `buf`, a scratch
      buffer of x's shape whose earlier contents are no longer needed);
    - `first_norm_share`, `first_norm_ratio`, `first_cosine` = metrics.first_position_per_sentence
      [P, B], from the norms and the unit-vector sums (the others' sum is the content sum less
      position 0's own unit vector where position 0 is a content token)."""
    acc = nf.dtype
    sq = torch.mul(x, x, out=buf)
    cw = cm.to(x.dtype)
    w = torch.stack([cw.expand_as(norms), cw * inv * inv], 2)  # [P, B, 2, T]
    sums = torch.matmul(w, sq).to(acc)  # [P, B, 2, H]
    big_u = unit_sums
    terms = (big_u * big_u - sums[:, :, 1]) / (nf * (nf - 1)).clamp_min(1)[:, None]
    terms = torch.where((nf >= 2)[:, None], terms, torch.full_like(terms, float("nan")))
    others = cm.clone()
    others[:, 0] = False
    n_others = others.sum(1).to(acc)
    n0 = norms[:, :, 0].to(acc)
    nan = torch.full_like(n0, float("nan"))
    rest = (norms * norms * others).sum(-1, dtype=acc)
    denom = n0 * n0 + rest
    share = torch.where((n_others > 0) & (denom > 0), n0 * n0 / denom.clamp_min(torch.finfo(acc).tiny), nan)
    median = M.masked_median(norms.to(acc), others)
    ratio = torch.where(median > M.EPS, n0 / median.clamp_min(M.EPS), nan)
    u0 = (x[:, :, 0] * inv[:, :, 0, None]).to(acc)  # [P, B, H]
    other_units = big_u - u0 * cm[:, 0].to(acc)[:, None]
    cos = torch.where(n_others > 0, (u0 * other_units).sum(-1) / n_others.clamp_min(1), nan)
    return {"energy": sums[:, :, 0], "cos_terms": terms, "first_norm_share": share, "first_norm_ratio": ratio,
            "first_cosine": cos}


PC1_RESIDUAL = 1e-9  # |G v - l1 v| above this times l1: the eigenvector is recomputed (see _top_eigenvector)
_PC1_SQUARINGS = 10  # G^(2^10): the gap test below and a start within (1 - PC1_GAP)^1024 of the top vector


def _top_eigenvector(gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(l1 [...], top eigenvector v [..., T, 1], sure bool [...]) of a batch of symmetric
    positive semi-definite matrices G [..., T, T] (float64), by repeated squaring.

    On the small Gram matrices an eigendecomposition is a LAPACK call per matrix; the ten
    batched products of all of them cost about a third of that (448 matrices of 20 rows:
    0.36 ms a product, 10.8 ms for eigvalsh alone). B_j = G^(2^j) / trace(G^(2^j)) has
    trace 1, and with m = 2^j and r_i = (l_i / l1)^m, |B_j|_F^2 = sum r_i^2 / (sum r_i)^2,
    so that 1 / |B_j|_F^2 - 1 >= sum_(i>1) r_i >= (l2 / l1)^m. After 10 squarings (m =
    1024), `sure` requires 1 / |B|_F^2 - 1 <= (1 - PC1_GAP)^1024: then l2 <= (1 - PC1_GAP)
    l1 for certain (the test is a little stricter than that: 1 / |B|_F^2 - 1 is about
    2 sum_(i>1) r_i <= 2 (T - 1) r_2, so with T tokens it passes from l2 <= (1 - PC1_GAP)
    l1 (2 (T - 1))^(-1/1024), a gap of about 1.35% for T = 20).
    B's column with the largest diagonal entry, multiplied by B twice more, is the top
    eigenvector to (l2 / l1)^3072; l1 is its Rayleigh quotient. A vector whose residual
    |G v - l1 v| exceeds PC1_RESIDUAL l1 is not `sure` either; _pc1 recomputes every
    sentence that is not."""
    tiny = torch.finfo(gram.dtype).tiny

    def normalised(m: torch.Tensor) -> torch.Tensor:  # m / trace(m), in place
        return m.div_(m.diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(tiny)[..., None, None])

    # Between two rescalings l1 >= 1 / T shrinks to T^-(2^k) after k squarings: in float64
    # five are safe (T^-32 > 1e-300 up to T = 1e9), in float32 (MPS) two (T^-4 > 1e-38)
    every = 5 if gram.dtype == torch.float64 else 2
    b = normalised(gram.clone())
    for j in range(_PC1_SQUARINGS):
        b = b @ b
        if j % every == every - 1 or j == _PC1_SQUARINGS - 1:
            b = normalised(b)
    frob = (b * b).sum((-2, -1))
    gap_ok = (1 / frob.clamp_min(tiny) - 1) <= (1 - PC1_GAP) ** (2**_PC1_SQUARINGS)
    col = b.diagonal(dim1=-2, dim2=-1).argmax(-1)
    v = torch.take_along_dim(b, col[..., None, None], dim=-1)  # [..., T, 1]
    for _ in range(2):
        v = b @ v
        v = v / torch.linalg.vector_norm(v, dim=-2, keepdim=True).clamp_min(tiny)
    gv = gram @ v
    lam1 = (v * gv).sum((-2, -1))
    residual = torch.linalg.vector_norm(gv - lam1[..., None, None] * v, dim=(-2, -1))
    sure = gap_ok & torch.isfinite(residual) & (residual <= PC1_RESIDUAL * lam1.abs())
    return lam1, v, sure


def _pc1(x, gram, dots, cm, n, means, norms) -> torch.Tensor:
    """pc1_mean_cosine_per_sentence [P, B] from the Gram matrices of the centred tokens X
    (gram [P, B, T, T]) and their dot products with the content means (dots = X m,
    [P, B, T]): with v the top eigenvector of X X^T and l1 its eigenvalue, u = X^T v has
    norm sqrt(l1) and u . m = v . (X m), so cos(u, m) needs no pass over the tokens."""
    acc = means.dtype
    pair = cm[:, :, None] & cm[:, None, :]  # [B, T, T]: the content rows and columns of the Gram matrix
    gram = gram.masked_fill(~pair, 0.0).to(acc)
    lam1, top, sure = _top_eigenvector(gram)
    dots = dots.masked_fill(~cm, 0.0).to(acc)
    um = (top.squeeze(-1) * dots).sum(-1)  # u . m, u = X^T v
    sigma = lam1.clamp_min(0).sqrt()  # |u|
    m_norm = torch.linalg.vector_norm(means, dim=-1)
    ok = (sigma > M.EPS) & (m_norm > M.EPS)  # as metrics.cosine
    out = torch.where(ok, um / (sigma * m_norm).clamp_min(torch.finfo(acc).tiny), torch.zeros_like(um))
    out = out.clamp(-1.0, 1.0).abs()
    scale = torch.where(cm, norms, torch.zeros((), dtype=norms.dtype, device=norms.device)).amax(-1).to(acc)
    unsure = ~sure | (sigma <= PC1_FLAT * scale)
    depth, sent = torch.nonzero(unsure & (n >= 2)).unbind(1)  # only the (depth, sentence) pairs in doubt
    if sent.numel():
        out[depth, sent] = pc1_mean_cosine_per_sentence(x[depth, sent][None], cm[sent])[0].to(acc)
    return torch.where(n >= 2, out, torch.full_like(out, float("nan")))


_GRAM_BLOCKS = 4


def _gram_t(x: torch.Tensor) -> torch.Tensor:
    """x^T x for a tall x [N, H], computing only the blocks on and above the diagonal
    (_GRAM_BLOCKS column blocks: 10 of 16 blocks, about 30% less time than one matmul)."""
    H = x.shape[-1]
    edges = [H * i // _GRAM_BLOCKS for i in range(_GRAM_BLOCKS + 1)]
    if H < 4 * _GRAM_BLOCKS:
        return x.T @ x
    out = torch.empty((H, H), dtype=x.dtype, device=x.device)
    for lo, hi in pairwise(edges):
        block = x[:, lo:hi].T @ x[:, lo:]  # [hi - lo, H - lo]
        out[lo:hi, lo:] = block
        out[hi:, lo:hi] = block[:, hi - lo :].T
    return out


TRAJ_GAP = 0.02  # relative gap among a depth's top three covariance eigenvalues below which its fit is redone in float64


_COV_ROWS = 4096  # float32 covariance: rows per product, the products added in float64


def _centred_covariance(x: torch.Tensor, centre: torch.Tensor, buf: torch.Tensor) -> torch.Tensor:
    """(x - centre)^T (x - centre) [H, H] in float64 (float32 on MPS), as products of the
    blocks of buf's row count (at most _COV_ROWS), each centred into buf first, so that no
    centred copy of x is made. buf's dtype is the products': float32 for the fast fit
    (float32 products added in float64: on MiniLM's 20,000-token sample within 6e-8 of
    the float64 product, relative Frobenius norm, 1.2e-7 as one float32 product, in
    about the time of one), float64 for the exact one."""
    acc = torch.float32 if x.device.type == "mps" else torch.float64
    out = torch.zeros((x.shape[1],) * 2, dtype=acc, device=x.device)
    for block in x.split(buf.shape[0]):
        part = buf[: block.shape[0]]
        part = torch.sub(block, centre, out=part) if block.dtype == buf.dtype else part.copy_(block).sub_(centre)
        out += _gram_t(part)
    return out


_TOP_BLOCK = 16  # _top_eigenpairs: the subspace it iterates
_TOP_STEPS = 8  # products with the matrix between two Rayleigh-Ritz checks
_TOP_MAX_STEPS = 96  # then eigh
TOP_RESIDUAL = 1e-12  # |C v - l v| <= this x l1 for each of the top two vectors
TOP_SEPARATION = 1e-3  # l1 - l2, and (by default) l2 - l3, proven above this x l1, else eigh


def _top_eigenpairs(cov: torch.Tensor, separation: float = TOP_SEPARATION
                    ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(the three largest eigenvalues, ascending [3]; their eigenvectors [H, 3]) of a
    symmetric positive semi-definite float64 matrix, by subspace iteration, where it is
    proven that l1 - l2 and l2 - l3 are more than `separation` x l1; else None (then eigh
    is the way). The third pair is approximate (a lower bound of l3); only the top two
    vectors are meant for use.

    A full eigendecomposition finds all H eigenvectors; the PCA fits use two. Here a block
    of _TOP_BLOCK vectors (seeded) is multiplied by the matrix (scaled to trace 1),
    orthonormalised every four products, and every _TOP_STEPS products reduced to the Ritz
    pairs of the block (the eigenpairs of V^T C V), until the top two residuals
    |C v_i - t_i v_i| are at most TOP_RESIDUAL t_1. A Ritz value is never above the
    eigenvalue it approximates, and a residual r puts v_i within r / gap_i of its
    eigenvector, gap_i the distance from t_i to the rest of the spectrum. What a residual
    cannot show is that no larger eigenvalue was missed; a Cholesky factorisation shows
    it: with D = C - t_1 v_1 v_1^T - t_2 v_2 v_2^T and tau = t_2 - separation t_1, tau I - D
    is positive definite only if every eigenvalue of D is below tau, and (Weyl) the third
    eigenvalue of C is at most the largest of D. So l3 < tau: v_1 and v_2 are the top two,
    v_2 within TOP_RESIDUAL / separation of its eigenvector and, with t_1 - t_2 above
    TOP_SEPARATION t_1, v_1 within TOP_RESIDUAL / TOP_SEPARATION (1e-9). On MiniLM's and
    mpnet's covariances (384 and 768 rows) this converges in 16 to 48 products, to the
    eigenvectors eigh gives within 1e-15, in about half and a third of eigh's time."""
    H = cov.shape[-1]
    k = min(_TOP_BLOCK, H)
    if H < 4 * k or cov.dtype != torch.float64:
        return None
    trace = cov.diagonal().sum()
    if not bool(torch.isfinite(trace)) or not bool(trace > 0):
        return None
    scaled = cov / trace  # eigenvalues <= 1: four products without a QR cannot overflow
    gen = torch.Generator(device=cov.device).manual_seed(PCA_SEED)
    v = torch.randn((H, k), generator=gen, dtype=cov.dtype, device=cov.device)
    for step in range(1, _TOP_MAX_STEPS + 1):
        v = scaled @ v
        if step % 4:
            continue
        v = torch.linalg.qr(v)[0]
        if step % _TOP_STEPS:
            continue
        theta, w = torch.linalg.eigh(v.T @ scaled @ v)  # Rayleigh-Ritz, ascending
        top, vals = v @ w[:, -3:], theta[-3:]
        residual = torch.linalg.vector_norm(scaled @ top[:, 1:] - top[:, 1:] * vals[1:], dim=0)
        if not bool((residual <= TOP_RESIDUAL * vals[-1]).all()):
            continue
        if not bool(vals[2] - vals[1] > TOP_SEPARATION * vals[2]):
            return None  # a near tie at the top: the vectors move with rounding (eigh's too); eigh decides
        deflated = scaled - (top[:, 1:] * vals[1:]) @ top[:, 1:].T
        tau = vals[1] - separation * vals[2]
        if not bool(tau > vals[0]) or int(torch.linalg.cholesky_ex(torch.diag_embed(tau.expand(H)) - deflated).info):
            return None
        return vals * trace, top
    return None


def _top_components(cov: torch.Tensor, n_components: int = 2, exact: bool = False,
                    separation: float = TOP_SEPARATION) -> tuple[torch.Tensor, torch.Tensor]:
    """(the top principal directions [n, H] of the data whose covariance (or X^T X of the
    centred data) is cov, with scikit-learn's sign convention as metrics.pca_fit; cov's
    largest eigenvalues, ascending, at least three): the top two by subspace iteration
    (`_top_eigenpairs`, which proves l2 - l3 > separation x l1; then the third value is
    only a lower bound), else (and with exact) by eigh."""
    found = None if exact or n_components > 2 else _top_eigenpairs(cov, separation)
    values, vecs = found if found is not None else torch.linalg.eigh(cov)  # ascending eigenvalues
    comps = vecs[:, -n_components:].flip(-1).T  # largest first
    signs = torch.sign(comps.gather(-1, comps.abs().argmax(-1, keepdim=True)))
    return comps * signs, values


def _close_top(values: torch.Tensor, gap: float = TRAJ_GAP) -> bool:
    """Whether two of the top three eigenvalues (ascending) are within gap x the largest:
    there the top two directions move most with rounding in the covariance."""
    top = values[-3:].flip(0)
    return bool(((top[:-1] - top[1:]) < gap * top[0].abs()).any())


def _row_sum(x: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
    """x.sum(0) in acc. A float64 sum over a float32 [N, H] is one slow strided pass
    (about 38 ms for 20,000 x 384): float32 sums of 32 rows, added in acc, take 3 ms and
    stay within 1e-9 of the largest |x|."""
    if x.dtype == acc or x.shape[0] < 64:
        return x.sum(0, dtype=acc)
    q = x.shape[0] // 32 * 32
    return x[:q].reshape(-1, 32, x.shape[1]).sum(1).to(acc).sum(0) + x[q:].sum(0, dtype=acc)


def _block(scratch: C.Scratch, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The PCA fits' block buffer of `dtype`, [min(_COV_ROWS, N), H] for x [N, H], shared
    by every depth (a fresh buffer per depth would cost its page faults each time)."""
    return scratch.take(f"fit-{dtype}", (min(_COV_ROWS, x.shape[0]), x.shape[1]), dtype, x.device)


def _fit(x: torch.Tensor, scratch: C.Scratch) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, comps) = metrics.pca_fit(x) of one depth's tokens x [N, H] (N >= H; float64,
    comps the top two [2, H]).

    The mean is a float64 sum (`_row_sum`). The covariance is of the tokens centred on the
    float32-rounded mean, block by block, in float32 products added in float64
    (`_centred_covariance`: no centred copy of the tokens); its top eigenvectors are
    float64. On MiniLM's 20,000-token sample this moves the trajectory curves by under
    5e-8 (relative). Where two of the top three eigenvalues are within TRAJ_GAP of the
    largest, rounding could move the directions more: that depth is refitted from float64
    blocks, centred on the float64 mean of the float64 tokens (metrics.pca_fit's numbers,
    to rounding). MPS keeps float32 throughout."""
    acc = torch.float32 if x.device.type == "mps" else torch.float64
    mean = _row_sum(x, acc) / x.shape[0]
    # subspace iteration proves l2 - l3 > TRAJ_GAP l1, or eigh gives every value: either way
    # _close_top below sees the gaps that decide the refit
    comps, values = _top_components(_centred_covariance(x, mean.to(x.dtype), buf=_block(scratch, x, x.dtype)),
                                    separation=TRAJ_GAP)
    if x.dtype != acc and _close_top(values):
        mean = x.sum(0, dtype=acc) / x.shape[0]
        comps, _ = _top_components(_centred_covariance(x, mean, buf=_block(scratch, x, acc)), exact=True)
    return mean, comps


def _project(x: torch.Tensor, centre: torch.Tensor, comps: torch.Tensor, scratch: C.Scratch) -> torch.Tensor:
    """(x - centre) @ comps.T [N, k] in comps' dtype, x [N, H]. Where comps are float64 and
    the tokens float32 (CPU, CUDA), the tokens are converted rows at a time into one small
    buffer (float32 products would add a bias of about 5e-8, relative, to the trajectory
    curves: their rounding is shared by tokens with the same large coordinates), multiplied
    uncentred, and centre @ comps.T subtracted: in float64, x C - c C is (x - c) C to about
    1e-15 of |x| |C|, without a centring pass. On MPS both are float32: one product."""
    acc = comps.dtype
    if x.dtype == acc:
        return (x - centre) @ comps.T
    out = torch.empty((x.shape[0], comps.shape[0]), dtype=acc, device=x.device)
    buf = _block(scratch, x, acc)
    rows = buf.shape[0]
    for lo in range(0, x.shape[0], rows):
        part = buf[: min(rows, x.shape[0] - lo)].copy_(x[lo : lo + rows])
        torch.mm(part, comps.T, out=out[lo : lo + part.shape[0]])
    return out - centre @ comps.T


def trajectory_curves(tokens: torch.Tensor) -> dict:
    """= metrics.fixed_pca_step, refit_pca_step and teleological_distance of tokens [P, N, H].

    Each depth is fitted once (`_fit`), one depth at a time (the fits of depths 0 and L,
    which serve all three metrics, stay); the projection of a token of depth d with the
    fit (m_f, C_f) of depth f is (x - m_f) C_f = (x - m_d) C_f + (m_d - m_f) C_f. Only a
    mean and two directions per kept fit, and the block buffers (`_block`), are held
    besides the tokens."""
    P, N, H = tokens.shape
    scratch = C.Scratch()  # the fits' and projections' block buffers

    def fit(d: int) -> tuple[torch.Tensor, torch.Tensor]:
        if N < H:  # few tokens: metrics.pca_fit's SVD is the cheaper one
            return M.pca_fit(tokens[d])
        return _fit(tokens[d], scratch)

    ends = {0: fit(0), P - 1: fit(P - 1)}
    (m0, first), (ml, last) = ends[0], ends[P - 1]
    fixed, refit, tele = [], [], []
    for d in range(P):
        mean, own = ends[d] if d in ends else fit(d)
        base = _project(tokens[d], mean, torch.cat([first, own, last]), scratch)  # [N, 6]: (x - m_d) C_f
        shift = torch.cat([(mean - m0) @ first.T, mean.new_zeros(own.shape[0]), (mean - ml) @ last.T])
        for out, p in zip((fixed, refit, tele), (base + shift).split(2, dim=-1)):
            out.append(p)
        del base

    def steps(projections: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([torch.linalg.vector_norm(b - a, dim=-1).mean() for a, b in pairwise(projections)])

    nan = torch.full((1,), float("nan"), dtype=fixed[0].dtype, device=tokens.device)
    return {
        "fixed_pca_step": torch.cat([nan, steps(fixed)]),
        "refit_pca_step": torch.cat([nan, steps(refit)]),
        "teleological_distance": torch.stack([torch.linalg.vector_norm(p - tele[-1], dim=-1).mean() for p in tele]),
    }


# --------------------------------------------------------------------------- accumulators


class _Cloud:
    """Per-sentence reductions of the token-cloud and pooled metrics over S sentence slots."""

    def __init__(self, depths: int, hidden: int, sentences: int, device, poolings: Iterable[str], pools: bool,
                 classes: bool = False, summary: str = "first", res: IV.Resampler | None = None, sfx: str = ""):
        P, S, H = depths, sentences, hidden
        self.summary = summary  # the model's summary token (LayerStates.summary): `cls` pooling reads it
        # issue 24: the bootstrap's per-sentence contributions (intervals.Stats) and, through
        # `res`, the resampled sums of each sentence's unit-vector sum (no [P, S, H] kept)
        self.res, self.sfx = res, sfx
        self.unit_sq = torch.zeros((P, S), dtype=torch.float64 if device.type != "mps" else torch.float32,
                                   device=device)
        self.norm_sums = torch.zeros_like(self.unit_sq)
        f64 = torch.float32 if device.type == "mps" else torch.float64
        nan = float("nan")
        self.intra = torch.full((P, S), nan, dtype=f64, device=device)
        self.pc1 = torch.full((P, S), nan, dtype=f64, device=device)
        self.delta = torch.full((P, S), nan, dtype=f64, device=device)
        self.within = torch.zeros((P, S), dtype=f64, device=device)
        self.means = torch.zeros((P, S, H), dtype=torch.float32, device=device)
        self.n = torch.zeros(S, dtype=torch.long, device=device)
        self.unit_sum = torch.zeros((P, H), dtype=f64, device=device)
        self.sq_sum = torch.zeros(P, dtype=f64, device=device)
        self.norm_sum = torch.zeros(P, dtype=f64, device=device)
        self.with_pools = pools
        self.scratch = C.Scratch()
        if pools:
            self.cls_align = torch.zeros((P, S), dtype=f64, device=device)
            self.drift = torch.zeros((P, S), dtype=f64, device=device)
            self.dims = {p: _DimStats(P, H, device, f64, res, f"steps:{p}") for p in poolings}
        if pools:  # issue 23: the massive-activation sums and first-position values (depths only)
            self.energy = torch.zeros((P, H), dtype=f64, device=device)
            self.cos_terms = torch.zeros((P, H), dtype=f64, device=device)
            self.first = {k: torch.full((P, S), nan, dtype=f64, device=device) for k in MS.FIRST_POSITION}
        self.classes = classes
        if classes:  # the open question's word classes (openquestion.open_question_curves)
            self.class_sums = torch.zeros((P, S, 3), dtype=f64, device=device)
            self.class_pairs = torch.zeros((S, 3), dtype=torch.long, device=device)
            self.n_function = torch.zeros(S, dtype=torch.long, device=device)
            if pools:  # pair_cosine_all from sums of the mean pools' unit vectors
                self.pool_unit_sum = torch.zeros((P, H), dtype=f64, device=device)
                self.pool_unit_sq = torch.zeros(P, dtype=f64, device=device)
                self.pool_unit_sqs = torch.zeros((P, S), dtype=f64, device=device)

    def add(self, x: torch.Tensor, content: torch.Tensor, attn: torch.Tensor, slots: torch.Tensor,
            pc1_delta: bool = True, function: torch.Tensor | None = None) -> bool:
        """x [P, B, T, H], content/attn [B, T]; row b of the batch is sentence slot slots[b];
        function: the function-word mask [B, T] (needed when the cloud keeps classes).

        Returns False, adding nothing, if a state at an attended position is NaN or inf (then
        the mean pool is not finite: float64 sums of float32 values cannot overflow)."""
        red = batch_reductions(x, content, attn, pc1_delta, function if self.classes else None, self.scratch,
                               massive=self.with_pools)
        if red is None:
            return False
        pool, n, unit_sums = red["pool"], red["n"], red["unit_sums"]
        self.unit_sum += unit_sums.sum(1)  # = metrics.cross_sentence_stats
        unit_sq = (unit_sums * unit_sums).sum(-1)  # [P, B]
        self.sq_sum += unit_sq.sum(1)
        self.unit_sq[:, slots] = unit_sq.to(self.unit_sq.dtype)
        self.norm_sums[:, slots] = red["norm_sums"].to(self.norm_sums.dtype)
        if self.res is not None:
            self.res.add("unit" + self.sfx, slots, unit_sums.transpose(0, 1))
        self.n[slots] = n
        self.means[:, slots] = red["means"].float()
        self.within[:, slots] = red["within"]
        self.norm_sum += red["norm_sum"]
        self.intra[:, slots] = red["intra"]
        if pc1_delta:
            self.pc1[:, slots] = red["pc1"]
            self.delta[:, slots] = red["delta"]
        if self.with_pools:
            terms = red["cos_terms"].nan_to_num(0.0)  # a sentence left out adds 0 (it is not counted)
            self.energy += red["energy"].sum(1)
            self.cos_terms += terms.sum(1)
            for k in MS.FIRST_POSITION:
                self.first[k][:, slots] = red[f"first_{k}"]
            if self.res is not None:
                self.res.add("energy", slots, red["energy"].transpose(0, 1))
                self.res.add("cosdim", slots, terms.transpose(0, 1))
            pool_norm = torch.linalg.vector_norm(pool, dim=-1)
            cls = M.summary_token(x, attn, self.summary)
            self.cls_align[:, slots] = _cosine(cls, pool, torch.linalg.vector_norm(cls, dim=-1), pool_norm)
            self.drift[:, slots] = _cosine(pool[:1], pool, pool_norm[:1], pool_norm)  # = M.meanpool_drift
            for name, stats in self.dims.items():
                stats.add(pool if name == "mean" else cls.to(pool.dtype) if name == "cls"
                          else M.pool(x, attn, name, self.summary).to(pool.dtype), slots)
        if self.classes:
            self.class_sums[:, slots] = red["class_sums"]
            self.class_pairs[slots] = red["class_pairs"]
            self.n_function[slots] = red["n_function"]
            if self.with_pools:
                units, unit_sq = _unit32(pool, pool_norm)
                self.pool_unit_sum += units.sum(1)
                self.pool_unit_sq += unit_sq.sum(1)
                self.pool_unit_sqs[:, slots] = unit_sq
                if self.res is not None:
                    self.res.add("pool_unit", slots, units.transpose(0, 1))
        return True

    def class_curves(self) -> tuple[dict, dict, torch.Tensor]:
        """(class -> intra_class_cosine / cross_class_cosine curve, class -> pair count,
        the three metrics.class_pair_shares [3, P]) of the kept per-sentence class sums."""
        sums, pairs = self.class_sums, self.class_pairs.to(self.class_sums.dtype)
        per = torch.where(pairs > 0, sums / pairs.clamp_min(1), torch.full_like(sums, float("nan")))
        curves = dict(zip(_CLASSES, torch.nanmean(per, 1).unbind(-1)))
        counts = dict(zip(_CLASSES, self.class_pairs.sum(0).tolist()))
        total = (self.n * (self.n - 1) // 2).to(sums.dtype)
        keep = self.n >= 2
        shares = (sums[:, keep] / total[keep][:, None]).mean(1).T  # [3, P]
        return curves, counts, shares

    def pair_cosine_all(self) -> torch.Tensor:
        """metrics.pair_cosine_all of the kept mean pools, from the sums of their unit vectors."""
        S = self.n.shape[0]
        return _pair_mean(self.pool_unit_sum, self.pool_unit_sq,
                          torch.full_like(self.pool_unit_sq, float(S)))

    def separability(self) -> torch.Tensor:
        """separability_ratio, depth by depth (float64 temporaries of one depth at a time)."""
        acc = self.within.dtype
        return torch.cat([
            M.separability_ratio_from(self.means[d : d + 1].to(acc), self.within[d : d + 1])
            for d in range(self.means.shape[0])
        ])

    def cross(self) -> torch.Tensor:
        return M.cross_sentence_cosine_from_stats(self.unit_sum, self.sq_sum, self.n)

    def token_norm(self) -> torch.Tensor:
        return self.norm_sum / self.n.sum()


class _DimStats:
    """measure.pooled's per-dimension metrics of one pooling from running sums over the
    sentences' pools [P, S, H] (no pool is kept: issue 13's memory target):

    - write_depth: the sums of |pool(s, d)[k] - pool(s, d-1)[k]| [L, H] (metrics.write_depth
      takes the argmax of their mean);
    - dim_correlation: Pearson r of pool(s, 0)[k] and pool(s, L)[k] from the sums of x, y,
      x^2, y^2, xy, shifted by the first batch's means (the one-pass formula then loses no
      digit that matters in float64), and the running min and max of x and y (a constant
      dimension gives NaN, as metrics.dim_correlation)."""

    def __init__(self, depths: int, hidden: int, device, dtype, res: IV.Resampler | None = None, key: str = ""):
        self.res, self.key = res, key  # issue 24: the resampled |pool step| sums (intervals.Resampler.add)
        self.steps = torch.zeros((depths - 1, hidden), dtype=dtype, device=device)
        self.sums = torch.zeros((5, hidden), dtype=dtype, device=device)
        self.lo = torch.full((2, hidden), float("inf"), dtype=dtype, device=device)
        self.hi = torch.full((2, hidden), float("-inf"), dtype=dtype, device=device)
        self.shift: torch.Tensor | None = None
        self.count = 0

    def add(self, pools: torch.Tensor, slots: torch.Tensor | None = None) -> None:
        """pools [P, B, H] (float64) of B more sentences (sentence slots `slots`)."""
        steps = (pools[1:] - pools[:-1]).abs()
        self.steps += steps.sum(1)
        if self.res is not None:
            self.res.add(self.key, slots, steps.transpose(0, 1))
        ends = pools[[0, -1]]  # [2, B, H]: pool(s, 0) and pool(s, L)
        if self.shift is None:
            self.shift = ends.mean(1, keepdim=True)
        x, y = (ends - self.shift).unbind(0)
        self.sums += torch.stack([x.sum(0), y.sum(0), (x * x).sum(0), (y * y).sum(0), (x * y).sum(0)])
        self.lo = torch.minimum(self.lo, ends.amin(1))
        self.hi = torch.maximum(self.hi, ends.amax(1))
        self.count += pools.shape[1]

    def result(self) -> dict:
        wd = (self.steps / self.count).argmax(0) + 1
        sx, sy, sxx, syy, sxy = self.sums
        n = self.count
        r = (sxy - sx * sy / n) / torch.sqrt((sxx - sx * sx / n) * (syy - sy * sy / n))
        constant = (self.lo == self.hi).any(0)
        r = torch.where(constant, torch.full_like(r, float("nan")), r.clamp(-1.0, 1.0))
        last = self.steps.shape[0]
        # = M.write_depth_histogram and M.late_write_fraction, from write_depth
        hist = torch.bincount(wd, minlength=last + 1)
        late = (wd >= last - 1).to(self.sums.dtype).mean()
        return {"hist": hist, "late": late, "write_depth": wd, "r": r}


class _Sample:
    """The PCA trajectory token sample, filled batch by batch.

    Which tokens are in it is measure.trajectories' choice (every content token, or the
    first `cap` of a seeded randperm over them in sentence order). They are stored in the
    order the batches bring them (capture's length-sorted order), each batch's tokens with
    one copy per depth: the trajectory metrics are means over tokens, and the PCA fits
    means and covariances, so the order changes only the rounding of the sums."""

    def __init__(self, counts: list[int], cap: int | None, seed: int):
        self.counts = torch.tensor(counts, dtype=torch.long)
        self.offsets = torch.cumsum(self.counts, 0) - self.counts  # first global token of each slot
        self.total = int(self.counts.sum())
        self.sampled = cap is not None and self.total > cap
        if self.sampled:
            # exactly measure.trajectories' sample: randperm of all content tokens, first cap kept
            gen = torch.Generator().manual_seed(seed)
            self.keep = torch.zeros(self.total, dtype=torch.bool)
            self.keep[torch.randperm(self.total, generator=gen)[:cap]] = True
            self.size = cap
        else:
            self.size = self.total
        self.filled = 0
        self.tokens: torch.Tensor | None = None

    def add(self, x: torch.Tensor, content: torch.Tensor, slots: torch.Tensor) -> None:
        P, B, T, H = x.shape
        if self.tokens is None:  # depth-major [P, N, H]: each depth one contiguous matrix for the PCA fits
            self.tokens = torch.empty((P, self.size, H), dtype=torch.float32, device=x.device)
        src = torch.nonzero(content.to(device=x.device, dtype=torch.bool).flatten()).flatten()  # (b, t) order
        if self.sampled:
            slots = slots.cpu()
            n = self.counts[slots]
            start = torch.repeat_interleave(self.offsets[slots], n)
            local = torch.arange(int(n.sum())) - torch.repeat_interleave(torch.cumsum(n, 0) - n, n)
            src = src[self.keep[start + local].to(x.device)]
        lo, hi = self.filled, self.filled + src.numel()
        flat = x.reshape(P, B * T, H)  # float32, as LayerStates.states always is
        for d in range(P):  # straight into the sample's rows, one copy
            torch.index_select(flat[d], 0, src, out=self.tokens[d, lo:hi])
        self.filled = hi

    def depth_major(self) -> torch.Tensor:
        """The sample as [P, N, H]."""
        assert self.filled == self.size, (self.filled, self.size)
        return self.tokens


def measure_streaming(
    loaded: C.LoadedModel,
    sentences: SentenceSet,
    poolings: tuple[str, ...] = ("mean",),
    batch_size: int = 64,
    max_pca_tokens: int | None = DEFAULT_MAX_PCA_TOKENS,
    seed: int = PCA_SEED,
    method: str = "auto",
    metric_threads: int | None = None,
    sublayers: bool = False,
) -> Measurement:
    """Every METRICS.md metric of `sentences`, one batch at a time (see the module docstring).

    sublayers: also the open question's curves, as `measure(..., sublayers=True)` gives them
    (each block's post-attention state is captured with hooks, `capture(..., sublayers=True)`).
    metric_threads: CPU threads for the metric work between forward passes (None: as set);
    the forward passes keep the process's thread count.
    """
    _check_poolings(poolings)
    items = C.texts_of(sentences)
    ids = C.token_ids(loaded, items)  # one tokenizer pass: the counts and capture's length sort
    counts = content_counts(loaded, ids)
    C.check_batch_invariance(loaded, items, method, ids)  # into loaded.provenance, so into prov
    batches = C.iter_batches(loaded, items, batch_size, method, sublayers=sublayers, ids=ids, reuse=True)
    prov = {**loaded.provenance, "sentence_set": sentences.name, "sentence_set_sha256": sentences.sha256}
    threads = metric_threads if loaded.device.type == "cpu" else None
    return _measure_batches(sentences, items, counts, batches, poolings, max_pca_tokens, seed, sublayers,
                            loaded.spec.name, prov, threads)


def measure_states(
    states: C.LayerStates,
    sentences: SentenceSet,
    poolings: tuple[str, ...] = ("mean",),
    batch_size: int = 64,
    max_pca_tokens: int | None = DEFAULT_MAX_PCA_TOKENS,
    seed: int = PCA_SEED,
    sublayers: bool = False,
) -> Measurement:
    """The same engine on states already captured (`capture(loaded, sentences)`, in
    `texts_of` order): what `Lab.measure` runs when the Lab holds the set's states. With
    sublayers, the open question's `@attn` curves need states captured with sublayers=True
    (otherwise they are listed in not_computed, as `measure` does)."""
    _check_poolings(poolings)
    items = C.texts_of(sentences)
    if list(zip(states.texts, states.roles)) != items:
        raise ValueError("measure_states: the states are not a capture of this sentence set")
    counts = states.content.sum(1).tolist()
    batches = ((list(range(lo, min(lo + batch_size, len(items)))),
                states.select(list(range(lo, min(lo + batch_size, len(items))))))
               for lo in range(0, len(items), batch_size))
    prov = {**states.provenance, "sentence_set": sentences.name, "sentence_set_sha256": sentences.sha256}
    return _measure_batches(sentences, items, counts, batches, poolings, max_pca_tokens, seed, sublayers,
                            prov.get("model", "?"), prov, None)


def _check_poolings(poolings) -> None:
    if not poolings or poolings[0] != "mean":
        raise ValueError("the first pooling must be mean (the METRICS.md default)")


def _measure_batches(sentences: SentenceSet, items, counts: list[int], batches, poolings, max_pca_tokens, seed,
                     sublayers: bool, name: str, prov: dict, threads: int | None) -> Measurement:
    """The engine: every reduction of each (rows, LayerStates) batch, then the Measurement."""
    poolings = tuple(dict.fromkeys(poolings))
    item_of = {key: i for i, key in enumerate(items)}
    for (text, _), n in zip(items, counts):
        if n == 0:
            raise MS.no_content_error(sentences, text, name)

    slots_of: dict[int, list[int]] = {}  # item -> its sentence slots (a repeated sentence has several)
    for s, text in enumerate(sentences.sentences):
        slots_of.setdefault(item_of[(text, "doc")], []).append(s)
    S = len(sentences.sentences)
    slot_counts = [counts[item_of[(t, "doc")]] for t in sentences.sentences]
    sample = _Sample(slot_counts, max_pca_tokens, seed)
    # texts whose every token is kept: pairs, retrieval texts and queries, and the first sentence
    keep_items = {item_of[(sentences.sentences[0], "doc")]}
    keep_items.update(item_of[(t, "doc")] for pair in sentences.pairs.values() for t in pair)
    keep_items.update(item_of[(t, "doc")] for t in sentences.retrieval_pool)
    keep_items.update(item_of[(r.query, "query")] for r in sentences.retrieval)
    kept: dict[int, C.LayerStates] = {}
    cloud = proj = mid = final = None
    res = None
    mid_missing = False
    word_classes = word_class_masks if sublayers else None

    for rows, batch in batches:
        with cpu_threads(threads):
            got = batch.content.sum(1).tolist()
            if got != [counts[i] for i in rows]:  # pragma: no cover - tokenizer and capture disagree
                raise RuntimeError(f"{name}: content-token counts differ between passes")
            pos, slots = [], []
            for b, item in enumerate(rows):
                for s in slots_of.get(item, ()):
                    pos.append(b)
                    slots.append(s)
                if item in keep_items:
                    kept[item] = batch.select([b])
                    if item not in slots_of:  # cloud rows are checked by _Cloud.add
                        C.check_finite(kept[item], name)
            if not pos:
                continue
            dev = batch.states.device
            slot_t = torch.tensor(slots, dtype=torch.long, device=dev)
            m = batch.sublayers.get("attn") if sublayers else None
            fw = word_classes(batch)[1] if sublayers else None
            if pos == list(range(len(rows))):
                x, c, a, pr, fi = batch.states, batch.content, batch.attn, batch.proj, batch.final
            else:
                idx = torch.tensor(pos, dtype=torch.long, device=dev)
                x, c, a = batch.states.index_select(1, idx), batch.content[idx], batch.attn[idx]
                pr = None if batch.proj is None else batch.proj[idx]
                fi = None if batch.final is None else batch.final[idx]
                m = None if m is None else m.index_select(1, idx)
                fw = None if fw is None else fw[idx]
            if cloud is None:
                # issue 24: the bootstrap's resamples (none for a one-sentence set)
                res = IV.Resampler(S, device=IV.device_for(dev)) if S >= 2 else None
                cloud = _Cloud(x.shape[0], x.shape[-1], S, dev, poolings, pools=True, classes=sublayers,
                               summary=batch.summary, res=res)
                if pr is not None:
                    proj = _Cloud(1, pr.shape[-1], S, dev, (), pools=False)
                if fi is not None:
                    final = _Cloud(1, fi.shape[-1], S, dev, (), pools=False)
                if m is not None:
                    mid = _Cloud(x.shape[0] - 1, x.shape[-1], S, dev, (), pools=False, classes=True, res=res,
                                 sfx="@attn")
                mid_missing = sublayers and m is None
            if not cloud.add(x, c, a, slot_t, function=fw):
                C.check_finite(batch, name)  # raises the one-line InputError
                raise InputError(f"{name}: hidden states too large to measure (a token norm overflows float32)")
            sample.add(x, c, slot_t)
            if proj is not None:
                proj.add(pr[None], c, a, slot_t, pc1_delta=False)
            if final is not None:
                final.add(fi[None], c, a, slot_t, pc1_delta=False)
            if mid is not None and not mid.add(m[1:], c, a, slot_t, pc1_delta=False, function=fw):
                raise InputError(f"{name}: sublayer (post-attention) states contain NaN or inf")
            del x, c, a, pr, m, fi

    batch = None  # the last batch's states are views of iter_batches' scratch (reuse=True): release it
    for c in (cloud, proj, mid, final):  # the batches' scratch buffers: not needed by _finish's PCA fits
        if c is not None:
            c.scratch = None
    with cpu_threads(threads):
        stats = None
        if res is not None:  # issue 24: separability's resamples while the content means are held
            stats = IV.Stats(res)
            stats.separability("", cloud.means, cloud.within)
        result = _finish(sentences, poolings, cloud, proj, sample, kept, prov, final)
        if sublayers:
            _open_question(result, cloud, mid, mid_missing)
        mark_undefined(result, len(sentences.sentences))  # as measure.measure, after every curve
        if stats is not None:
            _bootstrap_stats(stats, cloud, mid if sublayers and not mid_missing else None)
        IV.attach(result, stats, poolings, classes=sublayers, attn=stats is not None and "@attn" in stats.sep)
        return result


def _bootstrap_stats(stats: IV.Stats, cloud: _Cloud, mid: _Cloud | None) -> None:
    """intervals.Stats from the kept per-sentence reductions (= measure.bootstrap_stats)."""
    per = stats.per
    stats.hidden = cloud.unit_sum.shape[-1]
    per.update(n=cloud.n, intra=cloud.intra, within=cloud.within, unit_sq=cloud.unit_sq, norm_sum=cloud.norm_sums,
               pc1=cloud.pc1, delta=cloud.delta, cls_align=cloud.cls_align, drift=cloud.drift)
    per.update({f"first_{k}": v for k, v in cloud.first.items()})
    if cloud.classes:
        per.update(class_sums=cloud.class_sums, class_pairs=cloud.class_pairs, pool_unit_sq=cloud.pool_unit_sqs)
    if mid is not None:
        per.update({"intra@attn": mid.intra, "within@attn": mid.within, "unit_sq@attn": mid.unit_sq,
                    "class_sums@attn": mid.class_sums})
        stats.separability("@attn", mid.means, mid.within)


def _open_question(result: Measurement, cloud: _Cloud, mid: _Cloud | None, mid_missing: bool) -> None:
    """openquestion.open_question_curves from the kept reductions, added to `result` as
    measure(..., sublayers=True) adds them."""
    curves: dict = {}
    scalars: dict = {}
    missing: dict = {}
    by_class, pairs, shares = cloud.class_curves()
    for name in OQ.CLASSES:
        curves[f"{OQ.INTRA}[{name}]"] = by_class[name]
        scalars[f"pairs[{name}]"] = pairs[name]
    scalars["tokens[content]"] = int((cloud.n - cloud.n_function).sum())
    scalars["tokens[function]"] = int(cloud.n_function.sum())
    for name, share in zip(OQ.CLASSES, shares):
        curves[f"{OQ.INTRA}_share[{name}]"] = share
    if mid is None or mid_missing:
        for name in (OQ.INTRA, "cross_sentence_cosine", "separability_ratio"):
            missing[name + OQ.ATTN] = OQ.NO_SUBLAYERS
    else:
        curves[OQ.INTRA + OQ.ATTN] = OQ._with_nan0(torch.nanmean(mid.intra, 1))
        curves["cross_sentence_cosine" + OQ.ATTN] = OQ._with_nan0(mid.cross())
        curves["separability_ratio" + OQ.ATTN] = OQ._with_nan0(mid.separability())
        mid_class, _, _ = mid.class_curves()
        for name in OQ.CLASSES:
            curves[f"{OQ.INTRA}[{name}]{OQ.ATTN}"] = OQ._with_nan0(mid_class[name])
    pca = cloud.pair_cosine_all()
    curves["pair_cosine_all"] = pca
    if cloud.n.shape[0] >= 2:
        peak = M.peak_depth(pca)
        scalars["pair_cosine_all_peak_depth"] = peak
        scalars["pair_cosine_all_peak_fraction"] = peak / max(pca.shape[0] - 1, 1)
    else:
        missing["pair_cosine_all"] = "needs at least 2 sentences"
    result.curves.update(MS._jsonify(curves))
    result.scalars.update(MS._jsonify(scalars))
    result.not_computed.update(missing)


def _mini_states(kept: dict[int, C.LayerStates], prov: dict) -> C.LayerStates:
    """The kept texts as one LayerStates (in texts_of order), for pairs, retrieval and token pairs."""
    rows = [kept[i] for i in sorted(kept)]

    def cat(name, fill):
        return torch.cat(C._pad_cat([getattr(r, name) for r in rows], 2 if name == "states" else 1, fill),
                         dim=1 if name == "states" else 0)

    return C.LayerStates(
        texts=tuple(r.texts[0] for r in rows),
        roles=tuple(r.roles[0] for r in rows),
        model_texts=tuple(r.model_texts[0] for r in rows),
        states=cat("states", 0.0),
        attn=cat("attn", False),
        content=cat("content", False),
        input_ids=cat("input_ids", 0),
        tokens=[r.tokens[0] for r in rows],
        word_ids=[r.word_ids[0] for r in rows],
        offsets=[r.offsets[0] for r in rows],
        proj=torch.cat(C._pad_cat([r.proj for r in rows], 1, 0.0)) if rows[0].proj is not None else None,
        provenance=prov,
        final=torch.cat(C._pad_cat([r.final for r in rows], 1, 0.0)) if rows[0].final is not None else None,
        summary=rows[0].summary,
    )


def _pooled(cloud: _Cloud, mini: C.LayerStates, sentences: SentenceSet, pooling: str) -> dict:
    """measure.pooled, with the per-dimension metrics from the kept pools and the pairs and
    retrieval (measure.pooled itself) from the kept texts."""
    out = {"curves": {}, "scalars": {}, "per_dimension": {}, "discriminative_dims": {}, "not_computed": {}}
    if cloud.n.shape[0] >= 2:
        dims = cloud.dims[pooling].result()
        out["curves"]["write_depth_histogram"] = dims["hist"]
        out["scalars"]["late_write_fraction"] = dims["late"]
        out["per_dimension"]["write_depth"] = dims["write_depth"]
        r = dims["r"]
        out["per_dimension"]["dim_correlation"] = r
        out["scalars"]["dim_correlation_mean"] = torch.nanmean(r)
        out["scalars"]["dims_r_above_0.7"] = int((r > 0.7).sum())
        out["scalars"]["dims_r_below_-0.7"] = int((r < -0.7).sum())
    else:
        out["not_computed"]["dim_correlation"] = "needs at least 2 sentences"
    one = dataclasses.replace(sentences, sentences=(sentences.sentences[0],))
    part = MS.pooled(mini, one, pooling)  # one sentence: only the pairs and retrieval parts
    part["not_computed"].pop("dim_correlation", None)
    for key in ("curves", "scalars", "per_dimension", "not_computed"):
        out[key].update(part[key])
    out["discriminative_dims"] = part["discriminative_dims"]
    return out


def _stage_metrics(stage: _Cloud) -> dict:
    """The token-cloud metrics of one extra stage (`proj`, `final`) from its one-depth
    reductions, as measure._proj_cloud computes them from held states."""
    intra, cross = torch.nanmean(stage.intra, 1), stage.cross()
    return {k: MS._list(v)[0] for k, v in {
        "intra_sentence_cosine": intra,
        "cross_sentence_cosine": cross,
        "sentence_signal": M.sentence_signal(intra, cross),
        "separability_ratio": stage.separability(),
        "token_norm": stage.token_norm(),
    }.items()}


def _massive_curves(cloud: _Cloud, result: Measurement) -> dict:
    """Issue 23's curves from the kept sums (= measure.massive_curves); the dimensions behind
    the two shares go into result.massive_dims."""
    norm_share, norm_dims = M.top_share(cloud.energy)
    eligible = (cloud.n >= 2).sum().to(cloud.cos_terms.dtype)
    cos_share, cos_dims = M.top_share(cloud.cos_terms / eligible, min_total=M.MASSIVE_MIN_COSINE)
    result.massive_dims = {"k": M.MASSIVE_DIMS, "norm": MS.massive_dims_json(norm_share, norm_dims),
                           "cosine": MS.massive_dims_json(cos_share, cos_dims)}
    curves = {"massive_dims_norm_share": norm_share, "massive_dims_cosine_share": cos_share}
    curves.update({f"first_position_{k}": torch.nanmean(v, 1) for k, v in cloud.first.items()})
    return curves


def _finish(sentences, poolings, cloud: _Cloud, proj: _Cloud | None, sample: _Sample, kept,
            prov: dict, final: _Cloud | None = None) -> Measurement:
    mini = _mini_states(kept, prov)
    depths = cloud.means.shape[0]
    result = Measurement(model=prov.get("model", "?"), sentence_set=sentences.name, depths=depths,
                         provenance=dict(prov))
    eligible = (cloud.n >= 2).tolist()
    result.excluded = [
        {"sentence": t, "reason": "fewer than 2 content tokens: left out of intra_sentence_cosine, "
         "delta_coherence and pc1_mean_cosine"}
        for t, ok in zip(sentences.sentences, eligible) if not ok
    ]
    for item in result.excluded:
        warnings.warn(f"{item['sentence']!r}: {item['reason']}", stacklevel=3)

    intra, cross = torch.nanmean(cloud.intra, 1), cloud.cross()
    curves = {
        "intra_sentence_cosine": intra,
        "cross_sentence_cosine": cross,
        "sentence_signal": M.sentence_signal(intra, cross),
        "separability_ratio": cloud.separability(),
        "token_norm": cloud.token_norm(),
        "pc1_mean_cosine": torch.nanmean(cloud.pc1, 1),
        "delta_coherence": torch.nanmean(cloud.delta, 1),
    }
    curves.update(_massive_curves(cloud, result))
    cloud.means = None  # the largest per-sentence store, no longer needed
    curves["cls_mean_alignment"] = cloud.cls_align.mean(1)
    drift = cloud.drift
    curves["meanpool_drift"] = drift.mean(1)
    curves["meanpool_drift[min]"] = drift.amin(1)
    curves["meanpool_drift[max]"] = drift.amax(1)
    result.per_sentence["meanpool_drift"] = MS._list(drift.T)
    result.per_sentence["sentences"] = list(sentences.sentences)

    parts = [_pooled(cloud, mini, sentences, pooling) for pooling in poolings]
    if sample.size >= 2:  # else result.mark_undefined gives the reason
        curves.update(trajectory_curves(sample.depth_major()))
    sample.tokens = None
    result.scalars["pca_tokens"] = sample.total
    if sample.sampled:
        result.scalars["pca_tokens_sampled"] = sample.size
    curves.update(MS.token_pairs(mini, sentences))
    if sentences.retrieval:
        curves.update(MS.maxsim(mini, sentences))

    MS.merge_pooled(result, curves, poolings, parts)

    if proj is not None:
        result.proj = _stage_metrics(proj)
    if final is not None:  # the final norm's output (stage `final`)
        result.final = _stage_metrics(final)

    result.curves = MS._jsonify(curves)
    result.scalars = MS._jsonify(result.scalars)
    result.per_dimension = MS._jsonify(result.per_dimension)
    return result  # the caller adds the open question's curves, then result.mark_undefined

