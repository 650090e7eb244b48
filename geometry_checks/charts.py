"""The article's charts, for every measured model, with the published curves overlaid.

Drawn with matplotlib's object API on the Agg canvas (no pyplot: no global state, no GUI
backend), one PNG per chart. Conventions, the same on every chart:

- measured curves solid, published curves (the article's mxbai-embed-large-v1 and
  jina-colbert-v2, `baselines/published/embedding-layers.json`) dashed;
- the title names the model(s) and the sentence set;
- the depth axis is relative (depth / L) as soon as curves of models with different
  depth counts share a chart (MiniLM L=6 against the article's L=24), absolute otherwise.

A chart whose metric was not computed (no pairs, no retrieval items, ...) is not drawn:
its draw function raises `NotDrawn` with the reason, which the report lists as a note.
Charts read a `ModelReport` (a Measurement plus the token paths of `report.token_paths`);
no metric is computed here.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from . import claims as CL

PUBLISHED_IDS = {"mxbai": "mixedbread-ai/mxbai-embed-large-v1", "colbert": "jinaai/jina-colbert-v2"}
DPI = 110
ARTICLE = "the article"


class NotDrawn(Exception):
    """A chart that cannot be drawn from this measurement; the message says why."""


@dataclass
class ModelReport:
    """What the charts of one model read: its Measurement and the token paths in fixed
    depth-0 PCA axes (`report.token_paths`; None where not computed)."""

    name: str
    measurement: object
    trajectory: dict | None = None
    trajectory_missing: str = "token states not captured"


@dataclass
class ChartContext:
    sentence_set: str
    published: dict = field(default_factory=dict)  # short name -> embedding-layers.json entry

    @classmethod
    def load(cls, sentence_set: str) -> ChartContext:
        doc = CL._read_json(CL.PUBLISHED / "embedding-layers.json")
        return cls(sentence_set, {k: doc["models"][v] for k, v in PUBLISHED_IDS.items() if v in doc["models"]})


@dataclass
class Series:
    """One line: values over depths 0..n_depths-1 (None = no value), or at `depths`."""

    values: list
    n_depths: int
    label: str
    color: str
    published: bool = False
    depths: list | None = None
    marker: str | None = "o"
    width: float = 1.8
    alpha: float = 1.0


def slug(name: str) -> str:
    """A file-name-safe model name (a directory or hub ID keeps only its tail)."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name).rstrip("/").split("/")[-1]).strip("-.")
    return text[-60:] or "model"


# --------------------------------------------------------------------------- drawing helpers


def _figure(width: float = 7.6, height: float = 5.4) -> tuple[Figure, object]:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _title(ax, what: str, models: str, sentence_set: str, published: str | None) -> None:
    line = f"{models} on '{sentence_set}' (solid)"
    if published:
        line += f" vs {published} (dashed)"
    ax.set_title(f"{what}\n{line}", fontsize=10)


def _relative(series: list[Series]) -> bool:
    return len({s.n_depths for s in series}) > 1


def _x(depth: int, n_depths: int, relative: bool) -> float:
    return depth / (n_depths - 1) if relative else depth


def _depth_axis(ax, relative: bool, last: int | None = None) -> None:
    if relative:
        ax.set_xlabel("relative depth (depth / L; 0 = embeddings, 1 = last block)")
        ax.set_xlim(-0.03, 1.03)
    else:
        ax.set_xlabel("depth (0 = embeddings)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _finite(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _lines(ax, series: list[Series], ylabel: str) -> bool:
    """Draw the series; raise NotDrawn if no measured series has a value."""
    if not any(_finite(v) for s in series if not s.published for v in s.values):
        raise NotDrawn("no measured value")
    relative = _relative(series)
    for s in series:
        depths = s.depths if s.depths is not None else range(len(s.values))
        pts = [(_x(d, s.n_depths, relative), v) for d, v in zip(depths, s.values) if _finite(v)]
        if not pts:
            continue
        xs, ys = zip(*pts)
        ax.plot(xs, ys, linestyle="--" if s.published else "-", color=s.color, label=s.label,
                marker=s.marker, markersize=3.5 if s.published else 4, linewidth=1.3 if s.published else s.width,
                alpha=s.alpha, zorder=2 if s.published else 3)  # measured drawn over published
    _depth_axis(ax, relative)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.25)
    _legend(ax)
    return relative


