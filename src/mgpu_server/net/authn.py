"""Who is on the other end of a connection: nodes and TCP clients by HMAC challenge-response,
clients on the master's Unix socket by the kernel's peer credentials."""

from __future__ import annotations

import asyncio
import logging
import pwd
import socket
import struct
from typing import Any

from mgpu_core.aio import AsyncConnection
from mgpu_core.errors import AuthenticationFailed, ConnectionClosed
from mgpu_core.handshake import Responder
from mgpu_server.api import audit
from mgpu_server.api.tokens import TokenRegistry

log = logging.getLogger(__name__)


async def challenge(
    conn: AsyncConnection,
    hello: dict[str, Any],
    key: bytes,
    name: str,
    *,
    peer_role: str,
    timeout_s: float,
    extra: dict[str, Any] | None = None,
) -> None:
    """Mutual proof of ``key`` (mgpu_core.handshake): answer the peer's nonce with ours and our
    proof, then check the peer's proof over both. Raises AuthenticationFailed (ProtocolError
    if the peer answers with anything but ``auth``). ``extra``: fields for the challenge (a
    joining host's CA certificate)."""
    responder = Responder(key, name, peer_role, binding=conn.binding)
    conn.send({**responder.on_hello(hello), **(extra or {})})
    try:
        reply = await asyncio.wait_for(conn.recv(), timeout_s)
    except (ConnectionClosed, TimeoutError):
        # A peer whose secret differs sees our proof fail and hangs up here.
        audit.log_failure("auth_failure", peer=conn.peer, **{peer_role: name}, reason="no answer")
        raise
    responder.on_auth(reply)


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


async def token_user(
    conn: AsyncConnection,
    hello: dict[str, Any],
    token_id: str,
    tokens: TokenRegistry,
    timeout_s: float,
) -> str:
    """A TCP client's user: the owner of the token it proves (challenge-response), checked
    again after the proof (a token revoked meanwhile is refused); AuthenticationFailed."""
    record = tokens.lookup(token_id)
    if record is None:
        raise AuthenticationFailed(f"token {token_id} is unknown or revoked")
    await challenge(conn, hello, record.secret, token_id, peer_role="client", timeout_s=timeout_s)
    if tokens.lookup(token_id) is None:  # revoked while we waited for the proof
        raise AuthenticationFailed(f"token {token_id} is unknown or revoked")
    audit.log_event("client_auth", peer=conn.peer, user=record.user, token=token_id)
    return record.user
