"""Safe-zone geometry: circles, GeoJSON polygons, accuracy circles, metre accuracy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from processors.geofence import EARTH_RADIUS_M, Placement, ZoneSet, haversine_m
from trygg.registry import SafeZone

HOME = SafeZone(name="home", lat=59.9139, lon=10.7522, radius_m=300)
# a square of roughly 1.1 km × 0.56 km around Oslo S, GeoJSON order [lon, lat]
SQUARE = SafeZone(
    name="park",
    polygon=[(10.75, 59.91), (10.76, 59.91), (10.76, 59.92), (10.75, 59.92), (10.75, 59.91)],
)


def north_of(lat: float, lon: float, metres: float) -> tuple[float, float]:
    return lat + math.degrees(metres / EARTH_RADIUS_M), lon


def east_of(lat: float, lon: float, metres: float) -> tuple[float, float]:
    return lat, lon + math.degrees(metres / (EARTH_RADIUS_M * math.cos(math.radians(lat))))


@pytest.mark.parametrize(
    ("metres", "accuracy", "placement"),
    [
        (0, 0, Placement.INSIDE),
        (250, 40, Placement.INSIDE),  # 250 + 40 <= 300
        (250, 60, Placement.AMBIGUOUS),  # the circle crosses the border
        (299.5, 0, Placement.INSIDE),  # an exact fix just inside the border
        (300.5, 0, Placement.OUTSIDE),
        (320, 15, Placement.OUTSIDE),  # 320 - 15 >= 300
        (320, 25, Placement.AMBIGUOUS),
        (5000, 1000, Placement.OUTSIDE),
    ],
)
def test_circle_with_accuracy(metres: float, accuracy: float, placement: Placement) -> None:
    zones = ZoneSet([HOME])
    lat, lon = north_of(HOME.lat or 0, HOME.lon or 0, metres)
    assert zones.classify(lat, lon, accuracy) is placement


def test_circle_distance_matches_haversine() -> None:
    zones = ZoneSet([HOME])
    lat, lon = east_of(59.9139, 10.7522, 1234.0)
    [signed] = zones.signed_distances(lat, lon)
    assert signed == pytest.approx(haversine_m(59.9139, 10.7522, lat, lon) - 300, abs=1e-6)
    assert signed == pytest.approx(934.0, abs=1.0)


def test_polygon_inside_outside_and_distance_to_the_nearest_edge() -> None:
    zones = ZoneSet([SQUARE])
    centre = (59.915, 10.755)
    [inside] = zones.signed_distances(*centre)
    # the centre is ~556 m from the south and north edges, ~279 m from the west/east edges
    assert inside == pytest.approx(-279.3, abs=1.0)
    lat, lon = east_of(59.915, 10.76, 100.0)  # 100 m east of the east edge
    [outside] = zones.signed_distances(lat, lon)
    assert outside == pytest.approx(100.0, abs=1.0)
    lat, lon = north_of(59.92, 10.755, 50.0)  # 50 m north of the north edge
    assert zones.signed_distances(lat, lon)[0] == pytest.approx(50.0, abs=1.0)
    assert zones.classify(lat, lon, 40) is Placement.OUTSIDE
    assert zones.classify(lat, lon, 60) is Placement.AMBIGUOUS


def test_polygon_accuracy_circle_must_lie_wholly_inside() -> None:
    zones = ZoneSet([SQUARE])
    lat, lon = east_of(59.915, 10.76, -30.0)  # 30 m inside the east edge
    assert zones.classify(lat, lon, 20) is Placement.INSIDE
    assert zones.classify(lat, lon, 40) is Placement.AMBIGUOUS


def test_closing_point_is_optional() -> None:
    open_ring = SafeZone(name="park", polygon=[(10.75, 59.91), (10.76, 59.91), (10.76, 59.92)])
    closed_ring = SafeZone(name="park", polygon=[(10.75, 59.91), (10.76, 59.91), (10.76, 59.92), (10.75, 59.91)])
    for lat, lon in [(59.912, 10.758), (59.918, 10.752), (59.95, 10.75)]:
        a = ZoneSet([open_ring]).signed_distances(lat, lon)
        b = ZoneSet([closed_ring]).signed_distances(lat, lon)
        assert np.allclose(a, b)


def test_concave_polygon() -> None:
    # an L shape: the notch at the north-east is outside
    shape = SafeZone(
        name="L",
        polygon=[(10.0, 60.0), (10.02, 60.0), (10.02, 60.005), (10.01, 60.005), (10.01, 60.01), (10.0, 60.01)],
    )
    zones = ZoneSet([shape])
    assert zones.classify(60.002, 10.015, 0) is Placement.INSIDE
    assert zones.classify(60.008, 10.005, 0) is Placement.INSIDE
    assert zones.classify(60.008, 10.015, 0) is Placement.OUTSIDE


def test_inside_any_zone_is_inside_outside_all_is_outside() -> None:
    zones = ZoneSet([HOME, SQUARE])
    assert zones.names == ("home", "park")
    assert zones.classify(59.915, 10.755, 10) is Placement.INSIDE  # in the park only
    assert zones.classify(59.9139, 10.7522, 10) is Placement.INSIDE  # home (and park)
    assert zones.classify(59.95, 10.70, 10) is Placement.OUTSIDE
    name, distance = zones.nearest(59.93, 10.755)
    assert name == "park" and distance == pytest.approx(1111.9, abs=2.0)


def test_far_away_positions_are_outside() -> None:
    zones = ZoneSet([HOME, SQUARE])
    assert zones.classify(63.43, 10.39, 50) is Placement.OUTSIDE  # Trondheim
    assert zones.classify(-33.9, 151.2, 50) is Placement.OUTSIDE  # Sydney
