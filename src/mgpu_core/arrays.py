"""Job arrays, Slurm's syntax: ``--array=0-15``, ``1,3,5``, ``0-99:2``, with ``%N`` to run at
most N tasks at once. Job references in queue, cancel and dependencies may name a whole array
(``ID``) or one task (``ID_TASK``)."""

from __future__ import annotations

import itertools

MAX_ARRAY_TASKS = 10_000
MAX_TASK_ID = 1_000_000
MAX_JOB_ID = 2**53  # limits.JOB_ID's bound


def _digits(text: str) -> bool:
    """ASCII digits only (str.isdigit also takes other scripts' digits, which int() accepts)."""
    return bool(text) and text.isascii() and text.isdigit()


class ArraySpec:
    """The tasks of an array and its throttle. A plain class (not a dataclass: sbatch --array
    parses it, and dataclasses' import costs a command ~10 ms of start-up)."""

    __slots__ = ("max_running", "task_ids")

    def __init__(self, task_ids: tuple[int, ...], max_running: int = 0) -> None:
        self.task_ids = task_ids
        self.max_running = max_running  # the %N throttle; 0 = no limit

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ArraySpec) and (self.task_ids, self.max_running) == (
            other.task_ids,
            other.max_running,
        )

    def __hash__(self) -> int:
        return hash((self.task_ids, self.max_running))

    def __repr__(self) -> str:
        return f"ArraySpec(task_ids={self.task_ids!r}, max_running={self.max_running!r})"


def _range(part: str) -> tuple[int, int, int] | None:
    """``N``, ``N-M`` or ``N-M:S`` (ASCII digits) -> (first, last, step); None otherwise."""
    bounds, colon, step = part.partition(":")
    first, dash, last = bounds.partition("-")
    if (
        not _digits(first)
        or (dash and not _digits(last))
        or (colon and not (dash and _digits(step)))
    ):
        return None
    return int(first), int(last) if dash else int(first), int(step) if colon else 1


def parse_array(text: str) -> ArraySpec:
    """``0-15%4`` -> tasks 0..15, at most 4 running; ``ValueError`` with a one-line reason."""
    body, _, throttle = text.strip().partition("%")
    if throttle and (not throttle.isascii() or not throttle.isdigit() or int(throttle) < 1):
        raise ValueError(f"invalid array throttle '%{throttle}' in '{text}': use %N with N >= 1")
    ids: list[int] = []
    for part in body.split(","):
        stripped = part.strip()
        parsed = _range(stripped) if len(stripped) <= 64 else None
        if parsed is None:
            raise ValueError(f"invalid array range '{part}' in '{text}': use 0-15, 1,3,5 or 0-99:2")
        first, last, step = parsed
        if last < first or step < 1:
            raise ValueError(f"invalid array range '{part}' in '{text}'")
        if last > MAX_TASK_ID or (last - first) // step + len(ids) >= MAX_ARRAY_TASKS:
            raise ValueError(f"array '{text}' is too large (at most {MAX_ARRAY_TASKS} tasks)")
        ids.extend(range(first, last + 1, step))
    unique = tuple(sorted(set(ids)))
    return ArraySpec(unique, int(throttle) if throttle else 0)


def parse_job_ref(text: str) -> tuple[int, int | None]:
    """``12`` -> (12, None); ``12_3`` -> (12, 3). ``ValueError`` otherwise."""
    job, underscore, task = text.strip().partition("_")
    # (the lengths first: int() refuses 4,300 digits; the wire takes ids up to 2**53)
    if (
        not _digits(job)
        or (underscore and not _digits(task))
        or len(job) > 16
        or not 0 < int(job) <= MAX_JOB_ID
        or len(task) > 7
    ):
        raise ValueError(f"invalid job id '{text}': use ID or ARRAYID_TASK")
    return int(job), (int(task) if underscore else None)


def format_job_ref(job_id: int, array_job_id: int | None, array_task_id: int | None) -> str:
    if array_job_id is None or array_task_id is None:
        return str(job_id)
    return f"{array_job_id}_{array_task_id}"


def expand_array_patterns(template: str, array_job_id: int, task_id: int) -> str:
    """The master's pass over an array task's output paths at launch: ``%A`` (array id) and
    ``%a`` (task id), zero-padded as written (``%4a``). ``%%`` and the other patterns are left
    for the node's pass (patterns.expand_path_template)."""
    from mgpu_core.patterns import Num, expand_percent

    return expand_percent(template, {"A": Num(array_job_id), "a": Num(task_id), "%": "%%"})


def array_bounds(text: str) -> tuple[int, int, int]:
    """(first task id, last task id, step) of an array (``--array`` as given): the step is the
    distance between its tasks if they are evenly spaced (``0-99:2`` -> 2, ``1,3,5`` -> 2),
    else 1; what a task sees as SLURM_ARRAY_TASK_MIN/MAX/STEP. ValueError if it is invalid."""
    ids = parse_array(text).task_ids
    gaps = {b - a for a, b in itertools.pairwise(ids)}
    step = gaps.pop() if len(gaps) == 1 else 1
    return ids[0], ids[-1], step
