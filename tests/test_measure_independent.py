"""`measure` end to end against an independent implementation of METRICS.md.

The reference here shares no code with the suite: it runs the bundled MiniLM through
plain transformers one sentence at a time (no padding, no batching, no hooks), finds
content tokens from the tokenizer's special-tokens mask, and computes each metric with
numpy loops and scikit-learn's PCA, straight from the definitions. `measure` (through the
CLI, on a sentence file written here) must agree to 1e-4.
"""
import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from geometry_checks.capture import bundled_minilm_dir

pytestmark = pytest.mark.minilm

SET = {
    "name": "unseen",
    "sentences": [
        "A quiet river winds through the old valley",
        "The orchestra tuned their instruments before the concert",
        "Investors sold shares as inflation fears grew",
        "My grandmother bakes bread every Sunday morning",
        "The satellite lost contact with ground control",
        "Tall pines",
        "Nobody expected the underdog team to win the championship",
    ],
    "pairs": {"swap": ["The lawyer questioned the witness", "The witness questioned the lawyer"],
              "flip": ["Prices rose sharply today", "Prices fell sharply today"]},
    "retrieval": [
        {"kind": "easy", "query": "A stream flows across an ancient valley",
         "positive": "A quiet river winds through the old valley",
         "negatives": ["The satellite lost contact with ground control"]},
        {"kind": "easy", "query": "Musicians prepared for the show",
         "positive": "The orchestra tuned their instruments before the concert",
         "negatives": ["My grandmother bakes bread every Sunday morning"]},
        {"kind": "hard", "query": "Costs went up a lot today", "positive": "Prices rose sharply today",
         "negatives": ["Prices fell sharply today"]},
    ],
}


def cos(a, b):
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else 0.0