def _legend(ax) -> None:
    """The legend under the axes, never over a curve."""
    handles, labels = ax.get_legend_handles_labels()
    short = all(len(label) <= 16 for label in labels)
    ncol = max(1, min(len(labels), 5 if short else 2))
    ax.legend(handles, labels, fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=ncol,
              frameon=False)


def _curve(m, name: str, pooling: str = "mean") -> list:
    try:
        return m.curve(name, pooling)
    except KeyError:
        base = name.split("[")[0]
        raise NotDrawn(f"{name} not computed ({m.not_computed.get(base, 'not measured')})") from None


def _has(m, name: str) -> bool:
    return name in m.curves


def _pub_curve(ctx: ChartContext, model: str, name: str) -> list | None:
    return ctx.published.get(model, {}).get("curves", {}).get(name)


def _pub_depths(ctx: ChartContext, model: str) -> int:
    return ctx.published.get(model, {}).get("depths", 25)


def _pub_label(ctx: ChartContext, model: str) -> str:
    return f"{model} (published)"


def _pub_series(ctx, model, name, label, color) -> list[Series]:
    values = _pub_curve(ctx, model, name)
    if values is None:
        return []
    return [Series(values, _pub_depths(ctx, model), label, color, published=True)]


def _pair_name(m) -> str:
    """The pair the pair charts show: 'negation' (the article's) if present, else the first."""
    pairs = list(m.discriminative_dims)
    if not pairs:
        raise NotDrawn(f"pair_cosine not computed ({m.not_computed.get('pair_cosine', 'the sentence file has no pairs')})")
    return "negation" if "negation" in pairs else pairs[0]


def _own_pooling(m) -> str | None:
    """The model's own pooling where the Measurement carries its pooled metrics too."""
    own = m.provenance.get("pooling")
    return own if own and own != "mean" and own in m.by_pooling else None


# --------------------------------------------------------------------------- the charts


def chart_cosine(ctx: ChartContext, r: ModelReport):
    """Within-sentence vs cross-sentence token cosine by depth (the article's first chart)."""
    m = r.measurement
    fig, ax = _figure()
    series = [
        Series(_curve(m, "intra_sentence_cosine"), m.depths, f"{r.name} within-sentence (intra)", "tab:blue"),
        Series(_curve(m, "cross_sentence_cosine"), m.depths, f"{r.name} cross-sentence baseline", "tab:orange"),
        *_pub_series(ctx, "mxbai", "intra_sentence_cosine", "mxbai within-sentence (published)", "tab:blue"),
        *_pub_series(ctx, "mxbai", "cross_sentence_cosine", "mxbai cross-sentence (published)", "tab:orange"),
    ]
    published = "the article's mxbai"
    if r.name == "colbert" or m.provenance.get("family") == "colbert":  # its own published curve too
        series += _pub_series(ctx, "colbert", "intra_sentence_cosine", "jina-colbert-v2 within-sentence (published)",
                              "tab:red")
        published = "the article's mxbai and jina-colbert-v2"
    _lines(ax, series, "mean token cosine")
    _title(ax, "Within- vs cross-sentence token cosine", r.name, ctx.sentence_set, published)
    return fig


def chart_pca_steps(ctx: ChartContext, r: ModelReport):
    """Mean token step per depth in fixed depth-0 PCA axes vs PCA refitted at every depth."""
    m = r.measurement
    fig, ax = _figure()
    series = [
        Series(_curve(m, "fixed_pca_step"), m.depths, f"{r.name} fixed depth-0 axes", "tab:blue"),
        Series(_curve(m, "refit_pca_step"), m.depths, f"{r.name} PCA refitted per depth", "tab:red"),
        *_pub_series(ctx, "mxbai", "fixed_pca_step", "mxbai fixed axes (published)", "tab:blue"),
        *_pub_series(ctx, "mxbai", "refit_pca_step", "mxbai refitted (published)", "tab:red"),
    ]
    _lines(ax, series, "mean step into this depth (PCA units, log scale)")
    ax.set_yscale("log")
    values = [v for s in series for v in s.values if _finite(v) and v > 0]
    ax.set_ylim(min(values) / 1.5, max(values) * 1.5)
    _title(ax, "Fixed vs refitted PCA: apparent token step per depth", r.name, ctx.sentence_set,
           "the article's mxbai")
    return fig


