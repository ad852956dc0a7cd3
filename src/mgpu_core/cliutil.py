"""Running a click command the mgpu way: every command-line mistake is one line on stderr
(``prog: error: ...``) and a non-zero exit, never click's three-line usage block."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TypeVar

import click

EXIT_USAGE = 2


def run_click(command: click.Command, prog: str, args: list[str] | None = None) -> None:
    try:
        rv = command.main(args=args, prog_name=prog, standalone_mode=False)
    except click.ClickException as exc:
        click.echo(f"{prog}: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code if exc.exit_code else EXIT_USAGE)
    except click.exceptions.Abort:
        click.echo(f"{prog}: aborted", err=True)
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)


T = TypeVar("T")


def parsed_by(
    parse: Callable[[str], T],
) -> Callable[[click.Context, click.Parameter, str | None], T | None]:
    """A click callback that parses an option with ``parse``; its ValueError message becomes the
    one-line usage error (``Invalid value for '--time': invalid time limit 'x': ...``)."""

    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> T | None:
        if value is None:
            return None
        try:
            return parse(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None

    return callback


LOG_LEVELS = ("debug", "info", "warning", "error")


def configure_logging(level: str) -> None:
    """Daemons log to stderr, one line per event; only CLIs configure handlers."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
