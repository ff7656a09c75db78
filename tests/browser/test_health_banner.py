"""Trygg cannot write to its disk: the staff console says so. The alert journal's
directory is a small tmpfs that fills up; an alarm still reaches the console, and a
banner (Norwegian, with English) says that the server's disk fails, naming the journal,
until a write succeeds again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import BrowserContext, expect

from tests.browser.support import USERS, System, login, make_system, shot, watch
from tests.fix_db import create_database, drop_database
from tests.fix_disk import SmallDisk, fill
from tests.fix_mqtt import MosquittoInstance

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def full_journal_disk(mosquitto: MosquittoInstance, pg_admin_url: str, tmp_path: Path,
                      small_disk: SmallDisk) -> Iterator[tuple[System, Path]]:
    """A `trygg up` whose alert journal lives on a 256 KiB tmpfs."""
    database = create_database(pg_admin_url)
    running = make_system(mosquitto, database, tmp_path)
    disk = small_disk(tmp_path / "data" / "alerts", "256k")
    try:
        running.start_with_users([u for u in USERS if u[0] == "ola"])
        yield running, disk
    finally:
        running.stop()
        drop_database(pg_admin_url, database)


def test_the_console_shows_a_banner_while_the_servers_disk_is_full(
        full_journal_disk: tuple[System, Path], context: BrowserContext) -> None:
    system, disk = full_journal_disk
    page = context.new_page()
    seen = watch(page)
    login(page, system.base_url, "ola", "/")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    banner = page.locator("#health")
    # within one health check (10 s): a page opened while `trygg up` was still connecting
    # to the broker may have seen it down at its first check
    expect(banner).to_be_hidden(timeout=12_000)

    ballast = fill(disk)
    system.publish("d-3-alarm", "alarm.button")
    expect(page.locator("#alerts li.alert[data-resident='r-3']")).to_have_attribute("data-state", "open")
    health = httpx.get(f"{system.base_url}/healthz").json()
    assert health["status"] == "degraded" and health["local_log"] == "disk full: alerts"
    expect(banner).to_be_visible(timeout=12_000)
    expect(banner).to_contain_text("Trygg får ikke skrevet til disken på serveren (disk full: alerts)")
    expect(banner).to_contain_text("Trygg cannot write to the server's disk")
    shot(page, "console-disk-full")

    ballast.unlink()
    system.publish("d-4-alarm", "alarm.button")  # its change is journaled: the disk takes writes again
    expect(page.locator("#alerts li.alert[data-resident='r-4']")).to_have_attribute("data-state", "open")
    expect(banner).to_be_hidden(timeout=12_000)
    seen.check()
