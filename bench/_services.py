"""Services for benchmarks: a private Mosquitto (the tests' configuration), a fresh
database, and process CPU/RSS sampling."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.fix_db import ADMIN_URL, PostgresInstance, create_database, drop_database
from tests.fix_mqtt import MosquittoInstance

RESULTS = Path(__file__).parent / "results"

__all__ = ["ADMIN_URL", "CpuMeter", "MosquittoInstance", "PostgresInstance", "create_database",
           "drop_database", "postgres_pids", "save_result"]


def postgres_pids(admin_url: str) -> list[int]:
    """Every backend and helper process of the PostgreSQL server behind `admin_url`."""
    import psycopg

    with psycopg.connect(admin_url) as conn:  # look the backend up while it still exists
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        backend = psutil.Process(int(row[0]))
        postmaster = backend.parent() or backend
    return [postmaster.pid] + [c.pid for c in postmaster.children(recursive=True)]


@dataclass
class CpuMeter:
    """CPU seconds used by groups of processes between start() and read()."""

    groups: dict[str, list[int]]
    _start: dict[str, float] = field(default_factory=dict)
    _t0: float = 0.0

    @staticmethod
    def _cpu(pids: list[int]) -> float:
        total = 0.0
        for pid in pids:
            try:
                t = psutil.Process(pid).cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except psutil.NoSuchProcess:
                pass
        return total

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._start = {name: self._cpu(pids) for name, pids in self.groups.items()}

    def read(self) -> dict[str, float]:
        """Cores used per group (1.0 = one core busy) since start()."""
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        return {name: round((self._cpu(pids) - self._start[name]) / elapsed, 2)
                for name, pids in self.groups.items()}


def save_result(name: str, result: dict[str, object]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    return path


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


os.environ.setdefault("TRYGG_LOG_LEVEL", "warning")
