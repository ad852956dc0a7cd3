"""Who is on the other end of a connection: nodes and TCP clients by HMAC challenge-response,
clients on the master's Unix socket by the kernel's peer credentials."""

from __future__ import annotations

import asyncio
import logging
import pwd
import socket
import struct
from typing import Any

from mgpu_core import auth
from mgpu_core.aio import AsyncConnection
from mgpu_core.errors import AuthenticationFailed, ConnectionClosed, ProtocolError
from mgpu_core.messages import AUTH
from mgpu_server.api import audit

log = logging.getLogger(__name__)

MIN_NONCE_BYTES = 16


async def challenge(
    conn: AsyncConnection,
    hello: dict[str, Any],
    key: bytes,
    name: str,
    *,
    peer_role: str,
    timeout_s: float,
) -> None:
    """Mutual proof of ``key`` (see mgpu_core.auth): answer the peer's nonce with ours and our
    proof, then check the peer's proof over both. Raises AuthenticationFailed."""
    peer_nonce = hello["nonce"]
    if peer_nonce is None or len(peer_nonce) < MIN_NONCE_BYTES:
        raise AuthenticationFailed(f"{peer_role} {name!r} sent no challenge: upgrade it")
    nonce = auth.new_nonce()
    master_proof = auth.proof(key, "master", name, peer_nonce, nonce)
    conn.send({"t": "challenge", "id": hello["id"], "nonce": nonce, "proof": master_proof})
    try:
        reply = await asyncio.wait_for(conn.recv(), timeout_s)
    except (ConnectionClosed, TimeoutError):
        # A peer whose secret differs sees our proof fail and hangs up here.
        audit.log_event("auth_failure", peer=conn.peer, **{peer_role: name}, reason="no answer")
        raise
    if reply["t"] != "auth":
        raise ProtocolError(f"expected auth, got {reply['t']!r}")
    given = AUTH.check(reply)["proof"]
    if not auth.verify(auth.proof(key, peer_role, name, nonce, peer_nonce), given):
        secret = "cluster key" if peer_role == "node" else "token secret"
        raise AuthenticationFailed(f"{peer_role} {name!r} failed authentication: wrong {secret}")


def peer_uid(writer: asyncio.StreamWriter) -> int:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED)."""
    sock: socket.socket = writer.get_extra_info("socket")
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid without a passwd entry (a container): still a distinct user
        return f"uid{uid}"
