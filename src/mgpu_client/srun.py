"""``mgpu_srun``: submit a command, wait for resources, stream its output, exit with its code."""

from __future__ import annotations

import contextlib
import signal
import sys
from typing import Any

import click

from mgpu_client._common import (
    CONTEXT,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    build_spec,
    connect,
    handles_errors,
    job_options,
    master_option,
)
from mgpu_client.client import Client
from mgpu_core.cliutil import run_click

PROG = "mgpu_srun"
# After a cancel, how long to wait for the job's final state before giving up on it.
CANCEL_WAIT_S = 30.0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def exit_status(event: dict[str, Any]) -> int:
    """srun's exit code: the job's own, or 128+N for death by signal N."""
    if event.get("signal"):
        return 128 + int(event["signal"])
    code = event.get("exit_code")
    if isinstance(code, int):
        return code & 0xFF if code >= 0 else EXIT_ERROR
    return EXIT_ERROR


def stream_job(
    client: Client, job_id: int, *, prog: str = PROG, timeout_s: float | None = None
) -> int:
    """Relay a job's events until it ends; returns the exit status to use."""
    out, err = sys.stdout.buffer, sys.stderr.buffer
    waiting_said = False
    while True:
        event = client.next_event(timeout_s)
        kind = event["t"]
        if kind == "job_output":
            stream = out if event["stream"] == 1 else err
            stream.write(event["data"])
            stream.flush()
        elif kind == "job_state":
            if event["state"] == "PENDING" and not waiting_said:
                click.echo(f"{prog}: job {job_id} queued and waiting for resources", err=True)
                waiting_said = True
            elif event["state"] == "RUNNING" and waiting_said:
                click.echo(f"{prog}: job {job_id} has been allocated resources", err=True)
        elif kind == "job_ended":
            state = event["state"]
            if state != "COMPLETED" and not (state == "FAILED" and event.get("exit_code")):
                reason = f" ({event['reason']})" if event.get("reason") else ""
                click.echo(f"{prog}: error: job {job_id} ended {state}{reason}", err=True)
            return exit_status(event)


def run_attached(client: Client, job_id: int, *, prog: str = PROG) -> int:
    """Stream the job; the first Ctrl-C (or SIGTERM/SIGHUP) cancels it, a second one leaves."""
    try:
        return stream_job(client, job_id, prog=prog)
    except KeyboardInterrupt:
        click.echo(f"{prog}: interrupted: cancelling job {job_id}", err=True)
    client.cancel([job_id])
    with contextlib.suppress(KeyboardInterrupt, TimeoutError):
        stream_job(client, job_id, prog=prog, timeout_s=CANCEL_WAIT_S)
    return EXIT_INTERRUPTED


@click.command(context_settings={**CONTEXT, "allow_interspersed_args": False})
@job_options
@master_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@handles_errors(PROG)
def cli(*, command: tuple[str, ...], master: str | None, **opts: Any) -> None:
    """Run COMMAND as a job and stream its output: mgpu_srun --gpus 1 -- python train.py"""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    spec = build_spec(opts, argv=list(command), script=None, interactive=True)
    with connect(master) as client:
        job_id = client.submit(spec, attach=True)
        sys.exit(run_attached(client, job_id))


def main() -> None:
    run_click(cli, PROG)


if __name__ == "__main__":
    main()
