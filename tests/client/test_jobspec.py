"""From options to the job sent (mgpu_client.jobspec): what each Slurm option asks for, what
is refused with one line saying why, what is ignored with one warning; and every job built is
one the master's schema accepts."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from mgpu_client import jobspec
from mgpu_client.cmdline import as_dict, parse
from mgpu_client.optable import FLAG, JOB_OPTIONS, OPTIONAL, REFUSE, WARN, A, B, Opt, R, table_for
from mgpu_core.errors import UsageError
from mgpu_core.models import JobSpec

pytestmark = pytest.mark.timeout(30)

GIB = 1 << 30
JOB_FIELDS = set(JobSpec.SCHEMA.fields)


def build(
    argv: list[str], command: str = R, *, script: str | None = None
) -> tuple[dict[str, Any], list[str]]:
    """(the job ``command`` builds for ``argv``, the warnings), the job checked against the
    master's schema: every field valid and none unknown (the schema would drop it unseen)."""
    found, rest = parse(argv, table_for(command))
    assert rest == [], rest
    warnings = jobspec.check_options(found)
    opts = jobspec.used(found)
    job = jobspec.build(
        opts, argv=[] if script else ["true"], script=script, interactive=command == R
    )
    assert set(job) <= JOB_FIELDS, set(job) - JOB_FIELDS
    JobSpec.from_wire(JobSpec.SCHEMA.check(job, "job"))
    return job, warnings


def job(*argv: str, command: str = R) -> dict[str, Any]:
    built, warnings = build(list(argv), command)
    assert warnings == []
    return built


def refused(*argv: str, command: str = R) -> str:
    """The one-line UsageError ``argv`` gets."""
    with pytest.raises(UsageError) as err:
        build(list(argv), command)
    assert "\n" not in str(err.value)
    return str(err.value)


# ---- tasks and nodes --------------------------------------------------------------------------


@pytest.mark.parametrize("nodes", ["1", "1-1", "1-4", "0"])
def test_one_node(nodes: str) -> None:
    assert job("-N", nodes)["ntasks"] == 1


@pytest.mark.parametrize("nodes", ["2", "2-4", "3,5", "4:2"])
def test_more_nodes_than_one_are_refused(nodes: str) -> None:
    assert "multi-node jobs are not supported" in refused("-N", nodes)
    assert "multi-node jobs are not supported" in refused(f"--nodes={nodes}", command=B)


def test_tasks_need_one_node() -> None:
    assert "multi-node" in refused("-n", "4", "--ntasks-per-node=2")
    assert job("-n", "2", "--ntasks-per-node=2")["ntasks"] == 2
    assert job("--ntasks-per-node=3")["ntasks"] == 3


def test_cpus_are_tasks_times_cpus_per_task() -> None:
    built = job("-n", "2", "-c", "3")
    assert (built["cpus"], built["ntasks"]) == (6, 2)
    assert job("--mincpus=8", "-c", "2")["cpus"] == 8
    assert job("-G", "2", "--cpus-per-gpu=4")["cpus"] == 8
    assert job()["cpus"] == 1 and job()["ntasks"] == 1


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["-n", "0"], "-n/--ntasks"),
        (["-c", "0"], "-c/--cpus-per-task"),
        (["-n", "65536", "-c", "2"], "more than a job may ask for"),
        (["-N", "x"], "-N/--nodes"),
    ],
)
def test_bad_counts_name_the_option(argv: list[str], fragment: str) -> None:
    assert fragment in refused(*argv)


# ---- GPUs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "gpu_type", "gpus"),
    [
        (["-G", "a100:2"], "a100", 2),
        (["--gpus=A100:2"], "a100", 2),  # types are normalised
        (["-G", "gpu:a100:1"], "a100", 1),
        (["-G", "3"], "", 3),
        (["--gres=gpu:h100:1"], "h100", 1),
        (["--gres=gpu:2"], "", 2),
        (["--gres=gpu"], "", 1),
        (["--gres=none"], "", 0),
        (["--gpus-per-node=h100:2"], "h100", 2),
        (["--gpus-per-task=1", "-n", "3"], "", 3),
        (["--gpus-per-task=a100:2", "-n", "2"], "a100", 4),
        (["-G", "a100:2", "--gres=gpu:a100:2"], "a100", 2),  # the same type twice
    ],
)
def test_gpus_and_their_type(argv: list[str], gpu_type: str, gpus: int) -> None:
    built = job(*argv)
    assert (built["gpu_type"], built["gpus"]) == (gpu_type, gpus)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--gres=fpga:1"], "unsupported gres 'fpga:1'"),
        (["--gres=gpu:a100:1:2"], "unsupported gres"),
        (["-G", "a100:1", "--gres=gpu:h100:1"], "conflicting GPU types: a100, h100"),
        (["-G", "a100:1", "--gpus-per-task=h100:1"], "conflicting GPU types"),
        (["-G", "65"], "-G/--gpus"),
        (["--gpus-per-task=8", "-n", "9"], "more than a node may have"),
        (["-G", "a b:1"], "invalid GPU type"),
    ],
)
def test_gpu_requests_mgpu_cannot_honour(argv: list[str], fragment: str) -> None:
    assert fragment in refused(*argv)


