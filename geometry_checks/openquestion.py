"""The article's open question: why does within-sentence similarity dip in the middle layers?

The article ("An Open Question: The Non-Monotonic Dip") sees mxbai's
`intra_sentence_cosine` fall from 0.361 at L3 to 0.209 at L6 before the final collapse,
guesses that middle layers differentiate tokens to encode syntactic roles, and names the
experiments it did not run: attention vs feed-forward, content words vs function words.
This module runs them (docs/open-question.md has the method and its limits):

- sublayers: `mid` = a block's state after its attention sublayer (BERT post-LN:
  `mid = LN1(h_in + Attn(h_in))`, `out = LN2(mid + FFN(mid))`), captured with
  `capture(..., sublayers=True)`, gives the curves `<metric>@attn` (entry d = block d's
  `mid`, null at depth 0). Across block d the change of a metric splits exactly into an
  attention step (out[d-1] -> mid[d]) and a feed-forward step (mid[d] -> out[d]).
- word classes: content tokens whose word (split from the text, `capture.text_word_ids`;
  lowercased) is in
  scikit-learn's ENGLISH_STOP_WORDS are function words, every other content token a
  content word; sub-tokens take their word's class. Curves
  `intra_sentence_cosine[content]`, `[function]` and `[content-function]` (pairs across
  the classes), their pair counts `pairs[...]`, and the shares
  `intra_sentence_cosine_share[...]` that add up to `intra_sentence_cosine` exactly.
- the similarity attractor: `pair_cosine_all`, the mean pooled cosine over all pairs of
  distinct sentences, and its peak depth (`pair_cosine_all_peak_depth`, `..._fraction` of L).

`open_question_curves` is what `measure(..., sublayers=True)` calls; `open_question_row`
and `plot_open_question` turn a Measurement into the findings row `open-question` and its
chart. The row is a measurement, not a check: its verdict is `answered` (a dip whose drop and
recovery both exceed their paired 95% bootstrap intervals), `dip within noise` (a local
minimum inside them) or `no dip`. None of the three is a claim verdict (report.OUTCOMES
counts them as measurements), so the words differ from a claim's `inconclusive`.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from . import metrics as M
from .capture import LayerStates, word_spans


def _english_stop_words() -> frozenset[str]:
    """scikit-learn's ENGLISH_STOP_WORDS, read from its own module file when it is where
    scikit-learn keeps it: `from sklearn.feature_extraction.text import ...` imports all
    of sklearn.feature_extraction (and scipy), about 2 s of CPU that `measure --sublayers`
    would pay in every process (issue 13). Otherwise the ordinary import."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "feature_extraction" / "_stop_words.py"
        module_spec = importlib.util.spec_from_file_location("_geometry_checks_stop_words", path)
        if path.is_file() and module_spec is not None:
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
            words = getattr(module, "ENGLISH_STOP_WORDS", None)
            if isinstance(words, frozenset) and words:
                return words
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


STOP_WORDS = _english_stop_words()
CLASSES = ("content", "function", "content-function")
NO_SUBLAYERS = "the states were captured without sublayers (capture(..., sublayers=True))"
INTRA = "intra_sentence_cosine"
ATTN = "@attn"
CLAIM = "open-question"
FINDING = (
    "Open question of the article (the non-monotonic dip): at each dip of intra_sentence_cosine, "
    "does the attention or the feed-forward sublayer lower it, which word class drives it, "
    "and does the similarity attractor (pair_cosine_all peaking mid-depth) show"
)
EXPECTED = (
    "article, mxbai (24 layers): intra 0.361 at L3 -> 0.209 at L6, recovers, collapses in L20-L24; "
    "hypothesis: middle layers differentiate tokens (syntactic roles), not tested there; "
    "attractor: mean-pool cosine of unrelated sentences peaks at a middle depth"
)


# --------------------------------------------------------------------------- measuring


