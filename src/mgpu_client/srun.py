"""``srun`` and ``mgpu_srun``: run a command as a job and stream its output, or, inside a running
job, as a step of it (:mod:`mgpu_client.steps`). Exit status: the job's (128+N for a signal).

Start-up time is most of what a user waits for in ``srun true``: options are parsed from the
one table (mgpu_client.optable) without click, and the submit goes out as a plain wire dict.
"""

from __future__ import annotations

import sys

from mgpu_client import jobspec
from mgpu_client.cmdline import parse, render_help, wants_help
from mgpu_client.exits import run_command, warn
from mgpu_client.optable import JOB_OPTIONS, SRUN_WAIT, R, table_for
from mgpu_core import procenv
from mgpu_core.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

USAGE = "[OPTIONS] COMMAND [ARGS...]"
SUMMARY = (
    "Run COMMAND as a job and stream its output: srun --gpus 1 python train.py. Inside a job "
    "(its batch script, or salloc's shell), run it as a step: its tasks in the job's allocation."
)
# More tasks than one, outside a job: the node runs this loop, one task per SLURM_PROCID, and
# the job's exit status is the highest of its tasks' (a task killed by signal N counts 128+N).
FAN_OUT = (
    'n=$1; shift; i=0; pids=""; '
    'while [ "$i" -lt "$n" ]; do SLURM_PROCID=$i SLURM_LOCALID=$i "$@" & pids="$pids $!"; '
    "i=$((i + 1)); done; rc=0; for p in $pids; do wait $p; s=$?; "
    '[ "$s" -gt "$rc" ] && rc=$s; done; exit $rc'
)


def help_text(prog: str) -> str:
    options = [o for o in JOB_OPTIONS if R in o.commands and o.dest != "wait"]
    return render_help(prog, USAGE, SUMMARY, [*options, SRUN_WAIT])


def _in_a_job() -> bool:
    """Whether this srun runs inside a job or an allocation (its tasks are then a step)."""
    from mgpu_core.procenv import getenv

    return bool(getenv("MGPU_JOB_ID") or getenv("MGPU_ALLOCATION"))


def run(argv: list[str], prog: str, *, slurm: bool) -> int:
    if wants_help(argv, table_for(R)):
        sys.stdout.write(help_text(prog))
        return 0
    found, command = parse(argv, table_for(R))
    warnings = jobspec.check_options(found)
    opts = jobspec.used(found)
    if not opts.get("quiet"):
        for line in warnings:
            warn(prog, line)
    if not command:
        raise UsageError("give a command to run")
    target = _terminal_target(opts)
    if target is not None:  # srun --jobid ID --pty CMD: a terminal in that job, on its node
        from mgpu_client.client import connect
        from mgpu_client.terminal import enter

        with connect(opts.get("master")) as client:
            return enter(client, target, command, prog=prog)
    if opts.get("jobid") is not None or _in_a_job():
        from mgpu_client.steps import allocation_job_id, run_step

        in_job = allocation_job_id(opts)
        if in_job is not None:
            return run_step(in_job, command, opts, prog)
    if opts.get("pty") is not None:
        raise UsageError(
            "--pty is supported inside a job only (srun --pty in salloc's shell): mgpu does "
            "not forward a terminal to a new job yet"
        )
    job = jobspec.build(opts, argv=command, script=None, interactive=True)
    if job["ntasks"] > 1:
        job["argv"] = ["/bin/sh", "-c", FAN_OUT, "srun", str(job["ntasks"]), *command]
        if opts.get("label"):
            warn(prog, "--label is honoured for steps inside a job only")
    from mgpu_client.client import connect

    client = connect(opts.get("master"))
    if opts.get("test_only"):
        from mgpu_client.sbatch import _test_only

        with client:
            return _test_only(client.submit_job(job, test_only=True), prog)
    from mgpu_client.follow import install_signal_handlers, submit_and_follow

    install_signal_handlers()
    return submit_and_follow(client, job, prog)


def _terminal_target(opts: dict[str, Any]) -> str | None:
    """The job whose terminal ``--pty`` asks for from outside it: ``--jobid``, or salloc's
    allocation from another host (MGPU_ALLOCATION); None where srun runs a step instead (on
    the job's own node, inside it) or without --pty."""
    if opts.get("pty") is None:
        return None
    inside = procenv.getenv("MGPU_JOB_ID") or ""
    target = str(opts.get("jobid") or procenv.getenv("MGPU_ALLOCATION") or "")
    if not target or target.split(".")[0] == inside:
        return None
    return target.split(".")[0]


def main(prog: str = "mgpu_srun", *, slurm: bool = False) -> None:
    run_command(prog, lambda: run(sys.argv[1:], prog, slurm=slurm), slurm=slurm, exit_now=True)


def slurm_main() -> None:
    main("srun", slurm=True)


if __name__ == "__main__":
    main()