def _bars(ax, counts: list, n_depths: int, relative: bool, label: str, color: str, published: bool) -> None:
    total = sum(c for c in counts if c) or 1
    width = (0.8 / (n_depths - 1)) if relative else 0.8
    xs = [_x(d, n_depths, relative) for d in range(len(counts))]
    ys = [(c or 0) / total for c in counts]
    if published:
        ax.bar(xs, ys, width=width, fill=False, edgecolor=color, linestyle="--", linewidth=1.1, label=label,
               zorder=2)
    else:
        ax.bar(xs, ys, width=width, color=color, alpha=0.75, label=label, zorder=1)


def chart_write_depth(ctx: ChartContext, r: ModelReport):
    """Where each dimension of the pooled vector gets its largest write (fraction of dims per depth)."""
    m = r.measurement
    counts = _curve(m, "write_depth_histogram")
    pub = _pub_curve(ctx, "mxbai", "write_depth_histogram")
    pub_n = _pub_depths(ctx, "mxbai")
    relative = pub is not None and pub_n != m.depths
    fig, ax = _figure()
    frac = m.scalars.get("late_write_fraction")
    _bars(ax, counts, m.depths, relative,
          f"{r.name} ({sum(counts)} dims; last two depths: {frac:.0%})" if frac is not None else r.name,
          "tab:blue", False)
    if pub is not None:
        n = len(pub) - 1
        _bars(ax, pub, pub_n, relative, f"mxbai (published: {pub[-1]} dims at {n}, {pub[-2]} at {n - 1} "
              f"of {sum(pub)})", "black", True)
    _depth_axis(ax, relative)
    if relative:
        ax.set_xlim(-0.1, 1.1)
    ax.set_ylabel("fraction of dimensions written most here")
    ax.grid(alpha=0.25, axis="y")
    _legend(ax)
    _title(ax, "Write depth of each pooled dimension (mean pool)", r.name, ctx.sentence_set,
           "the article's mxbai" if pub is not None else None)
    return fig


def chart_dim_correlation(ctx: ChartContext, r: ModelReport):
    """Histogram of per-dimension Pearson r between the depth-0 and depth-L pools."""
    m = r.measurement
    values = m.per_dimension.get("dim_correlation")
    if values is None:
        raise NotDrawn(f"dim_correlation not computed ({m.not_computed.get('dim_correlation', 'not measured')})")
    values = [v for v in values if _finite(v)]
    if not values:
        raise NotDrawn("dim_correlation is undefined for every dimension (constant pools)")
    pub = ctx.published.get("mxbai", {}).get("dim_correlation_histogram")
    edges = [-1 + i * (2 / 30) for i in range(31)]
    counts = [0] * 30
    for v in values:
        counts[min(29, max(0, int((v + 1) / (2 / 30))))] += 1
    centers = [(a + b) / 2 for a, b in pairwise(edges)]
    fig, ax = _figure()
    mean = sum(values) / len(values)
    ax.bar(centers, [c / len(values) for c in counts], width=2 / 30 * 0.9, color="tab:blue", alpha=0.75,
           label=f"{r.name} ({len(values)} dims, {len(m.per_sentence.get('sentences', []))} sentences, "
                 f"mean r {mean:.3f})")
    if pub is not None:
        total = sum(pub["counts"])
        pub_mean = ctx.published["mxbai"].get("scalars", {}).get("dim_correlation_mean")
        label = "mxbai (published" + (f", mean r {pub_mean:.3f})" if pub_mean is not None else ")")
        ax.bar(pub["bin_centers"], [c / total for c in pub["counts"]], width=2 / 30 * 0.9, fill=False,
               edgecolor="black", linestyle="--", linewidth=1.1, label=label)
    for x in (-0.7, 0.7):
        ax.axvline(x, color="0.5", linewidth=0.8, linestyle=":")
    ax.set_xlim(-1.02, 1.02)
    ax.set_xlabel("Pearson r of a dimension's pooled value at depth 0 vs at depth L (across sentences)")
    ax.set_ylabel("fraction of dimensions")
    ax.grid(alpha=0.25, axis="y")
    _legend(ax)
    _title(ax, "How much of depth 0 survives: per-dimension correlation", r.name, ctx.sentence_set,
           "the article's mxbai" if pub is not None else None)
    return fig


