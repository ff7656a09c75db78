"""Scripted scenarios: a registry fragment, timed steps and the alerts staff should end up with.

A scenario file (`simulators/scenarios/*.yaml`) reads::

    name: fall_then_cancel
    description: ...
    start: "10:15"            # local time of day in the resident's time zone
    duration: 600             # seconds; default: last step + 60
    heartbeats: true          # add a heartbeat per device each heartbeat_s (default)
    resident: {id: r-sc-fall, profile: frail_fall, team: east}   # or `registry:` (teams optional)
    steps:
      - {at: 0, device: d-sc-fall-fall, type: fall.detected, data: {confidence: 0.91}}
      - {at: 25, device: d-sc-fall-alarm, type: alarm.cancel}
      - {at: 40, resend: s2}                        # the same message again (same id)
      - {at: 300, ts_at: 120, device: ..., type: ...}  # published at 300 s, happened at 120 s
    expect:
      - {kind: fall, state: cancelled}             # optional: event_count

Steps are data (`load_scenario(path).steps`), so a test can feed them through the pipeline
with a clock it controls: `scenario.messages(t0)` gives the `SimMessage`s (topic, payload,
simulated publication time) and `scenario.events(t0)` the parsed `trygg.contract.Event`s.
Step ids default to `s1`, `s2`, ... in file order; heartbeats are `h1`, `h2`, ... per device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Final
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from simulators.errors import ScenarioError
from simulators.profiles import PROFILES, make_resident
from simulators.registry_gen import resident_doc, teams_doc
from simulators.wire import SimMessage, TsFormatter, encode_event, run_tag, to_ms
from trygg.contract import (
    SOURCE_KINDS,
    AlertKind,
    AlertState,
    DeviceKind,
    Event,
    EventType,
    InvalidMessage,
    check_data,
    parse_event,
)
from trygg.registry import Registry, RegistryError, validate_registry

SCENARIO_DIR: Final = Path(__file__).with_name("scenarios")
_HEARTBEAT_DATA: Final = {"battery_pct": 80}


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _StepDoc(_Doc):
    at: float = Field(ge=0)
    device: str | None = None
    type: EventType | None = None
    data: dict[str, Any] = {}
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")] | None = None
    ts_at: float | None = Field(default=None, ge=0)
    resend: str | None = None


class _ExpectDoc(_Doc):
    kind: AlertKind
    state: AlertState
    event_count: int | None = Field(default=None, ge=1)


class _ResidentRef(_Doc):
    id: str
    profile: str
    team: str = "east"
    name: str | None = None
    home: tuple[float, float] | None = None  # lat, lon

    @field_validator("profile")
    @classmethod
    def _profile(cls, value: str) -> str:
        if value not in PROFILES:
            raise ValueError(f"unknown profile {value!r} (one of {', '.join(PROFILES)})")
        return value


class _ScenarioDoc(_Doc):
    name: str | None = None
    description: str = ""
    start: str = "12:00"
    duration: float | None = Field(default=None, gt=0)
    heartbeats: bool = True
    registry: dict[str, Any] | None = None
    resident: _ResidentRef | None = None
    steps: list[_StepDoc] = Field(min_length=1)
    expect: list[_ExpectDoc] = []

    @field_validator("start")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        time.fromisoformat(value)
        return value


@dataclass(frozen=True, slots=True)
class Step:
    """One message of a scenario, `at` seconds after its start."""

    at: float
    device: str
    type: EventType
    id: str
    data: dict[str, Any] = field(default_factory=dict)
    ts_at: float | None = None  # when it happened, if earlier than `at` (a late message)
    duplicate: bool = False  # a re-send of an earlier step (same id, same payload)
    generated: bool = False  # a heartbeat added by `heartbeats: true`

    @property
    def happened_at(self) -> float:
        return self.at if self.ts_at is None else self.ts_at


@dataclass(frozen=True, slots=True)
class Expectation:
    """An alert as a staff member sees it at the end: its kind and final state."""

    kind: AlertKind
    state: AlertState
    event_count: int | None = None


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    start_time: time  # local time of day at which the scenario starts
    duration_s: float
    registry: Registry
    steps: tuple[Step, ...]  # ordered by `at`; heartbeats included unless switched off
    expect: tuple[Expectation, ...]
    path: Path | None = None

    @property
    def zone(self) -> ZoneInfo:
        return self.registry.residents[0].zone

    def start_on(self, day: date) -> datetime:
        """The scenario's start on a local calendar day (an aware datetime)."""
        return datetime.combine(day, self.start_time, self.zone)

    def latest_start(self, now: datetime) -> datetime:
        """The latest start whose whole scenario lies before `now` (for live playing: every
        `ts` is then in the recent past, which the gateway accepts)."""
        day = now.astimezone(self.zone).date()
        for back in range(3):
            t0 = self.start_on(day - timedelta(days=back))
            if t0 + timedelta(seconds=self.duration_s) <= now:
                return t0
        raise AssertionError("unreachable: a scenario lasts less than a day")

    def messages(self, t0: datetime, run: str | None = None) -> list[SimMessage]:
        """The scenario's messages when it starts at `t0`, in order of publication.

        Event ids are `{run}-{step id}`; `run` defaults to a tag of `t0`, so two plays at
        different times are never taken for re-sends by the gateway's de-duplication.
        """
        tag = run if run is not None else run_tag(to_ms(t0))
        base = to_ms(t0)
        index = self.registry.device_index()
        formatters: dict[str, TsFormatter] = {}
        out = []
        for step in self.steps:
            zone_name = index[step.device][0].timezone
            fmt = formatters.setdefault(zone_name, TsFormatter(ZoneInfo(zone_name)))
            ts = base + round(step.happened_at * 1000)
            payload = encode_event(f"{tag}-{step.id}", fmt(ts), step.type, step.data)
            out.append(SimMessage(base + round(step.at * 1000), step.device, "events", payload,
                                  step.type.value, ts, duplicate=step.duplicate))
        return out

    def events(self, t0: datetime, run: str | None = None) -> list[Event]:
        """The messages parsed as the gateway parses them (received at publication time),
        with `resident_id` filled in; re-sent duplicates included."""
        index = self.registry.device_index()
        out = []
        for msg in self.messages(t0, run):
            event = parse_event(msg.device_id, msg.payload, msg.at())
            event.resident_id = index[msg.device_id][0].id
            out.append(event)
        return out


