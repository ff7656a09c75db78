"""`trygg up --demo`: a living municipality that shows the whole alert life cycle at once.

Besides the simulated fleet (whose incidents come at their natural, rare pace), the demo
director plays a short script of incidents on real demo residents, repeated every few
minutes with other residents, and a simulated home-care worker takes and resolves the
alerts the script raised a little after their escalation timeout, so within the first
minute one sees:

- t+5 s   an alarm button press (high) → escalates to the alarm centre at t+25 s →
          taken by staff at t+32 s → resolved at t+45 s; in the first round four more
          residents press theirs, 4 s apart, and are handled the same way (so that the
          research page has alarms of five residents to show response times for);
- t+10 s  a fall (high), cancelled by the resident pressing cancel at t+18 s;
- t+15 s  smoke (critical) → escalated at t+25 s → taken at t+30 s → resolved at t+50 s.

The worker acts only on alerts raised by the script's own events, and reads each alert
again before it takes or resolves it: an alert from the fleet, one a person published
(the README's resident `YOURS` is never in the script), and one a person has taken are
left to the people at the console.

Escalation timeouts are SHORTENED in demo mode (`DEMO_TIMEOUTS`: critical 10 s, high 20 s,
medium 60 s, instead of 30, 60 and 300 s) unless set explicitly with `TRYGG_ESCALATE_*`;
`trygg up --demo` prints the ones in force (`timeouts_line`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import uuid
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from alerts import AlertError, AlertNotFound
from mqtt import Client, Protocol
from trygg.alert import Alert
from trygg.contract import AlertKind, AlertState, DeviceKind, events_topic
from trygg.logging import get_logger
from trygg.registry import Registry, Resident
from trygg.settings import DEMO_SECRET, Settings

if TYPE_CHECKING:
    from composition.app import Services
    from storage import Pool

log = get_logger(__name__)

#: Every demo user's password (demo mode only; `trygg users add` sets real ones).
DEMO_PASSWORD = "trygg-demo"
#: In the data directory: the demo's session secret (`session_secret`).
SESSION_SECRET_FILE = "session-secret"
#: Shortened for the demo, so that escalation shows within a minute (defaults: 30, 60, 300 s).
DEMO_TIMEOUTS = {"escalate_critical_s": 10.0, "escalate_high_s": 20.0, "escalate_medium_s": 60.0}
ROUND_S = 180.0
#: residents pressing the alarm button in the first round (`cast`), seconds apart
FIRST_ROUND_ALARMS = 5
EXTRA_ALARM_GAP_S = 4.0
STAFF = "demo-staff"
#: The README's resident (team east, alarm unit d-0049-alarm): never in the script, so an
#: event published for it by hand raises an alert nobody simulated takes.
YOURS = "r-0049"
#: scripted event ids remembered (a round publishes five)
SCRIPT_MEMORY = 500
#: alerts for a technician, not a visit: the worker leaves them to the console
TECHNICIAN_KINDS = frozenset({AlertKind.DEVICE_OFFLINE, AlertKind.BATTERY_LOW})
#: after opening: (seconds to take it, seconds more to resolve it)
STAFF_PACE = {"alarm": (27.0, 13.0), "smoke": (15.0, 20.0), "fall": (25.0, 15.0)}
OTHER_PACE = (40.0, 20.0)


def demo_settings(settings: Settings) -> Settings:
    """Shorter escalation, so it shows within a minute (explicit settings win), and the
    data directory's own session secret unless one is set (`session_secret`)."""
    update: dict[str, Any] = {k: v for k, v in DEMO_TIMEOUTS.items() if f"TRYGG_{k.upper()}" not in os.environ}
    if settings.session_secret.get_secret_value() == DEMO_SECRET:
        update["session_secret"] = SecretStr(session_secret(settings.data_dir))
    return settings.model_copy(update=update)


def timeouts_line(settings: Settings) -> str:
    """What the demo prints about its escalation timeouts (those in force)."""
    return (f"Demo escalation: after {settings.escalate_critical_s:g} s (critical), "
            f"{settings.escalate_high_s:g} s (high), {settings.escalate_medium_s:g} s (medium) without "
            "someone taking it; shortened for the demo (otherwise 30, 60, 300 s; TRYGG_ESCALATE_*)")


