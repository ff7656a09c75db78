"""The `trygg users` command run in-process (`run`), the user row it writes
(`user_row`), and the fixture `registered`: a database holding the API tests' registry."""

from __future__ import annotations

import psycopg
import pytest
import structlog
import typer
from typer.testing import CliRunner

from composition.users_cli import register
from storage.registry_store import save_registry
from tests.fix_api import REGISTRY_YAML
from trygg.registry import parse_registry


def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """trygg"""

    register(app)
    return app


def run(database: str, *args: str, password: str | None = None) -> tuple[int, str, str]:
    runner = CliRunner()
    try:
        result = runner.invoke(cli(), ["users", "add", *args], input=password,
                               env={"TRYGG_DATABASE_URL": database, "TRYGG_LOG_FORMAT": "console"})
    finally:
        structlog.reset_defaults()  # the command logged to the runner's streams, closed now
    return result.exit_code, result.stdout, result.stderr


def user_row(database: str, name: str) -> tuple[object, ...] | None:
    with psycopg.connect(database) as conn:
        return conn.execute("SELECT role, teams, residents, password_hash FROM trygg.users WHERE username = %s",
                            (name,)).fetchone()


@pytest.fixture
def registered(database: str) -> str:
    with psycopg.connect(database) as conn:
        save_registry(conn, parse_registry(REGISTRY_YAML), actor="test")
    return database
