"""``mgpu_srun``: submit a command, wait for resources, stream its output, exit with its code.

Start-up time is most of what a user waits for in ``mgpu_srun true``, and importing click alone
costs ~30 ms: so ``main`` first tries :mod:`mgpu_client.quick`, which handles the common
invocations (``[-G N] [-J NAME] [-c N] [--master ADDR] [--] COMMAND``) with the same result,
and builds the click command only for everything else (other options, --help, mistakes).
"""

from __future__ import annotations

import sys

from mgpu_client import quick
from mgpu_client.follow import install_signal_handlers, submit_and_follow

TYPE_CHECKING = False  # not typing's: importing typing costs a client command ~3 ms
if TYPE_CHECKING:
    from typing import Any

    import click

PROG = "mgpu_srun"


def build_cli() -> click.Command:
    """The full mgpu_srun command (click), also ``mgpu_client run``."""
    import click

    from mgpu_client._common import CONTEXT, connect, handles_errors, master_option
    from mgpu_client.jobopts import build_spec, job_options

    @click.command(context_settings={**CONTEXT, "allow_interspersed_args": False})
    @job_options
    @master_option
    @click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
    @handles_errors(PROG)
    def cli(*, command: tuple[str, ...], master: str | None, **opts: Any) -> None:
        """Run COMMAND as a job and stream its output: mgpu_srun --gpus 1 -- python train.py"""
        install_signal_handlers()
        spec = build_spec(opts, argv=list(command), script=None, interactive=True)
        sys.exit(submit_and_follow(connect(master), spec.to_wire(), PROG))

    return cli


def main() -> None:
    code = quick.srun(sys.argv[1:], PROG)
    if code is not None:
        sys.exit(code)
    from mgpu_core.cliutil import run_click

    run_click(build_cli(), PROG)


if __name__ == "__main__":
    main()
