"""The registry document of docs/contract.md#3-registry-file: teams, residents, devices, users, consents.

`parse_registry` validates a whole document (YAML or JSON) and either returns a
`Registry` or raises `RegistryError` listing every problem with its path, e.g.
``residents[3].devices[1].kind: unknown kind 'smoke'``. It checks the document's size,
nesting and aliases first (trygg/registry_limits.py); the dashboard runs it in a child
process (dashboard/routes_registry.py), away from the alarm path's GIL.
"""

from __future__ import annotations

import ctypes
import re
import sys
from collections.abc import Callable, Hashable
from datetime import date, time
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, Self, TypeVar, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trygg.contract import DeviceKind, Role, storable_text, valid_id
from trygg.registry_limits import DocumentLimits, LimitExceeded, check_size, check_yaml, load_yaml

_T = TypeVar("_T")

Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


#: string fields whose values repeat across a registry (interned, see `_Model._compact`)
_REPEATED = frozenset({"kind", "role", "team", "timezone", "start", "end", "escalate_to", "room", "reason"})
#: number fields whose values repeat (positions do not: they are not kept in `_SHARED`)
_REPEATED_NUMBERS = frozenset({"heartbeat_s", "radius_m"})
#: (model class, fields given) → the one "fields set" its instances share
_FIELDS_SETS: dict[tuple[type, frozenset[str]], set[str]] = {}
#: small value models and numbers by value: equal ones are one shared object
_SHARED: dict[Hashable, Any] = {}
_SHARED_MAX = 100_000


def _shared(value: _T, key: Hashable) -> _T:
    found = _SHARED.get(key)
    if found is not None:
        return cast(_T, found)
    if len(_SHARED) >= _SHARED_MAX:
        _SHARED.clear()
    _SHARED[key] = value
    return value


class _Model(BaseModel):
    """Frozen registry models, compacted as they are validated (docs/contract.md#9-performance-budgets: 100,000
    residents × 5 devices).

    pydantic keeps per instance the set of fields that were given (216 bytes); these
    models are frozen, so nothing ever changes that set and instances given the same
    fields share one. Repeated strings (kinds, team ids, time zones) are interned and
    equal numbers are one object. Doing this as each model is built, rather than in a
    pass afterwards, frees the replaced objects at once, so their memory is reused by
    the next model instead of being left as holes that the process keeps.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="after")
    def _compact(self) -> Self:
        fields_set = self.__pydantic_fields_set__
        key = (type(self), frozenset(fields_set))
        shared = _FIELDS_SETS.get(key)
        if shared is None:
            shared = _FIELDS_SETS[key] = set(fields_set)
        object.__setattr__(self, "__pydantic_fields_set__", shared)
        values = self.__dict__
        for name, value in values.items():
            if type(value) is str and name in _REPEATED:
                values[name] = sys.intern(value)
            elif type(value) is float and name in _REPEATED_NUMBERS:
                values[name] = _shared(value, (float, value))
        return self


def _member_of(kinds: type[StrEnum], what: str, value: str) -> str:
    """`value` if it is one of `kinds`' values (kept a str: the models store text)."""
    if value not in kinds.__members__.values():
        raise ValueError(f"unknown {what} {value!r}")
    return value


class _Value(_Model):
    """A small value model that many residents have alike: equal instances are one."""

    @model_validator(mode="after")
    def _one_of_equals(self) -> Self:
        return _shared(self, (type(self), tuple(self.__dict__.values()), frozenset(self.__pydantic_fields_set__)))


class Team(_Model):
    id: Id
    name: str = Field(min_length=1, max_length=200)
    escalate_to: Id | None = None
    webhook_url: str | None = None


class NightWindow(_Value):
    start: str = "23:00"
    end: str = "06:00"

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _HHMM.match(value):
            raise ValueError(f"{value!r} is not a time HH:MM")
        return value

    def start_time(self) -> time:
        return time.fromisoformat(self.start)

    def end_time(self) -> time:
        return time.fromisoformat(self.end)


