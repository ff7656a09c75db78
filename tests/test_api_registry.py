"""PUT/GET /api/registry: the same validation as `trygg registry load`, replaced as a
whole, errors with their paths, nothing changed by a bad document."""

from __future__ import annotations

import json

import psycopg
import pytest
import yaml

from tests.test_api_support import REGISTRY_YAML, World, world
from trygg.registry import dump_registry, parse_registry

pytestmark = pytest.mark.integration

__all__ = ["world"]


def table_counts(w: World) -> tuple[object, ...]:
    with psycopg.connect(w.url) as conn:
        row = conn.execute("SELECT (SELECT count(*) FROM trygg.teams), (SELECT count(*) FROM trygg.residents),"
                           " (SELECT count(*) FROM trygg.devices), (SELECT document FROM trygg.registry)"
                           ).fetchone()
    assert row is not None
    return tuple(row)


def test_put_json_then_get_returns_the_same_document(world: World) -> None:
    doc = yaml.safe_load(REGISTRY_YAML)
    doc["residents"] = [r for r in doc["residents"] if r["id"] != "r-7"]
    doc["residents"][0]["name"] = "Kari Nordmann-Hansen"
    response = world.client.put("/api/registry", headers=world.headers("admin"), json=doc)
    assert response.status_code == 200, response.text
    assert response.json() == {"teams": 3, "residents": 6, "devices": 11, "users": 8}
    got = world.client.get("/api/registry", headers=world.headers("admin"))
    assert got.status_code == 200
    assert got.json() == dump_registry(parse_registry(json.dumps(doc)))
    assert table_counts(world)[:3] == (3, 6, 11)
    names = world.client.get("/api/residents", headers=world.headers("admin")).json()
    assert names[0]["name"] == "Kari Nordmann-Hansen"


def test_put_yaml_and_get_yaml(world: World) -> None:
    response = world.client.put("/api/registry", content=REGISTRY_YAML.encode(),
                                headers={**world.headers("admin"), "Content-Type": "application/yaml"})
    assert response.status_code == 200, response.text
    got = world.client.get("/api/registry", headers={**world.headers("admin"), "Accept": "application/yaml"})
    assert got.headers["content-type"].startswith("application/yaml")
    assert yaml.safe_load(got.text) == dump_registry(parse_registry(REGISTRY_YAML))


def test_a_bad_document_is_422_with_paths_and_changes_nothing(world: World) -> None:
    before = table_counts(world)
    doc = yaml.safe_load(REGISTRY_YAML)
    doc["residents"][0]["devices"][1]["kind"] = "smoke"
    doc["residents"][1]["team"] = "north"
    doc["teams"] = []  # every resident's team is now unknown
    response = world.client.put("/api/registry", headers=world.headers("admin"), json=doc)
    assert response.status_code == 422
    body = response.json()
    assert "residents[0].devices[1].kind: unknown kind 'smoke'" in body["errors"]
    assert all(item["loc"][0] == "body" and item["msg"] for item in body["detail"])
    assert table_counts(world) == before

    cross = yaml.safe_load(REGISTRY_YAML)
    cross["residents"][1]["team"] = "north"
    response = world.client.put("/api/registry", headers=world.headers("admin"), json=cross)
    assert response.status_code == 422
    assert response.json()["errors"] == ["residents[1].team: unknown team 'north'"]
    assert table_counts(world) == before


@pytest.mark.parametrize(("content", "content_type"), [
    (b"teams: [", "application/yaml"),
    (b"[1, 2, 3]", "application/json"),
    (b'{"teams": [{"id": "x", "name": "a\\u0000b"}]}', "application/json"),
    (b"\xff\xfe", "application/json"),
])
def test_garbage_is_422(world: World, content: bytes, content_type: str) -> None:
    before = table_counts(world)
    response = world.client.put("/api/registry", content=content,
                                headers={**world.headers("admin"), "Content-Type": content_type})
    assert response.status_code == 422, response.text
    assert response.json()["errors"]
    assert table_counts(world) == before


def test_other_media_types_are_415(world: World) -> None:
    response = world.client.put("/api/registry", content=b"<registry/>",
                                headers={**world.headers("admin"), "Content-Type": "application/xml"})
    assert response.status_code == 415


def test_a_put_keeps_passwords_and_logs_who(world: World) -> None:
    world.client.put("/api/registry", headers=world.headers("admin"), json=yaml.safe_load(REGISTRY_YAML))
    assert world.client.get("/api/auth/me", headers=world.headers("staff-east")).status_code == 200
    assert world.audit_rows()[-1] == ("admin", "admin", None, "PUT /api/registry")
    with psycopg.connect(world.url) as conn:
        assert conn.execute("SELECT loaded_by FROM trygg.registry").fetchone() == ("admin",)
