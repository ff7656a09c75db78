"""What the dashboard remembers of its users for when PostgreSQL is down
(dashboard/user_cache.py): bounded, never older than its limit, sign-outs kept until
written. Injected clocks; no database."""

from __future__ import annotations

from dashboard.user_cache import RECHECK_S, UserCache
from storage.users_store import UserRow


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def row(name: str, teams: tuple[str, ...] = ("east",)) -> UserRow:
    return UserRow(name, "staff", teams, (), "$argon2id$hash")


def test_a_user_is_known_for_max_age_after_the_database_last_said_so() -> None:
    clock = Clock()
    cache = UserCache(3600, clock=clock)
    cache.remember(row("ola"))
    clock.now += 3000
    cache.remember(row("ola", ("west",)))  # read again: the newest row, the newest time
    clock.now += 3000
    known = cache.known("ola")
    assert known is not None and known.teams == ("west",)
    clock.now += 601
    assert cache.known("ola") is None
    assert cache.known("kari") is None
    cache.remember(row("kari"))
    cache.forget("kari")  # the database says: no such user any more
    assert cache.known("kari") is None


def test_the_users_remembered_are_bounded_least_recent_first() -> None:
    cache = UserCache(3600, max_users=2, clock=Clock())
    for name in ("a", "b", "a", "c"):
        cache.remember(row(name))
    assert [cache.known(n) is not None for n in ("a", "b", "c")] == [True, False, True]


def test_sign_outs_stay_until_written_and_survive_a_reread_of_the_list() -> None:
    clock, wall = Clock(), Clock()
    cache = UserCache(3600, clock=clock, wall=wall)
    cache.revoke("h-here", wall.now + 60, unsaved=True)
    cache.read_revoked([("h-elsewhere", wall.now + 60)])
    assert cache.revoked("h-here") and cache.revoked("h-elsewhere")
    assert cache.unsaved() == {"h-here": wall.now + 60}
    cache.saved(["h-here"])
    assert cache.unsaved() == {}
    assert not cache.revoked_stale()
    clock.now += 61
    assert cache.revoked_stale()


def test_the_sign_out_list_is_bounded_expired_ones_first() -> None:
    wall = Clock()
    cache = UserCache(3600, max_revoked=2, wall=wall, clock=Clock())
    cache.revoke("old", wall.now - 1)
    cache.revoke("soon", wall.now + 10)
    cache.revoke("late", wall.now + 100)
    assert not cache.revoked("old") and cache.revoked("soon") and cache.revoked("late")
    cache.revoke("later", wall.now + 200)
    assert not cache.revoked("soon") and cache.revoked("later")


def test_after_a_failure_the_database_is_tried_again_once_per_recheck() -> None:
    clock = Clock()
    cache = UserCache(3600, clock=clock)
    assert cache.may_try_database()
    cache.trying()
    cache.database_failed()
    assert not cache.may_try_database()
    clock.now += RECHECK_S
    assert cache.may_try_database()
    cache.trying()  # one request tries; the others answer from memory meanwhile
    assert not cache.may_try_database()
    cache.database_answered()
    assert cache.may_try_database() and cache.down_since is None
