"""How much of the open question's curves does a causal model's first position carry?

In a causal model the first position sees only itself, so its state is the same for every
sentence that starts with the same token, and in many LMs it becomes an attention sink with
massive activations. SmolLM2 adds no <bos>, so its first position is the sentence's first
word and a content token (METRICS.md keeps it in C_s); Gemma 3's first position is <bos>, a
special token, out of C_s but inside the mean pool (T_s includes specials). This prints,
per depth, on the `sentences` of fixtures/core.json (the open question's rows): the first
position's norm against the content tokens' mean norm, how alike the first positions of
different sentences are, and `intra_sentence_cosine`, `cross_sentence_cosine`, their
difference and `pair_cosine_all` with and without the first position (a diagnostic beside
the suite's definitions, not a metric of METRICS.md). docs/open-question.md quotes it.

    python benchmarks/first_position.py smollm2 gemma3
"""
import sys
import warnings

import torch

from geometry_checks import capture as C
from geometry_checks import metrics as M
from geometry_checks.loader import load, resolve
from geometry_checks.paths import DEFAULT_SENTENCES
from geometry_checks.sentences import load_sentence_set


def _row(name: str, values: torch.Tensor) -> str:
    return f"{name:34} " + ", ".join(f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}" for v in values.tolist())


def main(model: str) -> None:
    sentences = load_sentence_set(DEFAULT_SENTENCES)
    st = C.capture(load(resolve(model), "cpu"), sentences)
    st = st.select([st.index(t) for t in sentences.sentences])
    x, content, attn = st.states, st.content, st.attn
    rest, rest_attn = content.clone(), attn.clone()
    rest[:, 0] = rest_attn[:, 0] = False
    norms = x.norm(dim=-1)
    units = torch.nn.functional.normalize(x[:, :, 0].double(), dim=-1)
    s = units.shape[1]
    print(f"{model}: first position of sentence 0 {st.tokens[0][0]!r}, a content token: {bool(content[0, 0])}")
    print(_row("norm of the first position", norms[:, :, 0].mean(1)))
    print(_row("mean norm of the content tokens", (norms * content[None]).sum((1, 2)) / content.sum()))
    print(_row("cos of first positions, across", ((units @ units.transpose(1, 2)).sum((1, 2)) - s) / (s * (s - 1))))
    for label, mask, pool_mask in (("", content, attn), (" w/o first", rest, rest_attn)):
        intra, cross = M.intra_sentence_cosine(x, mask), M.cross_sentence_cosine(x, mask)
        print(_row("intra" + label, intra))
        print(_row("cross" + label, cross))
        print(_row("intra - cross" + label, intra - cross))
        print(_row("pair_cosine_all" + label, M.pair_cosine_all(M.mean_pool(x, pool_mask))))


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    for name in sys.argv[1:] or ["smollm2", "gemma3"]:
        main(name)
