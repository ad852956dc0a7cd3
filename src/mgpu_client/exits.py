"""The one-line error rule and its exit codes (mgpu_core.exitcodes), without click: the quick
srun and queue paths use it too."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

from mgpu_core.errors import MasterUnreachable, MgpuError, UsageError
from mgpu_core.exitcodes import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_UNREACHABLE, EXIT_USAGE
from mgpu_core.text import escape_controls

TYPE_CHECKING = False  # not typing's: importing typing costs a client command ~3 ms
if TYPE_CHECKING:
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
        @functools.wraps(fn)
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

        return inner  # type: ignore[return-value]

    return wrap
