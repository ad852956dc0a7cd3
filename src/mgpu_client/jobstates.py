"""Slurm's job state names and compact codes, as squeue, sacct and scancel take them (``-t``,
``-s``); a module of its own so that sacct and scancel need not load squeue."""

from __future__ import annotations

from mgpu_client.cmdline import split_list
from mgpu_core.errors import UsageError

# Slurm's state names and compact codes (squeue -t takes either).
STATES = {
    "PD": "PENDING",
    "R": "RUNNING",
    "CG": "COMPLETING",
    "CD": "COMPLETED",
    "F": "FAILED",
    "CA": "CANCELLED",
    "TO": "TIMEOUT",
    "NF": "NODE_FAIL",
    "OOM": "OUT_OF_MEMORY",
    "RQ": "REQUEUED",
}


def parse_states(value: str) -> list[str]:
    """``-t``: names or compact codes, comma-separated; ``all`` = every state."""
    states = []
    for item in split_list(value):
        upper = item.upper()
        if upper == "ALL":
            return [*STATES.values()]
        name = STATES.get(upper, upper)
        if name not in STATES.values():
            raise UsageError(f"Invalid job state specified: {item}")
        states.append(name)
    return states
