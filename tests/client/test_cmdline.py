"""The job commands' option parser (mgpu_client.cmdline) reads a command line as Slurm's
getopt_long does, and words its refusals as getopt_long does."""

from __future__ import annotations

from typing import Any

import pytest

from mgpu_client.cmdline import as_dict, index, number, parse, render_help
from mgpu_client.optable import FLAG, OPTIONAL, USE, VALUE, Opt, R, table_for
from mgpu_core.errors import UsageError

pytestmark = pytest.mark.timeout(30)

SRUN = table_for(R)


def parsed(argv: list[str], table: dict[str, Opt] = SRUN, **kw: Any) -> tuple[list[Any], list[str]]:
    """(``[(dest, value)]`` in order, the other arguments)."""
    found, rest = parse(argv, table, **kw)
    return [(opt.dest, value) for opt, value in found], rest


@pytest.mark.parametrize(
    "argv",
    [
        ["-n2", "cmd"],
        ["-n", "2", "cmd"],
        ["--ntasks=2", "cmd"],
        ["--ntasks", "2", "cmd"],
        ["-n", "5", "--ntasks=2", "cmd"],  # the last one wins in as_dict
    ],
)
def test_every_spelling_of_a_value(argv: list[str]) -> None:
    found, rest = parse(argv, SRUN)
    assert as_dict(found)["ntasks"] == "2" and rest == ["cmd"]
    assert {opt.dest for opt, _ in found} == {"ntasks"}


@pytest.mark.parametrize("argv", [["--nt=2", "cmd"], ["--nt", "2", "cmd"], ["--ntasks=2", "cmd"]])
def test_a_unique_prefix_of_a_long_name(argv: list[str]) -> None:
    table = index([Opt("-n --ntasks", "ntasks", VALUE, "", USE, "Tasks.")])
    assert parsed(argv, table) == ([("ntasks", "2")], ["cmd"])


def test_a_prefix_of_several_names_is_ambiguous_even_if_one_is_whole() -> None:
    # srun's --nt: --ntasks and --ntasks-per-node, ... (getopt_long refuses it too); --ntasks
    # itself, spelled out, is not ambiguous.
    with pytest.raises(UsageError, match=r"^option '--nt' is ambiguous; possibilities: --ntasks "):
        parse(["--nt=2", "cmd"], SRUN)
    assert parsed(["--ntasks-per-no=2", "cmd"]) == ([("ntasks_per_node", "2")], ["cmd"])


def test_an_exact_long_name_wins_over_longer_ones_it_prefixes() -> None:
    # --gpus is a whole name and a prefix of --gpus-per-node and --gpus-per-task.
    assert parsed(["--gpus=1", "x"]) == ([("gpus", "1")], ["x"])


def test_an_ambiguous_prefix_is_refused_with_the_candidates() -> None:
    with pytest.raises(UsageError) as refused:
        parse(["--gpus-per=1", "x"], SRUN)
    message = str(refused.value)
    assert message.startswith("option '--gpus-per' is ambiguous; possibilities:")
    assert "--gpus-per-node" in message and "--gpus-per-task" in message
    assert "--gpus " not in message + " "


def test_an_unknown_long_option_is_unrecognized() -> None:
    with pytest.raises(UsageError, match=r"^unrecognized option '--bogus'$"):
        parse(["--bogus=3", "x"], SRUN)


def test_an_unknown_short_option_is_invalid() -> None:
    with pytest.raises(UsageError, match=r"^invalid option -- 'j'$"):
        parse(["-Hj", "x"], SRUN)


def test_clustered_short_flags_then_one_taking_a_value() -> None:
    assert parsed(["-Hv", "x"]) == ([("hold", True), ("verbose", True)], ["x"])
    assert parsed(["-HlJname", "x"]) == (
        [("hold", True), ("label", True), ("job_name", "name")],
        ["x"],
    )
    assert parsed(["-HJ", "name", "x"]) == ([("hold", True), ("job_name", "name")], ["x"])


def test_double_dash_ends_the_options() -> None:
    assert parsed(["-G", "1", "--", "-n", "2"]) == ([("gpus", "1")], ["-n", "2"])
    assert parsed(["--", "--"]) == ([], ["--"])
    assert parsed(["--"]) == ([], [])


def test_the_first_operand_ends_the_options_unless_interspersed() -> None:
    assert parsed(["-H", "cmd", "-n", "2"]) == ([("hold", True)], ["cmd", "-n", "2"])
    assert parsed(["-H", "cmd", "-n", "2"], interspersed=True) == (
        [("hold", True), ("ntasks", "2")],
        ["cmd"],
    )
    assert parsed(["-", "-H"]) == ([], ["-", "-H"])  # "-" is an operand (stdin)


