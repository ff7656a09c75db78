"""The roles the migrations create (storage/migrations): roles belong to the whole server,
so two databases on one server may migrate at the same moment (two municipalities, a
staging and a production database, the test workers of a fresh machine). Each migration's
`CREATE ROLE` block is run in two sessions at once, the second waiting on the first's
uncommitted role, as happens then."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

MIGRATIONS = Path(__file__).resolve().parent.parent / "storage" / "migrations"
CREATES = re.compile(r"DO \$\$\s*BEGIN\s*IF NOT EXISTS \(SELECT 1 FROM pg_roles WHERE rolname = '(\w+)'\) THEN\s*"
                     r"CREATE ROLE \1 .*?END \$\$;", re.DOTALL)


def role_blocks() -> list[tuple[str, str, str]]:
    """(migration, role, DO block) of every block that creates a role."""
    return [(path.name, m.group(1), m.group(0)) for path in sorted(MIGRATIONS.glob("*.sql"))
            for m in CREATES.finditer(path.read_text())]


BLOCKS = role_blocks()


def test_every_role_the_migrations_create_is_found() -> None:
    assert sorted(role for _, role, _ in BLOCKS) == ["trygg_app", "trygg_maintainer", "trygg_research"]


@pytest.fixture
def role(pg_admin_url: str) -> Iterator[str]:
    name = f"trygg_test_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {name}")


@pytest.mark.parametrize(("migration", "made", "block"), BLOCKS, ids=[f"{m}:{r}" for m, r, _ in BLOCKS])
def test_two_databases_creating_the_role_at_once_both_migrate(pg_admin_url: str, role: str, migration: str,
                                                              made: str, block: str) -> None:
    sql = block.replace(made, role)
    first = psycopg.connect(pg_admin_url)
    second = psycopg.connect(pg_admin_url)
    errors: list[BaseException] = []
    try:
        first.execute(sql)  # created, not yet committed: the second sees no role and waits on it

        def run_second() -> None:
            try:
                second.execute(sql)
                second.commit()
            except BaseException as exc:
                errors.append(exc)

        waiting = threading.Thread(target=run_second)
        waiting.start()
        waiting.join(1.0)
        assert waiting.is_alive(), f"the second session did not wait for the first one's role: {errors}"
        first.commit()
        waiting.join(10)
        assert not waiting.is_alive()
    finally:
        first.close()
        second.close()
    assert not errors, f"{migration}: {errors[0]}"
    with psycopg.connect(pg_admin_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", (role,)).fetchone() == (1,)
