"""`trygg users add NAME --role ROLE [--team T]... [--resident R]... --password-stdin`
and `trygg users link NAME [--base-url URL] [--hours H]`.

Creates or updates a dashboard user. The password is read from standard input (one
line; typed without echo on a terminal), never from an argument, so it does not end up
in the shell history or the process list. Without `--password-stdin` an existing user
keeps its password (role and links are updated); a new user needs one. A short,
trivial or common password, or one containing the username, is refused
(dashboard/passwords.py).

Teams and residents that are not in the registry are accepted with a warning: the
registry may be loaded after the users.

`trygg users link` prints a one-time link with which the user sets their own password
on the dashboard's `/password` page (docs/admin.md "One-time password links"): valid
24 hours by default, used once, replacing an open link of the same user. The base URL
is the dashboard's (`TRYGG_HTTP_HOST`, `TRYGG_HTTP_PORT`) unless `--base-url` says
where users reach it.
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


def _role(value: str) -> Role:
    """The --role value as a Role, or the one-line error that lists the roles."""
    try:
        return Role(value)
    except ValueError:
        _fail(f"unknown role {value!r}; one of {', '.join(Role)}")


def _ids(values: list[str] | None) -> list[str]:
    """Team or resident ids as given, repeats dropped; a malformed one is refused."""
    ids = list(dict.fromkeys(values or []))
    for value in ids:
        if not _ID.match(value):
            _fail(f"{value!r} is not an id (1-64 of letters, digits, _ . -)")
    return ids


def _password_hash(name: str) -> str:
    """The hash of the password read from standard input, if the policy takes it."""
    from dashboard.auth import hash_password
    from dashboard.passwords import password_problem

    password = _read_password()
    problem = password_problem(password, name)
    if problem:
        _fail(f"{problem}; nothing was changed")
    return hash_password(password)


def _save(name: str, role: Role, teams: list[str], residents: list[str],
          password_hash: str | None) -> tuple[bool, set[str], set[str]]:
    """Write the user: (created, the registry's team ids, its resident ids)."""
    from composition.runtime import open_database
    from storage.users_store import get_user, registry_ids, upsert_user
    from trygg.errors import SettingsError
    from trygg.logging import configure_logging
    from trygg.settings import load_settings

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
    return created, known_teams, known_residents


def _warnings(role: Role, teams: list[str], residents: list[str],
              known_teams: set[str], known_residents: set[str]) -> list[str]:
    """What the user was saved with that probably is not what was meant."""
    warnings = [f"team {t!r} is not in the registry (yet)" for t in teams if t not in known_teams]
    warnings += [f"resident {r!r} is not in the registry (yet)" for r in residents if r not in known_residents]
    if role is Role.STAFF and not teams:
        warnings.append("a staff member without --team sees no alerts and no residents")
    if role is Role.RELATIVE and not residents:
        warnings.append("a relative without --resident sees no one")
    if role is not Role.STAFF and teams:
        warnings.append(f"--team has no effect for the role {role}")
    if role is not Role.RELATIVE and residents:
        warnings.append(f"--resident has no effect for the role {role}")
    return warnings


def add(
    name: Annotated[str, typer.Argument(help="username (letters, digits, _ . @ -)")],
    role: Annotated[Role, typer.Option("--role", parser=_role, metavar="[" + "|".join(Role) + "]",
                                       help="what the user may do")],
    team: Annotated[list[str] | None, typer.Option("--team", help="a team of a staff member (repeat)")] = None,
    resident: Annotated[list[str] | None, typer.Option("--resident",
                                                       help="a resident of a relative (repeat)")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin",
                                                 help="read the password from standard input")] = False,
) -> None:
    """Create or update a user; the password comes from standard input."""
    if not _NAME.match(name):
        _fail(f"username {name!r} must be 1-64 of letters, digits, _ . @ -")
    teams, residents = _ids(team), _ids(resident)
    password_hash = _password_hash(name) if password_stdin else None
    created, known_teams, known_residents = _save(name, role, teams, residents, password_hash)
    for warning in _warnings(role, teams, residents, known_teams, known_residents):
        _warn(warning)
    links = ", ".join(f"{k}: {', '.join(v)}" for k, v in (("teams", teams), ("residents", residents)) if v)
    typer.echo(f"user {name} {'created' if created else 'updated'} ({role}{'; ' + links if links else ''})"
               + ("" if password_hash else "; password unchanged"))
    sys.stdout.flush()


def link(
    name: Annotated[str, typer.Argument(help="username")],
    base_url: Annotated[str | None, typer.Option("--base-url", help="where users reach the dashboard, "
                                                 "e.g. https://trygg.kommune.no (default: from the settings)")
                        ] = None,
    hours: Annotated[int, typer.Option("--hours", min=1, max=24 * 7, help="how long the link works")] = 24,
) -> None:
    """Print a one-time link for the user to set their own password."""
    from datetime import timedelta

    from composition.runtime import open_database
    from dashboard.routes_auth import password_link_url
    from storage.admin_store import create_password_link
    from storage.users_store import get_user
    from trygg.errors import SettingsError
    from trygg.logging import configure_logging
    from trygg.settings import load_settings

    if not _NAME.match(name):
        _fail(f"username {name!r} must be 1-64 of letters, digits, _ . @ -")
    if base_url is not None and not re.match(r"^https?://[^\s/?#]+(/[^\s?#]*)?$", base_url):
        _fail(f"--base-url {base_url!r} must look like https://host[:port][/path]")
    try:
        settings = load_settings()
    except SettingsError as exc:
        _fail(f"invalid setting {exc}")
    configure_logging(settings.log_level, settings.log_format)
    base = base_url or f"http://{settings.http_host}:{settings.http_port}"
    try:
        with open_database(settings, 1) as pool, pool.connection() as conn:
            if get_user(conn, name) is None:
                _fail(f"no user {name!r}; add it first (trygg users add, or the admin page)")
            token, expires_at = create_password_link(conn, name, "cli", timedelta(hours=hours))
    except psycopg.Error as exc:
        _fail(f"cannot make the link: {str(exc).strip()}", 1)
    typer.echo(password_link_url(base, token))
    typer.echo(f"valid once, until {expires_at:%Y-%m-%d %H:%M %Z}; a new link replaces it", err=True)


def register(app: typer.Typer) -> None:
    """Add the `users` command group to the `trygg` app."""
    users_app = typer.Typer(help="Users of the dashboard and the API.", no_args_is_help=True)
    users_app.command("add")(add)
    users_app.command("link")(link)
    app.add_typer(users_app, name="users")


__all__ = ["add", "link", "register"]
