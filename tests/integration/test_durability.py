"""Nothing lost: the master's state survives kill -9 and restarts."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mgpu_client.client import Client
from mgpu_core.config import parse_address
from mgpu_core.constants import DB_FILE
from mgpu_core.errors import MgpuError
from mgpu_core.exitcodes import EXIT_STARTUP_FAILURE
from mgpu_core.models import JobSpec
from tests.helpers.cluster import FAST_FENCE, Cluster, running_cluster, wait_for

pytestmark = pytest.mark.timeout(180)


def test_restart_keeps_pending_running_and_finished_jobs(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=1)
    done = cluster.sbatch("--wrap", "echo finished-before")
    cluster.wait_state(done, "COMPLETED")
    release = cluster.tmp / "release"
    running = cluster.sbatch(
        "--gpus", "1", "--wrap", f"while [ ! -e {release} ]; do sleep 0.02; done; exit 3"
    )
    cluster.wait_state(running, "RUNNING")
    pending = [
        cluster.sbatch("--gpus", "1", "-J", f"p{i}", "--wrap", "echo $MGPU_JOB_ID")
        for i in range(3)
    ]
    before = cluster.jobs()

    cluster.kill_master()
    cluster.start_master("--kill-grace", "2", port=cluster.port)
    after = cluster.jobs()
    assert sorted(after) == sorted(before)
    assert after[done]["state"] == "COMPLETED" and after[running]["state"] == "RUNNING"
    assert all(after[p]["state"] == "PENDING" for p in pending)
    # The node reconnects and reports the job it still runs; the GPU stays allocated to it.
    wait_for(lambda: cluster.node_state("n1") not in (None, "down"), 20, "node to reconnect")
    assert cluster.job(running)["state"] == "RUNNING"
    assert all(cluster.job(p)["state"] == "PENDING" for p in pending)
    release.touch()
    finished = cluster.wait_state(running, "FAILED", "COMPLETED")
    assert finished["state"] == "FAILED" and finished["exit_code"] == 3
    for p in pending:
        cluster.wait_state(p, "COMPLETED")
    # New ids continue after the old ones.
    assert cluster.sbatch("--wrap", "true") > max(pending)


def test_kill_9_during_concurrent_submits_loses_no_acknowledged_job(cluster: Cluster) -> None:
    address = parse_address(cluster.socket_address)
    acked: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def submitter() -> None:
        try:
            with Client(address, timeout_s=10) as client:
                while not stop.is_set():
                    job_id = client.submit(JobSpec(argv=["true"], cwd="/"))
                    with lock:
                        acked.append(job_id)
        except (MgpuError, OSError, TimeoutError):
            return  # the master died under us: expected

    threads = [threading.Thread(target=submitter) for _ in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) >= 1000, 60, "1000 acknowledged submissions")
    cluster.kill_master()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    cluster.start_master(port=cluster.port)
    stored = cluster.jobs()
    assert len(acked) == len(set(acked)) >= 1000
    missing = set(acked) - set(stored)
    assert not missing, f"{len(missing)} acknowledged jobs lost"
    db = sqlite3.connect(cluster.tmp / "master" / "mgpu.db")
    dupes = db.execute("SELECT count(*) - count(DISTINCT job_id) FROM jobs").fetchone()[0]
    assert dupes == 0


def test_bad_state_dir_and_corrupt_database_stop_the_master(tmp_path: Path) -> None:
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("x")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "mgpu.db").write_bytes(b"this is not a database" * 100)
    for state, fragment in ((blocked, str(blocked)), (corrupt, str(corrupt / "mgpu.db"))):
        result = subprocess.run(
            [sys.executable, "-m", "mgpu_server", "--port", "0", "--state-dir", str(state)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode != 0
        assert fragment in result.stderr and "Traceback" not in result.stderr


def _master_refuses(state: Path, *extra: str) -> str:
    """Start a master on ``state`` that must refuse to start: its one line of stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "mgpu_server", "--port", "0", "--state-dir", str(state), *extra],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == EXIT_STARTUP_FAILURE, result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    return line


