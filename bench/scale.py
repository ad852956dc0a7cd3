"""The master's scheduling pass at scale, in process: a real :class:`ClusterState` (MemoryStore),
nodes registered through ``node_join`` with the hello an agent sends, every GPU busy, a long
queue of pending jobs from many users, then the passes that matter, timed one by one:

- ``end``: one running job ends, its GPU frees and the top pending job must start;
- ``burst``: 1,000 new submissions arrive (one loop turn's worth), then the pass;
- ``idle``: a routine heartbeat, then the pass the server would run (none: nothing changed);
- ``capped``: the pass a week later, when the whole queue reaches the age cap at once (the one
  pass that moves every job to its capped list; see ``mgpu_server.state.pending``);
- ``frag``: backfill on a fragmented cluster: one GPU frees on every node while 200 whole-node
  jobs wait at the top; the pass reserves nodes for 64 of them and starts 1-GPU jobs on the
  other free GPUs (its time includes building one launch message per start).

Also the process's RSS growth while it builds the state, the cost of one submit, and the
longest garbage collection that ran inside a timed pass: with ~500,000 objects in memory a
full collection takes ~200 ms here and runs when allocations trigger it, whatever the code is
doing, so it lands in a pass now and then and is shown apart. ``python -m bench.scale`` prints
a table for three sizes (about 10 s); ``python -m bench.scale NODES PENDING`` measures one.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from typing import Any

import psutil

from mgpu_core.models import GpuSample, JobExited, JobSpec, NodeHello
from mgpu_server.api.permissions import start_refusal
from mgpu_server.scheduling.policy import PolicyConfig, Qos
from mgpu_server.state.cluster import ClusterState
from mgpu_server.storage.store import MemoryStore

USERS = 50
BURST = 1_000
CPUS_PER_NODE = 64
CPUS_PER_JOB = 4
GIB = 1 << 30
# Time limits (0 = none), nice values and QoS in a realistic mix, so priorities differ.
LIMITS_S = (3600, 4 * 3600, 24 * 3600, 0)
NICES = (0, 0, 0, 10, 100)
QOS_NAMES = ("normal", "normal", "high", "low")
POLICY = PolicyConfig(
    qos={"normal": Qos("normal", priority=10), "high": Qos("high", priority=100), "low": Qos("low")}
)
SIZES = ((10, 1_000), (100, 10_000), (1_000, 100_000))


def hello(node_id: str, gpus: int) -> dict[str, Any]:
    """A node's registration as its agent's validated hello carries it."""
    return {
        "node_id": node_id,
        "hostname": f"{node_id}.cluster.local",
        "address": "10.0.0.1",
        "cpus": CPUS_PER_NODE,
        "mem_bytes": 512 * GIB,
        "gpu_backend": "nvml",
        "agent_version": "bench",
        "gpus": [
            {
                "index": i,
                "uuid": f"GPU-{node_id}-{i:02d}",
                "name": "NVIDIA H100 80GB HBM3",
                "memory_total_bytes": 80 * GIB,
                "visible_id": str(i),
                "fake": False,
            }
            for i in range(gpus)
        ],
        "running_job_ids": [],
    }


def _spec(i: int) -> JobSpec:
    return JobSpec(
        name=f"train-{i % 97}",
        argv=["python", "train.py", f"--seed={i}"],
        gpus=1,
        cpus=CPUS_PER_JOB,
        mem_bytes=32 * GIB,
        time_limit_s=LIMITS_S[i % len(LIMITS_S)],
        nice=NICES[i % len(NICES)],
        qos=QOS_NAMES[i % len(QOS_NAMES)],
        cwd="/home/user",
        env={"OMP_NUM_THREADS": "4"},
    )


def _samples(gpus: int, healthy: bool = True) -> list[GpuSample]:
    return [
        GpuSample(index=i, healthy=healthy, utilization_pct=97, memory_used_bytes=60 * GIB)
        for i in range(gpus)
    ]


def _stats(prefix: str, samples_s: list[float]) -> dict[str, float]:
    ordered = sorted(samples_s)
    n = len(ordered)
    return {
        f"{prefix}_median_ms": statistics.median(ordered) * 1000,
        f"{prefix}_p99_ms": ordered[min(n - 1, max(0, round(0.99 * n + 0.5) - 1))] * 1000,
        f"{prefix}_max_ms": ordered[-1] * 1000,
    }


def empty_state(now: float) -> ClusterState:
    """A master's state on a memory store, with the benchmarks' policy and the master's rules."""
    return ClusterState(
        MemoryStore(),
        kill_grace_s=10.0,
        node_timeout_s=1e12,
        now=now,
        policy=POLICY,
        start_rule=start_refusal,
    )


