"""Bootstrap intervals over sentences (geometry_checks/intervals.py, issue 24), the
three-way claim verdicts built on them (claims.decide, claims.Verdict) and the open
question's dip test. No model: per-sentence values are generated.

- seeded: the same seed gives the same resamples and intervals, another seed others;
- a mean's interval contains the point estimate, and it narrows with more sentences
  (the same values repeated 16 times: about 4 times narrower);
- each replicate is the metric of an explicitly resampled sentence list (an oracle with
  loops): a nanmean, and a mean cosine over pairs of different sentences, where the pairs
  within one sentence's copies are left out;
- a verdict holds or fails only when the point estimate and the whole interval agree.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geometry_checks import claims as CL
from geometry_checks import intervals as IV
from geometry_checks import openquestion as OQ
from geometry_checks.result import Measurement

values = st.lists(st.floats(-10, 10, allow_nan=False, allow_subnormal=False), min_size=3, max_size=60)


def _interval_of_mean(x: list[float], seed: int = IV.SEED) -> tuple[float, float]:
    res = IV.Resampler(len(x), seed=seed)
    lo, hi = IV._q(res.nanmean(torch.tensor([x], dtype=torch.float64)))
    return float(lo[0]), float(hi[0])


@settings(max_examples=40, deadline=None)
@given(values)
def test_interval_of_a_mean_contains_the_point_estimate(x):
    lo, hi = _interval_of_mean(x)
    mean = sum(x) / len(x)
    assert lo - 1e-9 <= mean <= hi + 1e-9, (lo, mean, hi)


@settings(max_examples=25, deadline=None)
@given(values.filter(lambda x: max(x) - min(x) > 1e-3))
def test_interval_narrows_with_more_sentences(x):
    lo, hi = _interval_of_mean(x)
    lo16, hi16 = _interval_of_mean(x * 16)
    assert hi16 - lo16 < 0.6 * (hi - lo), (hi - lo, hi16 - lo16)


@settings(max_examples=10, deadline=None)
@given(values)
def test_seeded_resamples_are_reproducible(x):
    assert torch.equal(IV.Resampler(len(x)).w, IV.Resampler(len(x)).w)
    assert _interval_of_mean(x) == _interval_of_mean(x)
    assert not torch.equal(IV.Resampler(len(x)).w, IV.Resampler(len(x), seed=1).w)


def test_counts_are_resamples_of_every_slot():
    res = IV.Resampler(7)
    assert res.w.shape == (IV.N_RESAMPLES, 7)
    assert bool((res.w.sum(1) == 7).all()) and bool((res.w >= 0).all())


def _drawn(res: IV.Resampler, r: int) -> list[int]:
    """The slots of resample r as a list (slot s repeated w_rs times)."""
    return [s for s, k in enumerate(res.w[r].long().tolist()) for _ in range(k)]


def test_nanmean_replicates_are_the_mean_of_the_resampled_list():
    gen = torch.Generator().manual_seed(3)
    x = torch.rand((2, 9), generator=gen, dtype=torch.float64)
    x[0, 4] = float("nan")  # a sentence the metric leaves out
    res = IV.Resampler(9)
    reps = res.nanmean(x)
    for r in range(5):
        for p in range(2):
            kept = [x[p, s].item() for s in _drawn(res, r) if not math.isnan(x[p, s].item())]
            assert reps[r, p].item() == pytest.approx(sum(kept) / len(kept), rel=1e-12)


def test_pair_ratio_replicates_leave_out_pairs_of_one_sentences_copies():
    """cross_sentence_cosine of a resample: mean cos over token pairs of different sentences,
    a sentence's copies not being different sentences (oracle: loops over the drawn list)."""
    gen = torch.Generator().manual_seed(4)
    S, P, H = 6, 2, 5
    counts = [2, 3, 1, 4, 2, 3]
    tokens = [torch.randn((P, n, H), generator=gen, dtype=torch.float64) for n in counts]
    units = [t / t.norm(dim=-1, keepdim=True) for t in tokens]
    U = torch.stack([u.sum(1) for u in units], 1)  # [P, S, H]
    res = IV.Resampler(S)
    res.add("unit", torch.arange(S), U.transpose(0, 1))
    reps = IV._pair_ratio(res, "unit", (U * U).sum(-1), torch.tensor(counts), (P, H))
    for r in range(5):
        drawn = _drawn(res, r)
        for p in range(P):
            total, pairs = 0.0, 0
            for a, s in enumerate(drawn):
                for b, t in enumerate(drawn):
                    if a != b and s != t:
                        total += (units[s][p] @ units[t][p].T).sum().item()
                        pairs += counts[s] * counts[t]
            assert reps[r, p].item() == pytest.approx(total / pairs, abs=1e-6)  # float32 products


def test_separability_replicates_equal_the_resampled_lists_ratio():
    gen = torch.Generator().manual_seed(5)
    means = torch.randn((2, 8, 4), generator=gen, dtype=torch.float64)
    within = torch.rand((2, 8), generator=gen, dtype=torch.float64)
    res = IV.Resampler(8)
    reps = IV.separability(res, means, within)
    for r in range(4):
        drawn = _drawn(res, r)
        for p in range(2):
            m = means[p, drawn]
            b = (m - m.mean(0)).norm(dim=-1).mean()
            assert reps[r, p].item() == pytest.approx((b / within[p, drawn].mean()).item(), rel=1e-5)


