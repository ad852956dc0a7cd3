"""The pure-Python codec client commands use for small frames (mgpu_core.smallpack) against
msgpack itself: the same bytes for every value mgpu's messages hold, the same values back from
any msgpack encoding of them, and a one-line refusal for what it does not read."""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgpu_core import protocol, smallpack
from mgpu_core.errors import BadMessage

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=300)
    | st.binary(max_size=300)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=20)
        | st.dictionaries(st.text(max_size=20) | st.binary(max_size=5), inner, max_size=20)
    ),
    max_leaves=60,
)

BOUNDARIES = [
    0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1,
    -1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63),
    "a" * 31, "a" * 32, "a" * 255, "a" * 256, "é" * 40000, b"x" * 255, b"x" * 256, b"x" * 70000,
    [0] * 15, [0] * 16, [0] * 70000, {str(i): i for i in range(16)},
    {str(i): i for i in range(70000)},
]  # fmt: skip


@pytest.mark.parametrize("value", BOUNDARIES, ids=lambda v: repr(v)[:20])
def test_the_same_bytes_at_every_length_boundary(value: Any) -> None:
    packed = msgpack.packb(value, use_bin_type=True)
    assert smallpack.pack(value) == packed
    assert smallpack.unpack(packed) == msgpack.unpackb(packed, raw=False, strict_map_key=True)


@settings(max_examples=300, deadline=None)
@given(values)
def test_the_same_bytes_and_values_as_msgpack(value: Any) -> None:
    packed = msgpack.packb(value, use_bin_type=True)
    assert smallpack.pack(value) == packed
    assert smallpack.unpack(packed) == msgpack.unpackb(packed, raw=False, strict_map_key=True)


singles = st.recursive(
    st.floats(width=32, allow_nan=False) | st.integers(min_value=-(2**63), max_value=2**64 - 1),
    lambda inner: st.lists(inner, max_size=10) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=30,
)


@settings(max_examples=100, deadline=None)
@given(singles)
def test_reads_msgpacks_other_encodings(value: Any) -> None:
    """Single-precision floats, which another writer may use, read back the same."""
    packed = msgpack.packb(value, use_bin_type=True, use_single_float=True)
    assert smallpack.unpack(packed) == msgpack.unpackb(packed, raw=False, strict_map_key=True)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"", "truncated"),
        (b"\x92\x01", "truncated"),
        (b"\xdb\xff\xff\xff\xff", "truncated"),
        (b"\xdd\xff\xff\xff\xff", "truncated"),
        (b"\xdf\xff\xff\xff\xff", "truncated"),
        (b"\x81\x01\x02", "int is not allowed for map key"),
        (b"\xc1", "unsupported msgpack type 0xc1"),
        (b"\xd4\x01\x00", "unsupported msgpack type 0xd4"),  # an ext type
        (b"\x01\x02", "extra data"),
    ],
)
def test_what_it_refuses(body: bytes, error: str) -> None:
    with pytest.raises(smallpack.SmallPackError, match=error):
        smallpack.unpack(body)


def test_a_str_that_is_not_utf8_is_refused_as_msgpack_refuses_it() -> None:
    with pytest.raises(UnicodeDecodeError):
        smallpack.unpack(b"\xa1\xff")
    with pytest.raises(UnicodeEncodeError):
        smallpack.pack("\udcff")
    with pytest.raises(TypeError):
        smallpack.pack(object())


def test_a_client_process_decodes_small_frames_without_msgpack(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """protocol's choice: small frames of a client through smallpack, a large one through
    msgpack (loaded then, and used from then on); refusals are BadMessage either way."""
    monkeypatch.setattr(protocol, "_small_frames", True)
    monkeypatch.setattr(protocol, "_msgpack", None)
    loaded = []
    real = protocol._codec

    def counting() -> Any:
        loaded.append(1)
        return real()

    monkeypatch.setattr(protocol, "_codec", counting)
    small = {"t": "ok", "id": 1, "data": {"jobs": [{"job_id": 7, "name": "x"}]}}
    frame = protocol.encode_frame(small)
    assert protocol.decode_body(frame[protocol.HEADER_BYTES :]) == small
    assert not loaded
    with pytest.raises(BadMessage, match="undecodable frame body: truncated"):
        protocol.decode_body(b"\x81\xa1t")
    large = {"t": "ok", "data": "x" * (protocol.SMALL_FRAME_BYTES + 1)}
    body = msgpack.packb(large)
    assert protocol.decode_body(body) == large
    assert loaded


def test_the_length_prefix_is_the_bodys() -> None:
    frame = protocol.encode_frame({"t": "x"})
    (length,) = struct.unpack("!I", frame[:4])
    assert length == len(frame) - 4