class ResidentSettings(_Value):
    wander_minutes: float = Field(default=10, gt=0, le=24 * 60)
    door_open_minutes: float = Field(default=15, gt=0, le=24 * 60)
    inactivity_hours: float = Field(default=12, gt=0, le=24 * 7)


class SafeZone(_Model):
    name: str = Field(min_length=1, max_length=100)
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    radius_m: float | None = Field(default=None, gt=0)
    polygon: list[tuple[float, float]] | None = None

    @model_validator(mode="after")
    def _circle_or_polygon(self) -> SafeZone:
        circle = (self.lat, self.lon, self.radius_m)
        if self.polygon is not None:
            if any(v is not None for v in circle):
                raise ValueError("a safe zone is either a circle (lat, lon, radius_m) or a polygon")
            if len(self.polygon) < 3:
                raise ValueError("a polygon needs at least 3 points [lon, lat]")
            for lon, lat in self.polygon:
                if not (-180 <= lon <= 180 and -90 <= lat <= 90):
                    raise ValueError(f"polygon point [{lon}, {lat}] is not [lon, lat]")
        elif any(v is None for v in circle):
            raise ValueError("a circle safe zone needs lat, lon and radius_m")
        return self


class Consents(_Value):
    research: bool = False
    relatives_status: bool = False
    relatives_location: bool = False
    #: relatives may see the resident's "changes worth a look" (docs/insights.md)
    relatives_insights: bool = False


class LocationBasis(_Value):
    kind: Literal["consent", "vedtak"]
    valid_until: date | None = None

    def valid_on(self, day: date) -> bool:
        return self.valid_until is None or day <= self.valid_until


#: A phone number as people write it: digits, spaces, `+`, `-`, `(`, `)`.
_PHONE = r"^\(?\+?[0-9][0-9 ()-]{2,31}$"


def _storable(value: str | None) -> str | None:
    if value is not None and not storable_text(value):
        raise ValueError("holds characters that cannot be stored (NUL or a lone UTF-16 surrogate)")
    return value


class Access(_Model):
    """How staff get in (docs/contract.md "The resident card"): shown on the resident
    card to staff of the resident's team, never to relatives or researchers."""

    key_box: str | None = Field(default=None, max_length=200, description="where the key box is, and its code")
    door_lock: str | None = Field(default=None, max_length=500, description="the electronic lock: how to open it")
    notes: str | None = Field(default=None, max_length=1000, description="a dog, stairs, the entrance at the back")

    _text = field_validator("key_box", "door_lock", "notes")(_storable)


class Contact(_Model):
    """A contact person: a relative, a neighbour, a guardian."""

    name: str = Field(min_length=1, max_length=200)
    relation: str | None = Field(default=None, max_length=100, description="daughter, neighbour, guardian")
    phone: str = Field(pattern=_PHONE, description="digits, spaces, +, -, ( and )")
    notes: str | None = Field(default=None, max_length=500, description="when to call")

    _text = field_validator("name", "relation", "notes")(_storable)


class Device(_Model):
    id: Id
    kind: str
    heartbeat_s: float = Field(default=60, gt=0, le=7 * 24 * 3600)
    #: where a motion or door sensor is ("bathroom", "bedroom", "kitchen"); a motion event's
    #: `data.room` wins when it has one (docs/insights.md)
    room: str | None = Field(default=None, min_length=1, max_length=64)

    _room = field_validator("room")(_storable)

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        return _member_of(DeviceKind, "kind", value)

    @property
    def device_kind(self) -> DeviceKind:
        return DeviceKind(self.kind)


class Absence(_Model):
    """Days the resident is away from home (hospital, travel, respite care): they enter
    no baseline and raise no notice (docs/insights.md). `start` and `end` are included."""

    start: date
    end: date
    reason: Literal["hospital", "travel", "respite", "other"] = "other"

    @model_validator(mode="after")
    def _ordered(self) -> Absence:
        if self.end < self.start:
            raise ValueError("end is before start")
        return self

    def covers(self, day: date) -> bool:
        return self.start <= day <= self.end