DIM_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")


def chart_discriminative_dims(ctx: ChartContext, r: ModelReport):
    """The top-5 dimensions separating a pair at depth L, each as a fraction of its final gap."""
    m = r.measurement
    pair = _pair_name(m)
    dd = m.discriminative_dims[pair]
    fig, ax = _figure()
    series = []
    for i, (dim, curve, half) in enumerate(zip(dd["dims"], dd["curves"], dd["half_rise"])):
        final = curve[-1] or 1.0
        series.append(Series([v / final if _finite(v) else None for v in curve], m.depths,
                             f"{r.name} dim {dim} (half-rise at {half})", DIM_COLORS[i % 5]))
    pub = ctx.published.get("mxbai", {}).get(f"discriminative_dims[{pair}]")
    if pub:
        for j, (dim, curve) in enumerate(pub.items()):
            series.append(Series([v / curve[-1] for v in curve], _pub_depths(ctx, "mxbai"),
                                 "mxbai top-5 (published)" if j == 0 else None, "0.45", published=True,
                                 marker=None))
    relative = _lines(ax, series, "|a - b| as a fraction of its value at L")
    for s, half in zip(series, dd["half_rise"]):
        ax.plot([_x(half, m.depths, relative)], [s.values[half]], marker="D", color=s.color, markersize=6,
                markeredgecolor="black", linestyle="none")
    ax.axhline(0.5, color="0.5", linewidth=0.8, linestyle=":")
    _title(ax, f"Top-5 dimensions separating the {pair} pair (mean pool; diamonds: half-rise)", r.name,
           ctx.sentence_set, "the article's mxbai" if pub else None)
    return fig


BAND_COLORS = {0: "tab:blue", 64: "tab:orange", 128: "tab:green", 256: "tab:red", 512: "tab:purple"}


def chart_bands(ctx: ChartContext, r: ModelReport):
    """Matryoshka band cosine of a pair by depth (one line per band of dimensions)."""
    m = r.measurement
    pair = _pair_name(m)
    prefix = f"band_cosine[{pair},"
    names = [n for n in m.curves if n.startswith(prefix)]
    if not names:
        raise NotDrawn(f"band_cosine[{pair}] not computed")
    series = []
    for n in names:
        band = n[len(prefix):-1]
        lo = int(band.split(":")[0])
        series.append(Series(m.curves[n], m.depths, f"{r.name} dims {band}", BAND_COLORS.get(lo, "0.3")))
    pub = ctx.published.get("mxbai", {}).get(f"band_cosine[{pair}]")
    for band, s in (pub or {}).items():
        lo = int(band.split(":")[0])
        series.append(Series(s["values"], _pub_depths(ctx, "mxbai"), f"mxbai dims {band} (published)",
                             BAND_COLORS.get(lo, "0.3"), published=True, depths=s["depths"]))
    fig, ax = _figure()
    _lines(ax, series, "cosine of the pair's pooled band")
    _title(ax, f"Matryoshka bands: cosine of the {pair} pair per band of dimensions", r.name,
           ctx.sentence_set, "the article's mxbai" if pub else None)
    return fig


def chart_separability(ctx: ChartContext, r: ModelReport):
    """Between-sentence spread over within-sentence scatter, by depth."""
    m = r.measurement
    series = [Series(_curve(m, "separability_ratio"), m.depths, f"{r.name} (measured)", "tab:blue"),
              *_pub_series(ctx, "mxbai", "separability_ratio", "mxbai (published)", "tab:blue")]
    colbert = ctx.published.get("colbert", {}).get("scalars", {}).get("separability_ratio_at_24")
    if colbert is not None:
        n = _pub_depths(ctx, "colbert")
        series.append(Series([None] * (n - 1) + [colbert], n, "colbert at its last depth (published)", "tab:red",
                             published=True, marker="s"))
    fig, ax = _figure()
    _lines(ax, series, "separability ratio (log scale)")
    ax.set_yscale("log")
    _title(ax, "Sentence separability by depth", r.name, ctx.sentence_set, "the article's mxbai")
    return fig


