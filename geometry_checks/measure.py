"""From captured states to a Measurement: every METRICS.md metric of one (model, sentence set).

This module only orchestrates: it picks the rows of a LayerStates that each metric
needs (token-cloud sentences, pair texts, retrieval queries and pool) and calls the
pure functions of `metrics`. A Measurement is plain data (lists and floats) that
serialises to the JSON `measure` writes; its layout is documented in docs/measurement.md.
"""
from __future__ import annotations

import difflib
import math
import warnings

import torch

from . import intervals as IV
from . import metrics as M
from .capture import LayerStates
from .errors import InputError
from .openquestion import open_question_curves, word_class_masks
from .result import Measurement, mark_undefined
from .sentences import SentenceSet

RECALL_KS = (1, 3, 5)


def _list(t: torch.Tensor) -> list:
    """A tensor as a JSON-ready list, NaN as None."""
    t = t.detach().cpu()
    out = (t if not t.is_floating_point() else t.double()).tolist()
    if isinstance(out, float):
        return None if math.isnan(out) else out
    if not t.is_floating_point() or not bool(t.isnan().any()):
        return out  # nothing to replace: no walk over the elements (a [S, P] table is ~14,000)

    def clean(x):
        if isinstance(x, list):
            return [clean(v) for v in x]
        return None if isinstance(x, float) and math.isnan(x) else x

    return clean(out)


# --------------------------------------------------------------------------- pieces


def _rows(states: LayerStates, texts, role: str = "doc") -> list[int]:
    return [states.index(t, role) for t in texts]


def no_content_error(sentences: SentenceSet | None, text: str, model: str = "the model") -> InputError:
    """A text with no content token: one line naming its file and line (issue 14)."""
    where = f"{sentences.where(text)}: " if sentences is not None else ""
    shown = text if len(text) <= 60 else text[:59] + "…"
    return InputError(f"{where}sentence {shown!r} has no content token for {model}: its tokenizer maps it "
                      "to special tokens only (such as [UNK]); remove it or rephrase it")


def _check_content(states: LayerStates, rows: list[int], sentences: SentenceSet | None = None) -> None:
    counts = states.content[rows].sum(1).tolist()
    for row, n in zip(rows, counts):
        if n == 0:
            raise no_content_error(sentences, states.texts[row], states.provenance.get("model", "the model"))


def token_cloud(st: LayerStates) -> tuple[dict, list]:
    """Token-cloud curves of the rows of `st`, and the sentences left out of pair metrics."""
    x, c = st.states, st.content
    excluded = [
        {"sentence": t, "reason": "fewer than 2 content tokens: left out of intra_sentence_cosine, "
         "delta_coherence and pc1_mean_cosine"}
        for t, ok in zip(st.texts, M.pair_eligible(c).tolist()) if not ok
    ]
    for item in excluded:
        warnings.warn(f"{item['sentence']!r}: {item['reason']}", stacklevel=3)
    intra = M.intra_sentence_cosine(x, c)
    cross = M.cross_sentence_cosine(x, c)
    curves = {
        "intra_sentence_cosine": intra,
        "cross_sentence_cosine": cross,
        "sentence_signal": M.sentence_signal(intra, cross),
        "separability_ratio": M.separability_ratio(x, c),
        "token_norm": M.token_norm(x, c),
    }
    curves["pc1_mean_cosine"] = M.pc1_mean_cosine(x, c)
    curves["delta_coherence"] = M.delta_coherence(x, c)
    return curves, excluded


FIRST_POSITION = ("norm_share", "norm_ratio", "cosine")  # first_position_<name>: metrics.first_position_per_sentence


def massive_dims_json(share: torch.Tensor, dims: torch.Tensor) -> list:
    """The K dimension indices of each depth (largest first), None where the share is None."""
    return [None if math.isnan(v) else d for v, d in zip(share.detach().cpu().double().tolist(), dims.tolist())]


def massive_curves(x: torch.Tensor, c: torch.Tensor) -> tuple[dict, dict]:
    """Issue 23's massive-activation curves of states x [P, S, T, H] and content c [S, T], and
    the dimensions behind the two shares (Measurement.massive_dims)."""
    norm_share, norm_dims = M.massive_dims_norm_share(x, c)
    cos_share, cos_dims = M.massive_dims_cosine_share(x, c)
    curves = {"massive_dims_norm_share": norm_share, "massive_dims_cosine_share": cos_share,
              **M.first_position_metrics(x, c)}
    return curves, {"k": M.MASSIVE_DIMS, "norm": massive_dims_json(norm_share, norm_dims),
                    "cosine": massive_dims_json(cos_share, cos_dims)}


