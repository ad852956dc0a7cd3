"""Exit codes and the one-line error rule, without click (the quick srun path uses them too)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

from mgpu_core.errors import MasterUnreachable, MgpuError

EXIT_ERROR = 1
EXIT_UNREACHABLE = 2
EXIT_INTERRUPTED = 130

TYPE_CHECKING = False  # not typing's: importing typing costs a client command ~3 ms
if TYPE_CHECKING:
    from typing import Any, TypeVar

    F = TypeVar("F", bound=Callable[..., Any])


def fail(prog: str, message: str, code: int = EXIT_ERROR) -> None:
    sys.stderr.write(f"{prog}: error: {message}\n")
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
