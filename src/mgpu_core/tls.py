"""Optional TLS for TCP connections (Python's ssl module): the master presents a certificate,
clients and node agents check it against the cluster's CA.

TLS protects what crosses the network (job specs, environments, output) and proves the
master's identity by certificate as well as by the HMAC proofs; who a client or node is stays
the token's or cluster key's business. Imported only where TLS is configured: ``ssl`` costs a
client several milliseconds of start-up.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from mgpu_core.errors import ConfigError


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS certificate {cert} / key {key}: {exc}") from None
    return ctx


def client_context(ca: Path) -> ssl.SSLContext:
    """Verifies the master's certificate and host name against ``ca`` only."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_verify_locations(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS CA certificate {ca}: {exc}") from None
    return ctx
