"""``mgpu_sbatch``: submit a batch script. ``#SBATCH`` and ``#MGPU`` directive lines at the top of
the script give options; the command line wins over them, as in Slurm."""

from __future__ import annotations

import shlex
import sys
from typing import Any

import click

from mgpu_client._common import (
    CONTEXT,
    connect,
    handles_errors,
    master_option,
)
from mgpu_client.jobopts import (
    ARRAY_OPTION,
    DEFAULT_OUTPUT,
    REQUEUE_OPTION,
    batch_spec,
    job_options,
    wrap_spec,
)
from mgpu_core.cliutil import run_click
from mgpu_core.errors import UsageError

PROG = "mgpu_sbatch"
DIRECTIVE_PREFIXES = ("#SBATCH", "#MGPU")


def parse_directives(script: str) -> list[str]:
    """Option tokens from the directive lines before the first command, in order.

    As in Slurm, parsing stops at the first line that is neither blank nor a comment; the
    ``#!`` line is skipped; anything after a ``#`` inside a directive is a comment.
    """
    tokens: list[str] = []
    for number, line in enumerate(script.splitlines(), 1):
        text = line.strip()
        if number == 1 and text.startswith("#!"):
            continue
        if not text:
            continue
        if not text.startswith("#"):
            break
        for prefix in DIRECTIVE_PREFIXES:
            if text.startswith(prefix) and (
                len(text) == len(prefix) or text[len(prefix)].isspace()
            ):
                try:
                    tokens.extend(shlex.split(text[len(prefix) :], comments=True))
                except ValueError as exc:
                    raise UsageError(f"script line {number}: {exc}: {text}") from None
    return tokens


def _read_script(path: str | None) -> str:
    try:
        if path is None or path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UsageError(f"cannot read batch script {path}: {reason}") from None


def merge_directives(ctx: click.Context, tokens: list[str]) -> dict[str, Any]:
    """Options from the script's directives, overridden by whatever the command line set."""
    if not tokens:
        return dict(ctx.params)
    assert ctx.command is not None
    try:
        sub = ctx.command.make_context(PROG, [*tokens, "--", "script"], parent=None)
    except click.UsageError as exc:
        raise UsageError(f"invalid directive in batch script: {exc.format_message()}") from None
    merged = dict(sub.params)
    for name, value in ctx.params.items():
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT:
            merged[name] = value
    return merged


@click.command(context_settings={**CONTEXT, "allow_interspersed_args": False})
@job_options
@click.option(
    "-o",
    "--output",
    default=None,
    help=f"stdout file; %j is the job id [default: {DEFAULT_OUTPUT}].",
)
@click.option("-e", "--error", default=None, help="stderr file [default: with stdout].")
@REQUEUE_OPTION
@ARRAY_OPTION
@click.option(
    "--wrap", default=None, metavar="CMD", help="Wrap this shell command line in a script."
)
@click.option("--parsable", is_flag=True, help="Print only the job id.")
@master_option
@click.argument("script", required=False)
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
@handles_errors(PROG)
def cli(**_: Any) -> None:
    """Submit a batch SCRIPT (or stdin, or --wrap CMD); its output goes to a file."""
    ctx = click.get_current_context()
    params = ctx.params
    if params["wrap"] is not None:
        if params["script"] is not None:
            raise UsageError("give either a script or --wrap, not both")
        # The command line is the whole job (nobody wrote directives into the wrapped line);
        # the same builder serves mgpu_client submit.
        spec = wrap_spec(params, params["wrap"])
    else:
        text = _read_script(params["script"])
        if not text.startswith("#!"):
            raise UsageError(
                "this does not look like a batch script: the first line must start with #! "
                "followed by the path to an interpreter, e.g. #!/bin/sh"
            )
        opts = merge_directives(ctx, parse_directives(text))
        spec = batch_spec(opts, script=text, argv=list(params["script_args"]))
    with connect(params["master"]) as client:
        job_id = client.submit(spec)
    click.echo(str(job_id) if params["parsable"] else f"Submitted batch job {job_id}")


def main() -> None:
    run_click(cli, PROG)


if __name__ == "__main__":
    main()
