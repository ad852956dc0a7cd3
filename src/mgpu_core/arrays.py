"""Job arrays, Slurm's syntax: ``--array=0-15``, ``1,3,5``, ``0-99:2``, with ``%N`` to run at
most N tasks at once. Job references in queue, cancel and dependencies may name a whole array
(``ID``) or one task (``ID_TASK``)."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from mgpu_core.patterns import Num, expand_percent

MAX_ARRAY_TASKS = 10_000
MAX_TASK_ID = 1_000_000
MAX_JOB_ID = 2**53  # limits.JOB_ID's bound
# [0-9], not \d: \d also matches other scripts' digits, which int() would then accept.
_RANGE = re.compile(r"^([0-9]+)(?:-([0-9]+)(?::([0-9]+))?)?$")
_REF = re.compile(r"^([0-9]+)(?:_([0-9]+))?$")


@dataclass(frozen=True, slots=True)
class ArraySpec:
    task_ids: tuple[int, ...]
    max_running: int = 0  # the %N throttle; 0 = no limit


def parse_array(text: str) -> ArraySpec:
    """``0-15%4`` -> tasks 0..15, at most 4 running; ``ValueError`` with a one-line reason."""
    body, _, throttle = text.strip().partition("%")
    if throttle and (not throttle.isascii() or not throttle.isdigit() or int(throttle) < 1):
        raise ValueError(f"invalid array throttle '%{throttle}' in '{text}': use %N with N >= 1")
    ids: list[int] = []
    for part in body.split(","):
        match = _RANGE.match(part.strip())
        if not match:
            raise ValueError(f"invalid array range '{part}' in '{text}': use 0-15, 1,3,5 or 0-99:2")
        first = int(match.group(1))
        last = int(match.group(2) or first)
        step = int(match.group(3) or 1)
        if last < first or step < 1:
            raise ValueError(f"invalid array range '{part}' in '{text}'")
        if last > MAX_TASK_ID or (last - first) // step + len(ids) >= MAX_ARRAY_TASKS:
            raise ValueError(f"array '{text}' is too large (at most {MAX_ARRAY_TASKS} tasks)")
        ids.extend(range(first, last + 1, step))
    unique = tuple(sorted(set(ids)))
    return ArraySpec(unique, int(throttle) if throttle else 0)


def parse_job_ref(text: str) -> tuple[int, int | None]:
    """``12`` -> (12, None); ``12_3`` -> (12, 3). ``ValueError`` otherwise."""
    match = _REF.match(text.strip())
    # (the lengths first: int() refuses 4,300 digits; the wire takes ids up to 2**53)
    if (
        not match
        or len(match.group(1)) > 16
        or not 0 < int(match.group(1)) <= MAX_JOB_ID
        or len(match.group(2) or "") > 7
    ):
        raise ValueError(f"invalid job id '{text}': use ID or ARRAYID_TASK")
    task = match.group(2)
    return int(match.group(1)), (int(task) if task is not None else None)


def format_job_ref(job_id: int, array_job_id: int | None, array_task_id: int | None) -> str:
    if array_job_id is None or array_task_id is None:
        return str(job_id)
    return f"{array_job_id}_{array_task_id}"


def expand_array_patterns(template: str, array_job_id: int, task_id: int) -> str:
    """The master's pass over an array task's output paths at launch: ``%A`` (array id) and
    ``%a`` (task id), zero-padded as written (``%4a``). ``%%`` and the other patterns are left
    for the node's pass (patterns.expand_path_template)."""
    return expand_percent(template, {"A": Num(array_job_id), "a": Num(task_id), "%": "%%"})


def array_bounds(text: str) -> tuple[int, int, int]:
    """(first task id, last task id, step) of an array (``--array`` as given): the step is the
    distance between its tasks if they are evenly spaced (``0-99:2`` -> 2, ``1,3,5`` -> 2),
    else 1; what a task sees as SLURM_ARRAY_TASK_MIN/MAX/STEP. ValueError if it is invalid."""
    ids = parse_array(text).task_ids
    gaps = {b - a for a, b in itertools.pairwise(ids)}
    step = gaps.pop() if len(gaps) == 1 else 1
    return ids[0], ids[-1], step
