"""MQTT over TLS: the client's context, and one line for a handshake that failed."""

from __future__ import annotations

import ssl
from pathlib import Path


class TlsRefused(ConnectionError):
    """The TLS handshake with the broker failed (its certificate, most often)."""


def describe(exc: ssl.SSLError) -> str:
    """One line for a failed TLS handshake, naming what to check."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TLS: the broker's certificate was refused ({str(exc.verify_message).rstrip('.')}); "
                "check the CA file (TRYGG_MQTT_CA_FILE) and the host name in the URL")
    return f"TLS handshake failed ({exc.reason or exc})"


def tls_context(ca_file: Path | None = None, cert_file: Path | None = None,
                key_file: Path | None = None) -> ssl.SSLContext:
    """A client context: TLS 1.2 or later, the broker's certificate checked against
    `ca_file` (else the system's CAs) and its name against the host connected to; with
    `cert_file` (and `key_file`, unless the key is in it) a client certificate as well.
    Raises OSError (a file missing or unreadable) or ssl.SSLError (not PEM)."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        context.load_cert_chain(str(cert_file), str(key_file) if key_file is not None else None)
    return context
