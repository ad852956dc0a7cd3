"""Every permission rule of the master, in one place.

A request comes with a :class:`RequestContext`: the authenticated user (the kernel's word on
the Unix socket, a proven token over TCP), whether that user administers the cluster, and the
transport as a typed value. Handlers ask the functions below before they call the state; the
state itself decides nothing about who may do what. DESIGN.md's rule "a user cannot bend a
rule an admin sets" is kept here: an admin's hold, priorities, lower nice values, the GPU turn
queue, nodes and tokens are the admins'.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mgpu_core.errors import PermissionDenied
from mgpu_core.states import Hold
from mgpu_server.records.jobs import Job

# Turn-queue verbs anyone may use; the rest change the rotation.
TURNS_READ_ONLY = frozenset({"status", "history"})


class Transport(StrEnum):
    UNIX = "unix"  # the master's socket: the user is the peer's uid (SO_PEERCRED)
    TCP = "tcp"  # plain TCP: the user proved a token
    TLS = "tls"  # TCP inside TLS

    @property
    def private(self) -> bool:
        """Whether a secret may cross it: not plain TCP."""
        return self is not Transport.TCP


@dataclass(frozen=True, slots=True)
class RequestContext:
    user: str
    admin: bool
    transport: Transport
    peer: str  # for the audit log only: never a basis for a decision


def context(
    user: str, transport: Transport, peer: str, *, admins: Collection[str]
) -> RequestContext:
    """The context of an authenticated user: root, the master's own user and the config's
    admins administer the cluster."""
    return RequestContext(user, user == "root" or user in admins, transport, peer)


def require_admin(ctx: RequestContext, what: str) -> None:
    if not ctx.admin:
        raise PermissionDenied(f"only an admin can {what}")


def check_owner(ctx: RequestContext, job: Job, verb: str) -> None:
    """Users act on their own jobs only; admins on all."""
    if not ctx.admin and job.user != ctx.user:
        raise PermissionDenied(
            f"job {job.job_id} belongs to {job.user}: only its owner or an admin can {verb} it"
        )


def hold_kind(ctx: RequestContext, job: Job) -> Hold:
    """The hold a request puts on a job: an admin's, or the user's own. A user cannot turn
    an admin's hold into one they may release."""
    check_owner(ctx, job, "hold")
    if ctx.admin:
        return Hold.ADMIN
    if job.hold is Hold.ADMIN:
        raise PermissionDenied(f"job {job.job_id} was held by an admin")
    return Hold.USER


def check_release(ctx: RequestContext, job: Job) -> None:
    check_owner(ctx, job, "release")
    if job.hold is Hold.ADMIN and not ctx.admin:
        raise PermissionDenied(f"job {job.job_id} was held by an admin")


def check_update(ctx: RequestContext, job: Job, changes: dict[str, Any]) -> None:
    check_owner(ctx, job, "update")
    if ctx.admin:
        return
    if "priority" in changes:
        raise PermissionDenied("only an admin can set a job's priority")
    if changes.get("nice", job.spec.nice) < job.spec.nice:
        raise PermissionDenied("only an admin can lower a job's nice value")


def check_attach(ctx: RequestContext, job: Job) -> None:
    if not ctx.admin and job.user != ctx.user:
        raise PermissionDenied(f"job {job.job_id} belongs to {job.user}: its output is theirs")


def check_turns(ctx: RequestContext, action: str) -> None:
    if action not in TURNS_READ_ONLY:
        require_admin(ctx, f"change the GPU turn queue ({action})")


def check_token_create(ctx: RequestContext) -> None:
    """A new token's reply carries its secret: only over a private transport."""
    require_admin(ctx, "manage tokens")
    if not ctx.transport.private:
        raise PermissionDenied(
            "a new token's secret must not cross the network in the clear: create it "
            "on the master's host (Unix socket) or over TLS"
        )


def sees_command(ctx: RequestContext, owner: str, *, private_commands: bool) -> bool:
    """Whether a queue row shows another user's command line, directory and output path."""
    return not private_commands or ctx.admin or owner == ctx.user
