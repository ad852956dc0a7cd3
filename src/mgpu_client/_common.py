"""What every click command shares: the --master option, and (from client.py and exits.py,
which do not import click) connecting and the error-to-exit-code mapping (the codes are
mgpu_core.exitcodes'). The job commands (srun, sbatch, salloc, scancel and their verbs)
do not use click: their options are in mgpu_client.optable."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

# Re-exported: the commands import them from here with the click helpers.
from mgpu_client.client import connect
from mgpu_client.exits import fail, handles_errors
from mgpu_core.exitcodes import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_UNREACHABLE

__all__ = [
    "CONTEXT",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_UNREACHABLE",
    "connect",
    "fail",
    "handles_errors",
    "master_option",
]

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
