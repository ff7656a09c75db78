"""Tokens and passwords: signed, expiring, bound to the kind and to the password."""

from __future__ import annotations

import base64
import json

import pytest

from dashboard.auth import TokenSigner, fingerprint, hash_password, password_problem, verify_password

NOW = 1_800_000_000


def test_a_token_round_trips_until_it_expires() -> None:
    signer = TokenSigner("secret-0123456789abcdef")
    token = signer.issue("ola", "$argon2id$hash", "api", NOW + 60)
    claims = signer.verify(token, "api", NOW)
    assert claims is not None
    assert (claims.username, claims.kind, claims.expires) == ("ola", "api", NOW + 60)
    assert claims.fingerprint == fingerprint("$argon2id$hash")
    assert signer.verify(token, "api", NOW + 60) is None


def test_refused_kinds_keys_and_edits() -> None:
    signer = TokenSigner("secret-0123456789abcdef")
    token = signer.issue("ola", "h", "api", NOW + 60)
    assert signer.verify(token, "session", NOW) is None
    assert TokenSigner("another-secret-0123456").verify(token, "api", NOW) is None
    head, payload, sig = token.split(".")
    doc = json.loads(base64.urlsafe_b64decode(payload + "=="))
    doc["u"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()
    assert signer.verify(f"{head}.{forged}.{sig}", "api", NOW) is None
    for junk in ("", "v1", "v1..", "v2.a.b", "v1.!!!.x", token + ".x", "v1." + "a" * 5000 + ".b"):
        assert signer.verify(junk, "api", NOW) is None


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        TokenSigner("")


def test_passwords() -> None:
    stored = hash_password("correct horse battery")
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "correct horse battery")
    assert not verify_password(stored, "wrong horse battery")
    assert not verify_password(None, "anything at all")
    assert not verify_password("not a hash", "anything at all")
    assert not verify_password(stored, "x" * 5000)
    assert password_problem("") == "the password is empty"
    assert password_problem("short") == "the password is shorter than 10 characters"
    assert password_problem("long enough!") is None
