"""Others' text on a terminal: every control character shown escaped, all else as it is."""

from __future__ import annotations

import os

import pytest

from mgpu_core.text import escape_controls


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("train-42", "train-42"),
        ("résumé 训练 ✓", "résumé 训练 ✓"),  # letters of any script stay readable
        ("a b", "a b"),
        ("\x1b[2J\x1b]0;pwned\x07", "\\x1b[2J\\x1b]0;pwned\\x07"),
        ("two\nlines\r", "two\\x0alines\\x0d"),
        ("tab\there", "tab\\x09here"),
        ("\x7f\x9b", "\\x7f\\x9b"),  # DEL and the C1 CSI
        ("abc\u202edcba", "abc\\u202edcba"),  # a bidi override reorders what follows
        ("line\u2028sep", "line\\u2028sep"),
        ("\U000e0041", "\\U000e0041"),  # a tag character: invisible
        (os.fsdecode(b"bad\xff"), "bad\\xff"),  # an undecodable byte, as the byte
    ],
)
def test_controls_are_shown_escaped(raw: str, shown: str) -> None:
    assert escape_controls(raw) == shown


def test_clean_text_is_returned_as_it_is() -> None:
    text = "job-1 RUNNING n1 gpu:0,1"
    assert escape_controls(text) is text
