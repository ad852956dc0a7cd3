"""Command start-up (issue 13): each client command's wall time as a user at a shell sees it
(process start, imports, connect, request, output, exit), against a real local cluster.

The Slurm-named commands run from a ``mgpu_client slurm-commands`` directory (scripts that start
Python with ``-I -S``), the ``mgpu_*`` twins from the venv's bin (console scripts, with
``site``); with ``bundle`` the same commands also run from the PyInstaller bundle (its links
and the links its own ``slurm-commands`` writes), and each bundle figure is set against the
venv's. ``python -I -S -c pass`` and ``python -c pass`` are the floor.

Every command is timed round-robin (one run of each, then the next round), so a burst of load
from elsewhere on the machine spreads over all commands instead of landing on one; the first
round is a warm-up and is dropped. A command that cannot run (a Slurm-named module not written
yet, a bundle built before it) is skipped with a note, not an error.
"""

from __future__ import annotations

import importlib.util
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import BIN, LocalCluster
from mgpu_client.slurmcmds import COMMANDS
from mgpu_core.models import JobSpec

# The budget of issue 13: each command's median, and srun's (it also runs the job).
BUDGET_MS = 15.0
SRUN_BUDGET_MS = 20.0
BUNDLE_BAR = 1.3  # the bundle's median may be at most this many times the venv's
# Measured by issue 13 on this kind of machine (2 vCPUs): Slurm's `sbatch --wrap true`, the
# same submit with task-spooler (`ts true`, one host, C), and Slurm's submits in a shell loop.
SLURM_SBATCH_MS = 6.3
TASK_SPOOLER_SUBMIT_MS = 2.2
SLURM_LOOP_JOBS_PER_S = 222.0
DRAIN_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Case:
    """One command line. ``needs``: "held" appends a fresh held job's id (submitted untimed
    just before), "done" the id of a job that has ended. ``drain``: after each run, wait
    (untimed) for the job it submitted to end, so a job never runs under the next sample."""

    key: str
    program: str  # a Slurm name, an mgpu_* tool, or "python"
    args: tuple[str, ...]
    budget_ms: float | None = BUDGET_MS
    needs: str = ""
    drain: bool = False

    @property
    def label(self) -> str:
        return " ".join((self.program, *self.args, *(["ID"] if self.needs else [])))


EMPTY_QUEUE = [
    Case("python_isolated", "python", ("-I", "-S", "-c", "pass"), None),
    Case("python_site", "python", ("-c", "pass"), None),
    Case("sbatch", "sbatch", ("--wrap", "true"), drain=True),
    Case("mgpu_sbatch", "mgpu_sbatch", ("--wrap", "true"), drain=True),
    Case("squeue_empty", "squeue", ()),
    Case("mgpu_queue_empty", "mgpu_queue", ()),
    Case("sinfo", "sinfo", ()),
    Case("scancel", "scancel", (), needs="held"),
    Case("mgpu_cancel", "mgpu_cancel", (), needs="held"),
    Case("sacct", "sacct", ("-j",), needs="done"),
    Case("srun_true", "srun", ("true",), SRUN_BUDGET_MS),
    Case("mgpu_srun_true", "mgpu_srun", ("true",), SRUN_BUDGET_MS),
]
PENDING_QUEUE = [
    Case("squeue_pending", "squeue", ()),
    Case("mgpu_queue_pending", "mgpu_queue", ()),
]


@dataclass
class Toolset:
    """Where one variant's commands are: ``venv`` or ``bundle``."""

    name: str
    slurm_dir: Path
    mgpu_dir: Path
    python: str | None

    def path(self, program: str) -> str | None:
        if program == "python":
            return self.python
        return str((self.mgpu_dir if program.startswith("mgpu_") else self.slurm_dir) / program)


def summary(samples_s: list[float]) -> dict[str, Any]:
    """Median, p90 and the spread, in ms, with every sample."""
    ms = sorted(s * 1000.0 for s in samples_s)
    n = len(ms)
    return {
        "n": n,
        "min": ms[0],
        "median": statistics.median(ms),
        "p90": ms[max(0, math.ceil(0.9 * n) - 1)],  # nearest rank
        "max": ms[-1],
        "samples_ms": ms,
    }


def _missing_modules() -> dict[str, str]:
    """Slurm names whose module is not in this checkout yet: skipped, with a note."""
    return {
        name: f"{module} not written yet"
        for name, (module, _) in COMMANDS.items()
        if importlib.util.find_spec(module) is None
    }