def list_scenarios() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


def scenario_path(name_or_path: str | Path) -> Path:
    """A scenario by name (`night_wandering`) or by path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    candidate = SCENARIO_DIR / f"{name_or_path}.yaml"
    if not candidate.exists():
        raise ScenarioError(candidate, [f"no scenario {name_or_path!r}; there are: "
                                        + ", ".join(list_scenarios())])
    return candidate


def _registry(doc: _ScenarioDoc, errors: list[str]) -> Registry | None:
    if (doc.registry is None) == (doc.resident is None):
        errors.append("registry: give either `registry:` or `resident:`, not both or neither")
        return None
    if doc.resident is not None:
        ref = doc.resident
        res = make_resident(ref.id, ref.profile, team=ref.team, home=ref.home, name=ref.name)
        raw: dict[str, Any] = {"teams": teams_doc(), "residents": [resident_doc(res)]}
    else:
        assert doc.registry is not None
        raw = {"teams": teams_doc(), **doc.registry}
    try:
        return validate_registry(raw)
    except RegistryError as exc:
        errors.extend(f"registry.{e}" for e in exc.errors)
        return None


def _steps(doc: _ScenarioDoc, reg: Registry, errors: list[str]) -> list[Step]:
    index = reg.device_index()
    steps: list[Step] = []
    by_id: dict[str, Step] = {}
    for i, s in enumerate(doc.steps):
        where = f"steps[{i}]"
        if s.resend is not None:
            original = by_id.get(s.resend)
            if original is None or s.device or s.type or s.data or s.id or s.ts_at is not None:
                errors.append(f"{where}.resend: names an earlier step id and stands alone "
                              "(only `at` beside it)")
                continue
            steps.append(Step(s.at, original.device, original.type, original.id, original.data,
                              original.happened_at, duplicate=True))
            continue
        if s.device is None or s.type is None:
            errors.append(f"{where}: needs `device` and `type` (or `resend`)")
            continue
        if s.device not in index:
            errors.append(f"{where}.device: {s.device!r} is not in the scenario's registry")
            continue
        kind = index[s.device][1].device_kind
        if kind not in SOURCE_KINDS[s.type]:
            errors.append(f"{where}.type: a {kind} cannot send {s.type}")
        try:
            check_data(s.type, s.data)
        except InvalidMessage as exc:
            errors.append(f"{where}.data: {exc.detail}")
        if s.ts_at is not None and s.ts_at > s.at:
            errors.append(f"{where}.ts_at: a message cannot be published before it happened")
        step = Step(s.at, s.device, s.type, s.id or f"s{i + 1}", dict(s.data), s.ts_at)
        if step.id in by_id:
            errors.append(f"{where}.id: duplicate step id {step.id!r} (use `resend`)")
        by_id[step.id] = step
        steps.append(step)
    return steps


def _heartbeats(reg: Registry, duration: float) -> list[Step]:
    out = []
    for res in reg.residents:
        for dev in res.devices:
            data = {} if dev.device_kind is DeviceKind.ALARM_UNIT else dict(_HEARTBEAT_DATA)
            k, at = 1, 0.0
            while at <= duration:
                out.append(Step(at, dev.id, EventType.HEARTBEAT, f"h{k}", data, generated=True))
                k, at = k + 1, at + dev.heartbeat_s
    return out


def parse_scenario(text: str, path: Path | str = "<scenario>") -> Scenario:
    """Validate a scenario document; raises ScenarioError listing every problem."""
    try:
        raw = yaml.safe_load(text)
        doc = _ScenarioDoc.model_validate(raw)
    except yaml.YAMLError as exc:
        raise ScenarioError(path, [f"(document): not valid YAML ({exc})"]) from None
    except ValidationError as exc:
        msgs = [".".join(str(p) for p in e["loc"]) + ": " + e["msg"].removeprefix("Value error, ")
                for e in exc.errors()]
        raise ScenarioError(path, msgs) from None
    errors: list[str] = []
    reg = _registry(doc, errors)
    if reg is None:
        raise ScenarioError(path, errors)
    steps = _steps(doc, reg, errors)
    if errors:
        raise ScenarioError(path, errors)
    duration = doc.duration if doc.duration is not None else max(s.at for s in steps) + 60
    if max(s.at for s in steps) > duration:
        raise ScenarioError(path, ["duration: shorter than the last step"])
    if doc.heartbeats:
        steps.extend(_heartbeats(reg, duration))
    steps.sort(key=lambda s: s.at)  # stable: file order among equal times
    name = doc.name or Path(str(path)).stem
    expect = tuple(Expectation(e.kind, e.state, e.event_count) for e in doc.expect)
    return Scenario(name, doc.description.strip(), time.fromisoformat(doc.start), duration, reg,
                    tuple(steps), expect, Path(path) if isinstance(path, Path) else None)


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load a scenario by name (`fall_then_cancel`) or path."""
    path = scenario_path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(path, [f"cannot read: {exc.strerror}"]) from None
    return parse_scenario(text, path)


__all__ = [
    "SCENARIO_DIR",
    "Expectation",
    "Scenario",
    "Step",
    "list_scenarios",
    "load_scenario",
    "parse_scenario",
    "scenario_path",
]
