"""The result type: a `Measurement` (every metric of one model, sentence set and pooling) and
its JSON, apart from the two paths that compute one (measure.py, the in-memory reference;
streaming.py, the production engine). Imports no torch: the baselines, the report and the
pytest plugin read measurements without loading a model library. See docs/metrics.md for
what each field holds.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from .outputs import write_text

SCHEMA = 2  # 2: bootstrap intervals (issue 24)


@dataclass
class Measurement:
    """Every metric of one (model, sentence set, pooling). See docs/measurement.md.

    curves: name -> list over depths 0..L (None where a depth has no value).
    scalars: name -> number. per_dimension / per_sentence: name -> list.
    discriminative_dims: pair -> {dims, curves, half_rise}. proj: metric -> value at
    the projection depth (ColBERT). final: metric -> value at the final norm's output
    (pre-norm models' stage `final`, beside the depths). massive_dims: the dimensions behind
    massive_dims_norm_share and massive_dims_cosine_share, {"k": K, "norm": [...], "cosine": [...]},
    each a list over depths of the K indices (largest first), None where the share is None
    (issue 23; not a curve: indices are not numbers to compare or resample). by_pooling: pooling -> {curves, scalars, ...} of
    the pooled metrics under another pooling than mean. not_computed: metric -> why.
    """

    model: str
    sentence_set: str
    depths: int
    curves: dict = field(default_factory=dict)
    scalars: dict = field(default_factory=dict)
    per_dimension: dict = field(default_factory=dict)
    per_sentence: dict = field(default_factory=dict)
    discriminative_dims: dict = field(default_factory=dict)
    proj: dict = field(default_factory=dict)
    final: dict = field(default_factory=dict)
    by_pooling: dict = field(default_factory=dict)
    massive_dims: dict = field(default_factory=dict)
    not_computed: dict = field(default_factory=dict)
    # issue 24: percentile bootstrap intervals over sentences (geometry_checks/intervals.py):
    # curve -> {lo, hi, diff_lo, diff_hi}; scalar -> {lo, hi}; metric -> why it has none
    intervals: dict = field(default_factory=dict)
    scalar_intervals: dict = field(default_factory=dict)
    interval_not_computed: dict = field(default_factory=dict)
    excluded: list = field(default_factory=list)
    provenance: dict = field(default_factory=dict)
    schema: int = SCHEMA

    @property
    def last(self) -> int:
        return self.depths - 1

    def curve(self, name: str, pooling: str = "mean") -> list:
        source = self.curves if pooling == "mean" else self.by_pooling.get(pooling, {}).get("curves", {})
        if name not in source or (name in self.not_computed and all(v is None for v in source[name])):
            why = self.not_computed.get(name, self.not_computed.get(name.split("[")[0], "not measured"))
            raise KeyError(f"{name} ({pooling} pooling): {why}")
        return source[name]

    def interval(self, name: str, pooling: str = "mean") -> dict | None:
        """The curve's bootstrap interval {lo, hi, diff_lo, diff_hi} (lists over depths; diff_*[d][e]
        bound c[e] - c[d] from the same resamples), or None where it has none (interval_reason)."""
        source = self.intervals if pooling == "mean" else self.by_pooling.get(pooling, {}).get("intervals", {})
        return source.get(name)

    def scalar_interval(self, name: str, pooling: str = "mean") -> dict | None:
        source = (self.scalar_intervals if pooling == "mean"
                  else self.by_pooling.get(pooling, {}).get("scalar_intervals", {}))
        return source.get(name)

    def interval_reason(self, name: str, pooling: str = "mean") -> str:
        source = (self.interval_not_computed if pooling == "mean"
                  else self.by_pooling.get(pooling, {}).get("interval_not_computed", {}))
        return source.get(name, "not resampled")

    def to_json(self) -> dict:
        """A plain-JSON copy (dicts, lists, numbers, strings; nothing shared with self)."""
        return {f.name: _json_copy(getattr(self, f.name)) for f in fields(self)}

    def save(self, path: str | Path, inputs=()) -> None:
        """Write the JSON atomically (outputs.write_text: only over a regular file, never over an input)."""
        write_text(path, json.dumps(self.to_json(), indent=1, allow_nan=False), "--out", inputs)

    @classmethod
    def from_json(cls, data: dict) -> "Measurement":
        return cls(**data)


def _json_copy(value):
    """A copy of nested dicts and lists: what dataclasses.asdict gives for a Measurement,
    whose fields hold only those, numbers, strings and None, several times faster (asdict
    passes every float through copy.deepcopy; 31 ms against 9 ms at 2,000 sentences)."""
    if isinstance(value, dict):
        return {k: _json_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_copy(v) for v in value]
    return value


# --------------------------------------------------------------------------- degenerate sets
# issue 14: a metric that needs two sentences (or two tokens) is null with a not_computed
# reason when the set cannot define it, never 0; both measuring paths end with mark_undefined.

NEEDS_TWO_SENTENCES = ("cross_sentence_cosine", "sentence_signal", "separability_ratio")
POOLED_NEEDS_TWO = ("write_depth_histogram", "late_write_fraction", "write_depth", "dim_correlation",
                    "dim_correlation_mean", "dims_r_above_0.7", "dims_r_below_-0.7")
NEEDS_TWO_TOKENS = {
    "intra_sentence_cosine": "needs a sentence with at least 2 content tokens",
    "pc1_mean_cosine": "needs a sentence with at least 2 content tokens that differ",
    "delta_coherence": "needs a sentence with at least 2 content tokens",
    "fixed_pca_step": "needs at least 2 content tokens in all",
    "refit_pca_step": "needs at least 2 content tokens in all",
    "teleological_distance": "needs at least 2 content tokens in all",
    # issue 23 (docs/metrics.md, "Massive activations")
    "massive_dims_cosine_share": "needs a sentence with at least 2 content tokens and an intra_sentence_cosine "
                                 "above 0.01 (a share of a cosine near 0 or below is undefined)",
    "first_position_norm_share": "needs a sentence with a content token besides its first position",
    "first_position_norm_ratio": "needs a sentence with a content token besides its first position",
    "first_position_cosine": "needs a sentence with a content token besides its first position",
}
TWO_SENTENCES = "needs at least 2 sentences (the file has 1)"


INFINITE = {
    "separability_ratio": "undefined: the within-sentence scatter is 0 (no sentence has 2 content tokens)",
}


def _finite(value):
    """value with every inf replaced by None; (new value, whether one was replaced)."""
    if isinstance(value, float) and math.isinf(value):
        return None, True
    if isinstance(value, list):
        out = [_finite(v) for v in value]
        return [v for v, _ in out], any(bad for _, bad in out)
    return value, False


def mark_undefined(result: "Measurement", n_sentences: int) -> None:
    """Null and a not_computed reason for every metric the set cannot define (in place):
    one that needs two sentences or two tokens, and any value that came out infinite
    (a ratio over a zero scatter), which JSON could not carry anyway."""
    nulls = [None] * result.depths
    sections = [(result.not_computed, result.curves), (result.not_computed, result.scalars),
                (result.not_computed, result.per_dimension), (result.not_computed, result.proj),
                (result.not_computed, result.final)]
    sections += [(part.setdefault("not_computed", {}), part.get(key, {}))
                 for part in result.by_pooling.values() for key in ("curves", "scalars", "per_dimension")]
    for reasons, section in sections:
        for name, value in list(section.items()):
            clean, bad = _finite(value)
            if bad:
                section[name] = clean
                reasons.setdefault(name, INFINITE.get(name, "undefined on this sentence set (an infinite value)"))
    if n_sentences < 2:
        for name in NEEDS_TWO_SENTENCES:
            result.curves[name] = list(nulls)
            result.not_computed[name] = TWO_SENTENCES
        for key in ("separability_ratio", "cross_sentence_cosine", "sentence_signal"):
            for stage in (result.proj, result.final):
                if key in stage:
                    stage[key] = None
        for part in (result.not_computed, *(p.setdefault("not_computed", {}) for p in result.by_pooling.values())):
            part.pop("dim_correlation", None)
            part.update({name: TWO_SENTENCES for name in POOLED_NEEDS_TWO})
    for name, curve in result.curves.items():
        steps = curve[1:] if name in ("fixed_pca_step", "refit_pca_step", "delta_coherence") else curve
        if name not in result.not_computed and steps and all(v is None for v in steps):
            result.not_computed[name] = NEEDS_TWO_TOKENS.get(name, "undefined on this sentence set")
    for name, reason in NEEDS_TWO_TOKENS.items():
        if name not in result.curves and name not in result.not_computed:
            result.curves[name] = list(nulls)
            result.not_computed[name] = reason
