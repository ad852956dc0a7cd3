"""The HTTP API at scale (issue 14): a master with ``[http]`` on, simulated nodes speaking the
real protocol (1,000 of 8 GPUs, all busy) and 10,000 jobs; then, over HTTPS with a user's
token, the job list (``GET /api/jobs``) and ``GET /metrics``, each timed from the request to
the last byte; and the master's CPU while nothing happens with the listener on."""

from __future__ import annotations

import ssl
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.dashboard import open_signed_in
from bench.harness import LocalCluster, summary, wait_for
from bench.simnodes import SimNodes
from mgpu_core import auth
from mgpu_core.models import JobSpec

JOB_LIST_MS = 100.0  # issue 14's bars
METRICS_MS = 50.0
IDLE_CPU_PCT = 0.5


def http_api(
    root: Path, *, nodes: int, gpus: int, jobs: int, runs: int, idle_s: float
) -> dict[str, Any]:
    root.mkdir(parents=True, exist_ok=True)
    config = root / "master.toml"
    config.write_text('[http]\nlisten = "127.0.0.1:0"\nrate = 0\n')
    args = ("--config", str(config), "--max-connections-per-address", str(nodes + 64))
    with LocalCluster(root / "cluster", master_args=args).start() as cluster:
        key = auth.load_key(cluster.state / auth.KEY_FILE)
        sims = SimNodes(cluster.port, key, count=nodes, gpus=gpus, tls_ca=cluster.ca_file)
        sims.start()
        try:
            with cluster.client() as admin:
                specs = [JobSpec(argv=["train"], gpus=1, cwd="/") for _ in range(jobs)]
                admin.submit_many(specs)
                busy = min(jobs, nodes * gpus)
                wait_for(lambda: sims.launched >= busy, 300, "the GPUs busy")
                token = admin.request("token", action="create", user="bench")["token"]
            get = _getter(cluster, token)
            get("/api/jobs")  # warm-up
            listing = [get("/api/jobs") for _ in range(runs)]
            metrics = [get("/metrics") for _ in range(runs)]
        finally:
            sims.stop()
    # Idle: a quiet cluster (one agent of 8 GPUs, no jobs) with the listener on, scraped
    # every 15 s as Prometheus would, and one dashboard open (headless Chromium, if there is
    # one: it follows /api/events and redraws on every heartbeat's change).
    with LocalCluster(root / "idle", master_args=("--config", str(config))).start(
        node_gpus={"n1": 8}
    ) as quiet:
        with quiet.client() as admin:
            token = admin.request("token", action="create", user="bench")["token"]
        get = _getter(quiet, token)
        browser = open_signed_in(quiet, token)
        master = quiet.process()
        time.sleep(2.0)  # settle: nothing is measured
        cpu_before = sum(master.cpu_times()[:2])
        until = time.monotonic() + idle_s
        while time.monotonic() < until:  # the measurement: the master's CPU while quiet
            get("/metrics")
            time.sleep(min(15.0, max(0.0, until - time.monotonic())))
        idle_pct = 100 * (sum(master.cpu_times()[:2]) - cpu_before) / idle_s
        if browser is not None:
            browser.quit()
    return {
        "nodes": nodes,
        "gpus": nodes * gpus,
        "jobs": jobs,
        "job_list_ms": summary([t for t, _ in listing]),
        "job_list_bytes": listing[0][1],
        "metrics_ms": summary([t for t, _ in metrics]),
        "metrics_bytes": metrics[0][1],
        "idle_cpu_percent": idle_pct,
        "idle_seconds": idle_s,
        "idle_with_dashboard": browser is not None,
    }


def _getter(cluster: LocalCluster, token: str) -> Callable[[str], tuple[float, int]]:
    """GET over HTTPS as the token's user: (seconds to the last byte, bytes)."""
    port = int((cluster.state / "http.port").read_text())
    assert cluster.ca_file is not None
    tls = ssl.create_default_context(cafile=str(cluster.ca_file))

    def get(path: str) -> tuple[float, int]:
        req = urllib.request.Request(f"https://127.0.0.1:{port}{path}")
        req.add_header("Authorization", f"Bearer {token}")
        started = time.perf_counter()
        with urllib.request.urlopen(req, context=tls, timeout=60) as resp:
            size = len(resp.read())
        return time.perf_counter() - started, size

    return get
