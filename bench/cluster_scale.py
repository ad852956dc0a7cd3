"""The master at scale, end to end: simulated nodes speaking the real protocol, a queue of
pending jobs submitted over one connection, then the master's scheduling-pass time (timed by
the master itself), its memory, and the time to list the queue."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from bench.harness import BIN, LocalCluster, summary, wait_for
from bench.simnodes import SimNodes
from mgpu_core import auth
from mgpu_core.models import JobSpec

USERS = 50


def master_at_scale(root: Path, *, nodes: int, gpus: int, pending: int) -> dict[str, Any]:
    args = ("--max-connections-per-address", str(nodes + 64), "--node-timeout", "60")
    with LocalCluster(root, master_args=args).start() as cluster:
        key = auth.load_key(cluster.state / auth.KEY_FILE)
        sims = SimNodes(cluster.port, key, count=nodes, gpus=gpus, tls_ca=cluster.ca_file)
        sims.start()
        try:
            total_gpus = nodes * gpus
            with cluster.client() as client:
                specs = [
                    JobSpec(argv=["train"], gpus=1, cwd="/", nice=i % 7, name=f"u{i % USERS}")
                    for i in range(total_gpus + pending)
                ]
                started = time.perf_counter()
                client.submit_many(specs)
                submit_s = time.perf_counter() - started
                wait_for(lambda: sims.launched >= total_gpus, 300, "every GPU busy")
                # One job ends: its GPU frees and the pass must find the top pending job.
                pass_ms = []
                running = [j["job_id"] for j in client.queue(states=["RUNNING"])["jobs"]]
                for job_id in running[:5]:
                    launched = sims.launched
                    client.cancel([job_id])

                    # The pass that follows the exit starts the top pending job on that GPU
                    # (job_started from a node triggers no further pass).
                    def next_launch(before: int = launched) -> bool:
                        return sims.launched > before

                    wait_for(next_launch, 60, "the next job's launch")
                    pass_ms.append(client.info()["scheduler"]["last_ms"] / 1000)
                info = client.info()
            rss_mb = cluster.process().memory_info().rss / 2**20
            listing = []
            for _ in range(3):
                t0 = time.perf_counter()
                subprocess.run(
                    [f"{BIN}/mgpu_queue"], env=cluster.env, stdout=subprocess.DEVNULL, check=True
                )
                listing.append(time.perf_counter() - t0)
        finally:
            sims.stop()
    return {
        "nodes": nodes,
        "gpus": nodes * gpus,
        "pending": info["jobs"].get("PENDING", 0),
        "running": info["jobs"].get("RUNNING", 0),
        "pass_ms": summary(pass_ms),
        "master_rss_mb": rss_mb,
        "queue_list_ms": summary(listing),
        "submit_jobs_per_s": len(specs) / submit_s,
    }
