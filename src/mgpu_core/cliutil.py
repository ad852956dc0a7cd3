"""Running a click command the mgpu way: every command-line mistake is one line on stderr
(``prog: error: ...``) and a non-zero exit, never click's three-line usage block."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

import click

from mgpu_core.exitcodes import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STARTUP_FAILURE,
    EXIT_USAGE,
)


class StartupFailure(click.ClickException):
    """A daemon cannot start (bad state directory, key, socket path): one line, and the exit
    code that tells a supervisor not to expect the daemon up."""

    exit_code = EXIT_STARTUP_FAILURE


def run_click(command: click.Command, prog: str, args: list[str] | None = None) -> None:
    try:
        rv = command.main(args=args, prog_name=prog, standalone_mode=False)
    except click.UsageError as exc:
        if isinstance(exc, click.exceptions.NoArgsIsHelpError):
            click.echo(exc.format_message(), err=True)  # a bare group: its help, as is
        else:
            click.echo(f"{prog}: error: {exc.format_message()}", err=True)
        # click's own code here is 2, which means "master unreachable" to mgpu's users.
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        click.echo(f"{prog}: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code or EXIT_ERROR)
    except click.exceptions.Abort:
        click.echo(f"{prog}: aborted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(rv if isinstance(rv, int) else EXIT_OK)


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
F = TypeVar("F", bound=Callable[..., object])


def log_options(fn: F) -> F:
    """The daemons' --log-level, --log-format and --log-file."""
    from pathlib import Path

    from mgpu_core.logformat import FORMATS

    fn = click.option(
        "--log-file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Log to this file instead of stderr; opened anew on SIGHUP (log rotation).",
    )(fn)
    fn = click.option(
        "--log-format",
        type=click.Choice(FORMATS),
        default="text",
        show_default=True,
        help="json: one JSON object a line, with job, node and user as fields.",
    )(fn)
    return click.option(
        "--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True
    )(fn)


def configure_logging(level: str, fmt: str = "text", log_file: object = None) -> None:
    """Daemons log to stderr (or ``log_file``), one line per event; only CLIs configure
    handlers. A log file that cannot be opened stops the start in one line."""
    from pathlib import Path

    from mgpu_core.logformat import configure

    try:
        configure(level, fmt=fmt, log_file=Path(str(log_file)) if log_file else None)
    except OSError as exc:
        raise StartupFailure(f"cannot open log file {log_file}: {exc.strerror}") from None
