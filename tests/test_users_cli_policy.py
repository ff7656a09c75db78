"""`trygg users add` refuses trivial, common and personal passwords (dashboard/passwords.py)
with one line, and changes nothing."""

from __future__ import annotations

import pytest

from tests.fix_users_cli import run, user_row

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("password", "why"), [
    ("aaaaaaaaaa", "the password repeats the same characters"),
    ("1234567890", "the password is a run of keys or digits (like 1234567890 or qwertyuiop)"),
    ("password123", "the password is one of the most common passwords"),
    ("Passord2024!", "the password is a common password with only digits or symbols added"),
    ("kim.hansen", "the password is the username with little added"),
])
def test_a_trivial_common_or_personal_password_is_refused(registered: str, password: str, why: str) -> None:
    code, _, err = run(registered, "kim.hansen", "--role", "admin", "--password-stdin", password=f"{password}\n")
    assert code == 2
    assert err.strip().splitlines() == [f"trygg: {why}; nothing was changed"]
    assert user_row(registered, "kim.hansen") is None


def test_a_passphrase_is_taken(registered: str) -> None:
    code, out, _ = run(registered, "kim.hansen", "--role", "admin", "--password-stdin",
                       password="three blue herons at dusk\n")
    assert code == 0 and out.startswith("user kim.hansen created")
