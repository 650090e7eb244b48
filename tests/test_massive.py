"""Issue 23's massive-activation metrics (geometry_checks.metrics): hypothesis properties.

- agreement with the loop oracles of tests/oracles.py (share, the chosen dimensions where
  they are not a near tie, the first-position values);
- bounds: the norm share is in [K/H, 1]; the cosine share is at least K/H where defined and
  at most 1 where no dimension's term is negative; the first-position share in [0, 1], its
  cosine in [-1, 1];
- the per-dimension cosine terms add up to intra_sentence_cosine;
- invariance to scaling every state by a positive constant, equivariance under a
  permutation of the dimensions (the chosen dimensions permute, the shares stay);
- a planted massive dimension drives both shares to 1 and is the first one chosen;
- the first-position metrics read position 0 whether or not it is a content token, and the
  dimension metrics never read it when it is not.

Inputs: the ragged float64 batches of test_metrics_properties (H >= K here).
"""
from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from geometry_checks import metrics as M

try:
    from tests import oracles as O
    from tests.test_metrics_properties import batches, close
except ImportError:  # tests/ on sys.path instead of the repo root
    import oracles as O
    from test_metrics_properties import batches, close

pytestmark = pytest.mark.property

K = M.MASSIVE_DIMS
LOOSE = {"atol": 1e-7, "rtol": 1e-7}


def massive_batches():
    return batches(min_h=K)


def _all(states, content) -> dict:
    """Every massive-activation output: name -> [P] tensor, plus the two dims tensors."""
    norm, norm_dims = M.massive_dims_norm_share(states, content)
    cosine, cos_dims = M.massive_dims_cosine_share(states, content)
    return {"norm": norm, "cosine": cosine, "norm_dims": norm_dims, "cos_dims": cos_dims,
            **M.first_position_metrics(states, content)}


def _separated(contrib: list[float], k: int, rel: float = 1e-6) -> bool:
    """The k-th largest entry is clear of the (k+1)-th: the chosen set does not depend on rounding."""
    ordered = sorted(contrib, reverse=True)
    scale = max(abs(v) for v in ordered) or 1.0
    return len(ordered) == k or ordered[k - 1] - ordered[k] > rel * scale


def _distinct(contrib: list[float], k: int, rel: float = 1e-6) -> bool:
    """The top k + 1 entries are pairwise clear of each other: the order is not rounding's either."""
    ordered = sorted(contrib, reverse=True)[: k + 1]
    scale = max(abs(v) for v in contrib) or 1.0
    return all(a - b > rel * scale for a, b in pairwise(ordered))


def _energy(states, content) -> list[list[float]]:
    return M.dim_energy_per_sentence(states, content).sum(1).tolist()


# ------------------------------------------------------- oracle agreement


@settings(deadline=None)
@given(massive_batches())
def test_massive_dims_norm_share_matches_oracle(b):
    states, _, content = b
    share, dims = M.massive_dims_norm_share(states, content)
    want = O.massive_dims_norm_share(states.numpy(), content.numpy(), K)
    close(share, [s for s, _ in want])
    for d, (energy, (_, want_dims)) in enumerate(zip(_energy(states, content), want)):
        if want_dims is not None and _distinct(energy, K):
            assert dims[d].tolist() == want_dims


@settings(deadline=None)
@given(massive_batches())
def test_massive_dims_cosine_share_matches_oracle(b):
    states, _, content = b
    share, dims = M.massive_dims_cosine_share(states, content)
    terms = O.cosine_dim_contributions(states.numpy(), content.numpy())
    close(M.cosine_dim_contributions(states, content), terms)
    want = O.massive_dims_cosine_share(states.numpy(), content.numpy(), K, M.MASSIVE_MIN_COSINE)
    for d, (c, (s, want_dims)) in enumerate(zip(terms, want)):
        total = sum(c)
        if not math.isnan(total) and abs(total - M.MASSIVE_MIN_COSINE) < 1e-9:
            continue  # at the threshold: defined on one side of the rounding only
        close(share[d], s)
        if want_dims is not None and _distinct(c, K):
            assert dims[d].tolist() == want_dims