def aligned_word_pairs(words_a: list[str], words_b: list[str]) -> list[tuple[int, int]]:
    """Word positions where two sentences differ one-for-one (difflib `replace` blocks of
    equal length, compared case-insensitively): the words a token_pair_cosine compares."""
    matcher = difflib.SequenceMatcher(a=[w.lower() for w in words_a], b=[w.lower() for w in words_b], autojunk=False)
    pairs = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "replace" and i2 - i1 == j2 - j1:
            pairs.extend(zip(range(i1, i2), range(j1, j2)))
    return pairs


def _first_token(states: LayerStates, row: int, word: int) -> int:
    return states.word_ids[row].index(word)


def pooled(states: LayerStates, sentences: SentenceSet, pooling: str) -> dict:
    """The pooled metrics under one pooling: curves, scalars, per_dimension, discriminative dims."""
    out = {"curves": {}, "scalars": {}, "per_dimension": {}, "discriminative_dims": {}, "not_computed": {}}

    def pool(rows):  # `cls`: the model's summary token (a causal model's last, never its first)
        sub = states.select(rows)
        return M.mean_pool(sub.states, sub.attn) if pooling == "mean" else M.pool(sub.states, sub.attn, pooling,
                                                                                   sub.summary)

    rows = _rows(states, sentences.sentences)
    pools = pool(rows)  # [P, S, H]
    curves, scalars = out["curves"], out["scalars"]
    if len(rows) >= 2:
        curves["write_depth_histogram"] = M.write_depth_histogram(pools)
        scalars["late_write_fraction"] = M.late_write_fraction(pools)
        out["per_dimension"]["write_depth"] = M.write_depth(pools)
        r = M.dim_correlation(pools)
        out["per_dimension"]["dim_correlation"] = r
        scalars["dim_correlation_mean"] = torch.nanmean(r)
        scalars["dims_r_above_0.7"] = int((r > 0.7).sum())
        scalars["dims_r_below_-0.7"] = int((r < -0.7).sum())
    else:
        out["not_computed"]["dim_correlation"] = "needs at least 2 sentences"

    if not sentences.pairs:
        out["not_computed"]["pair_cosine"] = "the sentence file has no pairs"
    for name, (a, b) in sentences.pairs.items():
        pa, pb = pool(_rows(states, [a, b])).unbind(1)
        curves[f"pair_cosine[{name}]"] = M.pair_cosine(pa, pb)
        for lo, hi in M.bands_for(pa.shape[-1]):
            curves[f"band_cosine[{name},{lo}:{hi}]"] = M.band_cosine(pa, pb, lo, hi)
        k = min(5, pa.shape[-1])
        dims, dcurves, half = M.discriminative_dims(pa, pb, k)
        out["discriminative_dims"][name] = {
            "dims": dims.tolist(), "curves": _list(dcurves), "half_rise": half.tolist()}

    if not sentences.retrieval:
        out["not_computed"]["recall_at_k"] = "the sentence file has no retrieval items"
        return out
    pool_texts = sentences.retrieval_pool
    pool_rows = _rows(states, pool_texts)
    pool_vecs = pool(pool_rows)
    for kind in sentences.retrieval_kinds:
        items = [r for r in sentences.retrieval if r.kind == kind]
        q_vecs = pool(_rows(states, [r.query for r in items], "query"))
        pos = torch.tensor([pool_texts.index(r.positive) for r in items])
        qidx = torch.tensor([pool_texts.index(r.query) if r.query in pool_texts else -1 for r in items])
        for k in RECALL_KS:
            if k < len(pool_texts):
                curves[f"recall_at_k[{kind},{k}]"] = M.recall_at_k(q_vecs, pool_vecs, pos, qidx, k)
            else:
                out["not_computed"][f"recall_at_k[{kind},{k}]"] = (
                    f"needs more than {k} candidate texts (the retrieval pool has {len(pool_texts)})")
    return out


def maxsim(states: LayerStates, sentences: SentenceSet) -> dict:
    """maxsim_recall_at_k curves (late interaction over content tokens)."""
    curves = {}
    pool_texts = sentences.retrieval_pool
    docs = states.select(_rows(states, pool_texts))
    doc_units = M.maxsim_units(docs.states)  # once for every query
    for kind in sentences.retrieval_kinds:
        items = [r for r in sentences.retrieval if r.kind == kind]
        scores = []
        for item in items:
            q = states.select([states.index(item.query, "query")])
            scores.append(M.maxsim_scores_of_units(M.maxsim_units(q.states[:, 0]), q.content[0], doc_units,
                                                   docs.content))
        scores = torch.stack(scores, 1)  # [P, Q, N]
        pos = torch.tensor([pool_texts.index(r.positive) for r in items])
        qidx = torch.tensor([pool_texts.index(r.query) if r.query in pool_texts else -1 for r in items])
        for k in RECALL_KS:
            if k < len(pool_texts):
                curves[f"maxsim_recall_at_k[{kind},{k}]"] = M.maxsim_recall_at_k(scores, pos, qidx, k)
    return curves


