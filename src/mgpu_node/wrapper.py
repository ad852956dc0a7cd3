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
* The wrapper traps the common termination signals, so a signal sent to the job's process
  group (our SIGTERM on cancel, a user's ``kill -- -PGID``) ends the command but not the
  wrapper, which then records the status. One that comes before the command runs ends the job
  without running it (``_TRAPS`` says where sh leaves a gap). Handled signals are reset to
  the default on exec, so the command sees the dispositions it would have seen without the
  wrapper. SIGKILL kills the wrapper too; then the agent knows the answer (it sent it) or the
  status is lost.
* The wrapper's own stderr goes to /dev/null (dash reports "Terminated" and the like for a
  child killed by a signal); the command gets the real stderr, and no extra descriptors.
* POSIX sh cannot tell ``exit(128+N)`` from death by signal N: both give ``$? = 128+N``.
  A status of 129..128+SIGRTMAX whose signal kills by default is therefore reported as that
  signal (this is also how every shell reports it); other statuses pass through unchanged.
  Before re-raising, core dumps are disabled, so the wrapper does not dump a core of its own.
* A job of another user (jobuser.py) runs under ``AS_USER_SCRIPT``, started already switched
  to that user: it receives the status file as its stdin (the state directory is not that
  user's to open), and first enters the working directory, opens the output files and finds
  the program as that user. A step that fails is recorded as ``error CODE REASON``, which the
  agent reports like a launch failure. A batch script's descriptor (``/dev/fd/N``, which the
  script's interpreter opens) is the one extra descriptor such a job gets.
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

SHELL = "/bin/sh"
# The signals a job is commonly ended with (our SIGTERM, a user's kill): one that comes before
# the command runs ends the job without running it. And those a job is told something with
# (--signal's warning, a checkpoint request): one before the command runs has nobody to tell.
_ENDING = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGALRM, signal.SIGTERM)
_TELLING = (signal.SIGUSR1, signal.SIGUSR2)
_TRAPPED_NAMES = " ".join(s.name.removeprefix("SIG") for s in (*_ENDING, *_TELLING))
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
# A status is one short line; a failure reason names a path or two.
MAX_STATUS_BYTES = 8192
_NOT_FATAL_CASE = "|".join(str(int(s)) for s in _NOT_FATAL)

# Only numbers computed here are formatted into the text; job data arrives as "$@".
#
# First thing, the trapped signals are caught rather than acted on: the wrapper must outlive
# the command to record its end. An ending signal that comes before the command exists (a
# cancel right after the launch) must not be lost: it is remembered (mgpu_sig), and the
# command's subshell looks first and, if one came, does not start the command but ends as the
# signal would have ended it. What sh leaves open: a signal that lands while the shell forks
# that subshell reaches the new child before the child drops the shell's handlers, and is lost
# there (the parent learns of it only when the child ends); the agent sends its SIGTERM again
# once the command runs (executor.py). A signal before these lines run kills the wrapper
# itself, and an agent that is its parent sees that.
# (mgpu_sig: a name a job's environment is unlikely to hold, as sh exports an inherited
# variable it sets.)
_TRAPS = (
    "mgpu_sig=0\n"
    + "".join(f"trap 'mgpu_sig={int(s)}' {s.name.removeprefix('SIG')}\n" for s in _ENDING)
    + "".join(f"trap : {s.name.removeprefix('SIG')}\n" for s in _TELLING)
)

# A one-line warning the agent has for the job (a workspace over its quota): printed on the
# job's stderr (its file or pipe, set up by then) before the command runs, not passed on to it.
NOTICE_VAR = "MGPU_NOTICE"

# After a prelude that defines w, which records how the command ended: "exit N" or "signal N".
# The command's subshell reads its own pid (read is a builtin: /proc/self is the subshell,
# which then becomes the command) for SLURM_TASK_PID, which only it can know (slurmenv.py).
_BODY = f"""\
[ -z "${{{NOTICE_VAR}-}}" ] || printf 'mgpu: %s\\n' "${NOTICE_VAR}" >&2
unset {NOTICE_VAR}
exec 3>&2 2>/dev/null
( [ "$mgpu_sig" = 0 ] || exit $((128 + mgpu_sig))
  read -r SLURM_TASK_PID _ 2>/dev/null </proc/self/stat && export SLURM_TASK_PID
  exec "$@" 3>&- 4>&- ) 2>&3
r=$?
n=0
[ "$r" -gt 128 ] && [ "$r" -le {128 + _MAX_SIGNAL} ] && n=$((r - 128))
case $n in 0|{_NOT_FATAL_CASE}) w exit "$r"; exit "$r";; esac
w signal "$n"
trap - {_TRAPPED_NAMES}
ulimit -c 0
kill -"$n" $$
exit "$r"
"""

# The agent's own user: the agent set up the working directory and the output files; the status
# file is a path.
SCRIPT = (
    _TRAPS
    + """\
s=$1; shift
w() { printf '%s %s\\n' "$1" "$2" >"$s"; }
"""
    + _BODY
)

