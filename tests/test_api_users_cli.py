"""`trygg users add NAME --role ROLE [--team T]... [--resident R]... --password-stdin`."""

from __future__ import annotations

import pytest

from dashboard.auth import verify_password
from tests.fix_users_cli import run, user_row

pytestmark = pytest.mark.integration


def test_creates_then_updates_a_user(registered: str) -> None:
    code, out, err = run(registered, "ola", "--role", "staff", "--team", "east", "--password-stdin",
                         password="a long enough secret\n")
    assert (code, err) == (0, "")
    assert out.strip() == "user ola created (staff; teams: east)"
    row = user_row(registered, "ola")
    assert row is not None and row[:3] == ("staff", ["east"], [])
    assert verify_password(str(row[3]), "a long enough secret")
    assert "a long enough secret" not in str(row[3])

    code, out, _ = run(registered, "ola", "--role", "staff", "--team", "east", "--team", "west")
    assert code == 0 and out.strip() == "user ola updated (staff; teams: east, west); password unchanged"
    updated = user_row(registered, "ola")
    assert updated is not None and updated[1] == ["east", "west"] and updated[3] == row[3]


def test_the_new_password_works_for_the_api(registered: str) -> None:
    from tests.fix_api import serve, settings

    run(registered, "anne", "--role", "relative", "--resident", "r-1", "--password-stdin",
        password="anne's own passphrase\n")
    from dashboard import create_app

    with serve(create_app(settings(), registered)) as base:
        import httpx

        response = httpx.post(f"{base}/api/auth/token",
                              data={"username": "anne", "password": "anne's own passphrase"})
        assert response.status_code == 200


@pytest.mark.parametrize(("password", "message"), [
    ("\n", "trygg: the password is empty; nothing was changed"),
    ("", "trygg: the password is empty; nothing was changed"),
    ("short\n", "trygg: the password is shorter than 10 characters; nothing was changed"),
])
def test_refuses_empty_and_short_passwords_with_one_line(registered: str, password: str, message: str) -> None:
    code, _, err = run(registered, "kim", "--role", "admin", "--password-stdin", password=password)
    assert code == 2
    assert err.strip().splitlines() == [message]
    assert user_row(registered, "kim") is None


def test_a_new_user_needs_a_password(registered: str) -> None:
    code, _, err = run(registered, "kim", "--role", "admin")
    assert code == 2
    assert err.strip() == "trygg: user 'kim' is new: give a password with --password-stdin"
    assert user_row(registered, "kim") is None


def test_the_password_is_never_an_argument(registered: str) -> None:
    code, _, err = run(registered, "kim", "--role", "admin", "--password", "s3cret-s3cret")
    assert code == 2
    assert "No such option" in err


@pytest.mark.parametrize(("args", "message"), [
    (("kim", "--role", "boss"), "unknown role 'boss'; one of admin, operator, staff, relative, researcher"),
    (("kim name", "--role", "admin"), "username 'kim name' must be 1-64 of letters, digits, _ . @ -"),
    (("kim", "--role", "staff", "--team", "east west"), "'east west' is not an id"),
])
def test_bad_arguments(registered: str, args: tuple[str, ...], message: str) -> None:
    code, _, err = run(registered, *args, "--password-stdin", password="long enough password\n")
    assert code == 2
    assert message in err


def test_unknown_team_or_resident_warns_but_is_allowed(registered: str) -> None:
    code, _, err = run(registered, "siv", "--role", "staff", "--team", "north", "--password-stdin",
                         password="long enough password\n")
    assert code == 0
    assert "warning: team 'north' is not in the registry (yet)" in err
    code, _, err = run(registered, "tor", "--role", "relative", "--resident", "r-99", "--password-stdin",
                       password="long enough password\n")
    assert code == 0
    assert "warning: resident 'r-99' is not in the registry (yet)" in err
    code, _, err = run(registered, "nils", "--role", "staff", "--password-stdin", password="long enough password\n")
    assert code == 0 and "sees no alerts" in err


def run_link(database: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    import structlog
    from typer.testing import CliRunner

    from tests.fix_users_cli import cli

    try:
        result = CliRunner().invoke(cli(), ["users", "link", *args], env={
            "TRYGG_DATABASE_URL": database, "TRYGG_LOG_FORMAT": "console", **(env or {})})
    finally:
        structlog.reset_defaults()
    return result.exit_code, result.stdout, result.stderr


def test_link_prints_a_one_time_link_that_sets_the_password(registered: str) -> None:
    import httpx

    from dashboard import create_app
    from tests.fix_api import serve, settings

    run(registered, "ola", "--role", "staff", "--team", "east", "--password-stdin", password="a long enough secret\n")
    code, out, err = run_link(registered, "ola", "--base-url", "https://trygg.example.no/",
                              env={"TRYGG_HTTP_PORT": "8123"})
    assert code == 0, err
    url = out.strip()
    assert url.startswith("https://trygg.example.no/password#token=")
    assert "valid once" in err
    code, default, _ = run_link(registered, "ola", env={"TRYGG_HTTP_PORT": "8123"})
    assert code == 0 and default.startswith("http://127.0.0.1:8123/password#token=")

    old_token = url.split("#token=", 1)[1]
    token = default.strip().split("#token=", 1)[1]
    with serve(create_app(settings(), registered)) as base:
        page = {"Sec-Fetch-Site": "same-origin"}
        assert httpx.post(f"{base}/api/password-links/use", headers=page,
                          json={"token": old_token, "password": "brand new passphrase"}).status_code == 404
        assert httpx.post(f"{base}/api/password-links/use", headers=page,
                          json={"token": token, "password": "brand new passphrase"}).status_code == 200
        assert httpx.post(f"{base}/api/auth/token", data={"username": "ola", "password": "brand new passphrase"}
                          ).status_code == 200
    row = user_row(registered, "ola")
    assert row is not None and verify_password(str(row[3]), "brand new passphrase")


@pytest.mark.parametrize(("args", "message"), [
    (("nobody",), "no user 'nobody'"),
    (("bad name",), "username 'bad name' must be"),
    (("staff-east", "--base-url", "javascript:alert(1)"), "--base-url 'javascript:alert(1)' must look like"),
])
def test_link_refuses_unknown_users_and_bad_urls(registered: str, args: tuple[str, ...], message: str) -> None:
    code, out, err = run_link(registered, *args)
    assert code == 2 and out == ""
    assert message in err
