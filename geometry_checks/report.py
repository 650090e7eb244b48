"""The findings report: one table row per check, as markdown and as JSON, plus the charts.

Rows come either from a pytest run (`rows_from_pytest`: the table is the test run) or
from running the same checks in-process for the `report` command (`rows_from_lab`).
Columns: claim, model, pooling, finding, expected, measured, tolerance, verdict, notes.
docs/report.md describes both files.

findings.md leads with what was measured (issue 24): the summary (verdicts counted apart
from measurements and from what did not run), then the claim x model matrix
(`claims_matrix`: one row per dense claim and the open question, one column per measured
model, the article's published figure at the same relative depth, and on how many of the
measured real models the finding holds), then the table of every check on a measured
model, then the published-only rows (claims on models whose weights are not here) folded
into one short section. No cell is cut: a cell too long for a table line is moved, whole,
to the notes under its table and the cell points there (`(note N)`); findings.json holds
every cell in full too.

findings.md then has a short "Massive activations" section (issue 23, `massive_markdown`:
per measured model, each massive-activation curve's maximum over depths with its interval).
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
from .registry import MODELS, OBJECTIVES, control_name, parse_control
from .result import Measurement
from .thesis import HOLD, NOT_HOLD, member_state, thesis_verdict

COLUMNS = ["claim", "model", "pooling", "finding", "expected", "measured", "tolerance", "verdict", "notes"]

# Every outcome a row can have, in the order summaries list them: its kind, and its word in
# a matrix cell. A `verdict` is a decision on a claim (counted in the summary); `not run` is
# none (pytest's skipped and the report's not run read the same); any other outcome (the
# open question's `answered`, `no dip`) is a `measurement`, reported, never counted as a
# verdict. A new outcome (e.g. `inconclusive`, an interval that straddles the bound) is one
# entry here.
OUTCOMES: dict[str, tuple[str, str]] = {
    "passed": ("verdict", "pass"),
    "failed": ("verdict", "FAIL"),
    "inconclusive": ("verdict", "INCONCLUSIVE (interval straddles the bound)"),
    "xfailed": ("verdict", "xfail (expected failure)"),
    "xpassed": ("verdict", "XPASS (expected failure passed)"),
    "skipped": ("not run", "not run"),
    "not run": ("not run", "not run"),
}


def outcome_kind(outcome: str) -> str:
    """`verdict`, `not run` or `measurement` (OUTCOMES)."""
    return OUTCOMES.get(outcome, ("measurement", outcome))[0]


# A markdown cell longer than this moves, whole, to the notes under its table (no cell is cut).
CELL_MAX = 160

# Claims whose metric is computed from pooled sentence vectors (mean pool by default).
POOLED = re.compile(r"pair_cosine|band_cosine|recall_at_k|write_depth|late_write_fraction|dim_correlation"
                    r"|discriminative_dims")
NOT_FOUND = re.compile(r"weights for (?P<model>\S+) \((?P<hub>[^)]+)\) not found")


def _supply_hint(model: str) -> str:
    return f"supply with --model-path={model}=DIR or the HF cache (see below)"


def _own_pooling(model: str, measurement=None) -> str | None:
    if measurement is not None:
        return measurement.provenance.get("pooling")
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
    (a registry model with its real weights, or a directory holding a registered model's
    weights by sha256: then `identity` names that model), `stand-in` (random weights,
    geometry_checks/standins.py) or `directory` (any other model, by path or hub ID)."""
    from .standins import STAMP

    prov = measurement.provenance
    location = prov.get("location") or ""
    identity = model if model in MODELS else prov.get("same_weights_as")
    control = control_of(model) if prov.get("untrained") else None
    if control is not None:  # issue 23: an untrained control (seeded random weights)
        kind = "control"
    elif location and (Path(location) / STAMP).is_file():
        kind = "stand-in"
    elif identity:  # a directory with a registered model's weights (sha256) is that model (issue 24)
        kind = "registered"
    else:
        kind = "directory"
    facts = {"layers": measurement.last, "kind": kind}
    if identity and identity != model:
        facts["identity"] = identity
    # the matrix groups columns by training objective (registry.OBJECTIVES): a registered model's
    # (or its identity's), `untrained` for a control; none for stand-ins and other directories
    objective = "untrained" if control else MODELS[identity].objective if kind == "registered" else None
    if objective:
        facts["objective"] = objective
    if control is not None:
        facts["base"], facts["seed"] = control
    return facts


def control_of(model: str) -> tuple[str, int] | None:
    """(base, seed) where `model` names an untrained control (registry.parse_control), else None."""
    try:
        return parse_control(model)
    except InputError:
        return None


