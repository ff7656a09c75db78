"""Passwords (argon2id) and signed, expiring tokens for the API and the web session.

Token format (docs/api.md "Tokens"): ``v1.<payload>.<signature>``, both parts base64url
without padding. The payload is compact JSON::

    {"u": "ola", "k": "api", "e": 1767225600, "p": "3f1c9a0b5d2e7f41"}

- `u` the username, `e` the expiry (Unix seconds), `k` the kind: `api` for bearer tokens
  from `POST /api/auth/token`, `session` for the `trygg_session` cookie. A token of one
  kind is refused in the other place.
- `p` a fingerprint of the user's password hash: setting a new password (`trygg users
  add`) makes every token issued before it invalid.
- The signature is HMAC-SHA256 over ``v1.<payload>`` with a key derived from
  `TRYGG_SESSION_SECRET` and the kind. Role, teams and resident links are read from the
  database at every request, so a change to them applies at once. While the database
  cannot be reached, the row this dashboard last read is used, for at most
  `TRYGG_AUTH_OFFLINE_MAX_S` (dashboard/user_cache.py).
- Nothing is stored for a valid token. `POST /logout` remembers the SHA-256 of the
  cookie (and of a bearer token sent with it) in trygg.revoked_tokens until it would
  have expired, so a signed-out session stays signed out (in memory at once, and in
  the table when the database answers).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Final, Literal

from argon2 import PasswordHasher, Type, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError
from argon2.low_level import core, ffi

from dashboard.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, password_problem

TokenKind = Literal["api", "session"]

_VERSION: Final = "v1"

_hasher = PasswordHasher()
#: From argon2.h.
_ARGON2_OK: Final = 0
_ARGON2_DEFAULT_FLAGS: Final = 0


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the user does not exist, so that both failures take as long."""
    return _hasher.hash("trygg-no-such-user")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _verify_in_this_thread(encoded: str, password: str) -> bool | None:
    """argon2id verification with every lane computed in the calling thread, or None if
    the hash is not a plain argon2id PHC string this can check.

    `PasswordHasher.verify` starts one thread per lane (4): each check then takes every
    core of a small host for its duration, and the alarm path that shares the host
    waits (docs/security.md "Sign-in"). One thread gives the same result with the same
    memory and work, on one core. Uses argon2-cffi's low-level `core`; a change there
    shows as None (the caller falls back) and in tests/unit/test_password_hashing.py.
    """
    try:
        params = extract_parameters(encoded)
        salt_text, hash_text = encoded.split("$")[-2:]
        salt, expected = _b64decode(salt_text), _b64decode(hash_text)
    except (InvalidHashError, ValueError, binascii.Error):
        return None
    if params.type is not Type.ID or len(expected) != params.hash_len or not expected:
        return None
    secret = password.encode("utf-8")
    out = ffi.new("uint8_t[]", len(expected))
    pwd = ffi.new("uint8_t[]", secret)
    salt_buf = ffi.new("uint8_t[]", salt)
    ctx = ffi.new("argon2_context *", {
        "out": out, "outlen": len(expected), "pwd": pwd, "pwdlen": len(secret), "salt": salt_buf,
        "saltlen": len(salt), "secret": ffi.NULL, "secretlen": 0, "ad": ffi.NULL, "adlen": 0,
        "t_cost": params.time_cost, "m_cost": params.memory_cost, "lanes": params.parallelism, "threads": 1,
        "version": params.version, "allocate_cbk": ffi.NULL, "free_cbk": ffi.NULL,
        "flags": _ARGON2_DEFAULT_FLAGS})
    if core(ctx, Type.ID.value) != _ARGON2_OK:
        return None
    return hmac.compare_digest(bytes(ffi.buffer(out, len(expected))), expected)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True if `password` matches; a missing hash costs the same time and is False."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    encoded = password_hash or _dummy_hash()
    matched = _verify_in_this_thread(encoded, password)
    if matched is None:
        try:
            matched = _hasher.verify(encoded, password)
        except (VerificationError, InvalidHashError):
            matched = False
    return matched and password_hash is not None


def fingerprint(password_hash: str | None) -> str:
    return hashlib.sha256((password_hash or "").encode()).hexdigest()[:16]


def token_hash(token: str) -> str:
    """How a signed-out token is remembered (trygg.revoked_tokens)."""
    return hashlib.sha256(token.encode()).hexdigest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class TokenClaims:
    username: str
    kind: TokenKind
    expires: int
    fingerprint: str


class TokenSigner:
    """Issues and checks tokens with keys derived from the session secret."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("the session secret is empty")
        master = secret.encode()
        self._keys: dict[str, bytes] = {
            kind: hmac.new(master, f"trygg-token-{kind}".encode(), hashlib.sha256).digest()
            for kind in ("api", "session")
        }

    def _sign(self, kind: TokenKind, head: str) -> str:
        return _b64(hmac.new(self._keys[kind], head.encode(), hashlib.sha256).digest())

    def issue(self, username: str, password_hash: str | None, kind: TokenKind, expires: int) -> str:
        payload = json.dumps({"u": username, "k": kind, "e": expires, "p": fingerprint(password_hash)},
                             separators=(",", ":"))
        head = f"{_VERSION}.{_b64(payload.encode())}"
        return f"{head}.{self._sign(kind, head)}"

    def verify(self, token: str, kind: TokenKind, now: float) -> TokenClaims | None:
        """The claims of a valid, unexpired token of this kind, else None."""
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != _VERSION or len(token) > 4096:
            return None
        head = f"{parts[0]}.{parts[1]}"
        if not hmac.compare_digest(self._sign(kind, head), parts[2]):
            return None
        try:
            doc = json.loads(_unb64(parts[1]))
        except (ValueError, binascii.Error):
            return None
        if not isinstance(doc, dict) or doc.get("k") != kind:
            return None
        username, expires, fp = doc.get("u"), doc.get("e"), doc.get("p")
        if not isinstance(username, str) or not isinstance(expires, int) or not isinstance(fp, str):
            return None
        if expires <= now:
            return None
        return TokenClaims(username, kind, expires, fp)


__all__ = [
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "TokenClaims",
    "TokenKind",
    "TokenSigner",
    "fingerprint",
    "hash_password",
    "password_problem",
    "token_hash",
    "verify_password",
]
