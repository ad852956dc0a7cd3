"""A terminal inside a running job, on this side: ``mgpu_client session enter`` and ``srun
--jobid ID --pty``. The local terminal goes raw (every key, Ctrl-C included, goes to the shell
on the job's node, whose pty turns it into a signal there), its size follows SIGWINCH, and the
shell's output is written as it comes. Returns the shell's exit status, as ssh does.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import termios
import tty
from typing import Any

from mgpu_core.errors import MasterUnreachable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from mgpu_client.client import Client

READ_BYTES = 16 * 1024
EOT = b"\x04"  # Ctrl-D: what a piped stdin's end becomes on the pty


def window_size() -> tuple[int, int]:
    """(rows, columns) of our terminal; 24x80 when there is none."""
    for fd in (sys.stdout.fileno(), sys.stdin.fileno()):
        with contextlib.suppress(OSError):
            size = os.get_terminal_size(fd)
            return size.lines, size.columns
    return 24, 80


def enter(client: Client, job_ref: str, command: list[str], *, prog: str) -> int:
    """Open a terminal in the job and relay it until it ends; the shell's exit status."""
    rows, cols = window_size()
    term = os.environ.get("TERM") or "xterm"
    ref: int | str = int(job_ref) if job_ref.isdigit() else job_ref  # ID, or ARRAYID_TASK
    opened = client.request(
        "pty_open", job_id=ref, rows=rows, cols=cols, term=term, command=command
    )
    term_id = int(opened["term_id"])
    stdin = sys.stdin.fileno()
    is_tty = os.isatty(stdin)
    saved = termios.tcgetattr(stdin) if is_tty else None
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    previous = signal.signal(signal.SIGWINCH, lambda *_: _poke(wake_w))
    try:
        if is_tty:  # TCSANOW: what was typed ahead stays, and goes to the remote shell
            tty.setraw(stdin, termios.TCSANOW)
        return _relay(client, term_id, stdin, wake_r, prog)
    finally:
        signal.signal(signal.SIGWINCH, previous)
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        os.close(wake_r)
        os.close(wake_w)


def _poke(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        os.write(fd, b"w")


def _relay(client: Client, term_id: int, stdin: int, wake: int, prog: str) -> int:
    out = sys.stdout.buffer
    reading_stdin = True
    while True:
        while client.buffered():
            status = _from_master(client, term_id, out, prog)
            if status is not None:
                return status
        watched = [client.fileno(), wake] + ([stdin] if reading_stdin else [])
        ready, _, _ = select.select(watched, [], [])
        if wake in ready:
            os.read(wake, 64)
            rows, cols = window_size()
            client.tell("pty_resize", term_id=term_id, rows=rows, cols=cols)
        if stdin in ready:
            data = os.read(stdin, READ_BYTES)
            if not data:  # a piped stdin ended: the shell sees Ctrl-D, as from a keyboard
                reading_stdin = False
                data = EOT
            client.tell("pty_input", term_id=term_id, data=data)
        if client.fileno() in ready:
            status = _from_master(client, term_id, out, prog)
            if status is not None:
                return status


def _from_master(client: Client, term_id: int, out: Any, prog: str) -> int | None:
    """Handle one message; the exit status once the terminal has ended."""
    try:
        event = client.next_event(timeout_s=0.0)
    except TimeoutError:  # part of a frame: the rest comes with the next read
        return None
    except (OSError, EOFError) as exc:
        raise MasterUnreachable(f"lost the master: {exc}") from None
    if event.get("term_id") != term_id:
        return None
    if event["t"] == "pty_output":
        out.write(event["data"])
        out.flush()
        return None
    # pty_exit
    if event.get("error"):
        sys.stderr.write(f"\r\n{prog}: {event['error']}\r\n")
        return 1
    if event.get("signal"):
        return 128 + int(event["signal"])
    return int(event.get("exit_code") or 0)