def is_control(row: dict) -> bool:
    """A row of an untrained control (its facts say so, or build_report marked it: a control
    whose measurement failed has no facts): shown in the matrix (its own column group), in the
    thesis verdict and in its folded section, never counted as a verdict of the run. Decided
    from what was measured, never from the name alone (a directory may be named `x@init:1`)."""
    return bool(row.get("_control")) or (row.get("_facts") or {}).get("kind") == "control"


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
        "_claim_notes": claim.notes,  # the published-only list gives these alone (Notes says how to supply)
        # issue 24: the three-way outcome (holds / does not hold / inconclusive) and the 95%
        # bootstrap interval of the figure that decides, for findings.json
        "outcome": verdict.outcome if verdict is not None else "",
        "interval": verdict.interval if verdict is not None else "",
        # a claim that counts depths: both forms (claims.DEPTH_FORMS), for the matrix
        # (fixed "" where the count covers half or more of the model's depth: not shown,
        # claims.fixed_form_shown)
        "_forms": ({"fixed": verdict.fixed_form, "relative": verdict.relative_form}
                   if verdict is not None and (verdict.fixed_form or verdict.relative_form) else None),
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
    # the expected failures of the model's identity: a directory with mpnet's weights is mpnet
    identity = get.measured[model].provenance.get("same_weights_as", model) if model in get.measured else model
    key = (identity, claim.id)
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


def rows_from_lab(lab, models: list[str], sentences=None, getter: _Getter | None = None,
                  article: bool = True) -> list[dict]:
    """Run every claim that applies to `models` in-process (no pytest); weights that are
    missing give 'not run' rows that say how to supply them. `article`: also the article's
    own claims (on mxbai and jina-colbert-v2)."""
    from .lab import ModelNotAvailable

    get = getter or _Getter(lab, sentences)
    rows = []
    for claim in CL.load_article_claims().values() if article else ():
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
    """{"checks": rows, "verdicts": {outcome: n}, "not run": n, "measurements": {outcome: n}}:
    only the verdicts of OUTCOMES are counted as verdicts; the open question's answers are
    measurements; pytest's skipped and the report's not run are both `not run`."""
    verdicts: dict[str, int] = {}
    measurements: dict[str, int] = {}
    not_run = 0
    for row in rows:
        kind = outcome_kind(row["verdict"])
        if kind == "verdict":
            verdicts[row["verdict"]] = verdicts.get(row["verdict"], 0) + 1
        elif kind == "measurement":
            measurements[row["verdict"]] = measurements.get(row["verdict"], 0) + 1
        else:
            not_run += 1
    order = list(OUTCOMES)
    return {"checks": len(rows), "verdicts": dict(sorted(verdicts.items(), key=lambda kv: order.index(kv[0]))),
            "not run": not_run, "measurements": measurements}


def summary_text(counts: dict) -> str:
    """`22 verdicts (20 passed, 2 xfailed); 23 not run; 2 measurements (1 answered, 1 no dip)`."""
    def part(n: int, what: str, detail: dict) -> str:
        inner = ", ".join(f"{v} {k}" for k, v in detail.items())
        return f"{n} {what}" + (f" ({inner})" if inner else "")

    n_verdicts = sum(counts["verdicts"].values())
    parts = [part(n_verdicts, "verdict" if n_verdicts == 1 else "verdicts", counts["verdicts"])]
    if counts["not run"]:
        parts.append(f"{counts['not run']} not run")
    n_meas = sum(counts["measurements"].values())
    if n_meas:
        parts.append(part(n_meas, "measurement" if n_meas == 1 else "measurements", counts["measurements"]))
    return "; ".join(parts)


def _cell(text) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def published_only(row: dict) -> bool:
    """A row on a model whose weights are not here (mxbai, colbert without their weights):
    the article's published figure only, no measurement."""
    return (outcome_kind(row["verdict"]) == "not run"
            and bool(NOT_FOUND.search(row.get("reason", "") or row.get("measured", "") or "")))


def findings_frame(rows: list[dict]) -> pd.DataFrame:
    """The table of `rows`, every cell in full."""
    return pd.DataFrame(rows, columns=COLUMNS).fillna("")


def _table_with_notes(frame: pd.DataFrame, label, start: int = 1) -> tuple[str, list[str]]:
    """The frame as a markdown table in which no cell is cut: a cell longer than CELL_MAX
    is moved, whole, to a numbered note under the table, and the cell reads `(note N)`.
    `label(i, column)` names the cell in its note. Returns (table, note lines)."""
    notes: list[str] = []
    frame = frame.copy()
    for i in range(len(frame)):
        for col in frame.columns:
            text = _cell(frame.iat[i, frame.columns.get_loc(col)])
            if len(text) > CELL_MAX:
                n = start + len(notes)
                notes.append(f"{n}. {label(i, col)}: {text}")
                text = f"(note {n})"
            frame.iat[i, frame.columns.get_loc(col)] = text
    return frame.to_markdown(index=False), notes


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

