"""The wire records (mgpu_core.models, declared with mgpu_core.records): for every record and
every field, generated from the declarations so that a new field is covered without a new
test: round trips, defaults, required fields, and every limit rejected with BadMessage naming
the field. Then JobResult <-> exception for every error class, and the message tables built
from the records."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mgpu_core import errors
from mgpu_core.errors import BadMessage, MgpuError, error_from_wire
from mgpu_core.messages import (
    CLIENT_REQUESTS,
    HELLO,
    MASTER_TO_NODE,
    NODE_MESSAGES,
    validate,
)
from mgpu_core.models import (
    GpuDevice,
    GpuProcess,
    GpuSample,
    JobExited,
    JobResult,
    JobSpec,
    Launch,
    NodeHello,
    SubmitRequest,
)
from mgpu_core.records import RecordSchema, WireRecord, wire, wire_record
from mgpu_core.schema import (
    REQUIRED,
    AnyOf,
    Bool,
    Float,
    Int,
    ListOf,
    MapOf,
    OneOf,
    Optional,
    Record,
    Str,
    Validator,
)

RECORDS: list[type[WireRecord]] = [
    JobSpec,
    SubmitRequest,
    GpuDevice,
    NodeHello,
    GpuProcess,
    GpuSample,
    Launch,
    JobExited,
    JobResult,
]
RECORD_IDS = [r.__name__ for r in RECORDS]

# ---- values from validators -----------------------------------------------------------------


def valid(check: Validator) -> st.SearchStrategy[Any]:
    """Values ``check`` accepts (small ones: the limits are tested one by one below)."""
    if isinstance(check, Record):
        return record_values(check)
    if isinstance(check, Int):
        return st.integers(check.lo, check.hi)
    if isinstance(check, Str):
        return st.text(min_size=check.min_len, max_size=min(check.max_len, 8))
    if isinstance(check, Bool):
        return st.booleans()
    if isinstance(check, Float):
        return st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**53), 2**53)
    if isinstance(check, Optional):
        return st.none() | valid(check.inner)
    if isinstance(check, ListOf):
        return st.lists(valid(check.item), max_size=min(check.max_items, 3))
    if isinstance(check, MapOf):
        return st.dictionaries(st.text(max_size=8), valid(check.value), max_size=3)
    if isinstance(check, AnyOf):
        return st.one_of(*(valid(a) for a in check.alternatives))
    if isinstance(check, OneOf):
        return st.sampled_from(sorted(check.choices))
    raise AssertionError(f"no strategy for {check!r}")


def record_values(schema: Record) -> st.SearchStrategy[dict[str, Any]]:
    required = {k: valid(v) for k, (v, d) in schema.fields.items() if d is REQUIRED}
    optional = {k: valid(v) for k, (v, d) in schema.fields.items() if d is not REQUIRED}
    return st.fixed_dictionaries(required, optional=optional)


def minimal(schema: Record) -> dict[str, Any]:
    """The smallest valid wire form: the required fields only."""
    return {k: smallest(v) for k, (v, d) in schema.fields.items() if d is REQUIRED}


def smallest(check: Validator) -> Any:
    if isinstance(check, Record):
        return minimal(check)
    if isinstance(check, Int):
        return max(check.lo, min(check.hi, 1))
    if isinstance(check, Str):
        return "x" * max(check.min_len, 1)
    if isinstance(check, AnyOf):
        return smallest(check.alternatives[0])
    if isinstance(check, Bool):
        return False
    if isinstance(check, OneOf):
        return sorted(check.choices)[0]
    raise AssertionError(f"no smallest value for {check!r}")


def violations(check: Validator) -> Iterator[tuple[Any, str]]:
    """(a value ``check`` must refuse, a fragment of the refusal), for each of its limits."""
    if isinstance(check, Optional):
        yield from violations(check.inner)
    elif isinstance(check, AnyOf):
        # No alternative takes a list; what one alternative refuses, the others refuse too.
        yield [], "expected"
        for alternative in check.alternatives:
            yield from ((bad, "expected") for bad, _ in violations(alternative))
    elif isinstance(check, Bool):
        yield 1, "expected bool"
    elif isinstance(check, OneOf):
        yield True, "is not one of"
        yield "NOT_A_CHOICE", "is not one of"
    else:
        yield True, "expected"  # bool is its own wire type, for every other field
        yield from _limits(check)


def _limits(check: Validator) -> Iterator[tuple[Any, str]]:
    if isinstance(check, Int):
        yield from [(check.lo - 1, "outside"), (check.hi + 1, "outside"), (1.0, "expected int")]
    elif isinstance(check, Str):
        yield "x" * (check.max_len + 1), "outside"
        if check.min_len:
            yield "x" * (check.min_len - 1), "outside"
    elif isinstance(check, Float):
        yield from [(math.nan, "finite"), (math.inf, "finite"), ("1", "expected number")]
    elif isinstance(check, ListOf):
        yield [smallest(check.item)] * (check.max_items + 1), "items exceeds"
        yield from (([bad], why) for bad, why in violations(check.item))
    elif isinstance(check, MapOf):
        yield from _map_limits(check)
    elif isinstance(check, Record):
        yield [], "expected map"
        for name, (inner, _) in check.fields.items():
            yield from (({**minimal(check), name: bad}, why) for bad, why in violations(inner))
    else:
        raise AssertionError(f"{check!r}: add its limits here")


def _map_limits(check: MapOf) -> Iterator[tuple[Any, str]]:
    yield {str(i): "" for i in range(check.max_items + 1)}, "entries exceeds"
    yield {1: "x"}, "keys must be str"
    if check.key is not None:
        yield {"k" * (check.key.max_len + 1): ""}, "length"
    yield from (({"k": bad}, why) for bad, why in violations(check.value))
    if isinstance(check.value, Str):  # each value fits, and together they are too many
        size = check.value.max_len
        count = check.max_total // size + 1
        assert count <= check.max_items
        yield {f"{i:04}": "x" * size for i in range(count)}, "characters exceeds"


def field_cases() -> Iterator[tuple[type[WireRecord], str, Any, str]]:
    for record in RECORDS:
        for name, (check, _) in record.SCHEMA.fields.items():
            for bad, why in violations(check):
                yield record, name, bad, why


CASES = list(field_cases())


# ---- round trips and defaults ----------------------------------------------------------------


@pytest.mark.parametrize("record", RECORDS, ids=RECORD_IDS)
@given(data=st.data())
def test_round_trip(record: type[WireRecord], data: st.DataObject) -> None:
    wire_form = data.draw(record_values(record.SCHEMA))
    built = record.from_wire(wire_form)
    assert built.to_wire() == record.SCHEMA.check(wire_form)
    assert record.from_wire(built.to_wire()) == built
    assert record.from_checked(built.to_wire()) == built


@pytest.mark.parametrize("record", RECORDS, ids=RECORD_IDS)
def test_absent_fields_get_the_declared_defaults(record: type[WireRecord]) -> None:
    wire_form = minimal(record.SCHEMA)
    built = record.from_wire(wire_form)
    for f in dataclasses.fields(built):  # type: ignore[arg-type]
        if f.name in wire_form:
            continue
        expected = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        assert getattr(built, f.name) == expected, f.name
    # A store's old rows lack newer fields: from_checked fills them without checking.
    assert record.from_checked(wire_form) == built


@pytest.mark.parametrize("record", RECORDS, ids=RECORD_IDS)
def test_every_required_field_is_required(record: type[WireRecord]) -> None:
    wire_form = minimal(record.SCHEMA)
    for name in wire_form:
        with pytest.raises(BadMessage, match=f"field '{name}' is required"):
            record.from_wire({k: v for k, v in wire_form.items() if k != name})


@pytest.mark.parametrize("record", RECORDS, ids=RECORD_IDS)
def test_unknown_keys_are_dropped(record: type[WireRecord]) -> None:
    wire_form = minimal(record.SCHEMA)
    assert record.from_wire({**wire_form, "from_a_newer_peer": 1}) == record.from_wire(wire_form)


@pytest.mark.parametrize(
    ("record", "name", "bad", "why"),
    CASES,
    ids=[f"{r.__name__}.{n}-{i}" for i, (r, n, _, _) in enumerate(CASES)],
)
def test_every_limit_is_rejected(record: type[WireRecord], name: str, bad: Any, why: str) -> None:
    with pytest.raises(BadMessage, match=f"field '{name}[.\\[':]") as caught:
        record.from_wire({**minimal(record.SCHEMA), name: bad})
    assert why in caught.value.message


def test_the_documented_job_spec_limits() -> None:
    """docs/protocol.md §5.1, pinned: a changed limit is a protocol change."""
    fields = JobSpec.SCHEMA.fields

    def bounds(name: str) -> tuple[int, int]:
        check = fields[name][0]
        assert isinstance(check, Int)
        return check.lo, check.hi

    assert bounds("gpus") == (0, 64)
    assert bounds("cpus") == (1, 65_536)
    assert bounds("mem_bytes") == (0, 2**60)
    assert bounds("time_limit_s") == (0, 315_360_000)
    assert bounds("nice") == (-10_000, 10_000)
    assert bounds("warn_signal") == (0, 64)
    assert bounds("warn_before_s") == (0, 65_535)
    env = fields["env"][0]
    assert isinstance(env, MapOf)
    assert (env.max_items, env.max_total) == (8192, 1_048_576)
    argv = fields["argv"][0]
    assert isinstance(argv, ListOf) and isinstance(argv.item, Str)
    assert (argv.max_items, argv.item.max_len) == (4096, 131_072)


def test_the_documented_gpu_sample_fields() -> None:
    """docs/protocol.md §5.1's GPU sample and GPU process, pinned: limits, defaults and required
    fields (a heartbeat from an older agent must still validate)."""

    def described(check: Validator) -> Any:
        if isinstance(check, Int):
            return (check.lo, check.hi)
        if isinstance(check, Str):
            return ("str", check.min_len, check.max_len)
        if isinstance(check, ListOf):
            return ([described(check.item)], check.max_items)
        if isinstance(check, Record):
            return {k: (described(v), d) for k, (v, d) in check.fields.items()}
        return type(check).__name__

    assert described(GpuSample.SCHEMA) == {
        "index": ((0, 63), REQUIRED),
        "healthy": ("Bool", True),
        "error": (("str", 0, 256), ""),
        "utilization_pct": ((-1, 100), -1),
        "memory_used_bytes": ((-1, 2**60), -1),
        "processes": (
            (
                [
                    {
                        "pid": ((0, 2**32), REQUIRED),
                        "user": (("str", 0, 256), "?"),
                        "used_memory_bytes": ((0, 2**60), 0),
                        "command": (("str", 0, 256), ""),
                    }
                ],
                256,
            ),
            list,
        ),
    }
    sample = GpuSample.from_wire({"index": 3, "processes": [{"pid": 9}]})
    assert sample == GpuSample(index=3, processes=[GpuProcess(pid=9)])
    assert sample.to_wire() == {
        "index": 3,
        "healthy": True,
        "error": "",
        "utilization_pct": -1,
        "memory_used_bytes": -1,
        "processes": [{"pid": 9, "user": "?", "used_memory_bytes": 0, "command": ""}],
    }


def test_nested_errors_name_the_path() -> None:
    with pytest.raises(BadMessage, match=r"field 'spec\.gpus': expected int, got str"):
        Launch.from_wire({"job_id": 1, "spec": {"gpus": "2"}})
    with pytest.raises(BadMessage, match=r"field 'gpus\[1\]\.visible_id' is required"):
        NodeHello.from_wire(
            {"node_id": "n", "gpus": [{"index": 0, "visible_id": "0"}, {"index": 1}]}
        )
    with pytest.raises(BadMessage, match="field 'message': expected map, got list"):
        JobExited.from_wire([])


def test_nested_records_are_built_and_sent_as_dicts() -> None:
    hello = NodeHello.from_wire({"node_id": "n", "gpus": [{"index": 0, "visible_id": "0"}]})
    assert hello.gpus == [GpuDevice(index=0, visible_id="0")]
    launch = Launch(job_id=3, spec=JobSpec(argv=["x"]), gpu_indices=[0])
    wire_form = launch.to_wire()
    assert wire_form["spec"] == JobSpec(argv=["x"]).to_wire()
    assert wire_form["gpu_indices"] is not launch.gpu_indices  # the message owns its lists
    assert SubmitRequest(job=JobSpec()).to_wire() == {
        "job": JobSpec().to_wire(),
        "attach": False,
        "test_only": False,
    }


def test_records_are_frozen_but_the_job_spec() -> None:
    exited = JobExited(job_id=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        exited.reason = "x"  # type: ignore[misc]
    assert dataclasses.replace(exited, reason="x").reason == "x"
    spec = JobSpec()
    spec.qos = "normal"  # the master completes a spec at submit


def test_a_field_without_a_validator_is_refused() -> None:
    with pytest.raises(TypeError, match=r"Bad\.b has no wire validator"):

        @wire_record
        @dataclasses.dataclass(frozen=True)
        class Bad(WireRecord):
            a: int = dataclasses.field(default=0, metadata=wire(Int(0, 1)))
            b: int = 0


# ---- JobResult ---------------------------------------------------------------------------------


def _error_classes() -> list[type[MgpuError]]:
    found = [
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, MgpuError)
    ]
    assert len(found) > len(errors.ERROR_CODES) // 2
    return found


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda c: c.__name__)
def test_job_result_carries_every_error_back(cls: type[MgpuError]) -> None:
    err = cls("job 7 is not yours")
    result = JobResult.from_wire(JobResult.from_error(7, err).to_wire())
    assert result == JobResult(job_id=7, ok=False, code=err.code, message=err.message)
    back = result.error()
    assert back is not None and back.code == err.code and back.message == err.message
    # A class with its own code comes back as itself; one that borrows its parent's code
    # (UsageError: local only) comes back as the class of that code.
    assert type(back) is type(error_from_wire(err.code, "")) and isinstance(err, type(back))
    if "code" in vars(cls):
        assert type(back) is cls


def test_every_error_code_round_trips() -> None:
    for code in errors.ERROR_CODES:
        back = JobResult.from_error("12_3", error_from_wire(code, "m")).error()
        assert back is not None and back.code == code


def test_job_result_success_and_unknown_codes() -> None:
    ok = JobResult.success("12_3")
    assert ok.to_wire() == {"job_id": "12_3", "ok": True, "code": "", "message": ""}
    assert JobResult.from_wire({"job_id": 12, "ok": True}).error() is None
    newer = JobResult.from_wire({"job_id": 5, "ok": False, "code": "from_the_future"})
    back = newer.error()
    assert type(back) is MgpuError and back.code == "from_the_future"


def test_job_result_cuts_what_the_wire_would_refuse() -> None:
    result = JobResult.from_error(1, errors.InvalidJobState("x" * 10_000))
    assert JobResult.from_wire(result.to_wire()) == result


# ---- the message tables are built from the records ---------------------------------------------


def test_the_tables_use_the_records_schemas() -> None:
    submit = CLIENT_REQUESTS["submit"]
    assert list(submit.fields) == ["id", *SubmitRequest.SCHEMA.fields]
    assert submit.fields["job"][0] is JobSpec.SCHEMA
    assert NODE_MESSAGES["job_exited"] is JobExited.SCHEMA
    gpus = NODE_MESSAGES["heartbeat"].fields["gpus"][0]
    assert isinstance(gpus, ListOf) and gpus.item is GpuSample.SCHEMA
    assert MASTER_TO_NODE["launch"].fields["launch"][0] is Launch.SCHEMA
    node = HELLO.fields["node"][0]
    assert isinstance(node, Optional) and node.inner is NodeHello.SCHEMA
    for record in RECORDS:
        assert isinstance(record.SCHEMA, RecordSchema) and record.SCHEMA.record is record


def test_a_checked_message_builds_its_record_without_a_second_check() -> None:
    msg = validate(
        {"t": "submit", "id": 4, "job": {"argv": ["true"], "gpus": 2}, "attach": True},
        CLIENT_REQUESTS,
    )
    request = SubmitRequest.from_checked(msg)
    assert request == SubmitRequest(job=JobSpec(argv=["true"], gpus=2), attach=True)
    exited = JobExited.from_checked(validate({"t": "job_exited", "job_id": 9}, NODE_MESSAGES))
    assert exited == JobExited(job_id=9)


# ---- start-up cost -------------------------------------------------------------------------------

_PROBE = """
import sys
{code}
print(" ".join(sorted(m for m in {names!r} if m in sys.modules)))
"""
# What a job command does before it sends anything: parse its options from the one table and
# build the job's wire dict (the records are the master's to check). Rare options may cost
# more (-w/-x and --dependency import dataclasses): mgpu_client.jobspec's docstring.
_BUILD_JOBS = """
from mgpu_client import jobspec
from mgpu_client.cmdline import parse
from mgpu_client.directives import parse_directives
from mgpu_client.optable import B, R, table_for
for argv, table, gpus in (
    (["-G", "a100:1", "-n", "2", "-c", "3", "-t", "1:00", "--mem-per-cpu=1G", "-J", "x"], R, 1),
    (["--export=NONE", "--open-mode=append", "--nice", "-o", "out/%j.log", *parse_directives(
        "#!/bin/sh\\n#SBATCH --gres=gpu:2 -p a,b --signal=B:USR1@90\\n")], B, 2),
):
    found, _ = parse(argv, table_for(table))
    jobspec.check_options(found)
    job = jobspec.build(jobspec.used(found), argv=["true"], script=None, interactive=False)
    assert job["gpus"] == gpus, job
