"""The article's thesis, claim by claim: is a finding a fingerprint of the training objective?

The article ("Layer by Layer") reads its findings as "the training objective leaves a
geometric fingerprint at every layer". With one objective measured, a finding that holds
for a contrastive model cannot be told from what any trained transformer, or the
architecture alone, does. Issue 23 measures three kinds of model side by side:

- trained with a contrastive objective (minilm, mpnet; the article's mxbai),
- trained for next-token prediction (smollm2, gemma3),
- untrained controls: the same architectures with seeded random weights
  (`minilm@init:0..2`, registry.control_spec), the null model.

`thesis_verdict` reads one claim's outcome in each group and says which of these the
finding is (THESES):

| verdict | contrastive | next-token LMs | untrained controls |
| --- | --- | --- | --- |
| `contrastive only` | every one holds | none holds | none holds |
| `every trained model` | every one holds | every one holds | none holds |
| `trained, some LMs` | every one holds | some hold | none holds |
| `at init too` | every one holds | (any) | every control holds on every seed |
| `partly at init` | every one holds | (any) | some controls (or seeds) hold |
| `not contrastive` | none holds | (any) | (any) |
| `some contrastive` | some hold | (any) | (any) |
| `undecided` | a group the decision needs was not measured, or a member's outcome is inconclusive |

A member is one column of the claim x model matrix: a trained model holds when its check
passed (an expected failure does not hold); an untrained control holds when its check
passed on EVERY seed, does not hold when it failed on every seed, and is `mixed` when it
held on some seed for sure (which counts as holding for `partly at init`: the architecture
can give the finding without training). An inconclusive verdict (issue 24: the interval
straddles the bound) decides nothing; where it is the only thing between two verdicts, the
result is `undecided` and says which column. One exception, by decision: a control that
holds makes the verdict at least `partly at init` whatever the other columns' doubts (that
much is certain); an inconclusive control only keeps it from `at init too`. Each verdict
carries the counts it rests on, e.g.
`contrastive 2/2, next-token 0/2, untrained 0/4`.

Pure logic over outcome words (report.OUTCOMES): no torch, no measurement. docs/report.md
explains how to read the column.
"""
from __future__ import annotations

HOLD = ("passed", "xpassed")  # the finding held (an xpass fails the run, but the finding held)
NOT_HOLD = ("failed", "xfailed")  # measured and did not hold (an expected failure does not hold)

# verdict key -> what the matrix's `thesis` column says
THESES: dict[str, str] = {
    "contrastive only": "only under contrastive training (a fingerprint of the objective)",
    "every trained model": "for every trained model, not at initialisation (training, not the objective)",
    "trained, some LMs": "under contrastive training and for some next-token LMs, not at initialisation",
    "at init too": "at initialisation too (the architecture, not training)",
    "partly at init": "at initialisation for some architectures (partly the architecture)",
    "not contrastive": "not for the contrastive models measured here",
    "some contrastive": "for some contrastive models only",
    "undecided": "undecided",
}


# The suite's real models the recorded thesis rests on (geometry_checks/checks/test_thesis.py):
# two contrastive encoders and two next-token LMs, each with its untrained controls.
THESIS_MODELS = ("minilm", "mpnet", "smollm2", "gemma3")

# The thesis verdict of each dense claim on THESIS_MODELS and their controls (seeds 0, 1, 2),
# on the default sentence set (fixtures/core.json), CPU float32: the issue-23 finding, kept by
# test_thesis. The counts after each are (contrastive, next-token, untrained) columns holding.
EXPECTED: dict[str, str] = {
    # 2/2, 2/2, 3/4: random mpnet, smollm2 and gemma3 raise within-sentence cosine several-fold
    # from a near-0 start (0.001 -> 0.30, 0.005 -> 0.91, 0.001 -> 0.55); random minilm does not
    "dense-collapse": "partly at init",
    "dense-signal-peak": "partly at init",  # 2/2, 1/2, 2/4 (mpnet@init on every seed, minilm@init on two)
    # minilm@init's share is inconclusive on every seed, as is smollm2's (its gain holds 0)
    "dense-late-separability": "undecided",
    "dense-late-writes": "some contrastive",  # 1/2 (mpnet 0.316), 2/2, 0/4: training, not every contrastive model
    "dense-meanpool-drift": "partly at init",  # 2/2, 2/2, 3/4
    # 2/2, 0/2, 4/4: both LMs miss it; the random encoders have it on every seed, the random LMs on one
    "dense-cls-alignment": "partly at init",
    "dense-pc1-orthogonal": "undecided",  # inconclusive on minilm and mpnet (issue 24)
    "dense-coherent-push": "partly at init",  # 2/2, 1/2, 3/4
    "dense-stable-norms": "at init too",  # 2/2, 1/2, 4/4: random weights keep norms flat too
    "dense-negation-late": "contrastive only",  # 2/2, 0/2, 0/4: the one contrastive fingerprint
    "dense-role-reversal": "partly at init",  # 2/2, 2/2, 2/4 (the random encoders)
}


