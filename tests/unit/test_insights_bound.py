"""The oracle of bench/insights (bench/_insights_bound.py): the best case it reports must
notice what is plainly there, soon, and stay quiet where nothing changes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from bench._insights_bound import _evidence, oracle
from trygg.insights import FEATURE_INDEX, FEATURES, Params

DAYS, STABLE, DECLINING = 120, 300, 40
J = FEATURE_INDEX["active_hours"]


def municipality(step: float, ramp: int, declining: int = DECLINING
                 ) -> tuple[np.ndarray, np.ndarray, list[SimpleNamespace]]:
    """Residents with only active hours (8 h, day-to-day sd 1 h); the last `declining` lose
    `step` hours from day 60, reached over `ramp` days."""
    rng = np.random.default_rng(5)
    n = STABLE + declining
    values = np.full((DAYS, n, len(FEATURES)), np.nan)
    values[:, :, J] = 8 + rng.normal(0, 1, (DAYS, n))
    level = np.clip((np.arange(DAYS) - 60 + 1) / ramp, 0, 1)
    values[:, STABLE:, J] -= step * level[:, None]
    truths = [SimpleNamespace(profile="stable", onset=None, full=None, features=())] * STABLE
    truths += [SimpleNamespace(profile="gradual" if ramp > 2 else "abrupt", onset=60, full=60 + ramp,
                               features=("active_hours",))] * declining
    return values, np.ones((DAYS, n), bool), truths


def test_the_days_are_weighted_by_how_far_the_change_has_come() -> None:
    """The matched filter of a ramp: with day t's z equal to its weight w_t = min((t + 1) /
    ramp, 1), the evidence after T days is √(Σ w_t²) (days weighted alike would give less)."""
    values = np.full((100, 1, len(FEATURES)), np.nan)
    values[:, 0, J] = 8.0  # steady: the spread is the feature's smallest, 0.75 h
    weights = np.minimum((np.arange(40) + 1) / 10, 1.0)
    values[60:, 0, J] = 8.0 - 0.75 * weights
    s = _evidence(values, np.ones((100, 1), bool), np.array([(0, 60)]), np.array([10.0]), 40, Params())
    assert s[0, :, J] == pytest.approx(np.sqrt(np.cumsum(weights**2)))
    assert np.isnan(s[0, 0, FEATURE_INDEX["night_activity"]])  # no values: no baseline, no evidence


def test_a_large_sudden_change_is_noticed_within_days() -> None:
    values, usable, truths = municipality(step=3.0, ramp=1)
    best = oracle(values, usable, truths, Params())
    assert best["watched_per_stable_resident"] == 1
    assert best["abrupt"]["one_median_d"] <= 2
    assert best["abrupt"]["one_within"]["4"] == 1.0


def test_a_slow_change_takes_longer_than_a_sudden_one_of_its_size() -> None:
    values, usable, truths = municipality(step=2.0, ramp=42)
    slow = oracle(values, usable, truths, Params())["gradual"]["one_median_d"]
    values, usable, truths = municipality(step=2.0, ramp=1)
    sudden = oracle(values, usable, truths, Params())["abrupt"]["one_median_d"]
    assert sudden < 5 < slow < 42


def test_too_few_days_for_a_baseline_give_no_best_case() -> None:
    values, usable, truths = municipality(step=3.0, ramp=1)
    assert oracle(values[:60], usable[:60], truths, Params()) == {}


def test_no_change_is_not_noticed_more_often_than_the_target_allows() -> None:
    values, usable, truths = municipality(step=0.0, ramp=42, declining=STABLE)
    best = oracle(values, usable, truths, Params())
    # held to 0.3 false notices per 90 days: a "decline" that is not there is found within
    # 21 days as often as a stable resident's one feature may cross, 0.3 × 21 / 90 = 7 %
    assert best["false_share_per_feature"] == pytest.approx(0.3 * 21 / 90)
    assert best["gradual"]["one_within"]["21"] <= 0.11