def word_class_masks(states: LayerStates) -> tuple[torch.Tensor, torch.Tensor]:
    """(content words, function words): bool [N, T] masks that split `states.content`.

    A content token is a function word when its word (`states.words(n)[word_id]`,
    lowercased) is in ENGLISH_STOP_WORDS; a content token without a word id counts as a
    content word. Special tokens are in neither mask.
    """
    rows: list[int] = []
    cols: list[int] = []
    for n, (ids, offsets, text) in enumerate(zip(states.word_ids, states.offsets, states.model_texts)):
        for start, end, tokens in word_spans(ids, offsets, text):  # = LayerStates.words(n)
            if tokens and text[start:end].lower() in STOP_WORDS:
                rows += [n] * len(tokens)
                cols += tokens
    function = torch.zeros(states.content.shape, dtype=torch.bool)
    function[rows, cols] = True
    content = states.content.cpu().bool()
    function &= content
    return (content & ~function).to(states.content.device), function.to(states.content.device)


def _with_nan0(curve: torch.Tensor) -> torch.Tensor:
    """A curve over depths 1..L, as a [P] curve with NaN at depth 0."""
    return torch.cat([torch.full((1,), float("nan"), dtype=curve.dtype, device=curve.device), curve])


def _class_curves(x: torch.Tensor, cw: torch.Tensor, fw: torch.Tensor) -> tuple[dict, dict]:
    curves, pairs = {}, {}
    curves["content"], pairs["content"] = M.intra_class_cosine(x, cw)
    curves["function"], pairs["function"] = M.intra_class_cosine(x, fw)
    curves["content-function"], pairs["content-function"] = M.cross_class_cosine(x, cw, fw)
    return curves, pairs


def open_question_curves(st: LayerStates) -> tuple[dict, dict, dict]:
    """The open question's curves of the sentences in `st` (the token-cloud rows).

    Returns (curves: name -> [P] tensor, scalars: name -> number, not_computed: name -> why).
    """
    x, c = st.states, st.content
    curves: dict = {}
    scalars: dict = {}
    missing: dict = {}
    cw, fw = word_class_masks(st)
    by_class, pairs = _class_curves(x, cw, fw)
    for name in CLASSES:
        curves[f"{INTRA}[{name}]"] = by_class[name]
        scalars[f"pairs[{name}]"] = pairs[name]
    scalars["tokens[content]"] = int(cw.sum())
    scalars["tokens[function]"] = int(fw.sum())
    for name, share in zip(CLASSES, M.class_pair_shares(x, c, cw, fw)):
        curves[f"{INTRA}_share[{name}]"] = share

    mid = st.sublayers.get("attn")
    if mid is None:
        for name in (INTRA, "cross_sentence_cosine", "separability_ratio"):
            missing[name + ATTN] = NO_SUBLAYERS
    else:
        m = mid[1:]  # depth 0 has no block, hence no mid
        curves[INTRA + ATTN] = _with_nan0(M.intra_sentence_cosine(m, c))
        curves["cross_sentence_cosine" + ATTN] = _with_nan0(M.cross_sentence_cosine(m, c))
        curves["separability_ratio" + ATTN] = _with_nan0(M.separability_ratio(m, c))
        mid_class, _ = _class_curves(m, cw, fw)
        for name in CLASSES:
            curves[f"{INTRA}[{name}]{ATTN}"] = _with_nan0(mid_class[name])

    pools = M.mean_pool(x, st.attn)
    pca = M.pair_cosine_all(pools)
    curves["pair_cosine_all"] = pca
    if pools.shape[1] >= 2:
        peak = M.peak_depth(pca)
        scalars["pair_cosine_all_peak_depth"] = peak
        scalars["pair_cosine_all_peak_fraction"] = peak / max(x.shape[0] - 1, 1)
    else:
        missing["pair_cosine_all"] = "needs at least 2 sentences"
    return curves, scalars, missing


# --------------------------------------------------------------------------- answering


def _curve(measurement, name: str) -> list[float] | None:
    values = measurement.curves.get(name)
    if values is None:
        return None
    return [float("nan") if v is None else float(v) for v in values]


def dips(curve: list[float]) -> list[int]:
    """The local minima of a curve: d in 1..L-1 with c[d] < c[d-1] and c[d] < c[d+1].

    >>> dips([0.05, 0.2, 0.3, 0.29, 0.4])
    [3]
    """
    return [d for d in range(1, len(curve) - 1) if curve[d] < curve[d - 1] and curve[d] < curve[d + 1]]


