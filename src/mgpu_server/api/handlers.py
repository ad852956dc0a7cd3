"""Client request handlers: decode the checked request, call the cluster, shape the reply.

Dispatch is a dict from message type to handler; an unknown type never reaches here (the
schema table in mgpu_core.messages rejects it with ``unknown_message_type``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from mgpu_core import __version__
from mgpu_core.aio import AsyncConnection
from mgpu_core.errors import InvalidRequest, JobNotFound, PermissionDenied, error_from_wire
from mgpu_core.models import JobSpec
from mgpu_core.states import JobState
from mgpu_server.api import audit
from mgpu_server.records.jobs import ROW_FIELDS

if TYPE_CHECKING:  # the server owns the service; the import is for types only
    from mgpu_server.net.server import Server

Handler = Callable[[AsyncConnection, str, dict[str, Any]], dict[str, Any] | None]


# Requests that go to the audit log, with the fields worth recording.
AUDITED: dict[str, tuple[str, ...]] = {
    "submit": (),
    "cancel": ("job_ids",),
    "hold": ("job_ids",),
    "release": ("job_ids",),
    "requeue": ("job_ids",),
    "update": ("job_id", "changes"),
    "node_update": ("node_id", "action", "reason"),
    "turns": ("action", "users", "user", "mode", "seconds"),
    "token": ("action", "user", "token_id"),  # never the secret
}


def _ids(data: dict[str, Any] | None) -> dict[str, Any]:
    """What a reply adds to its audit line: the new job's or token's id (never a secret)."""
    return {k: data[k] for k in ("job_id", "token_id", "revoked") if data and k in data}


class ClientService:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.cluster = server.cluster
        self._handlers: dict[str, Handler] = {
            "submit": self.submit,
            "cancel": self.cancel,
            "queue": self.queue,
            "nodes": self.nodes,
            "info": self.info,
            "attach": self.attach,
            "hold": self.hold,
            "release": self.release,
            "requeue": self.requeue,
            "update": self.update,
            "priority": self.priority,
            "turns": self.turns,
            "node_update": self.node_update,
            "token": self.token,
        }

    def handle(
        self, conn: AsyncConnection, user: str, msg: dict[str, Any]
    ) -> dict[str, Any] | None:
        data = self._handlers[msg["t"]](conn, user, msg)
        if msg["t"] in AUDITED:
            # A verb's own "user" field (whose turn) must not clash with who made the request.
            detail = {
                ("target_user" if k == "user" else k): v
                for k, v in msg.items()
                if k in AUDITED[msg["t"]]
            }
            detail.update(_ids(data))
            audit.log_event(msg["t"], user=user, peer=conn.peer, **detail)
        return data

    def submit(self, conn: AsyncConnection, user: str, msg: dict[str, Any]) -> dict[str, Any]:
        spec = JobSpec.from_wire(msg["job"])
        job = self.cluster.submit(user, spec, time.time())
        if msg["attach"]:
            self.server.watchers.setdefault(job.job_id, set()).add(conn)
        return {"job_id": job.job_id}

    def is_admin(self, user: str) -> bool:
        """``user`` is authenticated (Unix socket peer or token): root, the master's own user
        and the config's admins administer the cluster."""
        return user in ("root", self.server.owner) or user in self.server.config.admins

    def _require_admin(self, user: str, what: str) -> None:
        if not self.is_admin(user):
            raise PermissionDenied(f"only an admin can {what}")

    def _owned(
        self, user: str, refs: list[int | str], verb: str
    ) -> tuple[list[int], list[dict[str, Any]]]:
        """The referenced jobs ``user`` may act on (their own; every job for an admin), and
        error results for the rest."""
        ids, errors = self.cluster.resolve_all(refs, live=True)
        if self.is_admin(user):
            return ids, errors
        mine = []
        for job_id in ids:
            owner = self.cluster.jobs[job_id].user
            if owner == user:
                mine.append(job_id)
            else:
                err = PermissionDenied(
                    f"job {job_id} belongs to {owner}: only its owner or an admin can {verb} it"
                )
                errors.append({"job_id": job_id, "ok": False, **err.to_wire()})
        return mine, errors

    def hold(self, conn: AsyncConnection, user: str, msg: dict[str, Any]) -> dict[str, Any]:
        ids, errors = self._owned(user, msg["job_ids"], "hold")
        return {"results": errors + self.cluster.hold(ids, admin=self.is_admin(user))}

    def release(self, conn: AsyncConnection, user: str, msg: dict[str, Any]) -> dict[str, Any]:
        ids, errors = self._owned(user, msg["job_ids"], "release")
        return {"results": errors + self.cluster.release(ids, admin=self.is_admin(user))}

    def requeue(self, conn: AsyncConnection, user: str, msg: dict[str, Any]) -> dict[str, Any]:
        ids, errors = self._owned(user, msg["job_ids"], "requeue")
        return {"results": errors + self.cluster.requeue(ids)}

    def update(self, conn: AsyncConnection, user: str, msg: dict[str, Any]) -> dict[str, Any]:
        _, denied = self._owned(user, [msg["job_id"]], "update")
        if denied:
            raise error_from_wire(denied[0]["code"], denied[0]["message"])
        changes = {k: v for k, v in msg["changes"].items() if v is not None}
        self.cluster.update(msg["job_id"], changes, admin=self.is_admin(user))
        return {}

    def priority(self, conn: AsyncConnection, user: str, msg: dict[str, Any]) -> dict[str, Any]:
        ids, errors = self.cluster.resolve_all(msg["job_ids"])
        if errors:
            raise JobNotFound(errors[0]["message"])
        rows = self.cluster.priorities(ids, time.time())
        return {
            "jobs": [
                {
                    "job_id": b.job_id,
                    "user": self.cluster.jobs[b.job_id].user,
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
                "age": self.cluster.policy.weight_age,
                "fairshare": self.cluster.policy.weight_fairshare,
                "qos": self.cluster.policy.weight_qos,
            },
        }

    def turns(self, conn: AsyncConnection, user: str, msg: dict[str, Any]) -> dict[str, Any]:
        args = {k: msg[k] for k in ("users", "user", "count", "mode", "seconds")}
        return self.cluster.turn_request(
            msg["action"], args, admin=self.is_admin(user), now=time.time()
        )

    def attach(self, conn: AsyncConnection, user: str, msg: dict[str, Any]) -> dict[str, Any]:
        """Watch a job: its row now, then its events. A finished job just returns its row."""
        job = self.cluster.get(msg["job_id"])
        if job.user != user and not self.is_admin(user):
            raise PermissionDenied(f"job {job.job_id} belongs to {job.user}: its output is theirs")
        if not job.state.terminal:
            self.server.watchers.setdefault(job.job_id, set()).add(conn)
        return {"job": job.to_wire(time.time())}

    def node_update(self, conn: AsyncConnection, user: str, msg: dict[str, Any]) -> dict[str, Any]:
        self._require_admin(user, f"{msg['action']} a node")
        self.cluster.update_node(msg["node_id"], msg["action"], msg["reason"], time.time())
        return {}

    def token(self, conn: AsyncConnection, user: str, msg: dict[str, Any]) -> dict[str, Any]:
        self._require_admin(user, "manage tokens")
        tokens = self.server.tokens
        if msg["action"] == "create":
            if not (conn.peer.startswith("unix:") or conn.writer.get_extra_info("ssl_object")):
                raise PermissionDenied(
                    "a new token's secret must not cross the network in the clear: create it "
                    "on the master's host (Unix socket) or over TLS"
                )
            token = tokens.create(msg["user"], by=user, now_s=time.time())
            return {"token_id": token.token_id, "token": str(token), "user": msg["user"]}
        if msg["action"] == "list":
            return {"tokens": tokens.listing(msg["user"])}
        revoked = tokens.revoke(msg["user"], msg["token_id"])
        self.server.end_sessions(revoked)
        return {"revoked": revoked}

    def cancel(self, conn: AsyncConnection, user: str, msg: dict[str, Any]) -> dict[str, Any]:
        ids, errors = self._owned(user, msg["job_ids"], "cancel")
        return {"results": errors + self.cluster.cancel(ids, time.time())}

    def queue(self, conn: AsyncConnection, user: str, msg: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        refs = msg["job_ids"]
        fields = msg["fields"] or None
        if fields is not None:
            unknown = sorted(set(fields) - set(ROW_FIELDS) - {"attached"})
            if unknown:
                raise InvalidRequest(f"unknown queue field {unknown[0]!r}")
        # Owner and id are needed below even when not asked for; dropped again after.
        wanted = [f for f in fields or () if f != "attached"]
        extra = [k for k in ("job_id", "user") if fields is not None and k not in wanted]
        rows = self.cluster.list_jobs(
            users=msg["users"],
            states=msg["states"],
            job_ids=self.cluster.resolve_all(refs)[0] if refs else None,
            include_finished=msg["include_finished"],
            now=now,
            fields=None if fields is None else [*wanted, *extra],
        )
        watchers = self.server.watchers
        private = self.server.config.private_commands and not self.is_admin(user)
        hidden = {"command": "", "cwd": "", "stdout_path": None}
        if fields is not None:
            hidden = {k: v for k, v in hidden.items() if k in fields}
        attached = fields is None or "attached" in fields
        for row in rows:
            if private and hidden and row["user"] != user:
                row.update(hidden)
            if attached:
                # How many clients follow the job's output (srun, attach): 0 = nobody gets it.
                row["attached"] = len(watchers.get(row["job_id"], ()))
            for key in extra:
                del row[key]
        return {"jobs": rows, "now": now}

    def nodes(self, conn: AsyncConnection, user: str, msg: dict[str, Any]) -> dict[str, Any]:
        nodes = sorted(self.cluster.nodes.values(), key=lambda n: n.node_id)
        return {"nodes": [n.to_wire() for n in nodes], "now": time.time()}

    def info(self, conn: AsyncConnection, user: str, msg: dict[str, Any]) -> dict[str, Any]:
        nodes = list(self.cluster.nodes.values())
        states: dict[str, int] = {}
        for node in nodes:
            states[node.display_state()] = states.get(node.display_state(), 0) + 1
        up = [n for n in nodes if n.up]
        jobs: dict[str, int] = {}
        for job in self.cluster.jobs.values():
            if job.state in (JobState.PENDING, JobState.RUNNING):
                jobs[job.state.value] = jobs.get(job.state.value, 0) + 1
        return {
            "server": __version__,
            "nodes_total": len(nodes),
            "node_states": states,
            "gpus_total": sum(len(n.gpus) for n in nodes),
            "gpus_up": sum(1 for n in up for g in n.gpus if g.healthy),
            "gpus_alloc": sum(1 for n in up for g in n.gpus if g.job_id is not None),
            "cpus_total": sum(n.cpus for n in up),
            "cpus_alloc": sum(n.cpus_alloc for n in up),
            "jobs": jobs,
            "scheduler": asdict(self.server.pass_stats),
        }
