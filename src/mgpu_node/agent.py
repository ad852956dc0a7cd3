"""The node agent's link to the master: register, heartbeat, obey launch/kill, report events.

Running jobs do not depend on the link. When the master goes away the agent keeps its jobs
running, reconnects with exponential backoff and jitter, and re-registers with the jobs it
still runs; exits that happened meanwhile are held in memory and sent after the new hello.
Live output of interactive jobs produced while the master is away is dropped (nobody is
attached to receive it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from collections import deque
from typing import Any

import psutil

from mgpu_core import __version__
from mgpu_core.aio import AsyncConnection
from mgpu_core.config import NodeConfig
from mgpu_core.errors import (
    ConnectionClosed,
    NodeConflict,
    ProtocolError,
    RegistrationRefused,
    error_from_wire,
)
from mgpu_core.messages import MASTER_TO_NODE, MAX_IDS_PER_REQUEST, validate
from mgpu_core.protocol import PROTOCOL_VERSION, Message
from mgpu_node.executor import Executor
from mgpu_node.gpus import GpuBackend

log = logging.getLogger(__name__)

# Undelivered exits kept while the master is away (their ids ride in the next hello, which
# takes at most MAX_IDS_PER_REQUEST); beyond this the oldest are logged and lost.
MAX_HELD_EVENTS = MAX_IDS_PER_REQUEST // 2


def local_address_towards(host: str, port: int) -> str:
    """The local IP this host uses to reach ``host``: the address the master should see."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        family, _, _, _, sockaddr = infos[0]
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(sockaddr)  # UDP connect sends nothing; it only picks a route
            return str(probe.getsockname()[0])
    except OSError:
        return ""