def token_pairs(states: LayerStates, sentences: SentenceSet) -> dict:
    curves = {}
    for name, (a, b) in sentences.pairs.items():
        ra, rb = states.index(a), states.index(b)
        wa, wb = states.words(ra), states.words(rb)
        for i, j in aligned_word_pairs(wa, wb):
            va = states.states[:, ra, _first_token(states, ra, i)]
            vb = states.states[:, rb, _first_token(states, rb, j)]
            curves[f"token_pair_cosine[{name},{wa[i].lower()},{wb[j].lower()}]"] = M.token_pair_cosine(va, vb)
    return curves


def trajectories(st: LayerStates, max_tokens: int | None = None, seed: int = 0) -> tuple[dict, dict]:
    """PCA trajectory curves over all content tokens (a seeded sample above max_tokens)."""
    tokens = M.content_tokens(st.states, st.content)  # [P, N, H]
    info = {"tokens": int(tokens.shape[1])}
    if max_tokens is not None and tokens.shape[1] > max_tokens:
        gen = torch.Generator().manual_seed(seed)
        keep = torch.randperm(tokens.shape[1], generator=gen)[:max_tokens].sort().values
        tokens = tokens[:, keep.to(tokens.device)]
        info.update(sampled=max_tokens, seed=seed)
    return {
        "fixed_pca_step": M.fixed_pca_step(tokens),
        "refit_pca_step": M.refit_pca_step(tokens),
        "teleological_distance": M.teleological_distance(tokens),
    }, info


# --------------------------------------------------------------------------- all


def measure(
    states: LayerStates,
    sentences: SentenceSet,
    poolings: tuple[str, ...] = ("mean",),
    max_pca_tokens: int | None = None,
    sublayers: bool = False,
) -> Measurement:
    """Every metric of METRICS.md for one captured sentence set (mean pooling first).

    sublayers: also the open question's curves (`openquestion.open_question_curves`): the
    `@attn` curves (from states captured with sublayers=True), the word-class curves and
    `pair_cosine_all`.
    """
    rows = _rows(states, sentences.sentences)
    _check_content(states, list(range(len(states.texts))), sentences)
    cloud = states.select(rows)
    prov = states.provenance
    result = Measurement(
        model=prov.get("model", "?"), sentence_set=sentences.name, depths=states.depths, provenance=dict(prov)
    )
    curves, excluded = token_cloud(cloud)
    result.excluded = excluded
    massive, result.massive_dims = massive_curves(cloud.states, cloud.content)
    curves.update(massive)
    curves["cls_mean_alignment"] = M.cls_mean_alignment(cloud.states, cloud.attn, cloud.summary)
    drift = M.meanpool_drift(M.mean_pool(cloud.states, cloud.attn))  # [P, S]
    curves["meanpool_drift"] = drift.mean(1)
    curves["meanpool_drift[min]"] = drift.amin(1)
    curves["meanpool_drift[max]"] = drift.amax(1)
    result.per_sentence["meanpool_drift"] = _list(drift.T)
    result.per_sentence["sentences"] = list(sentences.sentences)
    if int(cloud.content.sum()) >= 2:
        traj, traj_info = trajectories(cloud, max_pca_tokens)
        curves.update(traj)
    else:  # mark_undefined gives the reason
        traj_info = {"tokens": int(cloud.content.sum())}
    result.scalars["pca_tokens"] = traj_info["tokens"]
    if "sampled" in traj_info:
        result.scalars["pca_tokens_sampled"] = traj_info["sampled"]
    curves.update(token_pairs(states, sentences))
    if sentences.retrieval:
        curves.update(maxsim(states, sentences))

    merge_pooled(result, curves, poolings, [pooled(states, sentences, p) for p in poolings])

    if sublayers:
        oq_curves, oq_scalars, oq_missing = open_question_curves(cloud)
        curves.update(oq_curves)
        result.scalars.update(oq_scalars)
        result.not_computed.update(oq_missing)

    if cloud.proj is not None:
        result.proj = {k: _list(v)[0] for k, v in _proj_cloud(cloud).items()}
    if cloud.final is not None:
        result.final = {k: _list(v)[0] for k, v in _proj_cloud(cloud, cloud.final).items()}

    result.curves = _jsonify(curves)
    result.scalars = _jsonify(result.scalars)
    result.per_dimension = _jsonify(result.per_dimension)
    mark_undefined(result, len(sentences.sentences))
    stats = bootstrap_stats(states, cloud, poolings, sublayers) if len(rows) >= 2 else None
    IV.attach(result, stats, poolings, classes=sublayers, attn=sublayers and "attn" in cloud.sublayers)
    return result


