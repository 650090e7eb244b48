"""Bootstrap intervals over sentences for the curves and scalars of a Measurement (issue 24).

One seeded set of resamples serves every metric of a measurement: `Resampler(S)` draws
R = 1,000 resamples of the S sentence slots with replacement (numpy's seeded Generator,
`integers`, the same draw scipy.stats.bootstrap makes) and keeps them as counts W [R, S]
(how often each slot is drawn). A replicate of a metric is the metric of the resampled
sentence list (a slot drawn twice counts twice, exactly as a sentence file that repeats a
sentence would), recomputed from per-sentence contributions or sufficient statistics, never
from the states:

- a mean over sentences (intra, pc1, delta coherence, CLS alignment, drift, the word-class
  curves and shares): a weighted mean of the per-sentence values, W @ values;
- a ratio of sums (token_norm, cross_sentence_cosine, pair_cosine_all): the weighted sums
  of its per-sentence numerators and denominators (for a mean over pairs of different
  sentences, the pairs within one sentence's copies are left out: `_pair_ratio`); the cross-sentence and pool unit-vector
  sums are [P, H] per sentence, so their weighted sums W @ U are accumulated batch by batch
  (`add`) and the per-sentence vectors are not kept;
- separability_ratio: B / W of the resampled set from the kept content means (the resampled
  grand mean, then each slot's distance to it);
- write depth (histogram, late_write_fraction): the argmax over depths of the weighted sums
  of |pool step| per dimension, accumulated batch by batch;
- the massive-dimension shares (issue 23): the top-K share of the weighted sums of each
  sentence's per-dimension energies, and of its per-dimension cosine terms over the
  resample's eligible sentences, accumulated batch by batch ([R, P, H] each), the K
  dimensions chosen again in every resample; the first-position metrics are means over
  sentences.

Intervals are percentile intervals (2.5% and 97.5% of the R replicates, numpy's linear
interpolation as torch.nanquantile computes it). The same replicates give, for every curve,
the intervals of its differences between two depths (`diff_lo[d][e]`, `diff_hi[d][e]`: of
c[e] - c[d]), so that a claim comparing two depths of one curve (a dip, a peak at the last
depth) reads a paired interval, not two overlapping marginal ones.

Both measuring paths (measure.measure and the streaming engine) fill the same `Stats`
and call `intervals_json`, so they give the same intervals. docs/metrics.md lists what has
no interval and why (`INTERVAL_NOT_COMPUTED`).
"""
from __future__ import annotations

import numpy as np
import torch

N_RESAMPLES = 1000
LEVEL = 0.95
SEED = 0

# metric (or its bracketed family) -> why it has no bootstrap interval
INTERVAL_NOT_COMPUTED = {
    "pair_cosine": "one pair of texts: there are no sentences to resample",
    "band_cosine": "one pair of texts: there are no sentences to resample",
    "token_pair_cosine": "one pair of tokens: there are no sentences to resample",
    "discriminative_dims": "one pair of texts: there are no sentences to resample",
    "recall_at_k": "a mean over retrieval queries (a handful), not over the sentence set; not resampled",
    "maxsim_recall_at_k": "a mean over retrieval queries (a handful), not over the sentence set; not resampled",
    "fixed_pca_step": "a PCA fit on all content tokens per depth: 1,000 refits would cost about 1,000 times "
                      "the fits, and a PCA's axes are not a sum of per-sentence contributions",
    "refit_pca_step": "as fixed_pca_step: a PCA fit per depth, not a sum of per-sentence contributions",
    "teleological_distance": "as fixed_pca_step: a PCA fit per depth, not a sum of per-sentence contributions",
    "meanpool_drift[min]": "an extreme over sentences: a resample's minimum is never below the set's, so a "
                           "percentile interval of it is degenerate; per_sentence has every value",
    "meanpool_drift[max]": "an extreme over sentences: a resample's maximum is never above the set's, so a "
                           "percentile interval of it is degenerate; per_sentence has every value",
    "dim_correlation_mean": "five weighted sums per dimension and resample (the cost of a second write-depth "
                            "pass); no MiniLM or MPNet claim reads it",
    "dims_r_above_0.7": "as dim_correlation_mean",
    "dims_r_below_-0.7": "as dim_correlation_mean",
    "pca_tokens": "a count of this set's tokens, not an estimate",
    "pca_tokens_sampled": "a count, not an estimate",
    "pairs": "a count of this set's token pairs, not an estimate",
    "tokens": "a count of this set's tokens, not an estimate",
}
FEW_SENTENCES = "needs at least 2 sentences to resample"