def _lowered_by(attn: float, ffn: float) -> str:
    if math.isnan(attn) or math.isnan(ffn):
        return "not measured"
    if attn < 0 and ffn < 0:
        return "both (attention more)" if attn < ffn else "both (feed-forward more)"
    if attn < 0:
        return "attention"
    if ffn < 0:
        return "feed-forward"
    return "neither"


def answer(measurement) -> dict | None:
    """The open question's answer as data, or None if `measurement` lacks the curves
    (measured without `sublayers=True`)."""
    intra = _curve(measurement, INTRA)
    classes = {name: _curve(measurement, f"{INTRA}[{name}]") for name in CLASSES}
    shares = {name: _curve(measurement, f"{INTRA}_share[{name}]") for name in CLASSES}
    pca = _curve(measurement, "pair_cosine_all")
    if intra is None or pca is None or any(v is None for v in (*classes.values(), *shares.values())):
        return None
    mid = _curve(measurement, INTRA + ATTN)
    mid_classes = {name: _curve(measurement, f"{INTRA}[{name}]{ATTN}") for name in CLASSES}
    last = len(intra) - 1
    nan = float("nan")

    def steps(d: int) -> tuple[float, float]:
        if mid is None:
            return nan, nan
        return mid[d] - intra[d - 1], intra[d] - mid[d]

    def block(d: int) -> dict:
        attn, ffn = steps(d)
        change = {name: classes[name][d] - classes[name][d - 1] for name in CLASSES}
        share = {name: shares[name][d] - shares[name][d - 1] for name in CLASSES}
        class_steps = {}
        if mid is not None and all(v is not None for v in mid_classes.values()):
            class_steps = {
                name: (mid_classes[name][d] - classes[name][d - 1], classes[name][d] - mid_classes[name][d])
                for name in CLASSES
            }
        finite = {k: v for k, v in share.items() if not math.isnan(v)}
        return {
            "depth": d,
            "before": intra[d - 1],
            "mid": mid[d] if mid is not None else nan,
            "at": intra[d],
            "after": intra[d + 1],
            "attention_step": attn,
            "feed_forward_step": ffn,
            "lowered_by": _lowered_by(attn, ffn),
            "class_change": change,
            "share_change": share,
            "class_steps": class_steps,
            "driver": min(finite, key=finite.get) if finite else None,
        }

    iv = measurement.interval(INTRA) if hasattr(measurement, "interval") else None

    def paired(d: int, e: int) -> tuple[float, float] | None:
        """The 95% interval of intra[e] - intra[d] from the same resamples (None: none)."""
        if iv is None:
            return None
        lo, hi = iv["diff_lo"][d][e], iv["diff_hi"][d][e]
        return None if lo is None or hi is None else (lo, hi)

    found = dips(intra)
    result_dips = []
    uncertain = []
    for d in found:
        dip = block(d)
        down, up = paired(d, d - 1), paired(d, d + 1)  # intra[d-1] - intra[d], intra[d+1] - intra[d]
        dip["drop"], dip["drop_interval"], dip["rise_interval"] = intra[d - 1] - intra[d], down, up
        # issue 24: a dip is a dip when both its drop and its recovery exceed their paired
        # intervals (lower ends above 0); a point minimum inside the noise is reported, not counted
        dip["certain"] = None if down is None or up is None else down[0] > 0 and up[0] > 0
        (uncertain if dip["certain"] is False else result_dips).append(dip)
    # Without a dip: the block of the weakest rise (smallest intra[d] - intra[d-1], d in
    # 1..L-1, where a dip could be), split the same way: where the model comes closest to
    # the article's dip (mpnet: a stall at 7 of 12), and which sublayer holds it back.
    stall = None
    if not result_dips and not uncertain and last >= 2:
        stall = block(min(range(1, last), key=lambda d: (intra[d] - intra[d - 1], d)))
    others = [d for d in range(1, last + 1) if d not in found and (stall is None or d != stall["depth"])]
    typical = {"attention_step": nan, "feed_forward_step": nan}
    if mid is not None and others:
        typical = {
            "attention_step": sum(steps(d)[0] for d in others) / len(others),
            "feed_forward_step": sum(steps(d)[1] for d in others) / len(others),
        }
    peak = M.peak_depth(torch.tensor(pca, dtype=torch.float64))
    return {
        "model": measurement.model,
        "sentence_set": measurement.sentence_set,
        "layers": last,
        "intra": intra,
        "mid": mid,
        "dips": result_dips,
        "uncertain_dips": uncertain,
        "interval_reason": None if iv is not None else getattr(measurement, "interval_reason", lambda n: "")(INTRA),
        "weakest_rise": stall,
        "typical_steps": typical,
        "sublayers_missing": measurement.not_computed.get(INTRA + ATTN) if mid is None else None,
        "pairs": {name: measurement.scalars.get(f"pairs[{name}]") for name in CLASSES},
        "pair_cosine_all": pca,
        "peak_depth": peak,
        "peak_fraction": peak / last if last and peak >= 0 else nan,
        "attractor": 0 < peak < last and pca[last] < pca[peak],
    }


