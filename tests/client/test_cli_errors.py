"""Every command-line mistake: one line naming the problem, the usage exit code (64, not the
2 of an unreachable master), no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mgpu_core.exitcodes import EXIT_USAGE

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
        ("mgpu_client.srun", [], "COMMAND"),
        ("mgpu_client.srun", ["--gpus", "-1", "true"], "--gpus"),
        ("mgpu_client.queue", ["--bogus"], "--bogus"),
        ("mgpu_client.queue", ["-t", "SLEEPING"], "SLEEPING"),
        ("mgpu_client.queue", ["-j", "abc"], "abc"),
        ("mgpu_client.cancel", [], "job ids"),
        ("mgpu_client.cancel", ["x1"], "x1"),
        ("mgpu_client", ["frobnicate"], "frobnicate"),
        ("mgpu_client", ["queue", "--master", "host:notaport"], "port"),
        ("mgpu_client.queue", ["--master", "host:notaport"], "port"),  # the quick path
        ("mgpu_client.srun", ["--master", "host:notaport", "true"], "port"),  # the quick path
        ("mgpu_client.sbatch", ["--wrap", "true", "script.sh"], "--wrap"),
        ("mgpu_client", ["submit", "--array", "5-1", "true"], "5-1"),
        ("mgpu_server", ["--port", "99999"], "99999"),
        ("mgpu_node", ["--gpu-count", "100"], "--gpu-count"),
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
