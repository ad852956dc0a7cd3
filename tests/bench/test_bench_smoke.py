"""The benchmark suite at tiny sizes: every benchmark runs end to end and reports, so the
suite cannot rot. Its figures are not judged here (benchmarks never fail the tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.__main__ import main

pytestmark = pytest.mark.timeout(300)


def test_quick_run_reports_every_benchmark(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--quick", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    for name in (
        "submit",
        "sbatch_loop",
        "dispatch",
        "end_to_end",
        "commands",
        "turn_switch",
        "idle",
        "scale",
        "startup",
    ):
        assert name in results, name
    assert results["dispatch"]["n"] == 5 and results["end_to_end"]["n"] == 40
    assert results["http"]["job_list_ms"]["n"] == 3 and results["http"]["metrics_bytes"] > 0
    assert "first_paint_ms" in results["dashboard"] or "skipped" in results["dashboard"]
    assert results["submit"]["jobs_per_s"] > 0
    assert all(s["running"] == s["nodes"] * 8 for s in results["scale"])
    venv = results["startup"]["commands"]["venv"]
    assert venv["python_isolated"]["n"] == 3 and venv["mgpu_sbatch"]["n"] == 3
    assert results["startup"]["loop"]["venv"]["jobs_per_s"] > 0
    out = capsys.readouterr().out
    assert "dispatch latency, median" in out and ("PASS" in out or "FAIL" in out)
    assert "command start-up (ms; median over 3 runs)" in out
    assert (tmp_path / "dispatch_latency.png").stat().st_size > 1000
    assert (tmp_path / "pass_time.png").stat().st_size > 1000


def test_unknown_benchmark_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--only", "nope", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