def _f(x: float, sign: bool = False) -> str:
    if x is None or math.isnan(x):
        return "n/a"
    return f"{x:+.3f}" if sign else f"{x:.3f}"


def _curve_text(values: list[float]) -> str:
    return ", ".join(_f(v) for v in values)


def _dip_text(dip: dict, last: int, typical: dict, what: str = "dip") -> str:
    d = dip["depth"]
    text = f"{what} at d={d}/{last} (relative depth {d / last:.2f}): intra {_f(dip['before'])} (d={d - 1}) -> {_f(dip['at'])} -> {_f(dip['after'])} (d={d + 1})"
    if dip.get("drop_interval"):
        (dlo, dhi), (rlo, rhi) = dip["drop_interval"], dip["rise_interval"]
        text += (f"; drop {_f(dip['drop'])} (paired 95% interval [{_f(dlo)}, {_f(dhi)}]), "
                 f"recovery interval [{_f(rlo)}, {_f(rhi)}]")
    attn, ffn = dip["attention_step"], dip["feed_forward_step"]
    if not math.isnan(attn):
        text += (
            f"; attention step {_f(attn, True)} (out[{d - 1}] -> mid[{d}] {_f(dip['mid'])}), "
            f"feed-forward step {_f(ffn, True)} (mid[{d}] -> out[{d}]): lowered by {dip['lowered_by']}"
        )
        if not math.isnan(typical["attention_step"]):
            text += (
                f" (against the other blocks' mean steps {_f(typical['attention_step'], True)} / "
                f"{_f(typical['feed_forward_step'], True)}: attention {_f(attn - typical['attention_step'], True)}, "
                f"feed-forward {_f(ffn - typical['feed_forward_step'], True)})"
            )
    change = ", ".join(f"[{k}] {_f(v, True)}" for k, v in dip["class_change"].items())
    share = ", ".join(f"[{k}] {_f(v, True)}" for k, v in dip["share_change"].items())
    text += f"; by class, d={d - 1}->{d}: {change}; pair-weighted shares of the change: {share}"
    if dip["driver"]:
        text += f": {'driven' if what.startswith('dip') else 'held back'} by {dip['driver']} pairs"
        steps = dip["class_steps"].get(dip["driver"])
        if steps and not any(math.isnan(v) for v in steps):
            text += f" (their attention step {_f(steps[0], True)}, feed-forward step {_f(steps[1], True)})"
    return text


def _attractor_text(a: dict) -> str:
    peak, last, pca = a["peak_depth"], a["layers"], a["pair_cosine_all"]
    if peak < 0:
        return "attractor: pair_cosine_all not measured"
    verdict = "shows" if a["attractor"] else "does not show"
    return (
        f"attractor {verdict}: pair_cosine_all peaks at d={peak}/{last} (fraction {_f(a['peak_fraction'])}) "
        f"at {_f(pca[peak])}, {_f(pca[last])} at d={last}"
    )


def _layout_note(measurement) -> str:
    """How the two steps relate to the sublayers, by the block layout. A model with a final
    norm (the provenance's `final_norm`: registry.ARCHITECTURES gives one to every pre-norm
    layout and to none of the post-norm ones) keeps its residual stream un-normalised between
    blocks, so `mid` and `out` are sums and each step adds exactly one sublayer's write."""
    provenance = getattr(measurement, "provenance", None) or {}
    if provenance.get("final_norm"):
        return ("pre-norm blocks: mid = out[d-1] + attention write, out[d] = mid + feed-forward write (the raw "
                "residual stream), so each step is one sublayer's write, though its effect on a cosine is not additive")
    return "post-LayerNorm sublayers are not additive contributions"


