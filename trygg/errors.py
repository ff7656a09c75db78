"""Errors of the shared kernel."""

from __future__ import annotations


class TryggError(Exception):
    """Base of every error Trygg raises on purpose."""


class SettingsError(TryggError):
    """A setting is wrong; `setting` names the environment variable."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting
        self.message = message
