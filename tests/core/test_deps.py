"""Dependency parsing and evaluation (mgpu_core.deps): Slurm's ``--dependency`` syntax."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgpu_core.deps import (
    MAX_CLAUSE_IDS,
    TYPES,
    Clause,
    Dependency,
    DepStatus,
    evaluate,
    parse_dependency,
)
from mgpu_core.states import JobState

OK, WAIT, NEVER = DepStatus.OK, DepStatus.WAIT, DepStatus.NEVER
ENDED_NOT_OK = ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")

# ---- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("after:1", Dependency((Clause("after", (1,)),))),
        ("afterany:22", Dependency((Clause("afterany", (22,)),))),
        ("afterok:3:4:5", Dependency((Clause("afterok", (3, 4, 5)),))),
        ("afternotok:7", Dependency((Clause("afternotok", (7,)),))),
        ("singleton", Dependency((Clause("singleton"),))),
        (
            "afterok:1,afterany:2:3,singleton",
            Dependency(
                (Clause("afterok", (1,)), Clause("afterany", (2, 3)), Clause("singleton")),
                any_of=False,
            ),
        ),
        (
            "afterok:1?afternotok:2",
            Dependency((Clause("afterok", (1,)), Clause("afternotok", (2,))), any_of=True),
        ),
        (
            "  afterok:1 , after:2  ",
            Dependency((Clause("afterok", (1,)), Clause("after", (2,)))),
        ),
        ("afterok:007", Dependency((Clause("afterok", (7,)),))),
        ("afterok:2:2", Dependency((Clause("afterok", (2, 2)),))),
    ],
)
def test_parse_valid(text: str, expected: Dependency) -> None:
    assert parse_dependency(text) == expected


def test_parse_clause_defaults() -> None:
    dep = parse_dependency("afterok:1")
    assert dep.any_of is False
    assert parse_dependency("singleton").clauses[0].job_ids == ()
    # A single clause with '?' nowhere is all-of; one with '?' is any-of.
    assert parse_dependency("afterok:1?afterok:2").any_of is True


def test_every_type_is_parseable() -> None:
    for kind in TYPES:
        text = kind if kind == "singleton" else f"{kind}:9"
        dep = parse_dependency(text)
        assert [c.kind for c in dep.clauses] == [kind]


@pytest.mark.parametrize("text", ["", "   ", "\t\n"])
def test_parse_empty(text: str) -> None:
    with pytest.raises(ValueError, match=r"^empty dependency$"):
        parse_dependency(text)


@pytest.mark.parametrize(
    "text", ["afterok:1,afterany:2?after:3", "afterok:1?afterany:2,after:3", ",?"]
)
def test_parse_mixed_separators(text: str) -> None:
    with pytest.raises(ValueError, match=r"use ',' \(all\) or '\?' \(any\), not both"):
        parse_dependency(text)


@pytest.mark.parametrize(
    "text",
    ["bogus:1", "AFTEROK:1", "afterok:1,", ",afterok:1", "afterok:1?", "?", ",", "afterok:1,,"],
)
def test_parse_bad_type(text: str) -> None:
    with pytest.raises(ValueError, match="invalid dependency type"):
        parse_dependency(text)


@pytest.mark.parametrize(
    "text",
    [
        "afterok",
        "afterok:",
        "after:0",
        "afterany:-1",
        "afterok:+1",
        "afterok:x",
        "afterok:1:",
        "afterok:1::2",
        "afterok: 1",
        "afterok:1.5",
        "afternotok:1e3",
        "afterok:1,afterany:0",
    ],
)
def test_parse_bad_ids(text: str) -> None:
    with pytest.raises(ValueError, match=r":JOBID\[:JOBID\.\.\.\]"):
        parse_dependency(text)


def test_parse_bad_ids_message_names_the_clause() -> None:
    with pytest.raises(ValueError, match=r"^invalid dependency 'afterany:0': use afterany:JOBID"):
        parse_dependency("afterok:1,afterany:0")


@pytest.mark.parametrize("job_id", ["\u0661", "\u00b2"])
def test_parse_rejects_non_ascii_digits(job_id: str) -> None:
    with pytest.raises(ValueError, match=r"use afterok:JOBID"):
        parse_dependency(f"afterok:{job_id}")


@pytest.mark.parametrize("text", ["singleton:1", "singleton:1:2", "afterok:1,singleton:5"])
def test_parse_singleton_with_ids(text: str) -> None:
    with pytest.raises(ValueError, match="singleton takes no job ids"):
        parse_dependency(text)


def test_parse_id_count_limit() -> None:
    at_limit = "afterok:" + ":".join(str(i) for i in range(1, MAX_CLAUSE_IDS + 1))
    dep = parse_dependency(at_limit)
    assert dep.clauses[0].job_ids == tuple(range(1, MAX_CLAUSE_IDS + 1))
    over = "afterok:" + ":".join(str(i) for i in range(1, MAX_CLAUSE_IDS + 2))
    with pytest.raises(ValueError, match=f"names more than {MAX_CLAUSE_IDS} jobs"):
        parse_dependency(over)


@pytest.mark.parametrize(
    "text",
    [
        "after:1",
        "afterok:3:4:5",
        "singleton",
        "afterok:1,afterany:2:3,singleton",
        "afterok:1?afternotok:2?singleton",
    ],
)
def test_to_text_round_trip(text: str) -> None:
    dep = parse_dependency(text)
    assert dep.to_text() == text
    assert parse_dependency(dep.to_text()) == dep


def test_to_text_canonicalises() -> None:
    assert parse_dependency(" afterok:007 , singleton ").to_text() == "afterok:7,singleton"


def test_job_ids() -> None:
    dep = parse_dependency("afterok:1:2,afterany:2:3,singleton")
    assert dep.job_ids() == {1, 2, 3}
    assert parse_dependency("singleton").job_ids() == set()


_clauses = st.one_of(
    st.just(Clause("singleton")),
    st.builds(
        Clause,
        st.sampled_from([t for t in TYPES if t != "singleton"]),
        st.lists(st.integers(1, 10**12), min_size=1, max_size=5).map(tuple),
    ),
)


@settings(max_examples=200, deadline=None)
@given(clauses=st.lists(_clauses, min_size=1, max_size=6), any_of=st.booleans())
def test_to_text_round_trip_property(clauses: list[Clause], any_of: bool) -> None:
    dep = Dependency(tuple(clauses), any_of and len(clauses) > 1)
    assert parse_dependency(dep.to_text()) == dep


# ---- evaluation: one clause, one job, every state ---------------------------------------

STATES: list[str | None] = [
    "PENDING",
    "RUNNING",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "REQUEUED",
    None,
]

TRUTH: dict[str, dict[str | None, DepStatus]] = {
    "after": {
        "PENDING": WAIT,
        "RUNNING": OK,
        "COMPLETED": OK,
        "FAILED": OK,
        "CANCELLED": OK,
        "TIMEOUT": OK,
        "NODE_FAIL": OK,
        "OUT_OF_MEMORY": OK,
        "REQUEUED": WAIT,
        None: OK,
    },
    "afterany": {
        "PENDING": WAIT,
        "RUNNING": WAIT,
        "COMPLETED": OK,
        "FAILED": OK,
        "CANCELLED": OK,
        "TIMEOUT": OK,
        "NODE_FAIL": OK,
        "OUT_OF_MEMORY": OK,
        "REQUEUED": WAIT,
        None: OK,
    },
    "afterok": {
        "PENDING": WAIT,
        "RUNNING": WAIT,
        "COMPLETED": OK,
        "FAILED": NEVER,
        "CANCELLED": NEVER,
        "TIMEOUT": NEVER,
        "NODE_FAIL": NEVER,
        "OUT_OF_MEMORY": NEVER,
        "REQUEUED": WAIT,
        None: NEVER,  # forgotten: its outcome cannot be known
    },
    "afternotok": {
        "PENDING": WAIT,
        "RUNNING": WAIT,
        "COMPLETED": NEVER,
        "FAILED": OK,
        "CANCELLED": OK,
        "TIMEOUT": OK,
        "NODE_FAIL": OK,
        "OUT_OF_MEMORY": OK,
        "REQUEUED": WAIT,
        None: NEVER,
    },
}


def test_the_truth_table_covers_every_job_state() -> None:
    """A state added to mgpu_core.states must get a verdict here (and in deps.py)."""
    assert set(STATES) == {s.value for s in JobState} | {None}
    assert all(set(row) == set(STATES) for row in TRUTH.values())


@pytest.mark.parametrize(
    ("kind", "state"), [(k, s) for k in TRUTH for s in STATES], ids=lambda v: str(v)
)
def test_truth_table(kind: str, state: str | None) -> None:
    dep = parse_dependency(f"{kind}:5")
    seen: list[int] = []

    def state_of(job_id: int) -> str | None:
        seen.append(job_id)
        return state

    assert evaluate(dep, state_of) is TRUTH[kind][state]
    assert seen == [5]
    # The same in an any-of of one clause (a lone clause: '?' changes nothing).
    assert evaluate(Dependency(dep.clauses, any_of=True), state_of) is TRUTH[kind][state]


@pytest.mark.parametrize(
    ("text", "states", "expected"),
    [
        ("afterok:1:2", {1: "COMPLETED", 2: "COMPLETED"}, OK),
        ("afterok:1:2", {1: "COMPLETED", 2: "RUNNING"}, WAIT),
        ("afterok:1:2", {1: "COMPLETED", 2: "FAILED"}, NEVER),
        ("afterok:1:2", {1: "FAILED", 2: "RUNNING"}, NEVER),  # NEVER beats WAIT in a clause
        ("afterok:1:2", {1: "PENDING", 2: None}, NEVER),
        ("afternotok:1:2", {1: "TIMEOUT", 2: "NODE_FAIL"}, OK),
        ("afternotok:1:2", {1: "OUT_OF_MEMORY", 2: "FAILED"}, OK),
        ("afterok:1:2", {1: "COMPLETED", 2: "OUT_OF_MEMORY"}, NEVER),
        ("afternotok:1:2", {1: "FAILED", 2: "COMPLETED"}, NEVER),
        ("afterany:1:2", {1: "COMPLETED", 2: "RUNNING"}, WAIT),
        ("afterany:1:2", {1: "FAILED", 2: None}, OK),
        ("after:1:2", {1: "RUNNING", 2: "PENDING"}, WAIT),
        ("after:1:2", {1: "RUNNING", 2: "CANCELLED"}, OK),
    ],
)
def test_clause_with_several_ids(
    text: str, states: dict[int, str | None], expected: DepStatus
) -> None:
    assert evaluate(parse_dependency(text), states.get) is expected


# ---- evaluation: combining clauses --------------------------------------------------------

# afterok on one job gives each clause status on demand.
_STATE_FOR = {OK: "COMPLETED", WAIT: "RUNNING", NEVER: "FAILED"}


def _dep_of(statuses: tuple[DepStatus, ...], any_of: bool) -> tuple[Dependency, dict[int, str]]:
    clauses = tuple(Clause("afterok", (i + 1,)) for i in range(len(statuses)))
    states = {i + 1: _STATE_FOR[s] for i, s in enumerate(statuses)}
    return Dependency(clauses, any_of), states


ALL_COMBOS = [c for n in (1, 2, 3) for c in itertools.product([OK, WAIT, NEVER], repeat=n)]


@pytest.mark.parametrize("statuses", ALL_COMBOS, ids=lambda c: "-".join(s.value for s in c))
def test_all_of_combination(statuses: tuple[DepStatus, ...]) -> None:
    dep, states = _dep_of(statuses, any_of=False)
    if NEVER in statuses:
        expected = NEVER  # NEVER dominates, even over WAIT
    elif WAIT in statuses:
        expected = WAIT
    else:
        expected = OK
    assert evaluate(dep, states.get) is expected


@pytest.mark.parametrize("statuses", ALL_COMBOS, ids=lambda c: "-".join(s.value for s in c))
def test_any_of_combination(statuses: tuple[DepStatus, ...]) -> None:
    dep, states = _dep_of(statuses, any_of=True)
    if OK in statuses:
        expected = OK  # one satisfied clause wins, whatever the others say
    elif all(s is NEVER for s in statuses):
        expected = NEVER
    else:
        expected = WAIT
    assert evaluate(dep, states.get) is expected


@pytest.mark.parametrize(
    ("text", "states", "expected"),
    [
        ("afterok:1,afterany:2", {1: "COMPLETED", 2: "FAILED"}, OK),
        ("afterok:1,afterany:2", {1: "FAILED", 2: "RUNNING"}, NEVER),
        ("afterok:1,afterany:2", {1: "RUNNING", 2: "FAILED"}, WAIT),
        ("afterok:1?afternotok:1", {1: "COMPLETED"}, OK),
        ("afterok:1?afternotok:1", {1: "FAILED"}, OK),
        ("afterok:1?afternotok:1", {1: "RUNNING"}, WAIT),
        ("afterok:1?afternotok:1", {1: None}, NEVER),
        ("afterok:1?afterok:2", {1: "FAILED", 2: "PENDING"}, WAIT),
        ("afterok:1?afterok:2", {1: "FAILED", 2: "CANCELLED"}, NEVER),
    ],
)
def test_mixed_examples(text: str, states: dict[int, str | None], expected: DepStatus) -> None:
    assert evaluate(parse_dependency(text), states.get) is expected


# ---- singleton ----------------------------------------------------------------------------


def test_singleton_flag() -> None:
    dep = parse_dependency("singleton")

    def no_lookup(job_id: int) -> str | None:
        raise AssertionError(f"singleton looked up job {job_id}")

    assert evaluate(dep, no_lookup) is OK  # default: clear
    assert evaluate(dep, no_lookup, singleton_clear=True) is OK
    assert evaluate(dep, no_lookup, singleton_clear=False) is WAIT  # never NEVER


@pytest.mark.parametrize(
    ("text", "state", "clear", "expected"),
    [
        ("singleton,afterok:1", "COMPLETED", True, OK),
        ("singleton,afterok:1", "COMPLETED", False, WAIT),
        ("singleton,afterok:1", "FAILED", False, NEVER),
        ("singleton,afterok:1", "RUNNING", True, WAIT),
        ("singleton?afterok:1", "FAILED", False, WAIT),
        ("singleton?afterok:1", "FAILED", True, OK),
        ("singleton?afterok:1", "COMPLETED", False, OK),
        ("singleton?afterok:1", "RUNNING", False, WAIT),
    ],
)
def test_singleton_combined(text: str, state: str, clear: bool, expected: DepStatus) -> None:
    states: dict[int, str | None] = {1: state}
    assert evaluate(parse_dependency(text), states.get, singleton_clear=clear) is expected