# ---- memory -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "mem_bytes"),
    [
        (["--mem=16G"], 16 * GIB),
        (["--mem=512"], 512 << 20),  # a bare number is MB
        (["--mem-per-cpu=1G", "-c", "4"], 4 * GIB),
        (["--mem-per-cpu=1G", "-n", "2", "-c", "2"], 4 * GIB),
        (["--mem-per-gpu=2G", "-G", "3"], 6 * GIB),
        (["--mem-per-gpu=2G"], 2 * GIB),  # no GPU: as for one
        ([], 0),
    ],
)
def test_memory(argv: list[str], mem_bytes: int) -> None:
    assert job(*argv)["mem_bytes"] == mem_bytes


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--mem=4G", "--mem-per-cpu=1G"], "mutually exclusive"),
        (["--mem-per-gpu=1G", "--mem-per-cpu=1G"], "mutually exclusive"),
        (["--mem=lots"], "invalid --mem"),
        (["--mem=" + "9" * 30], "more memory than a job may ask for"),
        (["--mem-per-cpu=1024T", "-c", "2000"], "more memory than a job may ask for"),
    ],
)
def test_memory_refused(argv: list[str], fragment: str) -> None:
    assert fragment in refused(*argv)


# ---- environment ------------------------------------------------------------------------------


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOO", "from-env")
    monkeypatch.setenv("OTHER", "other")
    monkeypatch.setenv("SLURM_CONF", "/etc/slurm.conf")
    monkeypatch.delenv("BAR", raising=False)


@pytest.mark.usefixtures("environ")
def test_export_all_is_the_default() -> None:
    for argv in ([], ["--export=ALL"], ["--export=all"]):
        env = job(*argv)["env"]
        assert (env["FOO"], env["OTHER"], env["SLURM_CONF"]) == (
            "from-env",
            "other",
            "/etc/slurm.conf",
        )


@pytest.mark.usefixtures("environ")
def test_export_none_keeps_only_slurm_variables() -> None:
    env = job("--export=NONE")["env"]
    assert env and all(name.startswith("SLURM_") for name in env), env
    assert env["SLURM_CONF"] == "/etc/slurm.conf"


@pytest.mark.usefixtures("environ")
def test_export_all_plus_variables() -> None:
    env = job("--export=ALL,FOO=bar,BAR=1")["env"]
    assert (env["FOO"], env["BAR"], env["OTHER"]) == ("bar", "1", "other")


@pytest.mark.usefixtures("environ")
def test_export_a_list_takes_only_what_it_names() -> None:
    env = job("--export=FOO,BAR=1,MISSING")["env"]
    assert {k: v for k, v in env.items() if not k.startswith("SLURM_")} == {
        "FOO": "from-env",
        "BAR": "1",
    }
    assert env["SLURM_CONF"] == "/etc/slurm.conf"


def test_a_bad_export_entry_is_refused() -> None:
    assert "invalid --export entry '=x'" in refused("--export=FOO,=x")


# ---- placement, files, priority and timing ---------------------------------------------------


def test_open_mode() -> None:
    assert job("--open-mode=append")["open_append"] is True
    assert job("--open-mode=truncate")["open_append"] is False
    assert "open_append" not in job()
    assert "invalid --open-mode" in refused("--open-mode=sideways")


def test_exclusive_with_or_without_a_value() -> None:
    assert job("--exclusive")["exclusive"] is True
    assert job("--exclusive=user")["exclusive"] is True
    assert "exclusive" not in job()


def test_nodes_to_use_and_to_avoid() -> None:
    assert job("-x", "n[1-3]")["exclude"] == ["n1", "n2", "n3"]
    assert job("--exclude=a,b[08-09]")["exclude"] == ["a", "b08", "b09"]
    assert job("-w", "gpu[01-02]")["nodelist"] == ["gpu01", "gpu02"]
    assert "-x/--exclude" in refused("-x", "n[1-")


def test_partition_account_qos() -> None:
    built = job("-p", "a,b", "-A", "acct", "-q", "high")
    assert (built["partition"], built["account"], built["qos"]) == ("a,b", "acct", "high")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("B:USR1@90", (signal.SIGUSR1, 90)),
        ("USR2", (signal.SIGUSR2, 60)),
        ("R:SIGTERM@5", (signal.SIGTERM, 5)),
        ("10@0", (10, 0)),
    ],
)
def test_signal_before_the_time_limit(value: str, expected: tuple[int, int]) -> None:
    built = job(f"--signal={value}")
    assert (built["warn_signal"], built["warn_before_s"]) == expected


@pytest.mark.parametrize("value", ["BOGUS", "0", "65", "USR1@x"])
def test_a_bad_signal_is_refused(value: str) -> None:
    assert "--signal" in refused(f"--signal={value}")


