"""What an idle cluster costs: CPU and memory of the master and of a node agent (8 fake GPUs,
default heartbeat interval) over a quiet period."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.harness import LocalCluster


def idle_cost(root: Path, *, seconds: float) -> dict[str, Any]:
    with LocalCluster(root).start() as cluster:
        cluster.start_node("n1", 8, "--heartbeat-interval", "5")
        time.sleep(2.0)  # let start-up settle: we measure the steady state
        procs = {"master": cluster.process("master"), "node": cluster.process("n1")}
        before = {k: p.cpu_times() for k, p in procs.items()}
        started = time.monotonic()
        time.sleep(seconds)  # the measurement itself: nothing to wait for but time
        elapsed = time.monotonic() - started
        out = {}
        for name, proc in procs.items():
            after = proc.cpu_times()
            cpu_s = (after.user - before[name].user) + (after.system - before[name].system)
            out[name] = {
                "cpu_percent": 100 * cpu_s / elapsed,
                "rss_mb": proc.memory_info().rss / 2**20,
                "seconds": elapsed,
            }
    return out
