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
MAX_GPUS = 64
MAX_CPUS = 65536
MAX_TASKS = 65536
DEFAULT_NICE = 100  # --nice without a value, as in Slurm
# Time limits, as mgpu_core.limits.MAX_TIME_LIMIT_S (not imported: it pulls in the schema).
MAX_TIME_LIMIT_S = 365 * 86_400
MAX_BYTES = 2**60  # mgpu_core.limits.MAX_BYTES: the most memory a job may ask for
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


def _gpu_count(option: str, text: str) -> tuple[str, int]:
    """``[TYPE:]N`` -> (type, N): -G/--gpus, --gpus-per-node, --gpus-per-task."""
    kind, _, count = str(text).rpartition(":")
    if kind.startswith("gpu:"):
        kind = kind[4:]
    return _gpu_type(option, kind, text), number(option, count, 0, MAX_GPUS)


def _gpu_type(option: str, kind: str, text: object) -> str:
    if not kind:
        return ""
    from mgpu_core.gputypes import valid_type

    kind = kind.lower()
    if not valid_type(kind):
        raise UsageError(f"invalid GPU type '{kind}' in {option} {text}")
    return kind


def _gres(text: str) -> tuple[str, int]:
    """``--gres=gpu:N``, ``gpu:TYPE:N``, ``gpu`` (one), ``none``; other resources refused."""
    kind, total = "", 0
    for item in str(text).split(","):
        parts = item.strip().split(":")
        if parts == ["none"]:
            continue
        if parts[0] != "gpu" or len(parts) > 3:
            raise UsageError(f"unsupported gres '{item}': mgpu schedules GPUs (gpu[:TYPE]:N)")
        if len(parts) == 3 and not parts[2].isdigit():
            raise UsageError(f"invalid GPU count in --gres {item}: gpu:TYPE:N")
        count = parts[-1] if len(parts) > 1 and parts[-1].isdigit() else "1"
        named = parts[1] if len(parts) == 3 or (len(parts) == 2 and not parts[1].isdigit()) else ""
        kind = _gpu_type("--gres", named, text) or kind
        total += number("--gres", count, 0, MAX_GPUS)
    return kind, total


def _size(option: str, text: str) -> int:
    from mgpu_core.units import parse_size

    try:
        return parse_size(str(text))
    except ValueError as exc:
        raise UsageError(f"invalid {option}: {exc}") from None


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


def _tasks(opts: dict[str, Any]) -> int:
    nodes = str(opts.get("nodes") or "1")
    low = nodes.split("-")[0].split(",")[0].split(":")[0]
    if number("-N/--nodes", low, 0, 1 << 20) > 1:
        raise UsageError(
            f"multi-node jobs are not supported (-N {nodes}): an mgpu job runs on one node"
        )
    ntasks = opts.get("ntasks")
    per_node = opts.get("ntasks_per_node")
    tasks = number("-n/--ntasks", ntasks, 1, MAX_TASKS) if ntasks is not None else 0
    if per_node is not None:
        on_node = number("--ntasks-per-node", per_node, 1, MAX_TASKS)
        if tasks > on_node:
            raise UsageError(
                f"{tasks} tasks at {on_node} per node need several nodes: multi-node jobs are "
                "not supported"
            )
        tasks = tasks or on_node
    return tasks or 1


def _gpus(opts: dict[str, Any], ntasks: int) -> tuple[str, int]:
    """(GPU type, GPUs for the whole job) from -G, --gres, --gpus-per-node, --gpus-per-task."""
    asked: list[tuple[str, int]] = []
    if opts.get("gpus") is not None:
        asked.append(_gpu_count("-G/--gpus", opts["gpus"]))
    if opts.get("gpus_per_node") is not None:
        asked.append(_gpu_count("--gpus-per-node", opts["gpus_per_node"]))
    if opts.get("gres") is not None:
        asked.append(_gres(opts["gres"]))
    if opts.get("gpus_per_task") is not None:
        kind, per_task = _gpu_count("--gpus-per-task", opts["gpus_per_task"])
        asked.append((kind, per_task * ntasks))
    types = {kind for kind, _ in asked if kind}
    if len(types) > 1:
        raise UsageError(f"conflicting GPU types: {', '.join(sorted(types))}")
    count = max((n for _, n in asked), default=0)
    if count > MAX_GPUS:
        raise UsageError(f"{count} GPUs is more than a node may have ({MAX_GPUS})")
    return (types.pop() if types else ""), count


def _memory(opts: dict[str, Any], cpus: int, gpus: int) -> int:
    given = [k for k in ("mem", "mem_per_cpu", "mem_per_gpu") if opts.get(k) is not None]
    if len(given) > 1:
        raise UsageError("--mem, --mem-per-cpu and --mem-per-gpu are mutually exclusive")
    if not given:
        return 0
    key = given[0]
    option = "--" + key.replace("_", "-")
    each = _size(option, opts[key])
    if key == "mem_per_cpu":
        each *= cpus
    elif key == "mem_per_gpu":
        each *= max(gpus, 1)
    if each > MAX_BYTES:
        raise UsageError(
            f"invalid {option}: {opts[key]} is more memory than a job may ask for (1 EiB)"
        )
    return each


def build(
    opts: dict[str, Any], *, argv: list[str], script: str | None, interactive: bool
) -> dict[str, Any]:
    """The job's wire form (JobSpec.to_wire()'s keys; the master fills in what is missing)."""
    ntasks = _tasks(opts)
    per_task = opts.get("cpus_per_task")
    cpus = ntasks * (number("-c/--cpus-per-task", per_task, 1, MAX_CPUS) if per_task else 1)
    if opts.get("mincpus") is not None:
        cpus = max(cpus, number("--mincpus", opts["mincpus"], 1, MAX_CPUS))
    gpu_type, gpus = _gpus(opts, ntasks)
    if opts.get("cpus_per_gpu") is not None:
        cpus = max(cpus, gpus * number("--cpus-per-gpu", opts["cpus_per_gpu"], 1, MAX_CPUS))
    if cpus > MAX_CPUS:
        raise UsageError(f"{cpus} CPUs is more than a job may ask for ({MAX_CPUS})")
    try:
        cwd = procenv.abspath(opts.get("chdir") or procenv.getcwd())
    except OSError as exc:
        raise UsageError(f"cannot determine the working directory: {exc.strerror}") from None
    job: dict[str, Any] = {
        "name": opts.get("job_name") or "",
        "argv": argv,
        "script": script,
        "interactive": interactive,
        "gpus": gpus,
        "gpu_type": gpu_type,
        "cpus": cpus,
        "ntasks": ntasks,
        "mem_bytes": _memory(opts, cpus, gpus),
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
