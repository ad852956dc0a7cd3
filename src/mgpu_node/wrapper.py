"""The job wrapper: a few lines of POSIX sh between the agent and each job's command.

Why: only a process's parent can learn how it ended, and after an agent restart the job's
processes are no longer our children. So every job runs as ``/bin/sh -c WRAPPER mgpu-job
STATUS_FILE argv...``; the wrapper runs the command as its child, writes how it ended to
STATUS_FILE (``exit N`` or ``signal N``), and ends the same way itself, so that a live agent's
``waitpid`` on the wrapper sees what it would have seen for the command. A re-adopted job's
status is read from the file. sh is used rather than a Python shepherd because its start-up
costs about a millisecond, and dispatch latency matters.

How it behaves:

* The command's argv is passed as ``"$@"``, never interpolated into the script text.
* The wrapper traps the common termination signals with a no-op, so a signal sent to the
  job's process group (our SIGTERM on cancel, a user's ``kill -- -PGID``) ends the command but
  not the wrapper, which then records the status. Handled signals are reset to the default on
  exec, so the command sees the dispositions it would have seen without the wrapper. SIGKILL
  kills the wrapper too; then the agent knows the answer (it sent it) or the status is lost.
* The wrapper's own stderr goes to /dev/null (dash reports "Terminated" and the like for a
  child killed by a signal); the command gets the real stderr, and no extra descriptors.
* POSIX sh cannot tell ``exit(128+N)`` from death by signal N: both give ``$? = 128+N``.
  A status of 129..128+SIGRTMAX whose signal kills by default is therefore reported as that
  signal (this is also how every shell reports it); other statuses pass through unchanged.
  Before re-raising, core dumps are disabled, so the wrapper does not dump a core of its own.
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

SHELL = "/bin/sh"
_TRAPPED = "HUP INT QUIT USR1 USR2 ALRM TERM"
# Signals whose default action does not end a process: a status of 128+N for these is an
# ordinary exit code (re-raising SIGSTOP on ourselves would stop the wrapper for good).
_NOT_FATAL = (
    signal.SIGCHLD,
    signal.SIGCONT,
    signal.SIGSTOP,
    signal.SIGTSTP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGURG,
    signal.SIGWINCH,
)
_MAX_SIGNAL = int(signal.SIGRTMAX)
_NOT_FATAL_CASE = "|".join(str(int(s)) for s in _NOT_FATAL)

# Only numbers computed here are formatted into the text; job data arrives as "$@".
SCRIPT = f"""\
s=$1; shift
trap : {_TRAPPED}
exec 3>&2 2>/dev/null
( exec "$@" 3>&- ) 2>&3
r=$?
n=0
[ "$r" -gt 128 ] && [ "$r" -le {128 + _MAX_SIGNAL} ] && n=$((r - 128))
case $n in 0|{_NOT_FATAL_CASE}) printf 'exit %s\\n' "$r" >"$s"; exit "$r";; esac
printf 'signal %s\\n' "$n" >"$s"
trap - {_TRAPPED}
ulimit -c 0
kill -"$n" $$
exit "$r"
"""


def wrap(argv: list[str], status_file: Path, program: str) -> list[str]:
    """The argv that runs ``argv`` under the wrapper, recording its status in ``status_file``.

    ``program`` is ``argv[0]`` as :func:`find_executable` resolved it.
    """
    if argv[0].startswith("-"):
        # dash's exec takes no "--" and bash's needs it: a path cannot look like an option.
        argv = [program, *argv[1:]]
    return [SHELL, "-c", SCRIPT, "mgpu-job", str(status_file), *argv]


def read_status(status_file: Path) -> tuple[int | None, int | None] | None:
    """(exit_code, signal) as the wrapper recorded it, or None if it recorded nothing usable."""
    try:
        kind, _, value = status_file.read_text().strip().partition(" ")
    except (OSError, UnicodeDecodeError):
        return None
    if not value.isdigit():
        return None
    number = int(value)
    if kind == "exit" and 0 <= number <= 255:
        return number, None
    if kind == "signal" and 1 <= number <= _MAX_SIGNAL:
        return None, number
    return None


def find_executable(name: str, env: dict[str, str], cwd: str) -> str:
    """The path ``execvp`` would run for ``name``, or raise what it would raise
    (FileNotFoundError, PermissionError).

    The wrapper's ``exec`` would only fail inside the job; checking here keeps a missing
    program a launch failure with a clear reason, as it was before the wrapper.
    """
    if "/" in name:
        _check_file(name, Path(cwd) / name)
        return name
    for directory in os.get_exec_path(env):
        path = Path(cwd, directory or ".", name)
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)


def _check_file(name: str, path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)
    if path.is_dir() or not os.access(path, os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), name)
