"""limits.shorten: how every sender fits text it did not write into a field's limit."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mgpu_core.limits import MAX_REASON_LEN, shorten

MARKER = re.compile(r"…\[truncated (\d+) chars\]$")


def test_text_that_fits_is_unchanged() -> None:
    assert shorten("", 0) == ""
    assert shorten("x" * MAX_REASON_LEN, MAX_REASON_LEN) == "x" * MAX_REASON_LEN


def test_longer_text_keeps_its_beginning_and_says_how_much_was_cut() -> None:
    text = "working directory /nonexistent/" + "d" * 1100 + " does not exist on node n1"
    short = shorten(text, MAX_REASON_LEN)
    assert len(short) == MAX_REASON_LEN
    kept, marker = short.split("…")
    assert text.startswith(kept)
    assert marker == f"[truncated {len(text) - len(kept)} chars]"


@given(st.text(max_size=3000), st.integers(0, 2000))
def test_never_over_the_limit_and_the_count_is_exact(text: str, limit: int) -> None:
    short = shorten(text, limit)
    assert len(short) <= limit
    if len(text) <= limit:
        assert short == text
        return
    found = MARKER.search(short)
    if found is None:  # a limit too small for any marker: the beginning, cut plainly
        assert limit < len(f"…[truncated {len(text)} chars]") and short == text[:limit]
        return
    kept = short[: found.start()]
    assert len(short) == limit and text.startswith(kept)
    assert int(found.group(1)) == len(text) - len(kept)


@pytest.mark.parametrize("limit", [0, 1, 5])
def test_a_limit_smaller_than_the_marker_cuts_plainly(limit: int) -> None:
    assert shorten("abcdefghij", limit) == "abcdefghij"[:limit]
