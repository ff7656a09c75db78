"""PUT/GET /api/registry: the same validation as `trygg registry load`, replaced as a
whole, errors with their paths, nothing changed by a bad document."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest
import yaml

from simulators.profiles import build_residents
from simulators.registry_gen import fleet_registry, registry_yaml
from tests.fix_api import REGISTRY_YAML, World
from tests.registry_documents import alias_bomb, many_aliases, too_deep
from trygg.registry import dump_registry, parse_registry

pytestmark = pytest.mark.integration


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


# --- limits (trygg/registry_limits.py): refused before parsing, named, nothing changed ----


def put_yaml(w: World, text: str | bytes) -> httpx.Response:
    body = text.encode() if isinstance(text, str) else text
    return w.client.put("/api/registry", content=body,
                        headers={**w.headers("admin"), "Content-Type": "application/yaml"})


@pytest.mark.parametrize(("document", "status", "says"), [
    (alias_bomb(), 422, "the YAML aliases stand for more values than the limit of 100,000"),
    (many_aliases(), 422, "more YAML aliases than the limit of 1,000"),
    (too_deep(), 422, "nested deeper than the limit of 32 levels"),
], ids=["alias-bomb", "400k-aliases", "too-deep"])
def test_a_document_beyond_a_limit_is_refused_at_once_naming_it(
        world: World, document: str, status: int, says: str) -> None:
    before = table_counts(world)
    started = time.monotonic()
    response = put_yaml(world, document)
    assert response.status_code == status, response.text[:300]
    assert says in response.json()["errors"][0]
    assert time.monotonic() - started < 10
    assert table_counts(world) == before


def test_a_document_over_the_size_setting_is_413(world: World) -> None:
    world.app.state.trygg.settings.registry_max_mb = 1
    before = table_counts(world)
    response = put_yaml(world, REGISTRY_YAML + "#" * (2 * 1024 * 1024))
    assert response.status_code == 413
    assert response.json()["errors"] == ["(document): larger than the limit of 1 MiB (TRYGG_REGISTRY_MAX_MB)"]
    assert table_counts(world) == before


class GilWatch:
    """How long a thread of this process — the alarm path's, in `trygg up` — waits for
    the GIL: a 1 ms sleep, over and over, and its longest overshoot."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gil-watch", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            time.sleep(0.001)
            self.worst = max(self.worst, time.perf_counter() - started - 0.001)

    def __enter__(self) -> GilWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.serial
@pytest.mark.slow
def test_a_large_registry_loads_without_holding_this_process(world: World) -> None:
    """10,000 residents (8 MiB of YAML, like a large municipality's): parsed, validated
    and saved in a child process, while this process's threads keep running."""
    text = registry_yaml(fleet_registry(build_residents(2026, 10_000)))
    assert len(text) > 8 * 1024 * 1024
    with GilWatch() as gil:
        response = put_yaml(world, text)
    assert response.status_code == 200, response.text[:500]
    assert response.json()["residents"] == 10_000
    assert table_counts(world)[1] == 10_000
    assert gil.worst < 0.1, f"a thread of the dashboard's process waited {gil.worst:.3f} s"


def test_trygg_registry_load_prints_one_line_for_a_limit_and_exits_non_zero(
        database: str, tmp_path: Path) -> None:
    env = {**os.environ, "TRYGG_DATABASE_URL": database, "TRYGG_DATA_DIR": str(tmp_path),
           "TRYGG_REGISTRY_MAX_MB": "1"}
    cases = [(alias_bomb(), "the YAML aliases stand for more values than the limit of 100,000 (*a4, line 7)"),
             (many_aliases(100_000), "more YAML aliases than the limit of 1,000 (*r, line 1004): write the values "
                                     "out, or send JSON"),
             (too_deep(), "mappings and lists nested deeper than the limit of 32 levels (line 1)"),
             (REGISTRY_YAML + "#" * (2 * 1024 * 1024), "larger than the limit of 1 MiB (TRYGG_REGISTRY_MAX_MB)")]
    for i, (document, says) in enumerate(cases):
        path = tmp_path / f"registry-{i}.yaml"
        path.write_text(document)
        done = subprocess.run([sys.executable, "-m", "trygg", "registry", "load", str(path)], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 1
        [line] = done.stderr.splitlines()
        assert line == f"trygg: {path}: {says}; the registry was not changed", line
