"""Safe zones of one resident, compiled to numpy arrays, and accuracy-aware placement.

A safe zone (registry `safe_zones`) is a circle (``lat``, ``lon``, ``radius_m``) or a
GeoJSON polygon (``[lon, lat]`` points; the closing point may be repeated or left out).
`ZoneSet.signed_distances` gives, for every zone at once, the distance in metres from a
position to the zone's border: negative inside, positive outside.

- Circles use the haversine distance to the centre minus the radius.
- Polygons are projected once onto a local equirectangular plane centred on the polygon
  (x = R·Δlon·cos(lat₀), y = R·Δlat), which is accurate to well under a metre for a zone a
  few kilometres across; inside/outside is the even-odd ray test, the distance is the
  shortest distance to any edge. A position far away is projected with the same formula:
  the distance is then only approximate, but it is large and the verdict the same.

A GPS fix with accuracy ``a`` metres describes a circle of radius ``a``. It is

- `Placement.INSIDE` when that circle lies wholly inside at least one zone
  (signed distance ≤ −a),
- `Placement.OUTSIDE` when it lies wholly outside every zone (signed distance ≥ a for all),
- `Placement.AMBIGUOUS` otherwise: it overlaps a border, so it proves neither.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import StrEnum
from typing import Final

import numpy as np
import numpy.typing as npt

from trygg.registry import SafeZone

EARTH_RADIUS_M: Final = 6_371_008.8  # mean Earth radius (IUGG)

FloatArray = npt.NDArray[np.float64]


class Placement(StrEnum):
    INSIDE = "inside"
    OUTSIDE = "outside"
    AMBIGUOUS = "ambiguous"


class ZoneSet:
    """All safe zones of one resident, ready for vectorised distance queries."""

    __slots__ = (
        "_c_cos",
        "_c_lat",
        "_c_lon",
        "_c_r",
        "_e_ax",
        "_e_ay",
        "_e_bx",
        "_e_by",
        "_e_k",
        "_e_lat0",
        "_e_lon0",
        "_e_poly",
        "_p_starts",
        "names",
    )

    def __init__(self, zones: Sequence[SafeZone]) -> None:
        circles = [z for z in zones if z.polygon is None]
        polygons = [z for z in zones if z.polygon is not None]
        #: zone names in the order of `signed_distances`: circles first, then polygons
        self.names: tuple[str, ...] = tuple(z.name for z in [*circles, *polygons])

        self._c_lat = np.radians(np.array([z.lat for z in circles], dtype=np.float64))
        self._c_lon = np.radians(np.array([z.lon for z in circles], dtype=np.float64))
        self._c_r = np.array([z.radius_m for z in circles], dtype=np.float64)
        self._c_cos = np.cos(self._c_lat)

        ax: list[float] = []
        ay: list[float] = []
        bx: list[float] = []
        by: list[float] = []
        lat0s: list[float] = []
        lon0s: list[float] = []
        poly_of_edge: list[int] = []
        starts: list[int] = []
        for index, zone in enumerate(polygons):
            assert zone.polygon is not None
            ring = list(zone.polygon)
            if len(ring) > 1 and ring[0] == ring[-1]:
                ring.pop()
            lon0 = sum(p[0] for p in ring) / len(ring)
            lat0 = sum(p[1] for p in ring) / len(ring)
            k = math.cos(math.radians(lat0))
            xy = [_project(lat, lon, lat0, lon0, k) for lon, lat in ring]
            starts.append(len(ax))
            for i, (x1, y1) in enumerate(xy):
                x2, y2 = xy[(i + 1) % len(xy)]
                ax.append(x1)
                ay.append(y1)
                bx.append(x2)
                by.append(y2)
                lat0s.append(lat0)
                lon0s.append(lon0)
                poly_of_edge.append(index)
        self._e_ax = np.array(ax, dtype=np.float64)
        self._e_ay = np.array(ay, dtype=np.float64)
        self._e_bx = np.array(bx, dtype=np.float64)
        self._e_by = np.array(by, dtype=np.float64)
        self._e_lat0 = np.array(lat0s, dtype=np.float64)
        self._e_lon0 = np.array(lon0s, dtype=np.float64)
        self._e_k = np.cos(np.radians(self._e_lat0))
        self._e_poly = np.array(poly_of_edge, dtype=np.intp)
        self._p_starts = np.array(starts, dtype=np.intp)

    def __len__(self) -> int:
        return len(self.names)

    def signed_distances(self, lat: float, lon: float) -> FloatArray:
        """Metres from (lat, lon) to each zone's border: < 0 inside, > 0 outside."""
        return np.concatenate((self._circle_distances(lat, lon), self._polygon_distances(lat, lon)))

    def classify(self, lat: float, lon: float, accuracy_m: float) -> Placement:
        """Where a fix with this accuracy circle lies relative to the zones (module doc)."""
        if not self.names:
            return Placement.OUTSIDE
        signed = self.signed_distances(lat, lon)
        accuracy = max(0.0, accuracy_m)
        if bool(np.any(signed <= -accuracy)):
            return Placement.INSIDE
        if bool(np.all(signed >= accuracy)):
            return Placement.OUTSIDE
        return Placement.AMBIGUOUS

    def nearest(self, lat: float, lon: float) -> tuple[str, float]:
        """The zone whose border is closest, with the signed distance to it in metres."""
        signed = self.signed_distances(lat, lon)
        index = int(np.argmin(signed))
        return self.names[index], float(signed[index])

    def _circle_distances(self, lat: float, lon: float) -> FloatArray:
        if self._c_r.size == 0:
            return np.empty(0, dtype=np.float64)
        phi = math.radians(lat)
        dphi = self._c_lat - phi
        dlmb = self._c_lon - math.radians(lon)
        a = np.sin(dphi / 2) ** 2 + math.cos(phi) * self._c_cos * np.sin(dlmb / 2) ** 2
        centre = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
        result: FloatArray = centre - self._c_r
        return result

    def _polygon_distances(self, lat: float, lon: float) -> FloatArray:
        if self._p_starts.size == 0:
            return np.empty(0, dtype=np.float64)
        px = EARTH_RADIUS_M * np.radians(lon - self._e_lon0) * self._e_k
        py = EARTH_RADIUS_M * np.radians(lat - self._e_lat0)
        ex = self._e_bx - self._e_ax
        ey = self._e_by - self._e_ay
        length2 = ex * ex + ey * ey
        safe_length2 = np.where(length2 > 0, length2, 1.0)
        t = np.clip(((px - self._e_ax) * ex + (py - self._e_ay) * ey) / safe_length2, 0.0, 1.0)
        t = np.where(length2 > 0, t, 0.0)
        edge_distance = np.hypot(px - (self._e_ax + t * ex), py - (self._e_ay + t * ey))
        nearest = np.minimum.reduceat(edge_distance, self._p_starts)

        # even-odd rule: count edges crossed by a ray from the point towards +x
        straddles = (self._e_ay > py) != (self._e_by > py)
        safe_ey = np.where(ey != 0, ey, 1.0)
        x_cross = self._e_ax + ex * (py - self._e_ay) / safe_ey
        crossings = straddles & (px < x_cross)
        counts = np.bincount(self._e_poly, weights=crossings, minlength=self._p_starts.size)
        inside = (counts.astype(np.int64) % 2) == 1
        result: FloatArray = np.where(inside, -nearest, nearest)
        return result


def _project(lat: float, lon: float, lat0: float, lon0: float, k: float) -> tuple[float, float]:
    return (
        EARTH_RADIUS_M * math.radians(lon - lon0) * k,
        EARTH_RADIUS_M * math.radians(lat - lat0),
    )


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (for tests and details)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, a)))
