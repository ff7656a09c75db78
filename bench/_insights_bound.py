"""How early could any detector notice the declines of a simulated municipality? (bench/insights)

An oracle is told what no detector is told: the day each decline begins, how many days
it takes to reach its full size (the ramp), and which features it moves. From the onset
on it adds up the evidence in the best way for that shape, a matched filter: for each
feature, S_T = Σ w_t z_t / √(Σ w_t²) over the usable days t ≤ T since the onset, with
w_t = min((t + 1) / ramp, 1), z_t the day's z against the resident's own baseline before
the onset (the core's `baseline` and `judged_z`: the 42 usable days before, clipped to
±2). It notices on the first day S_T passes a limit c.

c is set on the stable residents, so that the oracle is held to the issue's false-notice
target: from made-up onsets every week, with ramps drawn from the declines', S crosses c
within 21 days with probability P = target × 21 / 90 / F, the target (0.3 per resident per
90 days) shared over the F features a stable resident has watched. Two oracles:

- **one feature**: notices when any moved feature's S_T passes c (each held to P);
- **moved features together**: Σ S_T over the k moved features / √k, held to k × P.

Nothing the oracle knows is available to a detector, so their median delays are a best
case: no detector that meets the false-notice target can be expected to notice sooner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from processors.insights import HISTORY, States, baseline, judged_z
from trygg.insights import FEATURE_INDEX, FEATURES, Params

WINDOW = 21  # days after a made-up onset in which a crossing counts as a false notice
_WATCHED = np.array([f.watched for f in FEATURES], bool)


def _evidence(values: np.ndarray, usable: np.ndarray, pairs: np.ndarray, ramps: np.ndarray, horizon: int,
              params: Params) -> np.ndarray:
    """S_T of every feature for each (resident, onset) pair: (pairs, horizon, F); 0 before
    the first usable day, NaN for a feature without a baseline."""
    days = values.shape[0]
    rows, onsets = pairs[:, 0], pairs[:, 1]
    states = States.load([None] * len(pairs), params)
    back = onsets[:, None] - HISTORY + 1 + np.arange(HISTORY)[None, :]  # the slots' days, the onset newest
    inside = back >= 0
    b = np.clip(back, 0, days - 1)
    states.records["hist"] = np.where(inside[:, :, None], values[b, rows[:, None], :], np.nan)
    states.records["ok"] = inside & usable[b, rows[:, None]]
    centre, spread, counts = baseline(states.records, replace(params, guard_days=0), judged=True)
    known = (counts >= params.min_days) & _WATCHED[None, :]
    ahead = onsets[:, None] + np.arange(horizon)[None, :]
    a = np.clip(ahead, 0, days - 1)
    x = values[a, rows[:, None], :]  # (pairs, horizon, F)
    ok = (ahead < days)[:, :, None] & usable[a, rows[:, None]][:, :, None] & ~np.isnan(x)
    z = np.where(ok, judged_z(x, centre[:, None, :], spread[:, None, :], params.z_clip), 0.0)
    w = np.minimum((np.arange(horizon)[None, :] + 1) / ramps[:, None], 1.0)[:, :, None] * ok
    num, den = np.cumsum(w * z, axis=1), np.cumsum(w * w, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(den > 0, num / np.sqrt(den), 0.0)
    return np.where(known[:, None, :], s, np.nan)


def _first(s: np.ndarray, c: float) -> float:
    """The first day index at which the series passes c; inf if never."""
    hit = np.flatnonzero(np.nan_to_num(s, nan=-np.inf) > c)
    return float(hit[0]) if len(hit) else float("inf")


def oracle(values: np.ndarray, usable: np.ndarray, truths: Sequence[Any], params: Params,
           target: float = 0.3, seed: int = 0) -> dict[str, Any]:
    """The oracles' delays for the gradual and abrupt declines (see the module's text).
    `values`, `usable`: (days, residents, F) and (days, residents) as the core saw them."""
    rng = np.random.default_rng(seed)
    days = values.shape[0]
    stable = np.array([i for i, t in enumerate(truths) if t.profile == "stable"], np.int64)
    onsets = np.arange(params.baseline_days + 7, days - WINDOW, 7)
    if not len(stable) or not len(onsets):  # nobody stable, or too few days for a baseline and 21 days after
        return {}
    seen = (~np.isnan(values[:, stable, :]) & usable[:, stable, None]).mean(axis=0) > 0.5
    per_resident = float((seen & _WATCHED[None, :]).sum(axis=1).mean())
    share = target * WINDOW / 90 / per_resident
    null_pairs = np.array([(i, d) for i in stable for d in onsets], np.int64)
    out: dict[str, Any] = {"watched_per_stable_resident": per_resident, "false_share_per_feature": share}
    for profile in ("gradual", "abrupt"):
        declines = [(i, t) for i, t in enumerate(truths) if t.profile == profile and t.onset is not None]
        if not declines:
            continue
        ramps = np.array([max(t.full - t.onset, 1) for _, t in declines], np.float64)
        null = _evidence(values, usable, null_pairs, rng.choice(ramps, len(null_pairs)), WINDOW, params)
        peak = null.max(axis=1)  # (pairs, F): NaN where the feature has no baseline (NaN all along)
        c_one = float(np.nanquantile(peak, 1 - share))
        pairs = np.array([(i, t.onset) for i, t in declines])
        ev = _evidence(values, usable, pairs, ramps, days, params)
        one, together = [], []
        for n, (_, t) in enumerate(declines):
            cols = [FEATURE_INDEX[f] for f in t.features]
            one.append(min((_first(ev[n, :, j], c_one) for j in cols), default=float("inf")))
            have = [j for j in cols if not np.isnan(ev[n, 0, j])]
            ref = null[:, :, have]
            ref = ref[~np.isnan(ref[:, 0, :]).any(axis=1)]  # stable onsets with all these features
            if not have or not len(ref):
                together.append(float("inf"))
                continue
            c_k = float(np.quantile(ref.sum(axis=2).max(axis=1) / np.sqrt(len(have)), 1 - share * len(have)))
            together.append(_first(ev[n][:, have].sum(axis=1) / np.sqrt(len(have)), c_k))
        out[profile] = {"n": len(declines), "limit_one": c_one,
                        "one_median_d": float(np.median(one)), "together_median_d": float(np.median(together)),
                        "one_within": {str(k): float(np.mean(np.array(one) <= k)) for k in (4, 21)},
                        "together_within": {str(k): float(np.mean(np.array(together) <= k)) for k in (4, 21)}}
    return out
