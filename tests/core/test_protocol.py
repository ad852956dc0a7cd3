from __future__ import annotations

import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mgpu_core.errors import BadMessage, FrameTooLarge, ProtocolError, UnknownMessageType
from mgpu_core.messages import CLIENT_REQUESTS, validate
from mgpu_core.models import JobSpec, printable
from mgpu_core.protocol import FrameDecoder, as_sent, encode_frame
from tests.helpers.wire import header, pack


def test_split_and_concatenated_frames() -> None:
    msgs = [{"t": "queue", "id": i, "blob": b"x" * i} for i in range(50)]
    stream = b"".join(encode_frame(m) for m in msgs)
    for step in (1, 3, 7, 4096, len(stream)):
        dec = FrameDecoder()
        out = []
        for i in range(0, len(stream), step):
            out += dec.feed(stream[i : i + step])
        assert out == msgs
        assert dec.buffered_bytes == 0


def test_oversized_header_rejected_before_body() -> None:
    dec = FrameDecoder(max_frame_bytes=1024)
    with pytest.raises(FrameTooLarge):
        dec.feed(header(1025))
    with pytest.raises(FrameTooLarge):
        FrameDecoder().feed(header(0xFFFFFFFF))


@pytest.mark.parametrize(
    "body",
    [b"\xc1", b"\x93\x01", pack([1, 2]), pack({"t": 5}), pack({1: 2})],
)
def test_bad_bodies(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(header(len(body)) + body)


@given(st.binary(max_size=512))
def test_random_bytes_never_crash_the_decoder(data: bytes) -> None:
    dec = FrameDecoder(max_frame_bytes=4096)
    try:
        for msg in dec.feed(data):
            assert isinstance(msg, dict) and isinstance(msg["t"], str)
    except ProtocolError:
        pass


def test_validate_fills_defaults_and_drops_unknown_keys() -> None:
    msg = validate(
        {"t": "submit", "id": 3, "job": {"argv": ["true"], "future": 1}}, CLIENT_REQUESTS
    )
    assert msg["job"]["gpus"] == 0 and msg["job"]["cpus"] == 1 and "future" not in msg["job"]
    assert msg["attach"] is False


@pytest.mark.parametrize(
    ("msg", "fragment"),
    [
        ({"t": "submit", "id": 1, "job": {"gpus": "2"}}, "field 'job.gpus': expected int, got str"),
        (
            {"t": "submit", "id": 1, "job": {"gpus": True}},
            "field 'job.gpus': expected int, got bool",
        ),
        ({"t": "submit", "id": 1, "job": {"gpus": 65}}, "field 'job.gpus': 65 outside 0..64"),
        ({"t": "submit", "id": 1, "job": {"argv": [1]}}, "field 'job.argv[0]'"),
        ({"t": "submit", "id": 1, "job": {"env": {"A": 1}}}, "field 'job.env.A'"),
        ({"t": "submit", "id": 1}, "field 'job' is required"),
        ({"t": "cancel", "id": 1, "job_ids": [0]}, "field 'job_ids[0]'"),
    ],
)
def test_validate_names_the_bad_field(msg: dict[str, object], fragment: str) -> None:
    with pytest.raises(BadMessage) as info:
        validate(msg, CLIENT_REQUESTS)
    assert fragment in str(info.value)


def test_validate_unknown_type() -> None:
    with pytest.raises(UnknownMessageType):
        validate({"t": "launch", "id": 1}, CLIENT_REQUESTS)


def test_env_size_is_bounded() -> None:
    env = {f"K{i}": "v" * 1000 for i in range(1100)}
    with pytest.raises(BadMessage, match="exceeds"):
        validate({"t": "submit", "id": 1, "job": {"argv": ["x"], "env": env}}, CLIENT_REQUESTS)


def test_good_frames_before_garbage_are_delivered_then_the_error() -> None:
    good = encode_frame({"t": "queue", "id": 1})
    dec = FrameDecoder()
    assert dec.feed(good + header(2) + b"\xc1\xc1") == [{"t": "queue", "id": 1}]
    with pytest.raises(BadMessage):
        dec.feed(b"")


# Bytes that are not UTF-8, as Python gives them from os.environ, sys.argv and files read with
# surrogateescape: a str with lone surrogates.
NOT_UTF8 = os.fsdecode(b"a\xff\xfe z")


@given(st.binary(max_size=40), st.binary(max_size=10))
def test_arguments_environment_and_script_pass_byte_for_byte(arg: bytes, key: bytes) -> None:
    spec = JobSpec(
        argv=["echo", os.fsdecode(arg)],
        env={os.fsdecode(key): os.fsdecode(arg), "PLAIN": "é"},
        script=os.fsdecode(b"#!/bin/sh\n" + arg),
    )
    [msg] = FrameDecoder().feed(encode_frame({"t": "submit", "id": 1, "job": spec.to_wire()}))
    back = JobSpec.from_wire(msg["job"])
    assert back == spec
    assert os.fsencode(back.argv[1]) == arg and os.fsencode(back.env[os.fsdecode(key)]) == arg
    # The master stores the spec as JSON, and reads the same strs back.
    assert JobSpec.from_checked(json.loads(json.dumps(back.to_wire()))) == spec


def test_text_that_is_not_utf8_travels_as_bytes_and_only_where_bytes_may_go() -> None:
    [msg] = FrameDecoder().feed(encode_frame({"t": "x", "a": [NOT_UTF8], NOT_UTF8: "ok"}))
    assert msg == {"t": "x", "a": [b"a\xff\xfe z"], b"a\xff\xfe z": "ok"}
    assert as_sent({"k": ("é", NOT_UTF8)}) == {"k": ["é", b"a\xff\xfe z"]}
    with pytest.raises(BadMessage, match="field 'name': expected str, got bytes"):
        JobSpec.from_wire(as_sent({"name": NOT_UTF8}))


def test_what_is_shown_escapes_bytes_that_are_not_utf8() -> None:
    spec = JobSpec(argv=[os.fsdecode(b"/bin/\xffprog"), NOT_UTF8])
    assert spec.command_display() == "'/bin/\\xffprog' 'a\\xff\\xfe z'"
    assert printable(spec.display_name()) == "\\xffprog"
    assert printable("plain é") == "plain é"
    [row] = FrameDecoder().feed(encode_frame({"t": "row", "command": spec.command_display()}))
    assert row["command"] == spec.command_display()  # a str: sent as text, not bytes