@settings(deadline=None)
@given(batches())
def test_first_position_metrics_match_oracle(b):
    states, _, content = b
    got = M.first_position_per_sentence(states, content)
    want = O.first_position_per_sentence(states.numpy(), content.numpy())
    for key in ("norm_share", "norm_ratio", "cosine"):
        close(got[key], want[key])


# ------------------------------------------------------------- invariants


@settings(deadline=None)
@given(massive_batches())
def test_cosine_terms_add_up_to_intra_sentence_cosine(b):
    states, _, content = b
    close(M.cosine_dim_contributions(states, content).sum(-1), M.intra_sentence_cosine(states, content), **LOOSE)


@settings(deadline=None)
@given(massive_batches())
def test_massive_shares_bounded(b):
    states, _, content = b
    h = states.shape[-1]
    out = _all(states, content)
    norm = out["norm"][~out["norm"].isnan()]
    assert ((norm >= K / h - 1e-12) & (norm <= 1 + 1e-12)).all()
    cosine = out["cosine"][~out["cosine"].isnan()]
    assert (cosine >= K / h - 1e-12).all()
    share = out["first_position_norm_share"]
    assert ((share[~share.isnan()] >= 0) & (share[~share.isnan()] <= 1)).all()
    cos = out["first_position_cosine"]
    assert (cos[~cos.isnan()].abs() <= 1 + 1e-12).all()
    ratio = out["first_position_norm_ratio"]
    assert (ratio[~ratio.isnan()] >= 0).all()


@settings(deadline=None)
@given(massive_batches())
def test_cosine_share_at_most_one_without_negative_terms(b):
    """States with no negative entry: every dimension's cosine term is >= 0, so the top K
    carry at most the whole cosine."""
    states, _, content = b
    share, _ = M.massive_dims_cosine_share(states.abs(), content)
    assert (share[~share.isnan()] <= 1 + 1e-12).all()


@settings(deadline=None)
@given(massive_batches(), st.floats(0.1, 10))
def test_massive_metrics_invariant_to_positive_scaling(b, c):
    states, _, content = b
    before, after = _all(states, content), _all(states * c, content)
    for key in ("norm", "cosine", "first_position_norm_share", "first_position_norm_ratio", "first_position_cosine"):
        close(after[key], before[key], **LOOSE)
    for d, energy in enumerate(_energy(states, content)):
        if _distinct(energy, K, 1e-4):
            assert torch.equal(after["norm_dims"][d], before["norm_dims"][d])


@settings(deadline=None)
@given(massive_batches(), st.randoms(use_true_random=False))
def test_massive_dims_permute_with_the_dimensions(b, rnd):
    """x'[..., j] = x[..., perm[j]]: the shares stay, and the chosen dimensions are the old
    ones renamed (perm[new] = old, as sets where the K-th is clear of the next)."""
    states, _, content = b
    perm = list(range(states.shape[-1]))
    rnd.shuffle(perm)
    before, after = _all(states, content), _all(states[..., perm], content)
    for key in ("norm", "cosine", "first_position_norm_share", "first_position_norm_ratio", "first_position_cosine"):
        close(after[key], before[key], **LOOSE)
    terms = M.cosine_dim_contributions(states, content).tolist()
    for d, (energy, c) in enumerate(zip(_energy(states, content), terms)):
        if _separated(energy, K) and not math.isnan(before["norm"][d]):
            assert {perm[j] for j in after["norm_dims"][d].tolist()} == set(before["norm_dims"][d].tolist())
        if not math.isnan(before["cosine"][d]) and _separated(c, K):
            assert {perm[j] for j in after["cos_dims"][d].tolist()} == set(before["cos_dims"][d].tolist())


@settings(deadline=None)
@given(massive_batches(), st.data())
def test_planted_massive_dim_takes_both_shares(b, data):
    """One dimension of every token set to a value 1,000 times the others' bound (10): it is
    the first dimension chosen, and both shares are within 1e-3 of 1."""
    states, _, content = b
    j = data.draw(st.integers(0, states.shape[-1] - 1))
    sign = data.draw(st.sampled_from([1.0, -1.0]))
    planted = states.clone()
    planted[..., j] = sign * 1e4
    out = _all(planted, content)
    assert (out["norm_dims"][:, 0] == j).all()
    assert (out["norm"] > 1 - 1e-3).all()
    if M.pair_eligible(content).any():
        assert (out["cos_dims"][:, 0] == j).all()
        assert (out["cosine"] > 1 - 1e-3).all()
    else:
        assert out["cosine"].isnan().all()