def _stored_history(cluster: Cluster, jobs: int = 200) -> Path:
    """A real database: ``jobs`` jobs stored by a master that is then stopped (so that
    everything is in mgpu.db, none in its WAL). Its path."""
    with Client(parse_address(cluster.socket_address)) as client:
        specs = [JobSpec(argv=["echo", f"job-{i:04d}"], cwd="/", hold=True) for i in range(jobs)]
        client.submit_many(specs)
    cluster.stop()
    db = cluster.master_state / DB_FILE
    assert not db.with_name(DB_FILE + "-wal").exists()
    return db


@pytest.mark.parametrize("loss", ["missing", "empty", "no tables"])
def test_a_lost_database_stops_the_master_until_reset(cluster: Cluster, loss: str) -> None:
    db = _stored_history(cluster, jobs=3)
    db.unlink()
    if loss == "empty":
        db.touch()
    elif loss == "no tables":
        sqlite3.connect(db).execute("PRAGMA user_version=1").connection.close()
    line = _master_refuses(cluster.master_state)
    assert f"state database {db}" in line and "backup" in line and "--reset-state" in line
    assert db.exists() == (loss != "missing")  # nothing made in its place

    # --reset-state moves what is left aside, says so, and starts a new history.
    cluster.start_master("--reset-state")
    assert cluster.jobs() == {}
    assert cluster.sbatch("--wrap", "true") == 1
    aside = list(cluster.master_state.glob(f"{DB_FILE}.broken-*"))
    assert len(aside) == (loss != "missing")
    reset_lines = [ln for ln in cluster.log_text("master").splitlines() if "--reset-state" in ln]
    assert len(reset_lines) == 1 and "starting with no jobs" in reset_lines[0]


