"""The wire: framing and encoding. The only module that imports msgpack (and mgpu_core.smallpack).

A frame is a 4-byte big-endian unsigned length followed by that many bytes of one msgpack
map. The map always has ``t`` (message type, str); requests also carry ``id`` (int, chosen by
the sender and echoed in the reply). Everything here is sans-I/O: bytes in, dicts out. The
socket adapters (:mod:`mgpu_core.aio`, :mod:`mgpu_core.conn`) are thin loops around it.

Validation of a message's fields against its schema is :mod:`mgpu_core.messages`' job; this
module only guarantees "a map with a string ``t``" and enforces the size limits *before*
buffering a body, so a peer announcing a 4 GiB frame costs us four bytes, not four gigabytes.
"""

from __future__ import annotations

from mgpu_core.errors import BadMessage, FrameTooLarge, ProtocolError
from mgpu_core.limits import MAX_IDS_PER_REQUEST, MAX_MESSAGE_LEN, MAX_PATH_LEN, shorten

PROTOCOL_VERSION = 1
DEFAULT_PORT = 6860
MAX_FRAME_BYTES = 16 * 1024 * 1024

# The length prefix: 4 bytes, big-endian (int.to_bytes, not struct: its import costs a client
# command start-up time).
HEADER_BYTES = 4

TYPE_CHECKING = False  # not typing's: importing typing costs a client command ~3 ms
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any

    Message = dict[str, Any]
else:
    Message = dict


# The codecs. msgpack's (C) serves the daemons and every large frame; a client command, which
# exchanges a few small frames, reads and writes them with mgpu_core.smallpack instead and so
# never imports msgpack (~5 ms of a ~12 ms command) unless a reply is large.
SMALL_FRAME_BYTES = 64 * 1024
_msgpack: ModuleType | None = None
_small_frames = False


def prefer_small_codec() -> None:
    """This process is a client command: small frames go through the pure-Python codec while
    msgpack is not loaded (the blocking client connection calls this)."""
    global _small_frames
    _small_frames = True


def _codec() -> ModuleType:
    global _msgpack
    if _msgpack is None:
        import msgpack

        _msgpack = msgpack
    return _msgpack


def _small(nbytes: int = 0) -> bool:
    return _small_frames and _msgpack is None and nbytes <= SMALL_FRAME_BYTES


def _packb(value: Any) -> bytes:
    if _small():
        from mgpu_core import smallpack

        return smallpack.pack(value)
    packed: bytes = _codec().packb(value, use_bin_type=True)
    return packed


def encode_frame(msg: Message) -> bytes:
    """Encode one message as a complete frame (length prefix + msgpack body).

    A str that is not UTF-8 text (lone surrogates: bytes that Python could not decode, as in
    ``os.environ`` and ``sys.argv``) goes as bin, its original bytes (:func:`as_sent`). Where
    the receiver's schema expects such text (:class:`mgpu_core.schema.OsStr`) it gets the
    same str back; anywhere else the bytes are refused as any wrong type is.
    """
    try:
        body = _packb(msg)
    except UnicodeEncodeError:
        # Rare: only then is the message walked (the common case costs nothing).
        body = _packb(as_sent(msg))
    return len(body).to_bytes(HEADER_BYTES, "big") + body


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


class DecodeLimits:
    """How much one frame may make the decoder build, checked while msgpack decodes it.

    msgpack turns one byte into a whole Python object (an empty array is 1 byte on the wire
    and ~64 bytes in memory, a short string 3 and ~50): a frame within the size limit can
    still cost 75 times its size. The lengths are checked by msgpack as it reads each header
    (an array announced with 4 billion elements is refused before anything is allocated);
    ``max_containers`` bounds the arrays and maps of one frame, the costliest objects, so that
    what a frame makes stays within a small multiple of its size.
    """

    __slots__ = ("max_bin_len", "max_container_len", "max_containers", "max_str_len")

    def __init__(
        self, *, max_container_len: int, max_containers: int, max_str_len: int, max_bin_len: int
    ) -> None:
        self.max_container_len = max_container_len
        self.max_containers = max_containers
        self.max_str_len = max_str_len
        self.max_bin_len = max_bin_len


class _ContainerCount:
    """msgpack's hook for every array and map it builds: refuses the one past the budget."""

    __slots__ = ("left",)

    def __init__(self, budget: int) -> None:
        self.left = budget

    def __call__(self, obj: Any) -> Any:
        self.left -= 1
        if self.left < 0:
            raise ValueError("too many arrays and maps in one frame")
        return obj


# What the master takes from a peer that has not proven who it is yet: a hello and the
# handshake's auth. The largest hello the schema allows (a node's registration with 64 GPUs
# whose names take their 256 characters and 10,000 running jobs with 53-bit ids) is ~146 KiB:
# a node must never be unable to register because of what it runs.
PREAUTH_MAX_FRAME_BYTES = 256 * 1024
PREAUTH_LIMITS = DecodeLimits(
    max_container_len=MAX_IDS_PER_REQUEST,
    max_containers=1024,
    max_str_len=MAX_PATH_LEN,
    max_bin_len=1024,
)
# What the master takes from an authenticated peer: the largest list a message holds (job ids,
# a node's running jobs, argv, environment entries) with room for newer peers' fields, and
# enough arrays and maps for a heartbeat of 64 GPUs with 256 processes each.
PEER_LIMITS = DecodeLimits(
    max_container_len=4 * MAX_IDS_PER_REQUEST,
    max_containers=64 * 1024,
    max_str_len=MAX_FRAME_BYTES,
    max_bin_len=MAX_FRAME_BYTES,
)

