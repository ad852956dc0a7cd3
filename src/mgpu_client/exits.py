"""The one-line error rule and its exit codes (mgpu_core.exitcodes), without click: the job
and Slurm commands, which do not import click, use it as the click verbs do."""

from __future__ import annotations

import sys

from mgpu_core.errors import MasterUnreachable, MgpuError, UsageError
from mgpu_core.exitcodes import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_UNREACHABLE, EXIT_USAGE
from mgpu_core.text import escape_controls

TYPE_CHECKING = False  # not typing's: importing typing costs a client command ~3 ms
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    F = TypeVar("F", bound=Callable[..., Any])


def fail(prog: str, message: str, code: int = EXIT_ERROR) -> None:
    # The message may quote others' text (a node id, a reason): one line, nothing raw.
    sys.stderr.write(f"{prog}: error: {escape_controls(message)}\n")
    sys.exit(code)


def exit_code_of(err: MgpuError) -> int:
    """The exit code for an expected failure (see mgpu_core.exitcodes)."""
    if isinstance(err, MasterUnreachable):
        return EXIT_UNREACHABLE
    if isinstance(err, UsageError):
        return EXIT_USAGE
    return EXIT_ERROR


def handles_errors(prog: str) -> Callable[[F], F]:
    """Expected failures become one line on stderr and a non-zero exit, never a traceback."""

    def wrap(fn: F) -> F:
        def inner(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except MgpuError as err:
                fail(prog, str(err), exit_code_of(err))
            except KeyboardInterrupt:
                sys.exit(EXIT_INTERRUPTED)
            except BrokenPipeError:
                # stdout closed early (| head): not an error worth a traceback.
                sys.stderr.close()
                sys.exit(EXIT_ERROR)

        # functools.wraps by hand (functools' import costs a command ~1 ms): click reads
        # the wrapped command's name and docstring.
        inner.__name__ = fn.__name__
        inner.__qualname__ = fn.__qualname__
        inner.__doc__ = fn.__doc__
        inner.__wrapped__ = fn  # type: ignore[attr-defined]
        return inner  # type: ignore[return-value]

    return wrap


def run_command(
    prog: str, fn: Callable[[], int | None], *, slurm: bool = False, exit_now: bool = False
) -> None:
    """Run a command's body and exit with its status; expected failures are one line on
    stderr. A Slurm-named command exits 1 for every failure, as Slurm's do; an mgpu_* one uses
    mgpu's table (mgpu_core.exitcodes: 64 for a usage error, 2 for an unreachable master).
    ``exit_now``: the process is the command itself (its entry point), which may skip the
    interpreter's teardown."""
    try:
        code = fn()
    except MgpuError as err:
        fail(prog, str(err), EXIT_ERROR if slurm else exit_code_of(err))
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(EXIT_ERROR)
    if not exit_now:
        sys.stdout.flush()
        sys.exit(code or 0)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        sys.exit(EXIT_ERROR)
    # Done, everything written: leave without the interpreter's teardown (freeing every
    # module, ~2 ms of a ~15 ms command). Nothing is left to run at exit: the connection is
    # closed and a command registers no atexit handler.
    from mgpu_core import procenv

    procenv.exit_now(code or 0)


def warn(prog: str, message: str) -> None:
    """A warning line, as Slurm's commands print them (``sbatch: warning: ...``)."""
    sys.stderr.write(f"{prog}: warning: {escape_controls(message)}\n")
