"""Who the simulated residents are: care profiles, their devices, homes and teams.

A `Profile` is data: which devices a resident of that kind has and how likely each daily
happening is. `build_residents(seed, n)` turns profiles into concrete `SimResident`s
(id, name, team, home, safe zones, consents, devices); the same seed always gives the same
people, and resident *i* does not depend on how many others there are.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Final, Literal

from trygg.contract import DeviceKind

#: Rooms a resident moves between; motion sensors sit in some of them.
ROOMS: Final = ("bedroom", "bathroom", "kitchen", "living_room", "hallway")

#: Heartbeat period per device kind, seconds (registry `heartbeat_s`). The alarm unit is
#: supervised tightly (docs/contract.md#4-rules-and-alerts default 60 s); battery sensors report less often.
HEARTBEAT_S: Final[dict[DeviceKind, int]] = {
    DeviceKind.ALARM_UNIT: 60,
    DeviceKind.AUTO_ALARM: 300,
    DeviceKind.FALL_SENSOR: 300,
    DeviceKind.SMOKE_DETECTOR: 900,
    DeviceKind.DOOR_SENSOR: 900,
    DeviceKind.DOOR_LOCK: 900,
    DeviceKind.MOTION_SENSOR: 900,
    DeviceKind.GPS_TRACKER: 300,
    DeviceKind.PHONE: 600,
}

#: Battery drain in percent per day; None = mains powered (no `battery_pct`).
DRAIN_PER_DAY: Final[dict[DeviceKind, float | None]] = {
    DeviceKind.ALARM_UNIT: None,
    DeviceKind.AUTO_ALARM: 0.6,
    DeviceKind.FALL_SENSOR: 1.2,
    DeviceKind.SMOKE_DETECTOR: 0.05,
    DeviceKind.DOOR_SENSOR: 0.1,
    DeviceKind.DOOR_LOCK: 0.4,
    DeviceKind.MOTION_SENSOR: 0.15,
    DeviceKind.GPS_TRACKER: 45.0,  # charged at night
    DeviceKind.PHONE: 35.0,  # charged at night
}

RECHARGEABLE: Final = frozenset({DeviceKind.GPS_TRACKER, DeviceKind.PHONE})

_SUFFIX: Final[dict[DeviceKind, str]] = {
    DeviceKind.ALARM_UNIT: "alarm",
    DeviceKind.AUTO_ALARM: "auto",
    DeviceKind.FALL_SENSOR: "fall",
    DeviceKind.SMOKE_DETECTOR: "smoke",
    DeviceKind.DOOR_SENSOR: "door",
    DeviceKind.DOOR_LOCK: "lock",
    DeviceKind.MOTION_SENSOR: "motion",
    DeviceKind.GPS_TRACKER: "gps",
    DeviceKind.PHONE: "phone",
}


@dataclass(frozen=True, slots=True)
class TeamArea:
    """A home-care team and the district its residents live in."""

    id: str
    name: str
    lat: float
    lon: float
    radius_m: float
    staff: tuple[str, ...]
    escalate_to: str | None = "alarm-centre"


#: The standard teams of fleets, the demo registry and scenario fragments.
TEAMS: Final = (
    TeamArea("east", "Hjemmetjenesten Øst", 59.9396, 10.8450, 2500, ("ola", "marit")),
    TeamArea("west", "Hjemmetjenesten Vest", 60.3700, 5.3500, 2000, ("ingrid", "lars")),
    TeamArea("north", "Hjemmetjenesten Nord", 59.9500, 10.7700, 2000, ("nils", "hilde")),
)
ALARM_CENTRE: Final = TeamArea(
    "alarm-centre", "Trygghetsalarmsentralen", 59.9139, 10.7522, 0, ("operator",), None
)


def team_area(team_id: str) -> TeamArea:
    for area in (*TEAMS, ALARM_CENTRE):
        if area.id == team_id:
            return area
    raise KeyError(team_id)


@dataclass(frozen=True, slots=True)
class Profile:
    """A kind of resident: devices and how often things happen (probabilities per day)."""

    name: str
    description: str
    devices: tuple[tuple[DeviceKind, str | None], ...]  # (kind, room for motion sensors)
    zone_radius_m: float = 300
    park_zone: bool = False
    location_basis: Literal["consent", "vedtak"] | None = None
    outings: tuple[float, float] = (0.5, 0.0)  # P(first outing), P(second outing)
    outing_minutes: tuple[float, float] = (30, 90)
    walk_reach_m: tuple[float, float] = (150, 800)
    staff_visits: tuple[int, int] = (0, 0)
    night_wander: float = 0.0
    fall: float = 0.0
    false_fall_share: float = 0.3
    button_real: float = 0.01
    button_mistake: float = 0.04
    auto_alarm: float = 0.0
    auto_source: str = "other"
    smoke: float = 0.005
    forgets_charger: float = 0.1
    night: tuple[str, str] = ("23:00", "06:00")  # the registry night window

    def kinds(self) -> frozenset[DeviceKind]:
        return frozenset(kind for kind, _ in self.devices)


def _motion(*rooms: str) -> tuple[tuple[DeviceKind, str | None], ...]:
    return tuple((DeviceKind.MOTION_SENSOR, room) for room in rooms)


_A = DeviceKind
PROFILES: Final[dict[str, Profile]] = {
    p.name: p
    for p in (
        Profile(
            "dementia_alone",
            "lives alone with dementia: GPS tracker, door sensor and lock, motion sensors",
            ((_A.ALARM_UNIT, None), (_A.GPS_TRACKER, None), (_A.DOOR_SENSOR, None),
             (_A.DOOR_LOCK, None), (_A.SMOKE_DETECTOR, None),
             *_motion("bedroom", "kitchen", "hallway")),
            zone_radius_m=250, park_zone=True, location_basis="vedtak",
            outings=(0.6, 0.1), outing_minutes=(25, 70), walk_reach_m=(150, 1200),
            staff_visits=(2, 3), night_wander=0.08, fall=0.01, smoke=0.015,
            night=("22:00", "07:00"),
        ),
        Profile(
            "frail_fall",
            "frail, at risk of falling: fall sensor, motion sensors, door lock for home care",
            ((_A.ALARM_UNIT, None), (_A.FALL_SENSOR, None), (_A.DOOR_LOCK, None),
             (_A.SMOKE_DETECTOR, None), *_motion("bedroom", "bathroom")),
            outings=(0.3, 0.0), outing_minutes=(20, 45),
            staff_visits=(2, 4), fall=0.06, false_fall_share=0.35,
            button_real=0.02, button_mistake=0.05, smoke=0.003,
        ),
        Profile(
            "active_senior",
            "active, only the safety alarm",
            ((_A.ALARM_UNIT, None),),
            outings=(0.95, 0.5), outing_minutes=(60, 150),
            button_real=0.005, button_mistake=0.05,
        ),
        Profile(
            "active_phone",
            "active, safety alarm and a phone app that shares position",
            ((_A.ALARM_UNIT, None), (_A.PHONE, None)),
            zone_radius_m=1500, location_basis="consent",
            outings=(0.95, 0.6), outing_minutes=(45, 150), walk_reach_m=(400, 2600),
            button_real=0.005, button_mistake=0.04,
        ),
        Profile(
            "epilepsy",
            "epilepsy: self-triggering alarm in the bed, motion sensor in the bedroom",
            ((_A.ALARM_UNIT, None), (_A.AUTO_ALARM, None), *_motion("bedroom")),
            outings=(0.7, 0.2), outing_minutes=(30, 120), staff_visits=(0, 1),
            auto_alarm=0.04, auto_source="epilepsy", button_mistake=0.03,
        ),
        Profile(
            "full_package",
            "the whole trygghetspakke: one device of every kind",
            ((_A.ALARM_UNIT, None), (_A.AUTO_ALARM, None), (_A.FALL_SENSOR, None),
             (_A.SMOKE_DETECTOR, None), (_A.DOOR_SENSOR, None), (_A.DOOR_LOCK, None),
             (_A.GPS_TRACKER, None), (_A.PHONE, None),
             *_motion("bedroom", "bathroom", "kitchen", "living_room")),
            zone_radius_m=300, park_zone=True, location_basis="vedtak",
            outings=(0.5, 0.1), outing_minutes=(20, 60), walk_reach_m=(150, 900),
            staff_visits=(2, 3), night_wander=0.03, fall=0.03, auto_alarm=0.03,
            auto_source="bed", button_real=0.02, button_mistake=0.05, smoke=0.01,
        ),
    )
}

#: How a fleet is mixed (after the first residents, which cover every profile once).
FLEET_MIX: Final[dict[str, float]] = {
    "dementia_alone": 0.25,
    "frail_fall": 0.25,
    "active_senior": 0.15,
    "active_phone": 0.1,
    "epilepsy": 0.1,
    "full_package": 0.15,
}


@dataclass(frozen=True, slots=True)
class SimDevice:
    id: str
    kind: DeviceKind
    heartbeat_s: int
    room: str | None = None

    @property
    def drain_per_day(self) -> float | None:
        return DRAIN_PER_DAY[self.kind]


@dataclass(frozen=True, slots=True)
class SimResident:
    """One simulated person, with everything the registry and the behaviour need."""

    index: int
    id: str
    name: str
    team: str
    profile: Profile
    home: tuple[float, float]  # lat, lon
    devices: tuple[SimDevice, ...]
    park: tuple[tuple[float, float], ...] | None = None  # closed ring of [lon, lat]
    consents: tuple[bool, bool, bool] = (False, False, False)  # research, status, location
    valid_until: str = "2027-06-30"
    timezone: str = "Europe/Oslo"
    night: tuple[str, str] = ("23:00", "06:00")
    staff: tuple[str, ...] = field(default=())

    def device(self, kind: DeviceKind) -> SimDevice | None:
        for dev in self.devices:
            if dev.kind is kind:
                return dev
        return None

    def motion_rooms(self) -> dict[str, SimDevice]:
        return {d.room: d for d in self.devices if d.kind is DeviceKind.MOTION_SENSOR and d.room}

    def locators(self) -> tuple[SimDevice, ...]:
        return tuple(d for d in self.devices if d.kind in (DeviceKind.GPS_TRACKER, DeviceKind.PHONE))


_FIRST = ("Kari", "Ola", "Ingrid", "Astrid", "Bjørn", "Arne", "Solveig", "Gunnar", "Liv", "Odd",
          "Randi", "Per", "Marit", "Knut", "Berit", "Terje", "Else", "Jan", "Aud", "Svein",
          "Inger", "Reidar", "Gerd", "Harald", "Turid", "Kjell", "Sigrid", "Einar", "Ragnhild",
          "Leif")
_LAST = ("Nordmann", "Hansen", "Johansen", "Olsen", "Larsen", "Andersen", "Pedersen", "Nilsen",
         "Kristiansen", "Jensen", "Karlsen", "Berg", "Haugen", "Hagen", "Johannessen", "Dahl",
         "Lie", "Bakken", "Solberg", "Strand", "Moen", "Eide", "Brekke", "Lunde", "Vik")


def offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    """The point `north_m`, `east_m` metres from (lat, lon) (flat earth, fine for a town)."""
    return (lat + north_m / 111_320.0, lon + east_m / (111_320.0 * math.cos(math.radians(lat))))


def park_polygon(home: tuple[float, float], bearing: float, radius_m: float) -> tuple[
    tuple[float, float], ...
]:
    """A square park next to the home zone, as a closed GeoJSON ring of [lon, lat]."""
    centre_m = radius_m + 150
    cn, ce = centre_m * math.cos(bearing), centre_m * math.sin(bearing)
    ring = []
    for dn, de in ((-200, -200), (-200, 200), (200, 200), (200, -200), (-200, -200)):
        lat, lon = offset(home[0], home[1], cn + dn, ce + de)
        ring.append((round(lon, 6), round(lat, 6)))
    return tuple(ring)


def device_id(resident_id: str, kind: DeviceKind, room: str | None = None) -> str:
    """`d-<resident core>-<kind>[-<room>]`, e.g. `d-0007-motion-living_room` for `r-0007`."""
    core = resident_id.removeprefix("r-")
    suffix = _SUFFIX[kind] + (f"-{room}" if room else "")
    return f"d-{core}-{suffix}"


def make_resident(
    resident_id: str,
    profile: Profile | str,
    *,
    team: str = "east",
    home: tuple[float, float] | None = None,
    name: str | None = None,
    index: int = 0,
    rng: random.Random | None = None,
    consents: tuple[bool, bool, bool] = (True, True, True),
) -> SimResident:
    """One resident of a profile; with no `rng` every choice takes its plain default."""
    prof = PROFILES[profile] if isinstance(profile, str) else profile
    area = team_area(team)
    if home is None:
        if rng is None:
            home = (area.lat, area.lon)
        else:
            dist = area.radius_m * math.sqrt(rng.random())
            angle = rng.uniform(0, 2 * math.pi)
            home = offset(area.lat, area.lon, dist * math.cos(angle), dist * math.sin(angle))
    home = (round(home[0], 6), round(home[1], 6))
    if name is None:
        name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}" if rng else "Kari Nordmann"
    park = None
    if prof.park_zone:
        bearing = rng.uniform(0, 2 * math.pi) if rng else math.pi / 4
        park = park_polygon(home, bearing, prof.zone_radius_m)
    devices = tuple(
        SimDevice(device_id(resident_id, kind, room), kind, HEARTBEAT_S[kind], room)
        for kind, room in prof.devices
    )
    return SimResident(
        index=index, id=resident_id, name=name, team=area.id, profile=prof, home=home,
        devices=devices, park=park, consents=consents, staff=area.staff, night=prof.night,
    )


def resident_rng(seed: int, index: int, purpose: str = "who") -> random.Random:
    """The random stream of one resident for one purpose (independent of fleet size)."""
    return random.Random(f"trygg-sim/{seed}/{index}/{purpose}")


def build_residents(seed: int, count: int) -> list[SimResident]:
    """`count` residents for a seed: the first ones cover every profile, then a mix."""
    names = list(PROFILES)
    out = []
    for i in range(count):
        rng = resident_rng(seed, i)
        prof = names[i] if i < len(names) else rng.choices(list(FLEET_MIX), weights=list(FLEET_MIX.values()))[0]
        consents = (rng.random() < 0.7, rng.random() < 0.8, rng.random() < 0.3)
        team = TEAMS[i % len(TEAMS)].id
        out.append(
            make_resident(f"r-{i + 1:04d}", prof, team=team, index=i, rng=rng, consents=consents)
        )
    return out


__all__ = [
    "ALARM_CENTRE",
    "FLEET_MIX",
    "HEARTBEAT_S",
    "PROFILES",
    "ROOMS",
    "TEAMS",
    "Profile",
    "SimDevice",
    "SimResident",
    "TeamArea",
    "build_residents",
    "device_id",
    "make_resident",
    "offset",
    "park_polygon",
    "resident_rng",
    "team_area",
]
