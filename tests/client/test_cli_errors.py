"""Every command-line mistake: one line naming the problem, the usage exit code (64, not the
2 of an unreachable master), no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mgpu_core.exitcodes import EXIT_UNREACHABLE, EXIT_USAGE

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("module", "args", "fragment"),
    [
        ("mgpu_client.sbatch", ["--time", "xx", "--wrap", "true"], "invalid time limit 'xx'"),
        ("mgpu_client.sbatch", ["--mem", "lots", "--wrap", "true"], "lots"),
        ("mgpu_client.sbatch", ["--gres", "fpga:1", "--wrap", "true"], "unsupported gres"),
        ("mgpu_client.sbatch", ["-w", "n[1-", "--wrap", "true"], "n[1-"),
        ("mgpu_client.sbatch", ["/no/such/script.sh"], "/no/such/script.sh"),
        ("mgpu_client.sbatch", ["NOSHEBANG"], "#!"),
        ("mgpu_client.srun", [], "give a command"),
        ("mgpu_client.srun", ["--gpus", "-1", "true"], "--gpus"),
        ("mgpu_client.queue", ["--bogus"], "--bogus"),
        ("mgpu_client.queue", ["-t", "SLEEPING"], "SLEEPING"),
        ("mgpu_client.queue", ["-j", "abc"], "abc"),
        ("mgpu_client.scancel", [], "No job identification"),
        ("mgpu_client.scancel", ["x1"], "Invalid job id x1"),
        ("mgpu_client", ["frobnicate"], "frobnicate"),
        ("mgpu_client", ["queue", "--master", "host:notaport"], "port"),
        ("mgpu_client.queue", ["--master", "host:notaport"], "port"),  # the quick path
        ("mgpu_client.srun", ["--master", "host:notaport", "true"], "port"),
        ("mgpu_client.srun", ["--master", "host:²", "true"], "port"),  # a digit int() refuses
        ("mgpu_client.sbatch", ["--wrap", "true", "script.sh"], "--wrap"),
        # The job commands' own parser (mgpu_client.cmdline), as Slurm's getopt_long words it.
        ("mgpu_client.sbatch", ["--bogus", "--wrap", "true"], "unrecognized option '--bogus'"),
        ("mgpu_client.srun", ["-j", "true"], "invalid option -- 'j'"),
        ("mgpu_client.srun", ["--n=2", "true"], "ambiguous"),
        ("mgpu_client.srun", ["--label=yes", "true"], "doesn't allow an argument"),
        ("mgpu_client.srun", ["-n"], "requires an argument"),
        ("mgpu_client.sbatch", ["--reservation", "r", "--wrap", "true"], "no reservations"),
        ("mgpu_client.srun", ["-N", "2", "true"], "multi-node jobs are not supported"),
        ("mgpu_client.scancel", ["--bogus", "1"], "unrecognized option '--bogus'"),
        ("mgpu_client.scancel", ["²"], "Invalid job id"),  # a digit int() refuses
        ("mgpu_client", ["submit", "--array", "5-1", "true"], "5-1"),
        ("mgpu_server", ["--port", "99999"], "99999"),
        ("mgpu_node", ["--gpu-count", "100"], "--gpu-count"),
        # Absurd numbers.
        ("mgpu_client.sbatch", ["--mem", "1" + "0" * 30, "--wrap", "true"], "more memory"),
        ("mgpu_client.srun", ["--mem", "1" + "0" * 30, "true"], "more memory"),
        ("mgpu_client.sbatch", ["-t", "99999999999", "--wrap", "true"], "longer than"),
        ("mgpu_client.srun", ["-t", "9" * 40, "true"], "longer than"),
        ("mgpu_client.srun", ["-c", "99999999999", "true"], "--cpus"),
        ("mgpu_client.srun", ["-c", "1" + "0" * 5000, "true"], "--cpus"),
        ("mgpu_client.srun", ["-G", "99999999999", "true"], "--gpus"),
        ("mgpu_client.sbatch", ["--nice=-99999999999", "--wrap", "true"], "--nice"),
        ("mgpu_client.sbatch", ["--array", "0-99999999999", "--wrap", "true"], "too large"),
        ("mgpu_client.sbatch", ["--gres", "gpu:99999999999", "--wrap", "true"], "--gres"),
        ("mgpu_client.sbatch", ["--begin", "now+1" + "0" * 400, "--wrap", "true"], "begin"),
        ("mgpu_client.scancel", ["1" + "0" * 30], "Invalid job id"),
        ("mgpu_client.scancel", ["1_" + "9" * 5000], "Invalid job id"),
        ("mgpu_client.queue", ["-j", "1" + "0" * 30], "invalid job id"),
        ("mgpu_client", ["hold", "1" + "0" * 30], "invalid job id"),
        ("mgpu_client", ["attach", "1" + "0" * 30], "JOB_ID"),
        ("mgpu_client", ["update", "1", "--time", "99999999999"], "longer than"),
        # What the queue shows must be text; the command and environment need not be.
        ("mgpu_client.srun", ["-J", os.fsdecode(b"n\xff"), "true"], "n\\xff is not UTF-8"),
        ("mgpu_client.sbatch", ["-o", os.fsdecode(b"\xff.out"), "--wrap", "true"], "--output"),
        ("mgpu_client.sbatch", ["-D", os.fsdecode(b"/tmp/\xff"), "--wrap", "true"], "directory"),
    ],
)
def test_one_line_error(module: str, args: list[str], fragment: str, tmp_path: Path) -> None:
    (tmp_path / "NOSHEBANG").write_text("echo no interpreter line\n")
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "MGPU_MASTER": "127.0.0.1:1", "HOME": str(tmp_path)},
    )
    assert result.returncode == EXIT_USAGE, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert fragment in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("host", ["a..b", "x" * 70, os.fsdecode(b"\xff")])
def test_a_host_name_the_resolver_cannot_encode_is_unreachable(host: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mgpu_client.srun", "--master", f"{host}:1", "true"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == EXIT_UNREACHABLE, result.stderr
    assert result.stderr.count("\n") == 1 and "not a valid host name" in result.stderr
