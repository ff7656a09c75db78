"""Properties of ingest against a real PostgreSQL (hypothesis): whatever bytes or JSON
document a device sends, the gateway's parse-and-validate path (`Validator.accept` with a
registry) either gives a valid event that PostgreSQL stores and gives back unchanged (id,
type, ts, data), or refuses it with `InvalidMessage`, and then the dead letter the gateway
makes of it is stored too. Never any other exception, and PostgreSQL never refuses what
was validated (issue 13: lone surrogates, NaN, 1e400 and +20:00 got through, and storage
refused them later).

One database for all examples; each example's event is removed again before the next.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.dead_letters import DeadLetterLimits, DeadLetters
from gateway.validate import Validator
from storage import EventStore, Pool
from tests.registry_documents import ingest_registry_yaml
from trygg.contract import Event, EventType, InvalidMessage
from trygg.registry import parse_registry

pytestmark = pytest.mark.integration

PREFIX = "trygg/v1"
RECEIVED = datetime.now(UTC).replace(microsecond=0)

#: one device of each kind, so that an event of any type can come from a device that may send it
DEVICE_OF = {
    "alarm.button": "d-1-alarm", "alarm.cancel": "d-1-alarm", "alarm.auto": "d-1-auto",
    "fall.detected": "d-1-fall", "smoke.detected": "d-1-smoke", "smoke.cleared": "d-1-smoke",
    "door.opened": "d-1-door", "door.closed": "d-1-door", "door.unlocked": "d-1-lock", "door.locked": "d-1-lock",
    "motion": "d-1-motion", "location": "d-1-gps", "heartbeat": "d-1-phone", "battery.low": "d-1-fall",
}
REGISTRY = parse_registry(ingest_registry_yaml())

SETTINGS = settings(max_examples=300, deadline=None, database=None, derandomize=False,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# -- JSON written as text, so that it can hold what json.dumps never writes -------------

#: any characters: lone surrogates, NUL and other controls included
any_text = st.text(st.characters(exclude_categories=()), max_size=12)
#: a JSON string with \uXXXX escapes (surrogates, NUL) or, for a few, raw characters
json_string = st.one_of(
    any_text.map(json.dumps),
    any_text.map(lambda s: json.dumps(s, ensure_ascii=False)),  # raw surrogates: not UTF-8
    st.sampled_from(['"\\ud83d\\ude00"', '"\\udc00\\ud800"', '"\\\\ud800"', '"\\\\u0000"', '"stue \\u00e6"']),
)
json_number = st.one_of(
    st.from_regex(r"-?(0|[1-9][0-9]{0,20})(\.[0-9]{1,25})?([eE][+-]?[0-9]{1,6})?", fullmatch=True),
    st.integers(-(2**64), 2**64).map(str),
    st.floats().map(json.dumps),  # NaN, Infinity, -Infinity, 1e308, 5e-324, -0.0
    st.sampled_from(["1e400", "-1e400", "0e-99999", "1e-20000", "1e-300", "1e-301", "9007199254740992",
                     "9007199254740993", "-9007199254740992", "9007199254740992.0", "0.1e1", "-0",
                     "0." + "3" * 64, "1" * 5000]),
)
json_scalar = st.one_of(json_number, json_string, st.sampled_from(["true", "false", "null"]))


def one_in(n: int) -> st.SearchStrategy[bool]:
    """True once in `n` draws (hypothesis favours the ends of an integer range, so not that)."""
    return st.sampled_from([False] * (n - 1) + [True])


def mostly(usual: st.SearchStrategy[str], odd: st.SearchStrategy[str], odds: int = 5) -> st.SearchStrategy[str]:
    """`odd` once in `odds` draws, else `usual`: most documents are valid events, and
    each kind of oddity still comes often."""
    return one_in(odds).flatmap(lambda rare: odd if rare else usual)


def _array(items: list[str]) -> str:
    return "[" + ",".join(items) + "]"


def _object(pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"


json_value = st.recursive(
    json_scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=4).map(_array),
                            st.lists(st.tuples(json_string, inner), max_size=4).map(_object)),
    max_leaves=16,
)
#: what devices send: short names, plain numbers
plain_string = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), min_size=1, max_size=12).map(json.dumps)
plain_value = st.recursive(
    st.one_of(plain_string, st.integers(-1000, 10**6).map(str), st.floats(-1e6, 1e6).map(json.dumps),
              st.sampled_from(["true", "false", "null"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3).map(_array),
                            st.lists(st.tuples(plain_string, inner), max_size=3).map(_object)),
    max_leaves=6,
)
#: nesting from shallow to far past what json.loads can parse (RecursionError)
json_deep = st.one_of(st.integers(1, 12), st.sampled_from([50, 990, 3000])).map(
    lambda n: "[" * n + "1" + "]" * n)


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    """Mostly near the time received (some outside the 24 h / 30 day window), with any
    UTC offset Python can write, whole minutes or not; sometimes not a time at all."""
    if draw(one_in(10)):
        return draw(json_scalar)
    odd = draw(one_in(5))
    seconds = draw(st.integers(-40 * 86400, 2 * 86400) if odd else st.integers(-29 * 86400, 86000))
    offset = timedelta(minutes=draw(st.integers(-1439, 1439) if odd else st.integers(-959, 959)),
                       seconds=draw(st.sampled_from([0, 0, 0, 30])) if odd else 0)
    at = (RECEIVED + timedelta(seconds=seconds, microseconds=draw(st.integers(0, 999_999))))
    text = at.astimezone(timezone(offset)).isoformat()
    if draw(one_in(5)):
        text = text.replace("+00:00", "Z")
    return json.dumps(text)


@st.composite
def data_for(draw: st.DrawFn, kind: str) -> str:
    """`data` that often fits the type (so that many examples are valid events), with
    odd numbers, odd text and extra keys mixed in."""
    name = mostly(plain_string, json_string)
    number = mostly(st.one_of(st.integers(0, 100).map(str), st.floats(0, 1).map(json.dumps)), json_number)
    fields: dict[str, st.SearchStrategy[str]] = {
        "alarm.auto": {"source": mostly(st.sampled_from(['"bed"', '"epilepsy"', '"other"']), json_string)},
        "fall.detected": {"confidence": number},
        "door.opened": {"door": name}, "door.closed": {"door": name},
        "door.unlocked": {"by": name}, "door.locked": {"by": name},
        "motion": {"room": name},
        "location": {"lat": mostly(st.floats(-90, 90).map(json.dumps), json_number),
                     "lon": mostly(st.floats(-180, 180).map(json.dumps), json_number),
                     "accuracy_m": number},
        "heartbeat": {"battery_pct": number}, "battery.low": {"battery_pct": number},
    }.get(kind, {})
    pairs = [(json.dumps(key), draw(value)) for key, value in fields.items() if not draw(one_in(10))]
    pairs += draw(st.lists(st.tuples(mostly(plain_string, json_string),
                                     mostly(plain_value, st.one_of(json_value, json_deep))), max_size=3))
    return _object(pairs)


@st.composite
def event_documents(draw: st.DrawFn) -> tuple[str, bytes]:
    """(topic, payload): an event document as JSON text, fields present or missing,
    valid or not, and the topic of a device that may send its type, mostly."""
    kind = draw(mostly(st.sampled_from([t.value for t in EventType]), any_text))
    pairs: list[tuple[str, str]] = []
    if not draw(one_in(20)):
        usual = st.text(st.characters(codec="utf-8"), min_size=1, max_size=64).map(json.dumps)
        odd = st.one_of(st.text(max_size=70).map(json.dumps), json_string, json_scalar)
        pairs.append(('"id"', draw(mostly(usual, odd, odds=10))))
    if not draw(one_in(20)):
        pairs.append(('"ts"', draw(timestamps())))
    if not draw(one_in(20)):
        pairs.append(('"type"', draw(mostly(st.just(json.dumps(kind)), json_string))))
    if not draw(one_in(8)):
        pairs.append(('"data"', draw(mostly(data_for(kind), st.one_of(json_value, json_deep, st.just("null"))))))
    pairs += draw(st.lists(st.tuples(mostly(plain_string, json_string), mostly(plain_value, json_value)),
                           max_size=2))
    pairs = draw(st.permutations(pairs))
    device = DEVICE_OF.get(kind, "d-1-alarm") if not draw(one_in(10)) else draw(
        st.sampled_from(["d-404", "d-1-alarm", "d-1-gps"]))
    topic = f"{PREFIX}/devices/{device}/events"
    if draw(one_in(20)):
        topic = draw(st.one_of(st.text(max_size=30), st.just(f"{PREFIX}/devices/{device}/status")))
    return topic, _object(pairs).encode("utf-8", "surrogatepass")


# -- the check ------------------------------------------------------------------------


class Ingest:
    """Validation as the gateway does it, then the store, against one database."""

    def __init__(self, url: str, pool: Pool) -> None:
        self.validator = Validator(REGISTRY, PREFIX)
        self.store = EventStore(pool)
        self.conn = psycopg.connect(url, autocommit=True)
        # no limits here: every dead letter is built and stored whole, as the first ones are
        self.dead_letters = DeadLetters(PREFIX, DeadLetterLimits(source_burst=1e9, total_burst=1e9,
                                                                 bytes_burst=1e18))
        self.valid = self.refused = 0

    def check(self, topic: str | bytes, payload: bytes) -> None:
        try:
            item = self.validator.accept(topic, payload, RECEIVED)
        except InvalidMessage as exc:
            self.refused += 1
            dead = self.dead_letters.record(topic, payload, exc.reason.value, exc.detail, RECEIVED)
            assert dead is not None
            self.store.write([], [dead])  # PostgreSQL takes every dead letter the gateway makes
            return
        if not isinstance(item, Event):  # a status, or a position not to be used
            return
        self.valid += 1
        for as_received in (True, False):  # the payload's text; `data` alone (spool, row by row)
            self.conn.execute("DELETE FROM trygg.events")
            self.conn.execute("DELETE FROM trygg.event_keys")
            self.conn.execute("DELETE FROM trygg.heartbeats")
            assert self.store.write([item], as_received=as_received) == 1
            if item.type is EventType.HEARTBEAT:  # its own table: when, and the battery in whole percent
                beat = self.conn.execute("SELECT device_id, ts, battery_pct FROM trygg.heartbeats").fetchone()
                assert beat is not None and beat[:2] == (item.device_id, item.ts), (payload, as_received)
                battery = item.data.get("battery_pct")
                assert (beat[2] is None) if battery is None else abs(beat[2] - battery) <= 0.5, (payload, beat)
                continue
            row = self.conn.execute("SELECT event_id, type, ts, data FROM trygg.events").fetchone()
            assert row == (item.event_id, item.type.value, item.ts, item.data), (payload, as_received)

    def close(self) -> None:
        self.store.close()
        self.conn.close()


@pytest.fixture
def ingest(database: str, pool: Pool) -> Iterator[Ingest]:
    checker = Ingest(database, pool)
    try:
        yield checker
    finally:
        checker.close()


@SETTINGS
@given(document=event_documents())
def test_any_json_document_is_a_stored_event_or_a_dead_letter(ingest: Ingest, document: tuple[str, bytes]) -> None:
    ingest.check(*document)


@settings(SETTINGS, max_examples=200)
@given(topic=st.one_of(st.sampled_from([f"{PREFIX}/devices/{d}/events" for d in ("d-1-alarm", "d-1-gps", "d-404")]),
                       st.binary(max_size=20), st.text(max_size=30)),
       payload=st.one_of(st.binary(max_size=200), st.one_of(json_value, json_deep).map(
           lambda t: t.encode("utf-8", "surrogatepass"))))
def test_any_bytes_are_a_stored_event_or_a_dead_letter(ingest: Ingest, topic: str | bytes, payload: bytes) -> None:
    ingest.check(topic, payload)


def test_the_documents_make_both_valid_events_and_dead_letters(ingest: Ingest) -> None:
    """The strategy is worth its time only if it makes both outcomes often."""

    @settings(SETTINGS, max_examples=150)
    @given(document=event_documents())
    def run(document: tuple[str, bytes]) -> None:
        ingest.check(*document)

    run()
    assert ingest.valid >= 15, (ingest.valid, ingest.refused)
    assert ingest.refused >= 15, (ingest.valid, ingest.refused)
