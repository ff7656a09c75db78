"""What stands before a password is checked (docs/security.md "Sign-in"): the proof that
a `POST /login` comes from Trygg's own sign-in page, the throttle per account and per
address (dashboard/throttle.py) and the bounded argon2 worker (dashboard/hashing.py).

Login CSRF: a page on another site could post a form to `/login` with the attacker's
own username and password; the browser would take the cookie that comes back and the
nurse's console would switch to the attacker's account and team without a word. So
`POST /login` is only taken with a proof that a cross-site page cannot forge:

- `Sec-Fetch-Site: same-origin` (every current browser sends it, and no page can set
  it). Any other value is refused, `none` too: it marks a request the user started from
  the browser itself (address bar, bookmark), which never posts a sign-in form, and
  `same-site` would let a sibling host of the municipality sign a nurse in.
- Without `Sec-Fetch-Site` (older browsers, scripts): an `Origin` whose host and port
  are this request's `Host`. `Origin: null` (sandboxed frames, some redirects) and no
  `Origin` at all are refused.

The check is `dashboard.deps.cross_site_reason`, the same rule as for every change
made with the cookie. Programs sign in with `POST /api/auth/token`, which sets no cookie
and needs no proof.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from dashboard.hashing import PasswordWorker
from dashboard.throttle import Backoff, LoginThrottle
from trygg.settings import Settings


@dataclass
class LoginGuard:
    """The throttle and the hashing worker of one dashboard app."""

    throttle: LoginThrottle
    worker: PasswordWorker

    @classmethod
    def from_settings(cls, settings: Settings) -> LoginGuard:
        return cls(
            LoginThrottle(
                Backoff(settings.login_account_free, settings.login_account_leak_s,
                        max_s=settings.login_backoff_max_s),
                Backoff(settings.login_address_free, settings.login_address_leak_s,
                        max_s=settings.login_backoff_max_s),
                max_keys=settings.login_throttle_keys),
            PasswordWorker(settings.login_hash_threads, settings.login_hash_queue, settings.login_hash_rest),
        )


def get_guard(request: Request) -> LoginGuard:
    """The app's guard, made on first use (tests may put their own, with a fake clock, at
    `app.state.login_guard` beforehand); its threads end when the app goes."""
    app_state = request.app.state
    guard: LoginGuard | None = getattr(app_state, "login_guard", None)
    if guard is None:
        guard = LoginGuard.from_settings(app_state.trygg.settings)
        app_state.login_guard = guard
        weakref.finalize(request.app, guard.worker.close)
    return guard


Guard = Annotated[LoginGuard, Depends(get_guard)]


def client_host(request: Request) -> str | None:
    """The client's address: the socket's peer, or, when the peer is one of
    `TRYGG_TRUSTED_PROXIES`, the address that proxy put in `X-Forwarded-For` (uvicorn
    resolves it; composition/app.py passes the setting on)."""
    return request.client.host if request.client else None


__all__ = ["Guard", "LoginGuard", "client_host", "get_guard"]