def open_question_row(measurement) -> dict | None:
    """The findings row `open-question` of one measurement, or None if it lacks the curves.

    A measurement, not a check: verdict `answered` when intra_sentence_cosine has a dip,
    `no dip` otherwise (the row then gives the curve).
    """
    a = answer(measurement)
    if a is None:
        return None
    last = a["layers"]
    if a["dips"]:
        measured = "; ".join(_dip_text(dip, last, a["typical_steps"]) for dip in a["dips"])
        verdict = "answered"
        if a["uncertain_dips"]:
            measured += "; " + "; ".join(_dip_text(dip, last, a["typical_steps"], "dip within the noise")
                                         for dip in a["uncertain_dips"])
    elif a["uncertain_dips"]:
        # issue 24: a local minimum whose drop or recovery does not exceed its paired interval
        measured = "; ".join(_dip_text(dip, last, a["typical_steps"], "dip within the noise")
                             for dip in a["uncertain_dips"])
        verdict = "dip within noise"
    else:
        measured = f"no dip: intra_sentence_cosine is {_curve_text(a['intra'])} (d=0..{last})"
        if a["weakest_rise"] is not None:
            measured += "; " + _dip_text(a["weakest_rise"], last, a["typical_steps"], "weakest rise")
        verdict = "no dip"
    measured += "; " + _attractor_text(a)
    notes = [f"sentence set {a['sentence_set']}"]
    notes.append("pairs: " + ", ".join(f"[{k}] {v}" for k, v in a["pairs"].items()))
    if a["sublayers_missing"]:
        notes.append(f"sublayer split not measured: {a['sublayers_missing']}")
    if a["interval_reason"]:
        notes.append(f"no interval on intra_sentence_cosine ({a['interval_reason']}): every local minimum counts")
    else:
        notes.append("a dip counts when its drop and its recovery both exceed their paired 95% bootstrap "
                     "intervals over sentences; the sublayer and class splits carry no interval")
    notes.append(_layout_note(measurement) + "; the stop-word list decides the classes")
    if (getattr(measurement, "provenance", None) or {}).get("causal"):
        # a causal model's first position sees only itself: the same state in every sentence that
        # starts with the same token, and in SmolLM2 and Gemma 3 a sink with massive norms that
        # makes the mean pools alike (docs/open-question.md, benchmarks/first_position.py)
        notes.append("causal model: the first position, the same in every sentence that starts alike, is in "
                     "every mean pool and so in pair_cosine_all (an attention sink can make it the peak)")
    intervals = [f"d={dip['depth']}: drop [{_f(dip['drop_interval'][0])}, {_f(dip['drop_interval'][1])}]"
                 for dip in a["dips"] + a["uncertain_dips"] if dip.get("drop_interval")]
    return {
        "claim": CLAIM,
        "model": a["model"],
        "finding": FINDING,
        "expected": EXPECTED,
        "measured": measured,
        "tolerance": "n/a: informational measurement, not pass/fail",
        "verdict": verdict,
        "notes": "; ".join(notes),
        "outcome": verdict,
        "interval": "; ".join(intervals),
    }


# The article's own observation, short, for the report's claim x model matrix (mxbai, L=24).
PUBLISHED_SHORT = ("mxbai: dip at 6 (6/24 = 0.25), 0.361 at 3 -> 0.209; 2nd dip near 15 (15/24 = 0.62); "
                   "cause not tested; attractor peaks mid-depth")


def _rel(d: int, last: int) -> str:
    return f"{d} ({d}/{last} = {d / last:.2f})" if last else str(d)


