"""The node agent's link to the master: register, heartbeat, obey launch/kill, report events.

Running jobs depend neither on the link nor on the agent. When the master goes away the agent
keeps its jobs running, reconnects with exponential backoff and jitter, and re-registers with
the jobs it still runs. Every exit is kept until the master acknowledges it, and sent again
after the next hello, even by a restarted agent (exitlink.py). When the agent stops it leaves its
jobs running for the next agent to re-adopt (executor.py), unless told to stop them
(``--stop-jobs-on-exit``). Interactive jobs' output is kept on disk until their exit is
acknowledged (outlog.py): what the link missed is sent after the next hello, and again from
any offset on the master's ``replay``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import psutil

from mgpu_core import __version__
from mgpu_core.aio import AsyncConnection
from mgpu_core.constants import OUTPUT_DIR
from mgpu_core.daemons import NodeConfig
from mgpu_core.errors import (
    AuthenticationFailed,
    ConnectionClosed,
    InternalError,
    ProtocolError,
    RegistrationRefused,
    error_from_wire,
)
from mgpu_core.handshake import Initiator
from mgpu_core.limits import MAX_IDS_PER_REQUEST
from mgpu_core.messages import MASTER_TO_NODE, validate
from mgpu_core.models import Launch, NodeHello
from mgpu_core.protocol import PROTOCOL_VERSION, Message
from mgpu_core.termmsgs import SESSION_ORDERS
from mgpu_node.cgroups import Isolation
from mgpu_node.containers import Runtime
from mgpu_node.executor import Executor
from mgpu_node.exitlink import ExitDelivery
from mgpu_node.gpus import GpuBackend, strangers_only
from mgpu_node.guard import GuardHandle
from mgpu_node.jobuser import JobUserPolicy
from mgpu_node.lease import LeaseKeeper, boottime
from mgpu_node.logread import read_answer
from mgpu_node.outlog import Outputs, replay_offsets
from mgpu_node.spool import ExitSpool
from mgpu_node.terminals import Terminals
from mgpu_node.workspaces import Workspaces
from mgpu_node.workspaces import listing as workspace_listing
from mgpu_node.workspaces import removal as workspace_removal

log = logging.getLogger(__name__)

# How often the agent checks that its fence guard runs (and starts it again if not).
GUARD_CHECK_S = 5.0


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


def _answer(handshake: Initiator, reply: Message, *, verified: bool) -> Message:
    """The auth for the master's challenge. A master that does not prove the cluster key is
    never obeyed (anyone on its address could otherwise send us launch orders). It is refused
    for good only when it is proven to hold another key: a challenge whose proof fails, from
    the master our CA vouches for (``verified``: TLS), since retrying with the same key cannot
    help. Over plain TCP anyone on the path can send a bad challenge, and an ``ok`` without a
    challenge proves nothing at all: retried, logged."""
    try:
        return handshake.on_challenge(reply)
    except AuthenticationFailed as err:
        if verified and reply.get("t") == "challenge":
            raise RegistrationRefused(err.message) from None
        raise ConnectionClosed(err.message) from None


class Agent:
    def __init__(
        self,
        config: NodeConfig,
        backend: GpuBackend,
        *,
        cpus: int,
        mem_bytes: int,
        stop_jobs_on_exit: bool = False,
        cluster_key: bytes,
        isolation: Isolation,
        workspaces: Workspaces | None = None,
        runtimes: tuple[Runtime, ...] = (),
    ) -> None:
        self.config = config
        self.runtimes = runtimes  # for jobs with an image; their names go in the hello
        self.workspaces = workspaces  # the users' workspaces (None: --workspace-root none)
        self.isolation = isolation  # told to the master in the hello
        self.cluster_key = cluster_key
        self.backend = backend
        self.cpus = cpus
        self.mem_bytes = mem_bytes
        self.stop_jobs_on_exit = stop_jobs_on_exit
        self.devices = backend.devices()
        self.exits = ExitSpool(config.state_dir / "exits")
        # Interactive jobs' output, on disk until their exit is acknowledged, sent while the
        # link is up and again from any offset on the master's replay.
        self.outputs = Outputs(config.state_dir / OUTPUT_DIR, self._send)
        self.delivery = ExitDelivery(self.exits, self.outputs, self._send)
        self.executor = Executor(
            node_name=config.node_id,
            devices=self.devices,
            state_dir=config.state_dir,
            exits=self.exits,
            emit=self._emit,
            job_users=JobUserPolicy(config.job_user, config.allow_root_jobs),
            outputs=self.outputs,
            cgroups=isolation.cgroups,
            workspaces=workspaces,
            runtimes=runtimes,
        )
        cgroups = isolation.cgroups
        self.terminals = Terminals(  # shells in running jobs, relayed by the master
            send=self._send,
            job=self.executor.job_view,
            enter_cgroups=cgroups.enter if cgroups is not None else None,
            backlog=lambda: self._conn.backlog_bytes() if self._conn is not None else 0,
        )
        self.executor.on_ending = self.terminals.job_ended  # they are told, then hang up
        self.lease = LeaseKeeper(config.state_dir, config.fence_timeout_s)
        self.guard = GuardHandle(config.state_dir)
        self._launch_seq = 0  # the highest Launch.launch_seq received on this link
        # read_output and workspace list answers under way
        self._reads: set[asyncio.Task[None]] = set()
        self._conn: AsyncConnection | None = None
        self.should_exit = asyncio.Event()
        self.registered = asyncio.Event()

    # ---- events out ----------------------------------------------------------------------

    def _emit(self, msg: Message) -> None:
        # Without a link the event is dropped: job_exited is in the exit spool (sent again after
        # the next hello), job_output in the job's output log (outlog.py), and job_started is
        # not state.
        self._send(msg)

    def _send(self, msg: Message) -> bool:
        conn = self._conn
        if conn is not None and self.registered.is_set() and not conn.closed:
            conn.send(msg)
            return True
        return False

    # ---- link ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Stay connected until asked to exit; then leave (or stop) the jobs and return."""
        self.guard.ensure()  # before anything runs: the fence holds from the first job on
        self.executor.adopt_all()
        self.outputs.keep_only({*self.executor.running_ids(), *self.exits.ids()})
        watch_guard = asyncio.get_running_loop().create_task(self._watch_guard())
        delay_s = 0.2
        try:
            while not self.should_exit.is_set():
                why = ""
                try:
                    await self._session()
                except RegistrationRefused:
                    raise
                except (
                    OSError,
                    ConnectionClosed,
                    ProtocolError,
                    TimeoutError,
                    InternalError,
                ) as exc:
                    why = str(exc) or type(exc).__name__  # str() of a TimeoutError is ""
                if self.registered.is_set():
                    delay_s = 0.2  # the link worked: start the backoff afresh
                self.registered.clear()
                self._conn = None
                self.terminals.close()  # their routes were the master's: users enter again
                wait_s = delay_s * random.uniform(0.5, 1.0)
                if why:  # logged after the reset above, so that it says the actual wait
                    log.warning("master link: %s; retrying in %.1f s", why, wait_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.should_exit.wait(), wait_s)
                delay_s = min(delay_s * 2, self.config.reconnect_max_s)
        finally:
            watch_guard.cancel()
            self.terminals.close()
            if self.stop_jobs_on_exit:
                await self.executor.stop_all()
                self.guard.stop()
            else:
                self.executor.detach()  # the guard stays: it fences the jobs left running
            if self.isolation.cgroups is not None:
                self.isolation.cgroups.close()  # the agent's group, if no job's is left in it
            self.backend.close()

    async def _session(self) -> None:
        master = self.config.master
        tls = None
        if master.tls_ca:
            from mgpu_core.tls import client_context

            # Built per connection: a CA file the admin replaced is read again.
            tls = client_context(Path(master.tls_ca))
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                master.host, master.port, ssl=tls, server_hostname=master.host if tls else None
            ),
            timeout=10.0,
        )
        conn = AsyncConnection(reader, writer, self.config.max_frame_bytes)
        if tls is not None:
            from mgpu_core.tls import peer_binding

            conn.binding = peer_binding(writer.get_extra_info("ssl_object"))
        self._conn = conn
        try:
            handshake = Initiator(
                self.cluster_key,
                "node",
                self.config.node_id,
                peer=f"the master at {master}",
                binding=conn.binding,
            )
            hello_sent = boottime()
            conn.send({**self._hello(), **handshake.hello_fields()})
            reply = await asyncio.wait_for(conn.recv(), timeout=10.0)
            if reply["t"] != "error":  # a refused hello gets no challenge
                conn.send(_answer(handshake, reply, verified=tls is not None))
                reply = await asyncio.wait_for(conn.recv(), timeout=10.0)
            if reply["t"] == "error":
                # Retried, whatever it says: nothing proves an error came from the master (a
                # stranger on the path may send one), and most pass (a full master, our own
                # previous link not yet seen dead: node_conflict). Only a master that proves
                # another key (_answer) is refused for good.
                err = error_from_wire(reply.get("code"), reply.get("message"))
                raise ConnectionClosed(f"master refused registration: {err.code}: {err}")
            if reply["t"] != "ok":
                raise ProtocolError(f"expected a reply to hello, got {reply['t']!r}")
            log.info("registered with master %s as %s", master, self.config.node_id)
            data = reply.get("data")
            self.lease.registered(data if isinstance(data, dict) else {}, hello_sent)
            self._launch_seq = 0
            self.registered.set()
            # What the jobs printed that the master's watchers have not had (from where the
            # master says, or else from what we sent last), before their exits.
            replay = replay_offsets(data)
            self.outputs.resume(replay)
            self.delivery.resend(conn, set(replay))
            heartbeat = asyncio.get_running_loop().create_task(self._heartbeats(conn))
            try:
                await self._serve(conn)
                if self.stop_jobs_on_exit:
                    # Stop the jobs while the link is up, so their exits reach the master now
                    # rather than through the node timeout.
                    await self.executor.stop_all()
                    await self.delivery.await_acks(conn)
                await conn.drain()
            finally:
                heartbeat.cancel()
        finally:
            self.delivery.session_ended()
            conn.close()

    def _running_job_ids(self) -> list[int]:
        # Jobs whose exit is not yet acknowledged count as running, so the master waits for
        # the exit event that follows instead of declaring them lost.
        ids = sorted({*self.executor.running_ids(), *self.exits.ids()})
        if len(ids) > MAX_IDS_PER_REQUEST:
            log.error("%d jobs to report; the hello takes %d", len(ids), MAX_IDS_PER_REQUEST)
        return ids[:MAX_IDS_PER_REQUEST]

    def _hello(self) -> Message:
        master = self.config.master
        return {
            "t": "hello",
            "id": 1,
            "version": PROTOCOL_VERSION,
            "role": "node",
            "node": NodeHello(
                node_id=self.config.node_id,
                hostname=socket.gethostname(),
                address=local_address_towards(master.host, master.port),
                cpus=self.cpus,
                mem_bytes=self.mem_bytes,
                gpus=self.devices,
                gpu_backend=self.backend.kind,
                isolation=self.isolation.summary,
                running_job_ids=self._running_job_ids(),
                agent_version=__version__,
                port_range=list(self.config.port_range),
                runtimes=[r.name for r in self.runtimes],
                workspace_root=str(self.workspaces.root) if self.workspaces else "",
                workspace_id=self.workspaces.root_id if self.workspaces else "",
            ).to_wire(),
        }

    async def _serve(self, conn: AsyncConnection) -> None:
        # A master that acknowledges heartbeats is never silent for long: past this, the link
        # is dead (a partition the TCP connection has not noticed) and we try a new one, in
        # time to renew the lease before the fence.
        silence_s = self.lease.silence_limit(self.config.heartbeat_interval_s)
        while not self.should_exit.is_set():
            recv = asyncio.ensure_future(conn.recv())
            stop = asyncio.ensure_future(self.should_exit.wait())
            done, _ = await asyncio.wait(
                {recv, stop}, timeout=silence_s, return_when=asyncio.FIRST_COMPLETED
            )
            if recv not in done:
                recv.cancel()
                stop.cancel()
                if not done:
                    raise ConnectionClosed(f"no word from the master for {silence_s:.1f} s")
                return
            stop.cancel()
            msg = validate(recv.result(), MASTER_TO_NODE)
            try:
                self._on_message(msg)
            except Exception as exc:
                # A bug in obeying one message must not take the agent down (its jobs would
                # lose their watcher): log it, and drop this link as for a bad message; the
                # master reconciles our jobs from the next hello. The master does the same.
                log.exception("could not handle the master's %r message", msg["t"])
                raise InternalError(f"could not handle the master's {msg['t']!r}: {exc}") from exc

    def _on_message(self, msg: dict[str, Any]) -> None:
        kind = msg["t"]
        if kind == "launch":
            launch = Launch.from_checked(msg["launch"])  # checked by validate
            self._launch_seq = max(self._launch_seq, launch.launch_seq)
            self.executor.launch(launch)
        elif kind == "kill":
            self.executor.kill(msg["job_id"], msg["reason"])
        elif kind == "signal":
            self.executor.send_signal(msg["job_id"], msg["signal"], msg["scope"])
        elif kind == "exit_ack":
            self.delivery.acked(msg["job_id"])
        elif kind == "replay":
            self.outputs.replay(msg["job_id"], msg["offset"])
            self.delivery.followed(msg["job_id"])
        elif kind == "heartbeat_ack":
            self.lease.acked(msg["seq"])
        elif kind == "read_output":
            self._answer_later(self._read_output(msg))
        elif kind == "workspace" and msg["action"] == "rm":
            # Now, before the next order is read: a launch after it gets a fresh workspace.
            self._send(workspace_removal(self.workspaces, msg, node=self.config.node_id))
        elif kind == "workspace":
            self._answer_later(self._list_workspaces(msg))
        elif kind in SESSION_ORDERS:
            self._on_session_order(msg)
        elif kind == "error":
            self.delivery.refused(msg)

    def _on_session_order(self, msg: dict[str, Any]) -> None:
        kind = msg["t"]
        if kind == "notice":  # the master's word for the job's terminals (an idle warning)
            self.terminals.notify(msg["job_id"], msg["text"])
        elif kind == "time_limit":  # session extend
            self.executor.set_time_limit(msg["job_id"], msg["time_limit_s"])
            self.terminals.schedule_warnings(msg["job_id"])
        else:
            self.terminals.on_order(msg)

    def _answer_later(self, answer: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(answer)
        self._reads.add(task)
        task.add_done_callback(self._reads.discard)

    async def _list_workspaces(self, msg: dict[str, Any]) -> None:
        self._send(await workspace_listing(self.workspaces, msg, node=self.config.node_id))

    async def _read_output(self, msg: dict[str, Any]) -> None:
        uid = self.executor.account_uid(msg["user"])
        answer = await read_answer(msg, uid, self.outputs, node=self.config.node_id)
        self._send({"t": "output_data", "req": msg["req"], **answer})

    async def _heartbeats(self, conn: AsyncConnection) -> None:
        # Several per fence period, whatever the configured interval: a lost beat never fences.
        interval_s = self.lease.heartbeat_interval(self.config.heartbeat_interval_s)
        while True:
            beat: Message = {
                "t": "heartbeat",
                "gpus": self._gpu_samples(),
                # What we run (and exits not yet acknowledged), and the launches seen so far:
                # the master reconciles by state, not by events alone.
                "running_job_ids": self._running_job_ids(),
                "launch_seq": self._launch_seq,
            }
            # The lease runs from this moment if the master acknowledges this heartbeat.
            beat["seq"] = self.lease.heartbeat_sent(boottime())
            conn.send(beat)
            await asyncio.sleep(interval_s)

    async def _watch_guard(self) -> None:
        while True:
            await asyncio.sleep(GUARD_CHECK_S)
            self.guard.ensure()

    def _gpu_samples(self) -> list[dict[str, Any]]:
        return [s.to_wire() for s in strangers_only(self.backend, self.executor.job_sessions())]


def host_resources() -> tuple[int, int]:
    """(CPUs, memory bytes) of this host."""
    return psutil.cpu_count() or 1, psutil.virtual_memory().total
