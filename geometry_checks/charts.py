"""The article's charts, for every measured model, with the published curves overlaid.

Drawn with matplotlib's object API on the Agg canvas (no pyplot: no global state, no GUI
backend), one PNG per chart. Conventions, the same on every chart:

- measured curves solid (or dash-dot, dotted: one style per quantity), published curves
  (the article's mxbai-embed-large-v1 and jina-colbert-v2,
  `baselines/published/embedding-layers.json`) dashed;
- the title names the model(s) and the sentence set;
- every per-depth chart overlays all measured models on relative depth (x = depth / L,
  0 = embeddings, 1 = last block), so MiniLM's 6 blocks, MPNet's 12 and the article's 24
  share one axis;
- one colour per model on every chart (`model_color`: a fixed map in registry order,
  any other model after), the published curves in their model's colour too; where a
  chart shows several quantities (within vs cross cosine, easy vs hard recall, the pairs,
  the bands) each quantity has its line style and marker (`quantity_style`). The style
  is decided in one place, the "style" section below.

Three charts are per model: the per-dimension correlation histogram and the token
trajectory (not per depth), and the massive activations (issue 23: five curves of one
model, shares and a norm ratio on two panels); and the open question's chart, drawn by
geometry_checks/openquestion.py.

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

    @property
    def label(self) -> str:
        """The name in legends and titles: a directory or hub ID by its last part."""
        return slug(self.name) if "/" in self.name or "\\" in self.name else self.name


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
    linestyle: object = None  # None: solid measured, dashed published (quantity_style gives others)


def slug(name: str) -> str:
    """A file-name-safe model name (a directory or hub ID keeps only its tail)."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name).rstrip("/").split("/")[-1]).strip("-.")
    return text[-60:] or "model"


# --------------------------------------------------------------------------- drawing helpers

# --------------------------------------------------------------------------- style (issue 24)
# A model has one colour on every chart: the registry's models in registry order (minilm,
# mpnet, mxbai, colbert), then any other model (a directory, a hub ID, a stand-in's name)
# in the order this process first draws it. The article's published curves take their
# model's colour (mxbai, colbert), dashed. A quantity (within vs cross cosine, easy vs
# hard recall, a pair, a band of dimensions) is a line style and a marker: the first
# quantity solid with circles, the next dash-dot with squares, then dotted with
# triangles, then solid with diamonds, ...; the published curve
# of a quantity is dashed with that quantity's marker (hollow, smaller). A chart of one
# quantity draws every model solid with circles.
MODEL_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
                "tab:olive", "tab:cyan", "tab:gray")
# (line style, marker): three styles a reader cannot take for the published dashes, each
# quantity after the third told apart by its marker too
QUANTITY_STYLES = (("-", "o"), ("-.", "s"), (":", "^"), ("-", "D"), ("-.", "v"), (":", "P"))
PUBLISHED_LINESTYLE = "--"
_MODEL_ORDER: dict[str, int] = {}


def model_color(name: str) -> str:
    """The model's colour on every chart (registry order first, then first drawn)."""
    from .registry import MODELS

    if not _MODEL_ORDER:
        _MODEL_ORDER.update({n: i for i, n in enumerate(MODELS)})
    if name not in _MODEL_ORDER:
        _MODEL_ORDER[name] = len(_MODEL_ORDER)
    return MODEL_COLORS[_MODEL_ORDER[name] % len(MODEL_COLORS)]


def quantity_style(j: int | None) -> tuple[object, str | None]:
    """(line style, marker) of a chart's j-th quantity; (solid, circle) for None (one quantity)."""
    return QUANTITY_STYLES[(j or 0) % len(QUANTITY_STYLES)]


def _figure(width: float = 7.6, height: float = 5.4) -> tuple[Figure, object]:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _names(reports: list[ModelReport]) -> str:
    return ", ".join(r.label for r in reports)


def _title(ax, what: str, models: str, sentence_set: str, published: str | None) -> None:
    line = f"{models} on '{sentence_set}' (measured)"
    if published:
        line += f" vs {published} (dashed)"
    ax.set_title(f"{what}\n{line}", fontsize=10)