"""
_NO_RECORDS = ("dataclasses", "typing", "mgpu_core.models", "mgpu_core.messages", "click")


@pytest.mark.parametrize(
    ("code", "absent"),
    [
        # The job commands (parsed by mgpu_client.cmdline, not click) and mgpu_queue's quick
        # path: no click, no dataclasses, no typing, no records.
        (
            "import mgpu_client.sbatch, mgpu_client.srun, mgpu_client.salloc, "
            "mgpu_client.scancel, mgpu_client.squeue, mgpu_client.sacct, mgpu_client.sinfo, "
            "mgpu_client.scontrol, mgpu_client.steps, mgpu_client.queue",
            _NO_RECORDS,
        ),
        (_BUILD_JOBS, _NO_RECORDS),
        # A TCP client's handshake: no typing, no records.
        ("import mgpu_core.handshake", ("typing", "mgpu_core.models", "mgpu_core.messages")),
    ],
)
def test_clients_start_without_the_records(code: str, absent: tuple[str, ...]) -> None:
    probe = _PROBE.format(code=code, names=absent)
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=30
    )
    assert result.stdout.split() == []


def test_a_hello_without_isolation_comes_from_an_agent_older_than_the_field() -> None:
    assert NodeHello.from_wire({"node_id": "n"}).isolation == ""
    hello = NodeHello(node_id="n", isolation="cgroup v1 (devices, memory, cpu)")
    assert NodeHello.from_wire(hello.to_wire()) == hello