# Another user's job (jobuser.py): the process has switched to that user, and everything that
# needs permissions is done here, as that user. The status file is stdin, open for writing; the
# command gets /dev/null. Arguments: working directory, stdout file and stderr file ("": keep
# the pipe this process was given; stderr "": same as stdout), "1" to append to them ("":
# truncate), user and node (for messages). An output file whose directory is missing (the
# shell's words for ENOENT: dash's, bash's) gets it made (g: mkdir -p, with the job's umask), as
# the agent makes them for its own user's jobs; a directory the user cannot search is reported
# as the file that cannot be opened, as before.
# A step that fails records "error CODE REASON" (f), also told on stderr, and ends the job.
# The program is looked up in $PATH as the exec will, so that a missing one is a clear reason
# (as find_executable makes it for the agent's own jobs) without the agent looking for it.
AS_USER_SCRIPT = (
    _TRAPS
    + """\
exec 4>&0 </dev/null
d=$1 o=$2 e=$3 a=$4 u=$5 N=$6; shift 6
w() { printf '%s %s\\n' "$1" "$2" >&4; }
f() { printf 'mgpu: %s\\n' "$2" >&2; w error "$1 $2"; exit "$1"; }
g() {
  m=$(true 2>&1 >>"$1") && return
  case $m in *"Directory nonexistent"|*"No such file or directory")
    case $1 in */*) q=${1%/*}/;; *) q=./;; esac
    m=$(command -p mkdir -p -- "$q" 2>&1) ||
      f 1 "cannot create directory ${q%/} for output file $1 as user $u: ${m##*: }"
    m=$(true 2>&1 >>"$1") && return;;
  esac
  f 1 "cannot open output file $1 as user $u: ${m##*: }"
}
if ! CDPATH= cd -- "$d" 2>/dev/null; then
  [ -e "$d" ] && f 1 "working directory $d is not accessible to user $u on node $N"
  f 1 "working directory $d does not exist on node $N (as seen by user $u)"
fi
if [ -n "$o" ]; then
  g "$o"
  if [ -n "$a" ]; then exec >>"$o"; else exec >"$o"; fi
  if [ -n "$e" ]; then
    g "$e"
    if [ -n "$a" ]; then exec 2>>"$e"; else exec 2>"$e"; fi
  else
    exec 2>&1
  fi
fi
x=$1
case $x in
-*/*) x=./$x;;
*/*) ;;
*) x=; q=${PATH-/bin:/usr/bin}; case $q in *:) q=$q.;; esac
   IFS=:; set -f
   for p in $q; do
     [ -f "${p:-.}/$1" ] && [ -x "${p:-.}/$1" ] && { x=${p:-.}/$1; break; }
   done
   unset IFS; set +f;;
esac
[ -n "$x" ] && [ -e "$x" ] || f 127 "execve(): $1: No such file or directory"
[ -f "$x" ] && [ -x "$x" ] || f 127 "Permission denied: $1"
case $1 in -*) shift; set -- "$x" "$@";; esac
"""
    + _BODY
)


def wrap(argv: list[str], status_file: Path, program: str) -> list[str]:
    """The argv that runs ``argv`` under the wrapper, recording its status in ``status_file``.

    ``program`` is ``argv[0]`` as :func:`find_executable` resolved it.
    """
    if argv[0].startswith("-"):
        # dash's exec takes no "--" and bash's needs it: a path cannot look like an option.
        argv = [program, *argv[1:]]
    return [SHELL, "-c", SCRIPT, "mgpu-job", str(status_file), *argv]


def wrap_as_user(
    argv: list[str],
    *,
    cwd: str,
    stdout: str,
    stderr: str,
    user: str,
    node: str,
    append: bool = False,
) -> list[str]:
    """The argv that runs ``argv`` for another user (see AS_USER_SCRIPT): to be started with
    the status file, open for writing, as stdin, and already switched to ``user``.

    ``stdout``/``stderr`` are the output files the wrapper opens, as that user ("" for stdout:
    keep this process's; "" for stderr: the same file as stdout), appended to if ``append``,
    else truncated.
    """
    flag = "1" if append else ""
    return [SHELL, "-c", AS_USER_SCRIPT, "mgpu-job", cwd, stdout, stderr, flag, user, node, *argv]


def read_outcome(status_file: Path) -> tuple[int | None, int | None, str] | None:
    """(exit_code, signal, failure) as the wrapper recorded it, or None if it recorded nothing
    usable. ``failure`` is why an as-user wrapper could not start the command, else "".

    The file may belong to the job's user: only its beginning is read.
    """
    try:
        with open(status_file, "rb") as f:
            text = f.read(MAX_STATUS_BYTES).decode(errors="replace")
    except OSError:
        return None
    kind, _, value = text.strip().partition(" ")
    if kind == "error":
        code, _, reason = value.partition(" ")
        if code.isdigit() and 1 <= int(code) <= 255 and reason:
            return int(code), None, " ".join(reason.split())
        return None
    if not value.isdigit():
        return None
    number = int(value)
    if kind == "exit" and 0 <= number <= 255:
        return number, None, ""
    if kind == "signal" and 1 <= number <= _MAX_SIGNAL:
        return None, number, ""
    return None


def read_status(status_file: Path) -> tuple[int | None, int | None] | None:
    """(exit_code, signal) as the wrapper recorded it, or None if it recorded nothing usable."""
    outcome = read_outcome(status_file)
    return None if outcome is None else (outcome[0], outcome[1])


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
