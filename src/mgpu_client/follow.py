"""Following a job to its end, without click: srun's runtime (output relay, waiting notes,
reconnects, Ctrl-C), shared by ``mgpu_srun`` (both of its paths) and ``mgpu_client attach``."""

from __future__ import annotations

# _signal, not signal: the signal module's enums cost every srun ~1 ms of start-up.
import _signal as signal  # type: ignore[import-not-found]
import sys
import time

from mgpu_client.client import Client
from mgpu_core.errors import ConnectionClosed, MasterUnreachable
from mgpu_core.exitcodes import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_SIGNAL_BASE
from mgpu_core.text import escape_controls

TYPE_CHECKING = False  # not typing's: importing typing costs a client command ~3 ms
if TYPE_CHECKING:
    from typing import Any

# After a cancel, how long to wait for the job's final state before giving up on it.
CANCEL_WAIT_S = 30.0


def say(line: str) -> None:
    """A note of ours on stderr (others' text in it, such as a reason, shown escaped)."""
    sys.stderr.write(escape_controls(line) + "\n")
    sys.stderr.flush()


# Reconnect backoff while the master is away (srun follows the job across master restarts).
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 2.0


class Detach(Exception):
    """SIGHUP: the terminal is gone. Leave the job running; ``mgpu_client attach`` resumes."""


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _hangup(signum: int, frame: object) -> None:
    raise Detach


def exit_status(event: dict[str, Any]) -> int:
    """srun's exit code: the job's own, or 128+N for death by signal N."""
    if event.get("signal"):
        return EXIT_SIGNAL_BASE + int(event["signal"])
    code = event.get("exit_code")
    if isinstance(code, int):
        return code & 0xFF if code >= 0 else EXIT_ERROR
    return EXIT_ERROR


def report_end(
    event: dict[str, Any], job_id: int, prog: str, printer: Printer | None = None
) -> int:
    """Say how a job ended (unless it simply completed or exited non-zero) and return the
    exit status; ``event`` is a job_ended event or a queue row. With the ``printer`` that
    showed the job's output: also say if some of it never arrived."""
    if printer is not None:
        printer.check_complete(event.get("output_bytes"), job_id)
    state = event["state"]
    if state != "COMPLETED" and not (state == "FAILED" and event.get("exit_code")):
        reason = f" ({event['reason']})" if event.get("reason") else ""
        say(f"{prog}: error: job {job_id} ended {state}{reason}")
    return exit_status(event)


class Behind(Exception):
    """The master stopped sending us the job's events: we read too slowly."""


class Printer:
    """Writes a job's output, each byte once and in order, by the chunks' offsets: a chunk
    replayed after a re-attach starts at or before what is printed (its printed part is
    dropped); one that starts after it leaves a gap, so it waits for the replay that fills
    it (the node sends it again, in order). ``offset`` None: start at the first chunk seen."""

    def __init__(self, offset: int | None = 0) -> None:
        self.offset = offset

    def show(self, event: dict[str, Any]) -> None:
        at, data, lost = event.get("offset"), event["data"], event.get("lost") or 0
        if at is None:  # an older node: no offsets, print as it comes
            self._write(event["stream"], data)
            return
        if self.offset is None:
            self.offset = at
        if at > self.offset:
            return  # a gap: the replay asked for fills it
        end = at + (lost or len(data))
        if end <= self.offset:
            return  # printed already
        if lost:
            say(f"mgpu: {end - self.offset} bytes of output lost (past the node's limit)")
        else:
            self._write(event["stream"], data[self.offset - at :])
        self.offset = end

    def check_complete(self, output_bytes: object, job_id: int) -> None:
        """The job has ended with ``output_bytes`` of output (None: not known): one line if
        less was printed. It happens when the job ends while this client cannot follow it (the
        master away, or a slow reader re-attaching) and its node, with the exit delivered,
        has discarded the output."""
        printed = self.offset
        if isinstance(output_bytes, int) and printed is not None and printed < output_bytes:
            say(
                f"mgpu: the last {output_bytes - printed} bytes of job {job_id}'s output were "
                "not received: the job ended before this client caught up, and they are gone"
            )
            self.offset = output_bytes

    @staticmethod
    def _write(stream_no: int, data: bytes) -> None:
        stream = sys.stdout.buffer if stream_no == 1 else sys.stderr.buffer
        stream.write(data)
        stream.flush()