def open_question_summary(measurement) -> str | None:
    """One model's answer in a line, depths as `d (d/L = x)` so that models of different
    depth compare side by side (the report's matrix); None if it lacks the curves."""
    a = answer(measurement)
    if a is None:
        return None
    last = a["layers"]
    parts = []
    for dip in a["dips"]:
        text = f"dip at {_rel(dip['depth'], last)}"
        if dip["lowered_by"] != "not measured":
            text += f" lowered by {dip['lowered_by']}"
        if dip["driver"]:
            text += f", driven by {dip['driver']} pairs"
        parts.append(text)
    for dip in a["uncertain_dips"]:
        lo, hi = dip["drop_interval"]
        parts.append(f"dip at {_rel(dip['depth'], last)} within the noise (drop {_f(dip['drop'])}, "
                     f"interval [{_f(lo)}, {_f(hi)}])")
    if not parts:
        parts.append(f"no dip ({_f(a['intra'][0])} -> {_f(a['intra'][-1])})")
    if a["peak_depth"] >= 0:
        parts.append(f"attractor {'peak' if a['attractor'] else 'none: max'} at {_rel(a['peak_depth'], last)} "
                     f"({_f(a['pair_cosine_all'][a['peak_depth']])})")
    return "; ".join(parts)


def _band(ax, measurement, name: str, colour: str) -> None:
    """Shade the curve's 95% bootstrap interval (issue 24), where the measurement has one."""
    iv = measurement.interval(name) if hasattr(measurement, "interval") else None
    if iv is None:
        return
    pts = [(d, lo, hi) for d, (lo, hi) in enumerate(zip(iv["lo"], iv["hi"])) if lo is not None and hi is not None]
    if pts:
        xs, los, his = zip(*pts)
        ax.fill_between(xs, los, his, color=colour, alpha=0.15, linewidth=0)


def plot_open_question(measurement, path: str | Path) -> bool:
    """Write the open question's chart (PNG) to `path`; False if the curves are missing.

    Left: intra_sentence_cosine through each block (out[d-1] -> mid[d] -> out[d]), dips
    marked. Middle: the word-class curves. Right: pair_cosine_all and its peak.
    """
    a = answer(measurement)
    if a is None:
        return False
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    last = a["layers"]
    depths = list(range(last + 1))
    fig = Figure(figsize=(15, 4.2))
    axes = fig.subplots(1, 3)
    ax = axes[0]
    if a["mid"] is not None:
        xs, ys = [0.0], [a["intra"][0]]
        for d in range(1, last + 1):
            xs += [d - 0.5, d]
            ys += [a["mid"][d], a["intra"][d]]
        ax.plot(xs, ys, color="0.6", lw=1, ls="--", label="through the sublayers")
        ax.plot([d - 0.5 for d in depths[1:]], a["mid"][1:], "s", color="tab:orange", label="mid (after attention)")
    _band(ax, measurement, INTRA, "tab:blue")
    ax.plot(depths, a["intra"], "o-", color="tab:blue", label="block output")
    for dip in a["dips"]:
        ax.axvline(dip["depth"], color="tab:red", alpha=0.3)
        ax.annotate(f"dip d={dip['depth']}\n{dip['lowered_by']}", (dip["depth"], dip["at"]),
                    textcoords="offset points", xytext=(4, -28), fontsize=8, color="tab:red")
    ax.set(title="intra_sentence_cosine: attention vs feed-forward", xlabel="depth", ylabel="cosine")
    ax.legend(fontsize=8)

    ax = axes[1]
    ax.plot(depths, a["intra"], "o-", color="black", label="all content tokens")
    for name, colour in zip(CLASSES, ("tab:green", "tab:purple", "tab:brown")):
        curve = _curve(measurement, f"{INTRA}[{name}]")
        _band(ax, measurement, f"{INTRA}[{name}]", colour)
        ax.plot(depths, curve, "o-", color=colour, label=f"[{name}] ({a['pairs'][name]} pairs)")
    for dip in a["dips"]:
        ax.axvline(dip["depth"], color="tab:red", alpha=0.3)
    ax.set(title="by word class (stop words = function)", xlabel="depth")
    ax.legend(fontsize=8)

    ax = axes[2]
    _band(ax, measurement, "pair_cosine_all", "tab:blue")
    ax.plot(depths, a["pair_cosine_all"], "o-", color="tab:blue")
    if a["peak_depth"] >= 0:
        ax.plot([a["peak_depth"]], [a["pair_cosine_all"][a["peak_depth"]]], "*", ms=14, color="tab:red",
                label=f"peak d={a['peak_depth']} ({_f(a['peak_fraction'])} of L)")
        ax.legend(fontsize=8)
    ax.set(title="similarity attractor: pair_cosine_all", xlabel="depth")
    fig.suptitle(f"open question: {a['model']} on {a['sentence_set']}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return True