@pytest.fixture(scope="module")
def reference():
    from transformers import AutoModel, AutoTokenizer

    path = bundled_minilm_dir()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    states = {}
    for text in dict.fromkeys(SET["sentences"] + [t for p in SET["pairs"].values() for t in p]
                              + [r[k] for r in SET["retrieval"] for k in ("query", "positive")]
                              + [n for r in SET["retrieval"] for n in r["negatives"]]):
        enc = tok(text, return_tensors="pt", return_special_tokens_mask=True)
        special = enc.pop("special_tokens_mask")[0].bool().numpy()
        with torch.no_grad():
            hidden = model(**enc, output_hidden_states=True).hidden_states
        all_tokens = np.stack([h[0].double().numpy() for h in hidden])  # [P, T, H]
        states[text] = {"all": all_tokens, "content": all_tokens[:, ~special], "ids": enc["input_ids"][0].tolist()}
    return states, tok


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    d = tmp_path_factory.mktemp("unseen")
    (d / "unseen.json").write_text(json.dumps(SET))
    proc = subprocess.run([sys.executable, "-m", "geometry_checks", "measure", "--model", "minilm", "--device", "cpu",
                           "--no-cache", "--sentences", str(d / "unseen.json"), "--out", str(d / "m.json")],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and "unrecognized arguments: --no-cache" in proc.stderr:
        proc = subprocess.run([sys.executable, "-m", "geometry_checks", "measure", "--model", "minilm",
                               "--device", "cpu", "--sentences", str(d / "unseen.json"), "--out", str(d / "m.json")],
                              capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads((d / "m.json").read_text())


def close(measured_curve, expected_curve, atol=1e-4):
    m = np.array([np.nan if v is None else v for v in measured_curve], dtype=float)
    e = np.array(expected_curve, dtype=float)
    np.testing.assert_allclose(m, e, atol=atol, rtol=0, equal_nan=True)


def test_token_cloud_metrics(reference, measured):
    states, _ = reference
    cloud = [states[s]["content"] for s in SET["sentences"]]
    P = cloud[0].shape[0]
    intra, cross, sep, norm, pc1, coh = ([] for _ in range(6))
    for d in range(P):
        per = [np.mean([cos(x[d, i], x[d, j]) for i, j in itertools.combinations(range(len(x[d])), 2)])
               for x in cloud if x.shape[1] >= 2]
        intra.append(np.mean(per))
        pairs = [cos(a, b) for s, t in itertools.permutations(range(len(cloud)), 2)
                 for a in cloud[s][d] for b in cloud[t][d]]
        cross.append(np.mean(pairs))
        means = [x[d].mean(0) for x in cloud]
        grand = np.mean(means, axis=0)
        B = np.mean([np.linalg.norm(m - grand) for m in means])
        W = np.mean([np.mean([np.linalg.norm(h - m) for h in x[d]]) for x, m in zip(cloud, means)])
        sep.append(B / W)
        norm.append(np.mean([np.linalg.norm(h) for x in cloud for h in x[d]]))
        pc1.append(np.mean([abs(cos(np.linalg.svd(x[d] - x[d].mean(0))[2][0], x[d].mean(0)))
                            for x in cloud if x.shape[1] >= 2]))
        if d == 0:
            coh.append(np.nan)
        else:
            coh.append(np.mean([np.mean([cos(x[d, i] - x[d - 1, i], x[d, j] - x[d - 1, j])
                                         for i, j in itertools.combinations(range(x.shape[1]), 2)])
                                for x in cloud if x.shape[1] >= 2]))
    c = measured["curves"]
    close(c["intra_sentence_cosine"], intra)
    close(c["cross_sentence_cosine"], cross)
    close(c["sentence_signal"], np.array(intra) - np.array(cross))
    close(c["separability_ratio"], sep)
    close(c["token_norm"], norm, atol=1e-3)
    close(c["pc1_mean_cosine"], pc1)
    close(c["delta_coherence"], coh)
    assert [e["sentence"] for e in measured["excluded"]] == []  # "Tall pines" has 2 content tokens


def test_pooled_metrics(reference, measured):
    states, tok = reference
    pool = {t: s["all"].mean(1) for t, s in states.items()}  # [P, H] mean over all positions
    sents = SET["sentences"]
    c = measured["curves"]
    P = pool[sents[0]].shape[0]
    close(c["cls_mean_alignment"], [np.mean([cos(states[s]["all"][d, 0], pool[s][d]) for s in sents])
                                    for d in range(P)])
    drift = np.array([[cos(pool[s][0], pool[s][d]) for s in sents] for d in range(P)])
    close(c["meanpool_drift"], drift.mean(1))
    close(c["meanpool_drift[max]"], drift.max(1))
    for name, (a, b) in SET["pairs"].items():
        close(c[f"pair_cosine[{name}]"], [cos(pool[a][d], pool[b][d]) for d in range(P)])
        close(c[f"band_cosine[{name},128:256]"], [cos(pool[a][d][128:256], pool[b][d][128:256]) for d in range(P)])
    ra, rb = states["Prices rose sharply today"], states["Prices fell sharply today"]
    ia = ra["ids"].index(tok.convert_tokens_to_ids("rose"))
    ib = rb["ids"].index(tok.convert_tokens_to_ids("fell"))
    close(c["token_pair_cosine[flip,rose,fell]"], [cos(ra["all"][d, ia], rb["all"][d, ib]) for d in range(P)])
    # recall: rank the distinct positives and negatives of all items, the query excluded
    pool_texts = list(dict.fromkeys([t for r in SET["retrieval"] for t in [r["positive"], *r["negatives"]]]))
    for kind, k in (("easy", 1), ("hard", 1), ("easy", 3)):
        items = [r for r in SET["retrieval"] if r["kind"] == kind]
        expected = []
        for d in range(P):
            hits = []
            for r in items:
                scores = sorted(((cos(pool[r["query"]][d], pool[t][d]), -i, t) for i, t in enumerate(pool_texts)
                                 if t != r["query"]), reverse=True)
                hits.append(r["positive"] in [t for _, _, t in scores[:k]])
            expected.append(np.mean(hits))
        close(c[f"recall_at_k[{kind},{k}]"], expected)


def test_per_dimension_and_trajectory_metrics(reference, measured):
    states, _ = reference
    sents = SET["sentences"]
    pools = np.stack([states[s]["all"].mean(1) for s in sents], axis=1)  # [P, S, H]
    P, _, H = pools.shape
    steps = np.abs(pools[1:] - pools[:-1]).mean(1)  # [L, H]
    write = steps.argmax(0) + 1
    hist = np.bincount(write, minlength=P)
    assert measured["curves"]["write_depth_histogram"] == hist.tolist()
    assert measured["scalars"]["late_write_fraction"] == pytest.approx(np.mean(write >= P - 2), abs=1e-9)
    r = np.array([np.corrcoef(pools[0, :, k], pools[-1, :, k])[0, 1] for k in range(H)])
    assert measured["scalars"]["dim_correlation_mean"] == pytest.approx(np.nanmean(r), abs=1e-4)
    assert measured["scalars"]["dims_r_above_0.7"] == int((r > 0.7).sum())

    tokens = np.concatenate([states[s]["content"] for s in sents], axis=1)  # [P, N, H]
    fixed = PCA(2).fit(tokens[0])
    proj = [fixed.transform(tokens[d]) for d in range(P)]
    refit = [PCA(2).fit(tokens[d]).transform(tokens[d]) for d in range(P)]
    last = PCA(2).fit(tokens[-1])
    tele = [np.linalg.norm(last.transform(tokens[d]) - last.transform(tokens[-1]), axis=1).mean() for d in range(P)]
    c = measured["curves"]
    close(c["fixed_pca_step"], [np.nan] + [np.linalg.norm(proj[d] - proj[d - 1], axis=1).mean() for d in range(1, P)],
          atol=1e-3)
    close(c["refit_pca_step"], [np.nan] + [np.linalg.norm(refit[d] - refit[d - 1], axis=1).mean()
                                           for d in range(1, P)], atol=1e-3)
    close(c["teleological_distance"], tele, atol=1e-3)
