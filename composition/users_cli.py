"""`trygg users add NAME --role ROLE [--team T]... [--resident R]... --password-stdin`.

Creates or updates a dashboard user. The password is read from standard input (one
line; typed without echo on a terminal), never from an argument, so it does not end up
in the shell history or the process list. Without `--password-stdin` an existing user
keeps its password (role and links are updated); a new user needs one. A short,
trivial or common password, or one containing the username, is refused
(dashboard/passwords.py).

Teams and residents that are not in the registry are accepted with a warning: the
registry may be loaded after the users.
"""

from __future__ import annotations

import getpass
import re
import sys
from typing import Annotated, NoReturn

import psycopg
import typer

from trygg.contract import Role

_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"trygg: {message}", err=True)
    raise typer.Exit(code)


def _warn(message: str) -> None:
    typer.echo(f"trygg: warning: {message}", err=True)


def _read_password() -> str:
    stream = sys.stdin
    if stream.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            _fail("the two passwords differ; nothing was changed")
        return first
    return stream.readline().rstrip("\r\n")


def add(
    name: Annotated[str, typer.Argument(help="username (letters, digits, _ . @ -)")],
    role: Annotated[str, typer.Option("--role", help="admin, operator, staff, relative or researcher")],
    team: Annotated[list[str] | None, typer.Option("--team", help="a team of a staff member (repeat)")] = None,
    resident: Annotated[list[str] | None, typer.Option("--resident",
                                                       help="a resident of a relative (repeat)")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin",
                                                 help="read the password from standard input")] = False,
) -> None:
    """Create or update a user; the password comes from standard input."""
    from composition.runtime import open_database
    from dashboard.auth import hash_password
    from dashboard.passwords import password_problem
    from storage.users_store import get_user, registry_ids, upsert_user
    from trygg.errors import SettingsError
    from trygg.logging import configure_logging
    from trygg.settings import load_settings

    if not _NAME.match(name):
        _fail(f"username {name!r} must be 1-64 of letters, digits, _ . @ -")
    roles = [r.value for r in Role]
    if role not in roles:
        _fail(f"unknown role {role!r}; one of {', '.join(roles)}")
    teams, residents = list(dict.fromkeys(team or [])), list(dict.fromkeys(resident or []))
    for value in (*teams, *residents):
        if not _ID.match(value):
            _fail(f"{value!r} is not an id (1-64 of letters, digits, _ . -)")
    password_hash = None
    if password_stdin:
        password = _read_password()
        problem = password_problem(password, name)
        if problem:
            _fail(f"{problem}; nothing was changed")
        password_hash = hash_password(password)

    try:
        settings = load_settings()
    except SettingsError as exc:
        _fail(f"invalid setting {exc}")
    configure_logging(settings.log_level, settings.log_format)
    try:
        with open_database(settings, 1) as pool, pool.connection() as conn:
            if password_hash is None and get_user(conn, name) is None:
                _fail(f"user {name!r} is new: give a password with --password-stdin")
            known_teams, known_residents = registry_ids(conn)
            created = upsert_user(conn, name, role, teams, residents, password_hash)
    except psycopg.Error as exc:
        _fail(f"cannot save the user: {str(exc).strip()}", 1)

    for value in teams:
        if value not in known_teams:
            _warn(f"team {value!r} is not in the registry (yet)")
    for value in residents:
        if value not in known_residents:
            _warn(f"resident {value!r} is not in the registry (yet)")
    if role == Role.STAFF and not teams:
        _warn("a staff member without --team sees no alerts and no residents")
    if role == Role.RELATIVE and not residents:
        _warn("a relative without --resident sees no one")
    if role not in (Role.STAFF,) and teams:
        _warn(f"--team has no effect for the role {role}")
    if role != Role.RELATIVE and residents:
        _warn(f"--resident has no effect for the role {role}")
    links = ", ".join(f"{k}: {', '.join(v)}" for k, v in (("teams", teams), ("residents", residents)) if v)
    typer.echo(f"user {name} {'created' if created else 'updated'} ({role}{'; ' + links if links else ''})"
               + ("" if password_hash else "; password unchanged"))
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    """Add the `users` command group to the `trygg` app."""
    users_app = typer.Typer(help="Users of the dashboard and the API.", no_args_is_help=True)
    users_app.command("add")(add)
    app.add_typer(users_app, name="users")


__all__ = ["add", "register"]