def _garbage_in_a_page(db: Path) -> None:
    size = db.stat().st_size
    with db.open("r+b") as f:
        f.seek(size // 2 // 4096 * 4096)  # a whole page in the middle: b-tree structure
        f.write(random.Random(11).randbytes(4096))


def _garbage_in_a_row(db: Path) -> None:
    data = bytearray(db.read_bytes())
    at = data.index(b"job-0100")  # inside one job's spec: structure intact, text not
    data[at : at + 8] = random.Random(12).randbytes(7) + b"\xff"
    db.write_bytes(bytes(data))


def _truncated(db: Path) -> None:
    with db.open("r+b") as f:
        f.truncate(db.stat().st_size // 2)


@pytest.mark.parametrize("damage", [_garbage_in_a_page, _garbage_in_a_row, _truncated])
def test_a_damaged_database_stops_the_master_until_reset(
    cluster: Cluster, damage: Callable[[Path], None]
) -> None:
    db = _stored_history(cluster)
    damage(db)
    damaged = db.read_bytes()
    line = _master_refuses(cluster.master_state)
    assert f"state database {db}" in line and "--reset-state" in line
    assert line.isprintable()
    assert db.read_bytes() == damaged  # left as it was, for whoever repairs it

    cluster.start_master("--reset-state")
    assert cluster.jobs() == {}
    [aside] = cluster.master_state.glob(f"{DB_FILE}.broken-*")
    assert aside.read_bytes() == damaged
    # Started once, the new history is the one kept: no --reset-state needed or harmful.
    cluster.kill_master()
    cluster.start_master("--reset-state")
    assert list(cluster.master_state.glob(f"{DB_FILE}.broken-*")) == [aside]


def test_a_new_state_directory_starts_a_new_history(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as c:
        assert c.jobs() == {}
        made = {p.name for p in c.master_state.iterdir()}
        assert {DB_FILE, "cluster.key", "audit.log"} <= made
        assert c.sbatch("--wrap", "true") == 1


def test_node_kill_9_requeues_batch_jobs_onto_another_node(tmp_path: Path) -> None:
    with running_cluster(tmp_path, *FAST_FENCE) as c:
        c.start_node("n1", gpus=1)
        marker = tmp_path / "restarts"
        batch = c.sbatch(
            "--gpus",
            "1",
            "--wrap",
            f'echo "$MGPU_NODE $MGPU_RESTART_COUNT" >> {marker}; sleep 300',
        )
        no_requeue = c.sbatch("--no-requeue", "-w", "n1", "--wrap", "sleep 300")
        c.wait_state(batch, "RUNNING")
        c.wait_state(no_requeue, "RUNNING")
        wait_for(lambda: marker.exists() and marker.read_text(), 10, "first run")
        c.start_node("n2", gpus=1)
        c.nodes["n1"].kill()  # SIGKILL: the agent cannot say goodbye
        c.nodes["n1"].wait(timeout=10)
        # Within the timeout (plus a liveness tick) the job is requeued and restarted on n2.
        row = wait_for(
            lambda: (j := c.job(batch))["restart_count"] == 1 and j["state"] == "RUNNING" and j,
            10,
            "requeued job to run again",
        )
        assert row["node"] == "n2" and row["restart_count"] == 1
        wait_for(lambda: len(marker.read_text().splitlines()) == 2, 10, "second run")
        assert marker.read_text().splitlines() == ["n1 0", "n2 1"]
        assert c.job(no_requeue)["state"] == "NODE_FAIL"
        assert c.node_state("n1") == "down"


def test_interactive_job_on_a_failed_node_ends_with_a_clear_message(tmp_path: Path) -> None:
    with running_cluster(tmp_path, *FAST_FENCE) as c:
        c.start_node("n1", gpus=1)
        marker = tmp_path / "started"
        srun = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mgpu_client.srun",
                "--",
                "sh",
                "-c",
                f"touch {marker}; sleep 300",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=c.env,
            cwd=tmp_path,
        )
        try:
            wait_for(marker.exists, 20, "srun job to start")
            c.nodes["n1"].kill()
            _, err = srun.communicate(timeout=30)
        finally:
            srun.kill()
        assert srun.returncode != 0
        assert "NODE_FAIL" in err.decode() and "n1" in err.decode()


def test_drain_resume_remove(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=1)
    release = cluster.tmp / "release"
    running = cluster.sbatch(
        "--gpus", "1", "--wrap", f"while [ ! -e {release} ]; do sleep 0.02; done"
    )
    cluster.wait_state(running, "RUNNING")
    cluster.cli("mgpu_client", "node", "drain", "n1", "--reason", "bad fan", check=True)
    assert cluster.node_state("n1") == "draining"
    assert "bad fan" in cluster.cli("mgpu_client", "nodes", check=True).stdout
    waiting = cluster.sbatch("--wrap", "true")
    release.touch()
    cluster.wait_state(running, "COMPLETED")
    wait_for(lambda: cluster.node_state("n1") == "drain", 10, "drained")
    assert cluster.job(waiting)["state"] == "PENDING"
    # A drain survives a master restart.
    cluster.kill_master()
    cluster.start_master(port=cluster.port)
    wait_for(lambda: cluster.node_state("n1") == "drain", 20, "node back, still drained")
    assert cluster.job(waiting)["state"] == "PENDING"
    cluster.cli("mgpu_client", "node", "resume", "n1", check=True)
    cluster.wait_state(waiting, "COMPLETED")
    refused = cluster.cli("mgpu_client", "node", "remove", "n1")
    assert refused.returncode == 1 and "stop its agent" in refused.stderr
    unknown = cluster.cli("mgpu_client", "node", "drain", "nope")
    assert unknown.returncode == 1 and "nope" in unknown.stderr
    proc = cluster.nodes.pop("n1")
    proc.terminate()
    proc.wait(timeout=20)
    wait_for(lambda: cluster.node_state("n1") == "down", 10, "node down")
    cluster.cli("mgpu_client", "node", "remove", "n1", check=True)
    assert cluster.node_state("n1") is None


def test_srun_follows_its_job_across_a_master_restart(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=1)
    release = cluster.tmp / "release"
    started = cluster.tmp / "started"
    wait = f"while [ ! -e {release} ]; do sleep 0.02; done"
    script = f"echo before; touch {started}; {wait}; echo after; exit 4"
    srun = subprocess.Popen(
        [sys.executable, "-m", "mgpu_client.srun", "--", "sh", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cluster.env,
        cwd=cluster.tmp,
    )
    try:
        wait_for(started.exists, 20, "job to start")
        cluster.kill_master()
        cluster.start_master(port=cluster.port)
        wait_for(lambda: cluster.node_state("n1") not in (None, "down"), 20, "node back")
        # srun re-attaches; output written after that reaches it.
        job_id = next(iter(cluster.jobs()))
        wait_for(lambda: cluster.job(job_id)["attached"] == 1, 20, "srun to re-attach")
        release.touch()
        out, err = srun.communicate(timeout=30)
    finally:
        srun.kill()
    assert srun.returncode == 4, err
    assert out == b"before\nafter\n"
    assert b"reconnecting" in err
    assert cluster.job(job_id)["exit_code"] == 4


def test_attach_from_another_shell(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=1)
    release = cluster.tmp / "release"
    started = cluster.tmp / "started"
    # What the job printed before attach is replayed (stdout and stderr), then it follows.
    script = (
        f"echo early; echo to-stderr >&2; touch {started}; "
        f"while [ ! -e {release} ]; do sleep 0.02; done; echo late-output; exit 6"
    )
    srun = subprocess.Popen(
        [sys.executable, "-m", "mgpu_client.srun", "--", "sh", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cluster.env,
        cwd=cluster.tmp,
    )
    wait_for(started.exists, 20, "job to start")
    srun.kill()  # the terminal died; the job keeps running
    srun.communicate(timeout=10)
    job_id = next(iter(cluster.jobs()))
    wait_for(lambda: cluster.job(job_id)["attached"] == 0, 10, "srun's link to close")
    assert cluster.job(job_id)["state"] == "RUNNING"
    attach = subprocess.Popen(
        [sys.executable, "-m", "mgpu_client", "attach", str(job_id)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cluster.env,
        cwd=cluster.tmp,
    )
    try:
        wait_for(lambda: cluster.job(job_id)["attached"] == 1, 20, "attach to register")
        release.touch()
        out, err = attach.communicate(timeout=30)
    finally:
        attach.kill()
    assert attach.returncode == 6, err
    assert out == b"early\nlate-output\n"
    assert b"to-stderr\n" in err
    finished = cluster.cli("mgpu_client", "attach", str(job_id))
    assert finished.returncode == 6


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB filesystem for the master's state (needs root to mount; skipped otherwise)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


def test_full_disk_refuses_submissions_and_acknowledges_only_what_is_stored(
    tmp_path: Path, tiny_disk: Path
) -> None:
    with running_cluster(tmp_path, state_dir=tiny_disk) as c:
        address = parse_address(c.socket_address)
        acked: list[int] = []
        refused = ""
        big_env = {"PAYLOAD": "x" * 20_000}
        with Client(address) as client:
            for _ in range(1000):
                try:
                    acked.append(client.submit(JobSpec(argv=["true"], env=big_env)))
                except MgpuError as err:
                    refused = f"{err.code}: {err}"
                    break
        assert refused.startswith("storage_error"), refused
        assert "not accepted" in refused
        assert acked, "the disk should hold some jobs before it fills"
        # The master keeps serving, and every acknowledged job (only those) is there.
        listed = set(c.jobs())
        assert listed == set(acked)
        c.kill_master()
        c.start_master(port=c.port, state_dir=tiny_disk)
        assert set(c.jobs()) == set(acked)


def test_master_restart_with_20_running_jobs(cluster: Cluster) -> None:
    cluster.start_node("n1", 20, "--cpus", "64")
    runs = cluster.tmp / "runs"
    release = cluster.tmp / "release"
    wrap = (
        f"echo $MGPU_JOB_ID >> {runs}; while [ ! -e {release} ]; do sleep 0.05; done; "
        "exit $((MGPU_JOB_ID % 7))"
    )
    ids = [cluster.sbatch("--gpus", "1", "--wrap", wrap) for _ in range(20)]
    all_running = lambda: all(j["state"] == "RUNNING" for j in cluster.jobs().values())  # noqa: E731
    wait_for(all_running, 30, "20 running")
    cluster.kill_master()
    cluster.start_master(port=cluster.port)
    wait_for(lambda: cluster.node_state("n1") not in (None, "down"), 20, "node back")
    release.touch()
    for job_id in ids:
        row = cluster.wait_state(job_id, "COMPLETED", "FAILED", "NODE_FAIL")
        assert row["exit_code"] == job_id % 7, row
        assert row["state"] == ("COMPLETED" if job_id % 7 == 0 else "FAILED")
    assert sorted(int(x) for x in runs.read_text().split()) == sorted(ids)  # each ran once
