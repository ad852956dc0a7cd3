"""The wire: framing and encoding. The only module that imports msgpack and struct.

A frame is a 4-byte big-endian unsigned length followed by that many bytes of one msgpack
map. The map always has ``t`` (message type, str); requests also carry ``id`` (int, chosen by
the sender and echoed in the reply). Everything here is sans-I/O: bytes in, dicts out. The
socket adapters (:mod:`mgpu_core.aio`, :mod:`mgpu_core.conn`) are thin loops around it.

Validation of a message's fields against its schema is :mod:`mgpu_core.messages`' job; this
module only guarantees "a map with a string ``t``" and enforces the size limits *before*
buffering a body, so a peer announcing a 4 GiB frame costs us four bytes, not four gigabytes.
"""

from __future__ import annotations

import struct

import msgpack

from mgpu_core.errors import BadMessage, FrameTooLarge, ProtocolError
from mgpu_core.limits import MAX_MESSAGE_LEN, shorten

PROTOCOL_VERSION = 1
DEFAULT_PORT = 6860
MAX_FRAME_BYTES = 16 * 1024 * 1024

_HEADER = struct.Struct("!I")
HEADER_BYTES = _HEADER.size

TYPE_CHECKING = False  # not typing's: importing typing costs a client command ~3 ms
if TYPE_CHECKING:
    from typing import Any

    Message = dict[str, Any]
else:
    Message = dict


def encode_frame(msg: Message) -> bytes:
    """Encode one message as a complete frame (length prefix + msgpack body).

    A str that is not UTF-8 text (lone surrogates: bytes that Python could not decode, as in
    ``os.environ`` and ``sys.argv``) goes as bin, its original bytes (:func:`as_sent`). Where
    the receiver's schema expects such text (:class:`mgpu_core.schema.OsStr`) it gets the
    same str back; anywhere else the bytes are refused as any wrong type is.
    """
    try:
        body: bytes = msgpack.packb(msg, use_bin_type=True)
    except UnicodeEncodeError:
        # Rare: only then is the message walked (the common case costs nothing).
        body = msgpack.packb(as_sent(msg), use_bin_type=True)
    return _HEADER.pack(len(body)) + body


def as_sent(value: Any) -> Any:
    """``value`` as a peer decodes it: every str that is not UTF-8 text, as a key or a value at
    any depth, replaced by its original bytes (``os.fsencode``); the rest as it is."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return value.encode("utf-8", "surrogateescape")
        return value
    if isinstance(value, dict):
        return {as_sent(k): as_sent(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_sent(v) for v in value]
    return value


def decode_body(body: bytes) -> Message:
    """Decode one frame body into a message map, or raise :class:`ProtocolError`."""
    try:
        msg = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        raise BadMessage(f"undecodable frame body: {type(exc).__name__}") from None
    if not isinstance(msg, dict):
        raise BadMessage(f"frame body must be a map, got {type(msg).__name__}")
    if not isinstance(msg.get("t"), str):
        raise BadMessage("message has no string field 't'")
    return msg


class FrameDecoder:
    """Incremental frame decoder: ``feed(bytes) -> [messages]``.

    Raises :class:`FrameTooLarge` as soon as a header announces an oversized body and
    :class:`ProtocolError` for a body that is not a message map. After an error the stream
    cannot be resynchronised: the caller must close the connection.
    """

    __slots__ = ("_buf", "_error", "_need", "max_frame_bytes")

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self._need = -1  # body length of the frame being read, -1 while reading a header
        # An error found after some good frames in the same chunk: those frames are returned
        # first (a request must not vanish because garbage followed it), the error next call.
        self._error: ProtocolError | None = None

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Message]:
        if self._error is not None:
            raise self._error
        self._buf += data
        out: list[Message] = []
        try:
            self._parse(out)
        except ProtocolError as err:
            if not out:
                raise
            self._error = err
        return out

    def _parse(self, out: list[Message]) -> None:
        while True:
            if self._need < 0:
                if len(self._buf) < HEADER_BYTES:
                    return
                (length,) = _HEADER.unpack_from(self._buf)
                if length > self.max_frame_bytes:
                    raise FrameTooLarge(
                        f"frame of {length} bytes exceeds the limit of {self.max_frame_bytes}"
                    )
                if length == 0:
                    raise ProtocolError("empty frame")
                del self._buf[:HEADER_BYTES]
                self._need = length
            if len(self._buf) < self._need:
                return
            body = bytes(self._buf[: self._need])
            del self._buf[: self._need]
            self._need = -1
            out.append(decode_body(body))


def ok_reply(req_id: int, data: Message | None = None) -> Message:
    return {"t": "ok", "id": req_id, "data": data if data is not None else {}}


def error_reply(req_id: int | None, code: str, message: str) -> Message:
    """An ``error``; its message is cut to the field's limit (it may quote what a peer sent)."""
    return {"t": "error", "id": req_id, "code": code, "message": shorten(message, MAX_MESSAGE_LEN)}
