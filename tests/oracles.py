"""Slow, obviously-correct reference versions of every metric in METRICS.md.

Plain python loops over depths, sentences, tokens and pairs, with numpy
float64 for the arithmetic and scikit-learn for PCA. Nothing here is
vectorized or clever: each function reads like its METRICS.md line. They take
numpy arrays (or anything np.asarray accepts) with the same layout as
geometry_checks.metrics: states [P, S, T, H], attn/content [S, T] bool,
pools [P, S, H], tokens [P, N, H].

Shared conventions with the fast code (documented there): a vector with norm
<= EPS has cosine 0 with anything; sentences with < 2 content tokens are NaN
in the pair metrics; ranking ties keep pool order.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.decomposition import PCA

EPS = 1e-12
NAN = float("nan")


def cos(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    na, nb = math.sqrt(float(np.dot(a, a))), math.sqrt(float(np.dot(b, b)))
    if na <= EPS or nb <= EPS:
        return 0.0
    return float(np.dot(a, b)) / (na * nb)


def mean_or_nan(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else NAN


def _shape(states):
    states = np.asarray(states, np.float64)
    return states, states.shape[0], states.shape[1], states.shape[2]


def tokens_of(states, content, d, s):
    """The content-token vectors of sentence s at depth d, in position order."""
    states, _, _, t_ = _shape(states)
    toks = [states[d, s, t] for t in range(t_) if content[s][t]]
    if not toks:
        raise ValueError(f"sentence {s} has no content token")
    return toks


def content_tokens(states, content):
    states, p_, s_, _ = _shape(states)
    return np.array([[tok for s in range(s_) for tok in tokens_of(states, content, d, s)] for d in range(p_)])


# ----------------------------------------------------------- token cloud


def _mean_pair_cos(vectors) -> float:
    if len(vectors) < 2:
        return NAN
    pairs = [cos(vectors[i], vectors[j]) for i in range(len(vectors)) for j in range(i + 1, len(vectors))]
    return sum(pairs) / len(pairs)


def intra_sentence_cosine_per_sentence(states, content):
    states, p_, s_, _ = _shape(states)
    return np.array([[_mean_pair_cos(tokens_of(states, content, d, s)) for s in range(s_)] for d in range(p_)])


def intra_sentence_cosine(states, content):
    return np.array([mean_or_nan(row) for row in intra_sentence_cosine_per_sentence(states, content)])


def cross_sentence_cosine(states, content):
    states, p_, s_, _ = _shape(states)
    out = []
    for d in range(p_):
        toks = [tokens_of(states, content, d, s) for s in range(s_)]
        total, count = 0.0, 0
        for s in range(s_):
            for t in range(s_):
                if s == t:
                    continue
                for hi in toks[s]:
                    for hj in toks[t]:
                        total += cos(hi, hj)
                        count += 1
        out.append(total / count if count else NAN)
    return np.array(out)


def sentence_signal(states, content):
    return intra_sentence_cosine(states, content) - cross_sentence_cosine(states, content)


def content_means(states, content):
    states, p_, s_, _ = _shape(states)
    return np.array([[np.mean(tokens_of(states, content, d, s), axis=0) for s in range(s_)] for d in range(p_)])


def within_scatter(states, content):
    states, p_, s_, _ = _shape(states)
    out = np.zeros((p_, s_))
    for d in range(p_):
        for s in range(s_):
            toks = tokens_of(states, content, d, s)
            m = np.mean(toks, axis=0)
            out[d, s] = sum(np.linalg.norm(h - m) for h in toks) / len(toks)
    return out


def separability_ratio(states, content):
    states, p_, s_, _ = _shape(states)
    means, scatter = content_means(states, content), within_scatter(states, content)
    out = []
    for d in range(p_):
        m = np.mean(means[d], axis=0)
        b = sum(np.linalg.norm(means[d, s] - m) for s in range(s_)) / s_
        w = sum(scatter[d]) / s_
        with np.errstate(divide="ignore", invalid="ignore"):
            out.append(np.float64(b) / np.float64(w))
    return np.array(out)


def token_norm(states, content):
    states, p_, s_, _ = _shape(states)
    out = []
    for d in range(p_):
        norms = [np.linalg.norm(h) for s in range(s_) for h in tokens_of(states, content, d, s)]
        out.append(sum(norms) / len(norms))
    return np.array(out)


def pc1_mean_cosine_per_sentence(states, content):
    """|cos(u_s, m_s)|; NaN for < 2 tokens or all-identical tokens (no principal direction)."""
    states, p_, s_, _ = _shape(states)
    out = np.full((p_, s_), NAN)
    for d in range(p_):
        for s in range(s_):
            toks = np.array(tokens_of(states, content, d, s))
            if len(toks) < 2 or all(np.array_equal(toks[0], h) for h in toks):
                continue
            m = toks.mean(axis=0)
            u = np.linalg.svd(toks - m)[2][0]
            out[d, s] = abs(cos(u, m))
    return out


def pc1_mean_cosine(states, content):
    return np.array([mean_or_nan(row) for row in pc1_mean_cosine_per_sentence(states, content)])


def delta_coherence_per_sentence(states, content):
    states, p_, s_, _ = _shape(states)
    out = np.full((p_, s_), NAN)
    for d in range(1, p_):
        for s in range(s_):
            now, before = tokens_of(states, content, d, s), tokens_of(states, content, d - 1, s)
            out[d, s] = _mean_pair_cos([a - b for a, b in zip(now, before)])
    return out


def delta_coherence(states, content):
    return np.array([mean_or_nan(row) for row in delta_coherence_per_sentence(states, content)])


# ----------------------------------------------------------------- pooled


def mean_pool(states, attn):
    states, p_, s_, t_ = _shape(states)
    return np.array([[np.mean([states[d, s, t] for t in range(t_) if attn[s][t]], axis=0)
                      for s in range(s_)] for d in range(p_)])


def cls_mean_alignment(states, attn):
    states, p_, s_, _ = _shape(states)
    pools = mean_pool(states, attn)
    return np.array([sum(cos(states[d, s, 0], pools[d, s]) for s in range(s_)) / s_ for d in range(p_)])


def meanpool_drift(pools):
    pools = np.asarray(pools, np.float64)
    return np.array([[cos(pools[0, s], pools[d, s]) for s in range(pools.shape[1])] for d in range(pools.shape[0])])


def pair_cosine(pool_a, pool_b):
    return np.array([cos(a, b) for a, b in zip(pool_a, pool_b)])


def band_cosine(pool_a, pool_b, lo, hi):
    return np.array([cos(a[lo:hi], b[lo:hi]) for a, b in zip(pool_a, pool_b)])


token_pair_cosine = pair_cosine


def recall_from_scores(scores, positive_idx, query_idx_in_pool, k):
    """scores [P, Q, N]: per depth, per query, sort the other pool texts by score
    (python's sort is stable: ties keep pool order) and look for the positive in the top k."""
    scores = np.asarray(scores, np.float64)
    out = []
    for d in range(scores.shape[0]):
        hits = []
        for q in range(scores.shape[1]):
            candidates = [j for j in range(scores.shape[2]) if j != query_idx_in_pool[q]]
            ranked = sorted(candidates, key=lambda j: -scores[d, q, j])
            hits.append(1.0 if positive_idx[q] in ranked[:k] else 0.0)
        out.append(sum(hits) / len(hits))
    return np.array(out)


def cosine_scores(query_vecs, pool_vecs):
    return np.array([[[cos(q, x) for x in pool_vecs[d]] for q in query_vecs[d]] for d in range(len(query_vecs))])


def recall_at_k(query_vecs, pool_vecs, positive_idx, query_idx_in_pool, k):
    return recall_from_scores(cosine_scores(query_vecs, pool_vecs), positive_idx, query_idx_in_pool, k)


def maxsim_scores(q_tokens, q_mask, d_tokens, d_mask):
    q_tokens, d_tokens = np.asarray(q_tokens, np.float64), np.asarray(d_tokens, np.float64)
    p_, n_ = d_tokens.shape[0], d_tokens.shape[1]
    out = np.zeros((p_, n_))
    for d in range(p_):
        for n in range(n_):
            doc = [d_tokens[d, n, j] for j in range(d_tokens.shape[2]) if d_mask[n][j]]
            out[d, n] = sum(max(cos(q_tokens[d, i], h) for h in doc)
                            for i in range(q_tokens.shape[1]) if q_mask[i])
    return out


maxsim_recall_at_k = recall_from_scores


# ---------------------------------------------------------- per dimension


def mean_abs_step(pools, d, k):
    pools = np.asarray(pools, np.float64)
    s_ = pools.shape[1]
    return sum(abs(pools[d, s, k] - pools[d - 1, s, k]) for s in range(s_)) / s_


def write_depth(pools):
    pools = np.asarray(pools, np.float64)
    p_, _, h_ = pools.shape
    out = []
    for k in range(h_):
        best_d, best = 1, mean_abs_step(pools, 1, k)
        for d in range(2, p_):
            v = mean_abs_step(pools, d, k)
            if v > best:  # strict: the first depth wins ties
                best_d, best = d, v
        out.append(best_d)
    return np.array(out)


def write_depth_histogram(pools):
    counts = [0] * np.asarray(pools).shape[0]
    for d in write_depth(pools):
        counts[d] += 1
    return np.array(counts)


def late_write_fraction(pools):
    last = np.asarray(pools).shape[0] - 1
    depths = write_depth(pools)
    return sum(1 for d in depths if d in (last - 1, last)) / len(depths)


def dim_correlation(pools):
    pools = np.asarray(pools, np.float64)
    out = []
    for k in range(pools.shape[2]):
        x, y = pools[0, :, k], pools[-1, :, k]
        if len(set(x.tolist())) < 2 or len(set(y.tolist())) < 2:
            out.append(NAN)
        else:
            out.append(float(np.corrcoef(x, y)[0, 1]))
    return np.array(out)


def half_rise_depth(curve):
    last = curve[-1]
    for d in range(len(curve)):
        if all(c >= last / 2 for c in curve[d:]):
            return d
    raise AssertionError("unreachable: the last depth always qualifies")


def discriminative_dims(pool_a, pool_b, k=5):
    pool_a, pool_b = np.asarray(pool_a, np.float64), np.asarray(pool_b, np.float64)
    p_, h_ = pool_a.shape
    final = [abs(pool_a[-1, j] - pool_b[-1, j]) for j in range(h_)]
    dims = sorted(range(h_), key=lambda j: -final[j])[:k]  # stable: lower index first on ties
    curves = [[abs(pool_a[d, j] - pool_b[d, j]) for d in range(p_)] for j in dims]
    return np.array(dims), np.array(curves), np.array([half_rise_depth(c) for c in curves])


# ------------------------------------------------------------- trajectory


def fit_pca(x):
    return PCA(n_components=2, svd_solver="full").fit(np.asarray(x, np.float64))


def _mean_distance(a, b):
    return sum(np.linalg.norm(a[i] - b[i]) for i in range(len(a))) / len(a)


def fixed_pca_step(tokens):
    tokens = np.asarray(tokens, np.float64)
    pca = fit_pca(tokens[0])
    proj = [pca.transform(tokens[d]) for d in range(len(tokens))]
    return np.array([NAN] + [_mean_distance(proj[d], proj[d - 1]) for d in range(1, len(tokens))])


def refit_pca_step(tokens):
    tokens = np.asarray(tokens, np.float64)
    proj = [fit_pca(tokens[d]).transform(tokens[d]) for d in range(len(tokens))]
    return np.array([NAN] + [_mean_distance(proj[d], proj[d - 1]) for d in range(1, len(tokens))])


def teleological_distance(tokens):
    tokens = np.asarray(tokens, np.float64)
    pca = fit_pca(tokens[-1])
    proj = [pca.transform(tokens[d]) for d in range(len(tokens))]
    return np.array([_mean_distance(proj[d], proj[-1]) for d in range(len(tokens))])


# ------------------------------------------- token classes (open question)


def class_pair_cosine_per_sentence(states, mask_a, mask_b=None):
    """Per sentence, mean cos over pairs i < j within mask_a (mask_b None) or over all
    (i in mask_a, j in mask_b); NaN where there is no such pair."""
    states, p_, s_, t_ = _shape(states)
    out = np.full((p_, s_), NAN)
    for d in range(p_):
        for s in range(s_):
            a = [t for t in range(t_) if mask_a[s][t]]
            if mask_b is None:
                pairs = [(a[i], a[j]) for i in range(len(a)) for j in range(i + 1, len(a))]
            else:
                pairs = [(i, j) for i in a for j in range(t_) if mask_b[s][j]]
            if pairs:
                out[d, s] = sum(cos(states[d, s, i], states[d, s, j]) for i, j in pairs) / len(pairs)
    return out


def class_pair_count(mask_a, mask_b=None):
    total = 0
    for s in range(len(mask_a)):
        a = sum(1 for x in mask_a[s] if x)
        total += a * (a - 1) // 2 if mask_b is None else a * sum(1 for x in mask_b[s] if x)
    return total


def intra_class_cosine(states, mask):
    """(curve, pairs): mean over sentences with >= 2 class tokens of the mean pair cos."""
    per = class_pair_cosine_per_sentence(states, mask)
    return np.array([mean_or_nan(row) for row in per]), class_pair_count(mask)


def cross_class_cosine(states, mask_a, mask_b):
    per = class_pair_cosine_per_sentence(states, mask_a, mask_b)
    return np.array([mean_or_nan(row) for row in per]), class_pair_count(mask_a, mask_b)


def class_pair_shares(states, content, mask_a, mask_b):
    """Per eligible sentence: sum of cos over its a-a, b-b, a-b pairs / all its pairs; mean."""
    states, p_, s_, t_ = _shape(states)
    shares = np.zeros((3, p_))
    for d in range(p_):
        kept = 0
        for s in range(s_):
            c = [t for t in range(t_) if content[s][t]]
            if len(c) < 2:
                continue
            kept += 1
            part = [0.0, 0.0, 0.0]
            for x in range(len(c)):
                for y in range(x + 1, len(c)):
                    i, j = c[x], c[y]
                    if mask_a[s][i] and mask_a[s][j]:
                        k = 0
                    elif mask_b[s][i] and mask_b[s][j]:
                        k = 1
                    else:
                        k = 2
                    part[k] += cos(states[d, s, i], states[d, s, j])
            n_pairs = len(c) * (len(c) - 1) / 2
            for k in range(3):
                shares[k, d] += part[k] / n_pairs
        shares[:, d] /= kept
    return shares


def pair_cosine_all(pools):
    """Mean over unordered pairs of distinct sentences of cos(pool(s, d), pool(t, d))."""
    pools = np.asarray(pools, np.float64)
    p_, s_ = pools.shape[:2]
    out = []
    for d in range(p_):
        values = [cos(pools[d, s], pools[d, t]) for s in range(s_) for t in range(s + 1, s_)]
        out.append(sum(values) / len(values) if values else NAN)
    return np.array(out)


# ------------------------------------------------- massive activations (issue 23)


def top_share(contrib, k, min_total=0.0):
    """(share of the k largest entries in their sum, their indices largest first, the lower
    index first on ties); (NaN, None) where the sum is NaN or at most min_total."""
    contrib = [float(v) for v in contrib]
    total = sum(contrib)
    if math.isnan(total) or total <= min_total:
        return NAN, None
    order = sorted(range(len(contrib)), key=lambda i: (-contrib[i], i))[:k]
    return sum(contrib[i] for i in order) / total, order


def massive_dims_norm_share(states, content, k):
    """Per depth: sum over all content tokens of h[j]^2 per dimension j; the top k's share."""
    states, p_, s_, _ = _shape(states)
    out = []
    for d in range(p_):
        energy = [0.0] * states.shape[3]
        for s in range(s_):
            for tok in tokens_of(states, content, d, s):
                for j, v in enumerate(tok):
                    energy[j] += float(v) * float(v)
        out.append(top_share(energy, k))
    return out


def cosine_dim_contributions(states, content):
    """Per depth and dimension j: mean over sentences with >= 2 content tokens of the mean
    over ordered pairs i != l of u_i[j] u_l[j] (u the unit vectors); NaN if no such sentence."""
    states, p_, s_, _ = _shape(states)
    h = states.shape[3]
    out = []
    for d in range(p_):
        per_dim = [[] for _ in range(h)]
        for s in range(s_):
            toks = tokens_of(states, content, d, s)
            if len(toks) < 2:
                continue
            units = []
            for tok in toks:
                n = math.sqrt(float(np.dot(tok, tok)))
                units.append(tok / n if n > EPS else np.zeros(h))
            for j in range(h):
                terms = [units[a][j] * units[b][j] for a in range(len(units)) for b in range(len(units)) if a != b]
                per_dim[j].append(sum(terms) / len(terms))
        out.append([mean_or_nan(v) for v in per_dim])
    return out


def massive_dims_cosine_share(states, content, k, min_total):
    return [top_share(c, k, min_total) for c in cosine_dim_contributions(states, content)]


def first_position_per_sentence(states, content):
    """{norm_share, norm_ratio, cosine}: [P][S] lists; position 0 against the content tokens
    other than position 0 (NaN without such a token)."""
    states, p_, s_, t_ = _shape(states)
    out = {"norm_share": [], "norm_ratio": [], "cosine": []}
    for d in range(p_):
        rows = {key: [] for key in out}
        for s in range(s_):
            first = states[d, s, 0]
            others = [states[d, s, t] for t in range(1, t_) if content[s][t]]
            if not others:
                for values in rows.values():
                    values.append(NAN)
                continue
            n0 = math.sqrt(float(np.dot(first, first)))
            norms = [math.sqrt(float(np.dot(v, v))) for v in others]
            denom = n0 * n0 + sum(v * v for v in norms)
            rows["norm_share"].append(n0 * n0 / denom if denom > 0 else NAN)
            median = float(np.median(norms))
            rows["norm_ratio"].append(n0 / median if median > EPS else NAN)
            rows["cosine"].append(sum(cos(first, v) for v in others) / len(others))
        for key, values in rows.items():
            out[key].append(values)
    return out
