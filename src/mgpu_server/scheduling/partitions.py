"""Partitions: named sets of nodes with their own limits (Slurm's partitions), as the master's
config declares them (``[partition.NAME]``, parsed by :mod:`mgpu_server.settings`). Pure data
and pure questions about it; who may use a partition (its user and group lists) is
:mod:`mgpu_server.api.permissions`'s to say, like every access rule.

A job names the partitions it may run in (``-p a,b``, in the user's order; none: the default
one). The submission checks the names and the time limit against them; the scheduling pass
offers the job every listed partition that may run it now (:meth:`Partitions.offer`), the
planner starts it in the first where it can start now, or reserves for it in the one where
it can start soonest. A node can be in several partitions. A cluster with no partition in its
config has one, :data:`IMPLICIT_NAME`, holding every node, with no limits.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from mgpu_core.errors import InvalidPartition
from mgpu_core.reasons import Reason
from mgpu_server.scheduling.views import Choice

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

IMPLICIT_NAME = "gpu"


class PartitionState(StrEnum):
    """Slurm's partition states: UP runs jobs; DOWN accepts jobs but starts none (they wait,
    PartitionDown); DRAIN starts the jobs it has but accepts no new ones; INACTIVE does
    neither (its queued jobs wait, PartitionInactive)."""

    UP = "UP"
    DOWN = "DOWN"
    DRAIN = "DRAIN"
    INACTIVE = "INACTIVE"

    @property
    def runs_jobs(self) -> bool:
        return self in (PartitionState.UP, PartitionState.DRAIN)

    @property
    def accepts_jobs(self) -> bool:
        return self in (PartitionState.UP, PartitionState.DOWN)


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    # Its nodes, by name (registered or not yet); None: every node ("ALL").
    nodes: frozenset[str] | None = None
    default: bool = False
    max_time_s: int = 0  # 0: no limit
    default_time_s: int = 0  # a job without --time gets this (else max_time_s)
    # Neither list set: open to everyone; either set: only the users named or in a group
    # named (an empty list names nobody). None: every QoS may be used in it.
    allowed_qos: frozenset[str] | None = None
    allowed_users: frozenset[str] | None = None
    allowed_groups: frozenset[str] | None = None
    priority_tier: int = 0  # higher tiers' jobs are considered first (Slurm's PriorityTier)
    state: PartitionState = PartitionState.UP

    def has(self, node_id: str) -> bool:
        return self.nodes is None or node_id in self.nodes

    @property
    def restricted(self) -> bool:
        return self.allowed_users is not None or self.allowed_groups is not None

    def refusal(self, time_limit_s: int, qos: str) -> Reason | None:
        """Why this partition may not run a job with this limit and QoS now (its user aside:
        permissions), or None."""
        if self.state is PartitionState.DOWN:
            return Reason.PARTITION_DOWN
        if self.state is PartitionState.INACTIVE:
            return Reason.PARTITION_INACTIVE
        if self.max_time_s and not 0 < time_limit_s <= self.max_time_s:
            return Reason.PARTITION_TIME_LIMIT
        if self.allowed_qos is not None and qos not in self.allowed_qos:
            return Reason.PARTITION_CONFIG
        return None

    def time_default_s(self) -> int:
        """The time limit a job without --time gets here (0: none)."""
        return self.default_time_s or self.max_time_s


@dataclass(frozen=True, slots=True)
class Offer:
    """The partitions that may run a job now, by the config's rules (:meth:`Partitions.offer`)."""

    partitions: tuple[Partition, ...]
    reason: Reason  # why none may, when there are none
    choices: tuple[Choice, ...]  # the planner's view of them
    restricted: bool  # one of them has an access list


