"""``mgpu_client submit CMD`` submits exactly the job ``mgpu_sbatch --wrap CMD`` submits; the
verbs of ``mgpu_client`` hand their arguments to the job commands untouched; sbatch and
mgpu_sbatch differ only in their default output file."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from mgpu_client import main, sbatch
from mgpu_client.jobspec import WRAP_JOB_NAME
from mgpu_core.models import JobSpec

pytestmark = pytest.mark.timeout(30)


class FakeClient:
    """Takes the submitted job instead of sending it."""

    def __init__(self, seen: list[dict[str, Any]], reply: dict[str, Any]) -> None:
        self.seen = seen
        self.reply = reply

    def submit_job(
        self, job: dict[str, Any], *, attach: bool = False, test_only: bool = False
    ) -> dict[str, Any]:
        self.seen.append({**job, "test_only": test_only, "attach": attach})
        return self.reply

    def close(self) -> None:
        pass


def fake_master(
    monkeypatch: pytest.MonkeyPatch, reply: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """What the job commands submit from now on (each job with the request's ``test_only``
    and ``attach`` added)."""
    seen: list[dict[str, Any]] = []

    @contextmanager
    def connect(master: str | None) -> Iterator[FakeClient]:
        yield FakeClient(seen, reply or {"job_id": 7})

    monkeypatch.setattr("mgpu_client.client.connect", connect)
    return seen


def via_main(argv: list[str]) -> None:
    """``mgpu_client ARGV``: its verbs exit with the command's status."""
    with pytest.raises(SystemExit) as exited:
        main.cli.main(args=argv, prog_name="mgpu_client")
    assert exited.value.code == 0


def spec(job: dict[str, Any]) -> JobSpec:
    job = {k: v for k, v in job.items() if k not in ("test_only", "attach")}
    return JobSpec.from_wire(JobSpec.SCHEMA.check(job, "job"))


