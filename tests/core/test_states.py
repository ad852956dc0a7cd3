"""Job states (mgpu_core.states): the transition table's OUT_OF_MEMORY and final_state's
precedence, Slurm's: a cancel, then a time limit, then an OOM kill, then the exit status."""

from __future__ import annotations

import pytest

from mgpu_core.states import (
    TERMINAL_STATES,
    IllegalTransition,
    JobState,
    check_transition,
    final_state,
)


def test_out_of_memory_is_a_terminal_state_reached_from_running_only() -> None:
    oom = JobState.OUT_OF_MEMORY
    assert oom.terminal and oom in TERMINAL_STATES and oom.short == "OOM"
    check_transition(JobState.RUNNING, oom)
    for old in (JobState.PENDING, JobState.REQUEUED, *TERMINAL_STATES):
        with pytest.raises(IllegalTransition):
            check_transition(old, oom)
    for new in JobState:
        with pytest.raises(IllegalTransition):
            check_transition(oom, new)


def test_every_state_has_a_short_code_of_its_own() -> None:
    codes = [s.short for s in JobState]
    assert len(set(codes)) == len(codes)


@pytest.mark.parametrize(
    ("exit_code", "signal", "cancelled", "timed_out", "oom_killed", "expected"),
    [
        (None, 9, False, False, True, JobState.OUT_OF_MEMORY),
        (137, None, False, False, True, JobState.OUT_OF_MEMORY),
        # A script that went on after the kernel killed one of its processes, and exited 0.
        (0, None, False, False, True, JobState.OUT_OF_MEMORY),
        (None, 9, True, False, True, JobState.CANCELLED),  # a cancel wins
        (None, 9, False, True, True, JobState.TIMEOUT),  # so does the time limit
        (None, 9, True, True, True, JobState.CANCELLED),
        (0, None, False, False, False, JobState.COMPLETED),
        (1, None, False, False, False, JobState.FAILED),
        (None, 9, False, False, False, JobState.FAILED),
    ],
)
def test_final_state_precedence(
    exit_code: int | None,
    signal: int | None,
    cancelled: bool,
    timed_out: bool,
    oom_killed: bool,
    expected: JobState,
) -> None:
    state = final_state(
        exit_code=exit_code,
        signal=signal,
        cancelled=cancelled,
        timed_out=timed_out,
        oom_killed=oom_killed,
    )
    assert state is expected
