"""Slurm's ``%`` filename patterns: one scanner (models.expand_percent) behind the master's
array pass (%A, %a at submit) and the node's pass (%j, %x, %u, %N, %% at launch)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mgpu_core.arrays import expand_array_patterns
from mgpu_core.models import expand_path_template, expand_percent

ALL = {"A": "7", "a": "3", "j": "12", "x": "train", "u": "alice", "N": "n1", "%": "%"}


def node_pass(template: str) -> str:
    return expand_path_template(template, job_id=12, name="train", user="alice", node="n1")


def reference(template: str, subs: dict[str, str], keep_percent: bool) -> str:
    """The scanners as they were before the merge: one character at a time."""
    out: list[str] = []
    i = 0
    while i < len(template):
        pair = template[i : i + 2]
        if len(pair) == 2 and pair[0] == "%" and pair[1] in subs:
            out.append(subs[pair[1]])
            i += 2
        elif keep_percent and pair == "%%":
            out.append(pair)
            i += 2
        else:
            out.append(template[i])
            i += 1
    return "".join(out)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("mgpu-%j.out", "mgpu-12.out"),
        ("%x-%u@%N", "train-alice@n1"),
        ("100%%-%j", "100%-12"),
        ("%%j", "%j"),  # a percent, then the letter
        ("50%", "50%"),  # a trailing percent is kept
        ("%z%q.txt", "%z%q.txt"),  # unknown patterns are kept as written
        ("%A_%a", "%A_%a"),  # the array's, expanded at submit: left alone here
        ("", ""),
    ],
)
def test_node_pass(template: str, expected: str) -> None:
    assert node_pass(template) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("mgpu-%A_%a.out", "mgpu-7_3.out"),
        ("%%A", "%%A"),  # %% is the node's to resolve, and the A after it is a letter
        ("%j-%x-%a", "%j-%x-3"),
        ("%", "%"),
        ("%%%a", "%%3"),
    ],
)
def test_array_pass(template: str, expected: str) -> None:
    assert expand_array_patterns(template, 7, 3) == expected


TEMPLATES = st.text(alphabet="%AajxuNz-._", max_size=12)


@given(TEMPLATES)
def test_both_passes_keep_their_old_behaviour(template: str) -> None:
    node_subs = {k: ALL[k] for k in "jxuN%"}
    assert node_pass(template) == reference(template, node_subs, keep_percent=False)
    array_subs = {"A": "7", "a": "3"}
    assert expand_array_patterns(template, 7, 3) == reference(
        template, array_subs, keep_percent=True
    )


@given(TEMPLATES)
def test_array_then_node_is_one_pass_over_everything(template: str) -> None:
    # What an array task's path becomes: the master's pass, then the node's.
    assert node_pass(expand_array_patterns(template, 7, 3)) == expand_percent(template, ALL)
