"""bench.startup's summary and table, on made-up figures (the benchmark itself runs in the
smoke test)."""

from __future__ import annotations

from typing import Any

from bench import startup


def _figures(median_ms: float) -> dict[str, Any]:
    return startup.summary([median_ms / 1000.0] * 3)


def _results(bundle: bool) -> dict[str, Any]:
    commands: dict[str, Any] = {
        "venv": {"sbatch": _figures(12.0), "srun_true": _figures(25.0), "python_site": _figures(9)}
    }
    if bundle:
        commands["bundle"] = {"sbatch": _figures(14.0), "srun_true": _figures(40.0)}
    cases = startup.EMPTY_QUEUE + startup.PENDING_QUEUE
    return {
        "runs": 3,
        "pending_jobs": 500,
        "load_before": [0.1, 0.2, 0.3],
        "load_after": [0.4, 0.5, 0.6],
        "commands": commands,
        "labels": {c.key: c.label for c in cases},
        "budget_ms": {c.key: c.budget_ms for c in cases},
        "loop": {"venv": {"jobs_per_s": 80.0, "n": 200, "seconds": 2.5}},
        "skipped": {"venv/sinfo": "mgpu_client.sinfo not written yet", "bundle/python_site": ""},
    }


def test_summary_median_and_p90() -> None:
    s = startup.summary([i / 1000.0 for i in range(1, 21)])  # 1..20 ms
    assert s["n"] == 20 and s["min"] == 1.0 and s["max"] == 20.0
    assert s["median"] == 10.5
    assert s["p90"] == 18.0
    assert startup.summary([i / 1000.0 for i in range(1, 31)])["p90"] == 27.0
    assert s["samples_ms"] == sorted(s["samples_ms"])


def test_table_judges_each_command_against_its_budget() -> None:
    lines = startup.table(_results(bundle=False)).splitlines()
    (sbatch,) = [x for x in lines if x.startswith("sbatch --wrap true ")]
    assert "PASS" in sbatch and "6.3" in sbatch  # 12 ms <= 15 ms, beside Slurm's figure
    (srun,) = [x for x in lines if x.startswith("srun true ")]
    assert "FAIL" in srun  # 25 ms > 20 ms
    (python,) = [x for x in lines if x.startswith("python -c pass ")]
    assert "PASS" not in python and "FAIL" not in python  # the floor has no budget
    assert not [x for x in lines if x.startswith("squeue")]  # not measured: no row
    assert "skipped venv/sinfo: mgpu_client.sinfo not written yet" in lines
    assert not [x for x in lines if "python_site" in x]  # a skip with nothing to say
    assert any("80 jobs/s" in x and "Slurm 222/s" in x for x in lines)
    assert lines[-1] == "load average (1, 5, 15 min) before: 0.10 0.20 0.30; after: 0.40 0.50 0.60"


def test_table_sets_the_bundle_against_the_venv() -> None:
    lines = startup.table(_results(bundle=True)).splitlines()
    (sbatch,) = [x for x in lines if x.startswith("sbatch --wrap true ")]
    assert " 1.17 " in sbatch and sbatch.count("PASS") == 2  # 14/12 <= 1.3x; 12 <= 15 ms
    (srun,) = [x for x in lines if x.startswith("srun true ")]
    assert " 1.60 " in srun and srun.count("FAIL") == 2  # 40/25 > 1.3x; 25 > 20 ms
    (python,) = [x for x in lines if x.startswith("python -c pass ")]
    assert "PASS" not in python  # no bundle figure, no ratio
