"""The node's on-disk state: atomic writes, the exit spool, job records, the state-dir lock."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from mgpu_node import spool
from mgpu_node.spool import ExitSpool, JobRecord, JobRecords, lock_state_dir, write_atomic

pytestmark = pytest.mark.timeout(30)


def exited(job_id: int, code: int | None = 0, sig: int | None = None) -> dict[str, Any]:
    return {
        "t": "job_exited",
        "job_id": job_id,
        "exit_code": code,
        "signal": sig,
        "timed_out": False,
        "reason": "",
    }


def test_write_atomic_replaces_whole_and_fsyncs_only_when_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    target = tmp_path / "f.json"
    write_atomic(target, b"old", durable=False)
    assert synced == []
    write_atomic(target, b"new" * 100_000, durable=True)
    assert target.read_bytes() == b"new" * 100_000
    assert len(synced) == 2  # the file, then its directory (the rename)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]


def test_write_atomic_failure_leaves_the_old_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f.json"
    write_atomic(target, b"old", durable=True)

    def disk_full(fd: int, data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(OSError):
        write_atomic(target, b"new", durable=True)
    assert target.read_bytes() == b"old"


def test_exit_is_on_disk_exactly_until_acked_and_survives_a_new_instance(tmp_path: Path) -> None:
    exits = ExitSpool(tmp_path / "exits")
    first, second = exited(7, 5), exited(3, None, 10)
    exits.put(first)
    exits.put(second)
    exits.sync()
    assert exits.ids() == [7, 3] and 7 in exits and len(exits) == 2
    exits.close()

    reloaded = ExitSpool(tmp_path / "exits")  # an agent restart
    assert reloaded.pending() == [first, second]

    reloaded.ack(7)
    reloaded.close()
    assert ExitSpool(tmp_path / "exits").pending() == [second]
    reloaded.ack(7)  # a repeated or unknown ack is harmless
    reloaded.ack(12345)
    assert reloaded.ids() == [3]


def test_put_again_replaces_and_becomes_newest(tmp_path: Path) -> None:
    exits = ExitSpool(tmp_path)
    exits.put(exited(1))
    exits.put(exited(2))
    exits.put(exited(1, 9))
    assert [m["job_id"] for m in exits.pending()] == [2, 1]
    assert exits.pending()[1]["exit_code"] == 9


def test_limit_drops_the_oldest(tmp_path: Path) -> None:
    exits = ExitSpool(tmp_path, limit=3)
    for job_id in range(1, 6):
        exits.put(exited(job_id))
    assert exits.ids() == [3, 4, 5]
    exits.close()
    assert ExitSpool(tmp_path, limit=3).ids() == [3, 4, 5]
    assert spool.MAX_UNACKED_EXITS == 5000


def test_unreadable_files_and_interrupted_writes_are_removed_on_load(tmp_path: Path) -> None:
    (tmp_path / ".4.json.tmp").write_text('{"t": "job_exi')
    (tmp_path / "5.json").write_text("not json")
    (tmp_path / "6.json").write_text(json.dumps(exited(99)))  # names another job
    (tmp_path / "notes.txt").write_text("left alone")
    write_atomic(tmp_path / "8.json", json.dumps(exited(8)).encode(), durable=False)
    exits = ExitSpool(tmp_path)
    assert exits.ids() == [8]  # an older agent's spool file is still delivered
    assert sorted(p.name for p in tmp_path.iterdir()) == ["8.json", "journal", "notes.txt"]
    exits.ack(8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal", "notes.txt"]


def test_unwritable_spool_keeps_the_exit_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exits = ExitSpool(tmp_path / "exits")

    def disk_full(fd: int, data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    exits.put(exited(1))
    exits.sync()
    assert exits.ids() == [1]  # still sent (and resent after reconnects) from memory


def test_job_records_round_trip_and_cleanup(tmp_path: Path) -> None:
    records = JobRecords(tmp_path / "jobs")
    record = JobRecord(
        job_id=4,
        pid=1234,
        create_time=1700000000.25,
        start_wall=1700000000.5,
        time_limit_s=60,
        kill_grace_s=2.0,
        interactive=True,
        restart_count=2,
    )
    records.put(record)
    records.status_file(4).write_text("exit 0\n")
    (tmp_path / "jobs" / "5.json").write_text('{"job_id": 5}')  # missing fields
    (tmp_path / "jobs" / "6.status").write_text("exit 1\n")  # no record: handled already
    assert JobRecords(tmp_path / "jobs").load() == [record]
    assert record.deadline() == 1700000060.5
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == ["4.json", "4.status"]
    records.remove(4)
    assert list((tmp_path / "jobs").iterdir()) == []


def test_state_dir_lock_is_exclusive_and_released_on_close(tmp_path: Path) -> None:
    fd = lock_state_dir(tmp_path / "state")
    with pytest.raises(OSError, match="another mgpu_node agent"):
        lock_state_dir(tmp_path / "state")
    os.close(fd)
    os.close(lock_state_dir(tmp_path / "state"))


def test_a_torn_last_line_is_ignored_and_acks_survive_a_restart(tmp_path: Path) -> None:
    exits = ExitSpool(tmp_path)
    for job_id in (1, 2, 3):
        exits.put(exited(job_id))
    exits.sync()
    exits.ack(2)
    exits.close()
    with open(tmp_path / "journal", "ab") as f:
        f.write(b'{"exit":{"t":"job_exi')  # a crash in the middle of an append
    assert ExitSpool(tmp_path).ids() == [1, 3]


def test_an_empty_spool_truncates_its_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ExitSpool, "TRUNCATE_BYTES", 100)
    exits = ExitSpool(tmp_path)
    for job_id in range(1, 20):
        exits.put(exited(job_id))
    exits.sync()
    for job_id in range(1, 20):
        exits.ack(job_id)
    assert (tmp_path / "journal").stat().st_size == 0
    exits.put(exited(42))
    exits.close()
    assert ExitSpool(tmp_path).ids() == [42]
