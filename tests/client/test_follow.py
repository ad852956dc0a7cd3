"""Following a job's output: each byte once, in order, by offset; a slow reader re-attaches."""

from __future__ import annotations

from typing import Any

import pytest

from mgpu_client import follow
from mgpu_client.client import EVENT_TYPES
from mgpu_core.messages import MASTER_TO_CLIENT


def chunk(offset: int | None, data: bytes, stream: int = 1, lost: int = 0) -> dict[str, Any]:
    return {
        "t": "job_output",
        "job_id": 1,
        "stream": stream,
        "data": data,
        "offset": offset,
        "lost": lost,
    }


def test_each_byte_once_in_order(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    printer = follow.Printer(0)
    for event in (
        chunk(0, b"ab"),
        chunk(4, b"ef"),  # a gap: waits for the replay
        chunk(0, b"abcd"),  # the replay: "ab" printed already
        chunk(4, b"ef"),
        chunk(2, b"cd"),  # a duplicate
        chunk(6, b"!", stream=2),
    ):
        printer.show(event)
    out, err = capsysbinary.readouterr()
    assert out == b"abcdef" and err == b"!" and printer.offset == 7


def test_what_the_node_no_longer_has_is_one_line(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    printer = follow.Printer(2)
    printer.show(chunk(0, b"", stream=2, lost=10))
    printer.show(chunk(10, b"x"))
    out, err = capsysbinary.readouterr()
    assert out == b"x" and err == b"mgpu: 8 bytes of output lost (past the node's limit)\n"


def test_attach_without_offset_starts_at_the_first_chunk_and_old_nodes_pass_through(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    printer = follow.Printer(None)
    printer.show(chunk(100, b"live"))
    follow.Printer(0).show(chunk(None, b"old"))
    assert capsysbinary.readouterr().out == b"liveold"


def test_output_that_never_arrived_is_named_once(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    printer = follow.Printer(0)
    printer.show(chunk(0, b"abc"))
    ended = {"state": "COMPLETED", "exit_code": 0, "output_bytes": 10}
    assert follow.report_end(ended, 7, "srun", printer) == 0
    follow.report_end({**ended, "output_bytes": 3}, 7, "srun", follow.Printer(3))  # all there
    follow.report_end({**ended, "output_bytes": None}, 7, "srun", follow.Printer(0))  # unknown
    out, err = capsysbinary.readouterr()
    assert out == b"abc"
    assert err == (
        b"mgpu: the last 7 bytes of job 7's output were not received: the job ended before "
        b"this client caught up, and they are gone\n"
    )


class FakeClient:
    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.requests: list[tuple[str, dict[str, Any]]] = []

    def next_event(self, timeout_s: float | None = None) -> dict[str, Any]:
        return self.events.pop(0)

    def request(self, kind: str, **fields: Any) -> dict[str, Any]:
        self.requests.append((kind, fields))
        return {"job": {"state": "RUNNING"}}


def test_a_slow_reader_is_told_why_and_re_attaches_from_its_offset(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    client = FakeClient(
        [
            chunk(0, b"abc"),
            {"t": "watch_dropped", "job_id": 1, "behind_bytes": 99},
            chunk(3, b"def"),
            {"t": "job_ended", "job_id": 1, "state": "COMPLETED", "exit_code": 0, "signal": None},
        ]
    )
    follower = follow.Follower(client, 1, "srun")  # type: ignore[arg-type]
    assert follower.follow() == 0
    out, err = capsysbinary.readouterr()
    assert out == b"abcdef"
    assert b"you read too slowly: 99 bytes behind; re-attaching" in err
    assert b"lost the master" not in err
    assert client.requests == [("attach", {"job_id": 1, "offset": 3})]


def test_the_client_takes_every_push_as_an_event() -> None:
    assert MASTER_TO_CLIENT - {"ok", "error", "challenge"} == EVENT_TYPES
