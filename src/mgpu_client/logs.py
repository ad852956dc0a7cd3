"""``mgpu_client log JOB [-f] [--tail N] [--stderr]``: a batch job's output file, read on its
node through the master, from any host that reaches the master; running or finished (while the
file exists). ``-f`` follows it to the job's end and exits with the job's code, as srun would.

Following polls: every ``FOLLOW_INTERVAL_S`` while the file does not grow (as ``tail -f`` does;
one small request, answered by the node, not the scheduler's hot path).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from mgpu_client._common import connect, handles_errors, master_option
from mgpu_client.client import Client
from mgpu_client.follow import exit_status, say
from mgpu_core.states import JobState

PROG = "mgpu_client"
FOLLOW_INTERVAL_S = 0.5
TAIL_CHUNK_BYTES = 64 * 1024
MAX_TAIL_BYTES = 64 * 1024 * 1024  # --tail never reads more than this from the end
ENDED = frozenset(s.value for s in JobState if s.terminal)


class Reader:
    def __init__(self, client: Client, job: str | int, stream: str) -> None:
        self.client, self.job, self.stream = client, job, stream
        self.offset = 0
        self.status: dict[str, Any] = {}

    def read(self, *, from_end: int = 0) -> dict[str, Any]:
        """From the reader's offset, or (``from_end``) that many bytes before the end."""
        reply: dict[str, Any] = self.client.request(
            "log",
            job_id=self.job,
            stream=self.stream,
            offset=None if from_end else self.offset,
            from_end=from_end,
        )
        self.status = reply["job"]
        return reply

    def tail_start(self, lines: int) -> int:
        """Where the last ``lines`` lines start (reading back from the end in growing steps)."""
        want = TAIL_CHUNK_BYTES
        while True:
            reply = self.read(from_end=want)
            data, start, size = reply["data"], int(reply["offset"]), int(reply["size"])
            if lines == 0:
                return size
            cut = len(data)
            for _ in range(lines + (1 if data.endswith(b"\n") else 0)):
                cut = data.rfind(b"\n", 0, cut)
                if cut < 0:
                    break
            if cut >= 0:
                return start + cut + 1
            if start == 0 or want >= MAX_TAIL_BYTES:  # fewer lines than asked: all there is
                return start
            want *= 4

    def copy_to_end(self) -> int:
        """Print from the offset to the file's end as it is now; returns the size."""
        while True:
            reply = self.read()
            if reply["size"] < self.offset:  # truncated (a requeued run started over)
                say(f"{PROG} log: the output file was truncated; from its start again")
                self.offset = 0
                continue
            data = reply["data"]
            if data:
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
                self.offset = reply["offset"] + len(data)
            if self.offset >= reply["size"] or not data:
                return int(reply["size"])


def follow(reader: Reader) -> int:
    """Print what comes until the job has ended and everything is printed: its exit status."""
    said = ""
    while True:
        size = reader.copy_to_end()
        state = reader.status.get("state", "")
        if state in ENDED and reader.offset >= size:
            return exit_status(reader.status)
        if state == "PENDING" and reader.status.get("reason") != said:
            said = reader.status.get("reason") or ""
            say(f"{PROG} log: job {reader.status['job_id']} pending: {said or 'None'}")
        time.sleep(FOLLOW_INTERVAL_S)  # nothing to wait on: the file grows on another host


@click.command("log")
@master_option
@click.option(
    "-f", "--follow", "follow_", is_flag=True, help="Follow to the job's end; exit with its code."
)
@click.option(
    "--tail",
    "tail_lines",
    type=click.IntRange(0, 10_000_000),
    default=None,
    metavar="N",
    help="Start with the last N lines.",
)
@click.option("--stderr", is_flag=True, help="The job's stderr file (when it has its own, -e).")
@click.argument("job_id")
@handles_errors(f"{PROG} log")
def log_command(
    *, master: str | None, follow_: bool, tail_lines: int | None, stderr: bool, job_id: str
) -> None:
    """Print a batch job's output (its -o file, or -e's with --stderr), running or finished,
    from any host that reaches the master: the job's node reads it."""
    from mgpu_client.queue import parse_job_ids

    [ref] = parse_job_ids([job_id])
    with connect(master) as client:
        reader = Reader(client, ref, "stderr" if stderr else "stdout")
        if tail_lines is not None:
            reader.offset = reader.tail_start(tail_lines)
        if follow_:
            sys.exit(follow(reader))
        reader.copy_to_end()
    if reader.status.get("state") == "PENDING":
        say(f"{PROG} log: job {reader.status['job_id']} has not started: no output yet")
