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

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from dashboard.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, password_problem

TokenKind = Literal["api", "session"]

_VERSION: Final = "v1"

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the user does not exist, so that both failures take as long."""
    return _hasher.hash("trygg-no-such-user")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True if `password` matches; a missing hash costs the same time and is False."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


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
