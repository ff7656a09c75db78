"""An instance of the cluster mode never runs a partition's work twice
(composition/cluster_app.py `Instance`): work that does not stop when its lease goes ends
the process, so that a supervisor restarts it, instead of running on beside the next owner."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from composition import cluster_app
from composition.cluster_app import Instance
from trygg import watchdog


class Stubborn:
    """A partition's work whose cancel is lost (as `asyncio.wait_for` on Python 3.11 can
    lose one), until `released`."""

    def __init__(self) -> None:
        self.running = asyncio.Event()
        self.released = False
        self.cancels = 0

    async def run(self) -> None:
        self.running.set()
        while not self.released:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                self.cancels += 1
        raise asyncio.CancelledError


class Obedient:
    def __init__(self) -> None:
        self.running = asyncio.Event()

    async def run(self) -> None:
        self.running.set()
        await asyncio.Event().wait()


def instance(worker: Any) -> Instance:
    made = Instance(settings=None, name="t1", pool=None, registry=None, nc=None, view=None,  # type: ignore[arg-type]
                    brokers=[], validator=None)  # type: ignore[arg-type]
    made._worker = lambda name: worker  # type: ignore[method-assign]
    return made


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    made: list[int] = []
    monkeypatch.setattr(watchdog, "exit_process", made.append)
    monkeypatch.setattr(cluster_app, "STOP_TIMEOUT_S", 0.3)
    return made


def test_work_that_does_not_stop_when_its_lease_goes_ends_the_process(exits: list[int]) -> None:
    async def main() -> None:
        work = Stubborn()
        owner = instance(work)
        try:
            await owner.gain("rules.3")
            await work.running.wait()
            await owner.lose("rules.3")
            assert work.cancels == 1
            assert exits == [watchdog.EXIT_CODE]
        finally:
            work.released = True

    asyncio.run(main())


def test_work_that_stops_when_its_lease_goes_does_not(exits: list[int]) -> None:
    async def main() -> None:
        work = Obedient()
        owner = instance(work)
        await owner.gain("ingest.0")
        await work.running.wait()
        await owner.lose("ingest.0")
        assert exits == []
        assert "ingest.0" not in owner.work

    asyncio.run(main())
