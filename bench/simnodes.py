"""Simulated node agents for scale runs: many per process, each its own TCP connection that
speaks the real protocol (hello, the cluster-key challenge, heartbeats, job_started), so the
master does exactly the work it does for real agents. Jobs launched on them never end: they
hold their GPUs, as long training jobs do.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

from mgpu_core import tls
from mgpu_core.aio import AsyncConnection
from mgpu_core.handshake import Initiator
from mgpu_core.models import GpuSample
from mgpu_core.protocol import PROTOCOL_VERSION


class SimNodes:
    """``count`` agents named ``sim0000``...; ``start()`` returns once all are registered."""

    def __init__(
        self,
        port: int,
        key: bytes,
        *,
        count: int,
        gpus: int,
        heartbeat_s: float = 5.0,
        tls_ca: Path | None = None,
    ) -> None:
        self.port, self.key, self.count, self.gpus = port, key, count, gpus
        # Over TLS as real agents are (the master's default); None: a plain-TCP master.
        self.tls = tls.client_context(tls_ca) if tls_ca is not None else None
        self.heartbeat_s = heartbeat_s
        self.launched = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._tasks: list[asyncio.Task[None]] = []
        self._registered: asyncio.Semaphore | None = None

    def start(self, timeout_s: float = 120.0) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start_all(), self._loop).result(timeout_s)

    def stop(self) -> None:
        async def cancel() -> None:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start_all(self) -> None:
        ready = [asyncio.get_running_loop().create_future() for _ in range(self.count)]
        for i in range(self.count):
            self._tasks.append(asyncio.create_task(self._node(f"sim{i:04d}", ready[i])))
            if i % 50 == 49:
                await asyncio.gather(*ready[i - 49 : i + 1])  # don't flood the accept queue
        await asyncio.gather(*ready)

    async def _node(self, node_id: str, ready: asyncio.Future[None]) -> None:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", self.port, ssl=self.tls, server_hostname="127.0.0.1" if self.tls else None
        )
        conn = AsyncConnection(reader, writer)
        conn.binding = tls.peer_binding(writer.get_extra_info("ssl_object"))
        handshake = Initiator(self.key, "node", node_id, binding=conn.binding)
        conn.send({**self._hello(node_id), **handshake.hello_fields()})
        conn.send(handshake.on_challenge(await conn.recv()))
        reply = await conn.recv()
        if reply["t"] != "ok":
            ready.set_exception(RuntimeError(f"{node_id} refused: {reply}"))
            return
        ready.set_result(None)
        beats = asyncio.create_task(self._heartbeats(conn))
        runs: dict[int, int] = {}  # running job -> its restart count
        try:
            while True:
                msg = await conn.recv()
                if msg["t"] == "launch":
                    self.launched += 1
                    job_id = msg["launch"]["job_id"]
                    runs[job_id] = msg["launch"].get("restart_count", 0)
                    conn.send({"t": "job_started", "job_id": job_id, "pid": os.getpid()})
                elif msg["t"] == "kill" and msg["job_id"] in runs:
                    # A cancel: the job dies of the SIGTERM at once.
                    job_id = msg["job_id"]
                    conn.send(
                        {
                            "t": "job_exited",
                            "job_id": job_id,
                            "exit_code": None,
                            "signal": 15,
                            "restart_count": runs.pop(job_id),
                        }
                    )
        finally:
            beats.cancel()
            # At once, not a TLS close_notify exchange: the loop stops right after this, and
            # an unfinished shutdown would leave the socket open.
            conn.writer.transport.abort()

    async def _heartbeats(self, conn: AsyncConnection) -> None:
        samples = [GpuSample(index=i).to_wire() for i in range(self.gpus)]
        while True:
            await asyncio.sleep(self.heartbeat_s)
            conn.send({"t": "heartbeat", "gpus": samples})

    def _hello(self, node_id: str) -> dict[str, Any]:
        gpus = [
            {"index": i, "visible_id": str(i), "name": "SimGPU", "fake": True}
            for i in range(self.gpus)
        ]
        return {
            "t": "hello",
            "id": 1,
            "version": PROTOCOL_VERSION,
            "role": "node",
            "node": {
                "node_id": node_id,
                "hostname": node_id,
                "address": "127.0.0.1",
                "cpus": 64,
                "mem_bytes": 512 * 2**30,
                "gpus": gpus,
                "gpu_backend": "fake",
            },
        }
