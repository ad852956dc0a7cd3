"""Real processes on 127.0.0.1 for the tests: a master, node agents, and the real client
commands. Starting, waiting and stopping are :mod:`mgpu_client.launch`'s (shared with local
mode and the benchmarks); what is here is the tests' own conventions on top: fast heartbeats,
agents that stop their jobs and run them as the test's user, waits with test-sized defaults.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil

from mgpu_client import launch
from mgpu_client.client import Client
from mgpu_core import tls
from mgpu_core.auth import Token, parse_token
from mgpu_core.config import Address, parse_address, with_tls
from tests.helpers.cgroups import remove_agent_cgroups

PY = sys.executable
START_TIMEOUT_S = 20.0
NODE_CPUS = 16

pid_alive = launch.pid_alive
stop_process = launch.stop_process

_T = TypeVar("_T")


def as_at_a_terminal() -> None:
    """Popen's preexec_fn for a client a test interrupts: SIGINT as a terminal's foreground
    process has it. A shell that starts the test run in the background (CI, `cmd &`) leaves
    SIGINT ignored, children inherit that, and Python then installs no KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# The client programs, as `python -m` modules (no console scripts needed).
CLIENT_MODULES = {
    "mgpu_srun": "mgpu_client.srun",
    "mgpu_sbatch": "mgpu_client.sbatch",
    "mgpu_queue": "mgpu_client.queue",
    "mgpu_cancel": "mgpu_client.scancel",
    "mgpu_client": "mgpu_client",
}


def wait_for(
    predicate: Callable[[], _T | None], timeout_s: float = 15.0, what: str = "condition"
) -> _T:
    """Poll ``predicate`` until it returns something truthy (and return that), or fail with
    :class:`TimeoutError` after ``timeout_s``."""
    return launch.wait_for(predicate, timeout_s, what)


def wait_for_text(path: Path, timeout_s: float = 15.0) -> str:
    """``path``'s text (stripped) once it exists and has some: what a job wrote, say."""

    def text() -> str | None:
        return path.read_text().strip() or None if path.exists() else None

    return wait_for(text, timeout_s, f"text in {path}")


