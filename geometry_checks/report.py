"""The findings report: one table row per check, as markdown and as JSON, plus the charts.

Rows come either from a pytest run (`rows_from_pytest`: the table is the test run) or
from running the same checks in-process for the `report` command (`rows_from_lab`).
Columns: claim, model, pooling, finding, expected, measured, tolerance, verdict, notes.
The JSON twin (`findings.json`) holds the full text of every cell; the markdown shortens
long cells (the finding is CLAIMS.md's, the expected column holds the published figure)
so that the table stays readable. docs/report.md describes both.

Below the table, the claim x model matrix (`claims_matrix`): one row per dense claim (the
article's findings restated for any dense model) and the open question, one column per
measured model, the article's published figure at the same relative depth, and on how
many of the measured real models the finding holds.

`build_report` (the `report` command) also collects what the charts read (`ModelReport`:
each measured model's Measurement and its token paths, `token_paths`) and draws them with
`charts.draw_all`; a chart whose metric was not computed is listed under "Not drawn".
"""
from __future__ import annotations

import dataclasses
import functools
import json
import re
from pathlib import Path

import pandas as pd

from . import claims as CL
from .errors import InputError

COLUMNS = ["claim", "model", "pooling", "finding", "expected", "measured", "tolerance", "verdict", "notes"]

# Markdown cell widths (characters); findings.json keeps the full text.
WIDTHS = {"finding": 70, "expected": 110, "measured": 150, "notes": 220}
NOTE_PART = 110  # each part of a note: failure detail, own-pooling result, the article's disagreement

# Claims whose metric is computed from pooled sentence vectors (mean pool by default).
POOLED = re.compile(r"pair_cosine|band_cosine|recall_at_k|write_depth|late_write_fraction|dim_correlation"
                    r"|discriminative_dims")
NOT_FOUND = re.compile(r"weights for (?P<model>\S+) \((?P<hub>[^)]+)\) not found")


def _supply_hint(model: str) -> str:
    return f"supply with --model-path {model}=DIR or the HF cache (see below)"


def _own_pooling(model: str, measurement=None) -> str | None:
    if measurement is not None:
        return measurement.provenance.get("pooling")
    from .registry import MODELS

    spec = MODELS.get(model)
    return spec.pooling if spec else None


def _pooling_cell(claim: CL.Claim, models: list[str], measurements: dict) -> str:
    if not POOLED.search(claim.metric):
        return ""
    owns = {p for m in models if (p := _own_pooling(m, measurements.get(m))) and p != "mean"}
    return "mean" + (f" (own: {', '.join(sorted(owns))})" if owns else "")


def pooled_view(m, pooling: str):
    """The Measurement with its pooled metrics replaced by those of `pooling` (by_pooling)."""
    part = m.by_pooling.get(pooling)
    if not part:
        return None
    return dataclasses.replace(
        m,
        curves={**m.curves, **part.get("curves", {})},
        scalars={**m.scalars, **part.get("scalars", {})},
        per_dimension={**m.per_dimension, **part.get("per_dimension", {})},
        discriminative_dims=part.get("discriminative_dims", {}),
        not_computed={**m.not_computed, **part.get("not_computed", {})},
        by_pooling={},
    )


def _other_pooling_note(claim: CL.Claim, model: str, get) -> str:
    """For a pooled claim on a model whose own pooling is not mean: the same check on its
    own pooling, as a note ('' when not applicable). `get(model)` returns a Measurement."""
    if get is None or not POOLED.search(claim.metric):
        return ""
    models = model.split("+")
    try:
        base = {m: get(m) for m in models}
    except BaseException as exc:  # pytest's skip/fail are BaseExceptions
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return ""
    notes = []
    for name, m in base.items():
        own = m.provenance.get("pooling")
        view = pooled_view(m, own) if own and own != "mean" else None
        if view is None:
            continue
        try:
            if claim.id in CL.DENSE_CHECKS:
                verdict = CL.run_dense_check(claim, view, name)
            else:
                verdict = CL.run_article_check(claim, lambda x, v=view, n=name: v if x == n else base[x])
        except Exception as exc:  # noqa: BLE001 - a note, never a crash of the table
            notes.append(f"{own} pool ({name}'s own): not computed ({exc.__class__.__name__}: {exc})")
            continue
        notes.append(f"{own} pool ({name}'s own) {'passes' if verdict.passed else 'fails'}: {verdict.measured}")
    return "; ".join(notes)


def _join(*parts: str) -> str:
    return " | ".join(p for p in parts if p)


