"""Any mix of the Slurm commands' options with hostile values is either accepted or refused
with a UsageError (one line, a non-zero exit), never another exception: the parser, the job
builder and the formats' parsers, run in process over generated command lines."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgpu_client import jobspec, sacct, squeue
from mgpu_client.cmdline import FLAG, OPTIONAL, Opt, as_dict, parse
from mgpu_client.optable import JOB_OPTIONS, table_for
from mgpu_core.errors import UsageError
from mgpu_core.slurm import sacct_fmt
from mgpu_core.text import escape_controls

VALUES = st.sampled_from(
    ["", "0", "-1", "x", "1-", "%", "%%", "gpu:a100:x", "a,b,", "9" * 25, "n[1-", "ALL,FOO",
     "now+x", "1:2:3:4", "[", "]", " ", "-", "unlimited", "1_[", "4294967296", "%.9999999i",
     "JobID:99999", "gpu:0", "a100:2", "5G", "1.5x", "B:USR1@x", "afterok:x", "0-3%0",
     "now-2days", "2026-13-40", "\udcff", "é", "1e9"]
) | st.text(max_size=12)  # fmt: skip


def argv_for(options: list[Opt]) -> Any:
    def one(opt: Opt, name: str, value: str, attach: bool) -> list[str]:
        if opt.takes == FLAG:
            return [name]
        if opt.takes == OPTIONAL:
            return [f"{name}={value}"] if attach and name.startswith("--") else [name]
        return [f"{name}={value}"] if attach and name.startswith("--") else [name, value]

    pick = st.sampled_from(options).flatmap(
        lambda opt: st.tuples(st.just(opt), st.sampled_from(opt.names), VALUES, st.booleans()).map(
            lambda t: one(*t)
        )
    )
    return st.lists(pick, min_size=1, max_size=5).map(
        lambda parts: [word for part in parts for word in part]
    )


@pytest.mark.parametrize("command", ["b", "r", "a"])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_job_options_build_a_job_or_say_why_in_one_line(command: str, data: Any) -> None:
    options = [o for o in JOB_OPTIONS if command in o.commands]
    argv = data.draw(argv_for(options))
    try:
        found, _ = parse([*argv, "--", "true"], table_for(command))
        jobspec.check_options(found)
        opts = jobspec.used(found)
        jobspec.build(opts, argv=["true"], script=None, interactive=command == "r")
    except UsageError as exc:
        assert "\n" not in escape_controls(str(exc))  # as fail() prints it


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_squeue_layouts_parse_or_say_why_in_one_line(data: Any) -> None:
    argv = data.draw(argv_for(list(squeue.OPTIONS)))
    try:
        opts = as_dict(parse(argv, squeue.TABLE, interspersed=True)[0])
        squeue.needed_fields(*squeue.layout(opts))
    except UsageError as exc:
        assert "\n" not in escape_controls(str(exc))  # as fail() prints it


@settings(max_examples=200, deadline=None)
@given(spec=VALUES)
def test_sacct_fields_parse_or_raise_valueerror(spec: str) -> None:
    try:
        sacct_fmt.parse_fields(spec)
    except ValueError as exc:
        assert "\n" not in escape_controls(str(exc))  # as fail() prints it
    try:
        sacct.parse_time(spec, 1.0e9)
    except UsageError as exc:
        assert "\n" not in escape_controls(str(exc))  # as fail() prints it
