"""The findings table: one row per check (claim ID, model, claim, expected, measured,
tolerance, verdict, notes), as markdown (pandas + tabulate) and as JSON.

Rows come either from a pytest run (`rows_from_pytest`: the table is the test run) or
from running the same checks in-process for the `report` command (`rows_from_lab`).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd

from . import claims as CL
from .errors import InputError

COLUMNS = ["claim", "model", "finding", "expected", "measured", "tolerance", "verdict", "notes"]


def _row(claim: CL.Claim, model: str, verdict: CL.Verdict | None, outcome: str, reason: str = "") -> dict:
    notes = claim.notes
    if reason and outcome not in ("passed",):
        notes = f"{reason}" + (f" | {notes}" if notes else "")
    return {
        "claim": claim.id,
        "model": model,
        "finding": claim.finding,
        "expected": verdict.expected if verdict else claim.published,
        "measured": verdict.measured if verdict else ("not run: " + reason if reason else "not run"),
        "tolerance": verdict.tolerance if verdict else CL._tol(claim.tolerance),
        "verdict": outcome,
        "notes": notes,
    }


def rows_from_pytest(records: list[dict]) -> list[dict]:
    rows = []
    for rec in records:
        verdict = rec["verdict"]
        reason = rec["reason"]
        if verdict is not None and rec["outcome"] in ("failed", "xfailed") and not reason:
            reason = verdict.detail
        rows.append(_row(rec["claim"], rec["model"], verdict, rec["outcome"], reason))
    return rows


def rows_from_lab(lab, models: list[str]) -> list[dict]:
    """Run every claim that applies to `models` in-process (no pytest); weights that are
    missing give 'not run' rows that say how to supply them."""
    from .lab import ModelNotAvailable

    cache: dict[str, object] = {}

    def get(model: str):
        if model not in cache:
            try:
                cache[model] = lab.measurement(model)
            except ModelNotAvailable as exc:
                cache[model] = exc
        if isinstance(cache[model], Exception):
            raise cache[model]
        return cache[model]

    rows = []
    for claim in CL.load_article_claims().values():
        model = "+".join(claim.models)
        try:
            verdict = CL.run_article_check(claim, get)
        except ModelNotAvailable as exc:
            rows.append(_row(claim, model, None, "not run", f"weights not found: {exc}"))
            continue
        outcome = _outcome(verdict, (model, claim.id))
        rows.append(_row(claim, model, verdict, outcome, verdict.detail if not verdict.passed else ""))
    for model in models:
        try:
            m = get(model)
        except ModelNotAvailable as exc:
            rows.append({**_row(CL.dense_claims()["dense-collapse"], model, None, "not run", str(exc)),
                         "claim": "dense-*"})
            continue
        for claim in CL.dense_claims().values():
            verdict = CL.run_dense_check(claim, m, model)
            rows.append(_row(claim, model, verdict, _outcome(verdict, (model, claim.id)),
                             verdict.detail if not verdict.passed else ""))
    return rows


def _outcome(verdict: CL.Verdict, key: tuple[str, str]) -> str:
    expected_failure = key in CL.EXPECTED_FAILURES
    if verdict.passed:
        return "xpassed" if expected_failure else "passed"
    return "xfailed" if expected_failure else "failed"


def findings_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def findings_markdown(rows: list[dict]) -> str:
    frame = findings_frame(rows).map(_cell)
    counts = frame["verdict"].value_counts()
    summary = ", ".join(f"{n} {v}" for v, n in counts.items())
    table = frame.to_markdown(index=False) if len(frame) else "(no checks ran)"
    return f"# Findings\n\n{len(frame)} checks: {summary or 'none'}\n\n{table}\n"


def write_findings(rows: list[dict], path: Path) -> None:
    """findings.md at `path` and its machine-readable twin findings.json beside it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(findings_markdown(rows))
        path.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    except OSError as exc:
        raise InputError(f"{path}: cannot write findings ({exc.strerror})") from None
