"""Request bodies have a ceiling (dashboard/body_limit.py): a client — also one not
signed in — cannot make the process that runs the alarm path read gigabytes into
memory. Beyond 1 MiB the answer is 413 with a message, whether the size is declared or
the body comes in chunks; the registry upload keeps its own larger limit."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dashboard.body_limit import MAX_BODY_BYTES
from tests.fix_api import OUR_PAGE, World

pytestmark = pytest.mark.integration

TOO_BIG = b'{"token": "' + b"x" * (MAX_BODY_BYTES + 1) + b'", "password": "p"}'


def chunks(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start:start + size]


def test_a_body_beyond_the_limit_is_413_before_sign_in(shared_world: World) -> None:
    for content in (TOO_BIG, chunks(TOO_BIG)):  # declared, and chunked (no Content-Length)
        response = shared_world.client.post("/api/password-links/use", content=content,
                                            headers={**OUR_PAGE, "Content-Type": "application/json"})
        assert response.status_code == 413, response.text
        assert "larger than 1024 KiB" in response.json()["detail"]
    login = shared_world.client.post("/login", content=b"username=a&password=" + b"p" * (2 * MAX_BODY_BYTES),
                                     headers={**OUR_PAGE, "Content-Type": "application/x-www-form-urlencoded"})
    assert login.status_code == 413


def test_a_signed_in_caller_is_held_to_it_too_and_smaller_bodies_are_read(shared_world: World) -> None:
    admin = shared_world.headers("admin")
    huge = {"version": "v", "resident": {"id": "r-big", "name": "x" * (MAX_BODY_BYTES + 1), "team": "east"}}
    assert shared_world.client.post("/api/admin/residents", json=huge, headers=admin).status_code == 413
    small = {"version": "not-the-version", "resident": {"id": "r-big", "name": "x", "team": "east"}}
    assert shared_world.client.post("/api/admin/residents", json=small, headers=admin).status_code == 409
    # The registry upload streams under its own limit (TRYGG_REGISTRY_MAX_MB).
    assert shared_world.client.get("/healthz").status_code == 200
