"""The shared pieces: Slurm's column padding, format parsing, hostlists and TRES."""

from __future__ import annotations

import pytest

from mgpu_core.slurm import common as c


@pytest.mark.parametrize(
    ("value", "width", "right", "cut", "expected"),
    [
        ("abc", 0, False, True, "abc"),  # no size: "%s"
        ("abc", 5, True, True, "  abc"),  # "%5s"
        ("abcdef", 3, True, True, "abc"),  # "%3s" then snprintf(width + 1): the start stays
        ("abcdef", 3, True, False, "abcdef"),  # uncut (times, node lists) overflow
        ("abcdef", 3, False, True, "abc"),  # "%.3s": left-justified always cuts
        ("abcdef", 3, False, False, "abc"),
        ("ab", 4, False, True, "ab  "),
        ("ab", -5, False, True, "ab "),  # width < 0: "%s "
    ],
)
def test_pad_is_print_str(value: str, width: int, right: bool, cut: bool, expected: str) -> None:
    assert c.pad(value, width, right, cut) == expected


def test_percent_format_keeps_prefix_suffixes_and_widths() -> None:
    specs = c.parse_percent_format("id=%.18i|%9j end", {"i", "j"}, "job")
    assert specs == [("", 0, False, "id="), ("i", 18, True, "|"), ("j", 9, False, " end")]


def test_percent_format_skips_empty_tokens_like_strtok() -> None:
    assert c.parse_percent_format("%%i%%", {"i"}, "job") == [("i", 0, False, "")]
    assert c.parse_percent_format("text only", {"i"}, "job") == [("", 0, False, "text only")]


@pytest.mark.parametrize("fmt", ["%q", "%-10j", "%.5", "%5"])
def test_percent_format_rejects_unknown_letters(fmt: str) -> None:
    # squeue has no "-" flag: "%-10j" reads "-" as the field letter, which it rejects.
    with pytest.raises(ValueError, match=r"^Invalid job format specification: "):
        c.parse_percent_format(fmt, {"i", "j"}, "job")


def test_name_format() -> None:
    names = {"jobid": "A", "name": "j"}
    assert c.parse_name_format("JobID,Name:.30,name:10|,jobid:", names, "job") == [
        ("A", 20, False, ""),  # no size: 20 wide, left-justified, nothing after
        ("j", 30, True, ""),
        ("j", 10, False, "|"),
        ("A", 0, False, ""),
    ]
    with pytest.raises(ValueError, match="Invalid job format specification: nope"):
        c.parse_name_format("jobid,nope", names, "job")


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        ([], ""),
        (["node7"], "node7"),
        (["node1", "node2", "node3", "node5"], "node[1-3,5]"),
        (["node3", "node1", "node2", "node2"], "node[1-3]"),
        (["n09", "n10", "n11"], "n[09-11]"),
        (["n9", "n10"], "n[9-10]"),
        (["node10", "node9", "gpu1"], "gpu1,node[9-10]"),
        (["box", "node1", "node2", "alpha"], "alpha,box,node[1-2]"),
        (["a1", "b1"], "a1,b1"),
    ],
)
def test_compress_hostlist(names: list[str], expected: str) -> None:
    assert c.compress_hostlist(names) == expected


def test_job_tres_in_id_order_and_sorted_for_sacct() -> None:
    job = {"cpus": 4, "mem_bytes": 16 << 30, "gpus": 2, "gpu_type": "h100"}
    assert c.job_tres(job) == [
        "cpu=4", "mem=16G", "node=1", "billing=4", "gres/gpu=2", "gres/gpu:h100=2",
    ]  # fmt: skip
    # slurmdb_make_tres_string_from_simple sorts by name (":" sorts before "=").
    assert c.sorted_tres(c.job_tres(job)) == (
        "billing=4,cpu=4,gres/gpu:h100=2,gres/gpu=2,mem=16G,node=1"
    )
    assert c.job_tres({"cpus": 1}, billing=False) == ["cpu=1", "node=1"]
    assert c.tres_per_node(job) == "gres/gpu:h100:2"
    assert c.tres_per_node({"gpus": 1}) == "gres/gpu:1"
    assert c.tres_per_node({}) == ""


def test_missing_keys_read_empty() -> None:
    assert c.text({}, "x") == ""
    assert c.text({"x": None}, "x") == ""
    assert c.integer({"x": None}, "x") == 0
    assert c.number({}, "x") == 0.0
    assert c.priority_tier({}) == 1
    assert c.priority_tier({"priority_tier": 0}) == 0


def test_user_ids() -> None:
    assert c.uid_of("root") == 0
    assert c.gid_of("root") == 0
    assert c.uid_of("no-such-user-mgpu-test") is None
    assert c.uid_of("") is None
    assert c.group_name(None) == ""