def _write_slurm_commands(mgpu_client: str, directory: Path, env: dict[str, str]) -> None:
    subprocess.run(
        [mgpu_client, "slurm-commands", str(directory)],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


class Runner:
    """Times cases round-robin across toolsets, against one cluster."""

    def __init__(self, cluster: LocalCluster, cwd: Path, toolsets: list[Toolset]) -> None:
        self.cluster = cluster
        self.env = cluster.env
        self.cwd = cwd
        self.toolsets = toolsets
        self.skipped: dict[str, str] = {}  # "variant/key" -> why ("": nothing to say)
        self.samples: dict[str, dict[str, list[float]]] = {t.name: {} for t in toolsets}
        self.client = cluster.client()
        self.done_id = self._finished_job()

    def close(self) -> None:
        self.client.close()

    def _finished_job(self) -> int:
        job_id = self.client.submit(JobSpec(argv=["true"], cwd=str(self.cwd)))
        self._drain()
        return job_id

    def _drain(self) -> None:
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while self.client.info()["jobs"]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs still queued after {DRAIN_TIMEOUT_S} s")
            time.sleep(0.002)

    def skip(self, toolset: Toolset, case: Case, why: str) -> None:
        self.skipped[f"{toolset.name}/{case.key}"] = why

    def rounds(self, cases: list[Case], runs: int) -> None:
        for i in range(runs + 1):  # round 0 is the warm-up: fills the page cache
            for toolset in self.toolsets:
                for case in cases:
                    if f"{toolset.name}/{case.key}" in self.skipped:
                        continue
                    elapsed = self.once(toolset, case)
                    if elapsed is not None and i > 0:
                        self.samples[toolset.name].setdefault(case.key, []).append(elapsed)

    def once(self, toolset: Toolset, case: Case) -> float | None:
        program = toolset.path(case.program)
        if program is None:  # the floor (python) has no bundle row
            self.skip(toolset, case, "")
            return None
        args = list(case.args)
        held = None
        if case.needs == "held":
            held = self.client.submit(JobSpec(argv=["true"], hold=True, cwd=str(self.cwd)))
            args.append(str(held))
        elif case.needs == "done":
            args.append(str(self.done_id))
        started = time.perf_counter()
        result = subprocess.run(
            [program, *args], env=self.env, cwd=self.cwd, capture_output=True, text=True
        )
        elapsed = time.perf_counter() - started
        if held is not None and result.returncode != 0:
            self.client.cancel([held])
        if case.drain or held is not None:
            self._drain()
        if result.returncode != 0:
            # The error's own line: the bootloader's "[PYI-...] Failed to execute" comes last.
            lines = [x for x in result.stderr.splitlines() if x.strip() and "[PYI-" not in x]
            last = lines[-1] if lines else "(no output)"
            self.skip(toolset, case, f"exit {result.returncode}: {last[:200]}")
            return None
        return elapsed

    def loop_rate(self, toolset: Toolset, jobs: int) -> dict[str, Any] | None:
        """``for i in $(seq N); do sbatch --wrap true; done`` in sh: submits per second."""
        program = toolset.path("sbatch")
        if f"{toolset.name}/sbatch" in self.skipped or program is None:
            return None
        script = f'for i in $(seq {jobs}); do "{program}" --wrap true >/dev/null; done'
        started = time.perf_counter()
        subprocess.run(["sh", "-c", script], check=True, env=self.env, cwd=self.cwd)
        elapsed = time.perf_counter() - started
        self._drain()
        return {"jobs_per_s": jobs / elapsed, "n": jobs, "seconds": elapsed}


def startup_times(
    root: Path, *, runs: int, pending_jobs: int, loop_jobs: int, bundle: Path | None = None
) -> dict[str, Any]:
    """The start-up benchmark; ``bundle`` is a built ``dist/mgpu`` to time beside the venv."""
    root.mkdir(parents=True, exist_ok=True)
    work = root / "work"  # the jobs' cwd: sbatch's output files land here
    work.mkdir(exist_ok=True)
    load_before = os.getloadavg()
    with LocalCluster(root / "cluster").start(node_gpus={"n1": 8}) as cluster:
        toolsets = [Toolset("venv", root / "slurm-venv", BIN, sys.executable)]
        _write_slurm_commands(str(BIN / "mgpu_client"), toolsets[0].slurm_dir, cluster.env)
        if bundle is not None:
            toolsets.append(Toolset("bundle", root / "slurm-bundle", bundle, None))
            _write_slurm_commands(str(bundle / "mgpu_client"), toolsets[1].slurm_dir, cluster.env)
        runner = Runner(cluster, work, toolsets)
        try:
            for name, why in _missing_modules().items():
                for toolset in toolsets:
                    for case in EMPTY_QUEUE + PENDING_QUEUE:
                        if case.program == name:
                            runner.skip(toolset, case, why)
            runner.rounds(EMPTY_QUEUE, runs)
            loops = {t.name: runner.loop_rate(t, loop_jobs) for t in toolsets}
            runner.client.submit_many(
                [JobSpec(argv=["true"], hold=True, cwd=str(work)) for _ in range(pending_jobs)]
            )
            runner.rounds(PENDING_QUEUE, runs)
        finally:
            runner.close()
    return {
        "runs": runs,
        "pending_jobs": pending_jobs,
        "load_before": list(load_before),
        "load_after": list(os.getloadavg()),
        "commands": {
            t.name: {k: summary(v) for k, v in runner.samples[t.name].items()} for t in toolsets
        },
        "labels": {c.key: c.label for c in EMPTY_QUEUE + PENDING_QUEUE},
        "budget_ms": {c.key: c.budget_ms for c in EMPTY_QUEUE + PENDING_QUEUE},
        "loop": {k: v for k, v in loops.items() if v is not None},
        "skipped": runner.skipped,
        "bundle": str(bundle) if bundle is not None else None,
        "slurm_reference": {
            "sbatch_ms": SLURM_SBATCH_MS,
            "task_spooler_submit_ms": TASK_SPOOLER_SUBMIT_MS,
            "loop_jobs_per_s": SLURM_LOOP_JOBS_PER_S,
            "source": "issue 13's measurements on a 2-vCPU machine",
        },
    }


def label(results: dict[str, Any], key: str) -> str:
    """The row's name: the command line, with the queue's size where it has one."""
    text = str(results["labels"][key])
    return f"{text} ({results['pending_jobs']} pending)" if key.endswith("_pending") else text


def _verdict(value: float, limit: float | None) -> str:
    if limit is None:
        return ""
    return "PASS" if value <= limit else "FAIL"


def _figures(d: dict[str, Any] | None) -> str:
    return f"{d['median']:>7.1f} {d['p90']:>7.1f}" if d else f"{'-':>7} {'-':>7}"


def _row(results: dict[str, Any], key: str) -> str | None:
    venv = results["commands"].get("venv", {}).get(key)
    bundles = results["commands"].get("bundle")
    ours = bundles.get(key) if bundles is not None else None
    if venv is None and ours is None:
        return None
    row = f"{label(results, key):<30} {_figures(venv)}"
    if bundles is not None:
        row += f" {_figures(ours)}"
        if venv is not None and ours is not None:
            ratio = ours["median"] / venv["median"]
            row += f" {ratio:>6.2f} {_verdict(ratio, BUNDLE_BAR):>6}"
        else:
            row += f" {'':>13}"
    budget = results["budget_ms"][key]
    judged = venv or ours
    assert judged is not None
    row += f" {budget or '-':>7} {_verdict(judged['median'], budget):>7}"
    if key == "sbatch":
        row += f"  {SLURM_SBATCH_MS} (task-spooler {TASK_SPOOLER_SUBMIT_MS})"
    return row


def table(results: dict[str, Any]) -> str:
    """Each command: the venv's median and p90 (the bundle's too, and their ratio against the
    1.3x bar), the budget, pass or fail (of the venv's median), and Slurm's figure where issue
    13 measured one; then the shell-loop rates, what was skipped, and the machine's load."""
    head = f"{'command':<30} {'median':>7} {'p90':>7}"
    if results["commands"].get("bundle") is not None:
        head += f" {'bundle':>7} {'p90':>7} {'ratio':>6} {'<=1.3x':>6}"
    head += f" {'budget':>7} {'verdict':>7}  Slurm"
    lines = [f"command start-up (ms; median over {results['runs']} runs)", head]
    lines += [row for key in results["labels"] if (row := _row(results, key)) is not None]
    for name, loop in results["loop"].items():
        lines.append(
            f"{name}: sbatch --wrap true in a shell loop: {loop['jobs_per_s']:.0f} jobs/s "
            f"({loop['n']} submits; Slurm {SLURM_LOOP_JOBS_PER_S:.0f}/s)"
        )
    lines += [f"skipped {what}: {why}" for what, why in results["skipped"].items() if why]
    before, after = (
        " ".join(f"{x:.2f}" for x in results[k]) for k in ("load_before", "load_after")
    )
    lines.append(f"load average (1, 5, 15 min) before: {before}; after: {after}")
    return "\n".join(lines)