def build(nodes: int, gpus_per_node: int, pending: int, now: float) -> ClusterState:
    """Every GPU busy with a 1-GPU job, then ``pending`` 1-GPU jobs queued behind them."""
    cluster = empty_state(now)
    for n in range(nodes):
        cluster.node_join(NodeHello.from_wire(hello(f"gpu{n:04d}", gpus_per_node)), now)
    # Some history, so fair-share differs between users.
    for u in range(USERS):
        cluster.usage.add(f"u{u}", 3600.0 * (u % 10), now - 3600.0, now)
    for i in range(nodes * gpus_per_node):
        cluster.submit(f"u{i % USERS}", _spec(i), now - 7200.0 + i * 1e-3)
    # As the server does: a pass stopped by the queue depth asks for another.
    while cluster.needs_pass:
        cluster.schedule(now)
    assert len(cluster.running) == nodes * gpus_per_node, "every GPU should be busy"
    for i in range(pending):
        cluster.submit(f"u{(i * 7) % USERS}", _spec(i), now + i * 1e-4)
    cluster.schedule(now + 1.0)
    cluster.store.commit()
    cluster.take_effects()
    cluster.end_turn()
    return cluster


def measure_pass(nodes: int, gpus_per_node: int, pending: int, *, repeats: int) -> dict[str, float]:
    """Median, p99 and max (ms) of each kind of pass over ``repeats`` rounds, the RSS growth
    (MiB) of the state, the time to build it (s), and the cost of one submit (µs)."""
    gc.collect()
    _GC.max_ms = 0.0
    gc.callbacks.append(_GC)
    try:
        return _measure(nodes, gpus_per_node, pending, repeats)
    finally:
        gc.callbacks.remove(_GC)


def _measure(nodes: int, gpus_per_node: int, pending: int, repeats: int) -> dict[str, float]:
    proc = psutil.Process()
    rss_before = proc.memory_info().rss
    now = 1_000_000.0
    started_s = time.perf_counter()
    cluster = build(nodes, gpus_per_node, pending, now)
    build_s = time.perf_counter() - started_s
    gc.collect()
    rss_mib = (proc.memory_info().rss - rss_before) / 2**20
    times: dict[str, list[float]] = {k: [] for k in ("end", "burst", "idle", "capped", "frag")}
    submit_s: list[float] = []
    now += 2.0
    first_node = next(iter(cluster.nodes))
    for r in range(repeats):
        times["end"].append(_end_one(cluster, now, check=r == 0))
        # (b) A burst of submissions (what one loop turn under load can bring).
        burst = []
        for i in range(BURST):
            spec, user = _spec(r * BURST + i), f"u{i % USERS}"
            started_s = time.perf_counter()
            burst.append(cluster.submit(user, spec, now).job_id)
            submit_s.append(time.perf_counter() - started_s)
        times["burst"].append(_timed_pass(cluster, now)[0])
        # (c) A routine heartbeat: nothing changed, so no pass over the queue.
        cluster.heartbeat(first_node, _samples(gpus_per_node), now)
        times["idle"].append(_timed_pass(cluster, now)[0])
        # Back to the same size for the next round (not timed).
        for job_id in burst:
            cluster.control.cancel(cluster.get(job_id), now)
        cluster.schedule(now)
        cluster.store.commit()
        cluster.take_effects()
        cluster.end_turn()
        now += 1.0
    # (d) A week later every waiting job has reached the age cap at once: the one pass in a
    # job's life that moves it (see mgpu_server.state.pending).
    now += cluster.policy.max_age_s
    times["capped"].append(_end_one(cluster, now, check=True))
    times["frag"].append(_fragmented(cluster, gpus_per_node, now))
    out: dict[str, float] = {
        "nodes": nodes,
        "gpus": nodes * gpus_per_node,
        "pending": len(cluster.pending),
        "repeats": repeats,
        "build_s": build_s,
        "rss_mib": rss_mib,
        "submit_median_us": statistics.median(submit_s) * 1e6,
        "gc_max_ms": _GC.max_ms,
    }
    for kind, samples in times.items():
        out.update(_stats(kind, samples))
    return out


