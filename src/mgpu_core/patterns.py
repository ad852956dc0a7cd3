"""Slurm's ``%`` filename patterns in output paths (``man sbatch``, "filename pattern").

One scanner, :func:`expand_percent`, behind two passes: the master's over an array task's
paths when it launches the task (``%A``, ``%a``: :func:`mgpu_core.arrays.expand_array_patterns`;
the master knows the ids) and the node's as it starts the job (:func:`expand_path_template`:
everything else).

=======  ==================================================================================
``%%``   a percent sign
``%A``   the array's job id; a job that is not an array task: its own id (as Slurm)
``%a``   the array task id; a job that is not an array task: 4294967294 (Slurm's NO_VAL)
``%j``   the job id
``%J``   job id.step id: for a batch job (Slurm's batch step has no number) the job id alone
``%s``   the step id: ``batch`` for a batch job
``%x``   the job name
``%u``   the user name
``%N``   the node's name
``%n``   the node's rank in the job: 0 (jobs run on one node)
``%t``   the task's rank: 0 (the batch script is task 0)
=======  ==================================================================================

A number between ``%`` and the letter zero-pads a numeric field to that width (at most 10,
as Slurm): ``%4a`` is ``0007``; a text field (``%5x``) ignores it, as Slurm does.

Where we differ from Slurm, on purpose: an unknown pattern (``%z``, ``%3q``, a ``%`` at the
end) is kept as written, where Slurm drops some of its characters; and a backslash has no
meaning (Slurm turns expansion off for the whole path when it finds one). That way a path
with a stray percent survives, and the node's pass can expand what the master's left.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

MAX_WIDTH = 10  # Slurm's cap on the zero-padding width
NOT_AN_ARRAY_TASK = 4294967294  # what Slurm writes for %a of a job that is no array task
# A percent, an optional width, and the character after them. Scanning left to right, one
# pattern at a time, so "%%A" is "%%" then "A", never "%" then "%A".
_PATTERN = re.compile(r"%([0-9]*)(.)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Num:
    """A numeric field: zero-padded to a pattern's width, then ``suffix`` (``%J``'s ``.0``)."""

    value: int
    suffix: str = ""


Sub = str | Num


def expand_percent(template: str, subs: Mapping[str, Sub]) -> str:
    """The one scanner of Slurm's ``%`` patterns: ``%c`` and ``%Nc`` become ``subs[c]``.

    A pattern whose character is not in ``subs`` is kept as written (digits included), so a
    later pass can expand what this one left; a pass that does not resolve ``%%`` must map it
    to itself (``"%%"``). ``%`` with a width before another ``%`` (``%3%``) is no pattern and
    is kept as written too.
    """

    def one(match: re.Match[str]) -> str:
        digits, key = match.group(1), match.group(2)
        sub = subs.get(key)
        if sub is None or (digits and key == "%"):
            return match.group(0)
        if isinstance(sub, str):
            return sub  # a text field: the width is ignored
        # (the length first: int() refuses thousands of digits)
        width = MAX_WIDTH if len(digits) > 2 else min(int(digits or 0), MAX_WIDTH)
        return f"{sub.value:0{width}d}{sub.suffix}"

    return _PATTERN.sub(one, template)


def expand_path_template(
    template: str,
    *,
    job_id: int,
    name: str,
    user: str,
    node: str,
    array: tuple[int, int] | None = None,
    step: int | None = None,
) -> str:
    """The node's pass over an output path (the table above). ``array``: the job's (array
    job id, task id), if it is an array task (the master has expanded ``%A``/``%a`` of those
    already, but a path it did not see, or one updated since, still gets them right).
    ``step``: the step's id for an interactive job (srun's one step, 0), None for a batch job.
    """
    array_id, task = array if array is not None else (job_id, NOT_AN_ARRAY_TASK)
    subs: dict[str, Sub] = {
        "%": "%",
        "A": Num(array_id),
        "a": Num(task),
        "j": Num(job_id),
        "J": Num(job_id, "" if step is None else f".{step}"),
        "s": "batch" if step is None else Num(step),
        "x": name,
        "u": user,
        "N": node,
        "n": Num(0),
        "t": Num(0),
    }
    return expand_percent(template, subs)