def session_secret(data_dir: Path) -> str:
    """The secret the demo signs sessions with: made once per data directory and kept in
    `session-secret` (mode 0600), so demo users stay signed in across restarts, and not
    the default everyone can read in the source. Never printed or logged."""
    path = data_dir / SESSION_SECRET_FILE
    with contextlib.suppress(FileNotFoundError):
        kept = path.read_text(encoding="ascii").strip()
        if len(kept) >= 32:
            return kept
    data_dir.mkdir(parents=True, exist_ok=True)
    made = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(f"{made}\n")
    path.chmod(0o600)  # a file left by something else keeps no wider mode
    return made


@dataclass(frozen=True)
class Step:
    at: float
    kind: DeviceKind
    type: str
    data: dict[str, Any] | None = None


SCRIPT: list[tuple[str, list[Step]]] = [
    ("button", [Step(5, DeviceKind.ALARM_UNIT, "alarm.button")]),
    ("fall", [Step(10, DeviceKind.FALL_SENSOR, "fall.detected", {"confidence": 0.91}),
              Step(18, DeviceKind.ALARM_UNIT, "alarm.cancel")]),
    ("smoke", [Step(15, DeviceKind.SMOKE_DETECTOR, "smoke.detected"),
               Step(40, DeviceKind.SMOKE_DETECTOR, "smoke.cleared")]),
]


def _device(resident: Resident, kind: DeviceKind) -> str | None:
    return next((d.id for d in resident.devices if d.device_kind is kind), None)


def cast(registry: Registry, round_no: int) -> list[tuple[Resident, list[Step]]]:
    """Residents for this round's incidents: ones with the devices each one needs, never
    `YOURS` (the README's resident for publishing an event by hand). The first round's
    alarm button is pressed by `FIRST_ROUND_ALARMS` residents who consent to research
    (`EXTRA_ALARM_GAP_S` apart), so that the research page's response times, shown only
    for at least 5 residents (docs/research.md), have alarms to show within minutes."""
    chosen: list[tuple[Resident, list[Step]]] = []
    used: set[str] = {YOURS}
    for name, steps in SCRIPT:
        fits = [r for r in registry.residents
                if r.id not in used and all(_device(r, s.kind) for s in steps)]
        if not fits:
            continue
        if name == "button" and round_no == 0:
            consenting = [r for r in fits if r.consents.research][:FIRST_ROUND_ALARMS]
            for n, resident in enumerate(consenting):
                used.add(resident.id)
                chosen.append((resident, [replace(s, at=s.at + n * EXTRA_ALARM_GAP_S) for s in steps]))
            continue
        resident = fits[round_no % len(fits)]
        used.add(resident.id)
        chosen.append((resident, steps))
    return chosen


class Script:
    """The event ids the director published (the newest `SCRIPT_MEMORY`): the simulated
    worker acts only on alerts one of them raised, so an alert from the fleet or from
    a person's own `mosquitto_pub` is left to the people at the console."""

    def __init__(self) -> None:
        self._ids: deque[str] = deque(maxlen=SCRIPT_MEMORY)

    def note(self, event_id: str) -> None:
        self._ids.append(event_id)

    def raised(self, alert: Alert) -> bool:
        return alert.trigger.get("event_id") in self._ids


def worker_takes(alert: Alert, script: Script) -> bool:
    """Whether the simulated worker takes `alert` now: one the script raised, still open
    (not taken by a person meanwhile), and a visit, not a technician's job."""
    return (alert.state == AlertState.OPEN and alert.kind not in TECHNICIAN_KINDS
            and script.raised(alert))


def worker_resolves(alert: Alert) -> bool:
    """Whether the simulated worker resolves `alert` now: only one it took itself and
    nobody has closed."""
    return alert.state == AlertState.ACKNOWLEDGED and alert.acknowledged_by == STAFF


