"""squeue's lines (mgpu_core.slurm.squeue_fmt).

Formats come from squeue's man page (squeue.1, "-o": the default and -l formats) and
src/squeue/opts.c (--start); the column rules from src/squeue/print.c ``_print_str``
("%.Ns" right-justified and cut, "%.Ns" left-justified, times and node lists uncut); the
headers from print.c's ``_print_job_*`` functions. The jobs are the man page's EXAMPLES
("squeue --jobs 12345,12346,12348": job1 running on dev nodes, job2 pending on Resources,
job3 on Priority), on one node each as mgpu runs them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from mgpu_core.slurm import squeue_fmt as sq

T0 = 1_700_000_000  # 2023-11-14T22:13:20 UTC
NOW = T0 + 21


def job(**fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "job_id": 12345, "job_ref": "12345", "array_job_id": None, "array_task_id": None,
        "name": "job1", "user": "dave", "state": "RUNNING", "reason": "", "node": "dev9",
        "partition": "debug", "cpus": 1, "ntasks": 1, "gpus": 0, "mem_bytes": 0,
        "time_limit_s": 0, "submit_time": T0 - 60, "start_time": T0, "end_time": 0,
        "eligible_time": T0 - 60, "expected_start": 0, "priority": 100.0,
    }  # fmt: skip
    row.update(fields)
    return row


JOB1 = job()
JOB2 = job(job_id=12346, name="job2", state="PENDING", reason="Resources", node="",
           start_time=0, priority=200.0)  # fmt: skip
JOB3 = job(job_id=12348, name="job3", user="ed", state="PENDING", reason="Priority", node="",
           start_time=0, priority=100.0)  # fmt: skip


def lines(jobs: Sequence[Mapping[str, Any]], fmt: str, **kwargs: Any) -> list[str]:
    return sq.format_jobs(jobs, sq.parse_format(fmt), now=NOW, **kwargs)


def test_default_format() -> None:
    ordered = sq.sort_jobs([JOB1, JOB2, JOB3], now=NOW)
    assert lines(ordered, sq.DEFAULT_FORMAT) == [
        "             JOBID PARTITION     NAME     USER ST       TIME  NODES NODELIST(REASON)",
        "             12346     debug     job2     dave PD       0:00      1 (Resources)",
        "             12348     debug     job3       ed PD       0:00      1 (Priority)",
        "             12345     debug     job1     dave  R       0:21      1 dev9",
    ]


def test_no_header() -> None:
    assert lines([JOB1], "%i %t", header=False) == ["12345 R"]


def test_long_format() -> None:
    running = job(time_limit_s=3600)
    assert lines([running, JOB2], sq.LONG_FORMAT) == [
        "             JOBID PARTITION     NAME     USER    STATE       TIME TIME_LIMI  NODES"
        " NODELIST(REASON)",
        "             12345     debug     job1     dave  RUNNING       0:21   1:00:00      1 dev9",
        "             12346     debug     job2     dave  PENDING       0:00 UNLIMITED      1"
        " (Resources)",
    ]


def test_start_format() -> None:
    # opts.c --start: "%.18i %.9P %.8j %.8u %.2t %.19S %.6D %20Y %R"; a pending job's
    # start is the expected one, N/A when not estimated; no SchedNodes prints "(null)".
    planned = job(job_id=12346, name="job2", state="PENDING", reason="Resources", node="",
                  start_time=0, expected_start=T0 + 600)  # fmt: skip
    assert lines([planned, JOB3], sq.START_FORMAT) == [
        "             JOBID PARTITION     NAME     USER ST          START_TIME  NODES"
        " SCHEDNODES           NODELIST(REASON)",
        "             12346     debug     job2     dave PD 2023-11-14T22:23:20      1"
        " (null)               (Resources)",
        "             12348     debug     job3       ed PD                 N/A      1"
        " (null)               (Priority)",
    ]


def test_array_tasks_are_one_row_each() -> None:
    task = job(job_id=121, array_job_id=120, array_task_id=3, state="PENDING",
               reason="Priority", node="", start_time=0)  # fmt: skip
    assert lines([task], "%i|%A|%F|%K", header=False) == ["120_3|121|120|3"]
    assert lines([JOB1], "%i|%A|%F|%K", header=False) == ["12345|12345|12345|N/A"]


def test_cutting_and_overflow() -> None:
    long_name = job(name="a-very-long-name", time_limit_s=86400 + 3600)
    # Right-justified strings are cut to the column, left-justified ones too; times are
    # printed whole (_print_secs passes cut_output=false).
    assert lines([long_name], "%.8j|%5j|%.3l|%3l|%.3M", header=False) == [
        "a-very-l|a-ver|1-01:00:00|1-0|0:21"
    ]


def test_literal_text_and_prefix() -> None:
    assert lines([JOB1], "job=%i state=%T%%", header=False) == ["job=12345 state=RUNNING"]
    assert lines([JOB1], "job=%i state=%T") == ["job=JOBID state=STATE", "job=12345 state=RUNNING"]


def test_many_fields() -> None:
    gpu_job = job(
        account="proj", qos="normal", dependency="afterok:12000", mem_bytes=16 << 30, cpus=8,
        gpus=2, gpu_type="h100", exclusive=True, nice=5, cwd="/home/dave", command="train.sh",
        time_limit_s=3600, priority=1000.0,
    )  # fmt: skip
    fmt = "%a|%q|%E|%k|%m|%c|%C|%D|%b|%h|%y|%Z|%o|%p|%Q|%r|%R|%B|%x|%n|%Y|%z|%X|%v|%O|%d"
    assert lines([gpu_job], fmt, header=False) == [
        "proj|normal|afterok:12000|(null)|16G|8|8|1|gres/gpu:h100:2|NO|5|/home/dave|train.sh|"
        "0.00000023283064|1000|None|dev9|dev9|||(null)|*:*:*|N/A|(null)|0|0"
    ]
    times = "%V|%S|%e|%L|%l|%M"
    assert lines([gpu_job], times, header=False) == [
        "2023-11-14T22:12:20|2023-11-14T22:13:20|2023-11-14T23:13:20|59:39|1:00:00|0:21"
    ]
    # An unset string prints "(null)", as glibc's printf("%s", NULL).
    assert lines([JOB1], "%a|%q|%E|%o|%b|%h", header=False) == [
        "(null)|(null)|(null)|(null)|N/A|OK"
    ]


def test_time_left_and_end_of_unlimited_job() -> None:
    assert lines([JOB1], "%L|%e|%l", header=False) == ["UNLIMITED|NONE|UNLIMITED"]
    assert lines([JOB3], "%S|%e|%M", header=False) == ["N/A|N/A|0:00"]


def test_reason_list_for_ended_jobs() -> None:
    failed = job(state="FAILED", end_time=T0 + 5)
    timeout = job(state="TIMEOUT", end_time=T0 + 5, reason="")
    completed = job(state="COMPLETED", end_time=T0 + 5)
    completing = job(state="COMPLETING")
    assert lines([failed, timeout, completed, completing], "%t %M %R", header=False) == [
        "F 0:05 (NonZeroExitCode)",
        "TO 0:05 (TimeLimit)",
        "CD 0:05 dev9",
        "CG 0:21 dev9",
    ]
    assert lines([job(state="FAILED", reason="exit code 3")], "%R", header=False) == [
        "(exit code 3)"
    ]


def test_name_format_default_width_is_20_without_separators() -> None:
    specs = sq.parse_format_long("JobID,Name,State:.10 ,exit_code:")
    assert sq.format_jobs([JOB1], specs, now=NOW) == [
        "JOBID               NAME                     STATE EXIT_CODE",
        "12345               job1                   RUNNING 0:0",
    ]


def test_name_format_default_equals_percent_default() -> None:
    # squeue.c builds its default as this -O format; it prints as the documented -o one.
    default_o = sq.parse_format_long(
        "jobarrayid:.18 ,partition:.9 ,name:.8 ,username:.8 ,statecompact:.2 ,"
        "timeused:.10 ,numnodes:.6 ,reasonlist:0"
    )
    jobs = [JOB1, JOB2]
    assert sq.format_jobs(jobs, default_o, now=NOW) == lines(jobs, sq.DEFAULT_FORMAT)


def test_unknown_fields_raise() -> None:
    with pytest.raises(ValueError, match="Invalid job format specification: 9"):
        sq.parse_format("%i %9")
    with pytest.raises(ValueError, match="Invalid job format specification: bogus"):
        sq.parse_format_long("jobid,bogus")


def test_sort_keys() -> None:
    jobs = [JOB1, JOB2, JOB3]
    ids = [j["job_id"] for j in sq.sort_jobs(jobs, "i", now=NOW)]
    assert ids == [12345, 12346, 12348]
    ids = [j["job_id"] for j in sq.sort_jobs(jobs, "-i", now=NOW)]
    assert ids == [12348, 12346, 12345]
    ids = [j["job_id"] for j in sq.sort_jobs(jobs, "-t,u", now=NOW)]
    assert ids == [12345, 12346, 12348]  # R before PD, then dave before ed
    ids = [j["job_id"] for j in sq.sort_jobs(jobs, "u,-i", now=NOW)]
    assert ids == [12346, 12345, 12348]


def test_sort_by_array_task_and_priority_tiers() -> None:
    a3 = job(job_id=203, array_job_id=200, array_task_id=3)
    a1 = job(job_id=201, array_job_id=200, array_task_id=1)
    plain = job(job_id=150)
    assert [j["job_id"] for j in sq.sort_jobs([a3, plain, a1], "i", now=NOW)] == [150, 201, 203]
    low_tier = job(job_id=1, partition="low", priority=900.0)
    high_tier = job(job_id=2, partition="high", priority=10.0)
    ordered = sq.sort_jobs([low_tier, high_tier], "-p", now=NOW, tiers={"high": 5, "low": 1})
    assert [j["job_id"] for j in ordered] == [2, 1]


def test_sort_by_start_puts_unstarted_last_both_ways() -> None:
    early = job(job_id=1, start_time=T0 - 100)
    late = job(job_id=2, start_time=T0)
    never = job(job_id=3, state="PENDING", start_time=0)
    assert [j["job_id"] for j in sq.sort_jobs([never, late, early], "S", now=NOW)] == [1, 2, 3]
    assert [j["job_id"] for j in sq.sort_jobs([never, early, late], "-S", now=NOW)] == [2, 1, 3]


def test_invalid_sort_letter() -> None:
    with pytest.raises(ValueError, match="Invalid sort specification: k"):
        sq.sort_jobs([JOB1], "k", now=NOW)


def test_missing_keys_from_an_older_master() -> None:
    old = {"job_id": 7, "name": "x", "user": "u", "state": "PENDING", "reason": "Priority"}
    assert sq.format_jobs([old], sq.parse_format(sq.DEFAULT_FORMAT), now=NOW)[1] == (
        "                 7    (null)        x        u PD       0:00      1 (Priority)"
    )


def test_user_and_group_ids() -> None:
    assert lines([job(user="root")], "%u|%U|%G|%g", header=False) == ["root|0|0|root"]
    stranger = job(user="no-such-user-mgpu-test")
    assert lines([stranger], "%U|%G|%g", header=False) == ["(null)|(null)|(null)"]


def test_name_only_fields() -> None:
    started = job(submit_time=T0 - 60, restart_count=2, stdout_path="", cwd="/w", ntasks=2,
                  cpus=8, exit_code=3)  # fmt: skip
    specs = sq.parse_format_long(
        "PendingTime:0|,RestartCnt:0|,StdOut:0|,StdIn:0|,NumTasks:0|,cpus-per-task:0|,"
        "BatchFlag:0|,exit_code:0|,tres-alloc:0"
    )
    assert sq.format_jobs([started], specs, now=NOW, header=False) == [
        "60|2|/w/slurm-%j.out|/dev/null|2|4|1|3:0|cpu=8,node=1,billing=8"
    ]