@pytest.mark.parametrize(
    ("options", "command"),
    [
        ([], ["nvidia-smi"]),
        (["--gpus", "1", "-J", "train"], ["python train.py --lr 0.1"]),
        (["-o", "out-%x.txt", "-e", "err.txt", "--no-requeue"], ["echo hi"]),
        (["--array", "0-3%2", "-t", "10", "--mem", "4G"], ["echo $MGPU_ARRAY_TASK_ID"]),
        (["-H", "-d", "singleton", "--nice", "-n", "2"], ["sh", "-c", "exit 3"]),  # words joined
        (["--parsable", "-p", "a,b", "--"], ["true"]),
    ],
)
def test_submit_is_sbatch_wrap(
    options: list[str],
    command: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen = fake_master(monkeypatch)
    line = command[0] if len(command) == 1 else shlex.join(command)
    wrap_options = [o for o in options if o != "--"]
    assert sbatch.submit([*wrap_options, "--wrap", line], "mgpu_sbatch", slurm=False) == 0
    via_main(["submit", *options, *command])
    wrapped, via_submit = seen
    assert via_submit == wrapped
    job = spec(wrapped)
    assert job.script == f"#!/bin/sh\n{line}\n" and job.argv == []
    assert job.name == ("train" if "-J" in options else WRAP_JOB_NAME)
    assert not wrapped["test_only"] and not wrapped["attach"] and not job.interactive
    out = capsys.readouterr().out
    assert out == ("7\n7\n" if "--parsable" in options else "Submitted batch job 7\n" * 2)


def test_submit_without_a_command_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = fake_master(monkeypatch)
    with pytest.raises(SystemExit) as exited:
        main.cli.main(args=["submit", "-G", "1"], prog_name="mgpu_client")
    assert exited.value.code == 64 and seen == []
    assert capsys.readouterr().err == "mgpu_client submit: error: give a command to run\n"


@pytest.mark.parametrize(
    ("slurm", "options", "output"),
    [
        (False, [], "mgpu-%j.out"),
        (True, [], "slurm-%j.out"),
        (False, ["-a", "1-3"], "mgpu-%A_%a.out"),
        (True, ["--array=1-3"], "slurm-%A_%a.out"),
        (True, ["-o", "logs/%x-%j.log"], "logs/%x-%j.log"),
    ],
)
def test_the_default_output_file_follows_the_command_name(
    slurm: bool, options: list[str], output: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = fake_master(monkeypatch)
    sbatch.submit([*options, "--wrap", "true"], "sbatch", slurm=slurm)
    (job,) = seen
    assert spec(job).stdout_path == output and spec(job).stderr_path is None


def test_the_command_line_wins_over_the_scripts_directives(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = fake_master(monkeypatch)
    script = tmp_path / "train.sh"
    script.write_text(
        "#!/bin/sh\n#SBATCH -J from-script -G 2 --parsable\n#SBATCH --wckey=w\necho\n"
    )
    assert sbatch.submit(["-G", "1", str(script), "arg"], "sbatch", slurm=True) == 0
    (job,) = seen
    assert (job["name"], job["gpus"], job["argv"]) == ("from-script", 1, ["arg"])
    out, err = capsys.readouterr()
    assert out == "7\n"  # --parsable from the script
    assert err.splitlines() == ["sbatch: warning: --wckey is ignored: mgpu does not track it"]


def test_wait_watches_the_job_from_its_submit_and_exits_with_its_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = fake_master(monkeypatch)
    followed: list[int] = []

    class Follower:
        def __init__(self, client: FakeClient, job_id: int, prog: str) -> None:
            self.client = client
            followed.append(job_id)

        def follow(self) -> int:
            # Only a connection that watches the job gets its end: the submit must start the
            # watch (a job may end before any later request could).
            assert seen[-1]["attach"]
            return 3

    monkeypatch.setattr("mgpu_client.follow.Follower", Follower)
    assert sbatch.submit(["--wait", "--wrap", "exit 3"], "sbatch", slurm=True) == 3
    assert followed == [7] and capsys.readouterr().out == "Submitted batch job 7\n"


def test_test_only_submits_nothing_and_says_when(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reply = {"job_id": 0, "would_start": 1_700_000_000, "node": "n1", "partition": "gpu"}
    seen = fake_master(monkeypatch, reply)
    assert sbatch.submit(["--test-only", "-c", "4", "--wrap", "true"], "sbatch", slurm=True) == 0
    (job,) = seen
    assert job["test_only"]
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("sbatch: Job 0 to start at ") and "on nodes n1 in partition gpu" in err


def test_the_run_sbatch_and_cancel_verbs_pass_their_arguments_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, list[str], str]] = []

    def recorder(verb: str) -> Any:
        def record(argv: list[str], prog: str, *, slurm: bool) -> int:
            calls.append((verb, argv, prog))
            return 0

        return record

    monkeypatch.setattr("mgpu_client.srun.run", recorder("run"))
    monkeypatch.setattr("mgpu_client.sbatch.submit", recorder("sbatch"))
    requests: list[tuple[str, dict[str, Any]]] = []

    class CancelClient:
        def __enter__(self) -> CancelClient:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def request(self, kind: str, **fields: Any) -> dict[str, Any]:
            requests.append((kind, fields))
            return {"results": []}

    monkeypatch.setattr("mgpu_client.client.connect", lambda master: CancelClient())
    via_main(["run", "-G", "1", "--help", "--", "x"])
    via_main(["sbatch", "--bogus", "s.sh", "-v"])
    via_main(["cancel", "--signal=USR1", "12", "13_2"])
    assert calls == [
        ("run", ["-G", "1", "--help", "--", "x"], "mgpu_client run"),
        ("sbatch", ["--bogus", "s.sh", "-v"], "mgpu_client sbatch"),
    ]
    assert requests == [("cancel", {"job_ids": [12, "13_2"], "signal": 10, "scope": "all"})]