async def incidents(services: Services, script: Script) -> None:
    """Publish the script as the residents' own devices would, round after round."""
    settings = services.settings
    # Anonymous, as the demo fleet's simulated devices connect.
    address = replace(services.broker.address, username=None, password=None)
    async with Client(address, f"trygg-demo-{uuid.uuid4().hex[:6]}", protocol=Protocol.V311) as client:
        round_no = 0
        while True:
            started = asyncio.get_running_loop().time()
            plan = sorted(((step.at, resident, step) for resident, steps in cast(services.registry, round_no)
                           for step in steps), key=lambda p: p[0])
            for at, resident, step in plan:
                await asyncio.sleep(max(0.0, started + at - asyncio.get_running_loop().time()))
                device = _device(resident, step.kind)
                assert device is not None
                doc: dict[str, Any] = {"id": f"demo-{uuid.uuid4().hex[:12]}",
                                       "ts": datetime.now(UTC).isoformat(), "type": step.type}
                if step.data:
                    doc["data"] = step.data
                script.note(doc["id"])
                client.publish(events_topic(settings.mqtt_prefix, device), json.dumps(doc).encode(), qos=1)
            round_no += 1
            await asyncio.sleep(max(0.0, started + ROUND_S - asyncio.get_running_loop().time()))


async def staff(services: Services, script: Script) -> None:
    """A home-care worker who takes each alert the script raised after a while, then
    resolves it; the alert is read again before each step (`worker_takes`,
    `worker_resolves`), so one a person took or closed meanwhile is theirs."""
    pending: set[asyncio.Task[None]] = set()

    def now(alert_id: str) -> Alert | None:
        try:
            return services.alerts.get(alert_id)
        except AlertNotFound:
            return None

    async def handle(alert_id: str, kind: str) -> None:
        take, finish = STAFF_PACE.get(kind, OTHER_PACE)
        await asyncio.sleep(take)
        alert = now(alert_id)
        if alert is None or not worker_takes(alert, script):
            return
        with contextlib.suppress(AlertError):  # taken in the same instant: theirs
            services.alerts.acknowledge(alert_id, STAFF, "På vei (demo)")
        await asyncio.sleep(finish)
        alert = now(alert_id)
        if alert is None or not worker_resolves(alert):
            return
        with contextlib.suppress(AlertError):
            services.alerts.resolve(alert_id, STAFF, "Besøkt, alt i orden (demo)")

    subscription = services.alerts.subscribe()
    seen: set[str] = set()
    try:
        while True:
            alert = await subscription.get()
            if alert is None or alert.alert_id in seen or not worker_takes(alert, script):
                continue
            seen.add(alert.alert_id)
            task = asyncio.create_task(handle(alert.alert_id, alert.kind))
            pending.add(task)
            task.add_done_callback(pending.discard)
    finally:
        services.alerts.unsubscribe(subscription)
        for task in pending:
            task.cancel()


def set_demo_passwords(pool: Pool, registry: Registry) -> list[str]:
    """Give the demo registry's users the demo password; returns 'name (role …)' lines.
    A user who has it already keeps the stored hash: a new one (a new salt) would sign
    them out, since a session is bound to the hash it was issued under (dashboard/auth.py)."""
    from dashboard.auth import hash_password, verify_password
    from storage.users_store import get_user, upsert_user

    hashed = hash_password(DEMO_PASSWORD)
    checked: dict[str | None, bool] = {None: False}  # every user was given the same hash
    lines = []
    with pool.connection() as conn:
        for user in registry.users:
            row = get_user(conn, user.username)
            stored = row.password_hash if row is not None else None
            if stored not in checked:
                checked[stored] = verify_password(stored, DEMO_PASSWORD)
            kept = checked[stored]
            upsert_user(conn, user.username, user.role, user.teams, user.residents, None if kept else hashed)
            where = ", ".join(user.teams or user.residents)
            lines.append(f"{user.username} ({user.role}{', ' + where if where else ''})")
    return lines


def demo_tasks(services: Services) -> list[Coroutine[Any, Any, None]]:
    from composition.demo_insights import simulated_past

    script = Script()
    return [incidents(services, script), staff(services, script), simulated_past(services)]
