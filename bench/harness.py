"""A local cluster for benchmarks: a real master and real node agents in a scratch directory,
started as processes (as users run them) by :mod:`mgpu_client.launch`, the same code as the
tests' clusters and local mode; plus timing helpers."""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil

from mgpu_client import launch
from mgpu_client.client import Client
from mgpu_core.auth import Token, parse_token
from mgpu_core.config import Address, parse_address, unix_address, with_tls

BIN = Path(sys.executable).parent  # the venv's console scripts (mgpu_srun, ...)
START_TIMEOUT_S = 30.0
QUIET = ("--log-level", "warning")

_T = TypeVar("_T")


def wait_for(
    predicate: Callable[[], _T | None], timeout_s: float, what: str, *, every_s: float = 0.002
) -> _T:
    """:func:`mgpu_client.launch.wait_for`, polling every 2 ms by default: a benchmark times
    what it waits for. (A poll that asks the master costs it CPU: long measurements poll
    slowly.)"""
    return launch.wait_for(predicate, timeout_s, what, every_s=every_s)


def summary(samples_s: list[float], scale: float = 1000.0) -> dict[str, float]:
    """min/median/p99/max (times ``scale``: ms by default) and the count."""
    ordered = sorted(samples_s)
    n = len(ordered)
    p99 = ordered[min(n - 1, max(0, round(0.99 * n + 0.5) - 1))]
    return {
        "n": n,
        "min": ordered[0] * scale,
        "median": statistics.median(ordered) * scale,
        "p99": p99 * scale,
        "max": ordered[-1] * scale,
    }


@dataclass
class LocalCluster(launch.ProcessCluster):
    """Agents with 64 CPUs that run jobs as the benchmark's user and stop them on exit."""

    node_args: tuple[str, ...] = (
        "--stop-jobs-on-exit",
        "--job-user",
        "agent",
        "--allow-root-jobs",
        *QUIET,
    )
    tokens: dict[str, Token] = field(default_factory=dict)

    @property
    def state(self) -> Path:
        return self.master_state

    @property
    def socket(self) -> Address:
        return unix_address(self.master_state / "master.sock")

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "MGPU_MASTER": str(self.socket)}

    def start(self, *, node_gpus: dict[str, int] | None = None, **node_kw: Any) -> LocalCluster:
        self.start_master(*QUIET, timeout_s=START_TIMEOUT_S)
        for node_id, gpus in (node_gpus or {}).items():
            self.start_node(node_id, gpus, **node_kw)
        return self

    def start_node(self, node_id: str, gpus: int, *extra: str, cpus: int = 64) -> None:
        def registered() -> bool:
            with self.client() as client:
                return launch.node_up(client.nodes(), node_id)

        self.start_agent(node_id, *extra, gpus=gpus, cpus=cpus, up=registered)

    def client(self, user: str | None = None) -> Client:
        """The admin's socket session, or a TCP session as ``user`` with a token."""
        if user is None:
            return Client(self.socket)
        if user not in self.tokens:
            with self.client() as admin:
                reply = admin.request("token", action="create", user=user)
            self.tokens[user] = parse_token(reply["token"], "the master's reply")
        ca = str(self.ca_file) if self.ca_file is not None else None
        return Client(with_tls(parse_address(self.address), ca), token=self.tokens[user])

    def process(self, name: str = "master") -> psutil.Process:
        proc = self.master if name == "master" else self.nodes[name]
        assert proc is not None
        return psutil.Process(proc.pid)

    def wait_idle(self, timeout_s: float = 120.0) -> None:
        """Until no job is pending or running."""

        def idle() -> bool:
            with self.client() as client:
                return not client.info()["jobs"]

        wait_for(idle, timeout_s, "the queue to drain")
