"""Running a click command the mgpu way: every command-line mistake is one line on stderr
(``prog: error: ...``) and a non-zero exit, never click's three-line usage block."""

from __future__ import annotations

import sys

import click

EXIT_USAGE = 2


def run_click(command: click.Command, prog: str) -> None:
    try:
        rv = command.main(prog_name=prog, standalone_mode=False)
    except click.ClickException as exc:
        click.echo(f"{prog}: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code if exc.exit_code else EXIT_USAGE)
    except click.exceptions.Abort:
        click.echo(f"{prog}: aborted", err=True)
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)
