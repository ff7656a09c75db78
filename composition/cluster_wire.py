"""What Trygg's instances say to each other about alerts (docs/cluster.md).

- A change of an alert, on `TRYGG_ALERTS` (`cluster.layout.alert_subject`): the alert
  journal's record (alerts/journal.py `encode`): the alert as it is after the change and
  the transitions of that change. The last record of each alert is kept by the stream.
- A staff action, a request on `trygg.cmd.{rp}` to the partition's owner: JSON
  `{"op": "acknowledge" | "resolve", "alert_id", "actor", "note"}`; the reply is
  `{"ok": true, "item": <journal record>}` or `{"ok": false, "error": <code>, "message": <text>}`
  with the code one of `ERRORS`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final, Literal

from alerts.journal import Item, decode, encode
from trygg.alert import Alert

Op = Literal["acknowledge", "resolve"]
OPS: Final = ("acknowledge", "resolve")
#: not_found: no such alert (404); illegal: not allowed in its state (409);
#: not_ready: the owner is restoring or the partition is moving (503); bad_request (400)
ERRORS: Final = ("not_found", "illegal", "not_ready", "bad_request")


def alert_item_bytes(item: Item) -> bytes:
    return encode(item)


def alert_item_of(payload: bytes) -> Item:
    """The item of a `TRYGG_ALERTS` message; KeyError, ValueError, TypeError if none."""
    return decode(payload)


@dataclass(frozen=True)
class Command:
    op: Op
    alert_id: str
    actor: str
    note: str | None = None

    def to_bytes(self) -> bytes:
        return json.dumps({"op": self.op, "alert_id": self.alert_id, "actor": self.actor, "note": self.note},
                          separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, payload: bytes) -> Command:
        """ValueError with a message for a request that is not a command."""
        try:
            doc = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            raise ValueError("not JSON") from None
        if not isinstance(doc, dict) or doc.get("op") not in OPS:
            raise ValueError(f"op must be one of {OPS}")
        alert_id, actor, note = doc.get("alert_id"), doc.get("actor"), doc.get("note")
        if not isinstance(alert_id, str) or not isinstance(actor, str) or not (note is None or isinstance(note, str)):
            raise ValueError("alert_id and actor must be text, note text or null")
        return cls(doc["op"], alert_id, actor, note)


def reply_ok(alert: Alert) -> bytes:
    return b'{"ok":true,"item":' + encode((alert, ())) + b"}"


def reply_error(code: str, message: str) -> bytes:
    assert code in ERRORS
    return json.dumps({"ok": False, "error": code, "message": message}).encode()


def parse_reply(payload: bytes) -> Alert | tuple[str, str]:
    """The alert after the action, or (error code, message)."""
    doc: dict[str, Any] = json.loads(payload)
    if doc.get("ok"):
        alert, _ = decode(json.dumps(doc["item"]).encode())
        return alert
    return str(doc.get("error")), str(doc.get("message"))