class Resident(_Model):
    id: Id
    name: str = Field(min_length=1, max_length=200)
    team: Id
    timezone: str = "Europe/Oslo"
    night: NightWindow = NightWindow()
    settings: ResidentSettings = ResidentSettings()
    safe_zones: list[SafeZone] = []
    consents: Consents = Consents()
    location_basis: LocationBasis | None = None
    devices: list[Device] = []
    address: str | None = Field(default=None, max_length=300)
    access: Access | None = None
    contacts: list[Contact] = Field(default=[], max_length=10)
    absences: list[Absence] = Field(default=[], max_length=100)

    _address = field_validator("address")(_storable)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def away_on(self, day: date) -> bool:
        """The registry says the resident is away that day (an absence covers it)."""
        return any(a.covers(day) for a in self.absences)


class User(_Model):
    username: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.@-]{1,64}$")]
    role: str
    teams: list[Id] = []
    residents: list[Id] = []

    @field_validator("role")
    @classmethod
    def _role(cls, value: str) -> str:
        return _member_of(Role, "role", value)


class Registry(_Model):
    teams: list[Team] = []
    residents: list[Resident] = []
    users: list[User] = []

    def device_index(self) -> dict[str, tuple[Resident, Device]]:
        return {d.id: (r, d) for r in self.residents for d in r.devices}


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(document)"


def _cross_checks(reg: Registry) -> list[str]:
    """References between parts of the document: ids unique, teams and residents exist."""
    errors: list[str] = []
    team_ids: dict[str, int] = {}
    for i, team in enumerate(reg.teams):
        if team.id in team_ids:
            errors.append(f"teams[{i}].id: duplicate team id {team.id!r}")
        team_ids[team.id] = i
    for i, team in enumerate(reg.teams):
        if team.escalate_to is not None and team.escalate_to not in team_ids:
            errors.append(f"teams[{i}].escalate_to: unknown team {team.escalate_to!r}")
        if team.escalate_to == team.id:
            errors.append(f"teams[{i}].escalate_to: a team cannot escalate to itself")
    resident_ids: set[str] = set()
    device_ids: set[str] = set()
    for i, res in enumerate(reg.residents):
        if res.id in resident_ids:
            errors.append(f"residents[{i}].id: duplicate resident id {res.id!r}")
        resident_ids.add(res.id)
        if res.team not in team_ids:
            errors.append(f"residents[{i}].team: unknown team {res.team!r}")
        for j, dev in enumerate(res.devices):
            if dev.id in device_ids:
                errors.append(f"residents[{i}].devices[{j}].id: duplicate device id {dev.id!r}")
            device_ids.add(dev.id)
    usernames: set[str] = set()
    for i, user in enumerate(reg.users):
        if user.username in usernames:
            errors.append(f"users[{i}].username: duplicate user {user.username!r}")
        usernames.add(user.username)
        for j, team_id in enumerate(user.teams):
            if team_id not in team_ids:
                errors.append(f"users[{i}].teams[{j}]: unknown team {team_id!r}")
        for j, res_id in enumerate(user.residents):
            if res_id not in resident_ids:
                errors.append(f"users[{i}].residents[{j}]: unknown resident {res_id!r}")
    return errors


