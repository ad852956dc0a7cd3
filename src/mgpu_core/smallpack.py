"""A small msgpack codec in pure Python, for the frames a client command exchanges.

Importing the msgpack package costs a command ~5 ms (its ``ext`` module imports datetime and
collections), half of what Python itself needs to start, while a command sends one small
request and reads a reply of a few hundred bytes. :mod:`mgpu_core.protocol`, the one owner of
the wire, uses this codec for such frames in processes that ask for it (client commands) and
msgpack's C codec for everything else (the daemons, large listings). Both speak the same
msgpack: this codec writes the types mgpu's messages use (nil, bool, int, float, str, bin,
array, map) in their shortest forms, as msgpack does, and reads every form of them; an ext
type, a truncated body or trailing bytes are refused (tests/core/test_smallpack.py compares it
with msgpack on random messages).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Literal


_LITTLE = sys.byteorder == "little"


class _Fixed:
    """A big-endian integer field of ``size`` bytes (int.to_bytes: struct's import would cost
    a command start-up time; floats, rarer, import it)."""

    __slots__ = ("signed", "size")

    def __init__(self, size: int, signed: bool) -> None:
        self.size = size
        self.signed = signed

    def pack(self, value: int) -> bytes:
        return value.to_bytes(self.size, "big", signed=self.signed)

    def unpack(self, data: bytes) -> tuple[int]:
        return (int.from_bytes(data, "big", signed=self.signed),)


class _Float:
    """A big-endian IEEE float of ``size`` bytes, through a memoryview cast: struct's import
    (a C extension to load) would cost a command ~0.3 ms of start-up."""

    __slots__ = ("code", "size")

    def __init__(self, code: Literal["d", "f"], size: int) -> None:
        self.code = code  # memoryview's format: "d" (8 bytes) or "f" (4)
        self.size = size

    def pack(self, value: float) -> bytes:
        buf = bytearray(self.size)
        memoryview(buf).cast(self.code)[0] = value
        return bytes(buf[::-1] if _LITTLE else buf)

    def unpack(self, data: bytes) -> tuple[float]:
        value: float = memoryview(data[::-1] if _LITTLE else data).cast(self.code)[0]
        return (value,)


_B, _H, _I, _Q = _Fixed(1, False), _Fixed(2, False), _Fixed(4, False), _Fixed(8, False)
_b, _h, _i, _q = _Fixed(1, True), _Fixed(2, True), _Fixed(4, True), _Fixed(8, True)
_d, _f = _Float("d", 8), _Float("f", 4)


class SmallPackError(ValueError):
    """A body this codec cannot read (or a value it cannot write)."""


def pack(value: Any) -> bytes:
    """``msgpack.packb(value, use_bin_type=True)``'s bytes for mgpu's message values; a str
    that is not UTF-8 raises UnicodeEncodeError, as msgpack does."""
    out: list[bytes] = []
    _pack(value, out.append)
    return b"".join(out)


def _pack(value: Any, put: Any) -> None:  # noqa: C901 (one branch per msgpack type)
    if value is None:
        put(b"\xc0")
    elif value is True:
        put(b"\xc3")
    elif value is False:
        put(b"\xc2")
    elif type(value) is int:
        _pack_int(value, put)
    elif type(value) is str:
        data = value.encode()
        n = len(data)
        if n < 32:
            put(bytes((0xA0 | n,)))
        elif n < 0x100:
            put(b"\xd9" + _B.pack(n))
        elif n < 0x10000:
            put(b"\xda" + _H.pack(n))
        else:
            put(b"\xdb" + _I.pack(n))
        put(data)
    elif type(value) is dict:
        n = len(value)
        put(
            bytes((0x80 | n,))
            if n < 16
            else (b"\xde" + _H.pack(n) if n < 0x10000 else b"\xdf" + _I.pack(n))
        )
        for key, item in value.items():
            _pack(key, put)
            _pack(item, put)
    elif type(value) is list or type(value) is tuple:
        n = len(value)
        put(
            bytes((0x90 | n,))
            if n < 16
            else (b"\xdc" + _H.pack(n) if n < 0x10000 else b"\xdd" + _I.pack(n))
        )
        for item in value:
            _pack(item, put)
    elif type(value) is float:
        put(b"\xcb" + _d.pack(value))
    elif type(value) is bytes or type(value) is bytearray:
        n = len(value)
        put(
            b"\xc4" + _B.pack(n)
            if n < 0x100
            else (b"\xc5" + _H.pack(n) if n < 0x10000 else b"\xc6" + _I.pack(n))
        )
        put(bytes(value))
    elif isinstance(value, int):  # bool handled above; an int subclass (an IntEnum)
        _pack_int(int(value), put)
    elif isinstance(value, str):  # a str subclass (a StrEnum)
        _pack(str(value), put)
    else:
        raise TypeError(f"can not serialize {type(value).__name__!r} object")


def _pack_int(value: int, put: Any) -> None:
    if 0 <= value < 0x80:
        put(bytes((value,)))
    elif -32 <= value < 0:
        put(bytes((value & 0xFF,)))
    elif value >= 0:
        if value < 0x100:
            put(b"\xcc" + _B.pack(value))
        elif value < 0x10000:
            put(b"\xcd" + _H.pack(value))
        elif value < 0x100000000:
            put(b"\xce" + _I.pack(value))
        elif value < 0x10000000000000000:
            put(b"\xcf" + _Q.pack(value))
        else:
            raise OverflowError("Integer value out of range")
    elif value >= -0x80:
        put(b"\xd0" + _b.pack(value))
    elif value >= -0x8000:
        put(b"\xd1" + _h.pack(value))
    elif value >= -0x80000000:
        put(b"\xd2" + _i.pack(value))
    elif value >= -0x8000000000000000:
        put(b"\xd3" + _q.pack(value))
    else:
        raise OverflowError("Integer value out of range")


def unpack(body: bytes) -> Any:
    """``msgpack.unpackb(body, raw=False, strict_map_key=True)`` for mgpu's messages;
    SmallPackError for what it refuses (UnicodeDecodeError for a str that is not UTF-8)."""
    reader = _Reader(body)
    value = reader.read()
    if reader.pos != len(body):
        raise SmallPackError("extra data after the message")
    return value


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        start = self.pos
        end = start + n
        if end > len(self.data):
            raise SmallPackError("truncated message")
        self.pos = end
        return self.data[start:end]

    def read(self) -> Any:  # noqa: C901 (one branch per msgpack type)
        data, pos = self.data, self.pos
        if pos >= len(data):
            raise SmallPackError("truncated message")
        code = data[pos]
        self.pos = pos + 1
        if code < 0x80:
            return code
        if code >= 0xE0:
            return code - 0x100
        if 0xA0 <= code <= 0xBF:
            return self.take(code & 0x1F).decode()
        if 0x80 <= code <= 0x8F:
            return self.read_map(code & 0x0F)
        if 0x90 <= code <= 0x9F:
            return [self.read() for _ in range(code & 0x0F)]
        if code == 0xC0:
            return None
        if code == 0xC2:
            return False
        if code == 0xC3:
            return True
        fixed = _FIXED.get(code)
        if fixed is not None:
            return fixed.unpack(self.take(fixed.size))[0]
        length = _LENGTH.get(code)
        if length is None:
            raise SmallPackError(f"unsupported msgpack type 0x{code:02x}")
        kind, size = length
        n = size.unpack(self.take(size.size))[0]
        if kind == "str":
            return self.take(n).decode()
        if kind == "bin":
            return self.take(n)
        if kind == "map":
            return self.read_map(n)
        if n > len(self.data) - self.pos:  # each element takes a byte at least
            raise SmallPackError("truncated message")
        return [self.read() for _ in range(n)]

    def read_map(self, n: int) -> dict[Any, Any]:
        if n > len(self.data) - self.pos:
            raise SmallPackError("truncated message")
        result = {}
        for _ in range(n):
            key = self.read()
            if type(key) is not str and type(key) is not bytes:
                raise SmallPackError(f"{type(key).__name__} is not allowed for map key")
            result[key] = self.read()
        return result


_FIXED: dict[int, _Fixed | _Float] = {
    0xCA: _f, 0xCB: _d, 0xCC: _B, 0xCD: _H, 0xCE: _I, 0xCF: _Q,
    0xD0: _b, 0xD1: _h, 0xD2: _i, 0xD3: _q,
}  # fmt: skip
_LENGTH = {
    0xC4: ("bin", _B), 0xC5: ("bin", _H), 0xC6: ("bin", _I),
    0xD9: ("str", _B), 0xDA: ("str", _H), 0xDB: ("str", _I),
    0xDC: ("array", _H), 0xDD: ("array", _I), 0xDE: ("map", _H), 0xDF: ("map", _I),
}  # fmt: skip