# A cell's verdict word (OUTCOMES; pytest's `skipped` and the report's `not run` read the same).
VERDICT_WORD = {outcome: word for outcome, (_, word) in OUTCOMES.items()}
HOLDS = HOLD  # the finding holds: the check passed (an xpass fails the run, but the finding held)
# a verdict on a measurement (OUTCOMES' verdicts) that says whether the finding holds; an
# expected failure does not hold; an inconclusive one says neither, so it is left out of the
# count like a `not run` cell (its cell says `inconclusive`)
COUNTED = tuple(o for o, (kind, _) in OUTCOMES.items() if kind == "verdict" and o != "inconclusive")
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

    if facts.get("kind") == "control":  # `minilm@init`, or a directory's slug + `@init`
        base = facts.get("base", name.removesuffix("@init"))
        label = (base if base in MODELS else slug(base)) + "@init"
    else:
        label = name if name in MODELS else slug(name)
    if facts.get("kind") == "control":  # issue 23: the seeds of an untrained control in one column
        n = len(facts.get("seeds", ()))
        label += f" (L={facts['layers']}, {n} seed{'' if n == 1 else 's'})"
    elif facts.get("layers") is not None:
        label += f" (L={facts['layers']})"
    if facts.get("kind") in ("stand-in", "directory"):
        label += f" ({facts['kind']})"
    if facts.get("identity"):
        label += f" (= {facts['identity']})"
    if facts.get("objective"):  # the column's group (registry.OBJECTIVES): `contrastive: minilm (L=6)`
        label = f"{OBJECTIVES[facts['objective']]}: {label}"
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


def _columns(facts: dict) -> list[dict]:
    """The matrix's columns: one per measured model, the seeds of an untrained control merged
    into one column per base (`minilm@init`), grouped by training objective in
    registry.OBJECTIVES' order (contrastive, late interaction, next-token LM), then the
    models of no known objective (stand-ins, other directories), then the untrained
    controls; table order within a group. Each column: name, column label, members (the
    measured models it shows), and the facts of model_facts."""
    columns: dict[str, dict] = {}
    for model, f in facts.items():
        if f.get("kind") == "control":
            key = f"{f['base']}@init"
            column = columns.setdefault(key, {"name": key, "members": [], "seeds": [], "layers": f["layers"],
                                              "kind": "control", "objective": "untrained", "base": f["base"]})
            if f["seed"] not in column["seeds"]:  # `minilm@init` and `minilm@init:0` are one model
                column["members"].append(model)
                column["seeds"].append(f["seed"])
        else:
            columns[model] = {"name": model, "members": [model], **f}
    order = [*(o for o in OBJECTIVES if o != "untrained"), None, "untrained"]
    out = sorted(columns.values(), key=lambda c: order.index(c.get("objective")))
    for column in out:
        column["column"] = _column(column["name"], column)
    return out


def _control_cell(cells: list[tuple[int, dict]], layers) -> dict:
    """An untrained control's cell: its seeds' cells (seed, cell) in one. The figure of the
    first seed with a verdict, and on how many seeds the finding holds; `verdict` passed
    (every seed holds), failed (none does), `mixed` or `inconclusive` (thesis.member_state)."""
    decided = [(seed, c) for seed, c in cells if c["verdict"] in (*HOLD, *NOT_HOLD, "inconclusive")
               and not c["measured"].startswith("error")]
    if not decided:  # no verdict on any seed: the first seed's cell says why (not run, an error)
        seed, first = cells[0]
        return {**first, "text": f"{first['text']} (seed {seed})" if len(cells) > 1 else first["text"],
                "state": None, "seeds": {str(k): c for k, c in cells}}
    # a seed without a verdict beside seeds with one (its check crashed) is a doubt, not a pass:
    # the column cannot hold on every seed then
    missing = len(cells) - len(decided)
    state = member_state([c["verdict"] for _, c in decided] + ["inconclusive"] * missing)
    held = sum(c["verdict"] in HOLD for _, c in decided)
    unsure = sum(c["verdict"] == "inconclusive" for _, c in decided)
    seed, first = decided[0]
    verdict = {"holds": "passed", "does not hold": "failed"}.get(state, state)
    text = (f"{relative_depths(first['measured'], layers)} (seed {seed}); holds on {held} of {len(decided)} "
            f"seed{'' if len(decided) == 1 else 's'}" + (f" ({unsure} inconclusive)" if unsure else "")
            + (f"; {missing} without a verdict" if missing else ""))
    return {"measured": first["measured"], "verdict": verdict, "text": text, "state": state,
            "seeds": {str(k): c for k, c in cells}}


def _column_cells(model_cells: dict, columns: list[dict], facts: dict) -> dict:
    """Per-model cells -> per-column cells (a control's seeds merged, _control_cell)."""
    out = {}
    for column in columns:
        if column["kind"] == "control":
            out[column["name"]] = _control_cell([(facts[m]["seed"], model_cells[m]) for m in column["members"]],
                                                column["layers"])
        else:
            out[column["name"]] = model_cells[column["name"]]
    return out


def _thesis(cells: dict, columns: list[dict]) -> dict:
    """The claim's thesis verdict (thesis.thesis_verdict) from its row's cells: each column's
    state by objective; the same weights twice (a directory with minilm's) count once; a
    crashed check is no state."""
    groups: dict[str, dict] = {}
    for column in columns:
        objective, cell = column.get("objective"), cells[column["name"]]
        if objective is None or cell["measured"].startswith("error"):
            continue
        state = cell["state"] if "state" in cell else member_state([cell["verdict"]])
        groups.setdefault(objective, {})[column.get("identity", column["name"])] = state
    return thesis_verdict(groups)