class RegistryError(ValueError):
    """A registry document that does not validate; `errors` lists `path: message` lines."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors

    def __reduce__(self) -> tuple[Any, ...]:  # crosses a process boundary (trygg/isolated.py)
        return type(self), (self.errors,)


class RegistryLimitError(RegistryError):
    """A document beyond one of the limits of trygg/registry_limits.py, refused before
    it was parsed; `limit` names it, `status` is 413 (size) or 422 (structure)."""

    def __init__(self, limit: str, message: str, status: int = 422) -> None:
        super().__init__([f"(document): {message}"])
        self.limit = limit
        self.message = message
        self.status = status

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.limit, self.message, self.status)


#: Error lines kept of a document with more (a list of a million wrong items).
MAX_ERRORS: Final = 1_000


def _errors(exc: ValidationError) -> RegistryError:
    errors = []
    if exc.error_count() > MAX_ERRORS:
        errors.append(f"(document): {exc.error_count():,} errors; the first {MAX_ERRORS:,} follow")
    for err in exc.errors()[:MAX_ERRORS]:
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        errors.append(f"{_loc(err['loc'])}: {msg}")
    return RegistryError(errors)


def validate_registry(doc: Any) -> Registry:
    """Validate a parsed document as a whole; raises RegistryError with every error."""
    if not isinstance(doc, dict):
        raise RegistryError(["(document): the registry must be a mapping with teams and residents"])
    try:
        reg = Registry.model_validate(doc)
    except ValidationError as exc:
        raise _errors(exc) from None
    return _checked(reg)


def validate_registry_json(text: str | bytes) -> Registry:
    """Like `validate_registry`, straight from JSON text (no intermediate Python objects:
    the stored registry of a large municipality is validated this way at every start)."""
    try:
        reg = Registry.model_validate_json(text)
    except ValidationError as exc:
        raise _errors(exc) from None
    return _checked(reg)


def _checked(reg: Registry) -> Registry:
    cross = _cross_checks(reg)
    if cross:
        raise RegistryError(cross)
    release_free_memory()
    return reg


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's ``malloc_trim``), after
    a large one-off piece of work at start-up.

    Validating a large document parses it on the C heap first (~240 MiB for 100,000
    residents); glibc keeps what was freed for later use, and a process that validated
    its registry once at start-up would carry it for its whole life. Elsewhere a no-op.
    """
    global _malloc_trim
    if _malloc_trim is None:
        _malloc_trim = _find_malloc_trim()
    _malloc_trim(0)


def _find_malloc_trim() -> Callable[[int], object]:
    try:
        return cast(Callable[[int], object], ctypes.CDLL(None).malloc_trim)
    except (OSError, AttributeError):  # not glibc
        return lambda _pad: 0


_malloc_trim: Callable[[int], object] | None = None


def parse_registry(text: str | bytes, limits: DocumentLimits | None = None) -> Registry:
    """Parse YAML or JSON within `limits` (trygg/registry_limits.py) and validate;
    raises RegistryError (RegistryLimitError for a document beyond a limit).

    A document that starts with ``{`` is read as JSON first (pydantic, several times
    faster than YAML); if it is not JSON it is read as YAML, as is every other one."""
    limits = limits or DocumentLimits()
    try:
        check_size(len(text), limits)
        if text[:4096].lstrip()[:1] in ("{", b"{"):
            reg = _from_json(text)
            if reg is not None:
                return reg
        check_yaml(text, limits)
        doc = load_yaml(text)
    except LimitExceeded as exc:
        raise RegistryLimitError(exc.limit, exc.message, exc.status) from None
    except yaml.YAMLError as exc:
        raise RegistryError([f"(document): not valid YAML or JSON ({exc})"]) from None
    except RecursionError:  # past the depth limit, which check_yaml refuses first
        raise RegistryLimitError("max_depth", "mappings and lists are nested too deep") from None
    return validate_registry(doc)


def _from_json(text: str | bytes) -> Registry | None:
    """The registry if `text` is JSON; None if it is not (then it may be YAML)."""
    try:
        reg = Registry.model_validate_json(text)
    except ValidationError as exc:
        if exc.error_count() == 1 and exc.errors(include_url=False)[0]["type"] == "json_invalid":
            return None
        raise _errors(exc) from None
    return _checked(reg)


def dump_registry(reg: Registry) -> dict[str, Any]:
    return reg.model_dump(mode="json", exclude_none=True)


__all__ = [
    "Absence",
    "Access",
    "Consents",
    "Contact",
    "Device",
    "LocationBasis",
    "NightWindow",
    "Registry",
    "RegistryError",
    "RegistryLimitError",
    "Resident",
    "ResidentSettings",
    "SafeZone",
    "Team",
    "User",
    "dump_registry",
    "parse_registry",
    "release_free_memory",
    "valid_id",
    "validate_registry",
    "validate_registry_json",
]
