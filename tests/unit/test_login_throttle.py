"""The sign-in throttle (dashboard/throttle.py) with an injected clock: per account, per
address, backoff, forgetting, bounded memory, and nothing that tells accounts apart."""

from __future__ import annotations

import pytest

from dashboard.throttle import Backoff, LoginThrottle, Throttled, account_key, address_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock, max_keys: int = 1000) -> LoginThrottle:
    return LoginThrottle(Backoff(free=5, leak_s=300, max_s=900), Backoff(free=20, leak_s=30, max_s=900),
                         max_keys=max_keys, clock=clock)


def fail(throttle: LoginThrottle, user: str, host: str, times: int = 1) -> None:
    for _ in range(times):
        throttle.begin(user, host)  # counted as failed until it succeeds


def wait_of(throttle: LoginThrottle, user: str, host: str) -> float:
    with pytest.raises(Throttled) as refused:
        throttle.begin(user, host)
    return refused.value.retry_after


def test_five_failures_are_free_then_the_account_waits_1_2_4_s_and_the_right_password_waits_too() -> None:
    clock = Clock()
    throttle = make(clock)
    fail(throttle, "ola", "192.0.2.1", 5)
    fail(throttle, "ola", "192.0.2.1")  # the 6th: allowed, and now the account waits
    assert wait_of(throttle, "ola", "192.0.2.7") == pytest.approx(1.0)  # from another address too
    clock.now += 1.0
    fail(throttle, "ola", "192.0.2.1")  # the 7th
    assert wait_of(throttle, "ola", "192.0.2.1") == pytest.approx(2.0, abs=0.1)
    clock.now += 2.0
    fail(throttle, "ola", "192.0.2.1")  # the 8th
    assert wait_of(throttle, "ola", "192.0.2.1") == pytest.approx(4.0, abs=0.1)
    assert Throttled(3.2).retry_after_s == 4 and Throttled(0.01).retry_after_s == 1
    clock.now += 4.0
    attempt = throttle.begin("ola", "192.0.2.1")  # after the backoff: let through
    throttle.succeeded(attempt)
    fail(throttle, "ola", "192.0.2.1", 5)  # a success starts the account afresh
    throttle.begin("ola", "192.0.2.1")


def test_the_wait_is_capped_and_failures_leak_away() -> None:
    clock = Clock()
    throttle = make(clock)
    for _ in range(30):
        try:
            throttle.begin("ola", f"192.0.2.{_}")
        except Throttled as exc:
            clock.now += exc.retry_after
            throttle.begin("ola", f"192.0.2.{_}")
    assert wait_of(throttle, "ola", "192.0.2.99") <= 900
    clock.now += 30 * 300  # long enough for every failure to leak away
    fail(throttle, "ola", "192.0.2.1", 5)


def test_an_address_trying_many_accounts_is_throttled_and_others_are_not() -> None:
    clock = Clock()
    throttle = make(clock)
    for n in range(21):
        throttle.begin(f"user-{n}", "198.51.100.9")
    assert wait_of(throttle, "fresh-user", "198.51.100.9") == pytest.approx(1.0)
    throttle.begin("fresh-user", "198.51.100.10")  # another address is not held up


def test_an_unknown_account_is_throttled_exactly_like_a_known_one() -> None:
    clock = Clock()
    throttle = make(clock)
    fail(throttle, "ola", "192.0.2.1", 6)
    fail(throttle, "no-such-user", "192.0.2.2", 6)
    assert wait_of(throttle, "ola", "192.0.2.1") == wait_of(throttle, "no-such-user", "192.0.2.2")
    assert account_key("Ola") == account_key(" ola ") == "ola"
    assert account_key("x" * 65) == account_key("y" * 500)  # no name that long exists


def test_a_success_takes_back_one_failure_of_the_address_only() -> None:
    clock = Clock()
    throttle = make(clock)
    for n in range(19):
        throttle.begin(f"guess-{n}", "203.0.113.5")
    throttle.succeeded(throttle.begin("mallory", "203.0.113.5"))  # an attacker's own account
    throttle.begin("guess-x", "203.0.113.5")  # the 20th failure: still free
    throttle.begin("guess-y", "203.0.113.5")  # the 21st: now the address waits
    assert wait_of(throttle, "anyone", "203.0.113.5") > 0


def test_concurrent_attempts_count_before_their_hashes_are_done() -> None:
    clock = Clock()
    throttle = make(clock)
    started = [throttle.begin("ola", "192.0.2.1") for _ in range(6)]  # none finished yet
    with pytest.raises(Throttled):
        throttle.begin("ola", "192.0.2.1")
    for attempt in started:
        throttle.not_checked(attempt)  # the worker was full: nothing was checked
    throttle.begin("ola", "192.0.2.1")


def test_memory_is_bounded_however_many_names_and_addresses_are_invented() -> None:
    clock = Clock()
    throttle = make(clock, max_keys=100)
    for n in range(5000):
        throttle.begin(f"invented-{n}", f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
    assert len(throttle.accounts) <= 100 and len(throttle.addresses) <= 100
    assert throttle.evicted > 0
    clock.now += 10 * 3600  # spent keys are dropped before any live one is evicted
    evicted = throttle.evicted
    for n in range(100):
        throttle.begin(f"later-{n}", f"192.0.2.{n}")
    assert throttle.evicted == evicted


def test_ipv6_clients_are_keyed_by_their_64() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_key(None) == "unknown" and address_key("testclient") == "testclient"
