"""The oracle of bench/insights (bench/_insights_bound.py): the best case it reports must
notice what is plainly there, soon, and stay quiet where nothing changes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from bench._insights_bound import oracle
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


def test_no_change_is_not_noticed_more_often_than_the_target_allows() -> None:
    values, usable, truths = municipality(step=0.0, ramp=42, declining=STABLE)
    best = oracle(values, usable, truths, Params())
    # held to 0.3 false notices per 90 days: a "decline" that is not there is found within
    # 21 days as often as a stable resident's one feature may cross, 0.3 × 21 / 90 = 7 %
    assert best["false_share_per_feature"] == 0.3 * 21 / 90
    assert best["gradual"]["one_within"]["21"] <= 0.11
