"""Whole-command wall time of the client tools, as a user at a shell sees it: process start,
imports, connect, request, output, exit."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from bench.harness import BIN, LocalCluster, summary
from mgpu_core.models import JobSpec


def _time(argv: list[str], env: dict[str, str], runs: int, cwd: Path) -> list[float]:
    samples = []
    for _ in range(runs + 1):  # one warm-up run fills the page cache
        started = time.perf_counter()
        subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, check=True)
        samples.append(time.perf_counter() - started)
    return samples[1:]


def command_times(root: Path, *, runs: int, queue_jobs: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with LocalCluster(root).start(node_gpus={"n1": 8}) as cluster:
        env = cluster.env
        results["srun_true"] = summary(_time([f"{BIN}/mgpu_srun", "true"], env, runs, root))
        results["queue_empty"] = summary(_time([f"{BIN}/mgpu_queue"], env, runs, root))
        with cluster.client() as client:
            held = client.submit_many(
                [JobSpec(argv=["true"], hold=True, cwd="/") for _ in range(queue_jobs)]
            )
        results["queue_pending"] = summary(_time([f"{BIN}/mgpu_queue"], env, runs, root))
        results["queue_pending"]["jobs"] = queue_jobs
        cancels = []
        for job_id in held[: runs + 1]:
            started = time.perf_counter()
            subprocess.run([f"{BIN}/mgpu_cancel", str(job_id)], env=env, cwd=root, check=True)
            cancels.append(time.perf_counter() - started)
        results["cancel"] = summary(cancels[1:])
    return results
