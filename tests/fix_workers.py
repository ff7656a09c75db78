"""The suite on two pytest-xdist workers (scripts/test runs `-n 2 --dist loadfile`):
a test module runs whole on one worker, next to another module on the other.

A test marked `serial` runs while no test runs on the other worker: it measures time (an
alert on screen within a second, a thread never held up for 0.1 s), loads the CPU on
purpose, or binds a port that every embedded broker scans for, and a neighbour's work
would make that fail, not Trygg. Every test holds a lock file shared by the workers, the
others shared, a serial one exclusive; a turnstile lock lets a serial test that waits go
first, so that it is not starved by the other worker's stream of tests. Without workers
(`pytest tests/x.py`) the lock is not taken.

Each worker has its own session fixtures (a Mosquitto, a template database, a `trygg up`
for the browser tests) and its own port range (tests/helpers.py `worker_port`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def held(folder: Path, *, exclusive: bool) -> Iterator[None]:
    """The workers' lock in `folder`, held shared or exclusive until the block ends."""
    with (folder / "turnstile.lock").open("a") as turnstile, (folder / "tests.lock").open("a") as tests:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        fcntl.flock(tests, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        fcntl.flock(turnstile, fcntl.LOCK_UN)
        yield  # closing `tests` releases it


@pytest.fixture(autouse=True)
def alone_when_serial(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    if "PYTEST_XDIST_WORKER" not in os.environ:
        yield
        return
    # each worker's base temp folder lies in the run's, which all workers share
    with held(tmp_path_factory.getbasetemp().parent, exclusive=request.node.get_closest_marker("serial") is not None):
        yield