@dataclass(frozen=True, slots=True)
class Partitions:
    """Every partition, in the config's order, and which is the default."""

    by_name: dict[str, Partition]
    default: str
    # "a,b" -> its partitions, parsed once per distinct text (a pass asks for every job).
    _parsed: dict[str, tuple[Partition, ...]] = field(default_factory=dict, compare=False)
    _offers: dict[tuple[str, int, str], Offer] = field(default_factory=dict, compare=False)
    _tiers: dict[str, int] = field(default_factory=dict, compare=False)

    @classmethod
    def implicit(cls) -> Partitions:
        """A cluster without partitions in its config: one holding every node, no limits."""
        return cls({IMPLICIT_NAME: Partition(IMPLICIT_NAME, default=True)}, IMPLICIT_NAME)

    def __iter__(self) -> Iterator[Partition]:
        return iter(self.by_name.values())

    def names(self, text: str) -> list[str]:
        """The names a job's ``partition`` lists, in its order, each once ("": the default)."""
        names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
        return names or [self.default]

    def resolve(self, text: str) -> tuple[Partition, ...]:
        """The partitions ``text`` names, in its order; InvalidPartition for a name the
        config does not have (Slurm's message)."""
        found = self._parsed.get(text)
        if found is None:
            names = self.names(text)
            unknown = [n for n in names if n not in self.by_name]
            if unknown:
                raise InvalidPartition(f"invalid partition specified: {unknown[0]}")
            found = tuple(self.by_name[n] for n in names)
            if len(self._parsed) < 4096:  # a bound: the texts come from users
                self._parsed[text] = found
        return found

    def known(self, text: str) -> tuple[Partition, ...]:
        """The partitions ``text`` names that the config has (a stored job may name one an
        edited config dropped)."""
        try:
            return self.resolve(text)
        except InvalidPartition:
            return tuple(self.by_name[n] for n in self.names(text) if n in self.by_name)

    def offer(self, text: str, time_limit_s: int, qos: str) -> Offer:
        """The partitions ``text`` names that may run a job with this limit and QoS now (the
        config's rules; their access lists are permissions'), and, when there are none, why
        (the first listed partition's reason). Remembered: a pass asks for every job."""
        key = (text, time_limit_s, qos)
        return _remembered(self._offers, key, lambda: self._offer(text, time_limit_s, qos))

    def _offer(self, text: str, time_limit_s: int, qos: str) -> Offer:
        found = self.known(text)
        usable = tuple(p for p in found if p.refusal(time_limit_s, qos) is None)
        reason = Reason.PARTITION_CONFIG
        if found and not usable:
            reason = found[0].refusal(time_limit_s, qos) or reason
        return Offer(
            usable,
            reason,
            tuple((p.name, p.nodes) for p in usable),
            any(p.restricted for p in usable),
        )

    def tier_of(self, text: str) -> int:
        """A job's priority tier: the highest of its partitions' (a job in several is
        considered as early as its best partition would consider it). Remembered: a
        listing asks for every pending job."""
        return _remembered(
            self._tiers, text, lambda: max((p.priority_tier for p in self.known(text)), default=0)
        )

    def of_node(self, node_id: str) -> list[str]:
        """The partitions a node is in, in the config's order."""
        return [p.name for p in self.by_name.values() if p.has(node_id)]

    def rows(self, node_gpus: Mapping[str, int]) -> list[dict[str, Any]]:
        """The ``partitions`` verb's rows; ``node_gpus``: each registered node's GPUs."""
        rows = []
        for p in self.by_name.values():
            members = sorted(node_gpus) if p.nodes is None else sorted(p.nodes)
            rows.append(
                {
                    "name": p.name,
                    "default": p.name == self.default,
                    "state": p.state.value,
                    "nodes": members,
                    "max_time_s": p.max_time_s,
                    "default_time_s": p.time_default_s(),
                    "allowed_qos": _listed(p.allowed_qos),
                    "allowed_users": _listed(p.allowed_users),
                    "allowed_groups": _listed(p.allowed_groups),
                    "priority_tier": p.priority_tier,
                    "total_gpus": sum(node_gpus.get(n, 0) for n in members),
                }
            )
        return rows


def _listed(names: frozenset[str] | None) -> list[str] | None:
    """An access list for the wire: null when not set (everyone), else sorted."""
    return None if names is None else sorted(names)


def _remembered(cache: dict[K, V], key: K, make: Callable[[], V]) -> V:
    """``cache[key]``, made by ``make`` the first time; the cache is emptied at 4,096 entries
    (a bound: its keys come from users' job texts)."""
    found = cache.get(key)
    if found is None:
        if len(cache) >= 4096:
            cache.clear()
        found = cache[key] = make()
    return found
