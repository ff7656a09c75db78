"""Research data (DESIGN.md §7, docs/research.md): pseudonyms, small-group suppression,
CSV and Parquet encoding.

Which rows a researcher may see at all (consenting residents, pseudonymous ids, coarse
positions, no free text) is defined once, in the `research` views
(storage/migrations/0005_research.sql); the API reads those views like any SQL user.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import hmac
import io
import json
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import pyarrow as pa

import psycopg

from storage.research_store import EXPORT_COLUMNS, residents_needing_pseudonyms, save_pseudonyms

#: Aggregates over fewer distinct residents than this are held back.
MIN_GROUP: Final = 5


def pseudonym(key: bytes, resident_id: str) -> str:
    """HMAC-SHA256(TRYGG_PSEUDONYM_KEY, resident_id), hex: stable for one key, and without
    the key it cannot be linked back to the resident."""
    return hmac.new(key, resident_id.encode(), hashlib.sha256).hexdigest()


def key_id(key: bytes) -> str:
    """Names the key without revealing it, so that a changed key is noticed."""
    return hmac.new(key, b"trygg-pseudonym-key-id", hashlib.sha256).hexdigest()[:16]


async def sync_pseudonyms(conn: psycopg.AsyncConnection[Any], key: bytes) -> int:
    """Fill trygg.research_pseudonyms for residents that have none (or one from another
    key); returns how many were written."""
    kid = key_id(key)
    missing = await residents_needing_pseudonyms(conn, kid)
    if missing:
        await save_pseudonyms(conn, [(rid, pseudonym(key, rid)) for rid in missing], kid)
    return len(missing)


def suppress(groups: Iterable[dict[str, Any]], min_group: int = MIN_GROUP) -> tuple[list[dict[str, Any]], int]:
    """Groups with at least `min_group` distinct residents, and how many were held back."""
    shown: list[dict[str, Any]] = []
    held = 0
    for group in groups:
        if int(group["residents"]) >= min_group:
            shown.append(group)
        else:
            held += 1
    return shown, held


def _cell(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    return value


def csv_header() -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(EXPORT_COLUMNS)
    return out.getvalue()


def csv_rows(rows: Sequence[Sequence[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in rows:
        writer.writerow(["" if v is None else _cell(v) for v in row])
    return out.getvalue()


@functools.cache
def parquet_schema() -> pa.Schema:
    """pyarrow is imported on the first Parquet export only: it costs ~60 MiB of memory in
    every Trygg process otherwise (DESIGN.md §9 memory budget)."""
    import pyarrow as pa

    return pa.schema([
        ("resident_pseudonym", pa.string()),
        ("type", pa.string()),
        ("device_kind", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("received_at", pa.timestamp("us", tz="UTC")),
        ("lat", pa.float64()),
        ("lon", pa.float64()),
        ("data", pa.string()),
    ])


def parquet_batch(rows: Sequence[Sequence[Any]]) -> pa.RecordBatch:
    import pyarrow as pa

    columns = list(zip(*rows, strict=True)) if rows else [()] * len(EXPORT_COLUMNS)
    arrays = []
    for name, values in zip(EXPORT_COLUMNS, columns, strict=True):
        if name in ("lat", "lon"):
            values = tuple(None if v is None else float(v) for v in values)
        elif name == "data":
            values = tuple(_cell(v) if v is not None else None for v in values)
        arrays.append(pa.array(values, type=parquet_schema().field(name).type))
    return pa.RecordBatch.from_arrays(arrays, schema=parquet_schema())


class ParquetBuilder:
    """Collects batches into one Parquet file in memory."""

    def __init__(self) -> None:
        import pyarrow.parquet as pq

        self._sink = io.BytesIO()
        self._writer = pq.ParquetWriter(self._sink, parquet_schema(), compression="zstd")

    def add(self, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._writer.write_batch(parquet_batch(rows))

    def finish(self) -> bytes:
        self._writer.close()
        return self._sink.getvalue()


__all__ = [
    "MIN_GROUP",
    "ParquetBuilder",
    "csv_header",
    "csv_rows",
    "key_id",
    "parquet_schema",
    "pseudonym",
    "suppress",
    "sync_pseudonyms",
]
