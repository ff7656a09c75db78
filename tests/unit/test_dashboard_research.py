"""Pseudonyms, small-group suppression and the export encodings."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
from datetime import UTC, datetime
from decimal import Decimal

import pyarrow.parquet as pq

from dashboard.research import ParquetBuilder, csv_header, csv_rows, key_id, pseudonym, suppress


def test_pseudonyms_are_keyed_hmacs() -> None:
    key = b"k" * 32
    assert pseudonym(key, "r-17") == hmac.new(key, b"r-17", hashlib.sha256).hexdigest()
    assert pseudonym(key, "r-17") == pseudonym(key, "r-17")
    assert pseudonym(key, "r-17") != pseudonym(b"j" * 32, "r-17")
    assert "r-17" not in pseudonym(key, "r-17")
    assert key_id(key) != key_id(b"j" * 32) and len(key_id(key)) == 16


def test_suppress_holds_back_groups_under_five() -> None:
    groups = [{"type": "a", "residents": 5}, {"type": "b", "residents": 4}, {"type": "c", "residents": 0}]
    shown, held = suppress(groups)
    assert ([g["type"] for g in shown], held) == (["a"], 2)


ROWS = [
    ("p1", "location", "gps_tracker", datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC),
     Decimal("59.91"), Decimal("10.75"), {}),
    ("p2", "motion", "motion_sensor", datetime(2026, 11, 1, 1, tzinfo=UTC), datetime(2026, 11, 1, 1, tzinfo=UTC),
     None, None, {"room": "kitchen, upstairs"}),
]


def test_csv_round_trip() -> None:
    text = csv_header() + csv_rows(ROWS)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[0]["lat"] == "59.91" and rows[0]["data"] == "{}"
    assert rows[1]["data"] == '{"room":"kitchen, upstairs"}' and rows[1]["lat"] == ""
    assert rows[1]["ts"] == "2026-11-01T01:00:00+00:00"


def test_parquet_round_trip() -> None:
    builder = ParquetBuilder()
    builder.add(ROWS)
    builder.add([])
    table = pq.read_table(io.BytesIO(builder.finish()))
    out = table.to_pylist()
    assert [r["resident_pseudonym"] for r in out] == ["p1", "p2"]
    assert (out[0]["lat"], out[0]["lon"], out[1]["lat"]) == (59.91, 10.75, None)
    assert out[1]["ts"] == datetime(2026, 11, 1, 1, tzinfo=UTC)


def test_empty_parquet_has_the_columns() -> None:
    table = pq.read_table(io.BytesIO(ParquetBuilder().finish()))
    assert table.num_rows == 0 and "resident_pseudonym" in table.column_names
