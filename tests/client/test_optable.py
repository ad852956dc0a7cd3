"""The one table of sbatch/srun/salloc options (mgpu_client.optable) is well formed: every
spelling is an option's, none is two options' for one command, and every option mgpu ignores
or refuses says why."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from mgpu_client import salloc, sbatch, srun
from mgpu_client.optable import (
    FLAG,
    JOB_OPTIONS,
    OPTIONAL,
    QUIET,
    REFUSE,
    SRUN_WAIT,
    USE,
    VALUE,
    WARN,
    A,
    B,
    Opt,
    R,
    table_for,
)

pytestmark = pytest.mark.timeout(30)

ALL = (*JOB_OPTIONS, SRUN_WAIT)
COMMANDS = (B, R, A)
SHORT = re.compile(r"-[A-Za-z]")
LONG = re.compile(r"--[a-z][a-z0-9]*(-[a-z0-9]+)*")


@pytest.mark.parametrize("opt", ALL, ids=lambda o: o.names[-1])
def test_each_option_is_well_formed(opt: Opt) -> None:
    assert opt.names, opt.dest
    for name in opt.names:
        assert SHORT.fullmatch(name) or LONG.fullmatch(name), name
    assert [n for n in opt.names if n.startswith("--")], f"{opt.names}: no long name"
    assert opt.takes in (FLAG, VALUE, OPTIONAL)
    assert opt.how in (USE, QUIET, WARN, REFUSE)
    assert opt.commands and set(opt.commands) <= set(COMMANDS), opt.commands
    assert opt.dest.isidentifier() and opt.help.strip()
    if opt.how in (WARN, REFUSE):
        assert opt.why.strip(), f"{opt.names[-1]} is {opt.how}d without a why"


@pytest.mark.parametrize("command", COMMANDS)
def test_no_spelling_is_two_options_for_one_command(command: str) -> None:
    options = [o for o in JOB_OPTIONS if command in o.commands]
    if command == R:  # srun's -W/--wait (seconds) takes the place of sbatch's flag
        options = [o for o in options if o.dest != "wait"] + [SRUN_WAIT]
    spellings = Counter(name for opt in options for name in opt.names)
    assert [name for name, n in spellings.items() if n > 1] == []
    table = table_for(command)
    assert set(table) == set(spellings)
    assert all(name in table[name].names for name in table)


def test_no_dest_is_two_options() -> None:
    dests = Counter(opt.dest for opt in JOB_OPTIONS)
    assert [dest for dest, n in dests.items() if n > 1] == []


def test_srun_wait_is_a_number_and_sbatch_wait_a_flag() -> None:
    assert table_for(R)["--wait"] is SRUN_WAIT and SRUN_WAIT.takes == VALUE
    assert table_for(B)["-W"].takes == FLAG and table_for(B)["-W"].dest == "wait"
    assert "--wait" not in table_for(A)


@pytest.mark.parametrize(
    ("command", "present", "absent"),
    [
        (B, ["--wrap", "--parsable", "--array", "--test-only", "-o"], ["--label", "--pty"]),
        (R, ["--label", "--pty", "--jobid", "--test-only", "-o"], ["--wrap", "--no-shell"]),
        (A, ["--no-shell", "-G", "-n"], ["--wrap", "-o", "--label"]),
    ],
)
def test_each_command_knows_its_own_options(
    command: str, present: list[str], absent: list[str]
) -> None:
    table = table_for(command)
    assert [name for name in present if name not in table] == []
    assert [name for name in absent if name in table] == []


HELP = {
    B: lambda: sbatch.submit(["--help"], "prog", slurm=True),
    R: lambda: srun.run(["--help"], "prog", slurm=True),
    A: lambda: salloc.allocate(["--help"], "prog"),
}


@pytest.mark.parametrize("command", COMMANDS)
def test_help_lists_every_option_and_why_some_are_ignored(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert HELP[command]() == 0
    text = capsys.readouterr().out
    assert text.startswith("Usage: prog ")
    for opt in JOB_OPTIONS:
        if command in opt.commands and not (command == R and opt.dest == "wait"):
            assert ", ".join(opt.names) in text, opt.names
            if opt.how == WARN:
                assert f"[ignored: {opt.why}]" in text
            elif opt.how == REFUSE:
                assert f"[refused: {opt.why}]" in text
        elif not any(command in o.commands for o in ALL if o.names == opt.names):
            assert f"  {', '.join(opt.names)} " not in text, opt.names