class _GcPauses:
    """The longest garbage collection (ms) that ran inside a timed pass: with 100,000 jobs in
    memory a full (generation 2) collection takes far longer than a pass, and runs whenever
    allocations trigger it, so it shows up in a pass's max now and then."""

    def __init__(self) -> None:
        self.timing = False
        self.max_ms = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self.timing:
            self.max_ms = max(self.max_ms, (time.perf_counter() - self._started) * 1000)


_GC = _GcPauses()


def _timed_pass(cluster: ClusterState, now: float) -> tuple[float, int]:
    """(seconds, jobs started) of one ``schedule`` call."""
    _GC.timing = True
    started_s = time.perf_counter()
    started = cluster.schedule(now)
    seconds = time.perf_counter() - started_s
    _GC.timing = False
    return seconds, started


def _end_one(cluster: ClusterState, now: float, *, check: bool) -> float:
    """(a) A job ends: its GPU frees, and the top pending job must take it. With ``check``,
    the top job is found by the formula (O(queue), not timed) to prove it is the one."""
    victim = next(iter(cluster.running.values()))
    top = None
    if check:
        calc = cluster.priorities_at(now)
        top = max(cluster.pending.values(), key=lambda j: (calc.of(j), -j.job_id))
    cluster.job_exited(victim.node_id, _exit(victim.job_id), now)
    seconds, started = _timed_pass(cluster, now)
    assert started == 1, f"expected one start after a job ended, got {started}"
    assert top is None or top.job_id in cluster.running, "the top job should have started"
    cluster.take_effects()
    return seconds


def _fragmented(cluster: ClusterState, gpus_per_node: int, now: float) -> float:
    for node in list(cluster.nodes.values()):
        job_id = next(iter(node.jobs))
        cluster.job_exited(node.node_id, _exit(job_id), now)
    big = []
    for _ in range(200):
        spec = JobSpec(argv=["x"], gpus=gpus_per_node, cpus=CPUS_PER_JOB, time_limit_s=3600)
        big.append(cluster.submit("u0", spec, now))
        cluster.control.update(big[-1], {"priority": 10**6}, now)
    seconds, started = _timed_pass(cluster, now)
    assert all(j.reason == "Resources" for j in big), "the whole-node jobs wait"
    # Up to the queue depth (the 200 count); the server's next loop turn goes on from there.
    expected = min(len(cluster.nodes) - 64, cluster.policy.queue_depth - len(big))
    assert started >= expected, f"only {started} 1-GPU jobs backfilled"
    return seconds


def _exit(job_id: int) -> JobExited:
    return JobExited(job_id=job_id, exit_code=0, restart_count=0)


COLUMNS = (
    ("nodes", "nodes", "{:.0f}"),
    ("pending", "pending", "{:.0f}"),
    ("end ms med/p99/max", "end", None),
    ("burst ms med/p99/max", "burst", None),
    ("idle ms med/max", "idle", None),
    ("capped ms", "capped_max_ms", "{:.1f}"),
    ("frag ms", "frag_max_ms", "{:.1f}"),
    ("GC ms", "gc_max_ms", "{:.0f}"),
    ("submit us", "submit_median_us", "{:.0f}"),
    ("RSS MiB", "rss_mib", "{:.0f}"),
    ("build s", "build_s", "{:.1f}"),
)


def _cell(row: dict[str, float], key: str, fmt: str | None) -> str:
    if fmt is not None:
        return fmt.format(row[key])
    if key == "idle":
        return f"{row['idle_median_ms']:.3f}/{row['idle_max_ms']:.3f}"
    return "/".join(f"{row[f'{key}_{s}_ms']:.1f}" for s in ("median", "p99", "max"))


def table(rows: list[dict[str, float]]) -> str:
    cells = [[h for h, _, _ in COLUMNS]]
    cells += [[_cell(row, key, fmt) for _, key, fmt in COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells)


def main(argv: list[str]) -> int:
    sizes = [(int(argv[0]), int(argv[1]))] if len(argv) == 2 else list(SIZES)
    rows = []
    for nodes, pending in sizes:
        repeats = 100 if pending <= 10_000 else 30
        rows.append(measure_pass(nodes, 8, pending, repeats=repeats))
        print(f"measured {nodes} nodes, {pending} pending", file=sys.stderr, flush=True)
        gc.collect()
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