@dataclass
class Cluster(launch.ProcessCluster):
    """A master (started by the fixture or :func:`running_cluster`) and the agents a test
    starts, in the test's ``tmp_path``; stopping it ends every process it started."""

    tokens: dict[str, Token] = field(default_factory=dict)

    @property
    def tmp(self) -> Path:
        return self.root

    @property
    def env(self) -> dict[str, str]:
        """The environment of client commands: the master's socket, unbuffered output."""
        env = dict(os.environ)
        env["MGPU_MASTER"] = self.socket_address
        env["PYTHONUNBUFFERED"] = "1"
        if self.ca_file is not None:  # for commands given the TCP address and a token
            env["MGPU_TLS_CA"] = str(self.ca_file)
        return env

    @property
    def tcp_address(self) -> Address:
        """The master's TCP port as a client reaches it: over TLS with the cluster CA."""
        ca = self.ca_file
        return with_tls(parse_address(self.address), str(ca) if ca else None, plaintext=not ca)

    @property
    def binding(self) -> bytes:
        """The channel binding a hand-made handshake over :meth:`connect_tcp` must prove."""
        if self.ca_file is None:
            return b""
        return tls.binding(tls.cert_der(self.master_state / "tls" / "master.pem"))

    def connect_tcp(self, timeout_s: float = 10.0) -> socket.socket:
        """A raw socket to the master's TCP port, TLS verified (a hostile test's wire)."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout_s)
        if self.ca_file is None:
            return sock
        return tls.client_context(self.ca_file).wrap_socket(sock, server_hostname="127.0.0.1")

    def token(self, user: str) -> Token:
        """A token for ``user``, issued by the test's own user over the socket."""
        if user not in self.tokens:
            with Client(parse_address(self.socket_address)) as admin:
                reply = admin.request("token", action="create", user=user)
            self.tokens[user] = parse_token(reply["token"], "the master's reply")
        return self.tokens[user]

    def client(self, user: str) -> Client:
        """A TCP session as ``user``, proven by that user's token."""
        return Client(self.tcp_address, token=self.token(user))

    def start_node(
        self,
        node_id: str,
        gpus: int | None = 2,
        *extra: str,
        wait: bool = True,
        stop_jobs_on_exit: bool = True,
        jobs_as_agent: bool = True,
        master_port: int | None = None,
    ) -> None:
        """Start an agent; by default it kills its jobs when stopped, so tests leak nothing,
        and runs every job as the test's own user, root included (``jobs_as_agent=False``:
        the agent's defaults, jobs run as their submitters). ``gpus`` None: no --gpu-count
        (the GPUs come from ``extra``, e.g. ``--fake-gpus h100*2``)."""
        options = [
            *(["--stop-jobs-on-exit"] if stop_jobs_on_exit else []),
            *("--heartbeat-interval", "0.5"),
            *(("--job-user", "agent", "--allow-root-jobs") if jobs_as_agent else ()),
            # The same nodes whatever the test machine has installed (and no probe at each
            # start); a test of containers names its runtimes, later on the line.
            *("--container-runtimes", "none"),
        ]
        self.start_agent(
            node_id,
            *options,
            *extra,
            gpus=gpus,
            cpus=NODE_CPUS,
            up=(lambda: self.node_up(node_id)) if wait else None,
            timeout_s=START_TIMEOUT_S,
            master_port=master_port,
        )

    def node_up(self, node_id: str) -> bool:
        """Whether the master lists ``node_id`` as registered and not down."""
        with Client(parse_address(self.socket_address)) as admin:
            return launch.node_up(admin.nodes(), node_id)

    def node_state(self, node_id: str) -> str | None:
        for node in self.nodes_json():
            if node["node_id"] == node_id:
                return str(node["state"])
        return None

    def audit(self, path: Path | None = None) -> list[dict[str, Any]]:
        """The master's audit log (or the one at ``path``), one JSON object a line: a line that
        is not one fails here."""
        text = (path or self.master_state / "audit.log").read_text()
        return [json.loads(line) for line in text.splitlines()]

    def cli(
        self,
        *args: str,
        timeout: float = 60,
        check: bool = False,
        cwd: Path | None = None,
        input: bytes | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a real client command: ``cli("mgpu_queue", "--json")``."""
        tool, rest = args[0], args[1:]
        result = subprocess.run(
            [PY, "-m", CLIENT_MODULES[tool], *rest],
            capture_output=True,
            timeout=timeout,
            env=self.env,
            cwd=cwd or self.tmp,
            input=input.decode() if input is not None else None,
            text=True,
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def nodes_json(self) -> list[dict[str, Any]]:
        out = self.cli("mgpu_client", "nodes", "--json", check=True).stdout
        return list(json.loads(out)["nodes"])

    def jobs(self, *args: str) -> dict[int, dict[str, Any]]:
        out = self.cli("mgpu_queue", "--json", "-t", "all", *args, check=True).stdout
        return {j["job_id"]: j for j in json.loads(out)["jobs"]}

    def job(self, job_id: int) -> dict[str, Any]:
        return self.jobs("-j", str(job_id))[job_id]

    def wait_state(self, job_id: int, *states: str, timeout_s: float = 20.0) -> dict[str, Any]:
        def in_state() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if job["state"] in states else None

        return wait_for(in_state, timeout_s, f"job {job_id} in {states}")

    def sbatch(self, *args: str, cwd: Path | None = None) -> int:
        result = self.cli("mgpu_sbatch", "--parsable", *args, cwd=cwd)
        assert result.returncode == 0, result.stderr
        return int(result.stdout.strip())

    def stop(self) -> None:
        super().stop()
        self.kill_leftover_jobs()
        remove_agent_cgroups((n, self.root / f"node-{n}") for n in self.nodes)

    def kill_leftover_jobs(self) -> None:
        """End job processes this test's agents left behind (an agent killed with SIGKILL
        cannot stop its jobs). They are ours: their environment names this cluster."""
        for proc in psutil.process_iter():
            try:
                env = proc.environ()
                if env.get("MGPU_JOB_ID") and env.get("MGPU_MASTER") == self.socket_address:
                    proc.kill()
            except (psutil.Error, OSError):
                continue


# Master options for tests that let a node fail: not responding after 1 s, its jobs fenced
# (killed on the node) after 1 s without an acknowledged heartbeat, SIGKILL 1 s after SIGTERM;
# the master takes them for lost after 1 + 1 + 5 s margin.
FAST_FENCE = ("--node-timeout", "1", "--fence-timeout", "1", "--kill-grace", "1")


@contextlib.contextmanager
def running_cluster(tmp: Path, *master_args: str, **master_kwargs: Any) -> Iterator[Cluster]:
    """A cluster whose master takes extra options; everything it started is stopped after."""
    c = Cluster(tmp)
    try:
        c.start_master(*master_args, **master_kwargs)
        yield c
    finally:
        c.stop()