def model_facts(model: str, measurement) -> dict:
    """What the matrix needs to know of a measured model: its L and its kind, `registered`
    (a registry model with its real weights), `stand-in` (random weights,
    geometry_checks/standins.py) or `directory` (any other model, by path or hub ID)."""
    from .registry import MODELS
    from .standins import STAMP

    location = measurement.provenance.get("location") or ""
    if location and (Path(location) / STAMP).is_file():
        kind = "stand-in"
    elif model in MODELS:
        kind = "registered"
    else:
        kind = "directory"
    return {"layers": measurement.last, "kind": kind}


def _row(claim: CL.Claim, model: str, verdict: CL.Verdict | None, outcome: str, reason: str = "",
         pooling: str = "", extra_note: str = "") -> dict:
    """One findings row (full text)."""
    if verdict is not None:
        measured = verdict.measured
        parts = [reason if outcome != "passed" else "", extra_note, claim.notes]
    else:
        hit = NOT_FOUND.search(reason)
        if hit:
            measured = "not run: weights not found"
            parts = [_supply_hint(hit["model"]), claim.notes]
        elif outcome == "failed":  # the check crashed (or --require-models): no verdict to show
            measured = "error: " + reason.removeprefix("error: ") if reason else "error"
            parts = [claim.notes]
        else:
            measured = f"not run: {reason}" if reason else "not run"
            parts = [claim.notes]
    return {
        "claim": claim.id,
        "model": model,
        "pooling": pooling,
        "finding": claim.finding,
        # an article claim: its published figure (the same in run and not-run rows); a dense
        # claim has none, so its threshold
        "expected": claim.published if claim.id in CL.ARTICLE_CHECKS or not verdict else verdict.expected,
        "measured": measured,
        "tolerance": verdict.tolerance if verdict else CL._tol(claim.tolerance),
        "verdict": outcome,
        "notes": _join(*parts),
        "reason": reason,
        # issue 24: the three-way outcome (holds / does not hold / inconclusive) and the 95%
        # bootstrap interval of the figure that decides, for findings.json
        "outcome": verdict.outcome if verdict is not None else "",
        "interval": verdict.interval if verdict is not None else "",
        "_note_parts": [p for p in parts if p],  # the markdown shortens each part on its own
        # a claim that counts depths: both forms (claims.DEPTH_FORMS), for the matrix
        "_forms": ({"fixed": verdict.fixed_form, "relative": verdict.relative_form}
                   if verdict is not None and verdict.fixed_form else None),
    }


# --------------------------------------------------------------------------- rows from pytest


def rows_from_pytest(records: list[dict]) -> list[dict]:
    """Rows from the plugin's records (one per test with a `claim` parameter): the outcome
    is pytest's (passed, failed, xfailed, xpassed, skipped), the reason pytest's."""
    rows = []
    for rec in records:
        verdict = rec["verdict"]
        reason = rec["reason"]
        claim, model = rec["claim"], rec["model"]
        if verdict is not None and rec["outcome"] in ("failed", "xfailed") and verdict.detail not in reason:
            reason = _join(reason, verdict.detail)
        get = rec.get("get") if verdict is not None else None
        note = _other_pooling_note(claim, model, get)
        measurements = {}
        if get is not None and POOLED.search(claim.metric):
            try:
                measurements = {m: get(m) for m in model.split("+")}
            except BaseException as exc:  # pytest's skip/fail
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
        pooling = _pooling_cell(claim, model.split("+"), measurements)
        outcome = "inconclusive" if verdict is not None and verdict.inconclusive else rec["outcome"]  # issue 24
        row = _row(claim, model, verdict, outcome, reason, pooling, note)
        if get is not None and "+" not in model:
            try:
                row["_facts"] = model_facts(model, measurements.get(model) or get(model))
            except BaseException as exc:  # pytest's skip/fail
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- rows in-process


class _Getter:
    """Measurements of a Lab for one sentence set, missing weights remembered."""

    def __init__(self, lab, sentences=None, states_first: bool = False):
        self.lab, self.sentences = lab, sentences
        # states_first (build_report): capture the states before measuring, so the Lab measures
        # the states it holds (streaming.measure_states) and the trajectory chart reuses them:
        # one forward pass per model, not a streaming pass and then a second capture.
        self.states_first = states_first
        self.measured: dict[str, object] = {}
        self.missing: dict[str, Exception] = {}

    def __call__(self, model: str):
        if model in self.missing:
            raise self.missing[model]
        if model not in self.measured:
            try:
                if self.states_first:
                    self.lab.states(model, self.sentences)
                self.measured[model] = self.lab.measurement(model, self.sentences)
            except Exception as exc:  # one attempt per model: a failed load is not retried per claim
                self.missing[model] = exc
                raise
        return self.measured[model]