# --------------------------------------------------------------------------- three-way verdicts


@pytest.mark.parametrize(("point_ok", "lo", "hi", "outcome"), [
    (True, 0.6, 0.9, CL.HOLDS),
    (False, 0.1, 0.4, CL.FAILS),
    (True, 0.4, 0.7, CL.INCONCLUSIVE),  # straddles the bound 0.5
    (False, 0.4, 0.7, CL.INCONCLUSIVE),
    (False, 0.6, 0.9, CL.INCONCLUSIVE),  # the interval disagrees with the point estimate
    (True, None, None, CL.HOLDS),  # no interval: the point decides
    (False, None, None, CL.FAILS),
])
def test_decide_is_three_way(point_ok, lo, hi, outcome):
    assert CL.decide(point_ok, CL.Bounds("share", lo, hi, lambda q: q > 0.5, "> 0.5")) == outcome


def test_an_unbounded_interval_decides_nothing():
    bounds = CL.Bounds("share", None, None, lambda q: q > 0.5, "> 0.5", "the gain holds 0", unbounded=True)
    assert CL.decide(True, bounds) == CL.decide(False, bounds) == CL.INCONCLUSIVE
    assert bounds.text() == "of share: unbounded (the gain holds 0)"


@pytest.mark.parametrize(("shift", "outcome"), [(0.0, CL.INCONCLUSIVE), (0.5, CL.HOLDS)])
def test_a_share_of_a_gain_that_may_be_zero_is_no_verdict(shift, outcome):
    """dense-late-separability on a flat curve (smollm2: 0.272 -> 0.279, 'a share of 3077%'):
    where the gain from depth 0 has an interval holding 0, the share is unbounded."""
    sep = [0.272, 0.27, 0.26, 0.25, 0.255, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.26, 0.279 + shift]  # L = 12
    # resamples of the curve: the same shape, depths 0 and L moved apart by noise of +-0.03
    noise = torch.linspace(-0.03, 0.03, 200)[:, None]
    reps = torch.tensor(sep)[None, :] + noise * torch.tensor([1.0] + [0.0] * 11 + [-1.0])[None, :]
    m = Measurement(model="toy", sentence_set="toy", depths=len(sep), curves={"separability_ratio": sep},
                    intervals={"separability_ratio": IV.curve_interval(reps)})
    verdict = CL.run_dense_check(CL.dense_claims()["dense-late-separability"], m, "toy")
    assert verdict.outcome == outcome, verdict.message
    if outcome == CL.INCONCLUSIVE:
        assert "unbounded (the gain from depth 0, 0.007, has the 95% interval" in verdict.interval
        assert verdict.fixed_form.endswith("of a gain not surely above 0 (inconclusive)")


def test_verdict_passed_only_when_it_holds():
    held = CL.Verdict("c", "m", True, "x", "y", "t")
    assert held.outcome == CL.HOLDS and held.passed and not held.inconclusive
    assert CL.Verdict("c", "m", False, "x", "y", "t").outcome == CL.FAILS
    unsure = CL.Verdict("c", "m", True, "x", "y", "t", outcome=CL.INCONCLUSIVE, interval="of q [0.4, 0.7]")
    assert not unsure.passed and unsure.inconclusive
    assert unsure.message.startswith("INCONCLUSIVE") and "95% interval of q [0.4, 0.7]" in unsure.message
    with pytest.raises(ValueError):
        CL.Verdict("c", "m", True, "x", "y", "t", outcome="maybe")


def _curve_measurement(intra: list, reps: torch.Tensor) -> Measurement:
    """A toy measurement with the open question's curves and intervals from replicates [R, P]."""
    p = len(intra)
    curves = {OQ.INTRA: list(intra), OQ.INTRA + OQ.ATTN: [None] + list(intra[1:]),
              "pair_cosine_all": [0.1 * d for d in range(p)]}
    for k in OQ.CLASSES:
        curves[f"{OQ.INTRA}[{k}]"] = list(intra)
        curves[f"{OQ.INTRA}_share[{k}]"] = [v / 3 for v in intra]
    return Measurement(model="toy", sentence_set="toy", depths=p, curves=curves,
                       scalars={f"pairs[{k}]": 10 for k in OQ.CLASSES},
                       intervals={OQ.INTRA: IV.curve_interval(reps)})


def test_open_question_counts_a_dip_only_beyond_its_paired_interval():
    intra = [0.1, 0.303, 0.294, 0.4]
    gen = np.random.default_rng(0)
    shared = gen.normal(0, 0.02, (1000, 1))  # the depths move together: marginal intervals overlap
    noisy = torch.tensor(intra + shared + gen.normal(0, 0.01, (1000, 4)))  # drop 0.009, noise 0.014
    row = OQ.open_question_row(_curve_measurement(intra, noisy))
    assert row["verdict"] == "dip within noise" and "dip within the noise at d=2/3" in row["measured"]
    assert row["interval"].startswith("d=2: drop [")
    tight = torch.tensor(intra + shared + gen.normal(0, 0.001, (1000, 4)))  # paired noise 0.0014
    row = OQ.open_question_row(_curve_measurement(intra, tight))
    assert row["verdict"] == "answered" and row["outcome"] == "answered"
    assert "drop 0.009 (paired 95% interval [" in row["measured"]