def not_computed_reason(name: str) -> str:
    """Why the curve or scalar `name` has no interval."""
    for key in (name, name.split("[")[0], name.split("@")[0], name.split("[")[0].split("@")[0]):
        if INTERVAL_NOT_COMPUTED.get(key):
            return INTERVAL_NOT_COMPUTED[key]
    return "not resampled"


def provenance(n_sentences: int) -> dict:
    return {"method": "percentile bootstrap over sentences", "resamples": N_RESAMPLES, "level": LEVEL,
            "seed": SEED, "sentences": n_sentences,
            "rng": "numpy.random.default_rng(seed).integers(0, S, (resamples, S))"}


def device_for(device) -> torch.device:
    """Where the resamples live: with the states, except on MPS (no float64): the CPU."""
    device = torch.device(device)
    return torch.device("cpu") if device.type == "mps" else device


class Resampler:
    """The resample counts W [R, S] of S sentence slots, and weighted sums over batches."""

    def __init__(self, n: int, resamples: int = N_RESAMPLES, seed: int = SEED, device="cpu"):
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, n, size=(resamples, n))
        counts = np.bincount((idx + n * np.arange(resamples)[:, None]).ravel(), minlength=resamples * n)
        # counts are small integers: exact in float32, whose products are twice as fast
        self.w = torch.from_numpy(counts.reshape(resamples, n).astype(np.float32)).to(device)
        self.n = n
        self.sums: dict[str, torch.Tensor] = {}
        self._staged: dict[str, list] = {}
        self._w64: torch.Tensor | None = None
        self._w2: torch.Tensor | None = None

    STAGE_ROWS = 512  # sentences gathered before one product: a product per batch of 64 spent its
    # time writing the [R, P x H] result (and converting it to float64), not multiplying

    def add(self, name: str, slots: torch.Tensor, values: torch.Tensor) -> None:
        """sums[name] += W[:, slots] @ values, values [B, ...] of the batch's slots (float32
        products, float64 running sum): the resampled sums of a per-sentence vector. The
        batches are staged (float32) and multiplied STAGE_ROWS sentences at a time."""
        flat = values.reshape(values.shape[0], -1).to(device=self.w.device, dtype=torch.float32)
        stage = self._staged.setdefault(name, [])
        stage.append((slots.to(self.w.device), flat))
        if sum(v.shape[0] for _, v in stage) >= self.STAGE_ROWS:
            self._flush(name)

    def _flush(self, name: str) -> None:
        stage = self._staged.pop(name, [])
        if not stage:
            return
        slots = torch.cat([s for s, _ in stage])
        flat = torch.cat([v for _, v in stage]) if len(stage) > 1 else stage[0][1]
        part = (self.w[:, slots] @ flat).double()
        if name in self.sums:
            self.sums[name] += part
        else:
            self.sums[name] = part

    def total(self, name: str, shape: tuple) -> torch.Tensor:
        self._flush(name)
        return self.sums[name].reshape(self.w.shape[0], *shape)

    def has(self, name: str) -> bool:
        return name in self.sums or name in self._staged

    def weighted(self, values: torch.Tensor) -> torch.Tensor:
        """Weighted sums over slots: values [..., S] (float64) -> [R, ...]."""
        if self._w64 is None:
            self._w64 = self.w.double()
        v = values.to(device=self.w.device, dtype=torch.float64)
        return (v.reshape(-1, self.n) @ self._w64.T).T.reshape(self.w.shape[0], *values.shape[:-1])

    def weighted_sq(self, values: torch.Tensor) -> torch.Tensor:
        """As `weighted`, with the squared counts w_s^2 (the pairs of a slot's copies)."""
        if self._w2 is None:
            self._w2 = self.w.double() ** 2
        v = values.to(device=self.w.device, dtype=torch.float64)
        return (v.reshape(-1, self.n) @ self._w2.T).T.reshape(self.w.shape[0], *values.shape[:-1])

    def nanmean(self, values: torch.Tensor) -> torch.Tensor:
        """The resampled means over the non-NaN slots: values [..., S] -> [R, ...]."""
        ok = ~torch.isnan(values)
        return self.weighted(torch.where(ok, values, torch.zeros_like(values))) / self.weighted(ok.double())