class Agent:
    def __init__(
        self, config: NodeConfig, backend: GpuBackend, *, cpus: int, mem_bytes: int
    ) -> None:
        self.config = config
        self.backend = backend
        self.cpus = cpus
        self.mem_bytes = mem_bytes
        self.devices = backend.devices()
        self.executor = Executor(
            node_name=config.node_id,
            devices=self.devices,
            spool_dir=config.state_dir / "spool",
            emit=self._emit,
        )
        self._conn: AsyncConnection | None = None
        self._held: deque[Message] = deque()
        self.should_exit = asyncio.Event()
        self.registered = asyncio.Event()

    # ---- events out ----------------------------------------------------------------------

    def _emit(self, msg: Message) -> None:
        conn = self._conn
        if conn is not None and self.registered.is_set() and not conn.closed:
            conn.send(msg)
        elif msg["t"] == "job_exited":
            if len(self._held) >= MAX_HELD_EVENTS:
                log.error("dropping undelivered exit: %s", self._held.popleft())
            self._held.append(msg)

    # ---- link ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Stay connected until asked to exit; then stop the jobs and return."""
        delay_s = 0.2
        try:
            while not self.should_exit.is_set():
                try:
                    await self._session()
                except RegistrationRefused:
                    raise
                except (OSError, ConnectionClosed, ProtocolError, TimeoutError) as exc:
                    log.warning("master link: %s; retrying in %.1f s", exc, delay_s)
                if self.registered.is_set():
                    delay_s = 0.2  # the link worked: start the backoff afresh
                self.registered.clear()
                self._conn = None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self.should_exit.wait(), delay_s * random.uniform(0.5, 1.0)
                    )
                delay_s = min(delay_s * 2, self.config.reconnect_max_s)
        finally:
            await self.executor.shutdown()
            self.backend.close()

    async def _session(self) -> None:
        master = self.config.master
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(master.host, master.port), timeout=10.0
        )
        conn = AsyncConnection(reader, writer, self.config.max_frame_bytes)
        self._conn = conn
        try:
            conn.send(self._hello())
            reply = await asyncio.wait_for(conn.recv(), timeout=10.0)
            if reply["t"] == "error":
                err = error_from_wire(reply.get("code"), reply.get("message"))
                if isinstance(err, NodeConflict):
                    # Usually our own previous link, not yet seen dead by the master: retry.
                    raise ConnectionClosed(str(err))
                raise RegistrationRefused(f"master refused registration: {err}")
            if reply["t"] != "ok":
                raise ProtocolError(f"expected a reply to hello, got {reply['t']!r}")
            log.info("registered with master %s as %s", master, self.config.node_id)
            self.registered.set()
            while self._held:
                conn.send(self._held.popleft())
            heartbeat = asyncio.get_running_loop().create_task(self._heartbeats(conn))
            try:
                await self._serve(conn)
                # Asked to exit: stop the jobs while the link is up, so their exits reach
                # the master now rather than through the node timeout.
                await self.executor.shutdown()
                await conn.drain()
            finally:
                heartbeat.cancel()
        finally:
            conn.close()

    def _hello(self) -> Message:
        master = self.config.master
        pending_exits = [m["job_id"] for m in self._held]
        return {
            "t": "hello",
            "id": 1,
            "version": PROTOCOL_VERSION,
            "role": "node",
            "node": {
                "node_id": self.config.node_id,
                "hostname": socket.gethostname(),
                "address": local_address_towards(master.host, master.port),
                "cpus": self.cpus,
                "mem_bytes": self.mem_bytes,
                "gpus": [
                    {
                        "index": d.index,
                        "uuid": d.uuid,
                        "name": d.name,
                        "memory_total_bytes": d.memory_total_bytes,
                        "visible_id": d.visible_id,
                        "fake": d.fake,
                    }
                    for d in self.devices
                ],
                "gpu_backend": self.backend.kind,
                # Jobs whose exit is not yet delivered count as running, so the master waits
                # for the exit event that follows instead of declaring them lost.
                "running_job_ids": sorted({*self.executor.running_ids(), *pending_exits}),
                "agent_version": __version__,
            },
        }

    async def _serve(self, conn: AsyncConnection) -> None:
        while not self.should_exit.is_set():
            recv = asyncio.ensure_future(conn.recv())
            stop = asyncio.ensure_future(self.should_exit.wait())
            done, _ = await asyncio.wait({recv, stop}, return_when=asyncio.FIRST_COMPLETED)
            if recv not in done:
                recv.cancel()
                stop.cancel()
                return
            stop.cancel()
            msg = validate(recv.result(), MASTER_TO_NODE)
            await self._on_message(msg)

    async def _on_message(self, msg: dict[str, Any]) -> None:
        kind = msg["t"]
        if kind == "launch":
            await self.executor.launch(msg["launch"])
        elif kind == "kill":
            self.executor.kill(msg["job_id"], msg["reason"])
        elif kind == "error":
            log.warning("master reported: %s: %s", msg["code"], msg["message"])

    async def _heartbeats(self, conn: AsyncConnection) -> None:
        while True:
            conn.send({"t": "heartbeat", "gpus": self._gpu_samples()})
            await asyncio.sleep(self.config.heartbeat_interval_s)

    def _gpu_samples(self) -> list[dict[str, Any]]:
        ours = self.executor.job_sessions()
        out = []
        for s in self.backend.sample():
            foreign = [p for p in s.processes if _session_of(p.pid) not in ours]
            out.append(
                {
                    "index": s.index,
                    "healthy": s.healthy,
                    "error": s.error[:256],
                    "utilization_pct": s.utilization_pct,
                    "memory_used_bytes": s.memory_used_bytes,
                    "processes": [
                        {
                            "pid": p.pid,
                            "user": p.user[:256],
                            "used_memory_bytes": p.used_memory_bytes,
                            "command": p.command[:256],
                        }
                        for p in foreign[:256]
                    ],
                }
            )
        return out


def _session_of(pid: int) -> int:
    try:
        return os.getsid(pid)
    except OSError:
        return -1


def host_resources() -> tuple[int, int]:
    """(CPUs, memory bytes) of this host."""
    return psutil.cpu_count() or 1, psutil.virtual_memory().total
