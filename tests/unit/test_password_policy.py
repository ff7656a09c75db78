"""Which new passwords `trygg users add` refuses (dashboard/passwords.py)."""

from __future__ import annotations

import pytest

from dashboard.passwords import common_passwords, password_problem


@pytest.mark.parametrize(("password", "why"), [
    ("", "empty"),
    ("short1!", "shorter than 10"),
    ("x" * 1025, "longer than 1024"),
    ("aaaaaaaaaa", "repeats"),
    ("ababababab", "repeats"),
    ("monkeymonkey", "repeats"),
    ("1234567890", "run"),
    ("0987654321", "run"),
    ("qwertyuiop", "run"),
    ("abcdefghijkl", "run"),
    ("1qaz2wsx3edc", "run"),
    ("password123", "common"),  # in the shipped list
    ("iloveyou12", "common"),
    ("Passord2024!", "common password with only digits"),
    ("sommer12345", "common password with only digits"),
    ("Trygg2026!!", "common password with only digits"),
    ("kari.nordmann77", "username"),
    ("77nnamdron.irak", "username"),
    ("Kari.Nordmann!!", "username"),
])
def test_trivial_common_and_personal_passwords_are_refused(password: str, why: str) -> None:
    problem = password_problem(password, "kari.nordmann")
    assert problem is not None and why in problem, (password, problem)


@pytest.mark.parametrize("password", [
    "correct horse battery", "browser-test-password-1", "Fjellvann ved Tyin 1974", "k7#Qm2!vRp9z",
    "kari.nordmann's own passphrase",
])
def test_ordinary_good_passwords_pass(password: str) -> None:
    assert password_problem(password, "kari.nordmann") is None


def test_the_shipped_list_is_there_and_large() -> None:
    common = common_passwords()
    assert len(common) > 19_000
    assert {"123456", "password", "qwerty", "passord"} <= common