def claims_matrix(rows: list[dict]) -> dict:
    """The claim x model matrix of a table's rows.

    Columns (`_columns`): every model with a measurement (a row carrying `_facts`), grouped
    by training objective, an untrained control's seeds in one column. Rows: every dense
    claim, then the open question where the table has it. `holds` counts, over the
    `registered` models (real weights; not stand-ins, not other directories, not controls)
    whose cell has a verdict, those where the check passed: an expected failure does not
    hold, a `not run` cell or a crashed check is left out of the count. `thesis` (issue 23,
    geometry_checks/thesis.py): whether the finding is a fingerprint of contrastive training,
    of any training, or of the architecture (it holds at initialisation too).
    """
    facts = {}
    for row in rows:
        if row.get("_facts") and row["model"] not in facts:
            facts[row["model"]] = row["_facts"]
    columns = _columns(facts)
    by_name = {c["name"]: c for c in columns}
    by_key = {(r["claim"], r["model"]): r for r in rows}
    claims = [(cid, c.finding) for cid, c in CL.dense_claims().items()]
    if any(r["claim"] == "open-question" and r["model"] in facts for r in rows):
        from .openquestion import CLAIM, FINDING

        claims.append((CLAIM, FINDING))
    out_rows = []
    for cid, finding in claims:
        cells = _column_cells({m: _matrix_cell(by_key.get((cid, m)), facts[m]) for m in facts}, columns, facts)
        if cid == "open-question":
            from .openquestion import PUBLISHED_SHORT

            published, holds = PUBLISHED_SHORT, {"holds": None, "of": None, "text": "n/a (a measurement)"}
            thesis = {"verdict": None, "text": "n/a (a measurement)"}
        else:
            holds = _holds(cells, by_name, HOLDS)
            published = published_figure(cid)
            thesis = _thesis(cells, columns)
        out_rows.append({"claim": cid, "finding": finding, "cells": cells, "published": published, "holds": holds,
                         "thesis": thesis})
        forms = {m: (by_key.get((cid, m)) or {}).get("_forms") for m in facts}
        if any(f and f["fixed"] for f in forms.values()):
            out_rows.append(_fixed_form_row(cid, forms, facts, columns))
    return {
        "models": [dict(c) for c in columns],
        "rows": out_rows,
    }


def _holds(cells: dict, facts: dict, holding) -> dict:
    counted, seen = [], set()
    for m in cells:
        if facts[m]["kind"] == "registered" and cells[m]["verdict"] in COUNTED \
                and not cells[m]["measured"].startswith("error"):
            same = facts[m].get("identity", m)
            if same not in seen:  # the same weights twice (minilm and its directory) count once
                seen.add(same)
                counted.append(m)
    n = sum(cells[m]["verdict"] in holding for m in counted)
    # measured, but its interval straddles the bound: said beside the count, never counted (issue 24)
    unsure = len({facts[m].get("identity", m) for m in cells
                  if facts[m]["kind"] == "registered" and cells[m]["verdict"] == "inconclusive"})
    text = f"{n} of {len(counted)}" if counted or unsure else "none measured"
    return {"holds": n, "of": len(counted), "inconclusive": unsure,
            "text": text + (f" ({unsure} inconclusive)" if unsure else "")}


def _without_outcome(form: str) -> str:
    """A Verdict's form text without its ' (holds)' / ' (does not hold)' ending."""
    return form.removesuffix(" (holds)").removesuffix(" (does not hold)").removesuffix(" (inconclusive)")


def _fixed_form_row(cid: str, forms: dict, facts: dict, columns: list[dict]) -> dict:
    """The row of a depth-counting claim's fixed form (the article's count taken literally,
    e.g. 'the last two depths' of any L): reported beside the relative form that decides
    the verdict (claims.DEPTH_FORMS), with its own `holds`."""
    cells = {}
    for m, form in forms.items():
        if not form:
            cells[m] = {"measured": "", "verdict": "not run", "text": "not run"}
            continue
        if not form["fixed"]:  # claims.fixed_form_shown: the count is half or more of this model
            cells[m] = {"measured": "", "verdict": "not shown",
                        "text": f"not shown: the article's count is half or more of L={facts[m].get('layers')}"}
            continue
        word = next((w for w in ("does not hold", "inconclusive") if form["fixed"].endswith(f" ({w})")), "holds")
        figure = relative_depths(_without_outcome(form["fixed"]), facts[m].get("layers"))
        verdict = {"holds": "passed", "does not hold": "failed"}.get(word, word)  # inconclusive: not counted
        cells[m] = {"measured": form["fixed"], "verdict": verdict, "text": f"{figure}: {word}"}
    published = "; ".join(f"{_published_name(short)}: {relative_depths(_without_outcome(v.fixed_form), last)}"
                          for short, v, last in _published_verdicts(cid) if v.fixed_form)
    what = CL.DEPTH_FORMS.get(cid, {}).get("fixed", "the article's count of depths taken literally")
    cells = _column_cells(cells, columns, facts)
    return {"claim": f"{cid} (fixed form)", "finding": f"as above, over {what}", "cells": cells,
            "published": published, "holds": _holds(cells, {c["name"]: c for c in columns}, ("passed",)),
            "thesis": _thesis(cells, columns), "form": "fixed"}


