"""How fast work gets in and starts: durable submits over one connection and through
``mgpu_sbatch``, dispatch latency, end-to-end throughput of trivial jobs, and the GPU turn
queue's switch time.

Start and end of a job are observed on the node with FIFOs: a job's first instruction opens a
FIFO for writing, which completes the benchmark's blocked open for reading at that instant;
a job's exit closes its end, which the benchmark sees as EOF. No polling, no clock in the job.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from bench.harness import BIN, LocalCluster, summary, wait_for
from mgpu_core.models import JobSpec


def _spec(argv: list[str], gpus: int = 1, **kw: Any) -> JobSpec:
    return JobSpec(argv=argv, gpus=gpus, cwd="/", stdout_path="/dev/null", **kw)


def submit_throughput(root: Path, *, jobs: int, repeats: int) -> dict[str, Any]:
    """Acknowledged (committed) submissions per second over one connection, pipelined, into
    a cluster with no free GPU (no node yet): a burst that queues, as when a lab's nodes are
    busy. Each run's jobs are cancelled before the next."""
    rates = []
    with LocalCluster(root).start() as cluster, cluster.client() as client:
        for _ in range(repeats):
            specs = [_spec(["true"]) for _ in range(jobs)]
            started = time.perf_counter()
            ids = client.submit_many(specs)
            rates.append(len(ids) / (time.perf_counter() - started))
            for i in range(0, len(ids), 10_000):  # the protocol's limit per request
                client.cancel(list(ids[i : i + 10_000]))
    rates.sort()
    return {"jobs_per_s": rates[len(rates) // 2], "min": rates[0], "max": rates[-1], "n": jobs}


def sbatch_loop(root: Path, *, jobs: int) -> dict[str, Any]:
    """``for i in ...; do mgpu_sbatch --wrap true; done`` in a shell: jobs per second."""
    with LocalCluster(root).start() as cluster:
        script = f'for i in $(seq {jobs}); do "{BIN}/mgpu_sbatch" -H --wrap true >/dev/null; done'
        started = time.perf_counter()
        subprocess.run(["sh", "-c", script], check=True, env=cluster.env, cwd=root)
        elapsed = time.perf_counter() - started
    return {"jobs_per_s": jobs / elapsed, "n": jobs}


class FifoWatch:
    """A FIFO the benchmark opens for reading in a thread: ``opened`` is when a job opened it
    for writing, ``closed`` when every writer is gone (the job exited)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            os.mkfifo(path)
        self.opened = 0.0
        self.closed = 0.0
        self.ready = threading.Event()
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        fd = os.open(self.path, os.O_RDONLY)  # blocks until the job opens it to write
        self.opened = time.perf_counter()
        self.ready.set()
        while os.read(fd, 4096):
            pass
        self.closed = time.perf_counter()
        os.close(fd)
        self.done.set()

    def wait(self, timeout_s: float = 30.0) -> None:
        if not self.done.wait(timeout_s):
            raise RuntimeError(f"no job used {self.path} within {timeout_s} s")


def dispatch_latency(root: Path, *, samples: int) -> dict[str, Any]:
    """From ``submit`` returning to the job's first instruction on the node (ms)."""
    latencies = []
    with LocalCluster(root).start(node_gpus={"n1": 8}) as cluster, cluster.client() as client:
        fifo = root / "dispatch.fifo"
        for i in range(samples + 3):
            watch = FifoWatch(fifo)
            client.submit(_spec(["sh", "-c", f": > {fifo}"]))
            returned = time.perf_counter()
            watch.wait()
            if i >= 3:  # the first few warm the page cache and the agent
                latencies.append(watch.opened - returned)
    return {**summary(latencies), "samples_ms": [x * 1000 for x in latencies]}


def end_to_end(root: Path, *, jobs: int, gpus: int = 8) -> dict[str, Any]:
    """Trivial 1-GPU jobs on one node with ``gpus`` fake GPUs: submitted to all finished."""
    with LocalCluster(root).start(node_gpus={"n1": gpus}) as cluster, cluster.client() as client:
        client.submit_many([_spec(["true"]) for _ in range(20)])  # warm up
        cluster.wait_idle()
        started = time.perf_counter()
        client.submit_many([_spec(["true"]) for _ in range(jobs)])
        wait_for(lambda: not client.info()["jobs"], 600, "all jobs to finish", every_s=0.02)
        elapsed = time.perf_counter() - started
        states = {j["state"] for j in client.queue(include_finished=True)["jobs"]}
    if states != {"COMPLETED"}:
        raise RuntimeError(f"end-to-end jobs ended as {states}")
    return {"jobs_per_s": jobs / elapsed, "n": jobs, "seconds": elapsed}


def turn_switch(root: Path, *, samples: int) -> dict[str, Any]:
    """GPU turn queue: one turn's job exits on the node -> the next turn's job's first
    instruction on the node (ms), one fake GPU, rotation alice, bob."""
    switches = []
    with LocalCluster(root).start(node_gpus={"n1": 1}) as cluster, cluster.client() as admin:
        admin.request("turns", action="set", users=["alice", "bob"])
        admin.request("turns", action="mode", mode="queue")
        alice, bob = cluster.client("alice"), cluster.client("bob")
        try:
            for i in range(samples + 2):
                first, second = (alice, bob) if i % 2 == 0 else (bob, alice)
                a, b = root / "turn-a.fifo", root / "turn-b.fifo"
                watch_a, watch_b = FifoWatch(a), FifoWatch(b)
                # The first job holds the GPU until the benchmark has queued the second.
                gate = root / "gate.fifo"
                if not gate.exists():
                    os.mkfifo(gate)
                first.submit(_spec(["sh", "-c", f"exec 3>{a}; read x < {gate}"]))
                watch_a.ready.wait(30)
                second.submit(_spec(["sh", "-c", f": > {b}"]))
                wait_for(lambda: _pending_reason(admin) is not None, 30, "the second job queued")
                with open(gate, "w") as g:
                    g.write("go\n")
                watch_a.wait()
                watch_b.wait()
                if i >= 2:
                    switches.append(watch_b.opened - watch_a.closed)
                cluster.wait_idle()
        finally:
            alice.close()
            bob.close()
    return summary(switches)


def _pending_reason(client: Any) -> str | None:
    jobs = client.queue(states=["PENDING"])["jobs"]
    return str(jobs[0]["reason"]) if jobs else None
