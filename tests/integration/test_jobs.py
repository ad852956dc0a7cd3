"""End to end: a real master, real node agents, the real client commands."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mgpu_core.exitcodes import EXIT_UNREACHABLE
from mgpu_core.limits import MAX_REASON_LEN
from tests.helpers.cluster import (
    FAST_FENCE,
    PY,
    Cluster,
    as_at_a_terminal,
    pid_alive,
    running_cluster,
    wait_for,
    wait_for_text,
)

pytestmark = pytest.mark.timeout(120)

# A job that records its GPUs, then holds them until the test creates a release file.
HOLD = 'echo "$CUDA_VISIBLE_DEVICES" > {out}; while [ ! -e {release} ]; do sleep 0.02; done'


def hold(tmp: Path, name: str) -> tuple[str, Path, Path]:
    out, release = tmp / f"{name}.gpus", tmp / f"{name}.release"
    return HOLD.format(out=out, release=release), out, release


def test_two_one_gpu_jobs_get_different_gpus(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=2)
    cmd_a, out_a, rel_a = hold(cluster.tmp, "a")
    cmd_b, out_b, rel_b = hold(cluster.tmp, "b")
    a = cluster.sbatch("--gpus", "1", "--wrap", cmd_a)
    b = cluster.sbatch("--gpus", "1", "--wrap", cmd_b)
    cluster.wait_state(a, "RUNNING")
    cluster.wait_state(b, "RUNNING")
    wait_for(lambda: out_a.exists() and out_b.exists() and out_a.read_text() and out_b.read_text())
    assert {out_a.read_text().strip(), out_b.read_text().strip()} == {"0", "1"}
    rel_a.touch()
    rel_b.touch()
    assert cluster.wait_state(a, "COMPLETED", "FAILED")["state"] == "COMPLETED"
    assert cluster.wait_state(b, "COMPLETED", "FAILED")["state"] == "COMPLETED"


def test_job_waits_for_gpus_and_starts_when_one_frees(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=2)
    cmd_a, _, rel_a = hold(cluster.tmp, "a")
    a = cluster.sbatch("--gpus", "1", "--wrap", cmd_a)
    cluster.wait_state(a, "RUNNING")
    cmd_b, out_b, rel_b = hold(cluster.tmp, "b")
    b = cluster.sbatch("--gpus", "2", "--wrap", cmd_b)
    pending = wait_for(lambda: (j := cluster.job(b))["reason"] and j)
    assert pending["state"] == "PENDING" and pending["reason"] == "Resources"
    queue = cluster.cli("mgpu_queue", check=True).stdout
    assert f"{b}" in queue and "(Resources)" in queue
    rel_a.touch()
    cluster.wait_state(b, "RUNNING")
    wait_for(lambda: out_b.exists() and out_b.read_text())
    assert out_b.read_text().strip() == "0,1"
    rel_b.touch()
    cluster.wait_state(b, "COMPLETED")


def test_equal_priority_jobs_start_in_submission_order(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=1)
    cmd, _, release = hold(cluster.tmp, "blocker")
    blocker = cluster.sbatch("--gpus", "1", "--wrap", cmd)
    cluster.wait_state(blocker, "RUNNING")
    order = cluster.tmp / "order"
    ids = [
        cluster.sbatch("--gpus", "1", "--wrap", f"echo $MGPU_JOB_ID >> {order}") for _ in range(5)
    ]
    for job_id in ids:
        assert cluster.job(job_id)["state"] == "PENDING"
    release.touch()
    for job_id in ids:
        cluster.wait_state(job_id, "COMPLETED")
    assert [int(x) for x in order.read_text().split()] == ids


def test_cancel_pending_and_running_kills_grandchildren(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=1)
    pid_file = cluster.tmp / "grandchild.pid"
    running = cluster.sbatch(
        "--gpus", "1", "--wrap", f"sh -c 'sleep 300 & echo $! > {pid_file}; wait'"
    )
    cluster.wait_state(running, "RUNNING")
    pending = cluster.sbatch("--gpus", "1", "--wrap", "true")
    assert cluster.job(pending)["state"] == "PENDING"
    grandchild = int(wait_for_text(pid_file))
    assert pid_alive(grandchild)

    cluster.cli("mgpu_cancel", str(pending), check=True)
    assert cluster.job(pending)["state"] == "CANCELLED"
    cluster.cli("mgpu_cancel", str(running), check=True)
    assert cluster.wait_state(running, "CANCELLED", "FAILED", "COMPLETED")["state"] == "CANCELLED"
    wait_for(lambda: not pid_alive(grandchild), 10, "grandchild to die")
    # The freed GPU is usable again.
    again = cluster.sbatch("--gpus", "1", "--wrap", "true")
    cluster.wait_state(again, "COMPLETED")


def test_cancel_unknown_job_is_one_line_error(cluster: Cluster) -> None:
    result = cluster.cli("mgpu_cancel", "424242")
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0
    assert "424242" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["true"], 0),
        (["sh", "-c", "exit 7"], 7),
        (["sh", "-c", "kill -9 $$"], 128 + 9),
        (["sh", "-c", "kill -TERM $$"], 128 + 15),
        (["/no/such/program"], 127),
    ],
)
def test_srun_exit_codes_and_signals(cluster: Cluster, command: list[str], expected: int) -> None:
    cluster.start_node("n1", gpus=1)
    result = cluster.cli("mgpu_srun", "--", *command)
    assert result.returncode == expected, result.stderr


def test_srun_environment_and_directory(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_node("n1", gpus=2)
    workdir = tmp_path / "work dir"
    workdir.mkdir()
    env = cluster.env | {"MY_SETTING": "from-submitter"}
    script = (
        "import os; e = os.environ; "
        "print(e['CUDA_VISIBLE_DEVICES'], e['CUDA_DEVICE_ORDER'], e['MGPU_JOB_ID'], "
        "e['MGPU_NODE'], e['MY_SETTING'], os.getcwd())"
    )
    result = subprocess.run(
        [PY, "-m", "mgpu_client.srun", "--gpus", "2", "--", PY, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    gpus, order, job_id, node, setting, cwd = result.stdout.split(" ", 5)
    assert (gpus, order, node, setting) == ("0,1", "PCI_BUS_ID", "n1", "from-submitter")
    assert int(job_id) > 0 and cwd.strip() == str(workdir)
    no_gpu = cluster.cli(
        "mgpu_srun", "--", "sh", "-c", 'echo "[$CUDA_VISIBLE_DEVICES]"', check=True
    )
    assert no_gpu.stdout == "[]\n"


def test_bytes_that_are_not_utf8_reach_the_job_unchanged(cluster: Cluster) -> None:
    """An environment variable, an argument and a batch script that are not UTF-8: the job
    gets the very bytes (bytes in, the same bytes out), and the queue still lists it."""
    cluster.start_node("n1", gpus=1)
    raw = b"\xff\xfe caf\xc3\xa9 \x80'"
    out = {name: cluster.tmp / name for name in ("env", "srun", "srun-t", "script")}
    env = {os.fsencode(k): os.fsencode(v) for k, v in cluster.env.items()} | {b"BAD": raw}

    def run(tool: str, *args: str | bytes, stdin: bytes | None = None) -> bytes:
        result = subprocess.run(
            [PY, "-m", tool, *args],
            input=stdin,
            capture_output=True,
            env=env,
            cwd=cluster.tmp,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    batch = [run("mgpu_client.sbatch", "--parsable", "--wrap", f'printf %s "$BAD" > {out["env"]}')]
    write_arg: list[str | bytes] = ["sh", "-c", 'printf %s "$1" > "$2"; printf %s "$1"', "sh", raw]
    assert run("mgpu_client.srun", "--", *write_arg, str(out["srun"])) == raw
    assert run("mgpu_client.srun", "-t", "5", "--", *write_arg, str(out["srun-t"])) == raw
    script = b"#!/bin/sh\n#SBATCH -J bytes\nprintf %s '" + raw.replace(b"'", b"") + b"' > "
    batch.append(run("mgpu_client.sbatch", "--parsable", stdin=script + os.fsencode(out["script"])))
    for job_id in batch:
        cluster.wait_state(int(job_id), "COMPLETED")
    assert {name: path.read_bytes() for name, path in out.items()} == {
        "env": raw,
        "srun": raw,
        "srun-t": raw,
        "script": raw.replace(b"'", b""),
    }
    jobs = cluster.jobs()  # listed, with the bytes escaped
    assert all(j["state"] == "COMPLETED" for j in jobs.values()), jobs
    assert any("\\xff\\xfe" in j["command"] for j in jobs.values())


def test_srun_streams_10mb_complete_and_in_order(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=1)
    lines = 200_000  # 200k lines of 52 bytes: about 10 MB
    script = (
        "import sys\n"
        f"for i in range({lines}):\n"
        "    sys.stdout.write(f'{i:010d} ' + 'x' * 40 + '\\n')\n"
        "    if i % 50000 == 0: sys.stderr.write(f'err {i}\\n'); sys.stderr.flush()\n"
    )
    result = subprocess.run(
        [PY, "-m", "mgpu_client.srun", "--", PY, "-c", script],
        capture_output=True,
        timeout=120,
        env=cluster.env,
        cwd=cluster.tmp,
    )
    assert result.returncode == 0, result.stderr
    expected = b"".join(f"{i:010d} {'x' * 40}\n".encode() for i in range(lines))
    assert len(result.stdout) == len(expected) >= 10_000_000
    assert result.stdout == expected
    assert result.stderr.decode().splitlines() == [f"err {i}" for i in range(0, lines, 50000)]


def test_srun_says_it_waits_then_runs(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=1)
    cmd, _, release = hold(cluster.tmp, "blocker")
    blocker = cluster.sbatch("--gpus", "1", "--wrap", cmd)
    cluster.wait_state(blocker, "RUNNING")
    srun = subprocess.Popen(
        [PY, "-m", "mgpu_client.srun", "--gpus", "1", "--", "echo", "ran"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cluster.env,
        cwd=cluster.tmp,
    )
    try:
        assert srun.stderr is not None
        first = srun.stderr.readline().decode()
        assert "queued and waiting for resources" in first
        release.touch()
        out, err = srun.communicate(timeout=30)
    finally:
        srun.kill()
    assert srun.returncode == 0
    assert out == b"ran\n"
    assert "allocated resources" in err.decode()


def test_srun_ctrl_c_cancels_the_job(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=1)
    marker = cluster.tmp / "started"
    srun = subprocess.Popen(
        [PY, "-m", "mgpu_client.srun", "--", "sh", "-c", f"touch {marker}; sleep 300"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cluster.env,
        cwd=cluster.tmp,
        preexec_fn=as_at_a_terminal,
    )
    try:
        wait_for(marker.exists, 30, "job to start")
        srun.send_signal(signal.SIGINT)
        try:
            _, err = srun.communicate(timeout=60)  # srun waits up to 30 s for the end
        except subprocess.TimeoutExpired:
            srun.kill()
            _, late = srun.communicate()
            tails = {n: cluster.log_text(n)[-3000:] for n in ("master", "node-n1")}
            pytest.fail(f"srun did not end after Ctrl-C; its stderr: {late!r}; logs: {tails}")
    finally:
        srun.kill()
        srun.communicate()  # reaped, pipes closed: nothing leaks into a later test
    assert srun.returncode != 0
    assert "cancel" in err.decode()
    jobs = cluster.jobs()
    assert [j["state"] for j in jobs.values()] == ["CANCELLED"]


def test_sbatch_directives_output_and_override(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_node("n1", gpus=2)
    script = tmp_path / "train.sh"
    script.write_text(
        "#!/bin/sh\n"
        "#SBATCH --job-name=from-script\n"
        "#SBATCH --gpus 2   # a comment\n"
        "#MGPU -o out-%j-%x.txt\n"
        "echo gpus=$CUDA_VISIBLE_DEVICES args=$*\n"
        "#SBATCH --gpus 1\n"  # after the first command: not a directive
        "echo oops >&2\n"
    )
    job_id = cluster.sbatch("-J", "cli-name", str(script), "a1", "a2", cwd=tmp_path)
    job = cluster.wait_state(job_id, "COMPLETED", "FAILED")
    assert job["state"] == "COMPLETED" and job["name"] == "cli-name" and job["gpus"] == 2
    out = tmp_path / f"out-{job_id}-cli-name.txt"
    assert out.read_text() == "gpus=0,1 args=a1 a2\noops\n"

    plain = cluster.sbatch("--wrap", "echo default-out; echo to-err >&2", cwd=tmp_path)
    cluster.wait_state(plain, "COMPLETED")
    assert (tmp_path / f"mgpu-{plain}.out").read_text() == "default-out\nto-err\n"

    split = cluster.sbatch("-o", "o-%j", "-e", "e-%j", "--wrap", "echo O; echo E >&2", cwd=tmp_path)
    cluster.wait_state(split, "COMPLETED")
    assert (tmp_path / f"o-{split}").read_text() == "O\n"
    assert (tmp_path / f"e-{split}").read_text() == "E\n"


def test_client_submit_and_queue_table(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=1)
    result = cluster.cli(
        "mgpu_client", "submit", "--gpus", "1", "echo $CUDA_VISIBLE_DEVICES", check=True
    )
    assert result.stdout.startswith("Submitted batch job ")
    job_id = int(result.stdout.split()[-1])
    cluster.wait_state(job_id, "COMPLETED")
    assert (cluster.tmp / f"mgpu-{job_id}.out").read_text() == "0\n"
    table = cluster.cli("mgpu_queue", "-t", "all", check=True).stdout.splitlines()
    assert table[0].split() == ["JOBID", "NAME", "USER", "STATE", "TIME", "GPUS", "NODE(REASON)"]
    assert table[1].split()[0] == str(job_id) and "COMPLETED" in table[1]


def test_nodes_view_and_impossible_request(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=2)
    cluster.start_node("n2", gpus=4)
    text = cluster.cli("mgpu_client", "nodes", check=True).stdout
    assert "n1" in text and "n2" in text and "gpu3" in text and "Fake GPU" in text
    too_big = cluster.cli("mgpu_sbatch", "--gpus", "8", "--wrap", "true")
    assert too_big.returncode == 1 and "not available" in too_big.stderr
    bad_node = cluster.cli("mgpu_sbatch", "-w", "n9", "--wrap", "true")
    assert bad_node.returncode == 1 and "n9" in bad_node.stderr
    pinned = cluster.sbatch("-w", "n2", "--gpus", "3", "--wrap", "true")
    assert cluster.wait_state(pinned, "COMPLETED")["node"] == "n2"


def test_node_disconnect_then_timeout_fails_its_jobs(tmp_path: Path) -> None:
    with running_cluster(tmp_path, *FAST_FENCE) as c:
        c.start_node("n1", gpus=1)
        job_id = c.sbatch("--no-requeue", "--gpus", "1", "--wrap", "sleep 300")
        c.wait_state(job_id, "RUNNING")
        c.nodes["n1"].kill()
        c.nodes["n1"].wait(timeout=10)
        assert c.wait_state(job_id, "NODE_FAIL")["state"] == "NODE_FAIL"
        assert c.node_state("n1") == "down"


def test_unreachable_master_is_one_line_exit_2(tmp_path: Path) -> None:
    for tool in (
        "mgpu_client.queue",
        "mgpu_client.srun",
        "mgpu_client.sbatch",
        "mgpu_client.scancel",
    ):
        args = {
            "mgpu_client.srun": ["--", "true"],
            "mgpu_client.sbatch": ["--wrap", "true"],
            "mgpu_client.scancel": ["1"],
        }.get(tool, [])
        result = subprocess.run(
            [sys.executable, "-m", tool, "--master", "127.0.0.1:1", *args],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=tmp_path,
        )
        assert result.returncode == EXIT_UNREACHABLE, (tool, result.stderr)
        assert result.stderr.count("\n") == 1 and "127.0.0.1:1" in result.stderr
        assert "Traceback" not in result.stderr


def test_queue_returns_only_the_fields_asked_for(cluster: Cluster) -> None:
    from mgpu_client.client import Client
    from mgpu_core.config import parse_address
    from mgpu_core.errors import InvalidRequest

    job_id = cluster.sbatch("--hold", "--wrap", "true")
    with Client(parse_address(cluster.socket_address)) as client:
        (row,) = client.queue(job_ids=[job_id], fields=["job_id", "state"])["jobs"]
        assert row == {"job_id": job_id, "state": "PENDING"}
        with pytest.raises(InvalidRequest, match="unknown queue field 'bogus'"):
            client.queue(fields=["job_id", "bogus"])
    # The table asks for its columns only and still shows every one of them.
    (line,) = cluster.cli("mgpu_queue", "--noheader", check=True).stdout.splitlines()
    assert line.split()[0] == str(job_id) and "PENDING" in line and "(JobHeldUser)" in line


@pytest.mark.parametrize("option", ["-D", "-o"])
def test_a_path_too_long_to_quote_fails_the_job_and_the_node_runs_on(
    cluster: Cluster, option: str
) -> None:
    """Issue 11: the spawn error quoting such a path made an exit report over the wire's limit;
    the master dropped the node's link at each resend, forever, and the node ran nothing more.
    The node shortens the reason, and the master would refuse a bad event without the link."""
    cluster.start_node("n1", gpus=1)
    deep = "/nonexistent/" + "d" * 1100
    path = deep if option == "-D" else f"{deep}/out.txt"
    job_id = cluster.sbatch(option, path, "--wrap", "true")
    failed = cluster.wait_state(job_id, "COMPLETED", "FAILED")
    reason = failed["reason"]
    assert failed["state"] == "FAILED" and "/nonexistent/ddd" in reason, reason
    assert len(reason) == MAX_REASON_LEN and re.search(r"…\[truncated \d+ chars\]$", reason)
    after = cluster.sbatch("--gpus", "1", "--wrap", "true")
    assert cluster.wait_state(after, "COMPLETED", "FAILED")["state"] == "COMPLETED"
    # One link all along: never dropped, never re-registered.
    assert cluster.node_up("n1")
    assert cluster.log_text("node-n1").count("registered with master") == 1
    assert "refused" not in cluster.log_text("master")
