"""One exit-code table for every command (mgpu_core.exitcodes): each class of failure has its
own code, whichever command and whichever parser (click's, or mgpu_client.cmdline's) meets it;
Slurm's names (sbatch, srun, scancel, ...) exit 1 for every failure, as Slurm's commands do."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import click
import pytest

from mgpu_client.exits import handles_errors
from mgpu_client.follow import exit_status
from mgpu_core import exitcodes
from mgpu_core.cliutil import StartupFailure, run_click
from mgpu_core.errors import ERROR_CODES, MasterUnreachable, MgpuError, UsageError, error_from_wire
from mgpu_core.exitcodes import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SIGNAL_BASE,
    EXIT_STARTUP_FAILURE,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
)

pytestmark = pytest.mark.timeout(60)


def test_the_table_has_distinct_codes_and_keeps_unreachable_at_2() -> None:
    table = {name: value for name, value in vars(exitcodes).items() if name.startswith("EXIT_")}
    fixed = {k: v for k, v in table.items() if k not in ("EXIT_SIGNAL_BASE", "EXIT_INTERRUPTED")}
    assert len(set(fixed.values())) == len(fixed), fixed
    # README documents 2; scripts retry on it.
    assert EXIT_UNREACHABLE == 2
    # Signal codes (128+N) must not collide with the fixed ones.
    assert max(fixed.values()) < EXIT_SIGNAL_BASE


def exit_code(fn: Callable[[], object]) -> int | str | None:
    with pytest.raises(SystemExit) as exited:
        fn()
    return exited.value.code


def raising(err: BaseException) -> Callable[[], None]:
    def fail() -> None:
        raise err

    return fail


@pytest.mark.parametrize("code", [c for c in ERROR_CODES if c != MasterUnreachable.code])
def test_every_error_from_the_master_is_exit_1(
    code: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = error_from_wire(code, "refused")
    assert not isinstance(err, UsageError)  # no reply can pose as the user's mistake
    assert exit_code(handles_errors("prog")(raising(err))) == EXIT_ERROR
    assert capsys.readouterr().err == "prog: error: refused\n"


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        (MasterUnreachable("cannot reach mgpu master at 127.0.0.1:1"), EXIT_UNREACHABLE),
        (UsageError("invalid job state 'X'"), EXIT_USAGE),
        (MgpuError("anything else"), EXIT_ERROR),
        (KeyboardInterrupt(), EXIT_INTERRUPTED),
    ],
)
def test_the_client_error_rule(err: BaseException, expected: int) -> None:
    assert exit_code(handles_errors("prog")(raising(err))) == expected


def click_command(err: BaseException | None) -> click.Command:
    @click.command()
    @click.option("--count", type=click.IntRange(0, 3), default=0)
    def command(count: int) -> None:
        if err is not None:
            raise err

    return command


@pytest.mark.parametrize(
    ("args", "err", "expected"),
    [
        ([], None, EXIT_OK),
        (["--count", "9"], None, EXIT_USAGE),  # click's own usage error (its code would be 2)
        (["--bogus"], None, EXIT_USAGE),
        ([], click.UsageError("give job ids"), EXIT_USAGE),
        ([], click.ClickException("exists: use --force"), EXIT_ERROR),
        ([], StartupFailure("cannot start: bad socket path"), EXIT_STARTUP_FAILURE),
        ([], click.exceptions.Abort(), EXIT_INTERRUPTED),
    ],
)
def test_run_click_maps_clicks_exceptions(
    args: list[str], err: BaseException | None, expected: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert exit_code(lambda: run_click(click_command(err), "prog", args)) == expected
    assert capsys.readouterr().err.count("\n") == (0 if expected == EXIT_OK else 1)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"exit_code": 0}, 0),
        ({"exit_code": 2}, 2),  # the job's own code passes through, as Slurm's srun does
        ({"exit_code": None, "signal": 9}, EXIT_SIGNAL_BASE + 9),
        ({"exit_code": None, "signal": None}, EXIT_ERROR),  # the status was lost
    ],
)
def test_srun_exits_with_the_jobs_code_or_128_plus_the_signal(
    event: dict[str, object], expected: int
) -> None:
    assert exit_status(event) == expected


def run_module(module: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)},
    )


@pytest.mark.parametrize(
    ("module", "args", "expected"),
    [
        # A usage error, from click's parser and from mgpu_client.cmdline's (no click).
        ("mgpu_client.queue", ["--bogus"], EXIT_USAGE),
        ("mgpu_client.queue", ["--master", "h:0"], EXIT_USAGE),
        ("mgpu_client.srun", ["--master", "h:0", "true"], EXIT_USAGE),
        ("mgpu_client.srun", ["--bogus", "true"], EXIT_USAGE),
        ("mgpu_client.sbatch", ["-N", "2", "--wrap", "true"], EXIT_USAGE),
        ("mgpu_client.scancel", ["--master", "127.0.0.1:1"], EXIT_USAGE),
        ("mgpu_client", ["cancel", "--master", "127.0.0.1:1"], EXIT_USAGE),
        ("mgpu_client", ["submit", "--bogus", "true"], EXIT_USAGE),
        # The master is unreachable, on both paths.
        ("mgpu_client.queue", ["--master", "127.0.0.1:1"], EXIT_UNREACHABLE),
        ("mgpu_client.srun", ["--master", "127.0.0.1:1", "true"], EXIT_UNREACHABLE),
        ("mgpu_client.srun", ["--master", "127.0.0.1:1", "-t", "5", "true"], EXIT_UNREACHABLE),
        ("mgpu_client", ["submit", "--master", "127.0.0.1:1", "true"], EXIT_UNREACHABLE),
        ("mgpu_client.sbatch", ["--master", "127.0.0.1:1", "--wrap", "true"], EXIT_UNREACHABLE),
        ("mgpu_client.scancel", ["--master", "127.0.0.1:1", "1"], EXIT_UNREACHABLE),
        # A daemon that cannot start.
        ("mgpu_node", ["--gpu-count", "1", "--key-file", "missing.key"], EXIT_STARTUP_FAILURE),
    ],
)
def test_each_class_of_failure_has_its_code(
    module: str, args: list[str], expected: int, tmp_path: Path
) -> None:
    result = run_module(module, args, tmp_path)
    assert result.returncode == expected, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("mgpu_client.sbatch", ["--bogus", "--wrap", "true"]),  # a usage error: 64 for mgpu_*
        ("mgpu_client.sbatch", ["-N", "2", "--wrap", "true"]),
        ("mgpu_client.srun", ["--master", "h:0", "true"]),
        ("mgpu_client.scancel", []),
        ("mgpu_client.sbatch", ["--master", "127.0.0.1:1", "--wrap", "true"]),  # unreachable: 2
        ("mgpu_client.srun", ["--master", "127.0.0.1:1", "true"]),
        ("mgpu_client.scancel", ["--master", "127.0.0.1:1", "1"]),
    ],
)
def test_slurms_names_exit_1_for_every_failure(
    module: str, args: list[str], tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", f"from {module} import slurm_main; slurm_main()", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == EXIT_ERROR, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    prog = module.rsplit(".", 1)[1]  # the Slurm name: sbatch, not mgpu_sbatch
    assert result.stderr.startswith(f"{prog}: error: "), result.stderr