@pytest.mark.parametrize(
    ("argv", "nice"),
    [(["--nice"], 100), (["--nice=-5"], -5), (["--nice=+7"], 7), (["--nice=0"], 0)],
)
def test_nice(argv: list[str], nice: int) -> None:
    assert job(*argv)["nice"] == nice


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("UNLIMITED", 0),
        ("infinite", 0),
        ("5", 300),
        ("1:30", 90),
        ("2:00:00", 7200),
        ("1-0", 86400),
    ],
)
def test_time_limit(value: str, seconds: int) -> None:
    assert job("-t", value)["time_limit_s"] == seconds


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("xx", "invalid --time: invalid time limit 'xx'"), ("400-0", "longer than a job may run")],
)
def test_a_bad_time_limit_is_refused(value: str, fragment: str) -> None:
    assert fragment in refused("-t", value)


def test_hold_dependency_array_and_requeue() -> None:
    built, _ = build(
        ["-H", "-d", "afterok:12:13", "--array=0-3%2", "--no-requeue"], B, script="#!/bin/sh\n"
    )
    assert (built["hold"], built["dependency"], built["array"], built["requeue"]) == (
        True,
        "afterok:12:13",
        "0-3%2",
        False,
    )
    batch, _ = build([], B, script="#!/bin/sh\n")
    assert batch["requeue"] is True and batch["interactive"] is False
    assert job()["requeue"] is False  # srun: nothing to requeue to


# ---- ignored and refused options --------------------------------------------------------------


def _spelled(opt: Opt) -> list[str]:
    name = opt.names[-1]
    return [name] if opt.takes in (FLAG, OPTIONAL) else [f"{name}=x"]


def _cases(how: str) -> list[tuple[Opt, str]]:
    return [
        (opt, command)
        for opt in JOB_OPTIONS
        if opt.how == how
        for command in (B, R, A)
        if command in opt.commands
    ]


@pytest.mark.parametrize(
    ("opt", "command"), _cases(WARN), ids=lambda x: x.names[-1] if isinstance(x, Opt) else x
)
def test_each_ignored_option_warns_once_and_submits(opt: Opt, command: str) -> None:
    built, warnings = build([*_spelled(opt), *_spelled(opt)], command)
    assert warnings == [f"{opt.names[-1]} is ignored: {opt.why}"]
    assert built == job(command=command)  # as if it had not been given


@pytest.mark.parametrize(
    ("opt", "command"), _cases(REFUSE), ids=lambda x: x.names[-1] if isinstance(x, Opt) else x
)
def test_each_refused_option_says_why(opt: Opt, command: str) -> None:
    message = refused("-G", "1", *_spelled(opt), command=command)
    assert message == f"{opt.names[-1]} is not supported: {opt.why}"


def test_one_warning_per_ignored_option_in_order_and_a_refusal_stops_all() -> None:
    found, _ = parse(["--wckey=k", "--comment", "c", "--wckey=j"], table_for(B))
    assert jobspec.check_options(found) == [
        "--wckey is ignored: mgpu does not track it",
        "--comment is ignored: comments are not stored yet",
    ]
    found, _ = parse(["--comment=c", "--reservation=r"], table_for(A))
    with pytest.raises(
        UsageError, match=r"^--reservation is not supported: mgpu has no reservations$"
    ):
        jobspec.check_options(found)


# ---- text the queue shows ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["-J", "n\udcff"], "the job name (-J) n\\xff is not UTF-8"),
        (["-o", "\udcff.out"], "the --output path"),
        (["-D", "/tmp/\udcff"], "the working directory"),
        (["-A", "a\udcff"], "--account"),
    ],
)
def test_text_the_queue_shows_must_be_utf8(argv: list[str], fragment: str) -> None:
    assert fragment in refused(*argv)


def test_arguments_and_environment_may_hold_any_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAW", "\udcff")
    found, _ = parse(["-J", "ok"], table_for(R))
    built = jobspec.build(jobspec.used(found), argv=["\udcfe"], script=None, interactive=True)
    assert built["argv"] == ["\udcfe"] and built["env"]["RAW"] == "\udcff"


def test_mail_types_are_slurms_and_all_is_spelled_out() -> None:
    def job(*args: str) -> dict[str, object]:
        found, _ = parse(list(args), table_for(B))
        return jobspec.build(as_dict(found), argv=["true"], script=None, interactive=False)

    assert job("--mail-type=ALL,TIME_LIMIT_80")["mail_types"] == [
        "BEGIN", "END", "FAIL", "REQUEUE", "INVALID_DEPEND", "TIME_LIMIT_80",
    ]  # fmt: skip
    assert "mail_types" not in job("--mail-type=NONE")
    assert job("--mail-type=end,fail", "--mail-user", "a@b.org")["mail_user"] == "a@b.org"
    assert (
        job("--notify", "https://hooks.example.org/x")["notify_url"]
        == "https://hooks.example.org/x"
    )
    with pytest.raises(UsageError, match="invalid --mail-type: WHEN"):
        job("--mail-type=WHEN")
    with pytest.raises(UsageError, match="not an http"):
        job("--notify", "file:///etc/passwd")
