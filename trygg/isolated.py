"""Run one CPU-heavy job in a child process of its own, with a time and a memory limit.

Why a process and not a thread: a thread shares the GIL with the alarm path. Parsing a
large registry holds it in long stretches (libyaml and pydantic-core run without
releasing it), and alarms waited seconds behind an upload (issue 13). A child process
has its own interpreter; the parent's thread that waits for it sleeps in `poll`.

The child is started with "spawn" (a fresh interpreter: forking a process with threads
and a large heap is neither safe nor cheap), at a lower CPU priority, with its address
space capped, and it exits after the one job, giving all its memory back. `run_isolated`
returns the job's result or raises what the job raised (exceptions must pickle), or
`JobTimeout` / `JobFailed`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Final, TypeVar

from trygg.errors import TryggError

T = TypeVar("T")

#: The child's niceness: the alarm path gets the CPU first.
CHILD_NICE: Final = 10
#: A child's address space, at most (a 64 MiB YAML registry peaks near 3.5 GiB).
MEMORY_BYTES: Final = 8 * 1024**3


class JobTimeout(TryggError):
    """The job did not finish within its time limit; the child was killed."""

    def __init__(self, name: str, timeout_s: float) -> None:
        super().__init__(f"{name} did not finish within {timeout_s:g} s")
        self.timeout_s = timeout_s


class JobFailed(TryggError):
    """The child died (killed, out of memory) or raised something that cannot cross."""


def run_isolated(job: Callable[..., T], *args: Any, timeout_s: float, name: str = "job",
                 memory_bytes: int = MEMORY_BYTES) -> T:
    """`job(*args)` in a spawned child; blocks the calling thread (not the GIL) until it
    is done. `job` and `args` must pickle (a module-level function)."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(send, job, args, memory_bytes), name=f"trygg-{name}",
                            daemon=True)
    started = False
    try:
        child.start()
        started = True
        send.close()
        if not receive.poll(timeout_s):
            raise JobTimeout(name, timeout_s)
        try:
            ok, value = receive.recv()
        except (EOFError, OSError):
            child.join(5)
            raise JobFailed(f"{name} ended without an answer (exit code {child.exitcode}; out of memory?)") from None
    finally:
        if started:
            if child.is_alive():
                child.kill()
            child.join(5)
        else:
            send.close()
        receive.close()
    if ok:
        return value  # type: ignore[no-any-return]
    if isinstance(value, BaseException):
        raise value
    raise JobFailed(f"{name} failed: {value}")


def _child(send: Connection, job: Callable[..., Any], args: tuple[Any, ...], memory_bytes: int) -> None:
    _limit(memory_bytes)
    try:
        result: tuple[bool, Any] = (True, job(*args))
    except BaseException as exc:  # handed to the parent, whatever it is
        result = (False, exc)
    try:
        send.send(result)
    except Exception:  # the exception does not pickle: its text does
        send.send((False, "".join(traceback.format_exception_only(result[1])).strip()))
    finally:
        send.close()


def _limit(memory_bytes: int) -> None:
    with contextlib.suppress(OSError):
        os.nice(CHILD_NICE)
    try:
        import resource
    except ImportError:  # not POSIX
        return
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))


__all__ = ["JobFailed", "JobTimeout", "run_isolated"]
