"""``salloc``: get an allocation, run a shell (or COMMAND) in it, give the allocation back when
it ends — Slurm's default salloc: the shell runs here, with the job's SLURM_* variables.

The allocation is a job whose process only holds its resources (it sleeps until cancelled or
its time limit). ``srun`` in the shell runs its tasks as a step of the job when the job's node
is this host (a one-machine cluster, or salloc run on the node); from another host it says so
in one line (steps on a remote node are not supported yet; ssh to the node). ``--no-shell``
prints the job id and leaves the allocation running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from mgpu_client import jobspec
from mgpu_client.cmdline import parse, render_help, wants_help
from mgpu_client.exits import run_command, warn
from mgpu_client.optable import JOB_OPTIONS, A, table_for
from mgpu_core.errors import MgpuError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from mgpu_client.client import Client

HOLDER = (
    "#!/bin/sh\n# salloc's allocation: hold the resources until cancelled\nexec sleep infinity\n"
)


def granted(client: Client, job_id: int) -> dict[str, Any]:
    """Wait for the allocation to start (or end); its queue row."""
    row: dict[str, Any] = client.request("attach", job_id=job_id, offset=0)["job"]
    while row["state"] == "PENDING":
        event = client.next_event()
        if event.get("job_id") == job_id and event.get("t") in ("job_state", "job_ended"):
            row = {**row, **event}
    return row


def _local_env(row: dict[str, Any], nodes: list[dict[str, Any]]) -> dict[str, str]:
    """The shell's SLURM_* variables; on the job's own node also MGPU_JOB_ID and its GPUs, so
    that srun there runs steps inside the allocation."""
    env = dict(os.environ)
    job_id, node_id = str(row["job_id"]), row.get("node") or ""
    env.update(
        SLURM_JOB_ID=job_id,
        SLURM_JOBID=job_id,
        SLURM_JOB_NAME=str(row.get("name") or "interactive"),
        SLURM_JOB_NODELIST=node_id,
        SLURM_NODELIST=node_id,
        SLURM_JOB_NUM_NODES="1",
        SLURM_NNODES="1",
        SLURM_NTASKS=str(row.get("ntasks") or 1),
        SLURM_NPROCS=str(row.get("ntasks") or 1),
        SLURM_CPUS_ON_NODE=str(row.get("cpus") or 1),
        SLURM_JOB_PARTITION=str(row.get("partition") or ""),
        MGPU_ALLOCATION=job_id,
    )
    here = {os.uname().nodename, os.uname().nodename.split(".")[0]}
    node = next((n for n in nodes if n["node_id"] == node_id), None)
    if node is not None and (node_id in here or node.get("hostname") in here):
        gpus = {g["index"]: g for g in node.get("gpus", [])}
        visible = [str(gpus[i]["visible_id"]) for i in row.get("gpu_indices", []) if i in gpus]
        env.update(
            MGPU_JOB_ID=job_id, SLURMD_NODENAME=node_id, CUDA_VISIBLE_DEVICES=",".join(visible)
        )
        env["SLURM_JOB_GPUS"] = ",".join(str(i) for i in row.get("gpu_indices", []))
    return env


def allocate(argv: list[str], prog: str) -> int:
    if wants_help(argv, table_for(A)):
        summary = "Get an allocation, run a shell (or COMMAND) in it, release it at the end."
        sys.stdout.write(
            render_help(
                prog,
                "[OPTIONS] [COMMAND [ARGS...]]",
                summary,
                (o for o in JOB_OPTIONS if A in o.commands),
            )
        )
        return 0
    found, command = parse(argv, table_for(A))
    warnings = jobspec.check_options(found)
    opts = jobspec.used(found)
    quiet = bool(opts.get("quiet"))
    for line in warnings if not quiet else ():
        warn(prog, line)
    opts.setdefault("job_name", "interactive")
    job = jobspec.build(opts, argv=[], script=HOLDER, interactive=False)
    job.update(stdout_path="/dev/null", requeue=False)
    from mgpu_client.client import connect

    say = (lambda text: None) if quiet else (lambda text: sys.stderr.write(f"{prog}: {text}\n"))
    master = opts.get("master")
    with connect(master) as client:
        job_id = int(client.submit_job(job)["job_id"])
        say(f"Pending job allocation {job_id}")
        _release_on_hangup()
        try:
            row = granted(client, job_id)
            nodes = client.nodes() if row["state"] == "RUNNING" else []
        except (KeyboardInterrupt, _Released):
            _release(master, job_id, say, prog)
            return 130
    if row["state"] != "RUNNING":
        say(f"job allocation {job_id} ended before it started: {row['state']}")
        return 1
    say(f"Granted job allocation {job_id}")
    if opts.get("no_shell"):
        return 0
    shell = command or [os.environ.get("SHELL") or "/bin/sh"]
    # Ctrl-C is the shell's (it reaches the whole foreground group): salloc keeps the
    # allocation while the shell runs, and gives it back when the shell ends or salloc is
    # told to end (SIGTERM, SIGHUP).
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code = subprocess.call(shell, env=_local_env(row, nodes))
    except OSError as exc:
        warn(prog, f"cannot run {shell[0]}: {exc.strerror}")
        code = 1
    except _Released:
        code = 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGINT, previous)
    _release(master, job_id, say, prog)
    return code if code >= 0 else 128 - code


class _Released(Exception):
    """SIGTERM or SIGHUP: give the allocation back and end."""


def _release_on_hangup() -> None:
    def handler(signum: int, frame: object) -> None:
        raise _Released

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)


def _release(master: str | None, job_id: int, say: Any, prog: str) -> None:
    """Cancel the allocation, on a connection of its own (the first may be long gone)."""
    from mgpu_client.client import connect

    say(f"Relinquishing job allocation {job_id}")
    try:
        with connect(master) as client:
            client.cancel([job_id])
    except MgpuError as exc:
        warn(prog, f"job {job_id} not released: {exc}")


def main(prog: str = "mgpu_salloc", *, slurm: bool = False) -> None:
    run_command(prog, lambda: allocate(sys.argv[1:], prog), slurm=slurm, exit_now=True)


def slurm_main() -> None:
    main("salloc", slurm=True)


if __name__ == "__main__":
    main()
