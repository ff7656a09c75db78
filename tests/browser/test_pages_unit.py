"""dashboard/pages.py and the console's web app files without a browser: which hosts the
pages' CSP allows images from; the manifest's icons; what the service worker leaves alone."""

from __future__ import annotations

import json
import re
import struct

import pytest

from dashboard.pages import STATIC_DIR, tile_source


@pytest.mark.parametrize(("url", "source"), [
    ("https://tile.openstreetmap.org/{z}/{x}/{y}.png", "https://tile.openstreetmap.org"),
    ("https://{s}.tile.example.org/{z}/{x}/{y}.png", "https://*.tile.example.org"),
    ("http://127.0.0.1:8080/tiles/{z}/{x}/{y}.png", "http://127.0.0.1:8080"),
    ("/tiles/{z}/{x}/{y}.png", None),  # our own origin: 'self' already allows it
    ("javascript:alert(1)", None),
    ("https://evil.example'; script-src *;/{z}.png", None),
    ("", None),
])
def test_the_tile_host_becomes_one_csp_source(url: str, source: str | None) -> None:
    assert tile_source(url) == source


def test_the_web_app_manifest_names_the_console_and_its_icons_exist() -> None:
    manifest = json.loads((STATIC_DIR / "manifest.webmanifest").read_text(encoding="utf-8"))
    assert (manifest["short_name"], manifest["start_url"], manifest["display"]) == ("Trygg", "/", "standalone")
    for icon in manifest["icons"]:
        path = STATIC_DIR / icon["src"].removeprefix("/static/")
        data = path.read_bytes()
        if icon["type"] == "image/png":  # the size the manifest says is the size of the picture
            assert data[:8] == b"\x89PNG\r\n\x1a\n"
            width, height = struct.unpack(">II", data[16:24])
            assert icon["sizes"] == f"{width}x{height}", icon


def test_the_service_worker_never_touches_the_api() -> None:
    source = (STATIC_DIR / "sw.js").read_text(encoding="utf-8")
    never = re.search(r"const NEVER = /(.+)/;", source)
    assert never is not None
    pattern = re.compile(never.group(1).replace("\\/", "/"))
    for path in ("/api/alerts", "/api/alerts/stream", "/healthz", "/login", "/logout"):
        assert pattern.match(path), path
    for path in ("/", "/static/js/console.js"):
        assert not pattern.match(path), path
