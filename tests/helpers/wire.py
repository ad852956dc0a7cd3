"""Frames and messages built by hand, for tests that talk to a master or an agent byte by
byte. The one place in tests/ that packs msgpack or length prefixes itself (src/ leaves that
to mgpu_core.protocol alone); a test that only needs well-formed traffic uses a Client."""

from __future__ import annotations

import socket
import struct
from typing import Any

import msgpack

from mgpu_core.protocol import PROTOCOL_VERSION

Message = dict[str, Any]


def header(length: int) -> bytes:
    """A frame's 4-byte length prefix, for any length (a lie included)."""
    return struct.pack("!I", length)


def pack(value: object) -> bytes:
    """Any msgpack value (a message or not) as a frame body."""
    body: bytes = msgpack.packb(value, use_bin_type=True)
    return body


def frame(value: object) -> bytes:
    """Any msgpack value as one frame: the peer decides whether it is a message."""
    body = pack(value)
    return header(len(body)) + body


def read_frame(sock: socket.socket) -> Message | None:
    """The next message, or None if the peer closed the connection."""
    head = _read_exactly(sock, 4)
    if head is None:
        return None
    (length,) = struct.unpack("!I", head)
    body = _read_exactly(sock, length)
    if body is None:
        return None
    msg = msgpack.unpackb(body, raw=False)
    assert isinstance(msg, dict), msg
    return msg


def _read_exactly(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def closed_after_error(sock: socket.socket) -> str:
    """Read until the peer closes; return the last error code it sent ("" if none)."""
    code = ""
    while (msg := read_frame(sock)) is not None:
        if msg["t"] == "error":
            code = str(msg["code"])
    return code


def connect_unix(path: str, timeout_s: float = 10.0) -> socket.socket:
    """A raw connection to a master's Unix socket (``path``: with or without ``unix:``)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect(path.removeprefix("unix:"))
    except OSError:
        sock.close()
        raise
    return sock


# ---- messages -------------------------------------------------------------------------------


def client_hello(**fields: Any) -> Message:
    """A client's hello (id 1, this protocol version); ``fields`` add or override."""
    return {"t": "hello", "id": 1, "version": PROTOCOL_VERSION, "role": "client", **fields}


def node_hello(
    node_id: str,
    nonce: bytes | None = None,
    *,
    gpus: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> Message:
    """An agent's hello (one fake GPU unless ``gpus``; no nonce unless given); ``fields`` add
    or override."""
    node = {"node_id": node_id, "gpus": gpus or [{"index": 0, "visible_id": "0"}]}
    msg: Message = {"t": "hello", "id": 1, "version": PROTOCOL_VERSION, "role": "node"}
    if nonce is not None:
        msg["nonce"] = nonce
    return {**msg, "node": node, **fields}