def bootstrap_stats(states: LayerStates, cloud: LayerStates, poolings, sublayers: bool) -> IV.Stats:
    """The per-sentence contributions behind the bootstrap intervals (intervals.Stats), from
    metrics.py's per-sentence functions: the reference the streaming engine is held to."""
    x, c, a = cloud.states, cloud.content, cloud.attn
    S = x.shape[1]
    res = IV.Resampler(S, device=IV.device_for(x.device))
    stats = IV.Stats(res)
    stats.hidden = x.shape[-1]
    slots = torch.arange(S, device=x.device)
    per = stats.per
    per["n"] = M.content_counts(c)

    def token_cloud_stats(h: torch.Tensor, sfx: str) -> None:
        per["intra" + sfx] = M.intra_sentence_cosine_per_sentence(h, c)
        per["within" + sfx] = M.within_scatter(h, c)
        units = M._masked_sum(M._unit(M._work(h)), c)  # [P, S, H]: each sentence's sum of unit vectors
        per["unit_sq" + sfx] = (units * units).sum(-1)
        res.add("unit" + sfx, slots, units.transpose(0, 1))
        stats.separability(sfx, M.content_means(h, c), per["within" + sfx])

    token_cloud_stats(x, "")
    per["norm_sum"] = M._masked_sum(torch.linalg.vector_norm(M._work(x), dim=-1), c)
    per["pc1"] = M.pc1_mean_cosine_per_sentence(x, c)
    per["delta"] = M.delta_coherence_per_sentence(x, c)
    # issue 23: each sentence's per-dimension energies and cosine terms (resampled sums), and
    # its first-position values
    res.add("energy", slots, M.dim_energy_per_sentence(x, c).transpose(0, 1))
    res.add("cosdim", slots, M.cosine_dim_contributions_per_sentence(x, c).nan_to_num(0.0).transpose(0, 1))
    for name, value in M.first_position_per_sentence(x, c).items():
        per[f"first_{name}"] = value
    pools = M.mean_pool(x, a)
    per["cls_align"] = M.cosine(M.summary_token(x, a, cloud.summary), pools)
    per["drift"] = M.meanpool_drift(pools)
    for pooling in poolings:
        p = pools if pooling == "mean" else M.pool(x, a, pooling, cloud.summary)
        res.add(f"steps:{pooling}", slots, (p[1:] - p[:-1]).abs().transpose(0, 1))
    if sublayers:
        cw, fw = word_class_masks(cloud)

        def class_stats(h: torch.Tensor, sfx: str) -> None:
            parts = [M.class_pair_sums(h, cw), M.class_pair_sums(h, fw), M.class_pair_sums(h, cw, fw)]
            per["class_sums" + sfx] = torch.stack([s for s, _ in parts], -1)
            per["class_pairs"] = torch.stack([n for _, n in parts], -1)

        class_stats(x, "")
        units = M._unit(pools)
        per["pool_unit_sq"] = (units * units).sum(-1)
        res.add("pool_unit", slots, units.transpose(0, 1))
        mid = cloud.sublayers.get("attn")
        if mid is not None:
            token_cloud_stats(mid[1:], "@attn")
            class_stats(mid[1:], "@attn")
    return stats


def merge_pooled(result: Measurement, curves: dict, poolings, parts: list[dict]) -> None:
    """The first pooling's results (mean, the METRICS.md default) at the top level of
    `result`/`curves`; every other pooling's under `result.by_pooling`."""
    for i, (pooling, part) in enumerate(zip(poolings, parts)):
        if i == 0:
            if pooling != "mean":
                raise ValueError("the first pooling must be mean (the METRICS.md default)")
            curves.update(part["curves"])
            result.scalars.update(part["scalars"])
            result.per_dimension.update(part["per_dimension"])
            result.discriminative_dims = part["discriminative_dims"]
            result.not_computed.update(part["not_computed"])
        else:
            result.by_pooling[pooling] = {k: _jsonify(v) for k, v in part.items()}


def _proj_cloud(cloud: LayerStates, stage: torch.Tensor | None = None) -> dict:
    """The token-cloud metrics of one extra stage [N, T, H]: the projection (default) or `final`."""
    x, c = (cloud.proj if stage is None else stage)[None], cloud.content
    intra, cross = M.intra_sentence_cosine(x, c), M.cross_sentence_cosine(x, c)
    return {
        "intra_sentence_cosine": intra,
        "cross_sentence_cosine": cross,
        "sentence_signal": M.sentence_signal(intra, cross),
        "separability_ratio": M.separability_ratio(x, c),
        "token_norm": M.token_norm(x, c),
    }


def _jsonify(obj):
    if isinstance(obj, torch.Tensor):
        return _list(obj)
    if isinstance(obj, dict):
        return {k: _jsonify(v) for k, v in obj.items()}
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj
