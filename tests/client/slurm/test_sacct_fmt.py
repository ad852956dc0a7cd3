"""sacct's lines (mgpu_core.slurm.sacct_fmt).

Field names and default widths are src/sacct/sacct.c's ``fields[]``; the default, brief and
long field lists src/sacct/sacct.h; the column rules src/common/print_fields.c (each value
followed by one space; a positive width right-justifies, a negative one left-justifies; a
string longer than its column ends in "+"; the header names cut to the width and a line of
dashes under them; ``-p`` ends every field with "|", ``-P`` all but the last). Steps print
as ``ID.batch`` and ``ID.N`` (print.c PRINT_JOBID), a cancelled job's State as
``CANCELLED by UID`` (PRINT_STATE).
"""

from __future__ import annotations

from typing import Any

import pytest

from mgpu_core.slurm import sacct_fmt as sa

T0 = 1_700_000_000  # 2023-11-14T22:13:20 UTC
NOW = T0 + 300
UIDS = {"alice": 1000, "root": 0}


def job(**fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "job_id": 12345, "array_job_id": None, "array_task_id": None, "name": "train",
        "user": "alice", "state": "COMPLETED", "reason": "", "node": "node1",
        "partition": "gpu", "account": "proj", "cpus": 4, "ntasks": 1, "gpus": 0,
        "mem_bytes": 16 << 30, "time_limit_s": 3600, "submit_time": T0 - 10,
        "eligible_time": T0 - 10, "start_time": T0, "end_time": T0 + 90, "exit_code": 0,
        "signal": None, "interactive": False, "priority": 4294.0, "qos": "normal",
        "cwd": "/home/alice", "steps": [],
    }  # fmt: skip
    row.update(fields)
    return row


def lines(jobs: list[dict[str, Any]], spec: str = sa.DEFAULT_FIELDS, **kw: Any) -> list[str]:
    return sa.format_jobs(jobs, sa.parse_fields(spec), now=NOW, uid_of_=UIDS.get, **kw)


def test_default_fields_with_batch_step() -> None:
    assert lines([job()]) == [
        "JobID           JobName  Partition    Account  AllocCPUS      State ExitCode ",
        "------------ ---------- ---------- ---------- ---------- ---------- -------- ",
        "12345             train        gpu       proj          4  COMPLETED      0:0 ",
        "12345.batch       batch                  proj          4  COMPLETED      0:0 ",
    ]


def test_cancelled_job_state_names_the_uid_and_is_cut_with_a_plus() -> None:
    cancelled = job(state="CANCELLED", cancelled_by="alice", exit_code=None, signal=15)
    assert lines([cancelled], "jobid,state,exitcode") == [
        "JobID             State ExitCode ",
        "------------ ---------- -------- ",
        "12345        CANCELLED+     0:15 ",
        "12345.batch   CANCELLED     0:15 ",
    ]
    assert lines([cancelled], "jobid,state%20", header=False, steps=False) == [
        "12345           CANCELLED by 1000 "
    ]
    unknown = job(state="CANCELLED", cancelled_by="nobody-known")
    assert lines([unknown], "state", header=False, steps=False) == [" CANCELLED "]


def test_steps_of_an_interactive_job_and_pending_jobs() -> None:
    srun = job(
        job_id=200, interactive=True, name="python", state="RUNNING", end_time=0,
        steps=[{"step_id": 0, "name": "python", "ntasks": 2, "state": "RUNNING",
                "start_time": T0 + 1, "end_time": 0, "exit_code": None, "signal": None}],
    )  # fmt: skip
    pending = job(job_id=201, name="later", state="PENDING", start_time=0, end_time=0)
    spec = "jobid,jobname,state,alloccpus,ntasks,elapsed,start,end,nodelist"
    assert lines([srun, pending], spec) == [
        "JobID           JobName      State  AllocCPUS   NTasks    Elapsed"
        "               Start                 End        NodeList ",
        "------------ ---------- ---------- ---------- -------- ---------- ------------------- "
        "------------------- --------------- ",
        "200              python    RUNNING          4            00:05:00 2023-11-14T22:13:20"
        "             Unknown           node1 ",
        "200.0            python    RUNNING          4        2   00:04:59 2023-11-14T22:13:21"
        "             Unknown           node1 ",
        "201               later    PENDING          0            00:00:00             Unknown"
        "             Unknown   None assigned ",
    ]


def test_job_cancelled_while_pending() -> None:
    # slurmctld's job_signal sets a pending job's start and end to the cancel time; it got
    # no CPUs and no node, and has no batch step.
    cancelled = job(state="CANCELLED", cancelled_by="root", start_time=0, end_time=T0 + 5)
    spec = "jobid,state,alloccpus,start,end,elapsed,nodelist"
    assert lines([cancelled], spec, parsable=2, header=False) == [
        "12345|CANCELLED by 0|0|2023-11-14T22:13:25|2023-11-14T22:13:25|00:00:00|None assigned"
    ]


