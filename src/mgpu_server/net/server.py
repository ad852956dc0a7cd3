"""The master's network side: accept connections, speak the protocol, run the loop.

One asyncio event loop owns all state (no threads, no locks). Handlers call into
:class:`~mgpu_server.state.cluster.ClusterState` and queue their replies; once per loop turn
:meth:`Server._flush` runs the scheduling pass, commits the store, and only then sends replies
and the state's outbox. So scheduling is event-driven (a job whose resources are free starts
in the same turn as the event that freed them), coalesced (a burst of 1,000 submits is one
pass and one commit), and nothing is acknowledged before it is stored.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from typing import Any

from mgpu_core import __version__
from mgpu_core.aio import AsyncConnection
from mgpu_core.daemons import ServerConfig
from mgpu_core.errors import (
    AuthenticationFailed,
    ConnectionClosed,
    MgpuError,
    ProtocolError,
    StorageError,
    VersionMismatch,
)
from mgpu_core.messages import CLIENT_REQUESTS, HELLO, validate
from mgpu_core.protocol import PROTOCOL_VERSION, Message, error_reply, ok_reply
from mgpu_core.termmsgs import UNANSWERED
from mgpu_server.api import audit
from mgpu_server.api.handlers import ClientService
from mgpu_server.api.jobinfo import log_status
from mgpu_server.api.joins import JoinRegistry
from mgpu_server.api.permissions import Transport, context, start_refusal
from mgpu_server.api.tokens import TokenRegistry
from mgpu_server.net import authn
from mgpu_server.net.http import HttpListener
from mgpu_server.net.httpapi import Changes, start_http
from mgpu_server.net.joindesk import JoinDesk
from mgpu_server.net.listeners import Listeners
from mgpu_server.net.maintenance import purge_history
from mgpu_server.net.metrics import Metrics
from mgpu_server.net.nodelinks import NodeLinks
from mgpu_server.net.notify import Notifier, NotifySettings
from mgpu_server.net.outputreads import OutputReads
from mgpu_server.net.pacing import Pacer
from mgpu_server.net.terminals import Terminals
from mgpu_server.net.watchers import Watchers
from mgpu_server.net.workspacereqs import WorkspaceRequests
from mgpu_server.scheduling.policy import PolicyConfig
from mgpu_server.state.cluster import ClusterState
from mgpu_server.state.effects import Notify, ToNode, ToWatchers
from mgpu_server.state.quota import DEFAULT_LIMITS, UserLimits
from mgpu_server.storage.store import Store

NO_TOKEN = (
    "TCP clients must present a user token: ask an admin for one "
    "(mgpu_client admin token create USER), or use the master's Unix socket on its host"
)

log = logging.getLogger(__name__)


# Jobs are long-lived and rarely form reference cycles: after this many new ones, move
# everything alive to the GC's permanent generation (reference counting still frees them).
FREEZE_EVERY_JOBS = 10_000


class Server:
    def __init__(
        self,
        config: ServerConfig,
        store: Store,
        policy: PolicyConfig,
        *,
        cluster_key: bytes,
        limits: UserLimits = DEFAULT_LIMITS,
        notify: NotifySettings | None = None,
    ) -> None:
        self.config = config
        self.cluster_key = cluster_key
        self.store = store
        self.cluster = ClusterState(
            store,
            kill_grace_s=config.kill_grace_s,
            node_timeout_s=config.node_timeout_s,
            fence_timeout_s=config.fence_timeout_s,
            now=time.time(),
            policy=policy,
            start_rule=start_refusal,
            limits=limits,
            keep_finished_s=config.keep_finished_s,
        )
        self.tokens = TokenRegistry(store)
        self.joins = JoinRegistry(store)  # join tokens, and the node keys they bought
        self.join_desk = JoinDesk(self.joins, store, config)
        # The master's own user administers it, as root does (local mode runs as anyone).
        self.admins = frozenset({authn.user_name(os.geteuid()), *config.admins})
        self.token_sessions: dict[str, set[AsyncConnection]] = {}
        self._closing: list[AsyncConnection] = []  # sessions to end once replies are out
        self.watchers = Watchers(
            max_backlog_bytes=config.max_client_backlog_bytes,
            ended=lambda job_id: self.nodes.forget(job_id),
        )
        self.service = ClientService(
            self.cluster,
            self,
            self.tokens,
            private_commands=config.private_commands,
            joins=self.joins,
        )
        self.metrics = Metrics(self.cluster)  # /metrics, when the HTTP API listens
        self.changes = Changes()  # the dashboard's live updates
        self.notifier = Notifier(notify or NotifySettings(cluster_name=policy.cluster_name))
        self.cluster.outbox.notify_all = bool(self.notifier.settings.webhooks)
        self.http: HttpListener | None = None
        self.outputs = OutputReads(
            send_to_node=lambda node_id, msg: self.nodes.send_now(node_id, msg),
            reply=self.reply,
            job_status=lambda job_id: log_status(self.cluster.find([job_id])[0], time.time()),
            kick=self.kick,
        )
        self.workspaces = WorkspaceRequests(
            send_to_node=lambda node_id, msg: self.nodes.send_now(node_id, msg),
            reply=self.reply,
            kick=self.kick,
        )
        self.terminals = Terminals(
            send_to_node=lambda node_id, msg: self.nodes.send_now(node_id, msg),
            max_backlog_bytes=config.max_client_backlog_bytes,
        )
        self.nodes = NodeLinks(
            self.cluster,
            terminals=self.terminals,
            outputs=self.outputs,
            workspaces=self.workspaces,
            cluster_key=cluster_key,
            node_key=self.joins.node_key,
            hello_timeout_s=config.hello_timeout_s,
            reply=self.reply,
            kick=self.kick,
            relay=lambda job_id, msg: self.watchers.send(ToWatchers(job_id, msg)),
            authenticated=lambda conn: self.listeners.authenticated(conn),
        )
        self._replies: list[tuple[AsyncConnection, Message]] = []
        self._flush_scheduled = False
        self._wakeup: asyncio.TimerHandle | None = None
        self._wakeup_at: float | None = None
        self.listeners = Listeners(config, self._handle_connection)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.port = 0
        self.should_exit = asyncio.Event()
        self._unfrozen_jobs = 0

    # ---- lifecycle -----------------------------------------------------------------------

    async def startup(self) -> None:
        cfg = self.config
        # The loaded state lives as long as the master: keep it out of the cyclic GC's full
        # collections, which take ~200 ms at 100,000 jobs and would land inside a pass.
        gc.freeze()
        await self.listeners.start()
        self.port = self.listeners.port
        self.join_desk.ready(self.port)
        if cfg.port_file is not None:
            tmp = cfg.port_file.with_suffix(".tmp")
            tmp.write_text(f"{self.port}\n")
            tmp.replace(cfg.port_file)  # atomic: a reader never sees a half-written port
        self._spawn(self._liveness_loop())
        self._spawn(purge_history(self.store, cfg.history_retention_s))
        self._spawn(self.notifier.run())
        if cfg.http_listen is not None:
            self.http = await start_http(self, cfg)

    async def serve_forever(self) -> None:
        await self.startup()
        try:
            await self.should_exit.wait()
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        await self.listeners.close()
        if self.http is not None:
            self.http.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.store.commit()
        self.store.close()
        log.info("mgpu_master stopped")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- the per-turn flush --------------------------------------------------------------

    def reply(self, conn: AsyncConnection, msg: Message) -> None:
        self._replies.append((conn, msg))
        self.kick()

    def kick(self) -> None:
        """Ask for a scheduling pass + commit + send at the end of this loop turn."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        cluster = self.cluster
        now = time.time()
        began = time.perf_counter()
        cluster.schedule(now)
        scheduled = time.perf_counter()
        if cluster.needs_pass:
            self.kick()  # the queue goes on below the depth a pass examines: one more pass
        self._arm_wakeup(cluster.wakeup_at)
        replies, self._replies = self._replies, []
        committing = time.perf_counter()
        try:
            self.store.commit()
        except StorageError as err:
            # Nothing that is not stored is acknowledged: this turn's submissions are undone
            # and refused; other changes stay pending and are retried with the next commit.
            log.error("%s; refusing this turn's submissions", err)
            refused = cluster.undo_turn(now)
            replies = [(conn, _refuse(msg, refused, err)) for conn, msg in replies]
        committed = time.perf_counter()
        self._unfrozen_jobs += cluster.end_turn()
        if self._unfrozen_jobs >= FREEZE_EVERY_JOBS:
            gc.freeze()  # O(1): the long-lived records stop costing every full collection
            self._unfrozen_jobs = 0
        for conn, msg in replies:
            conn.send(msg)
        for effect in cluster.take_effects():
            if isinstance(effect, ToNode):
                self.nodes.send(effect.node_id, effect.msg)
            elif isinstance(effect, Notify):
                self.notifier.submit(effect)  # queued: delivered by its own task
            else:
                self.watchers.send(effect)
        self.changes.bump()
        self.metrics.turn(
            pass_s=scheduled - began,
            commit_s=committed - committing,
            dispatch_s=time.perf_counter() - began,
        )
        closing, self._closing = self._closing, []
        for conn in closing:
            conn.close()

    def watch(self, conn: object, job_id: int) -> None:
        assert isinstance(conn, AsyncConnection)
        self.watchers.watch(conn, job_id)

    def watcher_count(self, job_id: int) -> int:
        return self.watchers.count(job_id)

    def notice_error(self, job_id: int) -> str:
        return self.notifier.errors.get(job_id, "")

    def end_sessions(self, token_ids: list[str]) -> None:
        """Close every connection opened with these (revoked) tokens, after this turn's
        replies: a revoked token stops working at once, not at the next connect."""
        for token_id in token_ids:
            self._closing.extend(self.token_sessions.pop(token_id, ()))
        self.kick()

    def _arm_wakeup(self, at: float | None) -> None:
        """One timer for the earliest --begin time, re-armed only when that time changes."""
        if at == self._wakeup_at:
            return
        if self._wakeup is not None:
            self._wakeup.cancel()
        self._wakeup_at = at
        self._wakeup = None
        if at is not None:
            delay_s = max(0.0, at - time.time())
            self._wakeup = asyncio.get_running_loop().call_later(delay_s, self._on_wakeup)

    def _on_wakeup(self) -> None:
        self._wakeup = None
        self._wakeup_at = None
        self.cluster.wake()
        self.kick()

    async def _liveness_loop(self) -> None:
        # Liveness is the one timer in the master; it is not on the scheduling path.
        while True:
            await asyncio.sleep(1.0)
            now = time.time()
            self.cluster.expire_nodes(now)
            self.cluster.expire_turns(now)
            self.cluster.evict_finished(now)  # stored: the history has them from now on
            self.cluster.time_notices(now)
            audit.flush_failures()  # the count of failures not logged, once their minute ends
            if self.cluster.outbox.effects:
                self.kick()

    # ---- connections ---------------------------------------------------------------------

    async def _handle_connection(
        self, conn: AsyncConnection, transport: Transport, peer_user: str | None
    ) -> None:
        try:
            hello = await asyncio.wait_for(conn.recv(), self.config.hello_timeout_s)
            if hello["t"] != "hello":
                raise ProtocolError(f"expected hello first, got {hello['t']!r}")
            hello = HELLO.check(hello)
            if hello["version"] != PROTOCOL_VERSION:
                raise VersionMismatch(
                    f"protocol version {hello['version']} not supported (master speaks "
                    f"{PROTOCOL_VERSION}): upgrade the older side"
                )
            if hello["role"] == "node":
                await self.nodes.serve(conn, hello)
            elif hello["role"] == "join":
                await self.join_desk.serve(conn, hello, transport)
            else:
                await self._serve_client(conn, hello, transport, peer_user)
        except AuthenticationFailed as err:
            audit.log_failure("auth_failure", peer=conn.peer, reason=err.message)
            conn.send(error_reply(None, err.code, err.message))
        except ProtocolError as err:
            log.warning("peer %s: %s; closing", conn.peer, err)
            self._flush()  # replies already queued for this peer go out before the error
            conn.send(error_reply(None, err.code, err.message))
        except (ConnectionClosed, TimeoutError):
            pass
        except Exception:
            # A bug in one handler must not take the master down for everyone else.
            log.exception("peer %s: internal error; closing its connection", conn.peer)
        finally:
            conn.close()

    async def _serve_client(
        self,
        conn: AsyncConnection,
        hello: dict[str, Any],
        transport: Transport,
        peer_user: str | None,
    ) -> None:
        token_id = hello["token"]
        if peer_user is not None:
            user = peer_user  # the kernel's word; a claimed name is ignored
        elif token_id is not None:
            timeout_s = self.config.hello_timeout_s
            user = await authn.token_user(conn, hello, token_id, self.tokens, timeout_s)
            self.listeners.authenticated(conn)
            self.token_sessions.setdefault(token_id, set()).add(conn)
        else:
            raise AuthenticationFailed(NO_TOKEN)
        ctx = context(user, transport, conn.peer, admins=self.admins)
        self.reply(
            conn,
            ok_reply(
                hello["id"], {"version": PROTOCOL_VERSION, "server": __version__, "user": user}
            ),
        )
        pacer = Pacer(conn)  # one client's requests never starve the others (net/pacing.py)
        try:
            while True:
                await pacer.next_request()
                raw = await conn.recv()
                req_id = raw.get("id") if isinstance(raw.get("id"), int) else None
                try:
                    msg = validate(raw, CLIENT_REQUESTS)
                    kind = msg["t"]
                    if kind in UNANSWERED:  # a terminal's keystrokes, size, close
                        self.terminals.from_client(conn, msg)
                        continue
                    if kind in ("log", "workspace"):  # answered by the nodes, later
                        node_answers = self.outputs if kind == "log" else self.workspaces
                        node_answers.request(self.cluster, ctx, conn, msg)
                        continue
                    if kind == "pty_open":
                        data = self.terminals.open(self.cluster, ctx, conn, msg)
                    else:
                        data = self.service.handle(ctx, conn, msg)
                except MgpuError as err:
                    self.reply(conn, error_reply(req_id, err.code, err.message))
                    continue
                self.reply(conn, ok_reply(msg["id"], data))
        finally:
            self._client_gone(conn, token_id)

    def _client_gone(self, conn: AsyncConnection, token_id: str | None) -> None:
        """Forget a closed client's session and subscriptions. Its interactive jobs keep
        running: srun may re-attach after a network blip or a master restart, or from another
        shell."""
        self.outputs.client_gone(conn)
        self.workspaces.client_gone(conn)
        self.terminals.client_gone(conn)
        sessions = self.token_sessions.get(token_id or "")
        if sessions is not None:
            sessions.discard(conn)
            if not sessions:
                del self.token_sessions[token_id or ""]
        self.watchers.gone(conn)


def _refuse(reply: Message, refused: set[int], err: StorageError) -> Message:
    """The error reply that replaces an ``ok`` for a submission that could not be stored."""
    data = reply.get("data")
    if reply["t"] == "ok" and isinstance(data, dict) and data.get("job_id") in refused:
        return error_reply(reply["id"], err.code, f"job not accepted: {err.message}")
    return reply
