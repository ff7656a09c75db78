"""A small disk of its own for full-disk tests: a real tmpfs, mounted for one test.

Mounting needs root (CI and the developers' machines run as root); elsewhere the tests
that need it are skipped with the reason.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

SmallDisk = Callable[[Path, str], Path]


@pytest.fixture
def small_disk() -> Iterator[SmallDisk]:
    """`small_disk(path, "256k")` mounts a tmpfs of that size on `path` and returns it;
    every mount is undone after the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted: list[Path] = []

    def mount(path: Path, size: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                       check=True, capture_output=True, timeout=30)
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True, timeout=30)


def fill(directory: Path, name: str = "ballast", limit: int | None = None) -> Path:
    """Write a file of zeros in `directory` until the disk is full (or `limit` bytes are
    written); returns its path (remove it to free the space again)."""
    path = directory / name
    block = b"\0" * 4096
    written = 0
    with path.open("wb", buffering=0) as fh:
        while limit is None or written < limit:
            try:
                n = fh.write(block if limit is None else block[: limit - written])
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
            if not n:
                break
            written += n
    return path


def free_bytes(directory: Path) -> int:
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize
