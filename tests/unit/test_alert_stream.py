"""`start_eagerly`, the console stream's way to write a change within the call that
made it: it finishes at once when nothing waits, and otherwise goes on, in order, once
what it waits for is done."""

from __future__ import annotations

import asyncio

import pytest

from dashboard.alert_stream import start_eagerly


def test_a_step_that_does_not_wait_is_done_before_start_eagerly_returns() -> None:
    done: list[str] = []

    async def write() -> None:
        done.append("written")

    async def scenario() -> None:
        assert start_eagerly(write()) is None
        assert done == ["written"]

    asyncio.run(scenario())


def test_a_step_that_waits_goes_on_once_what_it_waits_for_is_done() -> None:
    steps: list[str] = []

    async def scenario() -> None:
        writable = asyncio.Event()

        async def write() -> None:
            steps.append("begun")
            await writable.wait()  # a client reading slowly
            await asyncio.sleep(0)  # a bare yield on the way
            steps.append("written")

        task = start_eagerly(write())
        assert task is not None and steps == ["begun"]
        await asyncio.sleep(0.01)
        assert not task.done()
        writable.set()
        await task
        assert steps == ["begun", "written"]

    asyncio.run(scenario())


def test_errors_come_from_start_eagerly_before_a_wait_and_from_the_task_after_it() -> None:
    async def refused() -> None:
        raise ConnectionResetError("gone")

    async def refused_later(ready: asyncio.Future[None]) -> None:
        await ready

    async def scenario() -> None:
        with pytest.raises(ConnectionResetError):
            start_eagerly(refused())
        ready = asyncio.get_running_loop().create_future()
        task = start_eagerly(refused_later(ready))
        assert task is not None
        ready.set_exception(BrokenPipeError("gone"))
        with pytest.raises(BrokenPipeError):
            await task

    asyncio.run(scenario())


def test_cancelling_the_rest_cancels_the_step() -> None:
    cleaned: list[str] = []

    async def write(forever: asyncio.Event) -> None:
        try:
            await forever.wait()
        finally:
            cleaned.append("step ended")

    async def scenario() -> None:
        task = start_eagerly(write(asyncio.Event()))
        assert task is not None
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert cleaned == ["step ended"]

    asyncio.run(scenario())
