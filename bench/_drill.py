"""The fault drill of the cluster, shared by `bench/cluster` and tests/test_cluster_faults.py.

While the fleet publishes, `Drill` kills one thing at a time with `kill -9` — a NATS
node, the Trygg instance owning an alarm's resident, the PostgreSQL primary (the standby
promoted) — pressing alarms through each, and measures the gap: from the kill to the
first alarm pressed after it that reached the staff handheld. `count()` then stops the
fleet until everything is acknowledged and stored and counts, from PostgreSQL and the
handheld: every acknowledged event stored once, every acknowledged press one alert id
delivered to the team topic, no `device_offline` of a device that kept publishing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench._cluster import LocalCluster, TryggInstance, log_line
from bench._fleet import Fleet, Handheld, Press, Pressers, stored_counts, wait_stored
from cluster.layout import MQTT_STREAM, OWNERS_BUCKET, RESIDENT_PARTITIONS, RESIDENTS_STREAM, resident_partition

#: how long after a window's last press its alerts may still arrive
DELIVERY_WAIT_S = 30.0
#: how long a count waits for the fleet's publishes to be acknowledged
FLUSH_S = 60.0
#: the streams whose leader the killed NATS node is made to be
WORST_TO_LOSE = (f"KV_{OWNERS_BUCKET}", MQTT_STREAM, RESIDENTS_STREAM)

__all__ = ["Count", "Drill", "Fault"]


@dataclass
class Fault:
    name: str
    presses: list[Press]
    #: kill → the first alarm pressed after the kill reaching the handheld (None: none did)
    gap_s: float | None
    #: the slowest press of the window (press → handheld), None if one never arrived
    worst_s: float | None
    undelivered: int
    #: the owner kill: was the alert open at the kill escalated by the new owner?
    escalated: bool | None = None

    def line(self) -> str:
        gap = "none delivered" if self.gap_s is None else f"{self.gap_s:.2f} s"
        worst = "-" if self.worst_s is None else f"{self.worst_s:.2f} s"
        extra = "" if self.escalated is None else f", open alert escalated by the new owner: {self.escalated}"
        return (f"{self.name}: gap {gap} (kill → next alarm delivered), slowest press {worst}, "
                f"{len(self.presses)} presses, {self.undelivered} undelivered{extra}")


@dataclass
class Count:
    published: int
    stored_rows: int
    stored_distinct: int
    presses: int  # acknowledged presses
    press_rows: int
    press_distinct: int
    without_alert: list[str]  # acknowledged presses with no alert delivered or stored
    alerts_twice: list[str]  # presses that opened more than one alert id
    offline_alerts: int
    flushed: bool
    #: Trygg instances that ended by themselves so far (restarted by the harness)
    exits: list[tuple[str, int]] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return max(0, self.published - self.stored_distinct) + max(0, self.presses - self.press_distinct) \
            + len(self.without_alert)

    @property
    def duplicated(self) -> int:
        return (self.stored_rows - self.stored_distinct) + (self.press_rows - self.press_distinct)

    def line(self) -> str:
        return (f"published {self.published:,} acknowledged events, stored {self.stored_distinct:,} "
                f"({self.stored_rows - self.stored_distinct} duplicate rows); presses {self.presses} acknowledged, "
                f"{self.press_distinct} stored, {len(self.without_alert)} without an alert, "
                f"{len(self.alerts_twice)} with two alert ids; device_offline of publishing devices: "
                f"{self.offline_alerts}" + ("" if self.flushed else "; NOT every publish acknowledged")
                + (f"; instances that ended by themselves: {self.exits}" if self.exits else ""))


@dataclass
class Drill:
    local: LocalCluster
    fleet: Fleet
    pressers: Pressers
    handheld: Handheld
    rate: float | None
    window_s: float = 15.0
    press_every_s: float = 0.25
    #: the escalation of a high alert (TRYGG_ESCALATE_HIGH_S of the instances)
    escalate_s: float = 20.0
    progress: Callable[[str], None] = log_line
    faults: list[Fault] = field(default_factory=list)

    # -- pressing -----------------------------------------------------------------------------
    def press_for(self, seconds: float, every_s: float, *, partition: int | None = None, tag: str = "p",
                  report_s: float = 5.0) -> list[Press]:
        """A press every `every_s` for `seconds` (residents of `partition` if given)."""
        presses: list[Press] = []
        t0 = time.perf_counter()
        next_report = t0 + report_s
        for n in range(max(1, int(seconds / every_s))):
            presses.append(self.pressers.press(partition, tag))
            due = t0 + (n + 1) * every_s
            now = time.perf_counter()
            if now >= next_report:
                delivered = sum(self.handheld.delivered(p.event_id) is not None for p in presses)
                self.progress(f"  {now - t0:5.1f} s  fleet published {self.fleet.published:>9,}  "
                              f"presses {len(presses)} ({delivered} delivered)")
                next_report += report_s
            time.sleep(max(0.0, due - time.perf_counter()))
        return presses

    def latencies_ms(self, presses: list[Press]) -> list[float]:
        out = []
        for p in presses:
            at = self.handheld.delivered(p.event_id)
            if at is not None:
                out.append((at - p.sent) * 1000)
        return out

    def warm_up(self, timeout_s: float = 120) -> None:
        """One press per resident partition, until each reached the handheld: every
        partition has an owner and the way from device to handheld is open."""
        deadline = time.monotonic() + timeout_s
        for p in range(RESIDENT_PARTITIONS):
            press = self.pressers.press(p, "warm")
            missing = self.handheld.wait([press.event_id], max(1.0, deadline - time.monotonic()))
            if missing:
                raise RuntimeError(f"no alert for a press in resident partition {p} within {timeout_s:.0f} s")

    # -- faults --------------------------------------------------------------------------------
    def fault(self, name: str, kill: Callable[[], None], *, partition: int | None = None) -> Fault:
        self.progress(f"kill -9: {name}")
        killed_at = time.perf_counter()
        kill()
        presses = self.press_for(self.window_s, self.press_every_s, partition=partition, tag=f"f{len(self.faults)}")
        self.handheld.wait([p.event_id for p in presses], DELIVERY_WAIT_S)
        arrivals = [(p, self.handheld.delivered(p.event_id)) for p in presses]
        delivered = [at for _, at in arrivals if at is not None]
        gap = min(delivered) - killed_at if delivered else None
        undelivered = sum(at is None for _, at in arrivals)
        worst = None if undelivered else max(at - p.sent for p, at in arrivals if at is not None)
        fault = Fault(name, presses, gap, worst, undelivered)
        self.faults.append(fault)
        self.progress(fault.line())
        if undelivered:
            self.progress("  not on the handheld: " + ", ".join(
                f"{p.event_id} (resident {p.resident_id}, partition {resident_partition(p.resident_id)})"
                for p, at in arrivals if at is None))
        return fault

    def kill_nats_node(self, i: int = 1) -> Fault:
        """Kill node i once it leads the owners' bucket and the streams on the alarm path
        (the worst node to lose: every lease expires, device messages and hand-ons wait
        for new leaders; which node leads them is otherwise chance)."""
        node = self.local.nats.nodes[i]
        leaders = self.local.nats.lead_from(i, WORST_TO_LOSE)
        self.progress(f"leaders before the kill: {', '.join(f'{k} {v}' for k, v in leaders.items())}")
        fault = self.fault(f"NATS node {node.name}", lambda: self.local.nats.kill(i))
        self.progress(f"restarting NATS node {node.name}")
        self.local.nats.start(i)
        self.local.nats.wait_ready()
        return fault

    def kill_owner(self) -> Fault:
        """Press for a resident, wait until staff have the alert (left unacknowledged),
        kill -9 the instance owning the resident's partition, press more residents of
        that partition, and check that the alert open at the kill is escalated (by the
        new owner: its timer was armed by the dead one)."""
        first = self.pressers.press(None, "owner")
        if self.handheld.wait([first.event_id], DELIVERY_WAIT_S):
            raise RuntimeError("the press before the owner kill never reached the handheld")
        partition = resident_partition(first.resident_id)
        owner, deadline = None, time.monotonic() + DELIVERY_WAIT_S
        while owner is None and time.monotonic() < deadline:  # a lease may be between owners a moment
            owner = self.local.owner_of(first.resident_id)
            if owner is None:
                time.sleep(0.5)
        if owner is None:
            raise RuntimeError(f"nobody owns rules.{partition} for {DELIVERY_WAIT_S:.0f} s")
        alert_id = min(self.handheld.alert_ids[first.event_id])  # one, unless counted as twice later
        opened = time.monotonic()
        fault = self.fault(f"Trygg {owner.name} (owner of rules.{partition})", owner.kill, partition=partition)
        deadline = opened + self.escalate_s + DELIVERY_WAIT_S
        while alert_id not in self.handheld.escalated and time.monotonic() < deadline:
            time.sleep(0.1)
        fault.escalated = alert_id in self.handheld.escalated
        self.progress(f"the alert open at the kill ({alert_id}) escalated: {fault.escalated}")
        self.restart(owner)
        return fault

    def restart(self, instance: TryggInstance) -> None:
        self.progress(f"restarting Trygg {instance.name}")
        instance.start()
        instance.wait_running()

    def kill_postgres_primary(self) -> Fault:
        pg = self.local.pg

        def kill() -> None:
            pg.kill_primary()
            pg.promote()

        return self.fault("PostgreSQL primary (standby promoted)", kill)

    # -- counting ------------------------------------------------------------------------------
    def count(self, timeout_s: float = 60, *, resume: bool = True) -> Count:
        """Stop the fleet until all it published is acknowledged, wait until PostgreSQL
        holds it (at most `timeout_s`), count, and let the fleet go on. The devices are
        silent meanwhile (at most FLUSH_S + timeout_s + DELIVERY_WAIT_S), well within their
        silence limit (bench/_fleet.py FLEET_HEARTBEAT_S)."""
        flushed = self.fleet.stop(FLUSH_S)
        deadline = time.monotonic() + 60
        while self.pressers.presser.unacked() and time.monotonic() < deadline:
            time.sleep(0.1)
        presses = [p for p in self.pressers.presser.presses.values() if p.acked]
        self.handheld.wait([p.event_id for p in presses], DELIVERY_WAIT_S)
        published = self.fleet.published

        def progress(stored: object) -> None:
            self.progress(f"  waiting for PostgreSQL: {getattr(stored, 'fleet_distinct', 0):,} of {published:,}")

        wait_stored(self.local.pg.url(), published, len(presses), timeout_s, progress)
        deadline = time.monotonic() + DELIVERY_WAIT_S  # alerts are written after they reached the handheld
        while True:
            stored = stored_counts(self.local.pg.url())
            if all(p.event_id in stored.alerts_per_press for p in presses) or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        without, twice = [], []
        for p in presses:
            ids = self.handheld.alert_ids.get(p.event_id, set())
            in_db = stored.alerts_per_press.get(p.event_id, 0)
            if not ids or not in_db:
                without.append(p.event_id)
            if len(ids) > 1 or in_db > 1:
                twice.append(p.event_id)
        count = Count(published, stored.fleet_rows, stored.fleet_distinct, len(presses), stored.press_rows,
                      stored.press_distinct, without, twice, stored.offline_alerts, flushed, list(self.local.exits))
        self.progress(count.line())
        if resume:
            self.fleet.start(self.rate)
        return count
