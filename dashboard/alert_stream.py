"""The staff console's live stream (`GET /api/alerts/stream`): server-sent events
written in the same call that changed the alert.

The alerts stage publishes a change to the staff handhelds (MQTT), then offers it to
its in-process subscribers. A stream's subscription calls `AlertStream.pump` right
there, and the change is formatted, audited and written to the console's socket before
the stage returns — no task to wake, no wait for the rest of the event loop's turn,
which under load was most of the console's lag behind the handheld
(docs/design-notes.md). The ASGI `send` is started eagerly (`start_eagerly`): it
writes to the transport and returns without suspending unless the console reads too
slowly; then the rest of that send, and every change after it, waits for the client
(the subscription holds them, bounded, and drops a stream that falls too far behind).

Events: `alert` (the alert after a change), a `: ping` comment every `ping_s`, and a
final `reset` (the subscription ended, the server is closing, or the user's role, teams
or residents changed: re-list and reconnect) or `expired` (the token expired, was signed
out, or its password changed: sign in again). While it is open the stream's rights are
checked again and again (dashboard/stream_rights.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Generator
from typing import Any, Final

from pydantic import TypeAdapter
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from dashboard.audit import AuditLog
from dashboard.authz import Principal, team_scope
from dashboard.deps import AlertFeed, AlertsPort, Credential
from dashboard.errors import AuditJournalError
from dashboard.stream_rights import RightsWatch
from trygg.alert import Alert
from trygg.logging import get_logger

log = get_logger(__name__)

HEADERS = {"cache-control": "no-store", "x-accel-buffering": "no"}


#: An alert as the API shows it: the contract's alert JSON and `teams`.
ALERT_JSON: Final = TypeAdapter(Alert)


def _sse(event: str, data: str, event_id: str | None = None) -> str:
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id else "")
    return head + "".join(f"data: {line}\n" for line in data.splitlines() or [""]) + "\n"


def start_eagerly(step: Awaitable[None]) -> asyncio.Task[None] | None:
    """Run `step` now, in the caller's call, up to its first suspension (what Python
    3.12 calls an eager task). None when it finished there; otherwise a task that runs
    the rest once what it waits for is done. Its exceptions are raised here when they
    come before the first suspension."""
    steps = step.__await__()
    try:
        waiting = steps.send(None)
    except StopIteration:
        return None
    return asyncio.get_running_loop().create_task(_resume(steps, waiting))


async def _resume(steps: Generator[Any, None, None], waiting: Any) -> None:
    """Go on with an awaitable that suspended on `waiting` (a future, or None for a bare
    yield), stepping it as a task would; cancelling this cancels it."""
    try:
        while True:
            if waiting is None:
                await asyncio.sleep(0)
            else:
                waiting._asyncio_future_blocking = False
                await asyncio.wait([waiting])  # done; the awaitable takes its result itself
            try:
                waiting = steps.send(None)
            except StopIteration:
                return
    except asyncio.CancelledError:
        with contextlib.suppress(StopIteration, asyncio.CancelledError):
            steps.throw(asyncio.CancelledError())
        raise
    finally:
        steps.close()


class AlertStream(Response):
    """The SSE response of one console: its own subscription to the caller's teams,
    pushed as changes happen. The first alert of each resident on this connection is
    sent once its audit row is in the journal (fsync'ed right after, shared with
    whatever else is being logged: no database round trip, no wait for the disk), so the
    stream keeps going while PostgreSQL is down; no alert goes out without its row."""

    media_type = "text/event-stream"

    def __init__(self, alerts: AlertsPort, who: Principal, audit_log: AuditLog, action: str,
                 ping_s: float, closing: asyncio.Event | None = None, *,
                 rights: RightsWatch | None = None, credential: Credential | None = None) -> None:
        self.status_code = 200
        self.background = None
        self.init_headers(HEADERS)
        self._alerts = alerts
        self._who = who
        self._audit = audit_log
        self._action = action
        self._ping_s = ping_s
        self._closing = closing
        self._send: Send | None = None
        self._feed: AlertFeed | None = None
        self._sending: asyncio.Task[None] | None = None  # a write waiting for the client
        self._audited: set[str] = set()
        self._ended = asyncio.Event()
        self._last = ""  # the closing event: reset or expired
        self._detail = ""  # why, when the stream's rights ended it
        self._rights = rights
        self._credential = credential

    @property
    def who(self) -> Principal:
        return self._who

    @property
    def credential(self) -> Credential:
        assert self._credential is not None
        return self._credential

    def end(self, last: str, detail: str) -> None:
        """End the stream with `last` (`reset` or `expired`) and say why: its user's
        rights changed (dashboard/stream_rights.py). Nothing more is sent before it."""
        if not self._ended.is_set():
            self._detail = detail
        self._end(last)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._send = send
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await self._body("retry: 3000\n: connected\n\n")
        teams = team_scope(self._who)
        if teams is None or teams:  # no teams: pings only
            self._feed = self._alerts.subscribe(teams, self.pump)
        if self._rights is not None and self._credential is not None:
            self._rights.watch(self)
        ended = asyncio.create_task(self._ended.wait(), name="sse-ended")
        gone = asyncio.create_task(_disconnected(receive), name="sse-disconnect")
        waits = {ended, gone}
        if self._closing is not None:
            waits.add(asyncio.create_task(self._closing.wait(), name="sse-closing"))
        try:
            self.pump()  # what came between subscribing and now
            while not self._ended.is_set():
                left = self._who.expires - time.time()
                if left <= 0:
                    self._end("expired")
                    break
                done, _ = await asyncio.wait(waits, timeout=min(self._ping_s, left),
                                             return_when=asyncio.FIRST_COMPLETED)
                if gone in done:
                    return  # the console went away
                if self._closing is not None and self._closing.is_set():
                    self._end("reset")
                elif not done and self._sending is None:
                    self._write(": ping\n\n")
            if not self._last:
                return  # a write failed: the connection is gone
            if self._sending is not None:  # the last write first, unless the console leaves
                await asyncio.wait([self._sending, gone], return_when=asyncio.FIRST_COMPLETED)
                if gone.done():
                    return
            if self._last == "expired":
                detail = self._detail or "the session expired; sign in again"
                await self._body(_sse("expired", json.dumps({"detail": detail})))
            else:
                await self._body(_sse("reset", json.dumps({"detail": self._detail}) if self._detail else "{}"))
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if self._rights is not None:
                self._rights.unwatch(self)
            if self._feed is not None:
                self._feed.close()
            for task in waits:
                task.cancel()
            if self._sending is not None:
                self._sending.cancel()

    def pump(self) -> None:
        """Write every waiting change now (the feed calls this as soon as one is waiting).
        While a write waits for a slow client, changes stay in the feed. Anything
        unexpected ends the stream with a `reset`: a console must never go silent."""
        try:
            self._pump()
        except Exception:
            log.exception("alert_stream_failed")
            self._end("reset")

    def _pump(self) -> None:
        while self._sending is None and not self._ended.is_set() and self._feed is not None:
            try:
                alert = self._feed.get_nowait()
            except Exception as exc:  # dropped for falling behind, or the stage stopped
                log.warning("alert_subscription_ended", error=str(exc))
                self._end("reset")
                return
            if alert is None:
                return
            if alert.resident_id not in self._audited:
                try:  # in the journal before the alert is sent; fsync'ed a moment later
                    self._audit.write(self._who, [alert.resident_id], self._action, wait=False)
                except AuditJournalError as exc:  # no alert without its audit row
                    log.error("alert_stream_ended_audit_not_recorded", error=str(exc)[:200])
                    self._end("reset")
                    return
                self._audited.add(alert.resident_id)
            self._write(_sse("alert", ALERT_JSON.dump_json(alert).decode(), alert.alert_id))

    def _write(self, text: str) -> None:
        try:
            self._sending = start_eagerly(self._body(text))
        except Exception as exc:  # the connection is gone
            log.info("alert_stream_write_failed", error=str(exc)[:200])
            self._end("")
            return
        if self._sending is not None:
            self._sending.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending = None
        if task.cancelled() or task.exception() is not None:
            self._end("")
        else:
            self.pump()

    def _body(self, text: str) -> Awaitable[None]:
        assert self._send is not None
        return self._send({"type": "http.response.body", "body": text.encode(), "more_body": True})

    def _end(self, last: str) -> None:
        if not self._ended.is_set():
            self._last = last
            self._ended.set()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


__all__ = ["ALERT_JSON", "AlertStream", "start_eagerly"]
