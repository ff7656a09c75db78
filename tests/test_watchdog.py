"""A part that must not end ends: `trygg up` exits non-zero, so a supervisor restarts it
(trygg/watchdog.py), instead of staying alive but deaf."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fix_mqtt import MosquittoInstance
from tests.helpers import REGISTRY_YAML
from trygg import watchdog

# --- the mechanism, in this process (the exit is recorded instead of made) ------------


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    made: list[int] = []
    monkeypatch.setattr(watchdog, "exit_process", made.append)
    return made


def test_a_thread_that_returns_on_its_own_ends_the_process(exits: list[int]) -> None:
    thread = watchdog.WatchedThread(lambda: None, "trygg-test", stopping=lambda: False)
    thread.start()
    thread.join(5)
    assert exits == [watchdog.EXIT_CODE]


def test_a_thread_that_raises_ends_the_process(exits: list[int]) -> None:
    def fail() -> None:
        raise RuntimeError("boom")

    thread = watchdog.WatchedThread(fail, "trygg-test", stopping=lambda: False)
    thread.start()
    thread.join(5)
    assert exits == [watchdog.EXIT_CODE]


def test_a_thread_asked_to_stop_ends_quietly(exits: list[int]) -> None:
    stop = threading.Event()
    thread = watchdog.WatchedThread(lambda: stop.wait(), "trygg-test", stopping=stop.is_set)
    thread.start()
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    assert exits == []


def test_a_task_that_returns_ends_the_process_but_a_cancelled_one_does_not(exits: list[int]) -> None:
    async def main() -> None:
        async def returns() -> None:
            await asyncio.sleep(0)

        watchdog.watch_task(asyncio.create_task(returns(), name="returns"), lambda: False)
        cancelled = watchdog.watch_task(asyncio.create_task(asyncio.sleep(10), name="cancelled"), lambda: False)
        await asyncio.sleep(0.01)
        cancelled.cancel()
        await asyncio.sleep(0.01)

    asyncio.run(main())
    assert exits == [watchdog.EXIT_CODE]


# --- `trygg up` with a part patched to end, against the real broker and database -------

#: Runs `trygg up` after making one part end on its own two seconds after it started.
LAUNCH = """
import sys, time
{patch}
from composition.cli import main
sys.argv = ["trygg", "up"]
main()
"""

ENDING_TASK = """
import processors.stage as stage
async def run(self):
    import asyncio
    await asyncio.sleep(2)
stage.ProcessorStage.run = run
"""

ENDING_THREAD = """
import gateway.durable as durable
def _run(self):
    time.sleep(2)
durable.DurableWriter._run = _run
"""


@pytest.fixture
def up_env(tmp_path: Path, database: str, mosquitto: MosquittoInstance) -> Iterator[dict[str, str]]:
    registry = tmp_path / "registry.yaml"
    registry.write_text(REGISTRY_YAML)
    subprocess.run([sys.executable, "-m", "trygg", "registry", "load", str(registry)], check=True,
                   env={**os.environ, "TRYGG_DATABASE_URL": database}, capture_output=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRYGG_")}
    env.update({"TRYGG_DATA_DIR": str(tmp_path / "data"), "TRYGG_LOG_FORMAT": "json",
                "TRYGG_PSEUDONYM_KEY": "k" * 32, "TRYGG_SESSION_SECRET": "s" * 32,
                "TRYGG_HTTP_PORT": "0", "TRYGG_DATABASE_URL": database,
                "TRYGG_MQTT_URL": f"mqtt://127.0.0.1:{mosquitto.port}",
                "TRYGG_MQTT_CLIENT_ID": f"trygg-watchdog-{time.monotonic_ns()}"})
    yield env


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("patch", [ENDING_TASK, ENDING_THREAD], ids=["rules-task", "durable-writer-thread"])
def test_trygg_up_exits_non_zero_when_a_part_ends(up_env: dict[str, str], patch: str) -> None:
    proc = subprocess.run([sys.executable, "-c", LAUNCH.format(patch=patch)], env=up_env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == watchdog.EXIT_CODE, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "part_that_must_not_end_has_ended" in proc.stderr
