"""Every permission rule of the master, in one place.

A request comes with a :class:`RequestContext`: the authenticated user (the kernel's word on
the Unix socket, a proven token over TCP), whether that user administers the cluster, and the
transport as a typed value. Handlers ask the functions below before they call the state; the
state itself decides nothing about who may do what. DESIGN.md's rule "a user cannot bend a
rule an admin sets" is kept here: an admin's hold, priorities, lower nice values, the GPU turn
queue, nodes and tokens are the admins'; a QoS's or a partition's access list and a user's
revoked GPU access bind every job of that user, at submit, update and release and in every
scheduling pass (the state is handed :func:`start_refusal` and parks a job it refuses).
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mgpu_core.errors import PermissionDenied
from mgpu_core.models import JobSpec
from mgpu_core.reasons import Reason
from mgpu_core.states import Hold
from mgpu_server.records.jobs import Job
from mgpu_server.scheduling.partitions import Partition
from mgpu_server.scheduling.policy import PolicyConfig, Qos

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


@dataclass(frozen=True, slots=True)
class SiteRules:
    """What admins set that binds a user's jobs whoever asks: the QoS table (each QoS's access
    list) and the users whose GPU access is revoked (the turn queue's set, as it is now)."""

    policy: PolicyConfig
    gpu_revoked: Collection[str]


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


def check_submit(ctx: RequestContext, spec: JobSpec, rules: SiteRules) -> None:
    """A negative nice (a jump ahead of everyone's jobs) is an admin's to give; the QoS must be
    open to the user, and GPUs theirs to use."""
    if spec.nice < 0 and not ctx.admin:
        raise PermissionDenied("only an admin can set a negative nice value")
    name = spec.qos or rules.policy.default_qos
    qos = rules.policy.qos.get(name)  # an unknown QoS is refused by the submission's checks
    for problem in (
        _qos_problem(ctx.user, qos),
        _gpu_problem(ctx.user, spec.gpus, rules.gpu_revoked),
        _partitions_problem(ctx.user, rules.policy.partitions.known(spec.partition)),
        _notify_problem(spec.notify_url, rules.policy.notify_url_prefixes),
    ):
        if problem:
            raise PermissionDenied(problem)


def _notify_problem(url: str, prefixes: Sequence[str]) -> str:
    if not url or any(url.startswith(p) for p in prefixes):
        return ""
    if not prefixes:
        return (
            "this cluster takes no --notify URLs (an admin lists them: [notify] job_url_prefixes)"
        )
    return (
        f"--notify {url} is not under one of this cluster's webhook prefixes: {', '.join(prefixes)}"
    )


def check_release(ctx: RequestContext, job: Job, rules: SiteRules) -> None:
    """An admin's hold is theirs to lift; and nobody, admins included, releases a job its
    owner may not run (GPU access revoked, a QoS no longer open to them): an admin lifts
    that rule instead (``gpu assign``, the QoS's lists)."""
    check_owner(ctx, job, "release")
    if job.hold is Hold.ADMIN and not ctx.admin:
        raise PermissionDenied(f"job {job.job_id} was held by an admin")
    spec = job.spec
    qos = rules.policy.qos_of(spec.qos)
    for problem in (
        _qos_problem(job.user, qos),
        _gpu_problem(job.user, spec.gpus, rules.gpu_revoked),
        _partitions_problem(job.user, rules.policy.partitions.known(spec.partition)),
    ):
        if problem:
            raise PermissionDenied(f"cannot release job {job.job_id}: {problem}")


def check_update(ctx: RequestContext, job: Job, changes: dict[str, Any], rules: SiteRules) -> None:
    """Priorities and a lower nice are an admin's; a new QoS must be open to the job's owner
    and new GPUs theirs to use, whoever asks (the pass would hold such a job anyway)."""
    check_owner(ctx, job, "update")
    if not ctx.admin:
        if "priority" in changes:
            raise PermissionDenied("only an admin can set a job's priority")
        if changes.get("nice", job.spec.nice) < job.spec.nice:
            raise PermissionDenied("only an admin can lower a job's nice value")
    problems = (
        _qos_problem(job.user, rules.policy.qos.get(changes["qos"])) if "qos" in changes else "",
        _gpu_problem(job.user, changes.get("gpus", 0), rules.gpu_revoked),
    )
    for problem in problems:
        if problem:
            raise PermissionDenied(problem)


def start_refusal(
    job: Job,
    policy: PolicyConfig,
    gpu_revoked: Collection[str],
    partition: Partition | None = None,
) -> Reason | None:
    """Why a pending job may not start, whoever asks, or None: its owner's GPU access was
    revoked (a GPU job), its QoS is not open to its owner, or none of its partitions is (the
    lists or a group changed since it was submitted). The state asks it when it places a job
    and in every pass. With ``partition``: only whether that partition admits the job's owner
    (a pass offers a job in several partitions only those that do)."""
    if partition is not None:
        return Reason.PARTITION_CONFIG if _partition_problem(job.user, partition) else None
    if _gpu_problem(job.user, job.spec.gpus, gpu_revoked):
        return Reason.GPU_ACCESS_REVOKED
    if _qos_problem(job.user, policy.qos_of(job.spec.qos)):
        return Reason.QOS_NOT_ALLOWED
    if _partitions_problem(job.user, policy.partitions.known(job.spec.partition)):
        return Reason.PARTITION_CONFIG
    return None


def may_use_qos(user: str, qos: Qos) -> bool:
    """Whether the QoS's access list admits the user: named in allowed_users or a member of a
    group in allowed_groups (an open QoS admits everyone). The user lists come first: they
    cost no lookup."""
    if not qos.restricted or user in (qos.allowed_users or ()):
        return True
    return any(in_group(user, group) for group in qos.allowed_groups or ())


def in_group(user: str, group: str) -> bool:
    """Whether the system puts ``user`` in the Unix group ``group`` now: asked at each check
    (files, LDAP or sssd, whatever NSS serves), so a change to a group counts without a master
    restart. A name the system does not know is in no group (a token's user need not be a
    Unix account: name it in allowed_users)."""
    try:
        entry = grp.getgrnam(group)
    except KeyError:
        return False
    if user in entry.gr_mem:
        return True
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        return False
    # The primary group and every supplementary one, as the system lists them for the user.
    return entry.gr_gid in os.getgrouplist(user, account.pw_gid)


def may_use_partition(user: str, partition: Partition) -> bool:
    """Whether a partition's access lists admit the user, as a QoS's do."""
    if not partition.restricted or user in (partition.allowed_users or ()):
        return True
    return any(in_group(user, group) for group in partition.allowed_groups or ())


def _partition_problem(user: str, partition: Partition) -> str:
    if may_use_partition(user, partition):
        return ""
    return (
        f"partition {partition.name} is not open to user {user} "
        "(not in its allowed_users or allowed_groups)"
    )


def _partitions_problem(user: str, partitions: Sequence[Partition]) -> str:
    """The first partition's problem when none of a job's partitions admits the user ("" if
    one does, or none is known: an unknown name is refused by the submission's checks)."""
    problems = [_partition_problem(user, p) for p in partitions]
    return problems[0] if problems and all(problems) else ""


def _qos_problem(user: str, qos: Qos | None) -> str:
    if qos is None or may_use_qos(user, qos):
        return ""
    return f"QoS {qos.name} is not open to user {user} (not in its allowed_users or allowed_groups)"


def _gpu_problem(user: str, gpus: int, gpu_revoked: Collection[str]) -> str:
    if not gpus or user not in gpu_revoked:
        return ""
    return f"user {user} has no GPU access (revoked by an admin); jobs without GPUs still run"


def bound_by_user_limits(ctx: RequestContext) -> bool:
    """Whether the per-user limits (pending jobs, submissions per second) bind this user:
    everyone's but the admins', who run the benchmarks and bulk imports."""
    return not ctx.admin


def check_attach(ctx: RequestContext, job: Job) -> None:
    if not ctx.admin and job.user != ctx.user:
        raise PermissionDenied(f"job {job.job_id} belongs to {job.user}: its output is theirs")


def check_workspace(ctx: RequestContext, action: str, user: str) -> None:
    """A user lists and removes their own workspaces; an admin anyone's (``user`` "": every
    user's, which only a listing asks)."""
    if ctx.admin or (user and user == ctx.user):
        return
    verb = "list" if action == "list" else "remove"
    whose = f"{user}'s workspaces" if user else "every user's workspaces"
    raise PermissionDenied(f"only {user or 'an admin'} or an admin can {verb} {whose}")


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


def check_join_token(ctx: RequestContext, action: str) -> None:
    """Join tokens let a host into the cluster: admins only; a new one's secret (in the
    reply) only over a private transport, as a user token's."""
    require_admin(ctx, "manage join tokens")
    if action == "create" and not ctx.transport.private:
        raise PermissionDenied(
            "a new join token's secret must not cross the network in the clear: create it "
            "on the master's host (Unix socket) or over TLS"
        )


def sees_command(ctx: RequestContext, owner: str, *, private_commands: bool) -> bool:
    """Whether a queue row shows another user's command line, directory and output path."""
    return not private_commands or ctx.admin or owner == ctx.user
