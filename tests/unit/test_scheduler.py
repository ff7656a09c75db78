"""The single timer heap: ordering, re-arming, lazy cancellation, 500,000 devices."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from processors.scheduler import Scheduler

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_fires_in_deadline_order_and_only_when_due() -> None:
    sched: Scheduler[str] = Scheduler()
    sched.arm("b", s(20))
    sched.arm("a", s(10))
    sched.arm("c", s(30))
    assert sched.next_deadline() == s(10)
    assert sched.pop_due(s(9.999)) == []
    assert sched.pop_due(s(20)) == [("a", s(10)), ("b", s(20))]
    assert sched.next_deadline() == s(30)
    assert len(sched) == 1


def test_extending_a_deadline_pushes_nothing() -> None:
    sched: Scheduler[str] = Scheduler()
    sched.arm("dev", s(180))
    for beat in range(1, 100):
        sched.arm("dev", s(beat * 60 + 180))
    assert sched.heap_size == 1
    assert sched.pop_due(s(180)) == []
    assert sched.next_deadline() == s(99 * 60 + 180)
    assert sched.pop_due(s(99 * 60 + 180)) == [("dev", s(99 * 60 + 180))]


def test_moving_a_deadline_earlier_fires_at_the_earlier_time_once() -> None:
    sched: Scheduler[str] = Scheduler()
    sched.arm("door", s(900))
    sched.arm("door", s(60))
    assert sched.pop_due(s(60)) == [("door", s(60))]
    assert sched.pop_due(s(1000)) == []
    assert sched.heap_size == 0


def test_cancelled_keys_never_fire() -> None:
    sched: Scheduler[str] = Scheduler()
    sched.arm("a", s(1))
    sched.arm("b", s(2))
    assert sched.cancel("a")
    assert not sched.cancel("a")
    assert sched.next_deadline() == s(2)
    assert sched.pop_due(s(10)) == [("b", s(2))]
    assert sched.next_deadline() is None


def test_cancel_then_rearm_uses_the_new_deadline() -> None:
    sched: Scheduler[str] = Scheduler()
    sched.arm("k", s(5))
    sched.cancel("k")
    sched.arm("k", s(50))
    assert sched.pop_due(s(10)) == []
    assert sched.pop_due(s(50)) == [("k", s(50))]


def test_stale_entries_are_compacted() -> None:
    sched: Scheduler[int] = Scheduler()
    for key in range(10_000):
        sched.arm(key, s(1000 + key))
    for key in range(10_000):
        sched.arm(key, s(1 + key % 7))  # earlier: one new entry each
    for key in range(0, 10_000, 2):
        sched.cancel(key)
    assert len(sched) == 5_000
    assert sched.heap_size <= 2 * len(sched) + 4096
    fired = sched.pop_due(s(10))
    assert sorted(k for k, _ in fired) == list(range(1, 10_000, 2))


def test_half_a_million_heartbeats_arm_and_fire_correctly() -> None:
    n = 500_000
    sched: Scheduler[str] = Scheduler()
    keys = [f"d-{i}" for i in range(n)]
    first = [s(180 + k) for k in range(60)]  # device i is due at 180 + i % 60 seconds
    sched.arm_many((key, first[i % 60]) for i, key in enumerate(keys))
    assert len(sched) == n
    assert sched.heap_size == n
    assert sched.next_deadline() == s(180)

    # a heartbeat from every even device re-arms it without growing the heap
    later = [s(240 + k) for k in range(60)]
    for i in range(0, n, 2):
        sched.arm(keys[i], later[i % 60])
    assert sched.heap_size == n
    assert sched.deadline_of("d-2") == s(242)
    sched.cancel("d-1")

    fired = sched.pop_due(s(182))
    expected = {f"d-{i}" for i in range(3, n, 2) if i % 60 <= 2}
    assert {key for key, _ in fired} == expected  # exactly the silent (odd) devices due
    assert [d for _, d in fired] == sorted(d for _, d in fired)
    assert len(sched) == n - 1 - len(expected)
    assert sched.next_deadline() == s(183)


def test_equal_deadlines_fire_in_the_order_they_were_armed() -> None:
    sched: Scheduler[str] = Scheduler()
    for key in ("z", "a", "m"):
        sched.arm(key, s(60))
    sched.arm("b", s(30))
    sched.arm("b", s(60))  # later: keeps its first entry, pushed again when it surfaces
    assert [k for k, _ in sched.pop_due(s(60))] == ["z", "a", "m", "b"]


def test_a_freed_slot_reused_by_another_key_does_not_fire_early() -> None:
    sched: Scheduler[str] = Scheduler()
    sched.arm("old", s(10))
    sched.cancel("old")
    sched.arm("new", s(100))  # takes the slot "old" left; its stale entry still surfaces at 10
    assert sched.pop_due(s(50)) == []
    assert sched.deadline_of("new") == s(100)
    assert sched.pop_due(s(100)) == [("new", s(100))]


def test_deadlines_read_back_exactly() -> None:
    sched: Scheduler[str] = Scheduler()
    odd = datetime(2026, 11, 22, 12, 0, 0, 999_999, tzinfo=UTC)
    early = datetime(1969, 7, 20, 20, 17, 40, 1, tzinfo=UTC)  # before the epoch
    sched.arm("odd", odd)
    sched.arm("early", early)
    assert sched.next_deadline() == early
    assert sched.pop_due(odd - timedelta(microseconds=1)) == [("early", early)]
    assert sched.pop_due(odd) == [("odd", odd)]
