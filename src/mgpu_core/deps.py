"""Job dependencies, Slurm's syntax and semantics: parse once at submit, evaluate per pass.

``--dependency`` takes clauses ``TYPE:ID[:ID...]`` (or ``singleton``) joined by ``,`` (all must
be satisfied) or ``?`` (any one suffices); the two separators cannot be mixed.

- ``after``: each named job has started (or ended, or was cancelled);
- ``afterany``: each named job has ended, in any state;
- ``afterok``: each has COMPLETED (exit 0); never satisfiable once one ended otherwise;
- ``afternotok``: each ended in a failed state (every terminal state but COMPLETED: FAILED,
  TIMEOUT, NODE_FAIL, CANCELLED, OUT_OF_MEMORY); never satisfiable once one COMPLETED;
- ``singleton``: no other job of the same user and name is pending or running ahead of it.

Evaluation is pure: the caller passes a lookup from job id to its state name (``None`` for an
id the master has forgotten, which counts as ended).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from mgpu_core.states import TERMINAL_STATES, JobState

TYPES = ("after", "afterany", "afterok", "afternotok", "singleton")
# From the one transition table, so that a new terminal state counts here too.
_ENDED = frozenset(s.value for s in TERMINAL_STATES)
_ENDED_OK = frozenset({JobState.COMPLETED.value})
_ENDED_NOT_OK = _ENDED - _ENDED_OK
_STARTED = _ENDED | {JobState.RUNNING.value}
MAX_CLAUSE_IDS = 1000


class DepStatus(Enum):
    WAIT = "wait"
    OK = "ok"
    NEVER = "never"


@dataclass(frozen=True, slots=True)
class Clause:
    kind: str
    job_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Dependency:
    clauses: tuple[Clause, ...]
    any_of: bool = False  # '?' joined

    def job_ids(self) -> set[int]:
        return {i for c in self.clauses for i in c.job_ids}

    @property
    def singleton(self) -> bool:
        return any(c.kind == "singleton" for c in self.clauses)

    def to_text(self) -> str:
        parts = [
            c.kind if c.kind == "singleton" else ":".join([c.kind, *map(str, c.job_ids)])
            for c in self.clauses
        ]
        return ("?" if self.any_of else ",").join(parts)


def parse_dependency(text: str) -> Dependency:
    """Parse a ``--dependency`` value; ``ValueError`` with a one-line reason otherwise."""
    raw = text.strip()
    if not raw:
        raise ValueError("empty dependency")
    if "," in raw and "?" in raw:
        raise ValueError(f"invalid dependency '{text}': use ',' (all) or '?' (any), not both")
    any_of = "?" in raw
    clauses = []
    for part in raw.split("?" if any_of else ","):
        kind, _, rest = part.strip().partition(":")
        if kind not in TYPES:
            raise ValueError(
                f"invalid dependency type '{kind}' in '{text}': use {', '.join(TYPES)}"
            )
        if kind == "singleton":
            if rest:
                raise ValueError(f"invalid dependency '{part}': singleton takes no job ids")
            clauses.append(Clause(kind))
            continue
        ids = rest.split(":") if rest else []
        if not ids or not all(i.isascii() and i.isdigit() and int(i) > 0 for i in ids):
            raise ValueError(f"invalid dependency '{part}': use {kind}:JOBID[:JOBID...]")
        if len(ids) > MAX_CLAUSE_IDS:
            raise ValueError(f"dependency '{kind}' names more than {MAX_CLAUSE_IDS} jobs")
        clauses.append(Clause(kind, tuple(int(i) for i in ids)))
    return Dependency(tuple(clauses), any_of)


def _clause_status(
    clause: Clause, state_of: Callable[[int], str | None], singleton_clear: bool
) -> DepStatus:
    if clause.kind == "singleton":
        return DepStatus.OK if singleton_clear else DepStatus.WAIT
    statuses = []
    for job_id in clause.job_ids:
        state = state_of(job_id)
        if clause.kind == "after":
            done = state is None or state in _STARTED
            statuses.append(DepStatus.OK if done else DepStatus.WAIT)
        elif clause.kind == "afterany":
            statuses.append(DepStatus.OK if state is None or state in _ENDED else DepStatus.WAIT)
        elif state is None:
            statuses.append(DepStatus.NEVER)  # forgotten: its outcome cannot be known
        else:
            good, bad = (
                (_ENDED_OK, _ENDED_NOT_OK)
                if clause.kind == "afterok"
                else (_ENDED_NOT_OK, _ENDED_OK)
            )
            statuses.append(
                DepStatus.OK
                if state in good
                else DepStatus.NEVER
                if state in bad
                else DepStatus.WAIT
            )
    if DepStatus.NEVER in statuses:
        return DepStatus.NEVER
    return DepStatus.WAIT if DepStatus.WAIT in statuses else DepStatus.OK


def evaluate(
    dep: Dependency, state_of: Callable[[int], str | None], *, singleton_clear: bool = True
) -> DepStatus:
    """Where the dependency stands now."""
    statuses = [_clause_status(c, state_of, singleton_clear) for c in dep.clauses]
    if dep.any_of:
        if DepStatus.OK in statuses:
            return DepStatus.OK
        return DepStatus.NEVER if all(s is DepStatus.NEVER for s in statuses) else DepStatus.WAIT
    if DepStatus.NEVER in statuses:
        return DepStatus.NEVER
    return DepStatus.WAIT if DepStatus.WAIT in statuses else DepStatus.OK
