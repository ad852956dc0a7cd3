"""/metrics: valid Prometheus text (parsed back by prometheus-client's own parser), the
numbers the state holds, label values escaped, and every metric the Grafana dashboard in
docs/ queries is one the master exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mgpu_core.models import GpuSample, JobSpec
from mgpu_server.net.metrics import Metrics
from tests.helpers.nodes import node_info
from tests.helpers.state import make_state

pytestmark = pytest.mark.timeout(30)
DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana-dashboard.json"


def scraped() -> tuple[dict[str, list[tuple[dict[str, str], float]]], Metrics]:
    state = make_state()
    state.node_join(node_info("n1", 2), now=0.0)
    metrics = Metrics(state)
    running = state.submit('al"ice', JobSpec(argv=["x"], gpus=1), now=0.0)
    state.submit("bob", JobSpec(argv=["y"], gpus=2), now=0.0)
    state.schedule(now=1.0)
    state.heartbeat("n1", [GpuSample(index=0, utilization_pct=77, memory_used_bytes=1 << 30)], 2.0)
    metrics.turn(pass_s=0.002, commit_s=0.001, dispatch_s=0.004)
    assert running.node_id == "n1"
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples, metrics


def test_the_exposition_parses_and_says_what_the_state_holds() -> None:
    samples, _ = scraped()
    jobs = {(lb["state"], lb["user"]): v for lb, v in samples["mgpu_jobs"]}
    assert jobs == {("RUNNING", 'al"ice'): 1, ("PENDING", "bob"): 1}
    assert samples["mgpu_node_gpus_allocated"] == [({"node": "n1"}, 1.0)]
    assert samples["mgpu_node_gpus_total"] == [({"node": "n1"}, 2.0)]
    util = {lb["gpu"]: v for lb, v in samples["mgpu_gpu_utilization_percent"]}
    assert util == {"0": 77.0}  # gpu 1 was never measured: no sample rather than a made-up 0
    assert dict((lb["reason"], v) for lb, v in samples["mgpu_jobs_pending"]) == {"Resources": 1}
    assert samples["mgpu_submissions_total"] == [({}, 2.0)]
    assert samples["mgpu_job_starts_total"] == [({}, 1.0)]
    assert samples["mgpu_scheduling_pass_seconds_count"] == [({}, 1.0)]


def test_every_metric_the_dashboard_queries_exists() -> None:
    samples, _ = scraped()
    exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]
    names = {m for e in exprs for m in re.findall(r"\b(mgpu_[a-z_]+)", e)}
    assert names and names <= set(samples), names - set(samples)
