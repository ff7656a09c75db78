"""Per-resident baselines and change detection (docs/insights.md "Baselines and notices").

Each resident carries a small state from day to day (`States`, a numpy record of about
2.3 KB, stored as bytes): the features of the last `HISTORY` days, an EWMA per feature,
how many usable days in a row it has been past its limit, and until when each feature is
cooling down after a notice.

For a day D (`advance`), per feature:

1. The baseline is the median and the MAD of the last `baseline_days` usable days,
   leaving out the newest `guard_days` (a slow trend must not be absorbed by its own
   baseline). Its spread is 1.4826 × MAD (the standard deviation of normal data), never
   less than the feature's `min_scale`.
2. With at least `min_days` usable baseline days, D's value (if D is usable) becomes
   z = (value − median) / spread, clipped to ±4 so one odd day cannot do it alone, and the
   EWMA moves: e = λ·z + (1 − λ)·e. Days that are not usable leave it where it is.
3. The EWMA is past its limit when it lies more than `limit` of its own standard
   deviations, √(λ / (2 − λ)), on the side where the feature declines (either side for
   features without one). A notice is raised when it has been past the limit on
   `persist_days` usable days in a row and the feature is not cooling down; the feature
   then cools down for `cooldown_days`. A change that persists beyond that raises a
   notice again, once per cool-down.
4. A sudden change (an infection) is not left to the EWMA's inertia: `persist_days`
   usable days in a row whose own z lies beyond `abrupt_z` on the decline side raise a
   notice too. For days like normal data that happens less than once in 10⁸ days per
   feature (0.0062⁴ with the defaults), so it adds hardly any false notices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from processors.insights.reasons import reason
from trygg.insights import FEATURES, Bands, Daily, Direction, Notice, Params

#: days of features kept per resident: the baseline, its guard and room for days not usable
HISTORY = 56
VERSION = 1
Z_CLIP = 4.0
BAND = 2.0  # the band shown around the usual value, in spreads
WINSOR = 3.0  # baseline days are pulled in to this many robust spreads of their median
_F = len(FEATURES)
_DIRECTION = np.array([f.direction for f in FEATURES], np.int64)
_MIN_SCALE = np.array([f.min_scale for f in FEATURES], np.float64)
_COUNT = np.array([f.count for f in FEATURES], bool)
_WATCHED = np.array([f.watched for f in FEATURES], bool)
#: the smallest spread of a count's square root (Anscombe: a Poisson count's is about 0.5)
_MIN_SCALE_ROOT = np.where(_COUNT, 0.4, _MIN_SCALE)


def _judged_scale(values: np.ndarray) -> np.ndarray:
    """Counts on the square-root scale (Anscombe, sqrt(x + 3/8)), everything else as it is."""
    return np.where(_COUNT, np.sqrt(np.maximum(values, 0) + 0.375), values)

STATE = np.dtype([
    ("version", "<u2"),
    ("last", "<i4"),  # the date ordinal of the newest day fed (0: none yet)
    ("hist", "<f4", (HISTORY, _F)),  # features of the last HISTORY days, newest last; NaN unknown
    ("ok", "?", (HISTORY,)),  # that day was usable
    ("ewma", "<f4", (_F,)),
    ("run", "<i2", (_F,)),  # usable days in a row past the limit
    ("run_start", "<i4", (_F,)),  # the first of them (date ordinal)
    ("streak", "<i2", (_F,)),  # usable days in a row each beyond `abrupt_z` on the decline side
    ("cool", "<i4", (_F,)),  # no notice before this day (date ordinal)
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
            if blob is not None and len(blob) == STATE.itemsize:
                record = np.frombuffer(blob, STATE, count=1)[0]
                if record["version"] == VERSION:
                    records[i] = record
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


def _declining(score: np.ndarray, limit: float) -> np.ndarray:
    """Where `score` lies beyond `limit` on the side each feature declines to (either side
    for a feature without one)."""
    with np.errstate(invalid="ignore"):
        up, down = score > limit, score < -limit
    result: np.ndarray = np.where(_DIRECTION == Direction.UP, up,
                                  np.where(_DIRECTION == Direction.DOWN, down, up | down))
    return result


def advance(states: States, daily: Daily, days: np.ndarray, params: Params) -> tuple[list[Notice], Bands]:
    """Feed each resident's next day (`days`: date ordinals, after the last fed) and judge it."""
    records = states.records
    days = np.asarray(days, np.int64)
    _shift(records, days)
    median, spread, counts = baseline(records, params)
    centre, root_spread, _ = baseline(records, params, judged=True)
    known = counts >= params.min_days

    x = daily.values
    judged = known & daily.usable[:, None] & ~np.isnan(x)
    with np.errstate(invalid="ignore"):
        z = np.clip((_judged_scale(x) - centre) / root_spread, -Z_CLIP, Z_CLIP)
    lam = params.ewma_lambda
    ewma = np.where(judged, lam * np.nan_to_num(z) + (1 - lam) * records["ewma"], records["ewma"])
    limit = params.limit * np.sqrt(lam / (2 - lam))
    past = judged & _declining(ewma, limit) & _WATCHED
    sharp = judged & _declining(z, params.abrupt_z) & _WATCHED
    streak = np.where(judged, np.where(sharp, records["streak"].astype(np.int64) + 1, 0), records["streak"])
    run = records["run"].astype(np.int64)
    run_start = np.where(judged & past & (run == 0), days[:, None], records["run_start"])
    run = np.where(judged, np.where(past, run + 1, 0), run)
    run_start = np.where(sharp & (streak >= params.persist_days) & ~(past & (run >= params.persist_days)),
                         days[:, None] - streak + 1, run_start)
    fire = ((past & (run >= params.persist_days)) | (sharp & (streak >= params.persist_days))) & (
        days[:, None] >= records["cool"])

    records["ewma"] = ewma
    records["run"] = np.minimum(run, np.iinfo(np.int16).max)
    records["streak"] = np.minimum(streak, np.iinfo(np.int16).max)
    records["run_start"] = run_start
    records["cool"] = np.where(fire, days[:, None] + params.cooldown_days, records["cool"])
    records["hist"][:, -1, :] = x
    records["ok"][:, -1] = daily.usable

    # the range of single ordinary days; a count's is the one it is judged on, squared back
    root_low = np.maximum(centre - BAND * root_spread, np.sqrt(0.375))
    low = np.where(_COUNT, np.maximum(root_low**2 - 0.375, 0.0), median - BAND * spread)
    high = np.where(_COUNT, (centre + BAND * root_spread) ** 2 - 0.375, median + BAND * spread)
    notices = []
    for i, j in zip(*np.nonzero(fire), strict=True):
        span = int(min(days[i] - run_start[i, j] + 1, params.window_days))
        recent = records["hist"][i, -span:, j][records["ok"][i, -span:]]
        value = float(np.nanmean(recent))
        feature = FEATURES[j]
        direction = feature.direction if feature.direction != Direction.EITHER else Direction(
            int(np.sign(ewma[i, j] if past[i, j] else z[i, j])))
        nb, en = reason(feature, value, float(median[i, j]), span)
        notices.append(Notice(row=int(i), feature=feature.name, direction=direction, value=value,
                              usual=float(median[i, j]), low=float(low[i, j]), high=float(high[i, j]),
                              window_days=span, reason_nb=nb, reason_en=en))
    shown = np.where(known, 1.0, np.nan)
    return notices, Bands(usual=median * shown, low=low * shown, high=high * shown)