def _recall_names(m) -> list[tuple[str, str]]:
    """(kind, curve name) per retrieval kind: @3 for 'easy' (the article's), @1 otherwise."""
    out = []
    kinds = list(dict.fromkeys(n[len("recall_at_k["):].split(",")[0] for n in m.curves
                               if n.startswith("recall_at_k[")))
    for kind in kinds:
        ks = sorted(int(n.rstrip("]").split(",")[1]) for n in m.curves if n.startswith(f"recall_at_k[{kind},"))
        want = 3 if kind == "easy" else 1
        k = want if want in ks else ks[0]
        out.append((kind, f"recall_at_k[{kind},{k}]"))
    return out


RECALL_COLORS = {"easy": "tab:green", "hard": "tab:red"}


def chart_recall(ctx: ChartContext, r: ModelReport):
    """Easy and hard retrieval recall by depth (pooled vectors at every depth)."""
    m = r.measurement
    names = _recall_names(m)
    if not names:
        raise NotDrawn(f"recall_at_k not computed ({m.not_computed.get('recall_at_k', 'not measured')})")
    own = _own_pooling(m)
    series = []
    extra = ["tab:blue", "tab:purple", "tab:brown"]
    for i, (kind, name) in enumerate(names):
        color = RECALL_COLORS.get(kind, extra[i % 3])
        k = name.rstrip("]").split(",")[1]
        series.append(Series(m.curves[name], m.depths, f"{r.name} {kind} Recall@{k} (mean pool)", color))
        if own:
            values = m.by_pooling[own]["curves"].get(name)
            if values:
                series.append(Series(values, m.depths, f"{r.name} {kind} Recall@{k} ({own} pool)", color,
                                     marker="s", width=1.0, alpha=0.6))
    series += _pub_series(ctx, "mxbai", "recall_at_k[easy,3]", "mxbai easy Recall@3 (published)", "tab:green")
    series += _pub_series(ctx, "mxbai", "recall_at_k[hard,1]", "mxbai hard Recall@1 (published)", "tab:red")
    fig, ax = _figure()
    _lines(ax, series, "recall")
    ax.set_ylim(-0.05, 1.05)
    _title(ax, "Retrieval recall by depth: easy vs hard items", r.name, ctx.sentence_set, "the article's mxbai")
    return fig


PAIR_COLORS = {"negation": "tab:blue", "role_reversal": "tab:red"}


def chart_pairs(ctx: ChartContext, r: ModelReport):
    """Mean-pool cosine of each contrast pair (negation, role reversal) by depth."""
    m = r.measurement
    names = [n for n in m.curves if n.startswith("pair_cosine[")]
    if not names:
        raise NotDrawn(f"pair_cosine not computed ({m.not_computed.get('pair_cosine', 'the sentence file has no pairs')})")
    own = _own_pooling(m)
    extra = ["tab:green", "tab:purple", "tab:brown", "tab:olive"]
    series = []
    for i, n in enumerate(names):
        pair = n[len("pair_cosine["):-1]
        color = PAIR_COLORS.get(pair, extra[i % 4])
        series.append(Series(m.curves[n], m.depths, f"{r.name} {pair} (mean pool)", color))
        if own and n in m.by_pooling[own]["curves"]:
            series.append(Series(m.by_pooling[own]["curves"][n], m.depths, f"{r.name} {pair} ({own} pool)", color,
                                 marker="s", width=1.0, alpha=0.6))
    series += _pub_series(ctx, "mxbai", "pair_cosine[negation]", "mxbai negation (published)", "tab:blue")
    series += _pub_series(ctx, "mxbai", "pair_cosine[role_reversal]", "mxbai role_reversal (published)", "tab:red")
    fig, ax = _figure()
    _lines(ax, series, "cosine of the two sentences' pooled vectors")
    _title(ax, "Negation vs role-reversal pair cosine by depth", r.name, ctx.sentence_set, "the article's mxbai")
    return fig


