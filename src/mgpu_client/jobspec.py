"""The job a command line asks for: from the options of :mod:`mgpu_client.optable` (parsed by
:mod:`mgpu_client.cmdline`, merged with a script's directives) to the wire form of a
:class:`mgpu_core.models.JobSpec`, with the warnings to print. One builder for sbatch, srun,
salloc and their mgpu_* twins, so that two commands asking for the same job submit the same
one. Converters of rarely used options are imported when the option is given: each costs a
command start-up time (hostlist and dependencies need dataclasses, ~3 ms).

The master checks every field again; what is checked here is what deserves a clearer message
than a schema error (and costs nothing when the option is absent).
"""

from __future__ import annotations

from mgpu_client.cmdline import QUIET, REFUSE, USE, WARN, number, split_list
from mgpu_client.resources import resources
from mgpu_core import procenv
from mgpu_core.errors import UsageError
from mgpu_core.limits import MAX_JOB_PORTS
from mgpu_core.text import printable

TYPE_CHECKING = False  # not typing's: importing typing costs a client command ~3 ms
if TYPE_CHECKING:
    from typing import Any

    from mgpu_client.cmdline import Opt

# A batch job's stdout when no --output is given (Slurm's slurm-%j.out, slurm-%A_%a.out).
DEFAULT_OUTPUT = "slurm-%j.out"
ARRAY_OUTPUT = "slurm-%A_%a.out"
# The name of a --wrap job without -J, as Slurm names it (%x in its output path).
WRAP_JOB_NAME = "wrap"
DEFAULT_NICE = 100  # --nice without a value, as in Slurm
# Time limits, as mgpu_core.limits.MAX_TIME_LIMIT_S (not imported: it pulls in the schema).
MAX_TIME_LIMIT_S = 365 * 86_400
# The fields shown in the queue, which must be text (UTF-8); a command's arguments, its
# environment and a batch script go to the job byte for byte (mgpu_core.schema.OsStr). Checked
# here so that a bad one is a usage error with nothing sent, not the master's refusal.
_TEXT_FIELDS = {
    "name": "the job name (-J)",
    "cwd": "the working directory",
    "stdout_path": "the --output path",
    "stderr_path": "the --error path",
    "partition": "--partition",
    "account": "--account",
    "qos": "--qos",
    "dependency": "--dependency",
    "array": "--array",
    "nodelist": "--nodelist",
    "exclude": "--exclude",
    "container_image": "--container-image",
    "container_mounts": "--container-mounts",
    "container_workdir": "--container-workdir",
}


def check_options(found: list[tuple[Opt, Any]]) -> list[str]:
    """Refuse what mgpu cannot honour (one line saying why) and return one warning per option
    that is ignored; the others are left to :func:`build`."""
    warnings = []
    seen = set()
    for opt, _ in found:
        if opt.how == REFUSE:
            raise UsageError(f"{opt.names[-1]} is not supported: {opt.why}")
        if opt.how == WARN and opt.dest not in seen:
            warnings.append(f"{opt.names[-1]} is ignored: {opt.why}")
        seen.add(opt.dest)
    return warnings


def used(found: list[tuple[Opt, Any]]) -> dict[str, Any]:
    """The honoured options by dest, the last of each winning (Slurm's rule; the command line
    comes after a script's directives)."""
    return {opt.dest: value for opt, value in found if opt.how == USE or opt.how == QUIET}


def time_limit_s(text: str) -> int:
    """``--time``: Slurm's forms, up to the longest a job may run; "UNLIMITED"/"infinite" is
    none (0)."""
    if str(text).lower() in ("unlimited", "infinite", "-1"):
        return 0
    from mgpu_core.units import parse_time_limit

    try:
        seconds = parse_time_limit(str(text))
    except ValueError as exc:
        raise UsageError(f"invalid --time: {exc}") from None
    if seconds > MAX_TIME_LIMIT_S:
        raise UsageError(f"invalid --time: {text} is longer than a job may run (365 days)")
    return seconds


