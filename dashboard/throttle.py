"""How often one account and one client address may try a password (docs/security.md
"Sign-in").

Without a limit, a script tried 132 passwords in 21 s. Each key (the account named,
the client's address) has a score: one per failed attempt, leaking away at one per
`leak_s` seconds. Up to `free` failures cost nothing; each one after that makes the key
wait `base_s`, doubling per failure, at most `max_s` (1 s, 2 s, 4 s … 15 min). While a
key waits, every attempt for it is refused at once with the seconds left (HTTP 429 and
`Retry-After`), the right password too, and without checking it: a refused attempt
neither costs argon2 work nor counts as a new failure.

- An attempt is counted as failed when it starts (`begin`), so 64 guesses sent at once
  are counted as 64, not as none until the first hash is done. A success takes that
  back: the account's score is cleared, the address's loses the one failure (an
  address shared by many staff behind one NAT is not reset by one of them signing in,
  so an attacker cannot reset it with an account of their own). An attempt that could
  not be checked (the database or the hashing worker was busy) is taken back whole.
- The account is keyed by the name as typed, lower case, whether or not it exists: an
  unknown name is throttled exactly as a known one, so throttling tells nothing about
  which accounts exist.
- Memory is bounded: each table holds at most `max_keys` keys (an attacker can invent
  names and addresses). Keys whose score has leaked away are dropped first; past the
  bound the key that failed longest ago is dropped, and counted.

Sans-I/O: the clock is passed in, so tests run in microseconds (tests/unit/test_login_throttle.py).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

#: Where a name longer than any username lands (none of them can be an account).
_LONG_NAME: Final = "\x00long"
_MAX_NAME: Final = 64


@dataclass(frozen=True, slots=True)
class Backoff:
    """How one kind of key is throttled."""

    free: int
    leak_s: float
    base_s: float = 1.0
    max_s: float = 900.0

    def delay(self, score: float) -> float:
        """Seconds to wait after a failure that brought the score to `score`."""
        if score <= self.free:
            return 0.0
        return min(self.base_s * 2 ** (score - self.free - 1), self.max_s)


@dataclass(slots=True)
class _Record:
    score: float
    last: float  # when the score was last raised


class _Table:
    """Scores of one kind of key, oldest failure first."""

    def __init__(self, backoff: Backoff, max_keys: int) -> None:
        self.backoff = backoff
        self.max_keys = max_keys
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._records)

    def _score(self, record: _Record, now: float) -> float:
        return max(0.0, record.score - max(0.0, now - record.last) / self.backoff.leak_s)

    def _spent(self, record: _Record, now: float) -> bool:
        return self._score(record, now) == 0 and now >= record.last + self.backoff.delay(record.score)

    def wait(self, key: str, now: float) -> float:
        """Seconds before `key` may try again (0: now)."""
        record = self._records.get(key)
        if record is None:
            return 0.0
        return max(0.0, record.last + self.backoff.delay(record.score) - now)

    def fail(self, key: str, now: float) -> None:
        record = self._records.get(key)
        if record is None:
            self._make_room(now)
            self._records[key] = _Record(1.0, now)
            return
        record.score = self._score(record, now) + 1
        record.last = now
        self._records.move_to_end(key)

    def take_back(self, key: str, now: float) -> None:
        """Undo one failure of `key` (its wait shrinks with it)."""
        record = self._records.get(key)
        if record is not None:
            record.score = max(0.0, record.score - 1)
            if self._spent(record, now):
                del self._records[key]

    def clear(self, key: str) -> None:
        self._records.pop(key, None)

    def _make_room(self, now: float) -> None:
        records = self._records
        while records:  # the oldest first: they have leaked the longest
            key, record = next(iter(records.items()))
            if not self._spent(record, now):
                break
            del records[key]
        while len(records) >= self.max_keys:
            records.popitem(last=False)
            self.evicted += 1


def account_key(username: str) -> str:
    """The throttling key of the account named (lower case; every over-long name is one key)."""
    name = username.strip().lower()
    return name if len(name) <= _MAX_NAME else _LONG_NAME


def address_key(host: str | None) -> str:
    """The throttling key of a client address: IPv4 as is, IPv6 by its /64 (one
    household or server gets a whole /64, so its single addresses cost nothing)."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass(frozen=True, slots=True)
class Attempt:
    """A sign-in attempt let through, counted as failed until `succeeded`."""

    account: str
    address: str


class Throttled(Exception):
    """The account or the address must wait `retry_after` more seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many sign-in attempts; wait {retry_after:.0f} s")
        self.retry_after = retry_after

    @property
    def retry_after_s(self) -> int:
        """Whole seconds for the `Retry-After` header (at least 1)."""
        return max(1, math.ceil(self.retry_after))


class LoginThrottle:
    """Per-account and per-address backoff of sign-in attempts."""

    def __init__(self, accounts: Backoff, addresses: Backoff, max_keys: int = 20_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.accounts = _Table(accounts, max_keys)
        self.addresses = _Table(addresses, max_keys)
        self._clock = clock

    def begin(self, username: str, host: str | None) -> Attempt:
        """Let an attempt through and count it as failed, or raise `Throttled`."""
        now = self._clock()
        attempt = Attempt(account_key(username), address_key(host))
        wait = max(self.accounts.wait(attempt.account, now), self.addresses.wait(attempt.address, now))
        if wait > 0:
            raise Throttled(wait)
        self.accounts.fail(attempt.account, now)
        self.addresses.fail(attempt.address, now)
        return attempt

    def address_wait(self, host: str | None) -> float:
        """Seconds the address must still wait (checked before the request's form is read)."""
        return self.addresses.wait(address_key(host), self._clock())

    def succeeded(self, attempt: Attempt) -> None:
        """The password was right: the account starts afresh, the address loses this failure."""
        self.accounts.clear(attempt.account)
        self.addresses.take_back(attempt.address, self._clock())

    def not_checked(self, attempt: Attempt) -> None:
        """The password could not be checked (busy, database down): the attempt does not count."""
        now = self._clock()
        self.accounts.take_back(attempt.account, now)
        self.addresses.take_back(attempt.address, now)

    @property
    def evicted(self) -> int:
        return self.accounts.evicted + self.addresses.evicted


__all__ = ["Attempt", "Backoff", "LoginThrottle", "Throttled", "account_key", "address_key"]
