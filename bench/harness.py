"""A local cluster for benchmarks: a real master and real node agents in a scratch directory,
started as processes (as users run them) and stopped by pid; plus timing helpers."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from mgpu_client.client import Client
from mgpu_core.auth import Token, parse_token
from mgpu_core.config import Address, parse_address, unix_address

PY = sys.executable
BIN = Path(sys.executable).parent  # the venv's console scripts (mgpu_srun, ...)
START_TIMEOUT_S = 30.0


def wait_for(
    predicate: Callable[[], Any], timeout_s: float, what: str, *, every_s: float = 0.002
) -> Any:
    """Poll ``predicate`` every ``every_s`` until truthy; RuntimeError after ``timeout_s``.
    (A poll that asks the master costs it CPU: long measurements poll slowly.)"""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(every_s)


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
class LocalCluster:
    root: Path
    master_args: tuple[str, ...] = ()
    master: subprocess.Popen[bytes] | None = None
    nodes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    port: int = 0
    tokens: dict[str, Token] = field(default_factory=dict)

    @property
    def state(self) -> Path:
        return self.root / "master"

    @property
    def socket(self) -> Address:
        return unix_address(self.state / "master.sock")

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "MGPU_MASTER": str(self.socket)}

    def start(self, *, node_gpus: dict[str, int] | None = None, **node_kw: Any) -> LocalCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        port_file = self.root / "port"
        self.master = self._spawn(
            [
                PY,
                "-m",
                "mgpu_server",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--port-file",
                str(port_file),
                "--state-dir",
                str(self.state),
                "--log-level",
                "warning",
                *self.master_args,
            ],
            "master.log",
        )
        wait_for(lambda: port_file.exists() or self.master.poll() is not None, 30, "master")
        if self.master.poll() is not None:
            raise RuntimeError((self.root / "master.log").read_text())
        self.port = int(port_file.read_text())
        for node_id, gpus in (node_gpus or {}).items():
            self.start_node(node_id, gpus, **node_kw)
        return self

    def start_node(self, node_id: str, gpus: int, *extra: str, cpus: int = 64) -> None:
        self.nodes[node_id] = self._spawn(
            [
                PY,
                "-m",
                "mgpu_node",
                "--master-host",
                "127.0.0.1",
                "--master-port",
                str(self.port),
                "--node-id",
                node_id,
                "--gpu-count",
                str(gpus),
                "--cpus",
                str(cpus),
                "--state-dir",
                str(self.root / f"node-{node_id}"),
                "--key-file",
                str(self.state / "cluster.key"),
                "--stop-jobs-on-exit",
                "--job-user",
                "agent",
                "--allow-root-jobs",
                "--log-level",
                "warning",
                *extra,
            ],
            f"node-{node_id}.log",
        )

        def registered() -> bool:
            with self.client() as client:
                return any(n["node_id"] == node_id and n["state"] != "down" for n in client.nodes())

        wait_for(registered, START_TIMEOUT_S, f"node {node_id}")

    def _spawn(self, argv: list[str], log_name: str) -> subprocess.Popen[bytes]:
        with open(self.root / log_name, "ab") as log:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def client(self, user: str | None = None) -> Client:
        """The admin's socket session, or a TCP session as ``user`` with a token."""
        if user is None:
            return Client(self.socket)
        if user not in self.tokens:
            with self.client() as admin:
                reply = admin.request("token", action="create", user=user)
            self.tokens[user] = parse_token(reply["token"], "the master's reply")
        return Client(parse_address(f"127.0.0.1:{self.port}"), token=self.tokens[user])

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

    def stop(self) -> None:
        for proc in [*self.nodes.values(), self.master]:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
