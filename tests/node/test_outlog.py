"""The node's output log of an interactive job and the cursor that sends it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mgpu_node.outlog import OutputLog, Outputs, replay_offsets


class Link:
    """A link that can be down: what was sent while up."""

    def __init__(self) -> None:
        self.up = True
        self.sent: list[dict[str, Any]] = []

    def send(self, msg: dict[str, Any]) -> bool:
        if self.up:
            self.sent.append(msg)
        return self.up

    def data(self, start: int = 0) -> bytes:
        return b"".join(m["data"] for m in self.sent[start:])


def test_chunks_get_offsets_and_replay_from_any_offset(tmp_path: Path) -> None:
    olog = OutputLog(tmp_path, 7)
    assert olog.append(1, b"hello ") == 0
    assert olog.append(2, b"world\n") == 6
    assert olog.append(1, b"!") == 12
    assert [(at, s, d) for at, s, d, _ in olog.read_from(0)] == [
        (0, 1, b"hello "),
        (6, 2, b"world\n"),
        (12, 1, b"!"),
    ]
    # Whole chunks from the one that holds the offset on.
    assert [at for at, *_ in olog.read_from(8)] == [6, 12]
    assert list(olog.read_from(13)) == []
    # A new agent finds the log where the old one left it.
    again = OutputLog(tmp_path, 7)
    assert again.end == 13 and [d for _, _, d, _ in again.read_from(0)] == [
        b"hello ",
        b"world\n",
        b"!",
    ]
    again.remove()
    assert list(tmp_path.iterdir()) == []


def test_past_its_bound_the_oldest_output_goes_and_a_replay_says_how_much(
    tmp_path: Path,
) -> None:
    olog = OutputLog(tmp_path, 3, limit=100)
    for i in range(30):
        olog.append(1, b"%09d\n" % i)  # 10 bytes each: 300 in all
    assert olog.end == 300
    kept = list(olog.read_from(0))
    at, _, data, lost = kept[0]
    assert (at, data) == (0, b"") and lost == kept[1][0] > 0
    assert kept[-1][2] == b"000000029\n"
    # Only two segments, each at most half the bound.
    assert len(list(tmp_path.iterdir())) == 2
    assert sum(len(d) for _, _, d, _ in kept) <= 100


def test_nothing_is_sent_while_the_link_is_down_and_resume_sends_it_in_order(
    tmp_path: Path,
) -> None:
    link = Link()
    outputs = Outputs(tmp_path, link.send)
    outputs.start(5)
    outputs.write(5, 1, b"a")
    link.up = False
    outputs.write(5, 1, b"b")
    outputs.write(5, 2, b"c")
    assert link.data() == b"a"
    link.up = True
    outputs.write(5, 1, b"d")  # not before b and c: it waits for resume
    assert link.data() == b"a"
    outputs.resume({})
    assert link.data() == b"abcd"
    assert [m["offset"] for m in link.sent] == [0, 1, 2, 3]
    outputs.write(5, 1, b"e")  # live again
    assert link.sent[-1]["offset"] == 4 and link.data() == b"abcde"


def test_replay_resends_from_the_masters_offset_then_goes_on_live(tmp_path: Path) -> None:
    link = Link()
    outputs = Outputs(tmp_path, link.send)
    outputs.start(9)
    for piece in (b"one\n", b"two\n", b"three\n"):
        outputs.write(9, 1, piece)
    mark = len(link.sent)
    outputs.replay(9, 4)
    assert link.data(mark) == b"two\nthree\n"
    outputs.write(9, 1, b"four\n")
    assert link.sent[-1] == {
        "t": "job_output",
        "job_id": 9,
        "stream": 1,
        "data": b"four\n",
        "offset": 14,
    }
    # A job that has no log here: nothing to replay.
    outputs.replay(10, 0)
    assert link.sent[-1]["job_id"] == 9


def test_the_log_goes_once_the_exit_is_acknowledged_and_stale_ones_at_start(
    tmp_path: Path,
) -> None:
    link = Link()
    outputs = Outputs(tmp_path, link.send)
    outputs.start(1)
    outputs.write(1, 1, b"x")
    outputs.start(2)
    outputs.write(2, 1, b"y")
    outputs.retire(1)  # kept aside for `log` (done/), no longer sent or replayed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2.0", "done"]
    # A new agent keeps the logs of jobs that run or await an ack, and can replay them.
    fresh = Outputs(tmp_path, link.send)
    fresh.keep_only({3})
    assert [p.name for p in tmp_path.iterdir()] == ["done"]
    outputs.start(4)
    outputs.write(4, 1, b"z")
    fresh = Outputs(tmp_path, link.send)
    fresh.keep_only({4})
    mark = len(link.sent)
    fresh.replay(4, 0)
    assert link.data(mark) == b"z"


def test_a_new_run_starts_its_output_afresh(tmp_path: Path) -> None:
    link = Link()
    outputs = Outputs(tmp_path, link.send)
    outputs.start(1)
    outputs.write(1, 1, b"old")
    outputs.start(1)
    outputs.write(1, 1, b"new")
    assert link.sent[-1]["offset"] == 0


def test_the_master_can_rewind_the_cursor_at_registration(tmp_path: Path) -> None:
    link = Link()
    outputs = Outputs(tmp_path, link.send)
    outputs.start(5)
    outputs.write(5, 1, b"sent into a link that died")
    mark = len(link.sent)
    outputs.resume(replay_offsets({"replay": [[5, 5], [6, 0], ["x", 1], [7], "junk", [8, -1]]}))
    assert link.data(mark) == b"sent into a link that died"
    assert replay_offsets({"replay": [[5, 5], [6, 0], ["x", 1], [7], [[1], 2], [8, -1]]}) == {
        5: 5,
        6: 0,
    }
    assert replay_offsets(None) == {} and replay_offsets({}) == {}


def test_a_retired_log_is_read_by_range_and_swept_when_old(tmp_path: Path) -> None:
    import os

    from mgpu_node import outlog

    link = Link()
    outputs = Outputs(tmp_path, link.send)
    outputs.start(5)
    outputs.write(5, 1, b"hello ")
    outputs.write(5, 2, b"world\n")
    assert outputs.read_range(5, 0, 0, 100) == {"data": b"hello world\n", "offset": 0, "size": 12}
    outputs.retire(5)
    assert 5 not in outputs.logs and sorted(p.name for p in tmp_path.iterdir()) == ["done"]
    # Retired: still readable, any range, from the end too; a fresh agent keeps it.
    assert outputs.read_range(5, 3, 0, 4) == {"data": b"lo w", "offset": 3, "size": 12}
    assert outputs.read_range(5, None, 6, 100)["data"] == b"world\n"
    Outputs(tmp_path, link.send).keep_only(set())
    assert outputs.read_range(5, 0, 0, 100)["data"] == b"hello world\n"
    assert "no longer kept" in outputs.read_range(6, 0, 0, 100)["error"]
    # Past KEEP_DONE_S it goes (the sweep runs at most once a minute: force it here).
    old = time_before(outlog.KEEP_DONE_S + 10)
    for path in (tmp_path / "done").iterdir():
        os.utime(path, (old, old))
    outputs._swept_s = 0.0
    outputs._sweep_done()
    assert "no longer kept" in outputs.read_range(5, 0, 0, 100)["error"]


def time_before(seconds: float) -> float:
    import time

    return time.time() - seconds
