"""What every command shares: the --master option, connecting, and the error-to-exit-code
mapping. The job options of srun, sbatch, submit and run are in jobopts.py, so that mgpu_queue
and mgpu_cancel do not import their parsers."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from mgpu_client.client import Client
from mgpu_core.config import client_addresses
from mgpu_core.errors import MasterUnreachable, MgpuError

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
        help="Master address, HOST:PORT or unix:PATH [default: $MGPU_MASTER, else the "
        "master's Unix socket on this host, else the config file, else 127.0.0.1:6860].",
    )(fn)


def connect(master: str | None) -> Client:
    """A session with the first reachable of the addresses the client may use."""
    addresses = client_addresses(master)
    for address in addresses[:-1]:
        try:
            return Client(address)
        except MasterUnreachable:
            continue  # a stale socket file left by a stopped master: try the next
    return Client(addresses[-1])


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