@settings(deadline=None)
@given(massive_batches(), st.booleans())
def test_first_position_is_position_zero_special_or_not(b, special):
    """A sink planted at position 0: the first-position metrics see it whether position 0 is
    a content token or a special one (an encoder's CLS, Gemma's <bos>); the dimension metrics
    see it only when it is a content token."""
    states, _, content = b
    content = content.clone()
    content[:, 0] = not special
    keep = content[:, 1:].any(1)  # the sentences with a token to compare position 0 with
    assume(bool(keep.any()))
    states, content = states[:, keep], content[keep]
    h = states.shape[-1]
    sink = states.clone()
    sink[:, :, 0] = 0.0
    sink[:, :, 0, h - 1] = 1e4
    base, got = _all(states, content), _all(sink, content)
    assert (got["first_position_norm_share"] > 0.99).all()
    assert (got["first_position_norm_ratio"] > 100).all()
    if special:  # position 0 is not measured by the dimension metrics
        close(got["norm"], base["norm"])
        close(got["cosine"], base["cosine"])
    else:
        assert (got["norm_dims"][:, 0] == h - 1).all()


@settings(deadline=None)
@given(batches())
def test_first_position_undefined_without_another_token(b):
    """A sentence whose only content token is position 0 has no token to compare it with: NaN
    (left out), never a share of 1."""
    states, _, content = b
    content = content.clone()
    content[0] = False
    content[0, 0] = True
    per = M.first_position_per_sentence(states, content)
    assert all(per[k][:, 0].isnan().all() for k in per)


def test_cosine_share_undefined_at_or_below_the_threshold():
    """Two orthogonal tokens: intra_sentence_cosine 0, so no share of it (NaN), and the dims
    list of the Measurement is None there; a negative cosine likewise."""
    x = torch.tensor([[[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], [[[1.0, 0.0, 0.0], [-1.0, 0.1, 0.0]]]])
    share, _ = M.massive_dims_cosine_share(x, torch.tensor([[True, True]]))
    assert share.isnan().all()
    from geometry_checks.measure import massive_curves

    _, dims = massive_curves(x, torch.tensor([[True, True]]))
    assert dims["cosine"] == [None, None] and all(len(d) == K for d in dims["norm"])


def test_cosine_share_above_one_when_other_dims_cancel():
    """Documented: the K largest terms can carry more than the whole cosine when another
    dimension's term is negative. Two tokens (1, 1, 1, .5, +-1): terms 1, 1, 1, .25, -1 (over
    |h|^2 = 4.25), so the top three carry 3 / 2.25 of the cosine."""
    x = torch.tensor([[[[1.0, 1.0, 1.0, 0.5, 1.0], [1.0, 1.0, 1.0, 0.5, -1.0]]]])
    share, dims = M.massive_dims_cosine_share(x, torch.tensor([[True, True]]))
    assert share.item() == pytest.approx(3 / 2.25) and dims[0].tolist() == [0, 1, 2]


def test_top_share_ties_keep_the_lower_index():
    share, dims = M.top_share(torch.tensor([1.0, 2.0, 2.0, 2.0, 1.0]), k=2)
    assert dims.tolist() == [1, 2] and share.item() == pytest.approx(0.5)


@pytest.mark.parametrize("fill", [0.0, np.nan, 1e6])
def test_massive_metrics_never_read_padding(fill):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 4, generator=gen, dtype=torch.float64)
    attn = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    content = attn.clone()
    content[:, 0] = False
    padded = x.clone()
    padded[:, ~attn] = fill
    a, b = _all(x, content), _all(padded, content)
    for key in a:
        close(a[key], b[key])



@settings(deadline=None)
@given(massive_batches())
def test_top_share_without_dims_is_the_same_share(b):
    """The bootstrap's top_share(dims=False) (topk, no sort) gives the share the sort gives."""
    states, _, content = b
    for contrib in (M.dim_energy_per_sentence(states, content), M.cosine_dim_contributions_per_sentence(states, content)):
        close(M.top_share(contrib, dims=False)[0], M.top_share(contrib)[0])