def matrix_frame(matrix: dict) -> pd.DataFrame:
    """The matrix as a table: claim, finding, one column per model, published, holds."""
    records = []
    for row in matrix["rows"]:
        rec = {"claim": row["claim"], "finding": row["finding"]}
        for model in matrix["models"]:
            rec[model["column"]] = row["cells"][model["name"]]["text"]
        rec[f"published (article, L={PUBLISHED_L})"] = row["published"] or "—"
        rec["holds"] = row["holds"]["text"]
        rec["thesis"] = row["thesis"]["text"]
        records.append(rec)
    return pd.DataFrame(records)


def matrix_markdown(matrix: dict, start: int = 1) -> tuple[str, list[str]]:
    """The matrix as a markdown table and the notes its long cells moved to (('', []) when
    no model was measured)."""
    if not matrix["models"]:
        return "", []
    frame = matrix_frame(matrix)
    return _table_with_notes(frame, lambda i, col: f"`{frame['claim'].iat[i]}`, {col}", start)


def _matrix_section(rows: list[dict]) -> list[str]:
    matrix = claims_matrix(rows)
    table, notes = matrix_markdown(matrix, 1)
    if not table:
        return []
    kinds = {m["kind"] for m in matrix["models"]}
    uncounted = (" Columns marked (stand-in) or (directory) are shown but not counted." if kinds - {"registered"}
                 else "")
    same = [m for m in matrix["models"] if m.get("identity") and m["identity"] != m["name"]]
    if same:
        uncounted += " " + " ".join(
            f"`{m['name']}` has the weights of the registered `{m['identity']}` (sha256 of its weights file): it "
            f"gets {m['identity']}'s expected failures and counts as {m['identity']}." for m in same)
    controls = [m for m in matrix["models"] if m["kind"] == "control"]
    if controls:
        uncounted += (" The untrained controls (" + ", ".join(f"`{m['name']}`" for m in controls) + ": the same "
                      "architecture with seeded random weights, one column per architecture, its seeds merged) are "
                      "the null model: not counted in `holds`, they decide whether a finding holds at "
                      "initialisation.")
    return ["## Claims across models", "",
            ("One row per dense claim (the article's findings restated for any dense model; a claim that counts "
             "depths also in its fixed form, the article's count taken literally, where that count covers less "
             "than half of a model's depth) and the open question where measured; "
             "one column per measured model (measured figure: verdict), grouped by training objective "
             "(contrastive, next-token LM, untrained control); the article's published figure; "
             "`holds`: on how many of the measured registered models (real weights) the finding holds, an expected "
             "failure counting as not holding and `not run` cells left out; and `thesis`: whether the finding "
             "holds only under contrastive training, for every trained model, or at initialisation too (the "
             "architecture, not training), with the counts per group it rests on (docs/report.md, \"The thesis "
             "column\")." + uncounted +
             " A depth d of a model with L blocks reads `d (d/L = relative depth)`."), "",
            table, "", *notes, *([""] if notes else [])]


def _row_label(rows: list[dict]):
    return lambda i, col: f"`{rows[i]['claim']}` / {rows[i]['model']}, {col}"


def _published_only_section(rows: list[dict]) -> list[str]:
    """The rows on models without weights here, folded: one line per claim."""
    if not rows:
        return []
    models = ", ".join(dict.fromkeys(r["model"] for r in rows))
    items = []
    for r in rows:
        pooling = f", pooled: {r['pooling']}" if r["pooling"] else ""
        note = " ".join(str(r.get("_claim_notes", "")).split())
        items.append(f"- `{r['claim']}` ({r['model']}{pooling}): {' '.join(r['finding'].split())}. Published: "
                     f"{' '.join(str(r['expected']).split())} (tolerance {r['tolerance']})."
                     + (f" Note: {note}" if note else ""))
    return ["## Published only: no weights here", "",
            f"{len(rows)} claims on {models} were not run: their weights are not here (see Notes for how to "
            "supply them). Each is listed with the article's published figure.", "",
            f"<details><summary>{len(rows)} claims not run ({models})</summary>", "", *items, "", "</details>", ""]