def test_a_value_may_look_like_an_option() -> None:
    assert parsed(["-J", "--label", "x"]) == ([("job_name", "--label")], ["x"])
    assert parsed(["--job-name", "-n", "x"]) == ([("job_name", "-n")], ["x"])
    assert parsed(["--job-name="]) == ([("job_name", "")], [])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-n"], "option requires an argument -- 'n'"),
        (["-Hn"], "option requires an argument -- 'n'"),
        (["--ntasks"], "option '--ntasks' requires an argument"),
        (["--ntasks-per-no"], "option '--ntasks-per-no' requires an argument"),
    ],
)
def test_a_missing_argument_is_refused(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as refused:
        parse(argv, SRUN)
    assert str(refused.value) == message


def test_a_flag_given_a_value_is_refused() -> None:
    with pytest.raises(UsageError) as refused:
        parse(["--label=yes", "x"], SRUN)
    assert str(refused.value) == "option '--label' doesn't allow an argument"
    with pytest.raises(UsageError, match="'--hold' doesn't allow"):
        parse(["--ho=1", "x"], SRUN)  # named by its full spelling


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--exclusive", "x"], ([("exclusive", True)], ["x"])),
        (["--exclusive=user", "x"], ([("exclusive", "user")], ["x"])),
        (["--nice", "x"], ([("nice", True)], ["x"])),
        (["--nice=5", "x"], ([("nice", "5")], ["x"])),
        (["--nice=-5", "x"], ([("nice", "-5")], ["x"])),
        # A whole number after an optional-value option is its value (getopt would take it
        # for the script: "--nice 5000 job.sh" then fails on a script named 5000).
        (["--nice", "5", "x"], ([("nice", "5")], ["x"])),
        (["--nice", "-5", "x"], ([("nice", "-5")], ["x"])),
        (["--exclusive", "x5", "x"], ([("exclusive", True)], ["x5", "x"])),
        (["-K", "x"], ([("kill_on_bad_exit", True)], ["x"])),
        (["-K1", "x"], ([("kill_on_bad_exit", "1")], ["x"])),
    ],
)
def test_optional_values(argv: list[str], expected: tuple[list[Any], list[str]]) -> None:
    assert parsed(argv) == expected


def test_as_dict_collects_what_it_is_told_to() -> None:
    table = index(
        [Opt("-j --jobs", "jobs", VALUE, "", USE, "Jobs."), Opt("-a", "a", FLAG, "", USE, "A.")]
    )
    found, rest = parse(["-j", "1", "-a", "x", "--jobs=2", "y"], table, interspersed=True)
    assert as_dict(found, collect=["jobs"]) == {"jobs": ["1", "2"], "a": True}
    assert as_dict(found) == {"jobs": "2", "a": True} and rest == ["x", "y"]


@pytest.mark.parametrize(
    ("value", "low", "high", "expected"),
    [("0", 0, 9, 0), (" 7 ", 0, 9, 7), (3, 0, 9, 3), ("9", 0, 9, 9)],
)
def test_number_reads_whole_numbers(value: object, low: int, high: int, expected: int) -> None:
    assert number("-n", value, low, high) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("x", "a whole number expected"),
        ("-1", "a whole number expected"),
        ("1.5", "a whole number expected"),
        ("²", "a whole number expected"),  # a digit to isdigit(), not to int()
        ("1" + "0" * 5000, "a whole number expected"),
        ("10", "expected 0 to 9"),
    ],
)
def test_number_refuses_with_the_option_named(value: str, fragment: str) -> None:
    with pytest.raises(UsageError) as refused:
        number("-c/--cpus-per-task", value, 0, 9)
    assert str(refused.value).startswith("invalid -c/--cpus-per-task value ")
    assert fragment in str(refused.value) and len(str(refused.value)) < 200


def test_help_has_one_line_per_option_and_a_long_spelling_on_two() -> None:
    options = [
        Opt("-n --ntasks", "ntasks", VALUE, "", USE, "Tasks.", metavar="N"),
        Opt("--exclusive", "exclusive", OPTIONAL, "", USE, "Whole node."),
        Opt("--a-very-long-option-name", "long", VALUE, "", USE, "Long.", metavar="VALUE"),
    ]
    text = render_help("prog", "[OPTIONS]", "Does things.", options)
    lines = text.splitlines()
    assert lines[:3] == ["Usage: prog [OPTIONS]", "", "Does things."]
    assert "  -n, --ntasks N              Tasks." in lines
    assert "  --exclusive[=EXCLUSIVE]     Whole node." in lines
    long_at = lines.index("  --a-very-long-option-name VALUE")
    assert lines[long_at + 1].strip() == "Long."
    assert lines[-1].split() == ["-h,", "--help", "Show", "this", "message", "and", "exit."]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-h"], True),
        (["--parsable", "-n", "2", "--help"], True),
        (["--ntasks=2", "--usage"], True),
        (["-n2", "-h"], True),
        (["-J", "-h", "cmd"], False),  # -h is the job's name
        (["cmd", "-h"], False),  # the command's own option
        (["--", "-h"], False),
        ([], False),
    ],
)
def test_wants_help_reads_past_options_and_their_values(argv: list[str], expected: bool) -> None:
    from mgpu_client.cmdline import wants_help

    assert wants_help(argv, SRUN) is expected