def signal_option(text: str) -> tuple[int, int]:
    """``--signal=[{R|B}:]SIG[@SECONDS]`` -> (signal number, seconds before the limit)."""
    body = text.split(":", 1)[1] if text[:2] in ("B:", "R:") else text
    name, _, when = body.partition("@")
    if name.isdigit():
        signum = int(name)
    else:
        import signal

        try:
            signum = int(signal.Signals["SIG" + name.upper().removeprefix("SIG")])
        except KeyError:
            raise UsageError(f"invalid --signal: invalid signal '{name}' in '{text}'") from None
    if not 0 < signum < 65:
        raise UsageError(f"invalid --signal: invalid signal number {signum} in '{text}'")
    seconds = number("--signal", when, 0, 65_535) if when else 60
    return signum, seconds


def hosts(option: str, text: object) -> list[str]:
    """A hostlist option's names (``-w``, ``-x``, squeue's ``-w`` ...). A list without
    brackets is read here; one with them by mgpu_core.hostlist, whose import (re,
    dataclasses) would cost every ``-w n1`` ~10 ms of start-up."""
    expr = str(text)
    if "[" not in expr and "]" not in expr:
        names = [item.strip() for item in expr.split(",")]
        if not any(item.split() != [item] and item for item in names):
            kept = list(dict.fromkeys(n for n in names if n))
            if kept:
                return kept
    from mgpu_core.hostlist import expand_hostlist

    try:
        return expand_hostlist(expr)
    except ValueError as exc:
        raise UsageError(f"invalid {option}: {exc}") from None


def environment(export: object) -> dict[str, str]:
    """``--export``: ALL (the default: the submitter's environment), NONE (only SLURM_*
    variables, as Slurm), or VARS (those named, VAR=value set, plus SLURM_*), ALL,VARS."""
    env = dict(procenv.environ())
    if export is None or export is True or str(export).upper() == "ALL":
        return env
    items = [item for item in str(export).split(",") if item]
    everything = bool(items) and items[0].upper() == "ALL"
    chosen = env if everything else {k: v for k, v in env.items() if k.startswith("SLURM_")}
    for item in items[1:] if everything else items:
        if item.upper() == "NONE":
            continue
        name, eq, value = item.partition("=")
        if not name or "\0" in name:
            raise UsageError(f"invalid --export entry '{item}'")
        if eq:
            chosen[name] = value
        elif name in env:
            chosen[name] = env[name]
    return chosen


def build(
    opts: dict[str, Any], *, argv: list[str], script: str | None, interactive: bool
) -> dict[str, Any]:
    """The job's wire form (JobSpec.to_wire()'s keys; the master fills in what is missing)."""
    asked = resources(opts)
    try:
        cwd = procenv.abspath(opts.get("chdir") or procenv.getcwd())
    except OSError as exc:
        raise UsageError(f"cannot determine the working directory: {exc.strerror}") from None
    job: dict[str, Any] = {
        "name": opts.get("job_name") or "",
        "argv": argv,
        "script": script,
        "interactive": interactive,
        **asked,
        "env": environment(opts.get("export")),
        "cwd": cwd,
        "umask": procenv.umask(),
        "submit_host": procenv.uname().nodename,
        "requeue": not interactive and not opts.get("no_requeue"),
    }
    if opts.get("time") is not None:
        job["time_limit_s"] = time_limit_s(opts["time"])
    for key, field in (("output", "stdout_path"), ("error", "stderr_path")):
        if opts.get(key):
            job[field] = str(opts[key])
    for key in ("partition", "account", "qos", "array"):
        if opts.get(key):
            job[key] = str(opts[key]).strip()
    _placement(opts, job)
    container_options(opts, job)
    _timing(opts, job)
    _notices(opts, job)
    _check_text(job)
    return job


# --mail-type's words: ALL as Slurm spells it out; those that change nothing here are dropped.
_MAIL_ALL = ("BEGIN", "END", "FAIL", "REQUEUE", "INVALID_DEPEND")
_MAIL_KNOWN = (*_MAIL_ALL, "TIME_LIMIT", "TIME_LIMIT_90", "TIME_LIMIT_80", "TIME_LIMIT_50")
_MAIL_DROPPED = ("NONE", "STAGE_OUT", "ARRAY_TASKS")  # no stage-out; every task is told