def findings_markdown(rows: list[dict], charts: list[dict] | None = None, not_drawn: list[dict] | None = None,
                      context: dict | None = None, massive: dict | None = None) -> str:
    """findings.md: summary, the matrix, the table of the measured models' checks, the
    published-only rows folded, notes, charts (module docstring)."""
    controls = [r for r in rows if is_control(r)]
    own = [r for r in rows if not is_control(r)]  # the run's checks; the controls are the null model
    measured = [r for r in own if not published_only(r)]
    unmeasured = [r for r in own if published_only(r)]
    head = ["# Findings", ""]
    if context:
        head += [" · ".join(f"{k}: {v}" for k, v in context.items()), ""]
    head += [f"{len(own)} checks: {summary_text(summary_counts(own))}", ""]
    if controls:
        names = list(dict.fromkeys(r["model"] for r in controls))
        head += [(f"Untrained controls: {len(names)} models ({', '.join(names)}), {len(controls)} checks run on "
                  "them as the null model: shown in the matrix and under \"Untrained controls\", not counted "
                  "above."), ""]
    head += _matrix_section(rows)
    head += ["## Every check on the measured models", ""]
    if measured:
        frame = findings_frame(measured)
        table, notes = _table_with_notes(frame, _row_label(measured), 1 + _matrix_note_count(rows))
        head += [table, "", *notes, *([""] if notes else [])]
    else:
        head += ["(no checks ran on a measured model)", ""]
    head += _published_only_section(unmeasured)
    head += _controls_section(controls, 1 + _matrix_note_count(rows) + len(_checks_notes(measured)))
    notes = _missing_notes(own) + _pooling_notes(own)
    if notes:
        head += ["## Notes", "", *notes, ""]
    head += massive_markdown(massive or {})
    if charts is not None:
        head += ["## Charts", "",
                 ("Measured on this run's sentence set: solid, or where a chart shows several quantities one "
                  "line style per quantity (solid, dash-dot, dotted). Dashed: published (the article's "
                  "mxbai-embed-large-v1 and jina-colbert-v2, on its own unpublished 20 sentences). A model has "
                  "one colour on every chart, its published curves included. Every per-depth chart overlays all "
                  "measured models on relative depth (depth / L: 0 = embeddings, 1 = last block)."), ""]
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


def _checks_notes(measured: list[dict]) -> list[str]:
    if not measured:
        return []
    return _table_with_notes(findings_frame(measured), _row_label(measured))[1]


def _controls_section(rows: list[dict], start: int) -> list[str]:
    """Every check on the untrained controls, folded: claim, control, measured, holds or not."""
    if not rows:
        return []
    words = {"passed": "holds", "failed": "does not hold", "inconclusive": "inconclusive"}
    frame = pd.DataFrame([{"claim": r["claim"], "control": r["model"], "measured": r["measured"],
                           "verdict": words.get(r["verdict"], r["verdict"])} for r in rows])
    table, notes = _table_with_notes(frame, lambda i, col: f"`{frame['claim'].iat[i]}` / {frame['control'].iat[i]}, "
                                                           f"{col}", start)
    models = ", ".join(dict.fromkeys(r["model"] for r in rows))
    return ["## Untrained controls", "",
            ("The same checks on each measured architecture with seeded random weights (`NAME@init:SEED`: the "
             "model's config and tokenizer, its family's own initialisation drawn from the seed; "
             "docs/report.md). They are the null model of the matrix's `thesis` column: a finding that holds "
             "here is the architecture's, not training's. Their verdicts are not the run's: a control is "
             "expected to fail most of the article's findings."), "",
            f"<details><summary>{len(rows)} checks on {models}</summary>", "", table, "", *notes,
            *([""] if notes else []), "</details>", ""]


def model_summaries(rows: list[dict]) -> list[str]:
    """One line per measured model (its verdicts, its measurements, what did not run), then
    one line for the models without weights here: what a terminal shows (never a table)."""
    lines = []
    facts = {}
    for row in rows:
        if row.get("_facts") and row["model"] not in facts:
            facts[row["model"]] = row["_facts"]
    controls: dict[str, list[str]] = {}
    for model, f in facts.items():
        own = [r for r in rows if r["model"] == model]
        if f.get("kind") == "control":  # one line per control base, after the trained models
            held = sum(r["verdict"] in HOLDS for r in own if outcome_kind(r["verdict"]) == "verdict")
            decided = sum(r["verdict"] in COUNTED for r in own)
            controls.setdefault(f"{f['base']}@init (L={f['layers']})", []).append(f"seed {f['seed']} {held}/{decided}")
            continue
        counts = summary_counts([r for r in own if outcome_kind(r["verdict"]) != "measurement"])
        text = summary_text(counts)
        answers = [f"{r['claim']}: {r['verdict']}" for r in own if outcome_kind(r["verdict"]) == "measurement"]
        same = f", the weights of {f['identity']}" if f.get("identity") and f["identity"] != model else ""
        lines.append(f"{model} (L={f['layers']}{same}): {text}" + (f"; {', '.join(answers)}" if answers else ""))
    for column, seeds in controls.items():
        lines.append(f"{column}, untrained control: the findings hold on {', '.join(seeds)} checks "
                     "(the null model; not counted)")
    missing: dict[str, int] = {}
    for r in rows:
        if published_only(r):
            missing[r["model"]] = missing.get(r["model"], 0) + 1
    if missing:
        counts = ", ".join(f"{m} ({n} claim{'' if n == 1 else 's'})" for m, n in missing.items())
        lines.append(f"not run, no weights here: {counts} (findings.md says how to supply them)")
    return lines


