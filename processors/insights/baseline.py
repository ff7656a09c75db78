"""Per-resident baselines and change detection (docs/insights.md "Baselines and notices").

Each resident carries a small state from day to day (`States`, a numpy record of about
3 KB, stored as bytes): the features of the last `HISTORY` days, two one-sided CUSUMs
per feature (Page 1954; Montgomery, *Statistical Quality Control*, ch. 9) and until when
each feature is cooling down after a notice.

For a day D (`advance`), per feature:

1. The baseline is the usual value and spread of the last `baseline_days` usable days,
   leaving out the newest `guard_days` (a slow trend must not be absorbed by its own
   baseline): their mean and standard deviation after pulling each day in to within 3
   robust spreads (1.4826 × MAD) of their median, the spread never less than the
   feature's `min_scale`. Counts are judged on their square root.
2. With at least `min_days` usable baseline days, D's value (if D is usable) becomes
   z = (value − usual) / spread, turned to the side where the feature declines and
   clipped to ±`z_clip`: one odd day (a cold, a bad night) adds little, and a change must
   show on many days.
3. Two CUSUMs add up the evidence: S = max(0, S + z − k). The slow one (`slow_k`,
   `slow_h`) finds a shift of about 0.4 spreads, a decline that comes over weeks; the
   fast one (`fast_k`, `fast_h`) a shift of about 2 spreads, an infection. Days that are
   not usable leave both where they are. With z clipped to `z_clip`, the slow sum needs
   at least ⌈slow_h / (z_clip − slow_k)⌉ = 8 usable days and the fast one
   ⌈fast_h / (z_clip − fast_k)⌉ = 4: the persistence is in the sums.
4. A notice is raised when either sum passes its limit and the feature is not cooling
   down; both sums then start again from 0 and the feature cools down for
   `cooldown_days`. A change that lasts raises a notice again, once per cool-down.

Version 1 states (56 days of history and an EWMA, before the CUSUMs) are read on: their
days move into the newest slots and the sums start at 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from processors.insights.reasons import reason
from trygg.insights import FEATURES, Bands, Daily, Direction, Notice, Params
from trygg.settings import INSIGHTS_HISTORY_DAYS

#: days of features kept per resident: the baseline, its guard and room for days not usable
HISTORY = INSIGHTS_HISTORY_DAYS
VERSION = 2
BAND = 2.0  # the band shown around the usual value, in spreads
WINSOR = 3.0  # baseline days are pulled in to this many robust spreads of their median
_F = len(FEATURES)
_DIRECTION = np.array([f.direction for f in FEATURES], np.int64)
_MIN_SCALE = np.array([f.min_scale for f in FEATURES], np.float64)
_COUNT = np.array([f.count for f in FEATURES], bool)
_WATCHED = np.array([f.watched for f in FEATURES], bool)
#: +1 where a feature declines upwards, −1 downwards (a watched feature has a side)
_SIDE = np.where(_DIRECTION == Direction.DOWN, -1.0, 1.0)
assert not np.any(_WATCHED & (_DIRECTION == Direction.EITHER)), "a watched feature needs the side it declines to"
#: the smallest spread of a count's square root (Anscombe: a Poisson count's is about 0.5)
_MIN_SCALE_ROOT = np.where(_COUNT, 0.4, _MIN_SCALE)


def _judged_scale(values: np.ndarray) -> np.ndarray:
    """Counts on the square-root scale (Anscombe, sqrt(x + 3/8)), everything else as it is."""
    return np.where(_COUNT, np.sqrt(np.maximum(values, 0) + 0.375), values)


def judged_z(values: np.ndarray, centre: np.ndarray, spread: np.ndarray, z_clip: float) -> np.ndarray:
    """Each day's z against a baseline from `baseline(..., judged=True)`, turned so that
    the side where the feature declines is positive and clipped to ±`z_clip`; NaN unknown."""
    with np.errstate(invalid="ignore"):
        z: np.ndarray = np.clip((_judged_scale(values) - centre) / spread * _SIDE, -z_clip, z_clip)
    return z


STATE = np.dtype([
    ("version", "<u2"),
    ("last", "<i4"),  # the date ordinal of the newest day fed (0: none yet)
    ("hist", "<f4", (HISTORY, _F)),  # features of the last HISTORY days, newest last; NaN unknown
    ("ok", "?", (HISTORY,)),  # that day was usable
    ("slow", "<f4", (_F,)),  # the CUSUM of small shifts
    ("fast", "<f4", (_F,)),  # the CUSUM of large shifts
    ("slow_from", "<i4", (_F,)),  # the day each last rose from 0 (date ordinal)
    ("fast_from", "<i4", (_F,)),
    ("cool", "<i4", (_F,)),  # no notice before this day (date ordinal)
])
#: the state before the CUSUMs: 56 days and an EWMA; its days are read on
_STATE_V1 = np.dtype([
    ("version", "<u2"), ("last", "<i4"), ("hist", "<f4", (56, _F)), ("ok", "?", (56,)), ("ewma", "<f4", (_F,)),
    ("run", "<i2", (_F,)), ("run_start", "<i4", (_F,)), ("streak", "<i2", (_F,)), ("cool", "<i4", (_F,)),
])


def _fresh(n: int) -> np.ndarray:
    records = np.zeros(n, STATE)
    records["version"] = VERSION
    records["hist"] = np.nan
    return records


@dataclass(slots=True)
class States:
    """The states of a batch of residents, a record each (row i = resident i of the batch)."""

    records: np.ndarray

    @classmethod
    def load(cls, blobs: Sequence[bytes | None], params: Params | None = None) -> States:
        """States from stored bytes; None (never computed) or bytes of another version or
        size start afresh (the resident's baseline is then built again from new days)."""
        records = _fresh(len(blobs))
        for i, blob in enumerate(blobs):
            if blob is None:
                continue
            if len(blob) == STATE.itemsize:
                record = np.frombuffer(blob, STATE, count=1)[0]
                if record["version"] == VERSION:
                    records[i] = record
            elif len(blob) == _STATE_V1.itemsize:
                old = np.frombuffer(blob, _STATE_V1, count=1)[0]
                if old["version"] == 1:
                    records[i]["last"], records[i]["cool"] = old["last"], old["cool"]
                    records[i]["hist"][-56:], records[i]["ok"][-56:] = old["hist"], old["ok"]
        return cls(records)

    def blobs(self) -> list[bytes]:
        return [record.tobytes() for record in self.records]

    def __len__(self) -> int:
        return len(self.records)


def _shift(records: np.ndarray, days: np.ndarray) -> None:
    """Move each resident's history so that its newest slot is `days` (empty so far)."""
    last = records["last"].astype(np.int64)
    gap = np.where(last == 0, HISTORY, days - last)
    if np.any(gap <= 0):
        bad = int(np.flatnonzero(gap <= 0)[0])
        raise ValueError(f"row {bad}: day {int(days[bad])} is not after the last day fed ({int(last[bad])})")
    source = np.arange(HISTORY)[None, :] + gap[:, None]
    inside = source < HISTORY
    source = np.minimum(source, HISTORY - 1)
    hist = np.take_along_axis(records["hist"], source[:, :, None], axis=1)
    ok = np.take_along_axis(records["ok"], source, axis=1)
    records["hist"] = np.where(inside[:, :, None], hist, np.nan)
    records["ok"] = ok & inside
    records["last"] = days


def _median(sorted_values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Medians along axis 1 of values sorted with NaN last, `counts` real values each."""
    k = np.maximum(counts, 1)
    lo = np.take_along_axis(sorted_values, ((k - 1) // 2)[:, None, :], axis=1)[:, 0, :]
    hi = np.take_along_axis(sorted_values, (k // 2)[:, None, :], axis=1)[:, 0, :]
    return np.where(counts > 0, (lo + hi) / 2, np.nan)


def baseline(records: np.ndarray, params: Params, *, judged: bool = False
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(usual value, spread, usable days) per resident and feature, from the days before the
    guard: the mean and standard deviation of the baseline days after pulling each in to
    within `WINSOR` robust spreads (1.4826 × MAD) of their median."""
    window = HISTORY - 1 - params.guard_days
    hist = records["hist"][:, :window, :].astype(np.float64)
    if judged:
        hist = _judged_scale(hist)
    min_scale = _MIN_SCALE_ROOT if judged else _MIN_SCALE
    ok = records["ok"][:, :window]
    newest_first = np.cumsum(ok[:, ::-1], axis=1)[:, ::-1]  # usable days from here to the newest
    keep = ok & (newest_first <= params.baseline_days)
    values = np.where(keep[:, :, None], hist, np.nan)
    counts = np.sum(~np.isnan(values), axis=1)
    median = _median(np.sort(values, axis=1), counts)
    deviation = np.sort(np.abs(values - median[:, None, :]), axis=1)
    robust = np.maximum(1.4826 * _median(deviation, counts), min_scale[None, :])
    pulled = np.clip(values, (median - WINSOR * robust)[:, None, :], (median + WINSOR * robust)[:, None, :])
    with np.errstate(invalid="ignore", divide="ignore"):
        usual = np.nansum(pulled, axis=1) / counts
        spread = np.sqrt(np.nansum((pulled - usual[:, None, :]) ** 2, axis=1) / np.maximum(counts - 1, 1))
    usual = np.where(counts > 0, usual, np.nan)
    return usual, np.maximum(spread, min_scale[None, :]), counts


def advance(states: States, daily: Daily, days: np.ndarray, params: Params) -> tuple[list[Notice], Bands]:
    """Feed each resident's next day (`days`: date ordinals, after the last fed) and judge it."""
    records = states.records
    days = np.asarray(days, np.int64)
    _shift(records, days)
    median, spread, counts = baseline(records, params)
    centre, root_spread, _ = baseline(records, params, judged=True)
    known = counts >= params.min_days

    x = daily.values
    judged = known & daily.usable[:, None] & ~np.isnan(x) & _WATCHED
    z = np.nan_to_num(judged_z(x, centre, root_spread, params.z_clip))
    fresh = days[:, None]
    slow, fast = records["slow"].astype(np.float64), records["fast"].astype(np.float64)
    new_slow = np.where(judged, np.maximum(slow + z - params.slow_k, 0.0), slow)
    new_fast = np.where(judged, np.maximum(fast + z - params.fast_k, 0.0), fast)
    slow_from = np.where((slow == 0) & (new_slow > 0), fresh, records["slow_from"])
    fast_from = np.where((fast == 0) & (new_fast > 0), fresh, records["fast_from"])
    by_fast = new_fast > params.fast_h
    fire = judged & (by_fast | (new_slow > params.slow_h)) & (fresh >= records["cool"])
    since = np.where(by_fast, fast_from, slow_from)

    records["slow"] = np.where(fire, 0.0, new_slow)
    records["fast"] = np.where(fire, 0.0, new_fast)
    records["slow_from"], records["fast_from"] = slow_from, fast_from
    records["cool"] = np.where(fire, fresh + params.cooldown_days, records["cool"])
    records["hist"][:, -1, :] = x
    records["ok"][:, -1] = daily.usable

    # the range of single ordinary days; a count's is the one it is judged on, squared back
    root_low = np.maximum(centre - BAND * root_spread, np.sqrt(0.375))
    low = np.where(_COUNT, np.maximum(root_low**2 - 0.375, 0.0), median - BAND * spread)
    high = np.where(_COUNT, (centre + BAND * root_spread) ** 2 - 0.375, median + BAND * spread)
    notices = []
    for i, j in zip(*np.nonzero(fire), strict=True):
        span = int(min(days[i] - since[i, j] + 1, params.window_days))
        recent = records["hist"][i, -span:, j][records["ok"][i, -span:]]
        value = float(np.nanmean(recent))
        feature = FEATURES[j]
        nb, en = reason(feature, value, float(median[i, j]), span)
        notices.append(Notice(row=int(i), feature=feature.name, direction=feature.direction, value=value,
                              usual=float(median[i, j]), low=float(low[i, j]), high=float(high[i, j]),
                              window_days=span, reason_nb=nb, reason_en=en))
    shown = np.where(known, 1.0, np.nan)
    return notices, Bands(usual=median * shown, low=low * shown, high=high * shown)
