"""``mgpu_srun``'s quick path: the common invocations without importing click (~30 ms of a
~35 ms command). It accepts exactly ``[-G N | --gpus N] [-J NAME | --job-name NAME]
[-c N | --cpus-per-task N] [--master ADDR] [--] COMMAND [ARGS...]`` (also ``--opt=value``)
and returns None for anything else, which the click command then handles with its full option
set, help and error messages. The job it submits equals what the click path builds for the
same arguments (tests/client/test_quick.py compares them), with every other field at its
default.
"""

from __future__ import annotations

import os

from mgpu_client.client import connect, current_umask
from mgpu_client.exits import handles_errors
from mgpu_client.follow import install_signal_handlers, submit_and_follow

TYPE_CHECKING = False  # not typing's: importing typing costs a client command ~3 ms
if TYPE_CHECKING:
    from typing import Any

# option -> (job spec field, smallest value; None for text)
OPTIONS: dict[str, tuple[str, int | None]] = {
    "-G": ("gpus", 0),
    "--gpus": ("gpus", 0),
    "-J": ("name", None),
    "--job-name": ("name", None),
    "-c": ("cpus", 1),
    "--cpus": ("cpus", 1),
    "--cpus-per-task": ("cpus", 1),
    "--master": ("master", None),
}
MAX_GPUS = 64
MAX_CPUS = 65536


def parse(argv: list[str]) -> tuple[dict[str, Any], str | None] | None:
    """(job spec, --master) for a quick-path command line, else None."""
    fields: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        name, eq, value = arg.partition("=")
        if name not in OPTIONS or (eq and not name.startswith("--")):
            return None
        if not eq:
            if i + 1 >= len(argv):
                return None
            i += 1
            value = argv[i]
        field, low = OPTIONS[name]
        if low is not None:
            # Longer numbers are out of range anyway (and int() refuses 4,300 digits).
            if not value.isascii() or not value.isdigit() or len(value) > 6:
                return None
            number = int(value)
            if not low <= number <= (MAX_GPUS if field == "gpus" else MAX_CPUS):
                return None
            fields[field] = number
        else:
            fields[field] = value
        i += 1
    command = argv[i:]
    if not command:
        return None
    master = fields.pop("master", None)
    try:
        cwd = os.path.abspath(os.getcwd())
    except OSError:
        return None  # the click path says why
    if not (_is_text(cwd) and _is_text(fields.get("name", ""))):
        return None  # not UTF-8: the click path says why (arguments and environment may be)
    job = {
        "argv": command,
        "interactive": True,
        "gpus": fields.get("gpus", 0),
        "cpus": fields.get("cpus", 1),
        "name": fields.get("name", ""),
        "env": dict(os.environ),
        "cwd": cwd,
        "umask": current_umask(),
    }
    return job, master


def _is_text(text: str) -> bool:
    """Whether ``text`` is UTF-8 text (no surrogate-escaped bytes: see mgpu_core.schema.OsStr)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def srun(argv: list[str], prog: str) -> int | None:
    """Run a quick-path srun and return its exit status, or None if argv needs click."""
    parsed = parse(argv)
    if parsed is None:
        return None
    job, master = parsed

    @handles_errors(prog)
    def go() -> int:
        install_signal_handlers()
        return submit_and_follow(connect(master), job, prog)

    return int(go())