def _run(claim: CL.Claim, model: str, check, get) -> dict:
    """One in-process check as a row: verdict, or 'not run' with the reason."""
    from .lab import ModelNotAvailable

    try:
        verdict = check()
    except ModelNotAvailable as exc:
        return _row(claim, model, None, "not run", str(exc), _pooling_cell(claim, model.split("+"), {}))
    except KeyError as exc:  # a metric the sentence file cannot give (no pairs, no retrieval items)
        why = str(exc.args[0]) if exc.args else str(exc)
        row = _row(claim, model, None, "not run", f"not computed: {why}", _pooling_cell(claim, model.split("+"), {}))
        if model in get.measured:  # measured, but this set cannot feed the claim: still a column
            row["_facts"] = model_facts(model, get.measured[model])
        return row
    except InputError:
        raise  # a bad --model-path or sentence file: one line from the CLI, not a row
    except Exception as exc:  # noqa: BLE001 - a check or a load that crashed: a failed row that says how
        return _row(claim, model, None, "failed", f"error: {exc.__class__.__name__}: {exc}")
    key = (model, claim.id)
    outcome = _outcome(verdict, key)
    reason = verdict.detail if not verdict.passed else ""
    if outcome in ("xfailed", "xpassed"):
        reason = _join(CL.EXPECTED_FAILURES[key], reason)
    measurements = {m: get.measured[m] for m in model.split("+") if m in get.measured}
    row = _row(claim, model, verdict, outcome, reason, _pooling_cell(claim, model.split("+"), measurements),
               _other_pooling_note(claim, model, get))
    if model in get.measured:
        row["_facts"] = model_facts(model, get.measured[model])
    return row


def rows_from_lab(lab, models: list[str], sentences=None, getter: _Getter | None = None) -> list[dict]:
    """Run every claim that applies to `models` in-process (no pytest); weights that are
    missing give 'not run' rows that say how to supply them."""
    from .lab import ModelNotAvailable

    get = getter or _Getter(lab, sentences)
    rows = []
    for claim in CL.load_article_claims().values():
        model = "+".join(claim.models)
        rows.append(_run(claim, model, lambda claim=claim: CL.run_article_check(claim, get), get))
    dense = CL.dense_claims()
    for model in models:
        try:
            get(model)
        except Exception as exc:
            if isinstance(exc, InputError) and not isinstance(exc, ModelNotAvailable):
                raise
            outcome, why = (("not run", str(exc)) if isinstance(exc, ModelNotAvailable)
                            else ("failed", f"error: {exc.__class__.__name__}: {exc}"))
            rows.append({**_row(dense["dense-collapse"], model, None, outcome, why),
                         "claim": "dense-*", "finding": "every dense-* claim", "pooling": ""})
            continue
        for claim in dense.values():
            rows.append(_run(claim, model, lambda claim=claim, model=model:
                             CL.run_dense_check(claim, get(model), model), get))
    return rows


def _outcome(verdict: CL.Verdict, key: tuple[str, str]) -> str:
    expected_failure = key in CL.EXPECTED_FAILURES
    if verdict.inconclusive:  # issue 24: neither a pass nor a failure
        return "inconclusive"
    if verdict.passed:
        return "xpassed" if expected_failure else "passed"
    return "xfailed" if expected_failure else "failed"


# --------------------------------------------------------------------------- token paths


