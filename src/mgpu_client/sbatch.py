"""``sbatch`` and ``mgpu_sbatch``: submit a batch script. ``#SBATCH`` (and ``#MGPU``) lines at
the top of the script give options; the command line wins over them, as in Slurm. Every option
of Slurm's sbatch is known (mgpu_client.optable says what happens to each); parsing needs no
click, so a submit costs little more than Python's own start.
"""

from __future__ import annotations

import sys

from mgpu_client import jobspec
from mgpu_client.cmdline import SLURM_VERSION, parse, render_help, wants_help
from mgpu_client.exits import run_command, warn
from mgpu_client.optable import JOB_OPTIONS, B, table_for
from mgpu_core.errors import UsageError

TYPE_CHECKING = False  # not typing's: importing typing costs a client command ~3 ms
if TYPE_CHECKING:
    from typing import Any

USAGE = "[OPTIONS] [SCRIPT [ARGS...]] | --wrap CMD"
SUMMARY = (
    "Submit a batch SCRIPT (or stdin, or --wrap CMD); its output goes to a file. #SBATCH lines "
    "at the top of the script give options; the command line wins over them."
)


def help_text(prog: str) -> str:
    return render_help(prog, USAGE, SUMMARY, (o for o in JOB_OPTIONS if B in o.commands))


def submit(argv: list[str], prog: str, *, slurm: bool) -> int:
    table = table_for(B)
    if wants_help(argv, table_for(B)):
        sys.stdout.write(help_text(prog))
        return 0
    if argv and argv[0] in ("-V", "--version"):
        from mgpu_core import __version__

        sys.stdout.write(f"{SLURM_VERSION} (mgpu {__version__})\n")
        return 0
    found, rest = parse(argv, table)
    given = jobspec.used(found)
    if given.get("wrap") is not None:
        if rest:
            raise UsageError("give either a script or --wrap, not both")
        name = jobspec.WRAP_JOB_NAME
        script, script_args = f"#!/bin/sh\n{given['wrap']}\n", []
    else:
        from mgpu_client.directives import parse_directives, read_script

        path = rest[0] if rest else None
        script, script_args = read_script(path), rest[1:]
        if not script.startswith("#!"):
            raise UsageError(
                "this does not look like a batch script: the first line must start with #! "
                "followed by the path to an interpreter, e.g. #!/bin/sh"
            )
        name = "sbatch" if path in (None, "-") else path.rsplit("/", 1)[-1]
        tokens = parse_directives(script)
        if tokens:
            try:
                in_script, stray = parse(tokens, table, interspersed=True)
            except UsageError as exc:
                raise UsageError(f"invalid directive in batch script: {exc}") from None
            if stray:
                raise UsageError(f"invalid directive in batch script: unexpected '{stray[0]}'")
            found = in_script + found  # the command line comes last and wins
    warnings = jobspec.check_options(found)
    opts = jobspec.used(found)
    if not opts.get("quiet"):
        for line in warnings:
            warn(prog, line)
    opts.setdefault("job_name", name)
    if not opts.get("output"):
        default = jobspec.ARRAY_OUTPUT if opts.get("array") else jobspec.DEFAULT_OUTPUT
        opts["output"] = default if slurm else default.replace("slurm-", "mgpu-", 1)
    job = jobspec.build(opts, argv=script_args, script=script, interactive=False)
    return _send(job, opts, prog)


def _send(job: dict[str, Any], opts: dict[str, Any], prog: str) -> int:
    from mgpu_client.client import connect

    with connect(opts.get("master")) as client:
        if opts.get("test_only"):
            return _test_only(client.submit_job(job, test_only=True), prog)
        # --wait follows the job's events, which only a connection watching it gets: the
        # submit itself starts the watch, so that not even a job ending at once is missed.
        job_id = int(client.submit_job(job, attach=bool(opts.get("wait")))["job_id"])
        sys.stdout.write(
            f"{job_id}\n" if opts.get("parsable") else f"Submitted batch job {job_id}\n"
        )
        sys.stdout.flush()
        if not opts.get("wait"):
            return 0
        from mgpu_client.follow import Follower

        follower = Follower(client, job_id, prog)
        try:
            return follower.follow()
        finally:
            follower.client.close()


def _test_only(reply: dict[str, Any], prog: str) -> int:
    """Slurm's ``sbatch --test-only`` line: where and when the job would start."""
    import time

    when = reply.get("would_start") or 0
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(when)) if when else "Unknown"
    node = reply.get("node") or "(unknown)"
    partition = reply.get("partition") or ""
    cpus = reply.get("cpus") or 1
    sys.stderr.write(
        f"{prog}: Job {reply.get('job_id') or 0} to start at {start} using {cpus} processors "
        f"on nodes {node} in partition {partition}\n"
    )
    return 0


def main(prog: str = "mgpu_sbatch", *, slurm: bool = False) -> None:
    run_command(prog, lambda: submit(sys.argv[1:], prog, slurm=slurm), slurm=slurm, exit_now=True)


def slurm_main() -> None:
    main("sbatch", slurm=True)


if __name__ == "__main__":
    main()
