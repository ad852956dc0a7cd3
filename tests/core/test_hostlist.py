"""Tests for mgpu_core.hostlist: expanding and compressing Slurm hostlist expressions."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mgpu_core.hostlist import MAX_HOSTS, compress_hostlist, expand_hostlist

# --------------------------------------------------------------------------- expand_hostlist


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("node1", ["node1"]),
        ("login", ["login"]),
        ("a,b,c", ["a", "b", "c"]),
        (
            "node[1-3,5],gpu[01-02]",
            ["node1", "node2", "node3", "node5", "gpu01", "gpu02"],
        ),
        ("gpu[08-10]", ["gpu08", "gpu09", "gpu10"]),
        ("n[9-10]", ["n9", "n10"]),  # unpadded start: no padding
        ("n[008-010]", ["n008", "n009", "n010"]),
        ("n[1-010]", ["n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8", "n9", "n10"]),
        ("n[7]", ["n7"]),
        ("n[3-3]", ["n3"]),
        ("n[1,3,2]", ["n1", "n3", "n2"]),  # order kept as written
        ("a[1-2]b[1-2]", ["a1b1", "a1b2", "a2b1", "a2b2"]),
        ("r[1-2]-c[1-3]", ["r1-c1", "r1-c2", "r1-c3", "r2-c1", "r2-c2", "r2-c3"]),
        ("[1-3]", ["1", "2", "3"]),
        ("rack[1-2]x", ["rack1x", "rack2x"]),
        ("a[1-2],a[2-3],a1", ["a1", "a2", "a3"]),  # duplicates dropped, first place kept
        ("b,a,b", ["b", "a"]),
        ("a,,b,", ["a", "b"]),  # empty items ignored
        (" a , b[1-2] ", ["a", "b1", "b2"]),  # whitespace around items ignored
        ("gpu-node.example[1-2]", ["gpu-node.example1", "gpu-node.example2"]),
    ],
)
def test_expand_hostlist(expr: str, expected: list[str]) -> None:
    assert expand_hostlist(expr) == expected


def test_expand_hostlist_at_limit() -> None:
    names = expand_hostlist(f"n[1-{MAX_HOSTS // 2}],m[1-{MAX_HOSTS // 2}]")
    assert MAX_HOSTS == 100_000
    assert len(names) == MAX_HOSTS
    assert names[0] == "n1"
    assert names[-1] == f"m{MAX_HOSTS // 2}"


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("", "no host names"),
        (",", "no host names"),
        (" , ,", "no host names"),
        ("node[1-3", "unbalanced '['"),
        ("node[", "unbalanced '['"),
        ("node1-3]", "unbalanced ']'"),
        ("]", "unbalanced ']'"),
        ("a[1]]", "unbalanced ']'"),
        ("a[[1]]", "nested '['"),
        ("a[1[2]]", "nested '['"),
        ("n[5-3]", "reversed range '5-3'"),
        ("n[01-2,10-09]", "reversed range '10-09'"),
        ("n[a-c]", "bad range 'a-c': use N or N-M with digits"),
        ("n[1-x]", "bad range '1-x': use N or N-M with digits"),
        ("n[]", "bad range '': use N or N-M with digits"),
        ("n[1,]", "bad range '': use N or N-M with digits"),
        ("n[-3]", "bad range '-3': use N or N-M with digits"),
        ("n[1-2-3]", "bad range '1-2-3': use N or N-M with digits"),
        ("n[1-]", "bad range '1-': use N or N-M with digits"),
        ("n[\u0661-\u0662]", "bad range '\u0661-\u0662': use N or N-M with digits"),
        ("a b", "whitespace in 'a b'"),
        ("n[1, 2]", "whitespace in 'n[1, 2]'"),
        ("n[1-100001]", "expands to more than 100000 names"),
        ("n[0-99999],m", "expands to more than 100000 names"),
        ("a[1-1000]b[1-101]", "expands to more than 100000 names"),
        ("n[1-99999999999999999999]", "expands to more than 100000 names"),
    ],
)
def test_expand_hostlist_rejects(expr: str, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        expand_hostlist(expr)
    message = str(info.value)
    assert message == f"invalid hostlist {expr!r}: {reason}"
    assert "\n" not in message


def test_expand_hostlist_error_names_multiline_expression_on_one_line() -> None:
    with pytest.raises(ValueError, match=re.escape(r"invalid hostlist 'a[\n'")) as info:
        expand_hostlist("a[\n")
    assert "\n" not in str(info.value)


@given(
    prefix=st.text(alphabet="abz-.", max_size=4),
    lo=st.integers(0, 500),
    span=st.integers(0, 50),
    width=st.integers(1, 4),
)
def test_expand_hostlist_range_property(prefix: str, lo: int, span: int, width: int) -> None:
    start = f"{lo:0{width}d}"
    names = expand_hostlist(f"{prefix}[{start}-{lo + span}]")
    assert names == [f"{prefix}{n:0{len(start)}d}" for n in range(lo, lo + span + 1)]


# --------------------------------------------------------------------------- compress_hostlist


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        ([], ""),
        (["node1"], "node1"),
        (["login"], "login"),
        (["node1", "node2", "node3", "node5", "gpu01"], "gpu01,node[1-3,5]"),
        (["gpu10", "gpu08", "gpu09"], "gpu[08-10]"),
        ([f"node{i}" for i in range(1, 13)], "node[1-12]"),
        (["n9", "n10", "n11"], "n[9-11]"),
        (["n09", "n10"], "n[09-10]"),
        (["n009", "n010", "n1"], "n[1,009-010]"),
        (["n8", "n08", "n9", "n09"], "n[8,08,9,09]"),  # padded and unpadded never share a run
        (["a1", "a1", "a2"], "a[1-2]"),  # duplicates ignored
        (["b2", "a", "b1", "a3", "b"], "a,a3,b,b[1-2]"),
        (["1", "2", "3", "7"], "[1-3,7]"),
        (["x1y2", "x1y3"], "x1y[2-3]"),
        (["r1-c1", "r1-c2", "r2-c1"], "r1-c[1-2],r2-c1"),
    ],
)
def test_compress_hostlist(names: list[str], expected: str) -> None:
    assert compress_hostlist(names) == expected


@pytest.mark.parametrize("name", ["", "a,b", "a[1]", "a]", "a b", "a\tb", "\n"])
def test_compress_hostlist_rejects_bad_names(name: str) -> None:
    with pytest.raises(ValueError) as info:
        compress_hostlist(["ok1", name])
    assert str(info.value) == (
        f"invalid host name {name!r}: must be non-empty without , [ ] or spaces"
    )


_digits = st.one_of(
    st.just(""),
    st.integers(0, 120).map(str),
    st.text(alphabet="0123456789", min_size=1, max_size=4),
)
_names = st.builds(lambda p, d: p + d, st.text(alphabet="abn-._", max_size=3), _digits).filter(bool)


@given(st.lists(_names, min_size=1, max_size=60))
def test_compress_then_expand_gives_same_set(names: list[str]) -> None:
    expr = compress_hostlist(names)
    expanded = expand_hostlist(expr)
    assert set(expanded) == set(names)
    assert len(expanded) == len(set(names))


@given(st.lists(_names, min_size=1, max_size=30), st.data())
def test_compress_ignores_order_and_duplicates(names: list[str], data: st.DataObject) -> None:
    shuffled = data.draw(st.permutations(names + names[:3]))
    assert compress_hostlist(shuffled) == compress_hostlist(names)


@given(
    st.lists(st.tuples(st.integers(0, 300), st.integers(0, 20)), min_size=1, max_size=5),
)
def test_expand_then_compress_round_trip(ranges: list[tuple[int, int]]) -> None:
    expr = "gpu[" + ",".join(f"{lo}-{lo + span}" for lo, span in ranges) + "]"
    names = expand_hostlist(expr)
    compressed = compress_hostlist(names)
    assert set(expand_hostlist(compressed)) == set(names)
    assert compressed.startswith("gpu")