def _notices(opts: dict[str, Any], job: dict[str, Any]) -> None:
    """--mail-type, --mail-user, --notify."""
    types: list[str] = []
    for word in split_list(opts.get("mail_type")):
        upper = word.strip().upper()
        if upper == "ALL":
            types.extend(_MAIL_ALL)
        elif upper in _MAIL_KNOWN:
            types.append(upper)
        elif upper not in _MAIL_DROPPED:
            raise UsageError(f"invalid --mail-type: {word} (use {', '.join(_MAIL_KNOWN)}, ALL)")
    if types:
        job["mail_types"] = list(dict.fromkeys(types))
    if opts.get("mail_user"):
        job["mail_user"] = str(opts["mail_user"]).strip()
    if opts.get("notify"):
        url = str(opts["notify"]).strip()
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"invalid --notify: {url} is not an http(s) URL")
        job["notify_url"] = url


def _check_text(job: dict[str, Any]) -> None:
    """A UsageError, with nothing sent, for a field the queue shows that is not UTF-8 text."""
    for key, what in _TEXT_FIELDS.items():
        value = job.get(key)
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str) and not text.isascii():
                try:
                    text.encode()
                except UnicodeEncodeError:
                    raise UsageError(
                        f"{what} {printable(text)} is not UTF-8 text, which mgpu needs to show "
                        "it (only a command's arguments, its environment and a script may hold "
                        "other bytes)"
                    ) from None


def _placement(opts: dict[str, Any], job: dict[str, Any]) -> None:
    if opts.get("nodelist"):
        job["nodelist"] = hosts("-w/--nodelist", opts["nodelist"])
    if opts.get("exclude"):
        job["exclude"] = hosts("-x/--exclude", opts["exclude"])
    if opts.get("exclusive"):
        job["exclusive"] = True
    if opts.get("ports") is not None:
        job["ports"] = number("--ports", opts["ports"], 0, MAX_JOB_PORTS)
    mode = opts.get("open_mode")
    if mode is not None:
        if str(mode).lower() not in ("append", "truncate"):
            raise UsageError(f"invalid --open-mode '{mode}': append or truncate")
        job["open_append"] = str(mode).lower() == "append"
    mpi = opts.get("mpi")
    if mpi is not None and str(mpi).lower() != "none":
        raise UsageError(f"--mpi={mpi} is not supported: MPI plugins are not, use --mpi=none")


def container_options(opts: dict[str, Any], job: dict[str, Any]) -> None:
    """--container-image, --container-mounts, --container-workdir (pyxis's spellings)."""
    image, workdir = opts.get("container_image"), opts.get("container_workdir")
    mounts = split_list(opts.get("container_mounts"))
    if not image:
        if mounts or workdir:
            raise UsageError("--container-mounts and --container-workdir need --container-image")
        return
    from mgpu_core.mounts import check_image, check_workdir, parse_mount

    try:
        job["container_image"] = check_image(str(image).strip())
        job["container_mounts"] = [parse_mount(m).spec() for m in mounts]
        if workdir:
            job["container_workdir"] = check_workdir(str(workdir).strip())
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _timing(opts: dict[str, Any], job: dict[str, Any]) -> None:
    if opts.get("array"):
        from mgpu_core.arrays import parse_array

        try:
            parse_array(str(opts["array"]))
        except ValueError as exc:
            raise UsageError(f"invalid --array: {exc}") from None
    if opts.get("dependency"):
        import re

        from mgpu_core.deps import parse_dependency

        text = str(opts["dependency"]).strip()
        try:
            parse_dependency(re.sub(r"(\d+)_\d+", r"\1", text))
        except ValueError as exc:
            raise UsageError(f"invalid --dependency: {exc}") from None
        job["dependency"] = text
    kill = opts.get("kill_on_invalid_dep")
    if kill is not None:
        if str(kill).lower() not in ("yes", "no"):
            raise UsageError(f"invalid --kill-on-invalid-dep '{kill}': yes or no")
        job["kill_on_invalid_dep"] = str(kill).lower() == "yes"
    if opts.get("begin"):
        import time

        from mgpu_core.units import parse_begin_time

        try:
            job["begin_time"] = parse_begin_time(str(opts["begin"]), time.time())
        except ValueError as exc:
            raise UsageError(f"invalid --begin: {exc}") from None
    if opts.get("hold"):
        job["hold"] = True
    nice = opts.get("nice")
    if nice is not None:
        text = str(nice)
        value = DEFAULT_NICE if nice is True else None
        if value is None:
            sign = -1 if text.startswith("-") else 1
            value = sign * number("--nice", text.lstrip("+-"), 0, 10_000)
        job["nice"] = value
    if opts.get("signal"):
        job["warn_signal"], job["warn_before_s"] = signal_option(str(opts["signal"]))
