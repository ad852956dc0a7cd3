"""The GPU turn queue: an ordered rotation of users, repeats allowed — ``[alice, bob, alice,
carol]`` gives alice two turns in four. Pure state and rules; the cluster applies them.

Modes:

- ``priority``: the rotation is ignored; multifactor priority decides (the default).
- ``queue``: each GPU that frees goes to the next turn in the rotation whose user has a pending
  GPU job that fits; a turn whose user has nothing (fitting) waiting is skipped at once, so no
  GPU idles while anyone in the rotation waits. The turn's job keeps its GPUs until it ends
  (or until the optional time slice ends the turn by requeueing it). Users outside the
  rotation get no GPU while the mode is on; jobs without GPUs are not affected.
- ``auto``: like ``queue``, with the rotation derived from each user's pending GPU work
  (users with more waiting GPU jobs get proportionally more turns, interleaved).

``revoked`` users may not run GPU jobs at all (refused at submit); CPU jobs still run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class TurnMode(StrEnum):
    PRIORITY = "priority"  # the turn queue is off: multifactor priority alone
    QUEUE = "queue"  # the configured rotation
    AUTO = "auto"  # a rotation made from the users waiting for GPUs


MODES = tuple(m.value for m in TurnMode)
MAX_ROTATION = 1000
MAX_AUTO_TURNS = 64
HISTORY_LEN = 1000


class TurnJob(Protocol):
    job_id: int
    user: str


@dataclass(slots=True)
class Grant:
    user: str
    job_id: int
    position: int  # the rotation entry this turn used
    started_s: float


@dataclass(slots=True)
class TurnQueue:
    mode: TurnMode = TurnMode.PRIORITY
    rotation: list[str] = field(default_factory=list)
    position: int = 0  # the next turn to grant
    slice_s: float = 0.0  # 0 = a turn lasts as long as its job
    revoked: set[str] = field(default_factory=set)
    active: dict[int, Grant] = field(default_factory=dict)  # job id -> its turn
    history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=HISTORY_LEN))

    @property
    def enabled(self) -> bool:
        return self.mode is not TurnMode.PRIORITY

    # ---- persistence -------------------------------------------------------------------

    def to_settings(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "rotation": list(self.rotation),
            "position": self.position,
            "slice_s": self.slice_s,
            "revoked": sorted(self.revoked),
        }

    @classmethod
    def from_settings(cls, data: dict[str, Any] | None) -> TurnQueue:
        if not data:
            return cls()
        return cls(
            mode=TurnMode(str(data.get("mode", TurnMode.PRIORITY))),
            rotation=[str(u) for u in data.get("rotation", [])],
            position=int(data.get("position", 0)),
            slice_s=float(data.get("slice_s", 0.0)),
            revoked={str(u) for u in data.get("revoked", [])},
        )

    # ---- editing ------------------------------------------------------------------------

    def set_rotation(self, users: Sequence[str]) -> None:
        if len(users) > MAX_ROTATION:
            raise ValueError(f"a rotation holds at most {MAX_ROTATION} turns")
        self.rotation = list(users)
        self.position = 0

    def add(self, user: str) -> None:
        self.set_rotation([*self.rotation, user])

    def remove(self, user: str) -> None:
        if user not in self.rotation:
            raise ValueError(f"{user} is not in the rotation")
        self.set_rotation([u for u in self.rotation if u != user])

    def repeat(self, user: str, count: int) -> None:
        """Give ``user`` exactly ``count`` turns, spread evenly among the others' turns."""
        if count < 0 or count > MAX_ROTATION:
            raise ValueError(f"repeat count must be 0..{MAX_ROTATION}")
        others = [u for u in self.rotation if u != user]
        if not others:
            self.set_rotation([user] * count)
            return
        out: list[str] = []
        placed = 0
        for i, other in enumerate(others):
            out.append(other)
            while placed < (i + 1) * count // len(others):
                out.append(user)
                placed += 1
        self.set_rotation(out)

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode '{mode}': use {', '.join(MODES)}")
        self.mode = TurnMode(mode)

    # ---- scheduling ---------------------------------------------------------------------

    def effective_rotation(self, waiting: dict[str, int]) -> list[str]:
        """The rotation in force: the configured one, or in auto mode one made from
        ``waiting``, each user's pending GPU jobs."""
        if self.mode is not TurnMode.AUTO:
            return self.rotation
        return auto_rotation(waiting)

    def order(self, gpu_jobs: Sequence[TurnJob], rotation: Sequence[str]) -> list[tuple[int, int]]:
        """Candidate (rotation entry, job id) pairs in turn order, starting at the current
        position: each entry offers its user's next GPU job (``gpu_jobs`` in priority order);
        entries whose user has nothing left are skipped. Every job appears at most once."""
        by_user: dict[str, deque[int]] = {}
        for job in gpu_jobs:
            by_user.setdefault(job.user, deque()).append(job.job_id)
        out: list[tuple[int, int]] = []
        n = len(rotation)
        if not n:
            return out
        start = self.position % n
        while any(by_user.get(u) for u in set(rotation)):
            for step in range(n):
                entry = (start + step) % n
                queue = by_user.get(rotation[entry])
                if queue:
                    out.append((entry, queue.popleft()))
        return out

    def granted(self, entry: int, rotation_len: int, user: str, job_id: int, now: float) -> None:
        self.active[job_id] = Grant(user, job_id, entry, now)
        self.position = (entry + 1) % max(1, rotation_len)
        self._log("grant", user, job_id, now)

    def ended(self, job_id: int, now: float, how: str = "end") -> None:
        grant = self.active.pop(job_id, None)
        if grant is not None:
            self._log(how, grant.user, job_id, now)

    def expired(self, now: float) -> list[int]:
        """Jobs whose turn outlived the time slice (to be requeued)."""
        if not self.slice_s:
            return []
        return [g.job_id for g in self.active.values() if now - g.started_s >= self.slice_s]

    def current(self) -> Grant | None:
        """The most recently granted turn that is still running."""
        return max(self.active.values(), key=lambda g: g.started_s, default=None)

    def _log(self, event: str, user: str, job_id: int, now: float) -> None:
        self.history.append({"time": now, "event": event, "user": user, "job_id": job_id})


def auto_rotation(waiting: dict[str, int]) -> list[str]:
    """Smooth weighted round robin over users, weighted by their waiting GPU jobs."""
    total = sum(waiting.values())
    if not total:
        return []
    length = min(total, MAX_AUTO_TURNS)
    credit = dict.fromkeys(waiting, 0.0)
    out = []
    for _ in range(length):
        for user, weight in waiting.items():
            credit[user] += weight
        user = max(sorted(credit), key=lambda u: credit[u])
        credit[user] -= total
        out.append(user)
    return out
