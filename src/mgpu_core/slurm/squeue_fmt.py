"""squeue's output: ``-o`` %-formats, ``-O`` field names, its default, ``-l`` and ``--start``
formats, the header line, and ``-S`` sorting (src/squeue/opts.c, print.c, sort.c, squeue.c).

A parsed format is a list of specs ``(key, width, right, suffix)``: ``key`` names a field
(a %-letter, or a -O name without a letter), ``""`` a run of literal text; ``suffix`` is
the literal text printed after the field (``"%.18i %.9P"`` puts a space after the job id).
"""

from __future__ import annotations

from mgpu_core.slurm import jobfields as jf
from mgpu_core.slurm import timefmt as tf
from mgpu_core.slurm.common import (
    JOB_STATE_COMPACT,
    NULL,
    gid_of,
    group_name,
    host_key,
    integer,
    job_state,
    job_tres,
    number,
    or_null,
    pad,
    parse_name_format,
    parse_percent_format,
    text,
    tres_per_node,
    uid_of,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

    from mgpu_core.slurm.common import Row, Spec

    Getter = Callable[[Row, float], str]

# squeue.c: with no -o/-O it builds these -O formats, which print the same as these -o ones.
DEFAULT_FORMAT = "%.18i %.9P %.8j %.8u %.2t %.10M %.6D %R"
LONG_FORMAT = "%.18i %.9P %.8j %.8u %.8T %.10M %.9l %.6D %R"
START_FORMAT = "%.18i %.9P %.8j %.8u %.2t %.19S %.6D %20Y %R"  # opts.c, --start
DEFAULT_SORT = "P,t,-p"  # sort.c: partition, state, priority (descending)
START_SORT = "S"


def _uid(job: Row, now: float) -> str:
    uid = uid_of(text(job, "user"))
    return NULL if uid is None else str(uid)


def _gid(job: Row, now: float) -> str:
    gid = gid_of(text(job, "user"))
    return NULL if gid is None else str(gid)


def _end(job: Row, now: float) -> str:
    end = jf.end_time(job)
    return "NONE" if end is None else tf.timestamp_or_na(end)


def _time_limit(job: Row, now: float) -> str:
    limit_s = number(job, "time_limit_s")
    return tf.clock(limit_s) if limit_s else "UNLIMITED"


def _time_left(job: Row, now: float) -> str:
    limit_s = number(job, "time_limit_s")
    if not limit_s:
        return "UNLIMITED"
    return tf.clock(limit_s - jf.time_used(job, now))


def _pending_time(job: Row, now: float) -> str:
    start, submit = number(job, "start_time"), number(job, "submit_time")
    return str(int((start if 0 < start < now else now) - submit))


def _field(name: str) -> Getter:
    return lambda job, now: or_null(text(job, name))


def _same(value: str) -> Getter:
    return lambda job, now: value


# key -> (header, getter). The headers are print.c's; keys are squeue's %-letters, or for
# fields that only -O names, the lowered name.
FIELDS: dict[str, tuple[str, Getter]] = {
    "a": ("ACCOUNT", _field("account")),
    "A": ("JOBID", lambda j, now: text(j, "job_id")),
    "b": ("TRES_PER_NODE", lambda j, now: tres_per_node(j) or "N/A"),
    "B": ("EXEC_HOST", lambda j, now: jf.batch_host(j)),
    "c": ("MIN_CPUS", lambda j, now: tf.convert_num_unit(integer(j, "cpus"))),
    "C": ("CPUS", lambda j, now: str(integer(j, "cpus"))),
    "d": ("MIN_TMP_DISK", _same("0")),
    "D": ("NODES", _same("1")),
    "e": ("END_TIME", _end),
    "E": ("DEPENDENCY", _field("dependency")),
    "f": ("FEATURES", _same(NULL)),
    "F": ("ARRAY_JOB_ID", lambda j, now: jf.array_job_id(j)),
    "g": ("GROUP", lambda j, now: or_null(group_name(gid_of(text(j, "user"))))),
    "G": ("GROUP", _gid),
    "h": ("OVER_SUBSCRIBE", lambda j, now: "NO" if j.get("exclusive") else "OK"),
    "H": ("SOCKETS_PER_NODE", _same("*")),
    "i": ("JOBID", lambda j, now: jf.job_id(j)),
    "I": ("CORES_PER_SOCKET", _same("*")),
    "j": ("NAME", _field("name")),
    "J": ("THREADS_PER_CORE", _same("*")),
    "k": ("COMMENT", _same(NULL)),
    "K": ("ARRAY_TASK_ID", lambda j, now: text(j, "array_task_id") or "N/A"),
    "l": ("TIME_LIMIT", _time_limit),
    "L": ("TIME_LEFT", _time_left),
    "m": ("MIN_MEMORY", lambda j, now: tf.memory(integer(j, "mem_bytes"))),
    "M": ("TIME", lambda j, now: tf.clock(jf.time_used(j, now))),
    "n": ("REQ_NODES", _same("")),
    "N": ("NODELIST", lambda j, now: text(j, "node")),
    "o": ("COMMAND", _field("command")),
    "O": ("CONTIGUOUS", _same("0")),
    "p": ("PRIORITY", lambda j, now: f"{jf.priority(j) / 0xFFFFFFFF:16.14f}"),
    "P": ("PARTITION", _field("partition")),
    "q": ("QOS", _field("qos")),
    "Q": ("PRIORITY", lambda j, now: str(jf.priority(j))),
    "r": ("REASON", lambda j, now: jf.reason(j)),
    "R": ("NODELIST(REASON)", lambda j, now: jf.reason_list(j)[0]),
    "S": ("START_TIME", lambda j, now: tf.timestamp_or_na(jf.start_time(j))),
    "t": ("ST", lambda j, now: JOB_STATE_COMPACT.get(job_state(j), "?")),
    "T": ("STATE", lambda j, now: job_state(j) or "?"),
    "u": ("USER", _field("user")),
    "U": ("UID", _uid),
    "v": ("RESERVATION", _same(NULL)),
    "V": ("SUBMIT_TIME", lambda j, now: tf.timestamp_or_na(number(j, "submit_time"))),
    "w": ("WCKEY", _same(NULL)),
    "W": ("LICENSES", _same(NULL)),
    "x": ("EXC_NODES", _same("")),
    "X": ("CORE_SPEC", _same("N/A")),
    "y": ("NICE", lambda j, now: str(integer(j, "nice"))),
    "Y": ("SCHEDNODES", _same(NULL)),
    "z": ("S:C:T", _same("*:*:*")),
    "Z": ("WORK_DIR", _field("cwd")),
    # -O names without a letter
    "accruetime": ("ACCRUE_TIME", lambda j, now: tf.timestamp_or_na(number(j, "eligible_time"))),
    "batchflag": ("BATCH_FLAG", lambda j, now: "0" if j.get("interactive") else "1"),
    "cpus-per-task": ("CPUS_PER_TASK", lambda j, now: str(jf.cpus_per_task(j))),
    "derivedec": ("DERIVED_EC", _same("0:0")),
    "eligibletime": (
        "ELIGIBLE_TIME",
        lambda j, now: tf.timestamp_or_na(number(j, "eligible_time")),
    ),
    "exit_code": ("EXIT_CODE", lambda j, now: tf.exit_code(j.get("exit_code"), j.get("signal"))),
    "maxcpus": ("MAX_CPUS", lambda j, now: str(integer(j, "cpus"))),
    "maxnodes": ("MAX_NODES", _same("1")),
    "numtasks": ("TASKS", lambda j, now: str(integer(j, "ntasks") or 1)),
    "pendingtime": ("PENDING_TIME", _pending_time),
    "reboot": ("REBOOT", _same("0")),
    "requeue": ("REQUEUE", _same("1")),
    "restartcnt": ("RESTART_COUNT", lambda j, now: str(integer(j, "restart_count"))),
    "stderr": ("STDERR", _field("stderr_path")),
    "stdin": ("STDIN", lambda j, now: NULL if j.get("interactive") else "/dev/null"),
    "stdout": ("STDOUT", lambda j, now: or_null(jf.stdout_path(j))),
    "tres-alloc": ("TRES_ALLOC", lambda j, now: ",".join(job_tres(j))),
    "tres-per-job": ("TRES_PER_JOB", _same("N/A")),
}
# Fields print.c prints without cutting them to their column: times and node lists.
_UNCUT = frozenset("MlLNnx")

# opts.c fmt_data_job: -O names (matched case-insensitively) -> field key.
NAMES: dict[str, str] = {
    "account": "a", "arrayjobid": "F", "arraytaskid": "K", "batchhost": "B",
    "command": "o", "comment": "k", "contiguous": "O", "cores": "I", "corespec": "X",
    "cpuspertask": "cpus-per-task", "dependency": "E", "endtime": "e", "excnodes": "x",
    "feature": "f", "gres": "b", "groupid": "G", "groupname": "g", "jobarrayid": "i",
    "jobid": "A", "licenses": "W", "mincpus": "c", "minmemory": "m", "mintmpdisk": "d",
    "name": "j", "nice": "y", "nodelist": "N", "numcpus": "C", "numnodes": "D",
    "oversubscribe": "h", "partition": "P", "priority": "p", "prioritylong": "Q", "qos": "q",
    "reason": "r", "reasonlist": "R", "reqnodes": "n", "reservation": "v",
    "schednodes": "Y", "sct": "z", "shared": "h", "sockets": "H", "starttime": "S",
    "state": "T", "statecompact": "t", "submittime": "V", "threads": "J", "timeleft": "L",
    "timelimit": "l", "timeused": "M", "tres": "tres-alloc", "tres-per-node": "b",
    "userid": "U", "username": "u", "wckey": "w", "workdir": "Z",
}  # fmt: skip
NAMES.update((key, key) for key in FIELDS if len(key) > 1)
_LETTERS = frozenset(key for key in FIELDS if len(key) == 1)


def parse_format(fmt: str) -> list[Spec]:
    """Parse an ``-o`` format (``%.18i %.9P ...``; see ``common.parse_percent_format``).
    Raises ValueError for an unknown letter."""
    return parse_percent_format(fmt, _LETTERS, "job")


def parse_format_long(fmt: str) -> list[Spec]:
    """Parse an ``-O`` format (``JobID,Name:30,State:.10``; see
    ``common.parse_name_format``). Raises ValueError for an unknown name."""
    return parse_name_format(fmt, NAMES, "job")


def header_line(specs: Sequence[Spec]) -> str:
    """The header: each field's name in its column."""
    parts = []
    for key, width, right, suffix in specs:
        if key:
            header = FIELDS[key][0]
            parts.append(pad(header, width, right, key not in ("R", "N", "Y")))
        parts.append(suffix)
    return "".join(parts)


def job_line(job: Row, specs: Sequence[Spec], now: float) -> str:
    """One job's line."""
    parts = []
    for key, width, right, suffix in specs:
        if key == "R":
            value, cut = jf.reason_list(job)
            parts.append(pad(value, width, right, cut))
        elif key:
            parts.append(pad(FIELDS[key][1](job, now), width, right, key not in _UNCUT))
        parts.append(suffix)
    return "".join(parts)


def format_jobs(
    jobs: Sequence[Row], specs: Sequence[Spec], *, now: float, header: bool = True
) -> list[str]:
    """squeue's lines for some jobs, in the order given (sort them with
    :func:`sort_jobs`): the header (unless ``header=False``, squeue's ``-h``), then one
    line per job. Lines keep Slurm's trailing spaces."""
    lines = [header_line(specs)] if header else []
    lines.extend(job_line(job, specs, now) for job in jobs)
    return lines


# ---------------------------------------------------------------- sorting


def _start_order(job: Row, now: float, sign: int = -1) -> tuple[bool, float]:
    """sort.c's order by start time (``jf.start_time``; a pending job's past start counts as
    now), jobs that never start last whichever the direction: latest first (``sign`` -1, its
    first order) or earliest first (1). The state is read once: the master sorts every
    pending job for a listing."""
    if job_state(job) == "PENDING":
        start = number(job, "expected_start")
        return start == 0, sign * (now if start < now else start)
    start = jf.start_time(job)
    return start == 0, sign * start


def _end_key(job: Row) -> float:
    end = jf.end_time(job)
    return float("inf") if end is None else end


def _id_key(job: Row, now: float) -> tuple[int, int]:
    task = job.get("array_task_id")
    if task is None:
        return integer(job, "job_id"), 0xFFFFFFFE  # NO_VAL: after the tasks of that id
    return int(job.get("array_job_id") or integer(job, "job_id")), int(task)


_SORT_KEYS: dict[str, Callable[[Row, float, Mapping[str, int]], Any]] = {
    "B": lambda j, now, tiers: jf.batch_host(j),
    "C": lambda j, now, tiers: integer(j, "cpus"),
    "e": lambda j, now, tiers: _end_key(j),
    "g": lambda j, now, tiers: group_name(gid_of(text(j, "user"))),
    "G": lambda j, now, tiers: gid_of(text(j, "user")) or 0,
    "i": lambda j, now, tiers: _id_key(j, now),
    "j": lambda j, now, tiers: text(j, "name"),
    "l": lambda j, now, tiers: number(j, "time_limit_s") or float("inf"),
    "L": lambda j, now, tiers: (number(j, "time_limit_s") or float("inf")) - jf.time_used(j, now),
    "m": lambda j, now, tiers: integer(j, "mem_bytes"),
    "M": lambda j, now, tiers: jf.time_used(j, now),
    "N": lambda j, now, tiers: host_key(text(j, "node")),
    "p": lambda j, now, tiers: (tiers.get(text(j, "partition"), 1), jf.priority(j)),
    "P": lambda j, now, tiers: text(j, "partition"),
    "t": lambda j, now, tiers: JOB_STATE_COMPACT.get(job_state(j), "?"),
    "T": lambda j, now, tiers: job_state(j),
    "u": lambda j, now, tiers: text(j, "user"),
    "U": lambda j, now, tiers: uid_of(text(j, "user")) or 0,
    "V": lambda j, now, tiers: number(j, "submit_time"),
}
_SORT_KEYS["Q"] = _SORT_KEYS["p"]
# Letters squeue accepts but does not sort by (or that are equal for every mgpu job).
_NO_SORT = frozenset("bcdDfhHIJnOvz")


def sort_jobs(
    jobs: Sequence[Row],
    sort: str | None = None,
    *,
    now: float,
    tiers: Mapping[str, int] | None = None,
) -> list[Row]:
    """Jobs in squeue's order for a ``-S`` spec (default ``P,t,-p``; ``S`` with
    ``--start``).

    Like sort.c: first by start time, latest first with unstarted jobs last; then one
    stable sort per key from the last key to the first, a ``-`` before a letter reversing
    it. ``p``/``Q`` sort by the partition's priority tier (``tiers``, default 1), then the
    job's priority. Raises ValueError for a letter squeue rejects.
    """
    part_tiers = tiers or {}
    ordered = sorted(jobs, key=lambda j: _start_order(j, now))
    spec = DEFAULT_SORT if sort is None else sort
    for i in range(len(spec) - 1, -1, -1):
        letter = spec[i]
        if letter in ",+-":
            continue
        reverse = i > 0 and spec[i - 1] == "-"
        if letter == "S":
            # sort.c: a job that never starts sorts last whichever the direction.
            sign = -1 if reverse else 1
            ordered.sort(key=lambda j: _start_order(j, now, sign))
        elif letter in _SORT_KEYS:
            get = _SORT_KEYS[letter]
            ordered.sort(key=lambda job: get(job, now, part_tiers), reverse=reverse)
        elif letter not in _NO_SORT:
            raise ValueError(f"Invalid sort specification: {letter}")
    return ordered
