"""Which new passwords are refused (docs/security.md "Sign-in").

A staff password guards residents' health data, and guessing is what an attacker does
first: a throttled attacker still gets a few guesses per account per hour
(dashboard/throttle.py), so those guesses must not hit. A new password is refused when

- it is shorter than 10 or longer than 1,024 characters;
- it repeats a short unit (`aaaaaaaaaa`, `abababababab`, `monkeymonkey`);
- it is a run on the digits, the alphabet or a keyboard row (`1234567890`,
  `0987654321`, `qwertyuiop`, `abcdefghijk`);
- it is the username (or the username backwards) with fewer than six letters added;
- it is one of the common passwords shipped in `dashboard/data/common-passwords.txt.gz`
  (19,640 passwords, most common first, compiled by Royce Williams from breach data and
  shipped by Django under its BSD licence: `dashboard/data/common-passwords.LICENSE`),
  or one of the Norwegian and Trygg words below, or such a password with only digits
  and symbols added before or after it (`Passord2024!`, `sommer12345`).

Long passphrases of ordinary words (`correct horse battery`) pass: length beats
symbols (NIST SP 800-63B §5.1.1.2). Comparison ignores case.
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path
from typing import Final

#: Shortest and longest password accepted when one is set.
MIN_PASSWORD_LENGTH: Final = 10
MAX_PASSWORD_LENGTH: Final = 1024

COMMON_FILE: Final = Path(__file__).parent / "data" / "common-passwords.txt.gz"

#: Words an attacker tries first against a Norwegian home-care service; the shipped list
#: is mostly English. Lower case; compared like the shipped list.
_LOCAL_TEXT: Final = """
passord passordet hemmelig hemmelighet velkommen sommer vinter høst vår jul julaften påske
sommeren vinteren fotball rosenborg brann vålerenga lillestrøm molde viking norge norway
oslo bergen trondheim stavanger tromsø kristiansand drammen nordmann kari ola
trygg trygghet tryggheten hjemmetjenesten hjemmetjeneste hjemmesykepleien sykepleier
sykepleie helse omsorg kommune kommunen bydel alarm trygghetsalarm pasient beboer
mandag tirsdag onsdag torsdag fredag lørdag søndag januar februar mars april mai juni juli
august september oktober november desember qwerty asdf
"""
LOCAL_WORDS: Final = frozenset(_LOCAL_TEXT.split())

#: Runs that people type as passwords, both ways (a password is refused if it lies
#: inside one of them).
_RUNS: Final = tuple(run for seq in (
    "01234567890123456789",
    "abcdefghijklmnopqrstuvwxyzæøåabcdefghijklmnopqrstuvwxyzæøå",
    "qwertyuiopåasdfghjkløæzxcvbnm", "qwertyuiopasdfghjklzxcvbnm",
    "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik9ol0p", "qazwsxedcrfvtgbyhnujmikolp",
    "!@#$%^&*()_+", "!\"#¤%&/()=?",
) for run in (seq, seq[::-1]))

#: Characters taken off both ends of a password before looking its core up.
_DECORATION: Final = "0123456789 !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~¤§½"


@functools.cache
def common_passwords() -> frozenset[str]:
    """The shipped list plus `LOCAL_WORDS`, lower case (read once; about 2 MB)."""
    with gzip.open(COMMON_FILE, "rt", encoding="utf-8") as f:
        shipped = {line.strip().lower() for line in f if line.strip()}
    return frozenset(shipped | LOCAL_WORDS)


def _repeats_a_unit(text: str) -> bool:
    """`text` is a shorter piece over and over (the last copy may be cut short)."""
    n = len(text)
    return any(text == (text[:k] * (n // k + 1))[:n] for k in range(1, n // 2 + 1))


def _is_run(text: str) -> bool:
    return any(text in run for run in _RUNS)


def password_problem(password: str, username: str | None = None) -> str | None:
    """Why a new password is refused (a sentence for the person setting it), or None."""
    if not password:
        return "the password is empty"
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"the password is shorter than {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"the password is longer than {MAX_PASSWORD_LENGTH} characters"
    folded = password.lower()
    if _repeats_a_unit(folded):
        return "the password repeats the same characters"
    if _is_run(folded):
        return "the password is a run of keys or digits (like 1234567890 or qwertyuiop)"
    name = (username or "").lower()
    if name and any(n in folded and len(folded.replace(n, "").strip(_DECORATION)) < 6
                    for n in (name, name[::-1])):
        return "the password is the username with little added"
    common = common_passwords()
    if folded in common:
        return "the password is one of the most common passwords"
    core = folded.strip(_DECORATION)
    if core != folded and len(core) >= 3 and (core in common or _is_run(core) or _repeats_a_unit(core)):
        return "the password is a common password with only digits or symbols added"
    return None


__all__ = ["COMMON_FILE", "LOCAL_WORDS", "MAX_PASSWORD_LENGTH", "MIN_PASSWORD_LENGTH", "common_passwords",
           "password_problem"]