def _matrix_note_count(rows: list[dict]) -> int:
    return len(matrix_markdown(claims_matrix(rows))[1])


def findings_json(rows: list[dict], charts=None, not_drawn=None, context=None, massive=None) -> dict:
    out = {
        "summary": summary_counts([r for r in rows if not is_control(r)]),
        # every row in full; `published_only`: a claim on a model whose weights are not here;
        # `outcome` and `interval`: the three-way verdict and the 95% bootstrap interval of the
        # figure that decides it (issue 24); `control`: a row of an untrained control (issue 23),
        # not counted in the summary
        "rows": [{**{k: row.get(k, "") for k in [*COLUMNS, "reason", "outcome", "interval"]},
                  "published_only": published_only(row), "control": is_control(row)} for row in rows],
        "matrix": claims_matrix(rows),
    }
    if context:
        out["context"] = context
    if charts is not None:
        out["charts"] = charts
    if not_drawn is not None:
        out["not_drawn"] = not_drawn
    if massive:
        out["massive_activations"] = massive  # model -> massive_summary
    return out


def write_findings(rows: list[dict], path: Path, charts=None, not_drawn=None, context=None,
                   what: str = "--findings-md", massive: dict | None = None) -> None:
    """findings.md at `path` and its machine-readable twin findings.json beside it, each
    written atomically and only over a regular file (outputs.write_text)."""
    from .outputs import write_text

    path = Path(path)
    write_text(path, findings_markdown(rows, charts, not_drawn, context, massive), what)
    write_text(path.with_suffix(".json"),
               json.dumps(findings_json(rows, charts, not_drawn, context, massive), indent=1, allow_nan=False), what)


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


# --------------------------------------------------------------------------- massive activations (issue 23)

MASSIVE = (  # curve -> its column in findings.md's "Massive activations" table
    ("massive_dims_norm_share", "top-K dims' share of the squared norm"),
    ("massive_dims_cosine_share", "top-K dims' share of the within-sentence cosine"),
    ("first_position_norm_share", "first position's share of the squared norm"),
    ("first_position_norm_ratio", "first position's norm / median token norm"),
    ("first_position_cosine", "cosine of the first position with the other tokens"),
)


def _at(m, name: str, depth: int) -> dict:
    """The curve's value at `depth` with its 95% bootstrap interval there (None where it has none)."""
    iv = m.interval(name) if hasattr(m, "interval") else None
    lo = iv["lo"][depth] if iv else None
    hi = iv["hi"][depth] if iv else None
    return {"depth": depth, "value": m.curves[name][depth], "lo": lo, "hi": hi}


def massive_summary(m) -> dict | None:
    """The massive-activation curves of one Measurement in a few numbers: each curve's maximum
    over depths (the first depth on ties) with its interval, the norm ratio at the last depth,
    and the K dimensions at the two shares' maxima. None where the curves were not measured."""
    if "massive_dims_norm_share" not in m.curves:
        return None
    dims = m.massive_dims if isinstance(getattr(m, "massive_dims", None), dict) else {}
    out = {"layers": m.last, "k": dims.get("k"), "hidden": m.provenance.get("hidden_size"), "max": {}, "last": {}}
    for name, _ in MASSIVE:
        values = m.curves.get(name) or []
        finite = [(v, d) for d, v in enumerate(values) if isinstance(v, (int, float))]
        out["max"][name] = _at(m, name, max(finite, key=lambda t: (t[0], -t[1]))[1]) if finite else None
        out["last"][name] = _at(m, name, m.last) if values and values[m.last] is not None else None
    for key, name in (("norm", "massive_dims_norm_share"), ("cosine", "massive_dims_cosine_share")):
        peak = out["max"][name]
        listed = dims.get(key) or []
        if peak is not None and peak["depth"] < len(listed):
            peak["dims"] = listed[peak["depth"]]
    return out


def _massive_cell(point: dict | None, last: int) -> str:
    if point is None:
        return "not computed"
    value = point["value"]
    text = f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"
    text += f" at {point['depth']}/{last}"
    if point.get("lo") is not None and point.get("hi") is not None:
        lo, hi = point["lo"], point["hi"]
        text += f" [{lo:.1f}, {hi:.1f}]" if abs(value) >= 10 else f" [{lo:.3f}, {hi:.3f}]"
    if point.get("dims"):
        text += f", dims {', '.join(map(str, point['dims']))}"
    return text


