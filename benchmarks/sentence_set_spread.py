"""How much does a curve move when the 20 sentences change? The basis of the published-claim tolerances.

The article's 20 sentences are unpublished, so a published curve can only be matched up
to the spread that a different sentence set causes. This measures that spread on the
bundled MiniLM: 200 random 20-text subsets of the 48 distinct texts of fixtures/core.json,
and prints, per metric, the standard deviation across subsets at each depth, absolute and
relative to the mean. Subsets of one pool understate the spread of independent sets by the
finite-population factor sqrt(1 - 20/48) = 0.76, which is printed beside it.

    python benchmarks/sentence_set_spread.py
"""
import math
import warnings

import torch

from geometry_checks import metrics as M
from geometry_checks.capture import capture
from geometry_checks.loader import load, resolve
from geometry_checks.sentences import SentenceSet, load_sentence_set


def main(draws: int = 200, size: int = 20) -> None:
    warnings.simplefilter("ignore")
    core = load_sentence_set("fixtures/core.json")
    texts = list(dict.fromkeys([*core.sentences, *core.retrieval_pool, *(r.query for r in core.retrieval)]))
    states = capture(load(resolve("minilm"), "cpu"), SentenceSet("all", tuple(texts)))
    gen = torch.Generator().manual_seed(0)
    rows = {k: [] for k in ("intra_sentence_cosine", "cross_sentence_cosine", "separability_ratio",
                            "cls_mean_alignment", "fixed_pca_step", "refit/fixed ratio")}
    for _ in range(draws):
        sub = states.select(torch.randperm(len(texts), generator=gen)[:size].tolist())
        x, c = sub.states, sub.content
        rows["intra_sentence_cosine"].append(M.intra_sentence_cosine(x, c))
        rows["cross_sentence_cosine"].append(M.cross_sentence_cosine(x, c))
        rows["separability_ratio"].append(M.separability_ratio(x, c))
        rows["cls_mean_alignment"].append(M.cls_mean_alignment(x, sub.attn))
        tokens = M.content_tokens(x, c)
        fixed, refit = M.fixed_pca_step(tokens), M.refit_pca_step(tokens)
        rows["fixed_pca_step"].append(fixed)
        rows["refit/fixed ratio"].append((refit[1:].mean() / fixed[1:].mean()).reshape(1))
    fpc = math.sqrt(1 - size / len(texts))
    print(f"{draws} subsets of {size} of {len(texts)} texts; finite-population factor {fpc:.2f}")
    print(f"{'metric':24} {'max sd':>8} {'max rel sd':>10} {'rel sd / fpc':>12}")
    for name, values in rows.items():
        v = torch.stack(values)
        sd, rel = v.std(0), v.std(0) / v.mean(0).abs()
        print(f"{name:24} {float(sd.nan_to_num().max()):8.4f} {float(rel.nan_to_num().max()):10.3f} "
              f"{float(rel.nan_to_num().max()) / fpc:12.3f}")


if __name__ == "__main__":
    main()