def stream_job(
    client: Client,
    job_id: int,
    *,
    prog: str,
    timeout_s: float | None = None,
    printer: Printer | None = None,
) -> int:
    """Relay a job's events until it ends; returns the exit status to use."""
    printer = printer or Printer(None)
    waiting_said = False
    told = ("", 0.0)  # the pending reason and expected start last shown
    while True:
        event = client.next_event(timeout_s)
        kind = event["t"]
        if kind == "job_output":
            printer.show(event)
        elif kind == "job_state":
            if event["state"] == "PENDING":
                if not waiting_said:
                    say(f"{prog}: job {job_id} queued and waiting for resources")
                    waiting_said = True
                now = (event.get("reason") or "", float(event.get("expected_start") or 0.0))
                if now != told and now[0]:
                    say(pending_note(prog, job_id, *now))
                told = now
            elif event["state"] == "RUNNING" and waiting_said:
                say(f"{prog}: job {job_id} has been allocated resources")
        elif kind == "watch_dropped":
            behind = event.get("behind_bytes", 0)
            say(f"{prog}: you read too slowly: {behind} bytes behind; re-attaching")
            raise Behind
        elif kind == "job_ended":
            return report_end(event, job_id, prog, printer)


def pending_note(prog: str, job_id: int, reason: str, expected_start: float) -> str:
    """The line srun and attach print when a waiting job's reason or expected start changes."""
    note = f"{prog}: job {job_id} pending: {reason}"
    if expected_start > 0:
        note += ", expected to start at " + time.strftime(
            "%Y-%m-%dT%H:%M:%S", time.localtime(expected_start)
        )
    return note


class Follower:
    """Follows one job; when the master goes away, reconnects and re-attaches, asking for
    the output from what it printed up to (the job's node replays it)."""

    def __init__(self, client: Client, job_id: int, prog: str, *, offset: int = 0) -> None:
        self.client = client
        self.job_id = job_id
        self.prog = prog
        self.printer = Printer(offset)

    def _stream(self, timeout_s: float | None) -> int:
        return stream_job(
            self.client, self.job_id, prog=self.prog, timeout_s=timeout_s, printer=self.printer
        )

    def follow(self, timeout_s: float | None = None) -> int:
        while True:
            try:
                return self._stream(timeout_s)
            except ConnectionClosed:
                say(f"{self.prog}: lost the master; reconnecting (job {self.job_id} keeps running)")
                row = self._reattach()
            except Behind:
                row = self._attach()
            if row["state"] not in ("PENDING", "RUNNING"):
                return report_end(row, self.job_id, self.prog, self.printer)

    def _attach(self) -> dict[str, Any]:
        job: dict[str, Any] = self.client.request(
            "attach", job_id=self.job_id, offset=self.printer.offset or 0
        )["job"]
        return job

    def _reattach(self) -> dict[str, Any]:
        address = self.client.address
        self.client.close()
        delay_s = RECONNECT_MIN_S
        while True:
            try:
                self.client = Client(address)
                return self._attach()
            except (MasterUnreachable, ConnectionClosed, TimeoutError):
                time.sleep(delay_s)  # waiting for the master to come back: nothing to wait on
                delay_s = min(delay_s * 2, RECONNECT_MAX_S)

    def run(self, *, cancel_on_interrupt: bool = True) -> int:
        """Follow to the end; SIGHUP detaches. Ctrl-C or SIGTERM cancels the job (srun's
        own job), or, without ``cancel_on_interrupt`` (attach: someone else's follower of
        a job that runs without it), detaches and leaves it running."""
        try:
            return self.follow()
        except KeyboardInterrupt:
            if not cancel_on_interrupt:
                say(
                    f"{self.prog}: detached; job {self.job_id} keeps running "
                    f"(mgpu_client attach {self.job_id} follows it again, "
                    f"mgpu_cancel {self.job_id} cancels it)"
                )
                return EXIT_INTERRUPTED
            say(f"{self.prog}: interrupted: cancelling job {self.job_id}")
        except Detach:
            return EXIT_SIGNAL_BASE + int(signal.SIGHUP)
        self.client.cancel([self.job_id])
        # Not contextlib.suppress: contextlib's import costs every srun start-up time.
        try:  # noqa: SIM105
            self._stream(CANCEL_WAIT_S)
        except (KeyboardInterrupt, TimeoutError, ConnectionClosed, Behind):
            pass  # the cancel was sent; its confirmation is not worth waiting longer for
        return EXIT_INTERRUPTED


def submit_and_follow(client: Client, job: dict[str, Any], prog: str) -> int:
    """Submit ``job`` (a wire job spec) attached and follow it to its end: srun's exit status.
    srun (outside a job) and mgpu_client run end here."""
    try:
        # SubmitRequest's wire form, spelled out: loading the records (mgpu_core.models, with
        # dataclasses) would cost srun ~5 ms of start-up. tests/client/test_quick.py checks the
        # jobs it builds against JobSpec's schema.
        job_id = int(client.request("submit", job=job, attach=True)["job_id"])
        follower = Follower(client, job_id, prog)
        code = follower.run()
    finally:
        client.close()
    follower.client.close()  # a reconnect may have replaced the first connection
    return code


def install_signal_handlers() -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _hangup)
