"""Job states and the one transition table.

Names are Slurm's on purpose: scripts that parse squeue/sacct output keep working. Every state
change of a job goes through :func:`check_transition`; an illegal one is a bug in mgpu and
raises :class:`IllegalTransition` instead of silently corrupting the queue.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    NODE_FAIL = "NODE_FAIL"
    REQUEUED = "REQUEUED"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"  # the kernel's OOM killer ended it (Slurm's OOM)

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def short(self) -> str:
        """squeue's compact code (``%t``)."""
        return _SHORT[self]


TERMINAL_STATES = frozenset(
    {
        JobState.COMPLETED,
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.TIMEOUT,
        JobState.NODE_FAIL,
        JobState.OUT_OF_MEMORY,
    }
)

# Ended by a failure, not by completing or by a cancel: what reports count as failed, FAIL
# notices are sent for, and listings show the reason of.
FAILURE_STATES = frozenset(
    {JobState.FAILED, JobState.TIMEOUT, JobState.NODE_FAIL, JobState.OUT_OF_MEMORY}
)

_SHORT = {
    JobState.PENDING: "PD",
    JobState.RUNNING: "R",
    JobState.COMPLETED: "CD",
    JobState.FAILED: "F",
    JobState.CANCELLED: "CA",
    JobState.TIMEOUT: "TO",
    JobState.NODE_FAIL: "NF",
    JobState.REQUEUED: "RQ",
    JobState.OUT_OF_MEMORY: "OOM",
}

# old state -> the states it may move to. REQUEUED is transitional: a requeued job goes back
# to PENDING in the same step, keeping its id (as in Slurm).
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.RUNNING: frozenset(
        {
            JobState.COMPLETED,
            JobState.FAILED,
            JobState.CANCELLED,
            JobState.TIMEOUT,
            JobState.NODE_FAIL,
            JobState.REQUEUED,
            JobState.OUT_OF_MEMORY,
        }
    ),
    JobState.REQUEUED: frozenset({JobState.PENDING, JobState.CANCELLED}),
    JobState.COMPLETED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
    JobState.TIMEOUT: frozenset(),
    JobState.NODE_FAIL: frozenset(),
    JobState.OUT_OF_MEMORY: frozenset(),
}


# What queue rows show for a RUNNING job that is ending — cancelled, requeued or past its time
# limit — until its node confirms the exit or is fenced (Slurm's COMPLETING, "CG"): its GPUs
# stay allocated all the while. A display state, not a state of the transition table.
COMPLETING = "COMPLETING"
COMPLETING_SHORT = "CG"


class Hold(StrEnum):
    """Who holds a pending job back (scontrol hold/release): an admin's hold needs an admin."""

    NONE = ""
    USER = "user"
    ADMIN = "admin"


class IllegalTransition(RuntimeError):
    """A state change the table forbids: always a bug, never user input."""


def check_transition(old: JobState, new: JobState) -> None:
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(f"job state {old.value} -> {new.value} is not allowed")


def final_state(
    *,
    exit_code: int | None,
    signal: int | None,
    cancelled: bool,
    timed_out: bool,
    oom_killed: bool = False,
) -> JobState:
    """The terminal state for a job whose process ended, Slurm's way.

    A cancel wins over whatever the process did while dying (a job killed by our SIGTERM is
    CANCELLED, not FAILED); a time limit likewise gives TIMEOUT. Then an OOM kill gives
    OUT_OF_MEMORY whatever the exit status: as in Slurm, a job one of whose processes the
    kernel killed for memory is OUT_OF_MEMORY even if its script went on and exited 0.
    """
    if cancelled:
        return JobState.CANCELLED
    if timed_out:
        return JobState.TIMEOUT
    if oom_killed:
        return JobState.OUT_OF_MEMORY
    if signal is None and exit_code == 0:
        return JobState.COMPLETED
    return JobState.FAILED
