"""Nothing lost on the node side: agent restarts, exits while the master is down, GPU faults."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mgpu_core.exitcodes import EXIT_STARTUP_FAILURE
from mgpu_node.spool import pending_exit_ids
from tests.helpers.cluster import PY, Cluster, pid_alive, wait_for, wait_for_text

pytestmark = pytest.mark.timeout(180)


def holding(tmp: Path, name: str, ending: str) -> tuple[str, Path, Path]:
    """A job that writes its pid, waits for a release file, then runs ``ending``."""
    pid_file, release = tmp / f"{name}.pid", tmp / f"{name}.release"
    script = f"echo $$ > {pid_file}; while [ ! -e {release} ]; do sleep 0.02; done; {ending}"
    return script, pid_file, release


def read_pid(pid_file: Path) -> int:
    return int(wait_for_text(pid_file, 20))


def stop_agent(cluster: Cluster, node_id: str, sig: int = signal.SIGTERM) -> int:
    proc = cluster.nodes.pop(node_id)
    proc.send_signal(sig)
    return proc.wait(timeout=30)


def spooled(cluster: Cluster, node_id: str) -> list[int]:
    """Ids of the exits the agent keeps on disk until the master acknowledges them."""
    exits = cluster.tmp / f"node-{node_id}" / "exits"
    return pending_exit_ids(exits) if exits.is_dir() else []


@pytest.fixture
def leftovers() -> Iterator[list[int]]:
    """Pids of job processes left running on purpose: killed at the end whatever happens."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(pid) != os.getpgrp():  # never our own group, should a pid be reused
                os.killpg(os.getpgid(pid), signal.SIGKILL)


def test_agent_restart_readopts_running_jobs(cluster: Cluster, leftovers: list[int]) -> None:
    cluster.start_node("n1", gpus=2, stop_jobs_on_exit=False)
    endings = {"ok": "exit 0", "five": "exit 5", "usr1": "kill -USR1 $$"}
    jobs = {}
    for name, ending in endings.items():
        script, pid_file, release = holding(cluster.tmp, name, ending)
        jobs[name] = (cluster.sbatch("--wrap", script), read_pid(pid_file), release)
        leftovers.append(jobs[name][1])
    for job_id, _, _ in jobs.values():
        cluster.wait_state(job_id, "RUNNING")

    assert stop_agent(cluster, "n1") == 0
    assert all(pid_alive(pid) for _, pid, _ in jobs.values()), "the agent's exit killed jobs"
    cluster.start_node("n1", gpus=2, stop_jobs_on_exit=False)
    # Registered again: had the jobs not been reported, they would be requeued by now.
    for job_id, _, _ in jobs.values():
        row = cluster.job(job_id)
        assert (row["state"], row["restart_count"]) == ("RUNNING", 0), row
    master_log = (cluster.tmp / "master.log").read_text()
    assert "NODE_FAIL" not in master_log and "REQUEUED" not in master_log

    for _, _, release in jobs.values():
        release.touch()
    final = {
        name: cluster.wait_state(job_id, "COMPLETED", "FAILED", "NODE_FAIL")
        for name, (job_id, _, _) in jobs.items()
    }
    outcome = {name: (r["state"], r["exit_code"], r["signal"]) for name, r in final.items()}
    assert outcome == {
        "ok": ("COMPLETED", 0, None),
        "five": ("FAILED", 5, None),
        "usr1": ("FAILED", None, signal.SIGUSR1),
    }
    wait_for(lambda: not spooled(cluster, "n1"), 10, "exits to be acknowledged")
    assert not list((cluster.tmp / "node-n1" / "jobs").iterdir())


def test_cancel_of_readopted_job_kills_its_process_group(
    cluster: Cluster, leftovers: list[int]
) -> None:
    cluster.start_node("n1", gpus=1, stop_jobs_on_exit=False)
    main_pid, bg_pid, stray_pid = (cluster.tmp / n for n in ("main.pid", "bg.pid", "stray.pid"))
    stray = f"import os, time; os.setsid(); open('{stray_pid}', 'w').write(str(os.getpid()))"
    script = (
        f"echo $$ > {main_pid}; sleep 300 & echo $! > {bg_pid}; "
        f'{PY} -c "{stray}; time.sleep(300)" & wait'
    )
    job_id = cluster.sbatch("--gpus", "1", "--wrap", script)
    pids = [read_pid(p) for p in (main_pid, bg_pid, stray_pid)]
    leftovers.extend(pids)
    assert stop_agent(cluster, "n1") == 0
    assert all(pid_alive(p) for p in pids)
    cluster.start_node("n1", gpus=1, stop_jobs_on_exit=False)
    assert cluster.job(job_id)["state"] == "RUNNING"

    cluster.cli("mgpu_cancel", str(job_id), check=True)
    assert cluster.wait_state(job_id, "CANCELLED", "FAILED", "COMPLETED")["state"] == "CANCELLED"
    wait_for(lambda: not any(pid_alive(p) for p in pids), 10, f"processes {pids} to die")
    again = cluster.sbatch("--gpus", "1", "--wrap", "true")  # the GPU was released
    cluster.wait_state(again, "COMPLETED")