def _x(depth: int, n_depths: int) -> float:
    """Relative depth: depth / L (0 = embeddings, 1 = last block)."""
    return depth / max(n_depths - 1, 1)


def _depth_axis(ax) -> None:
    ax.set_xlabel("relative depth (depth / L; 0 = embeddings, 1 = last block)")
    ax.set_xlim(-0.03, 1.03)


def _finite(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _lines(ax, series: list[Series], ylabel: str) -> None:
    """Draw the series on relative depth; raise NotDrawn if no measured series has a value."""
    if not any(_finite(v) for s in series if not s.published for v in s.values):
        raise NotDrawn("no measured value")
    for s in series:
        depths = s.depths if s.depths is not None else range(len(s.values))
        pts = [(_x(d, s.n_depths), v) for d, v in zip(depths, s.values) if _finite(v)]
        if not pts:
            continue
        xs, ys = zip(*pts)
        _band(ax, s)
        style = PUBLISHED_LINESTYLE if s.published else (s.linestyle or "-")
        ax.plot(xs, ys, linestyle=style, color=s.color, label=s.label, marker=s.marker,
                markersize=3 if s.published else 4, markerfacecolor="none" if s.published else s.color,
                linewidth=1.3 if s.published else s.width,
                alpha=s.alpha, zorder=2 if s.published else 3)  # measured drawn over published
    _depth_axis(ax)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.25)
    _legend(ax)


class Banded(list):
    """A measured curve (a list over depths) that carries its 95% bootstrap interval
    (`band` = (lo, hi), lists over depths; issue 24): `_curve` returns one, so every chart
    that plots a measured curve draws its band without knowing about it."""

    band: tuple[list, list] | None = None


def _band(ax, s: "Series") -> None:
    """Shade a measured series' 95% bootstrap interval (fill_between) in its own colour."""
    band = getattr(s.values, "band", None)
    if band is None or s.published:
        return
    depths = s.depths if s.depths is not None else range(len(s.values))
    pts = [(_x(d, s.n_depths), lo, hi) for d, lo, hi in zip(depths, *band) if _finite(lo) and _finite(hi)]
    if pts:
        xs, los, his = zip(*pts)
        ax.fill_between(xs, los, his, color=s.color, alpha=0.15, linewidth=0, zorder=1)


