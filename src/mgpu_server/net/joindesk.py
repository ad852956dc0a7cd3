"""A new host joining (hello role ``join``): it proves a join token's secret and leaves with a
key of its own for the node id it asked for (api/joins.py keeps both; docs/protocol.md,
"Joining").

The exchange is the usual challenge-response (net/authn.py) with the join token's secret as
the key and the token id as the name, bound to the TLS channel; the challenge also carries the
cluster's CA certificate, which the host checks against the hash it was given before it
answers. Only the TLS port takes joins: the node key in the reply must not cross the network
in the clear, and a host with no TLS to pin has nothing to check the master by.

The key is stored before the host gets it (the store's commit, here and now, not at the end of
the turn: nothing is acknowledged that is not stored), and a failed commit undoes the join.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from mgpu_core.aio import AsyncConnection
from mgpu_core.constants import CA_CERT_FILE, TLS_DIR
from mgpu_core.daemons import ServerConfig
from mgpu_core.errors import (
    AuthenticationFailed,
    ConnectionClosed,
    MgpuError,
    ProtocolError,
    StorageError,
)
from mgpu_core.joining import JOIN_ROLE
from mgpu_core.protocol import error_reply, ok_reply
from mgpu_server.api import audit
from mgpu_server.api.joins import JoinInfo, JoinRegistry
from mgpu_server.api.permissions import Transport
from mgpu_server.net import authn
from mgpu_server.storage.store import Store

log = logging.getLogger(__name__)


class JoinDesk:
    def __init__(self, registry: JoinRegistry, store: Store, config: ServerConfig) -> None:
        self.registry = registry
        self.store = store
        self.config = config

    def ready(self, port: int) -> None:
        """Once listening: tell the registry how hosts reach us, or why they cannot join."""
        cert = self.config.tls_cert
        ca_file = self.config.state_dir / TLS_DIR / CA_CERT_FILE
        if cert is None:
            info = JoinInfo(port, why_not="the master runs with --insecure-plaintext")
        else:
            info = _tls_info(port, cert, ca_file)
        self.registry.info = info
        if not info.ca_pem:
            log.info("nodes cannot join with a token: %s", info.why_not)

    async def serve(
        self, conn: AsyncConnection, hello: dict[str, Any], transport: Transport
    ) -> None:
        token_id, node_id = hello["token"] or "", hello["node_id"] or ""
        registry = self.registry
        try:
            if transport is not Transport.TLS:
                raise AuthenticationFailed("a host joins over the master's TLS port only")
            if not token_id or not node_id:
                raise ProtocolError("a join hello must carry 'token' and 'node_id'")
            secret = registry.admit(token_id, node_id, time.time())
            await authn.challenge(
                conn,
                hello,
                secret,
                token_id,
                peer_role=JOIN_ROLE,
                timeout_s=self.config.hello_timeout_s,
                extra={"ca_pem": registry.info.ca_pem},
            )
            key = self._join(token_id, node_id, conn.peer)
        except (ConnectionClosed, TimeoutError):
            raise  # the host hung up: it found something wrong on its side (or went away)
        except MgpuError as err:
            audit.log_failure(
                "join_refused", peer=conn.peer, token=token_id, node=node_id, reason=err.message
            )
            conn.send(error_reply(hello["id"], err.code, err.message))
            return
        audit.log_event("node_join", peer=conn.peer, node=node_id, token=token_id)
        log.info("node=%s joined from %s with join token %s", node_id, conn.peer, token_id)
        conn.send(ok_reply(hello["id"], {"node_id": node_id, "key": key}))

    def _join(self, token_id: str, node_id: str, peer: str) -> bytes:
        before = self.registry.snapshot()
        key = self.registry.join(token_id, node_id, peer=peer, now_s=time.time())
        try:
            self.store.commit()
        except StorageError:
            self.registry.restore(before)
            raise
        return key


def _tls_info(port: int, cert: Path, ca_file: Path) -> JoinInfo:
    """The CA a joining host pins: the cluster CA in the state directory, if it issued the
    certificate the master presents (a master given its own certificate may have none).
    Imports ``cryptography`` here: a master that is never asked for a join token pays nothing."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    try:
        ca_pem = ca_file.read_text()
        ca = x509.load_pem_x509_certificate(ca_pem.encode())
        leaf = x509.load_pem_x509_certificate(cert.read_bytes())
        leaf.verify_directly_issued_by(ca)
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound) as exc:
        why = f"{ca_file} is not the CA of {cert} ({type(exc).__name__}: {exc})"
        return JoinInfo(port, why_not=why)
    names = [*san.get_values_for_type(x509.DNSName)]
    names += [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    return JoinInfo(port, ca_pem, tuple(names), why_not="")