# The first byte of a msgpack map: fixmap (0x80-0x8f), map 16 (0xde), map 32 (0xdf).
_MAP_HEADERS = frozenset([*range(0x80, 0x90), 0xDE, 0xDF])


def decode_body(body: bytes, limits: DecodeLimits | None = None) -> Message:
    """Decode one frame body into a message map, or raise :class:`ProtocolError`.

    The first byte must open a map, checked before anything is decoded: a frame of a million
    empty arrays is refused for one byte's look. ``limits`` bounds what the decoding builds.
    """
    if not body or body[0] not in _MAP_HEADERS:
        raise BadMessage("frame body must be a map")
    small = limits is None and _small(len(body))
    msg = _small_unpack(body) if small else _c_unpack(body, limits)
    if not isinstance(msg.get("t"), str):
        # Dropped before raising: a traceback keeps this frame's locals, and an error held
        # back (FrameDecoder) would keep the whole decoded body alive with it.
        del msg
        raise BadMessage("message has no string field 't'")
    return msg  # type: ignore[no-any-return]


def _small_unpack(body: bytes) -> Any:
    from mgpu_core import smallpack

    try:
        return smallpack.unpack(body)
    except (ValueError, TypeError, RecursionError) as exc:
        why = str(exc)[:200] if isinstance(exc, smallpack.SmallPackError) else type(exc).__name__
        raise BadMessage(f"undecodable frame body: {why}") from None


def _c_unpack(body: bytes, limits: DecodeLimits | None) -> Any:
    msgpack = _codec()
    options: dict[str, Any] = {}
    if limits is not None:
        count = _ContainerCount(limits.max_containers)
        options = {
            "max_array_len": limits.max_container_len,
            "max_map_len": limits.max_container_len,
            "max_str_len": limits.max_str_len,
            "max_bin_len": limits.max_bin_len,
            "list_hook": count,
            "object_hook": count,
        }
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=True, **options)
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        # Only the words of a limit's ValueError (msgpack's own, or the count's); other errors
        # may quote what the peer sent.
        why = str(exc)[:200] if type(exc) is ValueError else type(exc).__name__
        raise BadMessage(f"undecodable frame body: {why}") from None


class FrameDecoder:
    """Incremental frame decoder: ``push(bytes)``, then ``next()`` for one message at a time
    (None until a whole frame is in); ``feed(bytes) -> [messages]`` does both at once.

    Raises :class:`FrameTooLarge` as soon as a header announces an oversized body and
    :class:`ProtocolError` for a body that is not a message map. After an error the stream
    cannot be resynchronised: the caller must close the connection. Frames are decoded only
    when asked for, so a peer that sends many frames at once costs their bytes until the
    reader gets to them, not their decoded size (:class:`DecodeLimits`).
    """

    __slots__ = ("_buf", "_error", "_need", "limits", "max_frame_bytes")

    def __init__(
        self, max_frame_bytes: int = MAX_FRAME_BYTES, limits: DecodeLimits | None = None
    ) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.limits = limits
        self._buf = bytearray()
        self._need = -1  # body length of the frame being read, -1 while reading a header
        # An error found after some good frames in the same chunk: those frames are returned
        # first (a request must not vanish because garbage followed it), the error next call.
        self._error: ProtocolError | None = None

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf)

    def push(self, data: bytes) -> None:
        self._buf += data

    def feed(self, data: bytes) -> list[Message]:
        if self._error is not None:
            raise _fresh(self._error)
        self.push(data)
        out: list[Message] = []
        try:
            while (msg := self.next()) is not None:
                out.append(msg)
        except ProtocolError:
            if not out:
                raise
        return out

    def next(self) -> Message | None:
        """The next whole message, or None until more bytes are pushed. An error stays: every
        later call raises it again."""
        if self._error is not None:
            raise _fresh(self._error)
        try:
            return self._parse()
        except ProtocolError as err:
            # Kept without a traceback, and raised as a copy: a traceback holds the frames it
            # passed, the reader's with this decoder and its buffer among them, in a cycle that
            # only the cyclic GC frees (an agent under a flood of bad links grew by 80 MB).
            self._error = _fresh(err)
            raise

    def _parse(self) -> Message | None:
        if self._need < 0:
            if len(self._buf) < HEADER_BYTES:
                return None
            length = int.from_bytes(self._buf[:HEADER_BYTES], "big")
            if length > self.max_frame_bytes:
                raise FrameTooLarge(
                    f"frame of {length} bytes exceeds the limit of {self.max_frame_bytes}"
                )
            if length == 0:
                raise ProtocolError("empty frame")
            del self._buf[:HEADER_BYTES]
            self._need = length
        if len(self._buf) < self._need:
            return None
        body = bytes(self._buf[: self._need])
        del self._buf[: self._need]
        self._need = -1
        return decode_body(body, self.limits)


def _fresh(err: ProtocolError) -> ProtocolError:
    """The same error, without a traceback."""
    return type(err)(err.message)


def ok_reply(req_id: int, data: Message | None = None) -> Message:
    return {"t": "ok", "id": req_id, "data": data if data is not None else {}}


def error_reply(req_id: int | None, code: str, message: str) -> Message:
    """An ``error``; its message is cut to the field's limit (it may quote what a peer sent)."""
    return {"t": "error", "id": req_id, "code": code, "message": shorten(message, MAX_MESSAGE_LEN)}
