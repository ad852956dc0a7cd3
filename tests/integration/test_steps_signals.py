"""End to end, a real master and node agent: a job registers its steps from inside (as srun
in a job does, over the master's socket with the core client) and the queue rows show them;
``cancel`` with a signal reaches the running job's processes (all of them, or its batch shell
only) and the job goes on to complete."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from mgpu_client.client import Client
from mgpu_core.config import parse_address
from mgpu_core.models import JobSpec
from tests.helpers.cluster import PY, Cluster, wait_for, wait_for_text

pytestmark = pytest.mark.timeout(120)

# Registers two steps of the job it runs in, ends the first, and leaves the second running.
REGISTER = """\
import os, pathlib, sys
from mgpu_client.client import Client
from mgpu_core.config import parse_address
job_id = int(os.environ["MGPU_JOB_ID"])
with Client(parse_address(os.environ["MGPU_MASTER"])) as master:
    prep = master.request("step", action="start", job_id=job_id, name="prep", ntasks=1)
    master.request("step", action="end", job_id=job_id, step_id=prep["step_id"], exit_code=0)
    train = master.request("step", action="start", job_id=job_id, name="train", ntasks=2)
pathlib.Path(sys.argv[1]).write_text(f"{prep['step_id']} {train['step_id']}")
"""


def client(cluster: Cluster) -> Client:
    return Client(parse_address(cluster.socket_address))


def batch(cluster: Cluster, script: str) -> int:
    spec = JobSpec(
        name="t",
        script=script,
        cwd=str(cluster.tmp),
        stdout_path=str(cluster.tmp / "out-%j"),
        env={**cluster.env, "PYTHONPATH": os.pathsep.join(_import_path())},
    )
    with client(cluster) as master:
        return master.submit(spec)


def _import_path() -> list[str]:
    import mgpu_client
    import mgpu_core

    return sorted({str(Path(str(m.__file__)).parent.parent) for m in (mgpu_client, mgpu_core)})


def row(cluster: Cluster, job_id: int, *fields: str) -> dict[str, Any]:
    with client(cluster) as master:
        [found] = master.queue(job_ids=[job_id], fields=["state", *fields])["jobs"]
    return dict(found)


def wait_state(cluster: Cluster, job_id: int, *states: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        found = row(cluster, job_id, "steps", "exit_code")
        return found if found["state"] in states else None

    return wait_for(reached, 30.0, f"job {job_id} in {states}")


def test_a_job_registers_its_steps_and_the_queue_shows_them(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=1)
    helper, ids, release = cluster.tmp / "register.py", cluster.tmp / "ids", cluster.tmp / "go"
    helper.write_text(REGISTER)
    script = (
        f"#!/bin/sh\n'{PY}' '{helper}' '{ids}' || exit 3\n"
        f"while [ ! -e '{release}' ]; do sleep 0.05; done\n"
    )
    job_id = batch(cluster, script)
    assert wait_for_text(ids, 30.0) == "0 1"
    steps = row(cluster, job_id, "steps")["steps"]
    assert [(s["step_id"], s["name"], s["ntasks"], s["state"]) for s in steps] == [
        (0, "prep", 1, "COMPLETED"),
        (1, "train", 2, "RUNNING"),
    ]
    assert steps[0]["exit_code"] == 0 and steps[1]["end_time"] == 0.0
    with client(cluster) as master:  # a default listing does not carry them
        assert "steps" not in master.queue(job_ids=[job_id])["jobs"][0]
    release.touch()
    done = wait_state(cluster, job_id, "COMPLETED", "FAILED", "CANCELLED")
    assert done["state"] == "COMPLETED"
    # The step its srun never ended ended with the job, around it.
    assert [s["state"] for s in done["steps"]] == ["COMPLETED", "CANCELLED"]


def signal_job(cluster: Cluster, job_id: int, sig: signal.Signals, scope: str) -> None:
    with client(cluster) as master:
        [result] = master.request("cancel", job_ids=[job_id], signal=int(sig), scope=scope)[
            "results"
        ]
    assert result["ok"], result


def test_a_signal_reaches_a_running_job_which_goes_on(cluster: Cluster) -> None:
    """USR1 to the whole job reaches its batch shell and the shell's children; USR2 to the
    batch shell only does not reach the children (seen when the next USR1 reaches them: a
    child waits with ``wait``, which a trapped signal interrupts, so it would have run its
    USR2 trap long before)."""
    cluster.start_node("n1", gpus=1)
    tmp = cluster.tmp
    ready, usr1, usr2, child = tmp / "ready", tmp / "usr1", tmp / "usr2", tmp / "child"
    child_ready, release = tmp / "child-ready", tmp / "go"
    script = (
        "#!/bin/sh\n"
        "(\n"
        "  trap 'got2=1' USR2\n"
        f"  trap 'n=$((n+1)); echo \"$n ${{got2:-0}}\" > {child}' USR1\n"
        f"  n=0; : > {child_ready}\n"
        f"  while [ ! -e {release} ]; do sleep 0.05 & wait $!; done\n"
        ") &\n"
        f"trap 'echo $$ > {usr1}' USR1\n"
        f"trap 'echo $$ > {usr2}' USR2\n"
        f"while [ ! -e {child_ready} ]; do sleep 0.01; done\n"
        f"echo $$ > {ready}\n"
        f"while [ ! -e {release} ]; do sleep 0.05; done\n"
        "wait\n"
    )
    job_id = batch(cluster, script)
    shell = wait_for_text(ready, 30.0)
    signal_job(cluster, job_id, signal.SIGUSR1, "all")
    assert wait_for_text(usr1) == shell
    assert wait_for(lambda: child.exists() and child.read_text().strip()) == "1 0"
    signal_job(cluster, job_id, signal.SIGUSR2, "batch")
    assert wait_for_text(usr2) == shell
    signal_job(cluster, job_id, signal.SIGUSR1, "all")
    second = wait_for(lambda: (text := child.read_text().strip()).startswith("2") and text)
    assert second == "2 0"  # the batch shell's USR2 never reached its child
    assert row(cluster, job_id)["state"] == "RUNNING"
    release.touch()
    done = wait_state(cluster, job_id, "COMPLETED", "FAILED", "CANCELLED")
    assert (done["state"], done["exit_code"]) == ("COMPLETED", 0)


def test_a_pending_job_refuses_a_signal(cluster: Cluster) -> None:
    """No node: the job waits, and a signal is refused as Slurm refuses it."""
    job_id = batch(cluster, "#!/bin/sh\ntrue\n")
    with client(cluster) as master:
        [result] = master.request("cancel", job_ids=[job_id], signal=int(signal.SIGUSR1))["results"]
        assert not result["ok"] and "Job is pending execution" in result["message"]
        assert master.queue(job_ids=[job_id])["jobs"][0]["state"] == "PENDING"
