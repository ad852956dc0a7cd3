"""sacct's output: its field table with default widths, ``--format``/``-o`` parsing with
``Field%N`` widths, the default, ``-b`` and ``-l`` field sets, the header and dashes lines,
``-p``/``-P`` parsable output, and one line per job then per step (src/sacct/sacct.c,
sacct.h, options.c, print.c; src/common/print_fields.c).

A parsed field list is a list of ``(name, width)``: the field's name as sacct spells it and
its width, negative for a left-justified column (JobID's default ``-12``).
"""

from __future__ import annotations

from mgpu_core.slurm import jobfields as jf
from mgpu_core.slurm import timefmt as tf
from mgpu_core.slurm.common import (
    checked_width,
    gid_of,
    group_name,
    has_started,
    integer,
    job_state,
    job_tres,
    number,
    sorted_tres,
    text,
    uid_of,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from mgpu_core.slurm.common import Row

    # (job row, step row or None for the job's own line, now) -> text, None for "unset"
    Getter = Callable[[Row, Row | None, float], str | None]

DEFAULT_FIELDS = "jobid,jobname,partition,account,alloccpus,state,exitcode"  # sacct.h
BRIEF_FIELDS = "jobid,state,exitcode"
LONG_FIELDS = (
    "jobid,jobidraw,jobname,partition,maxvmsize,maxvmsizenode,maxvmsizetask,avevmsize,"
    "maxrss,maxrssnode,maxrsstask,averss,maxpages,maxpagesnode,maxpagestask,avepages,"
    "mincpu,mincpunode,mincputask,avecpu,ntasks,alloccpus,elapsed,state,exitcode,"
    "avecpufreq,reqcpufreqmin,reqcpufreqmax,reqcpufreqgov,reqmem,consumedenergy,"
    "maxdiskread,maxdiskreadnode,maxdiskreadtask,avediskread,maxdiskwrite,"
    "maxdiskwritenode,maxdiskwritetask,avediskwrite,reqtres,alloctres,tresusageinave,"
    "tresusageinmax,tresusageinmaxn,tresusageinmaxt,tresusageinmin,tresusageinminn,"
    "tresusageinmint,tresusageintot,tresusageoutmax,tresusageoutmaxn,tresusageoutmaxt,"
    "tresusageoutave,tresusageouttot"
)

# sacct.c fields[]: name and default width, in the table's order (a --format name is matched
# as a case-insensitive prefix of the first name in this order that starts with it).
# The print kind: "s" a string cut with "+", "d" a date cut without one, "n" a number or a
# time, never cut.
_TABLE = (
    "Account 10 s,AdminComment 15 s,AllocCPUS 10 n,AllocNodes 10 s,AllocTRES 10 s,"
    "AssocID 7 n,AveCPU 10 s,AveCPUFreq 10 s,AveDiskRead 14 s,AveDiskWrite 14 s,"
    "AvePages 10 s,AveRSS 10 s,AveVMSize 10 s,BlockID 16 s,Cluster 10 s,Comment 14 s,"
    "Constraints 19 s,ConsumedEnergy 14 s,ConsumedEnergyRaw 17 n,Container 19 s,"
    "CPUTime 10 n,CPUTimeRAW 10 n,DBIndex -10 n,DerivedExitCode 15 s,Elapsed 10 n,"
    "ElapsedRaw 10 n,Eligible 19 d,End 19 d,ExitCode 8 s,Extra 14 s,FailedNode 8 s,"
    "Flags 19 s,GID 6 n,Group 9 s,JobID -12 s,JobIDRaw -12 s,JobName 10 s,Layout 9 s,"
    "Licenses 10 s,MaxDiskRead 12 s,MaxDiskReadNode 15 s,MaxDiskReadTask 15 n,"
    "MaxDiskWrite 12 s,MaxDiskWriteNode 16 s,MaxDiskWriteTask 16 n,MaxPages 8 s,"
    "MaxPagesNode 12 s,MaxPagesTask 14 n,MaxRSS 10 s,MaxRSSNode 10 s,MaxRSSTask 10 n,"
    "MaxVMSize 10 s,MaxVMSizeNode 14 s,MaxVMSizeTask 14 n,McsLabel 12 s,MinCPU 10 s,"
    "MinCPUNode 10 s,MinCPUTask 10 n,NCPUS 10 n,NNodes 8 n,NodeList 15 s,NTasks 8 n,"
    "Partition 10 s,Planned 10 n,PlannedCPU 10 n,PlannedCPURAW 13 n,Priority 10 n,"
    "QOS 10 s,QOSRAW 6 n,Reason 22 s,ReqCPUFreq 10 s,ReqCPUFreqGov 13 s,"
    "ReqCPUFreqMax 13 s,ReqCPUFreqMin 13 s,ReqCPUS 8 n,ReqMem 10 s,ReqNodes 8 s,"
    "ReqTRES 10 s,Reservation 20 s,ReservationId 8 n,Start 19 d,State 10 s,StdErr 20 s,"
    "StdIn 20 s,StdOut 20 s,Submit 19 d,SubmitLine 20 s,Suspended 10 n,"
    "SystemComment 15 s,SystemCPU 10 s,Timelimit 10 s,TimelimitRaw 10 s,TotalCPU 10 s,"
    "TRESUsageInAve 14 s,TRESUsageInMax 14 s,TRESUsageInMaxNode 18 s,"
    "TRESUsageInMaxTask 18 s,TRESUsageInMin 14 s,TRESUsageInMinNode 18 s,"
    "TRESUsageInMinTask 18 s,TRESUsageInTot 14 s,TRESUsageOutAve 15 s,"
    "TRESUsageOutMax 15 s,TRESUsageOutMaxNode 19 s,TRESUsageOutMaxTask 19 s,"
    "TRESUsageOutMin 15 s,TRESUsageOutMinNode 19 s,TRESUsageOutMinTask 19 s,"
    "TRESUsageOutTot 15 s,UID 6 n,User 9 s,UserCPU 10 s,WCKey 10 s,WCKeyID 10 n,"
    "WorkDir 20 s"
)
FIELDS: dict[str, tuple[int, str]] = {
    name: (int(width), kind) for name, width, kind in (f.split() for f in _TABLE.split(","))
}


def parse_fields(spec: str) -> list[tuple[str, int]]:
    """Parse a ``--format`` list (options.c): comma-separated names, each a
    case-insensitive prefix of a field name (the first in sacct's table order wins:
    ``jobid`` is JobID, ``node`` NodeList), optionally ``%N`` to set the width (negative:
    left-justified). ``ALL`` means every field. Raises ValueError for an unknown name, with
    sacct's message."""
    fields: list[tuple[str, int]] = []
    for raw in spec.split(","):
        item = raw.lstrip()
        if not item:
            continue
        name, percent, size = item.partition("%")
        width = _atoi(size) if percent else None
        if "all".startswith(name.lower()):
            fields.extend((n, w if width is None else width) for n, (w, _) in FIELDS.items())
            continue
        lowered = name.lower()
        match = next((n for n in FIELDS if n.lower().startswith(lowered)), None)
        if match is None:
            raise ValueError(f'Invalid field requested: "{name}"')
        fields.append((match, FIELDS[match][0] if width is None else width))
    return fields


def _atoi(text_: str) -> int:
    """C's atoi: an optional sign and leading digits, 0 if none."""
    i = 1 if text_[:1] in ("-", "+") else 0
    while i < len(text_) and text_[i].isdigit():
        i += 1
    return checked_width(text_[:i], "sacct")


# ---------------------------------------------------------------- steps


def batch_step(job: Row) -> Row:
    """The ``ID.batch`` step sacct shows for a batch job once it started, from the job row.

    Slurm's batch step ends with the script: cancelled (TIMEOUT and requeue kill it) or
    whatever the script did; while the job is completing its processes still run.
    """
    state = job_state(job)
    step_state = {"TIMEOUT": "CANCELLED", "REQUEUED": "CANCELLED", "COMPLETING": "RUNNING"}
    return {
        "step_id": "batch",
        "name": "batch",
        "ntasks": 1,
        "state": step_state.get(state, state),
        "start_time": job.get("start_time"),
        "end_time": job.get("end_time"),
        "exit_code": job.get("exit_code"),
        "signal": job.get("signal"),
    }


def job_steps(job: Row) -> list[Row]:
    """The step lines of a job, in sacct's order: ``batch`` first (batch jobs that started),
    then the row's own steps."""
    steps = [batch_step(job)] if has_started(job) and not job.get("interactive") else []
    steps.extend(job.get("steps") or ())
    return steps


# ---------------------------------------------------------------- field values


def _elapsed(job: Row, step: Row | None, now: float) -> int:
    row = step if step is not None else job
    start = number(row, "start_time")
    if not start or (step is None and not has_started(job)):
        return 0
    end = number(row, "end_time") or now
    return max(0, int(end) - int(start))


def _start(job: Row) -> float:
    """A job's Start: unknown while pending (the database has no estimate); the cancel time
    for a job cancelled while pending, as slurmctld records it."""
    return 0.0 if job_state(job) == "PENDING" else jf.start_time(job)


def _cpus(job: Row, step: Row | None) -> int:
    """AllocCPUS: a job's CPUs once allocated (0 while pending, as in sacct)."""
    return integer(job, "cpus") if step is not None or has_started(job) else 0


def _state(job: Row, step: Row | None, uid_of_: Callable[[str], int | None]) -> str:
    if step is not None:
        return text(step, "state").upper()
    state = job_state(job)
    by = text(job, "cancelled_by")
    uid = uid_of_(by) if state == "CANCELLED" and by else None
    return state if uid is None else f"{state} by {uid}"  # print.c PRINT_STATE


def _job_id(job: Row, step: Row | None, raw: bool) -> str:
    task = job.get("array_task_id")
    if raw or task is None:
        base = text(job, "job_id")
    else:
        base = f"{job.get('array_job_id') or text(job, 'job_id')}_{task}"
    return base if step is None else f"{base}.{text(step, 'step_id')}"


def _derived_exit_code(job: Row) -> str:
    """The highest exit code of the job's own steps (srun), ``0:0`` without any."""
    worst = max(
        (s for s in job.get("steps") or ()),
        key=lambda s: (integer(s, "exit_code"), integer(s, "signal")),
        default=None,
    )
    if worst is None:
        return "0:0"
    return f"{integer(worst, 'exit_code')}:{integer(worst, 'signal')}"


def _job_only(get: Callable[[Row, float], str | None]) -> Getter:
    return lambda job, step, now: get(job, now) if step is None else None


def _text_field(key: str) -> Getter:
    return _job_only(lambda job, now: text(job, key) or None)


def _number_or_none(value: int | None) -> str | None:
    return None if value is None else str(value)


def _step_tres(job: Row) -> list[str]:
    return job_tres(job, billing=False)


GETTERS: dict[str, Getter] = {
    "Account": lambda j, s, now: text(j, "account") or None,
    "AllocCPUS": lambda j, s, now: str(_cpus(j, s)),
    "AllocNodes": lambda j, s, now: "1" if s is not None or has_started(j) else "0",
    "AllocTRES": lambda j, s, now: (
        sorted_tres(job_tres(j) if s is None else _step_tres(j))
        if s is not None or has_started(j)
        else None
    ),
    "CPUTime": lambda j, s, now: tf.duration(_elapsed(j, s, now) * _cpus(j, s)),
    "CPUTimeRAW": lambda j, s, now: str(_elapsed(j, s, now) * _cpus(j, s)),
    "DerivedExitCode": _job_only(lambda j, now: _derived_exit_code(j)),
    "Elapsed": lambda j, s, now: tf.duration(_elapsed(j, s, now)),
    "ElapsedRaw": lambda j, s, now: str(_elapsed(j, s, now)),
    "Eligible": lambda j, s, now: tf.timestamp(
        number(j, "eligible_time") if s is None else number(s, "start_time")
    ),
    "End": lambda j, s, now: tf.timestamp(number(j if s is None else s, "end_time")),
    "ExitCode": lambda j, s, now: tf.exit_code(
        (j if s is None else s).get("exit_code"), (j if s is None else s).get("signal"), sacct=True
    ),
    "GID": _job_only(lambda j, now: _number_or_none(gid_of(text(j, "user")))),
    "Group": _job_only(lambda j, now: group_name(gid_of(text(j, "user"))) or None),
    "JobID": lambda j, s, now: _job_id(j, s, raw=False),
    "JobIDRaw": lambda j, s, now: _job_id(j, s, raw=True),
    "JobName": lambda j, s, now: text(j if s is None else s, "name") or None,
    "NCPUS": lambda j, s, now: str(_cpus(j, s)),
    "NNodes": lambda j, s, now: "1",
    "NodeList": lambda j, s, now: text(j, "node") if has_started(j) else "None assigned",
    "NTasks": lambda j, s, now: None if s is None else str(integer(s, "ntasks") or 1),
    "Partition": _text_field("partition"),
    "Priority": _job_only(lambda j, now: str(int(number(j, "priority")))),
    "QOS": _text_field("qos"),
    "Reason": _job_only(lambda j, now: text(j, "reason") or "None"),
    "ReqCPUS": lambda j, s, now: str(integer(j, "cpus")),
    "ReqMem": _job_only(lambda j, now: tf.memory(integer(j, "mem_bytes"))),
    "ReqNodes": lambda j, s, now: "1",
    "ReqTRES": _job_only(lambda j, now: sorted_tres(job_tres(j))),
    "Start": lambda j, s, now: tf.timestamp(_start(j) if s is None else number(s, "start_time")),
    "StdErr": _text_field("stderr_path"),
    "StdOut": _text_field("stdout_path"),
    "Submit": lambda j, s, now: tf.timestamp(
        number(j, "submit_time") if s is None else number(s, "start_time")
    ),
    "Suspended": lambda j, s, now: "00:00:00",
    "SystemCPU": lambda j, s, now: "00:00:00",
    "Timelimit": _job_only(lambda j, now: tf.limit(number(j, "time_limit_s"))),
    "TimelimitRaw": _job_only(lambda j, now: tf.limit_minutes(number(j, "time_limit_s"))),
    "TotalCPU": lambda j, s, now: "00:00:00",
    "UID": _job_only(lambda j, now: _number_or_none(uid_of(text(j, "user")))),
    "User": _text_field("user"),
    "UserCPU": lambda j, s, now: "00:00:00",
    "WorkDir": _text_field("cwd"),
}


# ---------------------------------------------------------------- lines


def _cell(value: str | None, width: int, kind: str) -> str:
    """print_fields.c: one value in its column, followed by a space. Positive widths
    right-justify; a string longer than its column ends in ``+``, a date is cut, numbers
    and times overflow."""
    size = abs(width)
    if value is None:
        value = ""
    elif kind == "s" and len(value) > size:
        value = value[: size - 1] + "+" if size else ""
    elif kind == "d":
        value = value[:size]
    return (value.rjust(size) if width >= 0 else value.ljust(size)) + " "


def header_lines(
    fields: Sequence[tuple[str, int]], *, parsable: int = 0, delimiter: str = "|"
) -> list[str]:
    """print_fields_header: the names line and, unless parsable, the dashes line.

    ``parsable`` is 0 for columns, 1 for ``-p`` (every field followed by the delimiter) and
    2 for ``-P`` (no delimiter after the last)."""
    names = [name for name, _ in fields]
    if parsable:
        return [_join(names, parsable, delimiter)]
    line = "".join(
        (name[: abs(w)].rjust(abs(w)) if w >= 0 else name[: abs(w)].ljust(abs(w))) + " "
        for name, w in fields
    )
    return [line, "".join("-" * abs(w) + " " for _, w in fields)]


def _join(values: list[str], parsable: int, delimiter: str) -> str:
    line = delimiter.join(values)
    return line + delimiter if parsable == 1 else line


def record_line(
    job: Row,
    step: Row | None,
    fields: Sequence[tuple[str, int]],
    *,
    now: float,
    parsable: int = 0,
    delimiter: str = "|",
    uid_of_: Callable[[str], int | None] = uid_of,
) -> str:
    """One line: the job's own (``step=None``) or one of its steps'."""
    values: list[str | None] = []
    for name, _ in fields:
        if name == "State":
            values.append(_state(job, step, uid_of_))
        else:
            get = GETTERS.get(name)
            values.append(None if get is None else get(job, step, now))
    if parsable:
        return _join(["" if v is None else v for v in values], parsable, delimiter)
    return "".join(
        _cell(value, width, FIELDS[name][1])
        for value, (name, width) in zip(values, fields, strict=True)
    )


def format_jobs(
    jobs: Sequence[Row],
    fields: Sequence[tuple[str, int]],
    *,
    now: float,
    header: bool = True,
    steps: bool = True,
    parsable: int = 0,
    delimiter: str = "|",
    uid_of_: Callable[[str], int | None] = uid_of,
) -> list[str]:
    """sacct's lines: the header (unless ``header=False``, sacct's ``-n``), then for each
    job its line and, unless ``steps=False`` (``-X``), its steps' lines (:func:`job_steps`).

    A cancelled job's State reads ``CANCELLED by UID``, the uid of its ``cancelled_by``
    user from ``uid_of_`` (the local passwd database by default; an unknown user gives
    plain ``CANCELLED``). Column lines end with a space, as sacct's do.
    """
    lines = header_lines(fields, parsable=parsable, delimiter=delimiter) if header else []
    for job in jobs:
        rows = [None, *job_steps(job)] if steps else [None]
        for step in rows:
            lines.append(
                record_line(
                    job,
                    step,
                    fields,
                    now=now,
                    parsable=parsable,
                    delimiter=delimiter,
                    uid_of_=uid_of_,
                )
            )
    return lines
