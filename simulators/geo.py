"""GPS tracks for simulated walks, and the safe-zone geometry to check them against.

A walk goes out from home along a wobbling bearing and comes back the same way, at an old
person's pace; fixes carry outdoor accuracy (a few metres) and matching noise. Fixes taken
indoors are noisier. Distances use a flat-earth approximation, which is good to well under
a metre over the few kilometres a walk covers.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Final

from simulators.profiles import SimResident, offset

WALK_SPEED_MPS: Final = 0.9  # a slow, steady walk
_M_PER_DEG: Final = 111_320.0


@dataclass(frozen=True, slots=True)
class Fix:
    ts_ms: int
    lat: float
    lon: float
    accuracy_m: float

    def data(self) -> dict[str, float]:
        return {"lat": self.lat, "lon": self.lon, "accuracy_m": self.accuracy_m}


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    north = (lat2 - lat1) * _M_PER_DEG
    east = (lon2 - lon1) * _M_PER_DEG * math.cos(math.radians((lat1 + lat2) / 2))
    return math.hypot(north, east)


def in_polygon(lat: float, lon: float, ring: tuple[tuple[float, float], ...]) -> bool:
    """Ray casting over a ring of [lon, lat] points (GeoJSON order)."""
    inside = False
    n = len(ring)
    for i in range(n):
        x1, y1 = ring[i]
        x2, y2 = ring[(i + 1) % n]
        if (y1 > lat) != (y2 > lat):
            x_cross = x1 + (lat - y1) * (x2 - x1) / (y2 - y1)
            if lon < x_cross:
                inside = not inside
    return inside


def in_safe_zone(resident: SimResident, lat: float, lon: float) -> bool:
    """True when the point is inside the home circle or the park polygon of a resident."""
    radius = resident.profile.zone_radius_m
    if distance_m(resident.home[0], resident.home[1], lat, lon) <= radius:
        return True
    return resident.park is not None and in_polygon(lat, lon, resident.park)


def _fix(rng: random.Random, ts_ms: int, lat: float, lon: float, accuracy: float) -> Fix:
    sigma = accuracy / 2
    lat, lon = offset(lat, lon, rng.gauss(0, sigma), rng.gauss(0, sigma))
    return Fix(ts_ms, round(lat, 6), round(lon, 6), round(accuracy, 1))


def home_fix(rng: random.Random, home: tuple[float, float], ts_ms: int) -> Fix:
    """A fix taken indoors: the position is home, the accuracy poor."""
    return _fix(rng, ts_ms, home[0], home[1], rng.uniform(15, 45))


def walk_track(
    rng: random.Random,
    home: tuple[float, float],
    start_ms: int,
    end_ms: int,
    every_s: float,
    reach_m: float,
    bearing: float | None = None,
) -> list[Fix]:
    """Fixes every `every_s` of a walk that leaves home at `start_ms` and is back at `end_ms`.

    The walk reaches at most `reach_m` from home (less when there is no time to get there at
    walking pace) and turns back at half time.
    """
    if end_ms <= start_ms:
        return []
    if bearing is None:
        bearing = rng.uniform(0, 2 * math.pi)
    half_s = (end_ms - start_ms) / 2000
    far = min(reach_m, WALK_SPEED_MPS * half_s)
    wobble_phase = rng.uniform(0, 2 * math.pi)
    out: list[Fix] = []
    step_ms = int(every_s * 1000)
    ts = start_ms + step_ms // 2
    while ts < end_ms:
        frac = (ts - start_ms) / (end_ms - start_ms)
        dist = far * (1 - abs(2 * frac - 1))
        heading = bearing + 0.25 * math.sin(2 * math.pi * frac + wobble_phase)
        lat, lon = offset(home[0], home[1], dist * math.cos(heading), dist * math.sin(heading))
        out.append(_fix(rng, ts, lat, lon, rng.uniform(4, 15)))
        ts += step_ms
    return out


__all__ = ["Fix", "distance_m", "home_fix", "in_polygon", "in_safe_zone", "walk_track"]
