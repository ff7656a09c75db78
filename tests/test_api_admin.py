"""The admin page's API (docs/admin.md): residents, devices and users edited through the
registry document with the registry's own validation, optimistic concurrency on the
registry's version, a change log without secrets, administrators only."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.fix_api import OUR_PAGE, PASSWORD, World
from tests.fix_db import scalar

pytestmark = pytest.mark.integration

ADMIN = "admin"


def get(w: World, path: str, user: str = ADMIN) -> Any:
    response = w.client.get(path, headers=w.headers(user))
    assert response.status_code == 200, response.text
    return response.json()


def version(w: World) -> str:
    return str(get(w, "/api/admin/users")["version"])


def send(w: World, method: str, path: str, body: dict[str, Any], user: str = ADMIN) -> Any:
    return w.client.request(method, path, headers=w.headers(user), json=body)


def registry_doc(w: World) -> dict[str, Any]:
    with psycopg.connect(w.url) as conn:
        row = conn.execute("SELECT document FROM trygg.registry").fetchone()
    assert row is not None
    return dict(row[0])


def changes(w: World) -> list[dict[str, Any]]:
    return list(get(w, "/api/admin/changes"))


NEW = {"id": "adm-1", "name": "Astrid Admin", "team": "east", "address": "Storgata 1, 0155 Oslo",
       "access": {"key_box": "Nøkkelboks ved døra, kode 4711", "notes": "hund"},
       "contacts": [{"name": "Sønn", "relation": "sønn", "phone": "+47 912 34 567"}],
       "consents": {"research": True, "relatives_status": True},
       "location_basis": {"kind": "vedtak", "valid_until": "2027-06-30"},
       "night": {"start": "22:00", "end": "07:00"}}


def test_add_edit_and_retire_a_resident_with_devices(world: World) -> None:
    v0 = version(world)
    added = send(world, "POST", "/api/admin/residents", {"version": v0, "resident": NEW})
    assert added.status_code == 201, added.text
    v1 = added.json()["version"]
    assert v1 != v0
    assert added.json()["result"]["access"]["key_box"].endswith("4711")
    device = send(world, "POST", "/api/admin/residents/adm-1/devices",
                  {"version": v1, "device": {"id": "adm-d-1", "kind": "alarm_unit"}})
    assert device.status_code == 201, device.text
    v2 = device.json()["version"]
    with psycopg.connect(world.url) as conn:
        assert conn.execute("SELECT resident_id, kind FROM trygg.devices WHERE id = 'adm-d-1'").fetchone() == (
            "adm-1", "alarm_unit")
        assert conn.execute("SELECT card->'access'->>'notes' FROM trygg.residents WHERE id = 'adm-1'"
                            ).fetchone() == ("hund",)

    one = get(world, "/api/admin/residents/adm-1")
    assert one["version"] == v2 and [d["id"] for d in one["resident"]["devices"]] == ["adm-d-1"]
    listed = get(world, "/api/admin/residents?q=astrid")
    assert listed["total"] == 1 and listed["residents"][0] == {
        "id": "adm-1", "name": "Astrid Admin", "team": "east", "team_name": "Hjemmetjenesten Øst", "devices": 1}

    changed = {**NEW, "team": "west", "consents": {"research": False}}
    del changed["id"]
    edit = send(world, "PUT", "/api/admin/residents/adm-1", {"version": v2, "resident": changed})
    assert edit.status_code == 200, edit.text
    v3 = edit.json()["version"]
    assert edit.json()["result"]["team"] == "west"
    assert [d["id"] for d in edit.json()["result"]["devices"]] == ["adm-d-1"]  # devices kept

    moved = send(world, "POST", "/api/admin/devices/adm-d-1/move", {"version": v3, "resident_id": "r-4"})
    assert moved.status_code == 200, moved.text
    v4 = moved.json()["version"]
    assert scalar(world.url, "SELECT resident_id FROM trygg.devices WHERE id = 'adm-d-1'") == "r-4"
    kind = send(world, "PUT", "/api/admin/devices/adm-d-1", {"version": v4, "device": {"kind": "phone"}})
    assert kind.status_code == 200, kind.text
    removed = send(world, "POST", "/api/admin/devices/adm-d-1/remove", {"version": kind.json()["version"]})
    assert removed.status_code == 200, removed.text
    retired = send(world, "POST", "/api/admin/residents/adm-1/retire", {"version": removed.json()["version"]})
    assert retired.status_code == 200, retired.text
    assert scalar(world.url, "SELECT count(*) FROM trygg.residents WHERE id = 'adm-1'") == 0
    assert world.client.get("/api/admin/residents/adm-1", headers=world.headers(ADMIN)).status_code == 404

    log = changes(world)
    assert [c["action"] for c in log] == ["resident.retire", "device.remove", "device.update", "device.move",
                                          "resident.update", "device.add", "resident.create"]
    assert all(c["actor"] == ADMIN and c["at"] for c in log)
    update = log[4]["summary"]["changed"]
    assert update["team"] == {"from": "east", "to": "west"}
    text = str(log)
    for secret in ("4711", "912 34 567", "Storgata", "hund", "Astrid"):
        assert secret not in text, secret
    assert log[3]["summary"] == {"from": "adm-1", "to": "r-4", "kind": "alarm_unit"}
    with psycopg.connect(world.url) as conn:
        assert conn.execute("SELECT loaded_by FROM trygg.registry").fetchone() == (ADMIN,)


def test_a_stale_version_is_409_and_changes_nothing(world: World) -> None:
    v0 = version(world)
    first = send(world, "PUT", "/api/admin/devices/d-4-alarm", {"version": v0, "device": {"kind": "alarm_unit",
                                                                                         "heartbeat_s": 120}})
    assert first.status_code == 200, first.text
    before = registry_doc(world)
    again = send(world, "POST", "/api/admin/residents/r-4/retire", {"version": v0})
    assert again.status_code == 409
    assert "reload" in again.json()["detail"]
    assert registry_doc(world) == before
    made_up = send(world, "POST", "/api/admin/residents/r-4/retire", {"version": "2020-01-01T00:00:00+00:00"})
    assert made_up.status_code == 409


@pytest.mark.parametrize(("resident", "loc"), [
    ({"id": "adm-x", "name": "", "team": "east"}, ["body", "resident", "name"]),
    ({"id": "adm-x", "name": "X", "team": "nowhere"}, ["body", "resident", "team"]),
    ({"id": "adm-x", "name": "X", "team": "east", "contacts": [{"name": "A", "phone": "=HYPERLINK(1)"}]},
     ["body", "resident", "contacts", 0, "phone"]),
    ({"id": "adm-x", "name": "X", "team": "east", "location_basis": {"kind": "vedtak", "valid_until": "soon"}},
     ["body", "resident", "location_basis", "valid_until"]),
    ({"id": "adm-x", "name": "X", "team": "east", "access": {"key_box": "a\x00b"}},
     ["body", "resident", "access", "key_box"]),
    ({"id": "adm-x", "name": "X", "team": "east", "surprise": 1}, ["body", "resident", "surprise"]),
    ({"id": "adm-x", "name": "X" * 201, "team": "east"}, ["body", "resident", "name"]),
    ({"id": "r-1", "name": "X", "team": "east"}, ["body", "resident", "id"]),
    ({"id": "<script>", "name": "X", "team": "east"}, ["body", "resident.id"]),
    ({"id": "adm-x", "name": "X", "team": "east", "night": {"start": "25:00"}},
     ["body", "resident", "night", "start"]),
], ids=["empty-name", "unknown-team", "bad-phone", "bad-date", "nul", "unknown-field", "long-name", "duplicate-id",
        "hostile-id", "bad-time"])
def test_invalid_residents_are_422_with_the_field(world: World, resident: dict[str, Any], loc: list[Any]) -> None:
    before = registry_doc(world)
    response = send(world, "POST", "/api/admin/residents", {"version": version(world), "resident": resident})
    assert response.status_code == 422, response.text
    assert loc in [d["loc"] for d in response.json()["detail"]], response.json()
    assert registry_doc(world) == before
    assert changes(world) == []


def test_device_and_user_errors(world: World) -> None:
    v = version(world)
    duplicate = send(world, "POST", "/api/admin/residents/r-4/devices",
                     {"version": v, "device": {"id": "d-1-alarm", "kind": "alarm_unit"}})
    assert duplicate.status_code == 422 and duplicate.json()["detail"][0]["loc"] == ["body", "device", "id"]
    kind = send(world, "POST", "/api/admin/residents/r-4/devices",
                {"version": v, "device": {"id": "adm-d", "kind": "toaster"}})
    assert kind.status_code == 422 and kind.json()["detail"][0]["loc"] == ["body", "device", "kind"]
    assert send(world, "POST", "/api/admin/residents/r-404/devices",
                {"version": v, "device": {"id": "adm-d", "kind": "phone"}}).status_code == 404
    assert send(world, "POST", "/api/admin/devices/nope/move", {"version": v, "resident_id": "r-1"}
                ).status_code == 404
    nowhere = send(world, "POST", "/api/admin/devices/d-4-alarm/move", {"version": v, "resident_id": "r-404"})
    assert nowhere.status_code == 422 and nowhere.json()["detail"][0]["loc"] == ["body", "device", "resident_id"]
    team = send(world, "POST", "/api/admin/users", {"version": v, "user": {"username": "adm-u", "role": "staff",
                                                                        "teams": ["nowhere"]}})
    assert team.status_code == 422 and team.json()["detail"][0]["loc"] == ["body", "user", "teams", 0]
    taken = send(world, "POST", "/api/admin/users", {"version": v, "user": {"username": "operator",
                                                                         "role": "staff"}})
    assert taken.status_code == 422 and taken.json()["detail"][0]["loc"] == ["body", "user", "username"]
    own = send(world, "PUT", "/api/admin/users/admin", {"version": v, "user": {"role": "staff"}})
    assert own.status_code == 422
    assert changes(world) == []


def test_users_are_listed_without_passwords_and_edited_through_the_registry(world: World) -> None:
    listed = get(world, "/api/admin/users")
    assert "password_hash" not in str(listed) and "argon2" not in str(listed)
    staff = next(u for u in listed["users"] if u["username"] == "staff-east")
    assert staff["has_password"] is True and staff["in_registry"] is True and staff["teams"] == ["east"]

    made = send(world, "POST", "/api/admin/users",
                {"version": listed["version"], "user": {"username": "adm-nurse", "role": "staff", "teams": ["east"]}})
    assert made.status_code == 201, made.text
    changed = send(world, "PUT", "/api/admin/users/adm-nurse",
                   {"version": made.json()["version"], "user": {"role": "staff", "teams": ["east", "west"]}})
    assert changed.status_code == 200, changed.text
    user = next(u for u in get(world, "/api/admin/users")["users"] if u["username"] == "adm-nurse")
    assert (user["teams"], user["has_password"], user["in_registry"]) == (["east", "west"], False, True)
    assert [u["username"] for u in registry_doc(world)["users"]].count("adm-nurse") == 1
    # A later edit of anything else keeps the user's teams (the document holds them).
    send(world, "PUT", "/api/admin/devices/d-4-alarm",
         {"version": changed.json()["version"], "device": {"kind": "alarm_unit"}})
    assert scalar(world.url, "SELECT teams FROM trygg.users WHERE username = 'adm-nurse'") == ["east", "west"]
    log = changes(world)
    assert log[1]["summary"] == {"changed": {"teams": {"from": ["east"], "to": ["east", "west"]}}}


def test_retiring_unlinks_relatives_and_keeps_history(world: World) -> None:
    before = scalar(world.url, "SELECT count(*) FROM trygg.events WHERE resident_id = 'r-1'")
    retired = send(world, "POST", "/api/admin/residents/r-1/retire", {"version": version(world)})
    assert retired.status_code == 200, retired.text
    assert scalar(world.url, "SELECT residents FROM trygg.users WHERE username = 'relative-1'") == []
    assert scalar(world.url, "SELECT count(*) FROM trygg.events WHERE resident_id = 'r-1'") == before > 0
    assert changes(world)[0]["summary"]["users_unlinked"] == ["relative-1"]


@pytest.mark.parametrize("user", ["operator", "staff-east", "relative-1", "researcher"])
def test_only_admins(world: World, user: str) -> None:
    v = version(world)
    calls = [("GET", "/api/admin/residents", None), ("GET", "/api/admin/residents/r-1", None),
             ("GET", "/api/admin/users", None), ("GET", "/api/admin/changes", None),
             ("POST", "/api/admin/residents", {"version": v, "resident": NEW}),
             ("PUT", "/api/admin/residents/r-1", {"version": v, "resident": {"name": "X", "team": "east"}}),
             ("POST", "/api/admin/residents/r-1/retire", {"version": v}),
             ("POST", "/api/admin/residents/r-1/devices", {"version": v, "device": {"id": "x", "kind": "phone"}}),
             ("PUT", "/api/admin/devices/d-1-alarm", {"version": v, "device": {"kind": "phone"}}),
             ("POST", "/api/admin/devices/d-1-alarm/move", {"version": v, "resident_id": "r-2"}),
             ("POST", "/api/admin/devices/d-1-alarm/remove", {"version": v}),
             ("POST", "/api/admin/users", {"version": v, "user": {"username": "x", "role": "admin"}}),
             ("PUT", "/api/admin/users/operator", {"version": v, "user": {"role": "admin"}}),
             ("POST", "/api/admin/users/operator/password-link", None)]
    for method, path, body in calls:
        response = world.client.request(method, path, headers=world.headers(user), json=body)
        assert response.status_code == 403, (method, path, response.text)
        if body is not None:  # the role is refused before the input is read: no field errors
            garbage = world.client.request(method, path, headers=world.headers(user), json={"x": [1]})
            assert garbage.status_code == 403, (method, path, garbage.text)
    assert world.client.get("/api/admin/users").status_code == 401
    assert changes(world) == []


def test_cookie_edits_need_our_own_page(world: World) -> None:
    """The session cookie works for edits from Trygg's own page only (CSRF,
    dashboard/deps.py `require_same_origin`)."""
    login = world.client.post("/login", data={"username": ADMIN, "password": PASSWORD}, headers=OUR_PAGE)
    assert login.status_code == 303 and login.headers["location"] == "/admin"
    cookie = {"Cookie": f"trygg_session={login.cookies['trygg_session']}"}
    world.client.cookies.clear()
    v = version(world)
    body = {"version": v, "device": {"kind": "phone"}}
    forged = world.client.put("/api/admin/devices/d-4-alarm", json=body,
                              headers={**cookie, "Sec-Fetch-Site": "cross-site"})
    assert forged.status_code == 403 and "Trygg's own pages" in forged.json()["detail"]
    link = world.client.post("/api/admin/users/operator/password-link", headers={**cookie, "Origin": "null"})
    assert link.status_code == 403
    ours = world.client.put("/api/admin/devices/d-4-alarm", json=body, headers={**cookie, **OUR_PAGE})
    assert ours.status_code == 200, ours.text
    assert [c["action"] for c in changes(world)] == ["device.update"]


def test_reads_are_audited_and_the_change_log_filters(world: World) -> None:
    before = len(world.audit_rows())
    get(world, "/api/admin/residents/r-3")
    listed = get(world, "/api/admin/residents?team=west")
    assert [r["id"] for r in listed["residents"]] == ["r-2"]
    rows = world.audit_rows()[before:]
    assert rows == [(ADMIN, "admin", "r-3", "GET /api/admin/residents/r-3"),
                    (ADMIN, "admin", "r-2", "GET /api/admin/residents?team=west")]
    v = version(world)
    v = send(world, "PUT", "/api/admin/devices/d-4-alarm", {"version": v, "device": {"kind": "phone"}}
             ).json()["version"]
    send(world, "PUT", "/api/admin/devices/d-5-alarm", {"version": v, "device": {"kind": "phone"}})
    assert [c["target_id"] for c in get(world, "/api/admin/changes?target_id=d-5-alarm")] == ["d-5-alarm"]
    first = get(world, "/api/admin/changes?limit=1")
    assert [c["target_id"] for c in first] == ["d-5-alarm"]
    assert [c["target_id"] for c in get(world, f"/api/admin/changes?limit=1&before={first[0]['id']}")] == [
        "d-4-alarm"]
    assert get(world, "/api/admin/changes?actor=someone") == []
    assert world.client.get("/api/admin/changes?target_kind=<x>", headers=world.headers(ADMIN)).status_code == 422
    with psycopg.connect(world.url) as conn, pytest.raises(psycopg.Error):
        conn.execute("DELETE FROM trygg.admin_changes")


@pytest.mark.parametrize("body", [
    '{"version": "%s", "resident": {}}' % ("x" * 65),
    '{"version": 1, "resident": {}}',
    '{"resident": {"id": "a"}}',
    '{"version": "v", "resident": []}',
    '{"version": "\\ud800", "resident": {}}',
    '{"version": "{v}", "resident": {"id": "adm-s", "name": "\\ud800", "team": "east"}}',
    '{"version": "{v}", "resident": {"id": "adm-s", "name": "X", "team": "east", "safe_zones": [[[[[]]]]]}}',
    '{"version": "{v}", "resident": {"id": "adm-s", "name": "X", "team": "east", "address": "\\u0000"}}',
    "not json",
], ids=["long-version", "number-version", "no-version", "list", "surrogate-version", "surrogate-name",
        "nested", "nul-address", "not-json"])
def test_hostile_bodies_are_4xx(world: World, body: str) -> None:
    response = world.client.post("/api/admin/residents", content=body.replace("{v}", version(world)),
                                 headers={**world.headers(ADMIN), "Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert changes(world) == []