def chart_cls_alignment(ctx: ChartContext, r: ModelReport):
    """Cosine of the CLS vector with the mean pool, by depth."""
    m = r.measurement
    series = [Series(_curve(m, "cls_mean_alignment"), m.depths, f"{r.name} (measured)", "tab:purple"),
              *_pub_series(ctx, "mxbai", "cls_mean_alignment", "mxbai (published)", "tab:purple")]
    fig, ax = _figure()
    _lines(ax, series, "cosine(CLS, mean pool)")
    _title(ax, "CLS alignment with the mean pool by depth", r.name, ctx.sentence_set, "the article's mxbai")
    return fig


MODEL_COLORS = ("tab:green", "tab:purple", "tab:brown", "tab:olive", "tab:cyan", "tab:pink")


def chart_dense_vs_colbert(ctx: ChartContext, reports: list[ModelReport]):
    """Within-sentence cosine of every measured model against the article's dense and ColBERT curves."""
    series = []
    fixed = {"mxbai": "tab:blue", "colbert": "tab:red"}
    for i, r in enumerate(reports):
        m = r.measurement
        if not _has(m, "intra_sentence_cosine"):
            continue
        color = fixed.get(r.name, MODEL_COLORS[i % len(MODEL_COLORS)])
        series.append(Series(m.curves["intra_sentence_cosine"], m.depths, f"{r.name} (measured, L={m.last})", color))
    series += _pub_series(ctx, "mxbai", "intra_sentence_cosine", "mxbai, dense (published, L=24)", "tab:blue")
    series += _pub_series(ctx, "colbert", "intra_sentence_cosine", "jina-colbert-v2, ColBERT (published, L=24)",
                          "tab:red")
    fig, ax = _figure()
    _lines(ax, series, "within-sentence token cosine")
    names = ", ".join(r.name for r in reports)
    _title(ax, "Dense vs ColBERT: within-sentence token cosine", names, ctx.sentence_set,
           "the article's mxbai and jina-colbert-v2")
    return fig


def chart_trajectory(ctx: ChartContext, r: ModelReport):
    """2-D paths of a few tokens of one sentence in fixed depth-0 PCA axes."""
    t = r.trajectory
    if not t:
        raise NotDrawn(r.trajectory_missing)
    fig, ax = _figure(7.6, 6.0)
    last = len(t["paths"][0]) - 1
    for i, (token, path) in enumerate(zip(t["tokens"], t["paths"])):
        color = MODEL_COLORS[i % len(MODEL_COLORS)] if i >= 5 else DIM_COLORS[i]
        xs, ys = [p[0] for p in path], [p[1] for p in path]
        ax.plot(xs, ys, "-", color=color, linewidth=1.6, alpha=0.85, label=f"'{token}'")
        ax.scatter(xs[1:-1], ys[1:-1], s=14, color=color, zorder=3)
        ax.scatter(xs[:1], ys[:1], s=45, facecolor="white", edgecolor=color, linewidth=1.5, zorder=4)
        ax.scatter(xs[-1:], ys[-1:], s=110, marker="*", color=color, edgecolor="black", linewidth=0.4, zorder=5)
        ax.annotate(token, (xs[0], ys[0]), textcoords="offset points", xytext=(5, 4), fontsize=8, color=color)
    ax.set_xlabel("PC1 of depth-0 content tokens")
    ax.set_ylabel("PC2 of depth-0 content tokens")
    ax.grid(alpha=0.25)
    _legend(ax)
    sentence = t["sentence"] if len(t["sentence"]) <= 80 else t["sentence"][:77] + "..."
    ax.set_title(f"Token trajectories in fixed depth-0 PCA axes (o depth 0, * depth {last})\n"
                 f"{r.name} on '{ctx.sentence_set}': \"{sentence}\"", fontsize=9.5)
    return fig


# --------------------------------------------------------------------------- the list


@dataclass(frozen=True)
class ChartSpec:
    key: str
    title: str
    draw: Callable
    caption: str


