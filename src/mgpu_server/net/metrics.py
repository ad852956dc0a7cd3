"""``/metrics`` for Prometheus (its text exposition format, 0.0.4): what the master knows now
(jobs by state and user, pending by reason, every node's and GPU's state and NVML samples),
and what it has measured since it started (scheduling passes, dispatches, commits, queue waits,
submissions).

The histograms and counters are observed by the server as things happen; the gauges are read
from the state at scrape time. Both are written here, in ~50 lines, rather than with
prometheus-client: importing it brings http.server, wsgiref and urllib.request (its own
exposition server) into the PyInstaller bundle, a megabyte over the bundle's 40 MB bar, and at
1,000 nodes of 8 GPUs a client-library object per sample would take the scrape past its 50 ms.
The tests parse the output with prometheus-client's own parser.
"""

from __future__ import annotations

import time
from collections import Counter as Tally

from mgpu_server.records.nodes import NodeRecord
from mgpu_server.state.cluster import ClusterState

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_WAITS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86_400, 7 * 86_400)


class Histogram:
    """A Prometheus histogram: cumulative buckets, their sum and count."""

    def __init__(self, name: str, what: str, buckets: tuple[float, ...]) -> None:
        self.name, self.what, self.buckets = name, what, buckets
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.sum += value
        self.count += 1
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1

    def lines(self) -> list[str]:
        out = [f"# HELP {self.name} {self.what}", f"# TYPE {self.name} histogram"]
        out += [
            f'{self.name}_bucket{{le="{b}"}} {n}'
            for b, n in zip(self.buckets, self.counts, strict=True)
        ]
        out.append(f'{self.name}_bucket{{le="+Inf"}} {self.count}')
        return [*out, f"{self.name}_sum {self.sum}", f"{self.name}_count {self.count}"]


class Counter:
    def __init__(self, name: str, what: str) -> None:
        self.name, self.what, self.value = name, what, 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def lines(self) -> list[str]:
        return [f"# HELP {self.name}_total {self.what}", f"# TYPE {self.name}_total counter",
                f"{self.name}_total {self.value}"]  # fmt: skip


class Metrics:
    def __init__(self, cluster: ClusterState) -> None:
        self.cluster = cluster
        self.pass_seconds = Histogram("mgpu_scheduling_pass_seconds", "One scheduling pass.", _FAST)
        self.dispatch_seconds = Histogram(
            "mgpu_dispatch_latency_seconds",
            "From the event that let jobs start to their launches leaving the master.",
            _FAST,
        )
        self.commit_seconds = Histogram(
            "mgpu_db_commit_seconds", "One turn's database commit.", _FAST
        )
        self.queue_wait_seconds = Histogram(
            "mgpu_queue_wait_seconds", "From eligible to started, per job start.", _WAITS
        )
        self.submissions = Counter("mgpu_submissions", "Jobs accepted (an array counts each task).")
        self.starts = Counter("mgpu_job_starts", "Jobs started.")
        self.measured = (
            self.pass_seconds, self.dispatch_seconds, self.commit_seconds,
            self.queue_wait_seconds, self.submissions, self.starts,
        )  # fmt: skip

    def render(self) -> bytes:
        measured = [line for m in self.measured for line in m.lines()]
        return ("\n".join(measured) + "\n" + self._gauges()).encode()

    def _gauges(self) -> str:
        cluster = self.cluster
        out: list[str] = []
        jobs = Tally((j.display_state(), j.user) for j in cluster.table.jobs.values())
        _family(out, "mgpu_jobs", "Jobs in the master's memory, by state and user.")
        out.extend(
            f'mgpu_jobs{{state="{s}",user="{_esc(u)}"}} {n}' for (s, u), n in sorted(jobs.items())
        )
        reasons = Tally(j.reason or "None" for j in cluster.pending.values())
        _family(out, "mgpu_jobs_pending", "Pending jobs by reason.")
        out.extend(
            f'mgpu_jobs_pending{{reason="{_esc(r)}"}} {n}' for r, n in sorted(reasons.items())
        )
        _family(out, "mgpu_node_up", "1 if the node is connected and heartbeating.")
        nodes = sorted(cluster.nodes.values(), key=lambda n: n.node_id)
        for node in nodes:
            out.append(f'mgpu_node_up{{node="{_esc(node.node_id)}"}} {int(node.up)}')
        for name, what in (
            ("total", "GPUs of the node."),
            ("healthy", "Healthy GPUs of the node."),
            ("allocated", "GPUs of the node allocated to jobs."),
        ):
            _family(out, f"mgpu_node_gpus_{name}", what)
            for node in nodes:
                count = (
                    len(node.gpus)
                    if name == "total"
                    else sum(
                        1
                        for g in node.gpus
                        if (g.healthy if name == "healthy" else g.job_id is not None)
                    )
                )
                out.append(f'mgpu_node_gpus_{name}{{node="{_esc(node.node_id)}"}} {count}')
        self._gpu_samples(out, nodes)
        _family(out, "mgpu_pending_jobs_total", "Pending jobs.")
        out.append(f"mgpu_pending_jobs_total {len(cluster.pending)}")
        out.append(f"# scraped at {time.time():.3f}")
        return "\n".join(out) + "\n"

    def _gpu_samples(self, out: list[str], nodes: list[NodeRecord]) -> None:
        families = (
            ("mgpu_gpu_utilization_percent", "NVML utilisation of each GPU (last sample)."),
            ("mgpu_gpu_memory_used_bytes", "Memory used on each GPU (last sample)."),
            ("mgpu_gpu_memory_total_bytes", "Memory of each GPU."),
            ("mgpu_gpu_allocated", "1 if the GPU is allocated to a job."),
        )
        rows: list[list[str]] = [[], [], [], []]
        for node in nodes:
            node_id = _esc(node.node_id)
            for g in node.gpus:
                labels = f'node="{node_id}",gpu="{g.index}",model="{_esc(g.device.model)}"'
                if g.sample.utilization_pct >= 0:
                    rows[0].append(
                        f"mgpu_gpu_utilization_percent{{{labels}}} {g.sample.utilization_pct}"
                    )
                if g.sample.memory_used_bytes >= 0:
                    rows[1].append(
                        f"mgpu_gpu_memory_used_bytes{{{labels}}} {g.sample.memory_used_bytes}"
                    )
                rows[2].append(
                    f"mgpu_gpu_memory_total_bytes{{{labels}}} {g.device.memory_total_bytes}"
                )
                rows[3].append(f"mgpu_gpu_allocated{{{labels}}} {int(g.job_id is not None)}")
        for (name, what), samples in zip(families, rows, strict=True):
            _family(out, name, what)
            out.extend(samples)

    def turn(self, *, pass_s: float, commit_s: float, dispatch_s: float) -> None:
        """One flush of the server: its pass, its commit, and (if it started jobs) the
        dispatch; the jobs submitted and started since the last."""
        lifecycle = self.cluster.lifecycle
        self.pass_seconds.observe(pass_s)
        self.commit_seconds.observe(commit_s)
        waits, lifecycle.start_waits = lifecycle.start_waits, []
        if waits:
            self.dispatch_seconds.observe(dispatch_s)
            for wait in waits:
                self.queue_wait_seconds.observe(max(0.0, wait))
            self.starts.inc(len(waits))
        if lifecycle.submitted:
            self.submissions.inc(lifecycle.submitted)
            lifecycle.submitted = 0


def _family(out: list[str], name: str, what: str) -> None:
    out.append(f"# HELP {name} {what}")
    out.append(f"# TYPE {name} gauge")


def _esc(value: str) -> str:
    """A label value as the exposition format quotes it."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