def test_exit_while_master_down_is_delivered_once(cluster: Cluster, leftovers: list[int]) -> None:
    cluster.start_node("n1", gpus=2, stop_jobs_on_exit=False)
    script_a, pid_a, release_a = holding(cluster.tmp, "a", "exit 7")
    script_b, pid_b, release_b = holding(cluster.tmp, "b", "exit 9")
    a = cluster.sbatch("--wrap", script_a)
    b = cluster.sbatch("--wrap", script_b)
    leftovers.extend([read_pid(pid_a), read_pid(pid_b)])
    cluster.wait_state(a, "RUNNING")
    cluster.wait_state(b, "RUNNING")

    cluster.kill_master()
    release_a.touch()  # a ends under a live agent: its exit goes to the spool
    wait_for(lambda: spooled(cluster, "n1") == [a], 20, "a's exit in the spool")
    assert stop_agent(cluster, "n1", signal.SIGKILL) == -signal.SIGKILL
    release_b.touch()  # b ends with no agent at all: only the wrapper's status file knows
    wait_for(lambda: not pid_alive(leftovers[1]), 20, "b to end")
    cluster.start_node("n1", gpus=2, wait=False)
    wait_for(lambda: spooled(cluster, "n1") == sorted([a, b]), 20, "b")

    cluster.start_master("--kill-grace", "2", port=cluster.port)
    row_a = cluster.wait_state(a, "FAILED", "COMPLETED", "NODE_FAIL")
    row_b = cluster.wait_state(b, "FAILED", "COMPLETED", "NODE_FAIL")
    assert (row_a["state"], row_a["exit_code"], row_a["restart_count"]) == ("FAILED", 7, 0)
    assert (row_b["state"], row_b["exit_code"], row_b["restart_count"]) == ("FAILED", 9, 0)
    wait_for(lambda: not spooled(cluster, "n1"), 10, "exits to be acknowledged")
    log = (cluster.tmp / "master.log").read_text()
    assert len(re.findall(rf"job={a} user=\S+ node=n1 state=FAILED", log)) == 1
    assert len(re.findall(rf"job={b} user=\S+ node=n1 state=FAILED", log)) == 1


def test_stopping_agent_with_stop_jobs_kills_them_and_cleans_its_spool(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=1)
    script, pid_file, _ = holding(cluster.tmp, "j", "true")
    job_id = cluster.sbatch("--wrap", script)
    pid = read_pid(pid_file)
    assert stop_agent(cluster, "n1") == 0
    assert not pid_alive(pid)
    assert cluster.wait_state(job_id, "FAILED", "CANCELLED")["reason"] == "cancelled"
    assert not spooled(cluster, "n1")  # the master acked before the agent left


def test_second_agent_on_the_same_state_dir_is_refused(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=1)
    state = cluster.tmp / "node-n1"
    result = subprocess.run(
        [
            *(PY, "-m", "mgpu_node", "--master-port", str(cluster.port)),
            *("--state-dir", str(state), "--key-file", str(cluster.master_state / "cluster.key")),
            *("--tls-ca", str(cluster.ca_file)),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == EXIT_STARTUP_FAILURE and "another mgpu_node agent" in result.stderr


def test_fake_gpu_fault_takes_the_gpu_out_of_scheduling(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=2)
    blocker_script, _, blocker_release = holding(cluster.tmp, "blocker", "true")
    blocker = cluster.sbatch("--gpus", "1", "--wrap", blocker_script)
    assert cluster.wait_state(blocker, "RUNNING")["gpu_indices"] == [0]
    both_script, _, both_release = holding(cluster.tmp, "both", "true")
    both = cluster.sbatch("--gpus", "2", "--wrap", both_script)
    assert cluster.job(both)["state"] == "PENDING"

    faults = cluster.tmp / "node-n1" / "fake-gpu-faults"
    faults.write_text("1 fell off the bus (Xid 79)\n")

    def gpu1() -> dict[str, object]:
        return dict(cluster.nodes_json()[0]["gpus"][1])

    wait_for(lambda: not gpu1()["healthy"], 20, "GPU 1 to be unhealthy")
    assert gpu1()["error"] == "fell off the bus (Xid 79)"
    blocker_release.touch()
    cluster.wait_state(blocker, "COMPLETED")
    # GPU 0 is free and GPU 1 is not usable: a 1-GPU job runs on 0, the 2-GPU job waits.
    single_script, _, single_release = holding(cluster.tmp, "single", "true")
    single = cluster.sbatch("--gpus", "1", "--wrap", single_script)
    assert cluster.wait_state(single, "RUNNING")["gpu_indices"] == [0]
    assert cluster.job(both)["state"] == "PENDING"

    faults.write_text("")
    wait_for(lambda: gpu1()["healthy"], 20, "GPU 1 to be healthy again")
    assert gpu1()["error"] == ""
    single_release.touch()
    assert cluster.wait_state(both, "RUNNING")["gpu_indices"] == [0, 1]
    both_release.touch()
    cluster.wait_state(both, "COMPLETED")