def _pair_ratio(res: Resampler, key: str, sq: torch.Tensor, n: torch.Tensor, shape) -> torch.Tensor:
    """A mean cosine over the pairs of tokens (or pools) of two different sentences, in each
    resample: (|sum_s w_s U_s|^2 - sum_s w_s^2 |U_s|^2) / ((sum_s w_s n_s)^2 - sum_s w_s^2 n_s^2).

    The w_s^2 terms leave out every pair within one sentence's copies: two copies of a
    sentence drawn into a resample are the same sentence, not two different ones (counting
    their pairs would add within-sentence cosines to a cross-sentence mean and bias every
    replicate upwards; on MiniLM's last depth it moved the whole interval above the point
    estimate). sq [P, S] (|U_s|^2); n [S] -> [R, P]."""
    total = res.total(key, shape)  # [R, P, H]
    num = (total * total).sum(-1) - res.weighted_sq(sq)
    nn = n.double()
    den = res.weighted(nn)[:, None] ** 2 - res.weighted_sq(nn * nn)[:, None]
    return num / den


def separability(res: Resampler, means: torch.Tensor, within: torch.Tensor) -> torch.Tensor:
    """separability_ratio of each resample: means [P, S, H], within [P, S] -> [R, P].

    Per depth: the slots' means centred on the set's mean (float32 from there), the
    resampled grand mean's offset delta_r = sum_s w_rs c_s / S, each slot's distance
    |c_s - delta_r| = sqrt(|c_s|^2 - 2 c_s.delta_r + |delta_r|^2), B = sum_s w_rs dist / S."""
    S = res.n
    out = []
    w = res.w
    for d in range(means.shape[0]):
        m = means[d].to(w.device, torch.float64)
        c = (m - m.mean(0)).to(torch.float32)  # [S, H]
        delta = (w @ c) / S  # [R, H]
        # |c_s - delta_r|^2 in float32: c is centred and delta small next to it, so the
        # expansion loses no digit that matters (about 1e-7 of |c_s|^2)
        dist2 = torch.addmm((delta * delta).sum(1, keepdim=True), delta, c.T, alpha=-2)  # [R, S]
        dist2 += (c * c).sum(1)
        b = (w * dist2.clamp_min_(0).sqrt_()).sum(1, dtype=torch.float64) / S
        out.append(b)
    b = torch.stack(out, 1)
    return b / (res.weighted(within.double()) / S)


class Stats:
    """Per-sentence contributions of one (model, set), filled by either measuring path.

    Keys of `per` (float64 [P, S] unless noted): intra, pc1, delta (NaN where a sentence is
    left out), within, norm_sum, unit_sq (|U_s|^2, U_s the sum of s's unit vectors), n
    (|C_s|, [S]); with pools cls_align, drift; with classes class_sums [P, S, 3] and
    class_pairs [S, 3]; with pool_unit_sq [P, S] the pools' |unit|^2. The same with the
    suffix "@attn" for the blocks' post-attention states (P - 1 depths). `sep` holds the
    separability replicates (`separability`, called while the content means are held).
    The resampler holds the batch-accumulated sums "unit" (and "unit@attn"), "pool_unit"
    and "steps:<pooling>", and (issue 23) "energy" and "cosdim" (each sentence's sums of
    h_i[k]^2 and its cosine terms, metrics.cosine_dim_contributions_per_sentence with 0 for
    a sentence left out), with first_norm_share, first_norm_ratio, first_cosine in `per`."""

    def __init__(self, res: Resampler):
        self.res = res
        self.per: dict[str, torch.Tensor] = {}
        self.sep: dict[str, torch.Tensor] = {}  # suffix -> separability replicates [R, P]
        self.hidden = 0

    def separability(self, sfx: str, means: torch.Tensor, within: torch.Tensor) -> None:
        """Resample separability now, while the caller holds the content means [P, S, H]."""
        self.sep[sfx] = separability(self.res, means, within)


