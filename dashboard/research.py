"""Research data (docs/contract.md#7-privacy-and-lawful-care, docs/research.md): pseudonyms, windows cut at whole
buckets, small-group suppression, the research pool, CSV and Parquet encoding.

Which rows a researcher may see at all (consenting residents, pseudonymous ids, coarse
positions only under a location basis, no free text) is defined once, in the views
(storage/migrations/0005_research.sql, 0010_research_privacy.sql).

What an answer may reveal is decided here and in storage/research_store.py: every
window is widened to whole buckets and whole days in Europe/Oslo (`research_window`),
so two queries whose ends differ by a microsecond get the same answer and a 2-second
window answers for its day; no time is finer than the hour; and nothing is shown of a
group of fewer than k residents (docs/research.md "What is guaranteed").
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import functools
import hashlib
import hmac
import io
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import pyarrow as pa

import psycopg
from psycopg_pool import AsyncConnectionPool

from storage.pool import RECONNECT_S
from storage.research_store import (
    BUCKETS,
    EXPORT_COLUMNS,
    export_rows,
    floor_to,
    next_bucket,
    residents_needing_pseudonyms,
    save_pseudonyms,
)
from storage.rollups import areconcile
from trygg.settings import Settings

#: Aggregates over fewer distinct residents than this are held back (the least
#: `TRYGG_RESEARCH_MIN_GROUP` may be).
MIN_GROUP: Final = 5


# --- windows cut at whole buckets -------------------------------------------------------


def coarser(unit: str, other: str) -> str:
    """The coarser of two of hour|day|week|month."""
    return max(unit, other, key=BUCKETS.index)


def research_window(since: datetime, until: datetime, unit: str) -> tuple[datetime, datetime]:
    """[since, until) widened to whole buckets of `unit`, and never less than whole days:
    `since` down to its bucket's start, `until` up to the next bucket boundary. Raises
    OverflowError at the ends of time."""
    unit = coarser(unit, "day")
    start = floor_to(unit, since)
    end = floor_to(unit, until)
    if end < until or end <= start:
        end = next_bucket(unit, end)
    return start, end


# --- the research pool ------------------------------------------------------------------


def open_research_pool(settings: Settings, conninfo: str) -> AsyncConnectionPool:
    """The pool research queries and exports use, apart from staff's (not yet opened):
    small, with a short queue and statement and idle-in-transaction timeouts, so a
    researcher can exhaust only this one (docs/security.md "Research and metrics")."""
    # PostgreSQL's idle timeout is a backstop: `export_batches` ends a stalled export
    # itself, with the connection still healthy, before PostgreSQL would end the session.
    timeouts = (f"{int(settings.research_statement_timeout_s * 1000)}ms",
                f"{int((settings.research_idle_timeout_s + 30) * 1000)}ms")

    async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute("SELECT set_config('statement_timeout', %s, false),"
                           " set_config('idle_in_transaction_session_timeout', %s, false)", timeouts)
        await conn.commit()

    return AsyncConnectionPool(
        conninfo, min_size=1, max_size=settings.research_pool_size,
        max_waiting=settings.research_pool_max_waiting, timeout=settings.research_pool_wait_s,
        open=False, name="research", configure=configure, check=AsyncConnectionPool.check_connection,
        reconnect_timeout=RECONNECT_S,
    )


#: Reads one step of an export: (connection, start, end) → batches of rows.
RowReader = Callable[[psycopg.AsyncConnection[Any], datetime, datetime], AsyncGenerator[list[tuple[Any, ...]], None]]


async def export_batches(pool: AsyncConnectionPool, since: datetime, until: datetime, *, grain: str, k: int,
                         idle_s: float, step_rows: RowReader | None = None) -> AsyncIterator[list[tuple[Any, ...]]]:
    """The export's rows, read by a task of its own into a short queue. A client that
    stops reading stops the queue; after `idle_s` the reader gives its connection back
    and the export ends unfinished — a stalled download holds a research connection at
    most that long.

    The rows are read one day (or one grain, if coarser) at a time: a group never spans
    two grains, so each statement is bounded by one day's events, not the period's.
    `step_rows` reads one such step (default: the event rows, `export_rows` with `grain` and
    `k`)."""
    queue: asyncio.Queue[list[tuple[Any, ...]] | None] = asyncio.Queue(maxsize=2)
    step = coarser(grain, "day")

    def events(conn: psycopg.AsyncConnection[Any], start: datetime, end: datetime
               ) -> AsyncGenerator[list[tuple[Any, ...]], None]:
        return export_rows(conn, start, end, grain=grain, k=k)

    rows_in = step_rows or events

    async def read() -> None:
        async with pool.connection() as conn:
            start = since
            while start < until:
                end = min(next_bucket(step, floor_to(step, start)), until)
                # closed before the connection goes back, also when the client stalls
                rows_of = rows_in(conn, start, end)
                async with contextlib.aclosing(rows_of) as batches:
                    async for found in batches:
                        async with asyncio.timeout(idle_s):
                            await queue.put(found)
                start = end
        await queue.put(None)

    reader = asyncio.create_task(read(), name="research.export-reader")
    taken: asyncio.Future[list[tuple[Any, ...]] | None] | None = None
    try:
        while True:
            taken = asyncio.ensure_future(queue.get())
            await asyncio.wait({taken, reader}, return_when=asyncio.FIRST_COMPLETED)
            if not taken.done():
                taken.cancel()
                reader.result()  # the reader failed: raise its error
                continue  # it finished: what it put is still in the queue
            rows = taken.result()
            if rows is None:
                return
            yield rows
    finally:
        for task in (taken, reader):
            if task is not None:
                task.cancel()
        await asyncio.wait([reader])  # its connection back in the pool before we go on
        if not reader.cancelled():
            reader.exception()  # retrieved: raised above already, or of no interest now


def pseudonym(key: bytes, resident_id: str) -> str:
    """HMAC-SHA256(TRYGG_PSEUDONYM_KEY, resident_id), hex: stable for one key, and without
    the key it cannot be linked back to the resident."""
    return hmac.new(key, resident_id.encode(), hashlib.sha256).hexdigest()


def key_id(key: bytes) -> str:
    """Names the key without revealing it, so that a changed key is noticed."""
    return hmac.new(key, b"trygg-pseudonym-key-id", hashlib.sha256).hexdigest()[:16]


async def prepare_answer(conn: psycopg.AsyncConnection[Any], key: bytes) -> None:
    """Before every research answer: pseudonyms up to date, and the research rollups'
    cohort in step with consent now (storage/rollups.py `areconcile`), so a resident who
    withdrew is in no answer, rollups included."""
    await sync_pseudonyms(conn, key)
    await areconcile(conn)


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
    every Trygg process otherwise (docs/contract.md#9-performance-budgets memory budget)."""
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
    "RowReader",
    "coarser",
    "csv_header",
    "csv_rows",
    "export_batches",
    "floor_to",
    "key_id",
    "next_bucket",
    "open_research_pool",
    "parquet_schema",
    "prepare_answer",
    "pseudonym",
    "research_window",
    "suppress",
    "sync_pseudonyms",
]