def massive_markdown(summaries: dict) -> list[str]:
    """findings.md's "Massive activations" section: one row per measured model (summaries:
    model -> massive_summary), each curve's maximum (value at depth/L [95% interval], dims)."""
    rows = {model: s for model, s in summaries.items() if s}
    if not rows:
        return []
    head = ["model", *(label for _, label in MASSIVE), "norm ratio at the last depth"]
    intro = ("How much of the squared token norm and of the within-sentence cosine the top K dimensions carry "
             "(a uniform spread gives K/H), and the first position (whatever its token: [CLS], <bos> or a word) "
             "against the sentence's other content tokens; docs/metrics.md defines them (Sun et al. 2024; Timkey "
             "& van Schijndel 2021). Each cell: the curve's maximum over depths, at depth/L, with its 95% "
             "bootstrap interval and, for the two shares, the K dimensions there.")
    lines = ["## Massive activations", "", intro, "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model, s in rows.items():
        cells = [_massive_cell(s["max"][name], s["layers"]) for name, _ in MASSIVE]
        cells.append(_massive_cell(s["last"]["first_position_norm_ratio"], s["layers"]))
        lines.append("| " + " | ".join([_cell(model), *cells]) + " |")
    uniform = [f"{model} {s['k']}/{s['hidden']} = {s['k'] / s['hidden']:.4f}" for model, s in rows.items()
               if s.get("k") and s.get("hidden")]
    if uniform:
        lines += ["", "Uniform share K/H: " + "; ".join(uniform) + "."]
    return [*lines, ""]


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


def control_models(lab, measured: list[str], seeds) -> list[str]:
    """The untrained controls (issue 23) of the measured models that have a training objective
    (registry.OBJECTIVES: registered models, and directories with a registered model's
    weights), each over `seeds`: `minilm@init:0`, ... Stand-ins, other directories and
    controls get none."""
    out, seen = [], set()
    for model in measured:
        spec = lab.ref(model).spec
        identity = model if spec.objective is not None else lab.identity(model)
        if spec.init_seed is None and (spec.objective is not None or identity != model) and identity not in seen:
            seen.add(identity)  # the same weights twice (minilm and its directory): one architecture, once
            out += [control_name(model, seed) for seed in seeds]
    return out


def _open_question_row(row_fn, name: str, m) -> dict | None:
    from . import openquestion as OQ

    try:
        row = row_fn(m)
    except Exception as exc:  # noqa: BLE001 - another module's row must not break the report
        row = {"claim": "open-question", "model": name, "verdict": "failed",
               "measured": f"error: {exc.__class__.__name__}: {exc}"}
    if not row:
        return None
    row = {**{k: "" for k in COLUMNS}, "reason": "", **row, "_facts": model_facts(name, m)}
    try:  # the matrix shows each model's answer in a line, side by side
        summary = OQ.open_question_summary(m)
    except Exception:  # noqa: BLE001 - the full row above still says what happened
        summary = None
    if summary:
        row["_matrix_cell"] = summary
    return row


def build_report(lab, models: list[str], out: str | Path, sentences=None, control_seeds=()) -> dict:
    """Run every check, then write out/findings.md, out/findings.json and out/*.png.

    `models` get the dense checks and their charts; mxbai and colbert are charted too when
    the article claims could measure them. `control_seeds`: the seeds of the untrained
    controls (issue 23, `control_models`) measured beside each trained model, for the
    matrix's thesis column; they get no charts, and each is released once measured.
    Returns {rows, charts, not_drawn, path}.
    """
    from . import charts as CH

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
        row = _open_question_row(row_fn, name, m) if row_fn is not None else None
        if row:
            rows.append(row)
    # the null model: measured by streaming (no states kept, no charts), one model in memory at a time
    controls = _Getter(lab, sentences)
    for name in control_models(lab, [n for n in order if n in get.measured], control_seeds):
        try:
            own = rows_from_lab(lab, [name], sentences, controls, article=False)
        except InputError as exc:  # a control that cannot be measured (non-finite states in float16,
            # a broken base directory) is one failed row of its own, never the end of the report
            own = [{**_row(CL.dense_claims()["dense-collapse"], name, None, "failed", f"error: {exc}"),
                    "claim": "dense-*", "finding": "every dense-* claim", "pooling": ""}]
        finally:
            lab.release(name)
        if name in controls.measured and row_fn is not None:
            row = _open_question_row(row_fn, name, controls.measured[name])
            if row:
                own.append(row)
        rows += [{**row, "_control": True} for row in own]
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
    from .lab import progress_step

    ctx = CH.ChartContext.load(sentences.name)
    with progress_step(f"drawing the charts of {', '.join(r.name for r in reports) or 'no model'}"):
        charts, not_drawn = CH.draw_all(reports, ctx, staging, extra)
    context = {
        "sentence set": f"{sentences.name} ({len(sentences.sentences)} sentences, "
                        f"{len(sentences.retrieval)} retrieval items, {len(sentences.pairs)} pairs)",
        "measured": ", ".join(f"{r.name} (L={r.measurement.last}, own pooling "
                              f"{r.measurement.provenance.get('pooling', '?')})" for r in reports) or "none",
    }
    massive = {r.name: massive_summary(r.measurement) for r in reports}  # issue 23
    write_findings(rows, staging / "findings.md", charts, not_drawn, context, what="--out", massive=massive)
    return {"rows": rows, "charts": charts, "not_drawn": not_drawn}