def test_array_task_ids() -> None:
    task = job(job_id=121, array_job_id=120, array_task_id=3)
    assert lines([task], "jobid,jobidraw", header=False) == [
        "120_3        121          ",
        "120_3.batch  121.batch    ",
    ]


def test_parsable_outputs() -> None:
    failed = job(state="FAILED", exit_code=2, reason="NonZeroExitCode")
    spec = "JobID,State,ExitCode,Reason,MaxRSS"
    assert lines([failed], spec, parsable=1) == [
        "JobID|State|ExitCode|Reason|MaxRSS|",
        "12345|FAILED|2:0|NonZeroExitCode||",
        "12345.batch|FAILED|2:0|||",
    ]
    assert lines([failed], spec, parsable=2, steps=False) == [
        "JobID|State|ExitCode|Reason|MaxRSS",
        "12345|FAILED|2:0|NonZeroExitCode|",
    ]
    assert lines([failed], "jobid,state", parsable=2, delimiter=",", header=False) == [
        "12345,FAILED",
        "12345.batch,FAILED",
    ]


def test_widths_and_truncation() -> None:
    named = job(name="a-rather-long-job-name")
    assert lines([named], "JobName%30,JobName,JobName%-12,JobName%4", steps=False) == [
        "                       JobName    JobName JobName      JobN ",
        "------------------------------ ---------- ------------ ---- ",
        "        a-rather-long-job-name a-rather-+ a-rather-lo+ a-r+ ",
    ]


def test_dates_cut_without_plus_and_numbers_overflow() -> None:
    long_run = job(start_time=T0 - 11 * 86400, end_time=T0)
    assert lines([long_run], "start%10,elapsed%5,elapsedraw%3", header=False, steps=False) == [
        "2023-11-03 11-00:00:00 950400 "
    ]


def test_memory_tres_and_limits() -> None:
    gpu = job(gpus=2, gpu_type="h100", time_limit_s=0)
    spec = "reqmem,alloctres%60,reqtres%60,timelimit,timelimitraw,reqcpus"
    assert lines([gpu], spec, parsable=2) == [
        "ReqMem|AllocTRES|ReqTRES|Timelimit|TimelimitRaw|ReqCPUS",
        "16G|billing=4,cpu=4,gres/gpu:h100=2,gres/gpu=2,mem=16G,node=1|"
        "billing=4,cpu=4,gres/gpu:h100=2,gres/gpu=2,mem=16G,node=1|UNLIMITED|UNLIMITED|4",
        "|cpu=4,gres/gpu:h100=2,gres/gpu=2,mem=16G,node=1||||4",
    ]


def test_field_names_are_prefixes_in_table_order() -> None:
    assert sa.parse_fields("jobid,node,user,state,start,maxrss%20") == [
        ("JobID", -12), ("NodeList", 15), ("User", 9), ("State", 10), ("Start", 19),
        ("MaxRSS", 20),
    ]  # fmt: skip
    assert [n for n, _ in sa.parse_fields(sa.BRIEF_FIELDS)] == ["JobID", "State", "ExitCode"]
    assert len(sa.parse_fields(sa.LONG_FIELDS)) == 54
    assert len(sa.parse_fields("ALL")) == len(sa.FIELDS)
    with pytest.raises(ValueError, match='Invalid field requested: "bogus"'):
        sa.parse_fields("jobid,bogus")


def test_submitit_query() -> None:
    # What submitit runs: sacct -o JobID,State,NodeList --parsable2 -j ID
    failed = job(job_id=7, state="OUT_OF_MEMORY", exit_code=None, signal=9)
    assert lines([failed], "JobID,State,NodeList", parsable=2) == [
        "JobID|State|NodeList",
        "7|OUT_OF_MEMORY|node1",
        "7.batch|OUT_OF_MEMORY|node1",
    ]


def test_timeout_batch_step_is_cancelled() -> None:
    timed_out = job(state="TIMEOUT", signal=15, exit_code=None)
    assert lines([timed_out], "jobid,state", parsable=2, header=False) == [
        "12345|TIMEOUT",
        "12345.batch|CANCELLED",
    ]


def test_derived_exit_code_is_the_worst_step() -> None:
    steps = [
        {"step_id": 0, "state": "COMPLETED", "exit_code": 0},
        {"step_id": 1, "state": "FAILED", "exit_code": 3},
    ]
    assert lines([job(steps=steps)], "jobid,derivedexitcode", parsable=2, header=False) == [
        "12345|3:0",
        "12345.batch|",
        "12345.0|",
        "12345.1|",
    ]


def test_a_field_wider_than_4096_is_refused() -> None:
    import pytest

    from mgpu_core.slurm import sacct_fmt

    assert sacct_fmt.parse_fields("JobID%4096") == [("JobID", 4096)]
    with pytest.raises(ValueError, match="at most 4096"):
        sacct_fmt.parse_fields("JobID%999999999")
