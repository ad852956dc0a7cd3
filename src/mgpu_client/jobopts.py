"""The job options shared by srun, sbatch, submit and run, and the JobSpecs they build: one
builder per kind of job, so that two commands asking for the same job submit the same one."""

from __future__ import annotations

import os
import re
import signal
import time
from typing import Any

import click

from mgpu_client._common import F
from mgpu_client.client import current_umask
from mgpu_core.arrays import parse_array
from mgpu_core.cliutil import parsed_by
from mgpu_core.deps import parse_dependency
from mgpu_core.errors import BadMessage, ConfigError, UsageError
from mgpu_core.hostlist import expand_hostlist
from mgpu_core.limits import MAX_BYTES, MAX_TIME_LIMIT_S
from mgpu_core.models import JobSpec, printable
from mgpu_core.protocol import as_sent
from mgpu_core.units import format_size, parse_begin_time, parse_size, parse_time_limit

# A batch job's stdout when no --output is given (Slurm's slurm-%j.out, slurm-%A_%a.out).
DEFAULT_OUTPUT = "mgpu-%j.out"
ARRAY_OUTPUT = "mgpu-%A_%a.out"
# The name of a --wrap job without -J, as Slurm names it (%x in its output path).
WRAP_JOB_NAME = "wrap"


def _gres(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """Slurm's ``--gres=gpu:N`` or ``gpu:TYPE:N`` (the type is accepted and not matched yet)."""
    if value is None:
        return None
    parts = value.split(":")
    if parts[0] != "gpu" or len(parts) > 3:
        raise click.BadParameter(f"unsupported gres '{value}': use gpu:N")
    count = parts[-1] if len(parts) > 1 else "1"
    if not count.isdigit():
        raise click.BadParameter(f"invalid GPU count in '{value}'")
    return int(count)


def _mem(text: str) -> int:
    size = parse_size(text)
    if size > MAX_BYTES:
        raise ValueError(f"{text} is more memory than a job may ask for ({format_size(MAX_BYTES)})")
    return size


def bounded_time_limit(text: str) -> int:
    """``--time``: what parse_time_limit reads, up to the longest a job may run."""
    seconds = parse_time_limit(text)
    if seconds > MAX_TIME_LIMIT_S:
        days = MAX_TIME_LIMIT_S // 86_400
        raise ValueError(f"{text} is longer than a job may run ({days} days)")
    return seconds


def _dependency(text: str) -> str:
    # The syntax is checked here (array task references ID_TASK allowed); the master resolves
    # and checks the ids.
    parse_dependency(re.sub(r"(\d+)_\d+", r"\1", text))
    return text.strip()


def _array(text: str) -> str:
    parse_array(text)
    return text.strip()


ARRAY_OPTION = click.option(
    "-a",
    "--array",
    callback=parsed_by(_array),
    default=None,
    metavar="SPEC",
    help="A job array: 0-15, 1,3,5, 0-99:2, with %N to run at most N tasks at once.",
)


def parse_signal_option(text: str) -> tuple[int, int]:
    """sbatch's ``--signal=[{R|B}:]SIG[@SECONDS]`` -> (signal number, seconds before the limit)."""
    body = text.split(":", 1)[1] if text[:2] in ("B:", "R:") else text
    name, _, when = body.partition("@")
    if name.isdigit():
        number = int(name)
    else:
        try:
            number = int(signal.Signals["SIG" + name.upper().removeprefix("SIG")])
        except KeyError:
            raise ValueError(f"invalid signal '{name}' in '{text}'") from None
    if not 0 < number < 65:
        raise ValueError(f"invalid signal number {number} in '{text}'")
    if when and not when.isdigit():
        raise ValueError(f"invalid time '{when}' in '{text}': seconds before the limit")
    seconds = int(when) if when else 60
    if seconds > 65_535:
        raise ValueError(f"--signal time {seconds} s is more than 65535")
    return number, seconds


JOB_OPTIONS = (
    click.option(
        "-G",
        "--gpus",
        type=click.IntRange(0, 64),
        default=None,
        help="GPUs for the job [default: 0].",
    ),
    click.option(
        "--gres", callback=_gres, default=None, metavar="gpu:N", help="Slurm spelling of --gpus."
    ),
    click.option(
        "-c",
        "--cpus",
        "--cpus-per-task",
        type=click.IntRange(1, 65536),
        default=None,
        help="CPUs [default: 1].",
    ),
    click.option(
        "--mem",
        "mem_bytes",
        callback=parsed_by(_mem),
        default=None,
        metavar="SIZE",
        help="Memory, e.g. 16G (bare number: MB).",
    ),
    click.option(
        "-t",
        "--time",
        "time_limit_s",
        callback=parsed_by(bounded_time_limit),
        default=None,
        metavar="LIMIT",
        help="Time limit: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS.",
    ),
    click.option("-J", "--job-name", default=None, help="Job name."),
    click.option(
        "-w",
        "--nodelist",
        callback=parsed_by(expand_hostlist),
        default=None,
        metavar="NODES",
        help="Run on one of these nodes, e.g. gpu[01-04].",
    ),
    click.option(
        "-D",
        "--chdir",
        type=click.Path(file_okay=False),
        default=None,
        help="Working directory [default: the current one].",
    ),
    click.option(
        "--nice",
        type=click.IntRange(-10_000, 10_000),
        default=None,
        help="Lower the job's priority by this much (negative: admins only).",
    ),
    click.option("-q", "--qos", default=None, help="Quality of service [default: the master's]."),
    click.option(
        "-d",
        "--dependency",
        callback=parsed_by(_dependency),
        default=None,
        metavar="SPEC",
        help="e.g. afterok:12:13, afterany:14?afternotok:15, singleton.",
    ),
    click.option(
        "--kill-on-invalid-dep",
        type=click.Choice(["yes", "no"]),
        default=None,
        help="Cancel the job if its dependency can never be met [default: no].",
    ),
    click.option(
        "-b",
        "--begin",
        "begin_time",
        callback=parsed_by(lambda text: parse_begin_time(text, time.time())),
        default=None,
        metavar="TIME",
        help="Not before TIME: now+60, now+2hours, 16:00, 2026-12-24T18:30.",
    ),
    click.option(
        "-H", "--hold", is_flag=True, default=False, help="Submit held (pending until released)."
    ),
    click.option(
        "--signal",
        "warn",
        callback=parsed_by(parse_signal_option),
        default=None,
        metavar="[B:]SIG[@SECONDS]",
        help="Send SIG this long (default 60 s) before the time limit.",
    ),
)


REQUEUE_OPTION = click.option(
    "--requeue/--no-requeue",
    default=True,
    show_default=True,
    help="Requeue the job if its node fails (it sees MGPU_RESTART_COUNT).",
)


def job_options(fn: F) -> F:
    for option in reversed(JOB_OPTIONS):
        fn = option(fn)
    return fn


def build_spec(
    opts: dict[str, Any], *, argv: list[str], script: str | None, interactive: bool
) -> JobSpec:
    """The job as the options describe it, with the submitter's environment and directory
    (as srun and sbatch do by default)."""
    gpus = opts.get("gpus")
    if gpus is None:
        gpus = opts.get("gres") or 0
    try:
        cwd = os.path.abspath(opts.get("chdir") or os.getcwd())
    except OSError as exc:
        raise ConfigError(f"cannot determine the working directory: {exc.strerror}") from None
    warn = opts.get("warn") or (0, 0)
    spec = JobSpec(
        name=opts.get("job_name") or "",
        argv=argv,
        script=script,
        interactive=interactive,
        gpus=gpus,
        cpus=opts.get("cpus") or 1,
        mem_bytes=opts.get("mem_bytes") or 0,
        time_limit_s=opts.get("time_limit_s") or 0,
        nodelist=opts.get("nodelist") or [],
        env=dict(os.environ),
        cwd=cwd,
        stdout_path=opts.get("output"),
        stderr_path=opts.get("error"),
        array=opts.get("array") or "",
        requeue=bool(opts.get("requeue", not interactive)),
        nice=opts.get("nice") or 0,
        qos=opts.get("qos") or "",
        dependency=opts.get("dependency") or "",
        kill_on_invalid_dep=opts.get("kill_on_invalid_dep") == "yes",
        hold=bool(opts.get("hold")),
        begin_time=opts.get("begin_time") or 0.0,
        warn_signal=warn[0],
        warn_before_s=warn[1],
        umask=current_umask(),
    )
    return checked(spec)


# The fields shown in the queue, which must be text (UTF-8); a command's arguments, its
# environment and a batch script go to the job byte for byte (mgpu_core.schema.OsStr).
_TEXT_FIELDS = {
    "name": "the job name (-J)",
    "cwd": "the working directory",
    "stdout_path": "the --output path",
    "stderr_path": "the --error path",
    "qos": "--qos",
    "dependency": "--dependency",
    "array": "--array",
    "nodelist": "--nodelist",
}


def checked(spec: JobSpec) -> JobSpec:
    """``spec``, if the master's schema accepts it; else a UsageError (one line, exit 64, with
    nothing sent) rather than the master's refusal or a value msgpack cannot pack."""
    for field, what in _TEXT_FIELDS.items():
        value = getattr(spec, field)
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str) and isinstance(as_sent(text), bytes):
                raise UsageError(
                    f"{what} {printable(text)} is not UTF-8 text, which mgpu needs to show it "
                    "(only a command's arguments, its environment and a script may hold "
                    "other bytes)"
                )
    try:
        JobSpec.SCHEMA.check(as_sent(spec.to_wire()), "job")
    except BadMessage as exc:
        raise UsageError(f"the job cannot be submitted: {exc}") from None
    return spec


def batch_spec(opts: dict[str, Any], *, script: str, argv: list[str]) -> JobSpec:
    """A batch job: ``script`` run with ``argv``, its output to a file (by default
    ``mgpu-%j.out``, one per task for an array)."""
    output = opts.get("output") or (ARRAY_OUTPUT if opts.get("array") else DEFAULT_OUTPUT)
    return build_spec({**opts, "output": output}, argv=argv, script=script, interactive=False)


def wrap_spec(opts: dict[str, Any], command_line: str) -> JobSpec:
    """``mgpu_sbatch --wrap CMD`` and ``mgpu_client submit CMD``: CMD in a ``/bin/sh`` script."""
    named = {**opts, "job_name": opts.get("job_name") or WRAP_JOB_NAME}
    return batch_spec(named, script=f"#!/bin/sh\n{command_line}\n", argv=[])