def token_paths(states, sentences, n_tokens: int = 5) -> dict | None:
    """2-D paths of a few tokens of one sentence in fixed depth-0 PCA axes.

    The axes are `metrics.pca_fit` on the depth-0 content tokens of every sentence of the
    set (those `fixed_pca_step` uses); the sentence is the first of the 'negation' pair when
    the set has one, else its first sentence with 3+ content words; the tokens are the
    first sub-token of up to `n_tokens` distinct words, the pair's differing words first.
    Returns {sentence, tokens, paths [token][depth][x, y], fit}; None if there is nothing
    to fit (fewer than 2 content tokens).
    """
    from . import metrics as M
    from .measure import aligned_word_pairs

    cloud = states.select([states.index(t) for t in sentences.sentences])
    tokens0 = M.content_tokens(cloud.states[:1], cloud.content)[0]  # [N, H] at depth 0
    if tokens0.shape[0] < 2:
        return None
    mean, comps = M.pca_fit(tokens0)

    def candidates(row: int) -> list[tuple[int, int, str]]:
        words, seen, out = states.words(row), set(), []
        for pos, wid in enumerate(states.word_ids[row]):
            if wid is None or not bool(states.content[row, pos]) or wid in seen:
                continue
            seen.add(wid)
            out.append((wid, pos, words[wid]))
        return out

    pair = sentences.pairs.get("negation")
    text = pair[0] if pair and pair[0] in sentences.sentences else None
    if text is None:
        text = next((t for t in sentences.sentences if len(candidates(states.index(t))) >= 3),
                    sentences.sentences[0])
    row = states.index(text)
    cands = candidates(row)
    if not cands:
        return None
    priority = set()
    if pair and text == pair[0]:
        priority = {i for i, _ in aligned_word_pairs(states.words(row), states.words(states.index(pair[1])))}
    chosen = [c for c in cands if c[0] in priority][: max(1, n_tokens // 2)]
    taken = {c[2].lower() for c in chosen}
    rest = []
    for c in cands:  # distinct words only ('The' and 'the' are one)
        if c not in chosen and c[2].lower() not in taken:
            taken.add(c[2].lower())
            rest.append(c)
    need = min(n_tokens - len(chosen), len(rest))
    if need > 0:
        step = (len(rest) - 1) / (need - 1) if need > 1 else 0
        picks = sorted({round(i * step) for i in range(need)})
        chosen += [rest[i] for i in picks]
    chosen.sort(key=lambda c: c[1])
    positions = [c[1] for c in chosen]
    x = states.states[:, row, positions].to(mean.dtype)  # [P, k, H]
    proj = M._project(x, mean, comps)  # [P, k, 2], the projection fixed_pca_step uses
    return {
        "sentence": text,
        "tokens": [c[2] for c in chosen],
        "paths": proj.transpose(0, 1).cpu().tolist(),
        "fit": f"{tokens0.shape[0]} depth-0 content tokens of {len(sentences.sentences)} sentences",
    }


# --------------------------------------------------------------------------- markdown and JSON


def summary_counts(rows: list[dict]) -> dict:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["verdict"]] = counts.get(row["verdict"], 0) + 1
    return counts


def _short(text, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def findings_frame(rows: list[dict], full: bool = False) -> pd.DataFrame:
    """The table; unless `full`, long cells shortened (each part of a note on its own, so a
    long failure detail does not hide the pooling note or the article's disagreement)."""
    frame = pd.DataFrame(rows, columns=COLUMNS).fillna("")
    if not full:
        for col, width in WIDTHS.items():
            frame[col] = frame[col].map(lambda t, w=width: _short(t, w))
        frame["notes"] = [
            " | ".join(_short(p, NOTE_PART) for p in row["_note_parts"]) if row.get("_note_parts")
            else _short(row.get("notes", ""), WIDTHS["notes"])
            for row in rows
        ]
    return frame


def _missing_notes(rows: list[dict]) -> list[str]:
    """How to supply each model whose weights were not found (once per model)."""
    seen: dict[str, str] = {}
    for row in rows:
        hit = NOT_FOUND.search(row.get("reason", "") or "")
        if hit and hit["model"] not in seen:
            seen[hit["model"]] = row["reason"].removeprefix("--require-models: ")
    return [f"- **{m} not run**: {why}" for m, why in seen.items()]


def _pooling_notes(rows: list[dict]) -> list[str]:
    owns: dict[str, str] = {}
    for r in rows:
        hit = re.search(r"own: ([^)]+)", r.get("pooling") or "")
        if hit:
            owns.setdefault(r["model"], hit[1])
    if not owns:
        return []
    which = ", ".join(f"{m} pools with {p.upper() if p == 'cls' else p}" for m, p in owns.items())
    return [(f"- **pooling**: {which} in its own sentence-transformers config; the article's curves and "
             "these checks use mean pools (column `pooling`). Where the model was measured, a pooled row's "
             "notes give the same check on its own pooling.")]


# --------------------------------------------------------------------------- the claim x model matrix

# A cell's verdict word (pytest's `skipped` and the report's `not run` read the same).
VERDICT_WORD = {"passed": "pass", "failed": "FAIL", "xfailed": "xfail (expected failure)",
                "xpassed": "XPASS (expected failure passed)", "skipped": "not run", "not run": "not run",
                "inconclusive": "INCONCLUSIVE (interval straddles the bound)"}
HOLDS = ("passed", "xpassed")  # the finding holds: the check passed (an xpass fails the run, but the finding held)
COUNTED = ("passed", "xpassed", "failed", "xfailed", "inconclusive")  # a verdict on a measurement; an expected failure does not hold
# The article claim a dense claim restates, where the published figure cannot be computed
# from the published curves (dense-foo-bar falls back to article claim foo-bar, then foo).
ARTICLE_OF = {"dense-collapse": "collapse", "dense-signal-peak": "baseline-gap",
              "dense-late-separability": "separability-jump", "dense-negation-late": "negation-pair",
              "dense-role-reversal": "role-reversal-pair"}
PUBLISHED_L = 24  # the article's models: 24 blocks, depths 0..24
AT_DEPTH = re.compile(r"\bat (\d+)(?![.\d])")


def relative_depths(text: str, last: int | None) -> str:
    """Label every `at d` of a figure with its relative depth: `at 19 (19/24 = 0.79)`."""
    if not last:
        return text
    return AT_DEPTH.sub(lambda h: f"at {h[1]} ({h[1]}/{last} = {int(h[1]) / last:.2f})", text)


@functools.cache
def _published_measurements() -> dict:
    """The article's published curves and scalars as Measurements (mxbai, colbert), with
    sentence_signal = intra - cross (its METRICS.md definition) where both are published."""
    from .charts import PUBLISHED_IDS
    from .measure import Measurement

    doc = CL._read_json(CL.PUBLISHED / "embedding-layers.json")
    out = {}
    for short, hub_id in PUBLISHED_IDS.items():
        entry = doc["models"].get(hub_id)
        if entry is None:
            continue
        curves = dict(entry.get("curves", {}))
        intra, cross = curves.get("intra_sentence_cosine"), curves.get("cross_sentence_cosine")
        if intra and cross:
            curves["sentence_signal"] = [a - b for a, b in zip(intra, cross)]
        out[short] = Measurement(model=short, sentence_set="the article's", depths=entry["depths"], curves=curves,
                                 scalars=dict(entry.get("scalars", {})), provenance={"pooling": "mean"})
    return out


def _published_verdicts(cid: str) -> list[tuple[str, CL.Verdict, int]]:
    """(model, verdict, L) of the dense claim's own check run on each published model whose
    published curves carry its metric."""
    claim = CL.dense_claims().get(cid)
    out = []
    if claim is not None:
        for short, m in _published_measurements().items():
            try:
                out.append((short, CL.run_dense_check(claim, m, short), m.last))
            except (KeyError, TypeError, IndexError, ValueError, ZeroDivisionError):
                continue  # the metric is not among the published curves
    return out


def _published_name(short: str) -> str:
    return "ColBERT" if short == "colbert" else short


def published_figure(cid: str) -> str:
    """The article's figure for a dense claim, at the published depths labelled with their
    relative depth (docs/report.md): the same check run on the published mxbai (and
    jina-colbert-v2) curves where they carry its metric, else the published text of the
    article claim it restates; '' where there is neither."""
    parts = [f"{_published_name(short)}: {relative_depths(v.measured, last)}"
             for short, v, last in _published_verdicts(cid)]
    if parts:
        return "; ".join(parts)
    article = CL.load_article_claims()
    name = ARTICLE_OF.get(cid, cid.removeprefix("dense-"))
    while name and name not in article:
        name = name.rpartition("-")[0]
    if not name:
        return ""
    claim = article[name]
    return f"{'+'.join(claim.models)}: {relative_depths(claim.published, PUBLISHED_L)}"


def _column(name: str, facts: dict) -> str:
    from .charts import slug

    label = name if facts.get("kind") == "registered" else slug(name)
    label += f" (L={facts['layers']})" if facts.get("layers") is not None else ""
    if facts.get("kind") in ("stand-in", "directory"):
        label += f" ({facts['kind']})"
    return label


def _matrix_cell(row: dict | None, facts: dict) -> dict:
    if row is None:
        return {"measured": "", "verdict": "not run", "text": "not run"}
    verdict = row["verdict"]
    if "_matrix_cell" in row:  # the open question: an answer, not a check
        return {"measured": row["_matrix_cell"], "verdict": verdict, "text": f"{row['_matrix_cell']}: {verdict}"}
    measured = row["measured"]
    if verdict in ("not run", "skipped"):
        why = measured.removeprefix("not run").lstrip(": ") or row.get("reason", "")
        return {"measured": "", "verdict": "not run", "text": f"not run: {why}" if why else "not run"}
    if measured.startswith("error"):
        return {"measured": measured, "verdict": verdict, "text": f"{measured}: {VERDICT_WORD.get(verdict, verdict)}"}
    figure = relative_depths(measured, facts.get("layers"))
    return {"measured": measured, "verdict": verdict, "text": f"{figure}: {VERDICT_WORD.get(verdict, verdict)}"}


def claims_matrix(rows: list[dict]) -> dict:
    """The claim x model matrix of a table's rows.

    Columns: every model with a measurement (a row carrying `_facts`), in table order.
    Rows: every dense claim, then the open question where the table has it. `holds`
    counts, over the `registered` models (real weights; not stand-ins, not other
    directories) whose cell has a verdict, those where the check passed: an expected
    failure does not hold, a `not run` cell or a crashed check is left out of the count.
    """
    facts = {}
    for row in rows:
        if row.get("_facts") and row["model"] not in facts:
            facts[row["model"]] = row["_facts"]
    models = list(facts)
    by_key = {(r["claim"], r["model"]): r for r in rows}
    claims = [(cid, c.finding) for cid, c in CL.dense_claims().items()]
    if any(r["claim"] == "open-question" and r["model"] in facts for r in rows):
        from .openquestion import CLAIM, FINDING

        claims.append((CLAIM, FINDING))
    out_rows = []
    for cid, finding in claims:
        cells = {m: _matrix_cell(by_key.get((cid, m)), facts[m]) for m in models}
        if cid == "open-question":
            from .openquestion import PUBLISHED_SHORT

            published, holds = PUBLISHED_SHORT, {"holds": None, "of": None, "text": "n/a (a measurement)"}
        else:
            holds = _holds(cells, facts, HOLDS)
            published = published_figure(cid)
        out_rows.append({"claim": cid, "finding": finding, "cells": cells, "published": published, "holds": holds})
        forms = {m: (by_key.get((cid, m)) or {}).get("_forms") for m in models}
        if any(forms.values()):
            out_rows.append(_fixed_form_row(cid, forms, facts))
    return {
        "models": [{"name": m, "column": _column(m, facts[m]), **facts[m]} for m in models],
        "rows": out_rows,
    }


def _holds(cells: dict, facts: dict, holding) -> dict:
    counted = [m for m in cells if facts[m]["kind"] == "registered" and cells[m]["verdict"] in COUNTED
               and not cells[m]["measured"].startswith("error")]
    n = sum(cells[m]["verdict"] in holding for m in counted)
    return {"holds": n, "of": len(counted), "text": f"{n} of {len(counted)}" if counted else "none measured"}


def _without_outcome(form: str) -> str:
    """A Verdict's form text without its ' (holds)' / ' (does not hold)' ending."""
    return form.removesuffix(" (holds)").removesuffix(" (does not hold)")


def _fixed_form_row(cid: str, forms: dict, facts: dict) -> dict:
    """The row of a depth-counting claim's fixed form (the article's count taken literally,
    e.g. 'the last two depths' of any L): reported beside the relative form that decides
    the verdict (claims.DEPTH_FORMS), with its own `holds`."""
    cells = {}
    for m, form in forms.items():
        if not form:
            cells[m] = {"measured": "", "verdict": "not run", "text": "not run"}
            continue
        held = not form["fixed"].endswith(" (does not hold)")
        figure = relative_depths(_without_outcome(form["fixed"]), facts[m].get("layers"))
        cells[m] = {"measured": form["fixed"], "verdict": "passed" if held else "failed",
                    "text": f"{figure}: {'holds' if held else 'does not hold'}"}
    published = "; ".join(f"{_published_name(short)}: {relative_depths(_without_outcome(v.fixed_form), last)}"
                          for short, v, last in _published_verdicts(cid) if v.fixed_form)
    what = CL.DEPTH_FORMS.get(cid, {}).get("fixed", "the article's count of depths taken literally")
    return {"claim": f"{cid} (fixed form)", "finding": f"as above, over {what}", "cells": cells,
            "published": published, "holds": _holds(cells, facts, ("passed",)), "form": "fixed"}


MATRIX_WIDTHS = {"finding": 60, "cell": 140, "published": 130}


def matrix_frame(matrix: dict, full: bool = False) -> pd.DataFrame:
    """The matrix as a table: claim, finding, one column per model, published, holds."""
    short = (lambda t, w: str(t)) if full else _short
    records = []
    for row in matrix["rows"]:
        rec = {"claim": row["claim"], "finding": short(row["finding"], MATRIX_WIDTHS["finding"])}
        for model in matrix["models"]:
            rec[model["column"]] = short(row["cells"][model["name"]]["text"], MATRIX_WIDTHS["cell"])
        rec[f"published (article, L={PUBLISHED_L})"] = short(row["published"] or "—", MATRIX_WIDTHS["published"])
        rec["holds"] = row["holds"]["text"]
        records.append(rec)
    return pd.DataFrame(records)


def matrix_markdown(matrix: dict) -> str:
    """The matrix as a markdown table ('' when no model was measured)."""
    if not matrix["models"]:
        return ""
    return matrix_frame(matrix).map(_cell).to_markdown(index=False)


def _matrix_section(rows: list[dict]) -> list[str]:
    matrix = claims_matrix(rows)
    table = matrix_markdown(matrix)
    if not table:
        return []
    kinds = {m["kind"] for m in matrix["models"]}
    uncounted = (" Columns marked (stand-in) or (directory) are shown but not counted." if kinds - {"registered"}
                 else "")
    return ["## Claims across models", "",
            ("One row per dense claim (the article's findings restated for any dense model; a claim that counts "
             "depths also in its fixed form, the article's count taken literally) and the open question where measured; "
             "one column per measured model (measured figure: verdict); the article's published figure; and "
             "`holds`: on how many of the measured registered models (real weights) the finding holds, an expected "
             "failure counting as not holding and `not run` cells left out." + uncounted +
             " A depth d of a model with L blocks reads `d (d/L = relative depth)`."), "",
            table, ""]


def findings_markdown(rows: list[dict], charts: list[dict] | None = None, not_drawn: list[dict] | None = None,
                      context: dict | None = None) -> str:
    frame = findings_frame(rows).map(_cell)
    counts = summary_counts(rows)
    summary = ", ".join(f"{n} {v}" for v, n in counts.items())
    table = frame.to_markdown(index=False) if len(frame) else "(no checks ran)"
    head = ["# Findings", ""]
    if context:
        head += [" · ".join(f"{k}: {v}" for k, v in context.items()), ""]
    head += [f"{len(frame)} checks: {summary or 'none'}", "", table, ""]
    head += _matrix_section(rows)
    notes = _missing_notes(rows) + _pooling_notes(rows)
    if notes:
        head += ["## Notes", "", *notes, "",
                 "Cells are shortened here; `findings.json` beside this file has the full text.", ""]
    if charts is not None:
        head += ["## Charts", "",
                 ("Solid: measured on this run's sentence set. Dashed: published (the article's "
                  "mxbai-embed-large-v1 and jina-colbert-v2, on its own unpublished 20 sentences). Every "
                  "per-depth chart overlays all measured models on relative depth (depth / L: 0 = embeddings, "
                  "1 = last block)."), ""]
        overlays = [c for c in charts if c.get("overlay")]
        if overlays:
            head += [f"### Every measured model on relative depth ({overlays[0]['model']})", ""]
            for c in overlays:
                head += [f"**{c['title']}**: {c['caption']}.", "", f"![{c['title']}]({c['file']})", ""]
        singles = [c for c in charts if not c.get("overlay")]
        for model in dict.fromkeys(c["model"] for c in singles):
            head += [f"### {model}", ""]
            for c in (c for c in singles if c["model"] == model):
                head += [f"**{c['title']}**: {c['caption']}.", "", f"![{c['title']} — {model}]({c['file']})", ""]
    if not_drawn:
        head += ["## Not drawn", ""]
        head += [f"- {c['title']} ({c['model']}): {c['reason']}" for c in not_drawn]
        head += [""]
    return "\n".join(head)


def findings_json(rows: list[dict], charts=None, not_drawn=None, context=None) -> dict:
    out = {
        "summary": {"checks": len(rows), **summary_counts(rows)},
        "rows": [{k: row.get(k, "") for k in [*COLUMNS, "reason", "outcome", "interval"]} for row in rows],
        "matrix": claims_matrix(rows),
    }
    if context:
        out["context"] = context
    if charts is not None:
        out["charts"] = charts
    if not_drawn is not None:
        out["not_drawn"] = not_drawn
    return out


def write_findings(rows: list[dict], path: Path, charts=None, not_drawn=None, context=None,
                   what: str = "--findings-md") -> None:
    """findings.md at `path` and its machine-readable twin findings.json beside it, each
    written atomically and only over a regular file (outputs.write_text)."""
    from .outputs import write_text

    path = Path(path)
    write_text(path, findings_markdown(rows, charts, not_drawn, context), what)
    write_text(path.with_suffix(".json"), json.dumps(findings_json(rows, charts, not_drawn, context), indent=1),
               what)


def earlier_report_files(out: str | Path) -> set[str]:
    """The files an earlier `report` wrote into `out`: findings.md, findings.json and the
    charts its findings.json lists (plain file names only). Empty if there is none."""
    out = Path(out)
    names = {"findings.md", "findings.json"}
    try:
        data = json.loads((out / "findings.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return names if (out / "findings.md").is_file() and not (out / "findings.json").exists() else set()
    charts = data.get("charts") if isinstance(data, dict) else None
    for chart in charts if isinstance(charts, list) else []:
        name = chart.get("file") if isinstance(chart, dict) else None
        if isinstance(name, str) and name and "/" not in name and "\\" not in name and not name.startswith("."):
            names.add(name)
    return names


# --------------------------------------------------------------------------- the report command


def _extra_charts() -> tuple[list, object]:
    """The open question's row function and chart, where geometry_checks.openquestion exists."""
    try:
        from . import openquestion as OQ
    except ImportError:
        return [], None
    row_fn = getattr(OQ, "open_question_row", None)
    plot_fn = getattr(OQ, "plot_open_question", None)
    caption = ("intra_sentence_cosine through each block's sublayers, by word class, and the similarity "
               "attractor")
    extra = [("open-question", "Open question: the dip (attention vs feed-forward, word classes)", caption,
              plot_fn)] if plot_fn else []
    return extra, row_fn


def build_report(lab, models: list[str], out: str | Path, sentences=None) -> dict:
    """Run every check, then write out/findings.md, out/findings.json and out/*.png.

    `models` get the dense checks and their charts; mxbai and colbert are charted too when
    the article claims could measure them. Returns {rows, charts, not_drawn, path}.
    """
    from . import charts as CH
    from . import openquestion as OQ

    out = Path(out)
    sentences = sentences or lab.default_sentences
    get = _Getter(lab, sentences, states_first=True)
    rows = rows_from_lab(lab, models, sentences, get)
    extra, row_fn = _extra_charts()
    order = list(dict.fromkeys([*models, *get.measured]))
    reports = []
    for name in order:
        if name not in get.measured:
            continue
        m = get.measured[name]
        report = CH.ModelReport(name, m)
        try:
            report.trajectory = token_paths(lab.states(name, sentences), lab.fitted(name, sentences))
            if report.trajectory is None:
                report.trajectory_missing = "fewer than 2 content tokens to fit the PCA on"
        except (InputError, ValueError, KeyError, RuntimeError) as exc:
            report.trajectory_missing = f"token paths not computed ({exc})"
        reports.append(report)
        if row_fn is not None:
            try:
                row = row_fn(m)
            except Exception as exc:  # noqa: BLE001 - another module's row must not break the report
                row = {"claim": "open-question", "model": name, "verdict": "failed",
                       "measured": f"error: {exc.__class__.__name__}: {exc}"}
            if row:
                row = {**{k: "" for k in COLUMNS}, "reason": "", **row, "_facts": model_facts(name, m)}
                try:  # the matrix shows each model's answer in a line, side by side
                    summary = OQ.open_question_summary(m)
                except Exception:  # noqa: BLE001 - the full row above still says what happened
                    summary = None
                if summary:
                    row["_matrix_cell"] = summary
                rows.append(row)
    # `report` owns `out` (issue 14): everything is drawn into a staging directory inside it,
    # then moved in, and the files of an earlier report that this one did not rewrite are
    # removed, so that afterwards `out` holds exactly what findings.md and findings.json list.
    from . import outputs as O

    earlier = earlier_report_files(out)
    O.check_dir(out, "--out", earlier)
    staging = O.stage(out)
    try:
        result = _draw_and_write(CH, reports, sentences, extra, rows, staging)
        O.commit(staging, out, ["findings.md", "findings.json", *(c["file"] for c in result["charts"])], earlier)
    finally:
        O.discard(staging)
    return {**result, "path": out / "findings.md"}


def _draw_and_write(CH, reports, sentences, extra, rows, staging: Path) -> dict:
    ctx = CH.ChartContext.load(sentences.name)
    charts, not_drawn = CH.draw_all(reports, ctx, staging, extra)
    context = {
        "sentence set": f"{sentences.name} ({len(sentences.sentences)} sentences, "
                        f"{len(sentences.retrieval)} retrieval items, {len(sentences.pairs)} pairs)",
        "measured": ", ".join(f"{r.name} (L={r.measurement.last}, own pooling "
                              f"{r.measurement.provenance.get('pooling', '?')})" for r in reports) or "none",
    }
    write_findings(rows, staging / "findings.md", charts, not_drawn, context, what="--out")
    return {"rows": rows, "charts": charts, "not_drawn": not_drawn}