def outcome_of(verdict) -> str:
    """A claims.Verdict as the outcome word member_state reads: passed (holds), failed (does
    not hold) or inconclusive; expected failures are not consulted (an xfail does not hold)."""
    return "inconclusive" if verdict.inconclusive else "passed" if verdict.passed else "failed"


def member_state(outcomes: list[str]) -> str | None:
    """One matrix column's state from its outcomes (one for a trained model, one per seed for
    an untrained control): `holds` (every outcome holds), `mixed` (some seed holds for sure,
    another does not or is inconclusive), `does not hold` (none holds, none inconclusive),
    `inconclusive` (none holds for sure, some inconclusive), or None (not measured: no
    verdict on the finding at all)."""
    decided = [o for o in outcomes if o in HOLD or o in NOT_HOLD]
    unsure = any(o == "inconclusive" for o in outcomes)
    if not decided:
        return "inconclusive" if unsure else None
    held = sum(o in HOLD for o in decided)
    if held == len(decided) and not unsure:
        return "holds"
    if held:  # it holds on some seed for sure (the others fail or are inconclusive)
        return "mixed"
    return "inconclusive" if unsure else "does not hold"


def _count(states: dict[str, str | None]) -> tuple[int, int, list[str]]:
    """(holding, measured, inconclusive column names) over a group's measured columns; a
    `mixed` control counts as holding (the architecture gives it on some seed)."""
    measured = {k: v for k, v in states.items() if v is not None}
    holding = sum(v in ("holds", "mixed") for v in measured.values())
    unsure = [k for k, v in measured.items() if v == "inconclusive"]
    return holding, len(measured), unsure


def thesis_verdict(groups: dict[str, dict[str, str | None]]) -> dict:
    """The thesis verdict of one claim. `groups`: objective -> {column: member_state}, with
    the objectives `contrastive`, `next-token` and `untrained` (others are ignored).
    Returns {"verdict": a THESES key, "text": its words with the counts, "counts": {...}}."""
    counts = {g: _count(groups.get(g, {})) for g in ("contrastive", "next-token", "untrained")}
    numbers = ", ".join(f"{g} {h}/{n}" for g, (h, n, _) in counts.items() if n)
    (c_hold, c_n, c_unsure), (n_hold, n_n, n_unsure), (u_hold, u_n, u_unsure) = counts.values()

    def out(key: str, why: str = "") -> dict:
        text = THESES[key] + (f": {why}" if why else "") + (f" ({numbers})" if numbers else "")
        return {"verdict": key, "text": text,
                "counts": {g: {"holds": h, "of": n, "inconclusive": u} for g, (h, n, u) in counts.items()}}

    if not c_n:
        return out("undecided", "no contrastive model measured")
    if c_unsure:
        return out("undecided", f"inconclusive on {', '.join(c_unsure)}")
    if c_hold == 0:
        return out("not contrastive")
    if c_hold < c_n:
        return out("some contrastive")
    if u_hold:  # the architecture alone gives it, on some control or seed
        every = all(v == "holds" for v in groups.get("untrained", {}).values() if v is not None)
        return out("at init too" if every and u_hold == u_n else "partly at init")
    if u_unsure:
        return out("undecided", f"inconclusive on {', '.join(u_unsure)}")
    if not u_n:
        return out("undecided", "no untrained control measured")
    if n_unsure:
        return out("undecided", f"inconclusive on {', '.join(n_unsure)}")
    if not n_n:
        return out("undecided", "no next-token LM measured")
    if n_hold == 0:
        return out("contrastive only")
    return out("every trained model" if n_hold == n_n else "trained, some LMs")