PER_MODEL: tuple[ChartSpec, ...] = (
    ChartSpec("cosine", "Within- vs cross-sentence cosine", chart_cosine,
              "mean cosine between a sentence's content tokens (intra) and between tokens of different "
              "sentences (cross); the gap is the sentence signal"),
    ChartSpec("pca-steps", "Fixed vs refit PCA step", chart_pca_steps,
              "mean token step into each depth in fixed depth-0 PCA axes vs axes refitted per depth (log scale)"),
    ChartSpec("write-depth", "Write-depth histogram", chart_write_depth,
              "fraction of pooled dimensions whose largest change happens in each depth"),
    ChartSpec("dim-correlation", "Per-dimension correlation histogram", chart_dim_correlation,
              "per dimension, Pearson r of the pooled value at depth 0 vs depth L across sentences"),
    ChartSpec("discriminative-dims", "Top-5 discriminative dimensions", chart_discriminative_dims,
              "the 5 dimensions with the largest pair gap at L, each over depth as a fraction of its final gap"),
    ChartSpec("matryoshka-bands", "Matryoshka band cosine", chart_bands,
              "cosine of the pair's pooled vectors restricted to each band of dimensions"),
    ChartSpec("separability", "Separability by depth", chart_separability,
              "between-sentence spread of token means over within-sentence token scatter (log scale)"),
    ChartSpec("recall", "Easy and hard recall by depth", chart_recall,
              "recall of the positive among the pooled candidates, easy items @3 and hard items @1"),
    ChartSpec("pair-cosine", "Negation vs role-reversal pair cosine", chart_pairs,
              "cosine of each contrast pair's pooled vectors"),
    ChartSpec("cls-alignment", "CLS alignment", chart_cls_alignment,
              "cosine between the CLS vector and the mean pool"),
    ChartSpec("token-trajectory", "Token trajectory in fixed depth-0 PCA axes", chart_trajectory,
              "a few tokens of one sentence projected at every depth onto the depth-0 PCA axes"),
)
DENSE_VS_COLBERT = ChartSpec("dense-vs-colbert", "Dense vs ColBERT within-sentence cosine", chart_dense_vs_colbert,
                             "within-sentence cosine of every measured model on relative depth, against the "
                             "article's dense (mxbai) and ColBERT curves")


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)


def draw_all(reports: list[ModelReport], ctx: ChartContext, out: Path, extra: list | None = None
             ) -> tuple[list[dict], list[dict]]:
    """Every chart for every model: (charts written, charts not drawn), each a list of dicts
    with chart, title, model, and file + caption or reason.

    `extra`: (key, title, caption, fn(measurement, path) -> bool) charts of other modules
    (the open question), drawn per model when fn returns True.
    """
    out = Path(out)
    written, skipped = [], []

    def attempt(spec_key, title, caption, model, draw, name):
        path = out / name
        try:
            fig = draw()
        except NotDrawn as exc:
            skipped.append({"chart": spec_key, "title": title, "model": model, "reason": str(exc)})
            return
        _save(fig, path)
        written.append({"chart": spec_key, "title": title, "model": model, "file": name, "caption": caption})

    for r in reports:
        for spec in PER_MODEL:
            attempt(spec.key, spec.title, spec.caption, r.name,
                    lambda spec=spec, r=r: spec.draw(ctx, r), f"{slug(r.name)}-{spec.key}.png")
        for key, title, caption, fn in extra or []:
            name = f"{slug(r.name)}-{key}.png"
            try:
                ok = fn(r.measurement, out / name)
            except Exception as exc:  # noqa: BLE001 - another module's chart must not break the report
                skipped.append({"chart": key, "title": title, "model": r.name,
                                "reason": f"failed: {exc.__class__.__name__}: {exc}"})
                continue
            if ok:
                written.append({"chart": key, "title": title, "model": r.name, "file": name, "caption": caption})
            else:
                skipped.append({"chart": key, "title": title, "model": r.name,
                                "reason": "its curves were not measured (needs a sublayer capture)"})
    if reports:
        attempt(DENSE_VS_COLBERT.key, DENSE_VS_COLBERT.title, DENSE_VS_COLBERT.caption,
                ", ".join(r.name for r in reports), lambda: DENSE_VS_COLBERT.draw(ctx, reports),
                f"{DENSE_VS_COLBERT.key}.png")
    return written, skipped
