"""TLS for TCP connections (Python's ssl module), on by default: the master presents a
certificate signed by the cluster's own CA, and clients and node agents trust that CA and
nothing else (not the system's CAs: any of those could sign a certificate for the master's
name).

TLS protects what crosses the network (job specs, environments, output, and every frame after
the handshake, which a plain TCP link would let an on-path attacker inject) and proves the
master's identity by certificate as well as by the HMAC proofs; who a client or node is stays
the token's or key's business. The proofs are bound to the channel (:func:`binding`), so a
handshake relayed into another TLS channel is worthless. Imported only for TCP links: ``ssl``
costs a client several milliseconds of start-up, and the Unix socket needs none of this.
"""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path

from mgpu_core.errors import ConfigError


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS certificate {cert} / key {key}: {exc}") from None
    return ctx


def client_context(ca: Path) -> ssl.SSLContext:
    """Verifies the master's certificate and host name against ``ca`` only. (Not
    ``ssl.create_default_context``: without a cafile argument it loads every system CA.)"""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_verify_locations(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS CA certificate {ca}: {exc}") from None
    return ctx


def binding(cert_der: bytes | None) -> bytes:
    """The channel binding the handshake's proofs cover: SHA-256 of the master's certificate
    (RFC 5929's ``tls-server-end-point``), computed by the master from its own certificate and
    by its peer from the one it verified. Empty without TLS."""
    return hashlib.sha256(cert_der).digest() if cert_der else b""


def peer_binding(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> bytes:
    """The binding of a client-side TLS connection (empty for plain TCP)."""
    return binding(ssl_object.getpeercert(binary_form=True)) if ssl_object is not None else b""


def cert_der(cert: Path) -> bytes:
    """The DER form of the first certificate in a PEM file (the master's own)."""
    try:
        text = cert.read_text()
        first = text[text.index(ssl.PEM_HEADER) : text.index(ssl.PEM_FOOTER) + len(ssl.PEM_FOOTER)]
        return ssl.PEM_cert_to_DER_cert(first)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read TLS certificate {cert}: {exc}") from None
