"""Recorded baselines: what this suite measured on a pinned model and sentence set.

A recorded baseline is `baselines/recorded/<model>/<sentence set>.json`: every curve and
scalar of a Measurement plus its provenance. It is written only by
`pytest --update-baselines` (atomically: a temporary file, then a rename) and compared
metric by metric with per-metric tolerances. Published baselines (`baselines/published/`)
are never touched here.

The default tolerances absorb what is not a change of the model: batch size (padding),
thread count, CPU vs GPU in float32. docs/regression-gate.md gives the measured
deviations they sit just above (benchmarks/deviations.py reproduces them).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .claims import BASELINES
from .errors import InputError
from .measure import Measurement

RECORDED = BASELINES / "recorded"
REGENERATE = "pytest -m {model} --update-baselines"

# Per-metric (atol, rtol), first match by prefix wins. See docs/regression-gate.md.
TOLERANCES: tuple[tuple[str, float, float], ...] = (
    ("recall_at_k", 0.0, 0.0),
    ("maxsim_recall_at_k", 0.0, 0.0),
    ("write_depth_histogram", 0.0, 0.0),
    ("dims_r_", 0.0, 0.0),
    ("refit_pca_step", 1e-3, 1e-3),
    ("fixed_pca_step", 1e-4, 1e-4),
    ("teleological_distance", 1e-4, 1e-4),
    ("token_norm", 1e-4, 1e-5),
    ("", 1e-5, 1e-5),
)

# Provenance fields whose mismatch is reported (as a warning: the geometry still decides).
PROVENANCE_KEYS = ("hub_id", "revision", "weights_sha256", "torch", "transformers", "dtype", "device",
                   "sentence_set_sha256")


def tolerance_for(metric: str) -> tuple[float, float]:
    for prefix, atol, rtol in TOLERANCES:
        if metric.startswith(prefix):
            return atol, rtol
    raise AssertionError("unreachable: the empty prefix matches everything")


def path_for(model: str, sentence_set: str, root: Path = RECORDED) -> Path:
    return root / model / f"{sentence_set}.json"


def record(measurement: Measurement, root: Path = RECORDED) -> Path:
    """Write a recorded baseline atomically; returns its path."""
    path = path_for(measurement.model, measurement.sentence_set, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "kind": "recorded-baseline",
        "model": measurement.model,
        "sentence_set": measurement.sentence_set,
        "provenance": measurement.provenance,
        "curves": measurement.curves,
        "scalars": {k: v for k, v in measurement.scalars.items() if isinstance(v, (int, float)) or v is None},
    }
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=1, allow_nan=False)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_recorded(model: str, sentence_set: str, root: Path = RECORDED) -> dict | None:
    """The recorded baseline, None if there is none; a corrupt one is an InputError."""
    path = path_for(model, sentence_set, root)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        if data.get("kind") != "recorded-baseline" or not isinstance(data.get("curves"), dict):
            raise ValueError("not a recorded baseline (kind/curves missing)")
        for name, curve in data["curves"].items():
            if not isinstance(curve, list) or not all(v is None or isinstance(v, (int, float)) for v in curve):
                raise ValueError(f"curve {name} is not a list of numbers")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError, AttributeError) as exc:
        raise InputError(
            f"{path}: corrupt recorded baseline ({exc}); regenerate with `{REGENERATE.format(model=model)}`"
        ) from None
    return data


@dataclass(frozen=True)
class Comparison:
    model: str
    metric: str
    passed: bool
    message: str
    max_abs: float = 0.0
    mean_abs: float = 0.0


def compare(model: str, metric: str, measured: list, recorded: list, atol: float | None = None,
            rtol: float | None = None) -> Comparison:
    """Compare one curve with its recorded baseline; the message names the worst depth."""
    d_atol, d_rtol = tolerance_for(metric)
    atol = d_atol if atol is None else atol
    rtol = d_rtol if rtol is None else rtol
    regen = REGENERATE.format(model=model)
    if len(measured) != len(recorded):
        return Comparison(model, metric, False,
                          f"{model} / {metric}: {len(measured)} depths measured, {len(recorded)} recorded; "
                          f"regenerate with `{regen}`")
    errors, bad = [], []
    for d, (m, r) in enumerate(zip(measured, recorded)):
        if (m is None) != (r is None):
            bad.append((d, math.inf))
            continue
        if m is None:
            continue
        err = abs(m - r)
        errors.append(err)
        if err > atol + rtol * abs(r):
            bad.append((d, err))
    max_abs = max(errors, default=0.0)
    mean_abs = sum(errors) / len(errors) if errors else 0.0
    if not bad:
        return Comparison(model, metric, True, f"{model} / {metric}: within atol {atol:g} + rtol {rtol:g}",
                          max_abs, mean_abs)
    worst_d = max(bad, key=lambda x: x[1])[0]
    message = (
        f"{model} / {metric}: {len(bad)} of {len(recorded)} depths differ from the recorded baseline; "
        f"worst at depth {worst_d}: measured {_num(measured[worst_d])} vs recorded {_num(recorded[worst_d])}; "
        f"max |error| {max_abs:.3g}, mean |error| {mean_abs:.3g} (atol {atol:g}, rtol {rtol:g}); "
        f"if the change is intended, regenerate with `{regen}`"
    )
    return Comparison(model, metric, False, message, max_abs, mean_abs)


def _num(x) -> str:
    return "null" if x is None else f"{x:.6g}"


def provenance_mismatches(measured: dict, recorded: dict) -> list[str]:
    """Human-readable lines for each provenance field that differs (warnings, not errors)."""
    lines = []
    for key in PROVENANCE_KEYS:
        a, b = measured.get(key), recorded.get(key)
        if a != b and not (a is None and b is None):
            lines.append(f"{key}: measured {a} vs recorded {b}")
    return lines
