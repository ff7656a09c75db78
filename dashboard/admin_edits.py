"""The admin page's edits of the registry document (docs/admin.md).

Every edit — a resident added, changed or retired, a device added, changed, moved or
removed, a user added or changed — is a change to the registry document, made the way
`PUT /api/registry` makes one: the whole changed document is validated by
`parse_registry` with the upload's limits and saved with `save_registry` in one
transaction, so the running stages pick it up through their registry watcher
(composition/runtime.py) within a few seconds. It runs in a child process
(trygg/isolated.py) like an upload: a large registry is seconds of work that must not
hold the alarm path's GIL.

Optimistic concurrency: the registry's `loaded_at` is its version. The child locks the
registry, compares the version the admin's page last read with the stored one
(`StaleVersion` if they differ), applies the edit, validates, saves and writes the
change log row (storage/admin_store.py) — all in one transaction.

`apply_edit` is pure: it changes a document (a dict) and says what changed, without
secrets (key-box codes, phone numbers, addresses and names are named, never copied).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from storage.admin_store import Change
from trygg.errors import TryggError
from trygg.registry import RegistryError, parse_registry
from trygg.registry_limits import DocumentLimits

#: The version of a database where no registry was ever loaded.
NO_VERSION: Final = "none"

#: Resident fields whose values the change log keeps; the others are only named.
SAFE_FIELDS: Final = frozenset({"team", "timezone", "night", "settings", "consents", "location_basis"})

#: Fields of a resident edited with the resident (devices have routes of their own).
RESIDENT_FIELDS: Final = ("name", "team", "timezone", "night", "settings", "safe_zones", "consents",
                          "location_basis", "address", "access", "contacts")


class EditError(TryggError):
    """An edit that cannot be made: `status` 404 (no such object), 409 (stale version)
    or 422 (invalid; `errors` as (path under the edited object, message))."""

    def __init__(self, status: int, message: str, errors: list[tuple[list[str | int], str]] | None = None
                 ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or []

    def __reduce__(self) -> tuple[Any, ...]:  # crosses a process boundary (trygg/isolated.py)
        return type(self), (self.status, self.message, self.errors)


def stale(current: str) -> EditError:
    return EditError(409, "the registry was changed since this page read it (now version "
                          f"{current}); reload and make the change again")


def invalid(loc: list[str | int], message: str) -> EditError:
    return EditError(422, message, [(loc, message)])


@dataclass(frozen=True, slots=True)
class Edit:
    """`op` on `target` (a resident id, device id or username) with `data` (JSON)."""

    op: str
    target: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Applied:
    """What an edit left: the registry's new version and the edited object as saved
    (None when it was removed)."""

    version: str
    change: Change
    result: dict[str, Any] | None


@dataclass
class _Place:
    """Where the edited object is in the document (to find it again after
    validation, and to turn error paths into the form's field paths)."""

    prefix: str  # e.g. "residents[3]" or "residents[3].devices[1]" or "users[2]"
    kind: str  # "resident", "device", "user"
    key: str = ""  # id or username after the edit


def version_of(loaded_at: datetime | None) -> str:
    return NO_VERSION if loaded_at is None else loaded_at.isoformat()


# --- the edits (pure) ---------------------------------------------------------------


def _residents(doc: dict[str, Any]) -> list[dict[str, Any]]:
    found = doc.setdefault("residents", [])
    assert isinstance(found, list)
    return found


def _find_resident(doc: dict[str, Any], resident_id: str) -> int:
    for i, person in enumerate(_residents(doc)):
        if person.get("id") == resident_id:
            return i
    raise EditError(404, "not found")


def _find_device(doc: dict[str, Any], device_id: str) -> tuple[int, int]:
    for i, person in enumerate(_residents(doc)):
        for j, device in enumerate(person.get("devices", [])):
            if device.get("id") == device_id:
                return i, j
    raise EditError(404, "not found")


def _diff(old: dict[str, Any], new: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """Changed fields: safe ones with their values, the rest named with `true`."""
    out: dict[str, Any] = {}
    for name in names:
        if old.get(name) != new.get(name):
            out[name] = {"from": old.get(name), "to": new.get(name)} if name in SAFE_FIELDS else True
    return out


def _resident_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The resident fields of a form (None and empty ones left out; unknown ones kept,
    so the registry's validation names them)."""
    return {k: v for k, v in data.items() if k not in ("id", "devices") and v is not None and v != ""}


def apply_edit(doc: dict[str, Any], edit: Edit, known_users: frozenset[str]) -> tuple[Change, _Place]:
    """Change `doc` in place; what changed and where the edited object now is.
    `known_users`: usernames in trygg.users (a user may exist there and not in the
    document, made with `trygg users add`)."""
    op, target, data = edit.op, edit.target, edit.data
    people = _residents(doc)
    if op == "resident.create":
        if any(p.get("id") == target for p in people):
            raise invalid(["id"], f"a resident with the id {target!r} exists")
        person = {"id": target, **_resident_fields(data), "devices": []}
        people.append(person)
        summary = {"team": person.get("team"), "fields": sorted(k for k in person if k not in ("id", "devices"))}
        return Change(op, "resident", target, summary), _Place(f"residents[{len(people) - 1}]", "resident", target)
    if op == "resident.update":
        i = _find_resident(doc, target)
        old = people[i]
        new = {"id": target, **_resident_fields(data), "devices": old.get("devices", [])}
        people[i] = new
        return (Change(op, "resident", target, {"changed": _diff(old, new, RESIDENT_FIELDS)}),
                _Place(f"residents[{i}]", "resident", target))
    if op == "resident.retire":
        i = _find_resident(doc, target)
        old = people.pop(i)
        unlinked = []
        for user in doc.get("users", []):
            if target in user.get("residents", []):
                user["residents"] = [r for r in user["residents"] if r != target]
                unlinked.append(user.get("username"))
        summary = {"team": old.get("team"), "devices": [d.get("id") for d in old.get("devices", [])],
                   "users_unlinked": unlinked}
        return Change(op, "resident", target, summary), _Place("", "resident")
    if op.startswith("device."):
        return _device_edit(doc, edit)
    if op.startswith("user."):
        return _user_edit(doc, edit, known_users)
    raise EditError(422, f"unknown edit {op!r}")


def _device_edit(doc: dict[str, Any], edit: Edit) -> tuple[Change, _Place]:
    op, target, data = edit.op, edit.target, edit.data
    people = _residents(doc)
    if op == "device.add":
        owner = str(data.get("resident_id", ""))
        i = _find_resident(doc, owner)
        if any(d.get("id") == target for p in people for d in p.get("devices", [])):
            raise invalid(["id"], f"a device with the id {target!r} exists")
        devices = people[i].setdefault("devices", [])
        devices.append({"id": target, **{k: v for k, v in data.items() if k != "resident_id" and v is not None}})
        return (Change(op, "device", target, {"resident": owner, "kind": data.get("kind")}),
                _Place(f"residents[{i}].devices[{len(devices) - 1}]", "device", target))
    i, j = _find_device(doc, target)
    device = people[i]["devices"][j]
    owner = people[i]["id"]
    if op == "device.update":
        new = {"id": target, **{k: v for k, v in data.items() if k not in ("id", "resident_id") and v is not None}}
        people[i]["devices"][j] = new
        changed = {k: {"from": device.get(k), "to": new.get(k)} for k in ("kind", "heartbeat_s")
                   if device.get(k) != new.get(k)}
        return (Change(op, "device", target, {"resident": owner, "changed": changed}),
                _Place(f"residents[{i}].devices[{j}]", "device", target))
    if op == "device.move":
        to = str(data.get("resident_id", ""))
        try:
            k = _find_resident(doc, to)
        except EditError:
            raise invalid(["resident_id"], f"no resident with the id {to!r}") from None
        del people[i]["devices"][j]
        moved = people[k].setdefault("devices", [])
        moved.append(device)
        return (Change(op, "device", target, {"from": owner, "to": to, "kind": device.get("kind")}),
                _Place(f"residents[{k}].devices[{len(moved) - 1}]", "device", target))
    if op == "device.remove":
        del people[i]["devices"][j]
        return Change(op, "device", target, {"resident": owner, "kind": device.get("kind")}), _Place("", "device")
    raise EditError(422, f"unknown edit {op!r}")


def _user_edit(doc: dict[str, Any], edit: Edit, known_users: frozenset[str]) -> tuple[Change, _Place]:
    op, target, data = edit.op, edit.target, edit.data
    users = doc.setdefault("users", [])
    at = next((n for n, u in enumerate(users) if u.get("username") == target), None)
    fields = {k: data.get(k) for k in ("role", "teams", "residents") if data.get(k) is not None}
    if op == "user.create":
        if at is not None or target in known_users:
            raise invalid(["username"], f"a user named {target!r} exists")
        users.append({"username": target, **fields})
        summary = {k: fields.get(k) for k in ("role", "teams", "residents")}
        return Change(op, "user", target, summary), _Place(f"users[{len(users) - 1}]", "user", target)
    if op == "user.update":
        if at is None:
            if target not in known_users:
                raise EditError(404, "not found")
            users.append({"username": target})  # made with `trygg users add`: named in the document from now on
            at = len(users) - 1
        old = users[at]
        users[at] = {"username": target, **fields}
        changed = {k: {"from": old.get(k), "to": fields.get(k)} for k in ("role", "teams", "residents")
                   if old.get(k) != fields.get(k)}
        return Change(op, "user", target, {"changed": changed}), _Place(f"users[{at}]", "user", target)
    raise EditError(422, f"unknown edit {op!r}")


# --- validation errors as the form's fields -------------------------------------------

_PART = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


def _path(text: str) -> list[str | int]:
    return [int(index) if index else name for name, index in _PART.findall(text)]


def field_errors(exc: RegistryError, place: _Place) -> EditError:
    """The registry's `path: message` lines as paths under the edited object (the form's
    fields); a line about another part of the document keeps its whole path."""
    errors: list[tuple[list[str | int], str]] = []
    for line in exc.errors:
        where, _, message = line.partition(": ")
        if place.prefix and (where == place.prefix or where.startswith(place.prefix + ".")
                             or where.startswith(place.prefix + "[")):
            errors.append((_path(where[len(place.prefix):]), message))
        else:
            errors.append((["document", *_path(where)], message))
    return EditError(422, "the change does not validate; nothing was changed", errors)


def _saved(reg_doc: dict[str, Any], place: _Place) -> dict[str, Any] | None:
    """The edited object as the validated registry holds it."""
    if not place.key:
        return None
    if place.kind == "user":
        return next((u for u in reg_doc.get("users", []) if u["username"] == place.key), None)
    for person in reg_doc.get("residents", []):
        if place.kind == "resident" and person["id"] == place.key:
            return dict(person)
        for device in person.get("devices", []):
            if place.kind == "device" and device["id"] == place.key:
                return {**device, "resident_id": person["id"]}
    return None


# --- the job (in a child process) -----------------------------------------------------


def run_edit(conninfo: str, actor: str, version: str, edit: Edit, limits: DocumentLimits) -> Applied:
    """Lock the registry, check `version`, apply `edit`, validate, save, log; in the
    child (dashboard/routes_admin.py runs it with `run_isolated`)."""
    import psycopg

    from storage.admin_store import record_change
    from storage.registry_store import save_registry
    from trygg.registry import dump_registry

    try:
        with psycopg.connect(conninfo, connect_timeout=10) as conn, conn.transaction():
            conn.execute("LOCK TABLE trygg.registry IN EXCLUSIVE MODE")
            row = conn.execute("SELECT document, loaded_at FROM trygg.registry WHERE id = 1").fetchone()
            current = version_of(row[1] if row else None)
            if version != current:
                raise stale(current)
            doc: dict[str, Any] = copy.deepcopy(row[0]) if row else {}
            known = frozenset(r[0] for r in conn.execute("SELECT username FROM trygg.users"))
            change, place = apply_edit(doc, edit, known)
            try:
                reg = parse_registry(json.dumps(doc, ensure_ascii=True).encode(), limits)
            except RegistryError as exc:
                raise field_errors(exc, place) from None
            try:
                save_registry(conn, reg, actor=actor)
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                first = (str(exc).strip().splitlines() or ["refused"])[0]
                raise EditError(422, f"PostgreSQL refused it ({first})",
                                [(["document"], f"PostgreSQL refused it ({first})")]) from None
            record_change(conn, actor, change)
            saved = conn.execute("SELECT loaded_at FROM trygg.registry WHERE id = 1").fetchone()
            assert saved is not None
            return Applied(version_of(saved[0]), change, _saved(dump_registry(reg), place))
    except psycopg.OperationalError as exc:
        raise EditError(503, f"the database is unavailable; nothing was changed ({str(exc).strip()[:200]})"
                        ) from None


__all__ = ["NO_VERSION", "RESIDENT_FIELDS", "Applied", "Edit", "EditError", "apply_edit", "field_errors",
           "run_edit", "stale", "version_of"]
