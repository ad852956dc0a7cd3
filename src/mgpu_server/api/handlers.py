"""Client request handlers: one table from message type to handler. A handler gets the
request's context (who, admin or not, which transport), the connection as an opaque key (for
subscriptions) and the checked request; it asks :mod:`~mgpu_server.api.permissions`, calls the
state, and shapes the reply. An unknown type never reaches here (the schema table in
mgpu_core.messages rejects it with ``unknown_message_type``).

The network side owns connections; what a handler needs of it (subscribing a connection to a
job's events, ending revoked sessions) is the small :class:`Sessions` interface, so this
layer never imports the network one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Protocol

from mgpu_core import __version__
from mgpu_core.errors import InvalidRequest, JobNotFound, MgpuError, PermissionDenied
from mgpu_core.joining import ca_hash
from mgpu_core.models import JobResult, SubmitRequest
from mgpu_core.states import JobState
from mgpu_server.api import accounting, audit
from mgpu_server.api import permissions as perm
from mgpu_server.api.jobinfo import job_detail, one_job
from mgpu_server.api.joins import JoinRegistry
from mgpu_server.api.listingtext import ListingText
from mgpu_server.api.permissions import RequestContext
from mgpu_server.api.tokens import TokenRegistry
from mgpu_server.records.jobs import ROW_FIELDS, Job
from mgpu_server.state.cluster import ClusterState


class Sessions(Protocol):
    def watch(self, conn: object, job_id: int) -> None:
        """Send ``conn`` the job's state changes, output and end from now on."""

    def watcher_count(self, job_id: int) -> int:
        """How many connections follow the job."""

    def end_sessions(self, token_ids: list[str]) -> None:
        """Close every connection opened with these (revoked) tokens after this turn."""

    def notice_error(self, job_id: int) -> str:
        """Why the job's last notice (mail, webhook) could not be delivered ("": none)."""


Handler = Callable[[RequestContext, object, dict[str, Any]], dict[str, Any]]

# Queue row fields the handler adds (not Job's): who follows the job, and its steps.
HANDLER_FIELDS = frozenset({"attached", "steps"})

# Requests that go to the audit log, with the fields worth recording.
AUDITED: dict[str, tuple[str, ...]] = {
    "submit": (),
    "cancel": ("job_ids", "signal", "scope"),
    "hold": ("job_ids",),
    "release": ("job_ids",),
    "requeue": ("job_ids",),
    "update": ("job_id", "changes"),
    "session_extend": ("job_id", "add_s"),
    "node_update": ("node_id", "action", "reason"),
    "turns": ("action", "users", "user", "mode", "seconds"),
    "token": ("action", "user", "token_id"),  # never the secret
    "join_token": ("action", "token_id", "ttl_s", "uses"),
}