def _q(reps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The percentile interval of replicates [R, ...] along R; a replicate that is not finite
    (a resample that cannot define the metric) is left out."""
    finite = torch.isfinite(reps)
    q = torch.tensor([(1 - LEVEL) / 2, (1 + LEVEL) / 2], dtype=reps.dtype, device=reps.device)
    if bool(finite.all()):  # torch.quantile: the same numbers, several times faster than nanquantile
        lo, hi = torch.quantile(reps, q, dim=0)
    else:
        lo, hi = torch.nanquantile(torch.where(finite, reps, torch.full_like(reps, float("nan"))), q, dim=0)
    return lo, hi


def _clean(t: torch.Tensor):
    out = t.detach().cpu().double().tolist()

    def fix(x):
        if isinstance(x, list):
            return [fix(v) for v in x]
        return None if x is None or not np.isfinite(x) else x

    return fix(out)


def curve_interval(reps: torch.Tensor) -> dict:
    """{lo, hi, diff_lo, diff_hi} of curve replicates [R, P]: per depth, and of c[e] - c[d]."""
    lo, hi = _q(reps)
    dlo, dhi = _q(reps[:, None, :] - reps[:, :, None])  # [d][e]: c[e] - c[d]
    return {"lo": _clean(lo), "hi": _clean(hi), "diff_lo": _clean(dlo), "diff_hi": _clean(dhi)}


def scalar_interval(reps: torch.Tensor) -> dict:
    lo, hi = _q(reps)
    return {"lo": _clean(lo), "hi": _clean(hi)}


def _with_nan0(reps: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.full_like(reps[:, :1], float("nan")), reps], 1)


def _first_argmax(t: torch.Tensor) -> torch.Tensor:
    """t.argmax(1) (the first on ties) for t [R, D, H], as D elementwise comparisons: a
    strided argmax over the middle axis took 0.16 s for MiniLM's [1000, 6, 384]."""
    best, idx = t[:, 0].clone(), torch.zeros(t[:, 0].shape, dtype=torch.long, device=t.device)
    for d in range(1, t.shape[1]):
        better = t[:, d] > best
        best = torch.where(better, t[:, d], best)
        idx.masked_fill_(better, d)
    return idx


def replicates(stats: Stats, poolings=("mean",), classes: bool = False, attn: bool = False
               ) -> tuple[dict, dict, dict]:
    """(curve name -> [R, P], scalar name -> [R], pooling -> {"curves", "scalars"}) of every
    resampled metric: the mean pooling's at the top level, others under their pooling."""
    res, per = stats.res, stats.per
    H = stats.hidden
    curves: dict[str, torch.Tensor] = {}
    scalars: dict[str, torch.Tensor] = {}
    pooled: dict[str, dict] = {}

    def cloud(sfx: str, wrap) -> None:
        P = per["intra" + sfx].shape[0]
        intra = res.nanmean(per["intra" + sfx])
        cross = _pair_ratio(res, "unit" + sfx, per["unit_sq" + sfx], per["n"], (P, H))
        curves["intra_sentence_cosine" + sfx] = wrap(intra)
        curves["cross_sentence_cosine" + sfx] = wrap(cross)
        curves["separability_ratio" + sfx] = wrap(stats.sep[sfx])
        if not sfx:
            curves["sentence_signal"] = intra - cross
            curves["token_norm"] = res.weighted(per["norm_sum"]) / res.weighted(per["n"].double())[:, None]
            curves["pc1_mean_cosine"] = res.nanmean(per["pc1"])
            curves["delta_coherence"] = res.nanmean(per["delta"])
            curves["cls_mean_alignment"] = res.weighted(per["cls_align"]) / res.n
            curves["meanpool_drift"] = res.weighted(per["drift"]) / res.n
        if classes:
            from .openquestion import CLASSES, INTRA

            sums, pairs = per["class_sums" + sfx], per["class_pairs"].double()  # [P, S, 3], [S, 3]
            ratio = torch.where(pairs > 0, sums / pairs.clamp_min(1), torch.full_like(sums, float("nan")))
            by_class = res.nanmean(ratio.permute(0, 2, 1))  # [R, P, 3]
            for k, name in enumerate(CLASSES):
                curves[f"{INTRA}[{name}]{sfx}"] = wrap(by_class[..., k])
            if not sfx:
                n = per["n"].double()
                total = n * (n - 1) / 2
                share = torch.where((n >= 2)[None, :, None], sums / total.clamp_min(1)[None, :, None],
                                    torch.full_like(sums, float("nan")))
                shares = res.nanmean(share.permute(0, 2, 1))
                for k, name in enumerate(CLASSES):
                    curves[f"{INTRA}_share[{name}]"] = shares[..., k]

    cloud("", lambda r: r)
    if res.has("energy"):  # issue 23: the massive-activation curves
        from . import metrics as M

        P = per["intra"].shape[0]
        curves["massive_dims_norm_share"] = M.top_share(res.total("energy", (P, H)), dims=False)[0]
        # the cosine terms are sums over the resample's eligible sentences: the share is the same
        # of the sums as of the means, and the threshold applies to the mean (sum / count)
        eligible = res.weighted((per["n"] >= 2).double())  # [R]: the resample's sentences with pairs
        curves["massive_dims_cosine_share"] = M.top_share(
            res.total("cosdim", (P, H)), min_total=M.MASSIVE_MIN_COSINE * eligible[:, None], dims=False)[0]
        for name in ("norm_share", "norm_ratio", "cosine"):
            curves[f"first_position_{name}"] = res.nanmean(per[f"first_{name}"])
    if attn:
        cloud("@attn", _with_nan0)
    if classes and res.has("pool_unit"):
        P = per["intra"].shape[0]
        S = res.n
        total = res.total("pool_unit", (P, H))
        # pairs of different sentences, copies of one sentence left out (as _pair_ratio)
        pairs = S * S - (res.w.double() ** 2).sum(1)  # [R]
        pca = ((total * total).sum(-1) - res.weighted_sq(per["pool_unit_sq"])) / pairs[:, None]
        curves["pair_cosine_all"] = pca
        safe = torch.where(torch.isnan(pca), torch.full_like(pca, float("-inf")), pca)
        peak = safe.argmax(1).double()
        scalars["pair_cosine_all_peak_depth"] = peak
        scalars["pair_cosine_all_peak_fraction"] = peak / max(P - 1, 1)
    for pooling in poolings:
        key = f"steps:{pooling}"
        if not res.has(key):
            continue
        P = per["intra"].shape[0]
        wd = _first_argmax(res.total(key, (P - 1, H))) + 1  # [R, H]
        hist = torch.nn.functional.one_hot(wd, P).sum(1).double()  # [R, P]
        late = (wd >= P - 2).double().mean(1)
        target = pooled.setdefault(pooling, {"curves": {}, "scalars": {}})
        target["curves"]["write_depth_histogram"] = hist
        target["scalars"]["late_write_fraction"] = late
    return curves, scalars, pooled


def intervals_json(stats: Stats, poolings=("mean",), classes: bool = False, attn: bool = False) -> dict:
    """{"intervals", "scalar_intervals", "by_pooling": {pooling: {...}}} as JSON-ready dicts."""
    curves, scalars, pooled = replicates(stats, poolings, classes, attn)
    out = {"intervals": {k: curve_interval(v) for k, v in curves.items()},
           "scalar_intervals": {k: scalar_interval(v) for k, v in scalars.items()},
           "by_pooling": {}}
    for pooling, part in pooled.items():
        iv = {k: curve_interval(v) for k, v in part["curves"].items()}
        sc = {k: scalar_interval(v) for k, v in part["scalars"].items()}
        if pooling == "mean":
            out["intervals"].update(iv)
            out["scalar_intervals"].update(sc)
        else:
            out["by_pooling"][pooling] = {"intervals": iv, "scalar_intervals": sc}
    return out


def attach(result, stats: Stats | None, poolings=("mean",), classes: bool = False, attn: bool = False) -> None:
    """Put the intervals into a Measurement (in place), with a reason for every curve and
    scalar that has none. stats None (fewer than 2 sentences): no interval anywhere."""
    result.provenance["bootstrap"] = provenance(stats.res.n if stats is not None else 0)
    got = intervals_json(stats, poolings, classes, attn) if stats is not None else {
        "intervals": {}, "scalar_intervals": {}, "by_pooling": {}}
    result.intervals = got["intervals"]
    result.scalar_intervals = got["scalar_intervals"]

    def reasons(curves, scalars, have_c, have_s) -> dict:
        why = {}
        for name in [*curves, *scalars]:
            if name not in have_c and name not in have_s:
                why[name] = FEW_SENTENCES if stats is None else not_computed_reason(name)
        return why

    result.interval_not_computed = reasons(result.curves, result.scalars, result.intervals, result.scalar_intervals)
    for pooling, part in result.by_pooling.items():
        mine = got["by_pooling"].get(pooling, {"intervals": {}, "scalar_intervals": {}})
        part["intervals"] = mine["intervals"]
        part["scalar_intervals"] = mine["scalar_intervals"]
        part["interval_not_computed"] = reasons(part.get("curves", {}), part.get("scalars", {}),
                                                mine["intervals"], mine["scalar_intervals"])
