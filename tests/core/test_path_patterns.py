"""Slurm's ``%`` filename patterns: one scanner (patterns.expand_percent) behind the master's
array pass (%A, %a at launch) and the node's pass (the rest)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mgpu_core.arrays import array_bounds, expand_array_patterns
from mgpu_core.patterns import NOT_AN_ARRAY_TASK, expand_path_template


def node_pass(
    template: str, *, array: tuple[int, int] | None = None, step: int | None = None
) -> str:
    return expand_path_template(
        template, job_id=12, name="train", user="alice", node="n1", array=array, step=step
    )


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("mgpu-%j.out", "mgpu-12.out"),
        ("%x-%u@%N", "train-alice@n1"),
        ("%J", "12"),  # a batch job: the job id alone (its step has no number)
        ("%s", "batch"),
        ("%n-%t", "0-0"),
        ("%A", "12"),  # not an array task: its own id, as Slurm
        ("%a", str(NOT_AN_ARRAY_TASK)),  # and Slurm's NO_VAL
        ("100%%-%j", "100%-12"),
        ("%%j", "%j"),  # a percent, then the letter
        ("%%%j", "%12"),
        ("50%", "50%"),  # a trailing percent is kept
        ("%z%q.txt", "%z%q.txt"),  # unknown patterns are kept as written
        ("%3z", "%3z"),  # with their width
        ("%5", "%5"),
        ("%3%j", "%3%j"),  # a width before a percent: no pattern
        ("", ""),
    ],
)
def test_node_pass(template: str, expected: str) -> None:
    assert node_pass(template) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("job%4j.out", "job0012.out"),  # zero-padded to the width
        ("%1j", "12"),  # never cut
        ("%0j", "12"),
        ("%2j-%2t", "12-00"),
        ("%3n", "000"),
        ("%4J", "0012"),
        ("%12j", "0000000012"),  # at most 10, as Slurm
        ("%" + "9" * 5000 + "j", "0000000012"),  # no int() of thousands of digits
        ("%5x-%3u-%2N-%4s", "train-alice-n1-batch"),  # text fields ignore the width
        ("%4A_%4a", "0012_4294967294"),  # wider than the width: whole
    ],
)
def test_widths_zero_pad_numbers(template: str, expected: str) -> None:
    assert node_pass(template) == expected


def test_an_interactive_job_is_step_0() -> None:
    assert node_pass("%J %s %3s", step=0) == "12.0 0 000"
    assert node_pass("%4J", step=0) == "0012.0"  # the width pads the job id


def test_an_array_task_gets_its_ids_at_the_node_too() -> None:
    # An array task's paths were expanded by the master; one it did not see gets them here.
    assert node_pass("%A_%a-%j-%3a", array=(7, 3)) == "7_3-12-003"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("mgpu-%A_%a.out", "mgpu-7_3.out"),
        ("%4A_%4a", "0007_0003"),
        ("%%A", "%%A"),  # %% is the node's to resolve, and the A after it is a letter
        ("%j-%x-%a-%4j", "%j-%x-3-%4j"),  # the others are the node's, widths included
        ("%", "%"),
        ("%%%a", "%%3"),
        ("%3%a", "%3%a"),
    ],
)
def test_array_pass(template: str, expected: str) -> None:
    assert expand_array_patterns(template, 7, 3) == expected


def reference(template: str, subs: dict[str, str | int]) -> str:
    """A character-at-a-time scanner: a percent, digits, a letter; unknown kept as written."""
    out: list[str] = []
    i = 0
    while i < len(template):
        if template[i] != "%":
            out.append(template[i])
            i += 1
            continue
        j = i + 1
        while j < len(template) and template[j].isdigit():
            j += 1
        if j >= len(template):
            out.append(template[i:])
            break
        digits, key = template[i + 1 : j], template[j]
        value = subs.get(key)
        if value is None or (digits and key == "%"):
            out.append(template[i : j + 1])
        elif isinstance(value, int):
            out.append(str(value).zfill(min(int(digits or 0), 10)))
        else:
            out.append(value)
        i = j + 1
    return "".join(out)


ALL: dict[str, str | int] = {
    "A": 7,
    "a": 3,
    "j": 12,
    "J": 12,
    "s": "batch",
    "x": "train",
    "u": "alice",
    "N": "n1",
    "n": 0,
    "t": 0,
    "%": "%",
}
TEMPLATES = st.text(alphabet="%AajJsxuNntz0123-._", max_size=14)


@given(TEMPLATES)
def test_the_node_pass_matches_the_reference(template: str) -> None:
    assert node_pass(template, array=(7, 3)) == reference(template, ALL)


@given(TEMPLATES)
def test_array_then_node_is_one_pass_over_everything(template: str) -> None:
    # What an array task's path becomes: the master's pass, then the node's (which, for a
    # path the master expanded, finds no %A/%a left to give another value).
    through_both = node_pass(expand_array_patterns(template, 7, 3))
    assert through_both == reference(template, ALL)


@pytest.mark.parametrize(
    ("array", "bounds"),
    [
        ("0-15%4", (0, 15, 1)),
        ("0-99:2", (0, 98, 2)),
        ("1,3,5", (1, 5, 2)),
        ("1,2,5", (1, 5, 1)),  # uneven: 1
        ("7", (7, 7, 1)),
    ],
)
def test_array_bounds(array: str, bounds: tuple[int, int, int]) -> None:
    assert array_bounds(array) == bounds