class ClientService:
    def __init__(
        self,
        state: ClusterState,
        sessions: Sessions,
        tokens: TokenRegistry,
        *,
        private_commands: bool,
        joins: JoinRegistry | None = None,
    ) -> None:
        self.state = state
        self.sessions = sessions
        self.tokens = tokens
        self.listings = ListingText()
        self.joins = joins or JoinRegistry(state.store)
        self.private_commands = private_commands
        self.handlers: dict[str, Handler] = {
            "submit": self.submit,
            "cancel": self.cancel,
            "step": self.step,
            "queue": self.queue,
            "nodes": self.nodes,
            "partitions": self.partitions,
            "info": self.info,
            "attach": self.attach,
            "hold": self.hold,
            "release": self.release,
            "requeue": self.requeue,
            "update": self.update,
            "session_extend": self.session_extend,
            "priority": self.priority,
            "job": self.job,
            "history": lambda ctx, conn, msg: accounting.history(
                self.state, ctx, msg, private_commands=self.private_commands
            ),
            "report": lambda ctx, conn, msg: accounting.report(self.state, msg),
            "usage": lambda ctx, conn, msg: accounting.usage(self.state, msg),
            "turns": self.turns,
            "node_update": self.node_update,
            "token": self.token,
            "join_token": self.join_token,
        }

    def handle(self, ctx: RequestContext, conn: object, msg: dict[str, Any]) -> dict[str, Any]:
        verb = msg["t"]
        # A verb's own "user" field (whose turn) must not clash with who made the request.
        detail = {
            ("target_user" if k == "user" else k): v
            for k, v in msg.items()
            if k in AUDITED.get(verb, ())
        }
        try:
            data = self.handlers[verb](ctx, conn, msg)
        except PermissionDenied as err:
            audit.log_refused(verb, err.message, user=ctx.user, peer=ctx.peer, **detail)
            raise
        if verb in AUDITED:
            detail.update({k: data[k] for k in ("job_id", "token_id", "revoked") if k in data})
            audit.log_event(verb, user=ctx.user, peer=ctx.peer, **detail)
            # A per-job verb refused for some jobs: one line names them all.
            denied = [r for r in data.get("results", ()) if r["code"] == PermissionDenied.code]
            if denied:
                refused = [r["job_id"] for r in denied]
                why = denied[0]["message"]
                audit.log_refused(verb, why, user=ctx.user, peer=ctx.peer, job_ids=refused)
        return data

    # ---- jobs ----------------------------------------------------------------------------

    def submit(self, ctx: RequestContext, conn: object, msg: dict[str, Any]) -> dict[str, Any]:
        req = SubmitRequest.from_checked(msg)  # validated against its schema already
        perm.check_submit(ctx, req.job, self._site_rules())
        if req.test_only:  # sbatch --test-only: checked as a submit, nothing queued or stored
            when, node, partition = self.state.trial(ctx.user, req.job, time.time())
            return {"job_id": None, "would_start": when, "node": node, "partition": partition}
        limited = perm.bound_by_user_limits(ctx)
        job = self.state.submit(ctx.user, req.job, time.time(), limited=limited)
        if req.attach:
            self.sessions.watch(conn, job.job_id)
        return {"job_id": job.job_id}

    def _site_rules(self) -> perm.SiteRules:
        return perm.SiteRules(self.state.policy, self.state.turns.gpu_revoked)

    def _per_job(self, refs: list[int | str], act: Callable[[Job], None]) -> dict[str, Any]:
        """Act on every job the references name, each on its own: one result per job (a
        reference that names nothing, a refusal or an error does not stop the others)."""
        ids, results = self.state.table.resolve_all(refs, live=True)
        for job_id in ids:
            try:
                act(self.state.get(job_id))
                results.append(JobResult.success(job_id))
            except MgpuError as err:
                results.append(JobResult.from_error(job_id, err))
        return {"results": [r.to_wire() for r in results]}

    def cancel(self, ctx: RequestContext, conn: object, msg: dict[str, Any]) -> dict[str, Any]:
        """Cancel, or with a ``signal`` send that signal instead (scancel --signal)."""
        now = time.time()
        sig, scope = msg["signal"], msg["scope"]

        def act(job: Job) -> None:
            if sig is None:
                perm.check_owner(ctx, job, "cancel")
                self.state.control.cancel(job, now, by=ctx.user)
            else:
                perm.check_owner(ctx, job, "signal")
                self.state.control.signal(job, sig, scope, now, by=ctx.user)

        return self._per_job(msg["job_ids"], act)

    def step(self, ctx: RequestContext, conn: object, msg: dict[str, Any]) -> dict[str, Any]:
        """A job step (srun inside a running job) starts or ends: recorded for sacct."""
        job = self.state.get(msg["job_id"])
        perm.check_owner(ctx, job, "register a step of")
        now = time.time()
        if msg["action"] == "start":
            step = self.state.steps.start(job, name=msg["name"], ntasks=msg["ntasks"], now=now)
            return {"step_id": step.step_id}
        if msg["step_id"] is None:
            raise InvalidRequest("step end: step_id is required")
        self.state.steps.end(
            job, msg["step_id"], exit_code=msg["exit_code"], signal=msg["signal"], now=now
        )
        return {}

    def hold(self, ctx: RequestContext, conn: object, msg: dict[str, Any]) -> dict[str, Any]:
        now = time.time()

        def act(job: Job) -> None:
            self.state.control.hold(job, perm.hold_kind(ctx, job), now)

        return self._per_job(msg["job_ids"], act)

    def release(self, ctx: RequestContext, conn: object, msg: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        rules = self._site_rules()

        def act(job: Job) -> None:
            perm.check_release(ctx, job, rules)
            self.state.control.release(job, now)

        return self._per_job(msg["job_ids"], act)

    def requeue(self, ctx: RequestContext, conn: object, msg: dict[str, Any]) -> dict[str, Any]:
        def act(job: Job) -> None:
            perm.check_owner(ctx, job, "requeue")
            self.state.control.requeue(job)

        return self._per_job(msg["job_ids"], act)

    def session_extend(
        self, ctx: RequestContext, conn: object, msg: dict[str, Any]
    ) -> dict[str, Any]:
        """mgpu_client session extend: the owner (or an admin) gives a session more time."""
        job = one_job(self.state, msg["job_id"])
        perm.check_owner(ctx, job, "extend")
        return {"job_id": job.job_id, "time_limit_s": self.state.control.extend(job, msg["add_s"])}

    def update(self, ctx: RequestContext, conn: object, msg: dict[str, Any]) -> dict[str, Any]:
        job = self.state.get(msg["job_id"])
        changes = {k: v for k, v in msg["changes"].items() if v is not None}
        perm.check_update(ctx, job, changes, self._site_rules())
        self.state.control.update(job, changes, time.time())
        return {}

    def attach(self, ctx: RequestContext, conn: object, msg: dict[str, Any]) -> dict[str, Any]:
        """Watch a job: its row now, then its events. A finished job just returns its row.
        With an ``offset``, a running interactive job's node sends its output again from
        there (to every watcher: each client drops what it has printed already)."""
        job = self.state.get(msg["job_id"])
        perm.check_attach(ctx, job)
        if not job.state.terminal:
            self.sessions.watch(conn, job.job_id)
            offset = msg["offset"]
            if offset is not None and job.spec.interactive and job.state is JobState.RUNNING:
                replay = {"t": "replay", "job_id": job.job_id, "offset": offset}
                self.state.outbox.to_node(job.node_id, replay)
        return {"job": job.to_wire(time.time())}

    def job(self, ctx: RequestContext, conn: object, msg: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        details = [
            job_detail(self.state, ctx, job, now, private_commands=self.private_commands)
            for job in self.state.find(msg["job_ids"])
        ]
        for row in details:
            row["attached"] = self.sessions.watcher_count(row["job_id"])
            row["notice_error"] = self.sessions.notice_error(row["job_id"])
        return {"jobs": details, "now": now}

    def priority(self, ctx: RequestContext, conn: object, msg: dict[str, Any]) -> dict[str, Any]:
        ids, errors = self.state.table.resolve_all(msg["job_ids"])
        if errors:
            raise JobNotFound(errors[0].message)
        rows = self.state.control.priorities(ids, time.time())
        policy = self.state.policy
        return {
            "jobs": [
                {
                    "job_id": b.job_id,
                    "user": self.state.get(b.job_id).user,
                    "priority": round(b.priority, 3),
                    "age": round(b.age, 4),
                    "fairshare": round(b.fairshare, 4),
                    "qos": round(b.qos, 4),
                    "nice": b.nice,
                    "admin": b.admin,
                }
                for b in rows
            ],
            "weights": {
                "age": policy.weight_age,
                "fairshare": policy.weight_fairshare,
                "qos": policy.weight_qos,
            },
        }

    def queue(self, ctx: RequestContext, conn: object, msg: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        refs = msg["job_ids"]
        fields = msg["fields"] or None
        if msg["render"]:  # the text a command prints (listingtext.py)
            fields = self.listings.fields(msg)
        if fields is not None:
            unknown = sorted(set(fields) - set(ROW_FIELDS) - HANDLER_FIELDS)
            if unknown:
                raise InvalidRequest(f"unknown queue field {unknown[0]!r}")
        # Owner and id are needed below even when not asked for; dropped again after.
        wanted = [f for f in fields or () if f not in HANDLER_FIELDS]
        extra = [k for k in ("job_id", "user") if fields is not None and k not in wanted]
        rows = self.state.list_jobs(
            users=msg["users"],
            states=msg["states"],
            job_ids=self.state.table.resolve_all(refs)[0] if refs else None,
            include_finished=msg["include_finished"],
            now=now,
            fields=None if fields is None else [*wanted, *extra],
            names=msg["names"],
            window=(msg["window_start_s"], msg["window_end_s"]),
        )
        accounting.hide_commands(ctx, rows, private_commands=self.private_commands)
        attached = fields is None or "attached" in fields
        # A job's steps only when asked for: a default listing stays as cheap as it was.
        steps = msg["steps"] or (fields is not None and "steps" in fields)
        for row in rows:
            if attached:
                # How many clients follow the job's output (srun, attach): 0 = nobody gets it.
                row["attached"] = self.sessions.watcher_count(row["job_id"])
            if steps:
                row["steps"] = self.state.steps.rows(row["job_id"])
            for key in extra:
                del row[key]
        if msg["render"]:
            return {"text": self.listings.render(msg, rows, now), "now": now}
        return {"jobs": rows, "now": now}

    # ---- the cluster ---------------------------------------------------------------------

    def nodes(self, ctx: RequestContext, conn: object, msg: dict[str, Any]) -> dict[str, Any]:
        nodes = sorted(self.state.nodes.values(), key=lambda n: n.node_id)
        of_node = self.state.policy.partitions.of_node
        rows = [{**n.to_wire(), "partitions": of_node(n.node_id)} for n in nodes]
        return {"nodes": rows, "now": time.time()}

    def partitions(self, ctx: RequestContext, conn: object, msg: dict[str, Any]) -> dict[str, Any]:
        """sinfo's partitions: each with its nodes, limits and GPUs (read-only, anyone)."""
        gpus = {n.node_id: len(n.gpus) for n in self.state.nodes.values()}
        return {"partitions": self.state.policy.partitions.rows(gpus), "now": time.time()}

    def info(self, ctx: RequestContext, conn: object, msg: dict[str, Any]) -> dict[str, Any]:
        """The cluster in numbers: O(1), from totals the state keeps as it changes."""
        return {
            "server": __version__,
            **self.state.nodes.totals.summary(),
            # Only the states that have jobs: an idle cluster shows {}.
            "jobs": {
                state.value: count
                for state, count in (
                    (JobState.PENDING, len(self.state.pending)),
                    (JobState.RUNNING, len(self.state.running)),
                )
                if count
            },
            "scheduler": asdict(self.state.pass_stats),
        }

    def turns(self, ctx: RequestContext, conn: object, msg: dict[str, Any]) -> dict[str, Any]:
        perm.check_turns(ctx, msg["action"])
        args = {k: msg[k] for k in ("users", "user", "count", "mode", "seconds")}
        return self.state.turns.request(msg["action"], args, time.time())

    def node_update(self, ctx: RequestContext, conn: object, msg: dict[str, Any]) -> dict[str, Any]:
        perm.require_admin(ctx, f"{msg['action']} a node")
        self.state.update_node(msg["node_id"], msg["action"], msg["reason"])
        if msg["action"] == "remove":
            self.joins.forget_node(msg["node_id"])  # its host must join again to come back
        return {}

    def token(self, ctx: RequestContext, conn: object, msg: dict[str, Any]) -> dict[str, Any]:
        if msg["action"] == "create":
            perm.check_token_create(ctx)
            token = self.tokens.create(msg["user"], by=ctx.user, now_s=time.time())
            return {"token_id": token.token_id, "token": str(token), "user": msg["user"]}
        perm.require_admin(ctx, "manage tokens")
        if msg["action"] == "list":
            return {"tokens": self.tokens.listing(msg["user"])}
        revoked = self.tokens.revoke(msg["user"], msg["token_id"])
        self.sessions.end_sessions(revoked)
        return {"revoked": revoked}

    def join_token(self, ctx: RequestContext, conn: object, msg: dict[str, Any]) -> dict[str, Any]:
        """Tokens for ``mgpu_node join``: a new one comes with all a host needs to join (the
        port, the CA's hash, the certificate's names), so one printed command is complete."""
        action = msg["action"]
        perm.check_join_token(ctx, action)
        now = time.time()
        if action == "list":
            return {"tokens": self.joins.listing(now), "nodes": self.joins.nodes()}
        if action == "revoke":
            return {"revoked": self.joins.revoke(msg["token_id"])}
        token = self.joins.create(ttl_s=msg["ttl_s"], uses=msg["uses"], by=ctx.user, now_s=now)
        info = self.joins.info
        return {
            "token_id": token.token_id,
            "token": str(token),
            "expires_s": now + msg["ttl_s"],
            "uses": msg["uses"],
            "port": info.port,
            "ca_hash": ca_hash(info.ca_pem),
            "tls_names": list(info.tls_names),
        }
