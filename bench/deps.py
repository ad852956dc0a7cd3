"""Scheduling passes with dependent jobs in the queue, in process (a real ClusterState on a
memory store, nodes registered with the hello an agent sends, every GPU busy):

- ``top``: 20,000 pending jobs plus 100 ``afterok`` jobs at the top of the queue (an admin's
  priority) waiting on a running job; then one job ends and its GPU frees: the pass must skip
  the 100 dependents and start the top eligible job (target <= 5 ms).
- ``scale``: 1,000 nodes x 8 GPUs, 100,000 pending of which 1 % depend on running jobs; the
  same pass (target <= 50 ms).

Each sample ends one running job and times the pass that follows. Dependent jobs wait parked
out of the order (their dependency is parsed once, at submit, and evaluated again only when
a job it names changes state), so neither pass steps over them.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from bench.harness import summary
from bench.scale import _exit, _spec, empty_state, hello
from mgpu_core.models import NodeHello
from mgpu_core.states import JobState
from mgpu_server.state.cluster import ClusterState

USERS = 50


def _build(nodes: int, pending: int, dependent: int, *, on_top: bool) -> ClusterState:
    now = 1_000_000.0
    state = empty_state(now)
    for n in range(nodes):
        state.node_join(NodeHello.from_wire(hello(f"gpu{n:04d}", 8)), now)
    for i in range(nodes * 8):
        state.submit(f"u{i % USERS}", _spec(i), now - 7200.0 + i * 1e-3)
    while state.needs_pass:
        state.schedule(now)
    running = list(state.running)  # in start order: the samples end the oldest first
    assert len(running) == nodes * 8, "every GPU should be busy"
    every = max(1, pending // dependent) if dependent else 0
    named = running[-max(1, len(running) // 4) :]  # the samples end the oldest half only
    for i in range(pending):
        spec = _spec(i)
        if every and i % every == 0:
            # Named jobs stay running for the whole run: the dependency never clears.
            spec.dependency = f"afterok:{named[i % len(named)]}"
        job = state.submit(f"u{(i * 7) % USERS}", spec, now + i * 1e-4)
        if on_top and spec.dependency:
            job.priority_override = 10**6  # above every other job
            state.lifecycle.replace(job)
    state.schedule(now + 1.0)
    state.store.commit()
    state.take_effects()
    state.end_turn()
    # As the master does after loading: the long-lived records out of full collections.
    gc.collect()
    gc.freeze()
    return state


def _pass_after_an_end(state: ClusterState, now: float) -> float:
    victim = next(iter(state.running.values()))
    state.job_exited(victim.node_id, _exit(victim.job_id), now)
    started_s = time.perf_counter()
    started = state.schedule(now)
    seconds = time.perf_counter() - started_s
    assert started == 1, f"expected one start after a job ended, got {started}"
    state.take_effects()
    return seconds


def dependency_passes(*, quick: bool) -> dict[str, Any]:
    cases = {
        "top": (4, 2_000, 100) if quick else (25, 20_000, 100),
        "scale": (10, 1_000, 10) if quick else (1_000, 100_000, 1_000),
    }
    out: dict[str, Any] = {}
    for name, (nodes, pending, dependent) in cases.items():
        state = _build(nodes, pending, dependent, on_top=name == "top")
        waiting = [j for j in state.pending.values() if j.spec.dependency]
        assert len(waiting) == dependent and all(state.pending.is_parked(j.job_id) for j in waiting)
        now = 1_000_010.0
        count = min(200, len(state.running) // 2)
        samples = [_pass_after_an_end(state, now + i) for i in range(count)]
        assert all(j.state is JobState.PENDING for j in waiting), "a dependent job started"
        gc.unfreeze()
        out[name] = {
            "nodes": nodes,
            "pending": pending,
            "dependent": dependent,
            "pass_ms": summary(samples),
        }
    return out
