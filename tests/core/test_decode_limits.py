"""What one frame may make the decoder build (mgpu_core.protocol.DecodeLimits), the map check
before decoding, one frame decoded at a time, and the largest legitimate hello fitting the
limits a peer has before it proves who it is."""

from __future__ import annotations

import contextlib
import gc
import traceback
import types

import msgpack
import pytest

from mgpu_core.errors import BadMessage
from mgpu_core.limits import MAX_GPUS_PER_NODE, MAX_IDS_PER_REQUEST, MAX_NAME_LEN
from mgpu_core.messages import HELLO
from mgpu_core.protocol import (
    PEER_LIMITS,
    PREAUTH_LIMITS,
    PREAUTH_MAX_FRAME_BYTES,
    FrameDecoder,
    decode_body,
    encode_frame,
)
from tests.helpers.wire import frame, header, node_hello, pack


@pytest.mark.parametrize(
    "value", [[[] for _ in range(100_000)], "text", 5, None, b"bytes"], ids=type
)
def test_a_body_that_is_not_a_map_is_refused_unread(
    value: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded")

    monkeypatch.setattr(msgpack, "unpackb", never)  # the module protocol.py decodes with
    with pytest.raises(BadMessage, match="must be a map"):
        FrameDecoder().feed(frame(value))


@pytest.mark.parametrize(
    ("body", "why"),
    [
        # Each an array or map longer than a message ever holds, announced in 5 bytes.
        (b"\x81\xa1t\xdd\xff\xff\xff\xff", "exceeds max_array_len"),
        (b"\x81\xa1t\xdf\xff\xff\xff\xff", "exceeds max_map_len"),
        # 2,000 empty arrays or maps: short, but costly once decoded.
        (pack({"t": "hello", "x": [[] for _ in range(2000)]}), "too many arrays and maps"),
        (pack({"t": "hello", "x": [{} for _ in range(2000)]}), "too many arrays and maps"),
        (pack({"t": "hello", "x": "y" * 5000}), "exceeds max_str_len"),
        (pack({"t": "hello", "x": b"y" * 5000}), "exceeds max_bin_len"),
    ],
    ids=["array-header", "map-header", "arrays", "maps", "string", "bytes"],
)
def test_preauth_limits_refuse_what_no_hello_holds(body: bytes, why: str) -> None:
    with pytest.raises(BadMessage, match=why):
        decode_body(body, PREAUTH_LIMITS)
    if len(body) > 8:  # a whole message: only the limits refuse it
        assert decode_body(body)["t"] == "hello"


def test_the_largest_hello_the_schema_allows_fits_before_authentication() -> None:
    """A node must never be unable to register because of what it runs: the largest node
    registration the schema takes (every GPU with names at their limit, the most running
    jobs with the largest ids) fits the frame and the decoding limits of a stranger."""
    name = "n" * MAX_NAME_LEN
    gpus = [
        {
            "index": i,
            "uuid": name,
            "name": name,
            "memory_total_bytes": 2**60,
            "visible_id": name,
            "fake": True,
        }
        for i in range(MAX_GPUS_PER_NODE)
    ]
    hello = node_hello(
        name,
        b"n" * 64,
        gpus=gpus,
        token="t" * 64,
        user=name,
    )
    hello["node"].update(
        hostname=name,
        address=name,
        gpu_backend=name,
        agent_version=name,
        cpus=65_536,
        mem_bytes=2**60,
        running_job_ids=[2**53 - i for i in range(MAX_IDS_PER_REQUEST)],
    )
    data = encode_frame(hello)
    assert len(data) - 4 <= PREAUTH_MAX_FRAME_BYTES
    [msg] = FrameDecoder(PREAUTH_MAX_FRAME_BYTES, PREAUTH_LIMITS).feed(data)
    assert len(HELLO.check(msg)["node"]["running_job_ids"]) == MAX_IDS_PER_REQUEST


def test_a_heartbeat_of_the_largest_node_fits_after_authentication() -> None:
    processes = [{"pid": p, "user": "u", "command": "c"} for p in range(256)]
    beat = {
        "t": "heartbeat",
        "gpus": [{"index": i, "processes": processes} for i in range(MAX_GPUS_PER_NODE)],
        "running_job_ids": list(range(1, MAX_IDS_PER_REQUEST + 1)),
    }
    [msg] = FrameDecoder(limits=PEER_LIMITS).feed(encode_frame(beat))
    assert len(msg["gpus"]) == MAX_GPUS_PER_NODE


def test_frames_are_decoded_one_at_a_time() -> None:
    dec = FrameDecoder()
    first, second = encode_frame({"t": "a", "id": 1}), encode_frame({"t": "b", "id": 2})
    dec.push(first + second + header(9))
    assert dec.next() == {"t": "a", "id": 1}
    # The rest is still bytes: a peer that sends ahead costs what it sent, no more.
    assert dec.buffered_bytes == len(second) + 4
    assert dec.next() == {"t": "b", "id": 2}
    assert dec.next() is None  # the next header read; its body not here yet


def test_an_error_is_kept_and_raised_again() -> None:
    dec = FrameDecoder()
    dec.push(header(3) + b"\x93\x01\x02")
    with pytest.raises(BadMessage):
        dec.next()
    with pytest.raises(BadMessage):
        dec.next()


def test_an_error_keeps_nothing_of_the_body_it_refused() -> None:
    """An error held back (or logged) must not keep the decoded body alive through its
    traceback's frames: a 2 MiB frame makes ~150 MB of objects."""
    body = msgpack.packb({"no_type": [[] for _ in range(1000)]})
    with pytest.raises(BadMessage) as info:
        decode_body(body)
    for frame_summary, _ in traceback.walk_tb(info.value.__traceback__):
        for value in frame_summary.f_locals.values():
            assert not (isinstance(value, dict) and "no_type" in value)


def test_a_kept_error_ties_no_frame_to_the_decoder() -> None:
    """The error a decoder keeps (to raise again) carries no traceback: one would hold the
    reader's frames, the decoder and its buffer among them, in a cycle only the cyclic GC
    frees (an agent under a flood of bad links grew by 80 MB)."""
    dec = FrameDecoder()
    dec.push(header(3) + b"\x93\x01\x02")

    def reader() -> None:  # as AsyncConnection.recv: a frame that holds the decoder
        with contextlib.suppress(BadMessage):
            dec.next()

    reader()
    reader()
    assert not [r for r in gc.get_referrers(dec) if isinstance(r, types.FrameType)]