def _legend(ax) -> None:
    """The legend under the axes, never over a curve."""
    handles, labels = ax.get_legend_handles_labels()
    short = all(len(label) <= 16 for label in labels)
    ncol = max(1, min(len(labels), 5 if short else (3 if len(labels) > 8 and max(map(len, labels)) <= 34 else 2)))
    ax.legend(handles, labels, fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=ncol,
              frameon=False)
    rows = -(-len(labels) // ncol)
    if rows > 3:  # several models overlaid: a taller figure, so the axes keep their size
        width, height = ax.figure.get_size_inches()
        ax.figure.set_size_inches(width, height + 0.17 * (rows - 3))


def _per_model(reports: list[ModelReport], fn: Callable, omitted: list | None) -> list[Series]:
    """fn(i, report) -> that model's series, for every model. A model whose metric was not
    computed is left out of the chart and noted in `omitted` as (model, reason); when no
    model has the metric, the chart is not drawn (NotDrawn with the reason)."""
    out, missing = [], []
    for i, r in enumerate(reports):
        try:
            out += fn(i, r)
        except NotDrawn as exc:
            missing.append((r.name, str(exc)))
    if not out:
        reasons = list(dict.fromkeys(why for _, why in missing))
        raise NotDrawn(reasons[0] if len(reasons) == 1 else "; ".join(f"{n}: {why}" for n, why in missing))
    if omitted is not None:
        omitted += missing
    return out


def _curve(m, name: str, pooling: str = "mean") -> list:
    try:
        values = Banded(m.curve(name, pooling))
    except KeyError:
        base = name.split("[")[0]
        raise NotDrawn(f"{name} not computed ({m.not_computed.get(base, 'not measured')})") from None
    iv = m.interval(name, pooling) if hasattr(m, "interval") else None
    if iv is not None:
        values.band = (iv["lo"], iv["hi"])
    return values


def _has(m, name: str) -> bool:
    return name in m.curves


def _pub_curve(ctx: ChartContext, model: str, name: str) -> list | None:
    return ctx.published.get(model, {}).get("curves", {}).get(name)


def _pub_depths(ctx: ChartContext, model: str) -> int:
    return ctx.published.get(model, {}).get("depths", 25)


def _pub_series(ctx, model, name, label, quantity: int | None = None) -> list[Series]:
    """The published curve of `model` (its colour, dashed); `quantity`: its quantity's marker."""
    values = _pub_curve(ctx, model, name)
    if values is None:
        return []
    return [Series(values, _pub_depths(ctx, model), label, model_color(model), published=True,
                   marker=None if quantity is None else quantity_style(quantity)[1])]


def _q(r: "ModelReport", j: int | None = None) -> dict:
    """A measured Series' style: the model's colour, the quantity's line style and marker."""
    linestyle, marker = quantity_style(j)
    return {"color": model_color(r.name), "linestyle": linestyle, "marker": marker}


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


def _is_colbert(r: ModelReport) -> bool:
    return r.name == "colbert" or r.measurement.provenance.get("family") == "colbert"


# --------------------------------------------------------------------------- the charts
# Per-depth charts take every measured model (`reports`) and overlay them on relative
# depth; `omitted` collects (model, reason) for a model left out of a chart.


def chart_cosine(ctx: ChartContext, reports: list[ModelReport], omitted: list | None = None):
    """Within-sentence vs cross-sentence token cosine by depth (the article's first chart)."""

    def one(i, r):
        m = r.measurement
        return [Series(_curve(m, "intra_sentence_cosine"), m.depths, f"{r.label} within-sentence (intra)", **_q(r, 0)),
                Series(_curve(m, "cross_sentence_cosine"), m.depths, f"{r.label} cross-sentence baseline", **_q(r, 1))]

    series = _per_model(reports, one, omitted)
    series += [*_pub_series(ctx, "mxbai", "intra_sentence_cosine", "mxbai within-sentence (published)", 0),
               *_pub_series(ctx, "mxbai", "cross_sentence_cosine", "mxbai cross-sentence (published)", 1)]
    published = "the article's mxbai"
    if any(_is_colbert(r) for r in reports):  # its own published curve too
        series += _pub_series(ctx, "colbert", "intra_sentence_cosine", "jina-colbert-v2 within-sentence (published)",
                              0)
        published = "the article's mxbai and jina-colbert-v2"
    fig, ax = _figure()
    _lines(ax, series, "mean token cosine")
    _title(ax, "Within- vs cross-sentence token cosine", _names(reports), ctx.sentence_set, published)
    return fig


def chart_pca_steps(ctx: ChartContext, reports: list[ModelReport], omitted: list | None = None):
    """Mean token step per depth in fixed depth-0 PCA axes vs PCA refitted at every depth."""

    def one(i, r):
        m = r.measurement
        return [Series(_curve(m, "fixed_pca_step"), m.depths, f"{r.label} fixed depth-0 axes", **_q(r, 0)),
                Series(_curve(m, "refit_pca_step"), m.depths, f"{r.label} PCA refitted per depth", **_q(r, 1))]

    series = _per_model(reports, one, omitted)
    series += [*_pub_series(ctx, "mxbai", "fixed_pca_step", "mxbai fixed axes (published)", 0),
               *_pub_series(ctx, "mxbai", "refit_pca_step", "mxbai refitted (published)", 1)]
    fig, ax = _figure()
    _lines(ax, series, "mean step into this depth (PCA units, log scale)")
    ax.set_yscale("log")
    values = [v for s in series for v in s.values if _finite(v) and v > 0]
    ax.set_ylim(min(values) / 1.5, max(values) * 1.5)
    _title(ax, "Fixed vs refitted PCA: apparent token step per depth", _names(reports), ctx.sentence_set,
           "the article's mxbai")
    return fig


def _fractions(counts: list) -> list:
    total = sum(c for c in counts if c) or 1
    return [(c or 0) / total for c in counts]


def chart_write_depth(ctx: ChartContext, reports: list[ModelReport], omitted: list | None = None):
    """Where each dimension of the pooled vector gets its largest write (fraction of dims per depth)."""

    def one(i, r):
        m = r.measurement
        counts = _curve(m, "write_depth_histogram")
        frac = m.scalars.get("late_write_fraction")
        label = f"{r.label} (L={m.last}, {sum(counts)} dims" + (
            f"; last two depths: {frac:.0%})" if frac is not None else ")")
        values = Banded(_fractions(counts))
        if counts.band is not None:  # the band of each count, as a fraction of the dims
            total = sum(c for c in counts if c) or 1
            values.band = tuple([(v or 0) / total if v is not None else None for v in side] for side in counts.band)
        return [Series(values, m.depths, label, **_q(r))]

    series = _per_model(reports, one, omitted)
    pub = _pub_curve(ctx, "mxbai", "write_depth_histogram")
    if pub is not None:
        n = len(pub) - 1
        series.append(Series(_fractions(pub), _pub_depths(ctx, "mxbai"),
                             f"mxbai (published: {pub[-1]} dims at {n}, {pub[-2]} at {n - 1} of {sum(pub)})",
                             model_color("mxbai"), published=True, marker=None))
    fig, ax = _figure()
    _lines(ax, series, "fraction of dimensions written most at this depth")
    _title(ax, "Write depth of each pooled dimension (mean pool)", _names(reports), ctx.sentence_set,
           "the article's mxbai" if pub is not None else None)
    return fig


def chart_dim_correlation(ctx: ChartContext, r: ModelReport):
    """Histogram of per-dimension Pearson r between the depth-0 and depth-L pools (one model:
    not a per-depth chart)."""
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
    ax.bar(centers, [c / len(values) for c in counts], width=2 / 30 * 0.9, color=model_color(r.name), alpha=0.75,
           label=f"{r.label} ({len(values)} dims, {len(m.per_sentence.get('sentences', []))} sentences, "
                 f"mean r {mean:.3f})")
    if pub is not None:
        total = sum(pub["counts"])
        pub_mean = ctx.published["mxbai"].get("scalars", {}).get("dim_correlation_mean")
        label = "mxbai (published" + (f", mean r {pub_mean:.3f})" if pub_mean is not None else ")")
        ax.bar(pub["bin_centers"], [c / total for c in pub["counts"]], width=2 / 30 * 0.9, fill=False,
               edgecolor=model_color("mxbai"), linestyle=PUBLISHED_LINESTYLE, linewidth=1.1, label=label)
    for x in (-0.7, 0.7):
        ax.axvline(x, color="0.5", linewidth=0.8, linestyle=":")
    ax.set_xlim(-1.02, 1.02)
    ax.set_xlabel("Pearson r of a dimension's pooled value at depth 0 vs at depth L (across sentences)")
    ax.set_ylabel("fraction of dimensions")
    ax.grid(alpha=0.25, axis="y")
    _legend(ax)
    _title(ax, "How much of depth 0 survives: per-dimension correlation", r.label, ctx.sentence_set,
           "the article's mxbai" if pub is not None else None)
    return fig


def chart_discriminative_dims(ctx: ChartContext, reports: list[ModelReport], omitted: list | None = None):
    """The top-5 dimensions separating a pair at depth L, each as a fraction of its final gap."""
    halves = []  # (x, y, color, marker) of each half-rise point

    def one(i, r):
        m = r.measurement
        pair = _pair_name(m)
        dd = m.discriminative_dims[pair]
        out = []
        for j, (curve, half) in enumerate(zip(dd["curves"], dd["half_rise"])):
            final = curve[-1] or 1.0
            values = [v / final if _finite(v) else None for v in curve]
            label = f"{r.label} top-5 dims {dd['dims']} (half-rise at {dd['half_rise']})" if j == 0 else None
            out.append(Series(values, m.depths, label, **_q(r), width=1.2))
            if _finite(values[half]):
                halves.append((_x(half, m.depths), values[half], model_color(r.name), "*"))
        return out

    series = _per_model(reports, one, omitted)
    pair = _pair_name(next(r.measurement for r in reports if r.measurement.discriminative_dims))
    pub = ctx.published.get("mxbai", {}).get(f"discriminative_dims[{pair}]")
    for j, curve in enumerate((pub or {}).values()):
        series.append(Series([v / curve[-1] for v in curve], _pub_depths(ctx, "mxbai"),
                             "mxbai top-5 (published)" if j == 0 else None, model_color("mxbai"), published=True,
                             marker=None))
    fig, ax = _figure()
    _lines(ax, series, "|a - b| as a fraction of its value at L")
    for x, y, color, marker in halves:
        ax.plot([x], [y], marker="*", color=color, markersize=10, markeredgecolor="black", linestyle="none",
                zorder=4)
    ax.axhline(0.5, color="0.5", linewidth=0.8, linestyle=":")
    _title(ax, f"Top-5 dimensions separating the {pair} pair (mean pool; stars: half-rise)", _names(reports),
           ctx.sentence_set, "the article's mxbai" if pub else None)
    return fig


BANDS = (0, 64, 128, 256, 512)  # a band's quantity index (line style) by its first dimension


def _band_index(lo: int) -> int:
    return BANDS.index(lo) if lo in BANDS else len(BANDS)


def chart_bands(ctx: ChartContext, reports: list[ModelReport], omitted: list | None = None):
    """Matryoshka band cosine of a pair by depth (one line per band of dimensions and model)."""

    def one(i, r):
        m = r.measurement
        pair = _pair_name(m)
        prefix = f"band_cosine[{pair},"
        names = [n for n in m.curves if n.startswith(prefix)]
        if not names:
            raise NotDrawn(f"band_cosine[{pair}] not computed")
        out = []
        for n in names:
            band = n[len(prefix):-1]
            lo = int(band.split(":")[0])
            out.append(Series(m.curves[n], m.depths, f"{r.label} dims {band}", **_q(r, _band_index(lo))))
        return out

    series = _per_model(reports, one, omitted)
    pair = _pair_name(next(r.measurement for r in reports if r.measurement.discriminative_dims))
    pub = ctx.published.get("mxbai", {}).get(f"band_cosine[{pair}]")
    for band, s in (pub or {}).items():
        lo = int(band.split(":")[0])
        series.append(Series(s["values"], _pub_depths(ctx, "mxbai"), f"mxbai dims {band} (published)",
                             model_color("mxbai"), published=True, depths=s["depths"],
                             marker=quantity_style(_band_index(lo))[1]))
    fig, ax = _figure()
    _lines(ax, series, "cosine of the pair's pooled band")
    _title(ax, f"Matryoshka bands: cosine of the {pair} pair per band of dimensions", _names(reports),
           ctx.sentence_set, "the article's mxbai" if pub else None)
    return fig


def chart_separability(ctx: ChartContext, reports: list[ModelReport], omitted: list | None = None):
    """Between-sentence spread over within-sentence scatter, by depth."""
    series = _per_model(reports, lambda i, r: [
        Series(_curve(r.measurement, "separability_ratio"), r.measurement.depths, f"{r.label} (L={r.measurement.last})",
               **_q(r))], omitted)
    series += _pub_series(ctx, "mxbai", "separability_ratio", "mxbai (published)")
    colbert = ctx.published.get("colbert", {}).get("scalars", {}).get("separability_ratio_at_24")
    if colbert is not None:
        n = _pub_depths(ctx, "colbert")
        series.append(Series([None] * (n - 1) + [colbert], n, "colbert at its last depth (published)",
                             model_color("colbert"), published=True, marker="s"))
    fig, ax = _figure()
    _lines(ax, series, "separability ratio (log scale)")
    ax.set_yscale("log")
    _title(ax, "Sentence separability by depth", _names(reports), ctx.sentence_set, "the article's mxbai")
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


RECALL_KINDS = ("easy", "hard")  # a retrieval kind's quantity index (line style); others after


def chart_recall(ctx: ChartContext, reports: list[ModelReport], omitted: list | None = None):
    """Easy and hard retrieval recall by depth (pooled vectors at every depth)."""
    def one(i, r):
        m = r.measurement
        names = _recall_names(m)
        if not names:
            raise NotDrawn(f"recall_at_k not computed ({m.not_computed.get('recall_at_k', 'not measured')})")
        own = _own_pooling(m)
        out = []
        for j, (kind, name) in enumerate(names):
            q = RECALL_KINDS.index(kind) if kind in RECALL_KINDS else len(RECALL_KINDS) + j
            k = name.rstrip("]").split(",")[1]
            out.append(Series(m.curves[name], m.depths, f"{r.label} {kind} Recall@{k} (mean pool)", **_q(r, q)))
            if own:
                values = m.by_pooling[own]["curves"].get(name)
                if values:
                    out.append(Series(values, m.depths, f"{r.label} {kind} Recall@{k} ({own} pool)", **_q(r, q),
                                      width=1.0, alpha=0.5))
        return out

    series = _per_model(reports, one, omitted)
    series += _pub_series(ctx, "mxbai", "recall_at_k[easy,3]", "mxbai easy Recall@3 (published)", 0)
    series += _pub_series(ctx, "mxbai", "recall_at_k[hard,1]", "mxbai hard Recall@1 (published)", 1)
    fig, ax = _figure()
    _lines(ax, series, "recall")
    ax.set_ylim(-0.05, 1.05)
    _title(ax, "Retrieval recall by depth: easy vs hard items", _names(reports), ctx.sentence_set,
           "the article's mxbai")
    return fig


PAIRS = ("negation", "role_reversal")  # a pair's quantity index (line style); others after


def chart_pairs(ctx: ChartContext, reports: list[ModelReport], omitted: list | None = None):
    """Mean-pool cosine of each contrast pair (negation, role reversal) by depth."""
    def one(i, r):
        m = r.measurement
        names = [n for n in m.curves if n.startswith("pair_cosine[")]
        if not names:
            raise NotDrawn(f"pair_cosine not computed "
                           f"({m.not_computed.get('pair_cosine', 'the sentence file has no pairs')})")
        own = _own_pooling(m)
        out = []
        for j, n in enumerate(names):
            pair = n[len("pair_cosine["):-1]
            q = PAIRS.index(pair) if pair in PAIRS else len(PAIRS) + j
            out.append(Series(m.curves[n], m.depths, f"{r.label} {pair} (mean pool)", **_q(r, q)))
            if own and n in m.by_pooling[own]["curves"]:
                out.append(Series(m.by_pooling[own]["curves"][n], m.depths, f"{r.label} {pair} ({own} pool)",
                                  **_q(r, q), width=1.0, alpha=0.5))
        return out

    series = _per_model(reports, one, omitted)
    series += _pub_series(ctx, "mxbai", "pair_cosine[negation]", "mxbai negation (published)", 0)
    series += _pub_series(ctx, "mxbai", "pair_cosine[role_reversal]", "mxbai role_reversal (published)", 1)
    fig, ax = _figure()
    _lines(ax, series, "cosine of the two sentences' pooled vectors")
    _title(ax, "Negation vs role-reversal pair cosine by depth", _names(reports), ctx.sentence_set,
           "the article's mxbai")
    return fig


def chart_cls_alignment(ctx: ChartContext, reports: list[ModelReport], omitted: list | None = None):
    """Cosine of the CLS vector with the mean pool, by depth."""
    series = _per_model(reports, lambda i, r: [
        Series(_curve(r.measurement, "cls_mean_alignment"), r.measurement.depths, f"{r.label} (L={r.measurement.last})",
               **_q(r))], omitted)
    series += _pub_series(ctx, "mxbai", "cls_mean_alignment", "mxbai (published)")
    fig, ax = _figure()
    _lines(ax, series, "cosine(CLS, mean pool)")
    _title(ax, "CLS alignment with the mean pool by depth", _names(reports), ctx.sentence_set, "the article's mxbai")
    return fig


def chart_dense_vs_colbert(ctx: ChartContext, reports: list[ModelReport], omitted: list | None = None):
    """Within-sentence cosine of every measured model against the article's dense and ColBERT curves."""
    series = _per_model(reports, lambda i, r: [
        Series(_curve(r.measurement, "intra_sentence_cosine"), r.measurement.depths,
               f"{r.label} (measured, L={r.measurement.last})", **_q(r))], omitted)
    series += _pub_series(ctx, "mxbai", "intra_sentence_cosine", "mxbai, dense (published, L=24)")
    series += _pub_series(ctx, "colbert", "intra_sentence_cosine", "jina-colbert-v2, ColBERT (published, L=24)")
    fig, ax = _figure()
    _lines(ax, series, "within-sentence token cosine")
    _title(ax, "Dense vs ColBERT: within-sentence token cosine", _names(reports), ctx.sentence_set,
           "the article's mxbai and jina-colbert-v2")
    return fig


MASSIVE_LINES = (  # issue 23: (curve, legend text), one quantity (line style) each
    ("massive_dims_norm_share", "top-{k} dims' share of the squared norm"),
    ("massive_dims_cosine_share", "top-{k} dims' share of the within-sentence cosine"),
    ("first_position_norm_share", "first position's share of the squared norm"),
    ("first_position_cosine", "mean cosine of the first position with the other tokens"),
)


def chart_massive(ctx: ChartContext, r: ModelReport):
    """Massive activations (issue 23), one model: above, the share of the squared token norm
    and of the within-sentence cosine that the top K dimensions carry, the first position's
    share of the squared norm and its mean cosine with the sentence's other tokens, with the
    uniform share K / H for reference; below (log scale), |h_0| over the median token norm."""
    m = r.measurement
    k = m.massive_dims.get("k", 3) if isinstance(getattr(m, "massive_dims", None), dict) else 3
    top, missing = [], []
    for j, (name, text) in enumerate(MASSIVE_LINES):
        try:  # a curve null at every depth (the cosine share where every cosine is <= 0.01) drops alone
            top.append(Series(_curve(m, name), m.depths, f"{r.label} {text.format(k=k)}", **_q(r, j)))
        except NotDrawn as exc:
            missing.append(str(exc))
    if not top:
        raise NotDrawn("; ".join(missing))
    try:
        ratio = [Series(_curve(m, "first_position_norm_ratio"), m.depths,
                        f"{r.label} |h| of the first position / median |h| of the others",
                        **_q(r, len(MASSIVE_LINES)))]
    except NotDrawn as exc:  # no sentence has a token besides position 0: the lower panel says so
        ratio, missing = [], [*missing, str(exc)]
    fig = Figure(figsize=(7.6, 8.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax, low = fig.subplots(2, 1, height_ratios=[2, 1])
    hidden = m.provenance.get("hidden_size")
    if hidden:
        ax.axhline(k / hidden, color="0.5", linewidth=0.9, linestyle=":", label=f"uniform share K/H = {k}/{hidden}")
    _lines(ax, top, "share, or mean cosine")
    _title(ax, f"Massive activations: the top {k} dimensions and the first position", r.label, ctx.sentence_set,
           None)
    low.axhline(1.0, color="0.5", linewidth=0.9, linestyle=":", label="first position = a typical token")
    if ratio:
        _lines(low, ratio, "norm ratio (log)")
        low.set_yscale("log")
    if missing:  # what is left out, on the chart itself
        low.text(0.01, 0.02, "not drawn: " + "; ".join(missing), transform=low.transAxes, fontsize=7, va="bottom")
    low.legend(fontsize=7.5, loc="best", frameon=False)  # inside: below a short panel it would cover the x label
    return fig


TOKEN_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:olive")


def chart_trajectory(ctx: ChartContext, r: ModelReport):
    """2-D paths of a few tokens of one sentence in fixed depth-0 PCA axes."""
    t = r.trajectory
    if not t:
        raise NotDrawn(r.trajectory_missing)
    fig, ax = _figure(7.6, 6.0)
    last = len(t["paths"][0]) - 1
    for i, (token, path) in enumerate(zip(t["tokens"], t["paths"])):
        color = TOKEN_COLORS[i % len(TOKEN_COLORS)]
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
                 f"{r.label} on '{ctx.sentence_set}': \"{sentence}\"", fontsize=9.5)
    return fig


# --------------------------------------------------------------------------- the list


@dataclass(frozen=True)
class ChartSpec:
    """One chart: `overlay` charts are per-depth and drawn once for every measured model
    (`draw(ctx, reports, omitted)`, file `<key>.png`); the others once per model
    (`draw(ctx, report)`, file `<model>-<key>.png`)."""

    key: str
    title: str
    draw: Callable
    caption: str
    overlay: bool = True


OVERLAY: tuple[ChartSpec, ...] = (
    ChartSpec("cosine", "Within- vs cross-sentence cosine", chart_cosine,
              "mean cosine between a sentence's content tokens (intra) and between tokens of different "
              "sentences (cross); the gap is the sentence signal"),
    ChartSpec("pca-steps", "Fixed vs refit PCA step", chart_pca_steps,
              "mean token step into each depth in fixed depth-0 PCA axes vs axes refitted per depth (log scale)"),
    ChartSpec("write-depth", "Write-depth histogram", chart_write_depth,
              "fraction of pooled dimensions whose largest change happens at each depth"),
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
    ChartSpec("dense-vs-colbert", "Dense vs ColBERT within-sentence cosine", chart_dense_vs_colbert,
              "within-sentence cosine of every measured model against the article's dense (mxbai) and "
              "ColBERT curves"),
)
PER_MODEL: tuple[ChartSpec, ...] = (
    ChartSpec("dim-correlation", "Per-dimension correlation histogram", chart_dim_correlation,
              "per dimension, Pearson r of the pooled value at depth 0 vs depth L across sentences", overlay=False),
    ChartSpec("token-trajectory", "Token trajectory in fixed depth-0 PCA axes", chart_trajectory,
              "a few tokens of one sentence projected at every depth onto the depth-0 PCA axes", overlay=False),
    ChartSpec("massive-activations", "Massive activations", chart_massive,
              "how much of the squared token norm and of the within-sentence cosine the top 3 dimensions carry "
              "(dotted: the uniform share K/H), the first position's share of the squared norm and its mean cosine "
              "with the other tokens; below, its norm over the median token norm (log scale)", overlay=False),
)
CHARTS: tuple[ChartSpec, ...] = OVERLAY + PER_MODEL


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)


def draw_all(reports: list[ModelReport], ctx: ChartContext, out: Path, extra: list | None = None
             ) -> tuple[list[dict], list[dict]]:
    """Every chart: (charts written, charts not drawn), each a list of dicts with chart,
    title, model (the models, comma-separated, for an overlay), and file + caption or reason.

    Overlay charts first (one each, every measured model on relative depth), then the
    per-model charts. A model left out of an overlay (its metric not computed while
    another model's was) is a `not drawn` entry of its own. `extra`: (key, title, caption,
    fn(measurement, path) -> bool) charts of other modules (the open question), drawn per
    model when fn returns True.
    """
    out = Path(out)
    written, skipped = [], []

    def attempt(spec: ChartSpec, model: str, draw, name: str) -> None:
        try:
            fig = draw()
        except NotDrawn as exc:
            skipped.append({"chart": spec.key, "title": spec.title, "model": model, "reason": str(exc)})
            return
        _save(fig, out / name)
        written.append({"chart": spec.key, "title": spec.title, "model": model, "file": name,
                        "caption": spec.caption, "overlay": spec.overlay})

    if reports:
        for spec in OVERLAY:
            omitted: list = []
            attempt(spec, _names(reports), lambda spec=spec, omitted=omitted: spec.draw(ctx, reports, omitted),
                    f"{spec.key}.png")
            skipped += [{"chart": spec.key, "title": spec.title, "model": model,
                         "reason": f"left out of {spec.key}.png: {why}"} for model, why in omitted]
    for r in reports:
        for spec in PER_MODEL:
            attempt(spec, r.name, lambda spec=spec, r=r: spec.draw(ctx, r), f"{slug(r.name)}-{spec.key}.png")
        for key, title, caption, fn in extra or []:
            name = f"{slug(r.name)}-{key}.png"
            try:
                ok = fn(r.measurement, out / name)
            except Exception as exc:  # noqa: BLE001 - another module's chart must not break the report
                skipped.append({"chart": key, "title": title, "model": r.name,
                                "reason": f"failed: {exc.__class__.__name__}: {exc}"})
                continue
            if ok:
                written.append({"chart": key, "title": title, "model": r.name, "file": name, "caption": caption,
                                "overlay": False})
            else:
                skipped.append({"chart": key, "title": title, "model": r.name,
                                "reason": "its curves were not measured (needs a sublayer capture)"})
    return written, skipped
