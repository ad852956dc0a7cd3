"""What every command shares: the --master option, the error-to-exit-code mapping, and the
job options of srun, sbatch, submit and run."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from mgpu_client.client import Client
from mgpu_core.cliutil import parsed_by
from mgpu_core.config import resolve_master
from mgpu_core.errors import ConfigError, MasterUnreachable, MgpuError
from mgpu_core.hostlist import expand_hostlist
from mgpu_core.models import JobSpec
from mgpu_core.units import parse_size, parse_time_limit

EXIT_ERROR = 1
EXIT_UNREACHABLE = 2
EXIT_INTERRUPTED = 130

F = TypeVar("F", bound=Callable[..., Any])

CONTEXT = {"help_option_names": ["-h", "--help"]}


def master_option(fn: F) -> F:
    return click.option(
        "--master",
        metavar="HOST:PORT",
        default=None,
        help="Master address [default: $MGPU_MASTER, else the config file, else 127.0.0.1:6860].",
    )(fn)


def connect(master: str | None) -> Client:
    return Client(resolve_master(master))


def fail(prog: str, message: str, code: int = EXIT_ERROR) -> None:
    click.echo(f"{prog}: error: {message}", err=True)
    sys.exit(code)


def handles_errors(prog: str) -> Callable[[F], F]:
    """Expected failures become one line on stderr and a non-zero exit, never a traceback."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except MasterUnreachable as err:
                fail(prog, str(err), EXIT_UNREACHABLE)
            except MgpuError as err:
                fail(prog, str(err))
            except KeyboardInterrupt:
                sys.exit(EXIT_INTERRUPTED)
            except BrokenPipeError:
                # stdout closed early (| head): not an error worth a traceback.
                sys.stderr.close()
                sys.exit(EXIT_ERROR)

        return inner  # type: ignore[return-value]

    return wrap


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
        callback=parsed_by(parse_size),
        default=None,
        metavar="SIZE",
        help="Memory, e.g. 16G (bare number: MB).",
    ),
    click.option(
        "-t",
        "--time",
        "time_limit_s",
        callback=parsed_by(parse_time_limit),
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
    return JobSpec(
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
        requeue=bool(opts.get("requeue", not interactive)),
    )
