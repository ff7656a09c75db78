"""Errors of the processors stage."""

from __future__ import annotations

from trygg.errors import TryggError


class ProcessorError(TryggError):
    """Base of every error the processors raise on purpose."""


class StateError(ProcessorError):
    """A rule-state snapshot (`Processor.restore_state`) that cannot be read.

    `path` names the offending part, e.g. ``residents.r-17.doors.front.changed_at``.
    """

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class StageNotRunningError(ProcessorError):
    """`ProcessorStage` was asked to do loop work before `run()` started."""
