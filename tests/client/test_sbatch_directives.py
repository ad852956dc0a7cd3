from __future__ import annotations

import shlex
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgpu_client.directives import (
    MAX_DIRECTIVE_LEN,
    MAX_DIRECTIVE_WORDS,
    parse_directives,
    split_words,
)
from mgpu_core.errors import ConfigError, UsageError


def test_directives_until_first_command() -> None:
    script = (
        "#!/bin/bash\n"
        "\n"
        "#SBATCH --gpus=2 -J 'my job'\n"
        "# plain comment\n"
        "#MGPU --time 1:00:00  # trailing comment\n"
        "#SBATCHX --ignored\n"
        "echo hi\n"
        "#SBATCH --gpus 8\n"
    )
    assert parse_directives(script) == ["--gpus=2", "-J", "my job", "--time", "1:00:00"]


def test_no_directives() -> None:
    assert parse_directives("#!/bin/sh\necho\n") == []


def test_unbalanced_quote_names_the_line() -> None:
    with pytest.raises(ConfigError, match="line 2"):
        parse_directives("#!/bin/sh\n#SBATCH -J 'oops\n")


@settings(max_examples=2000)
@given(st.text(alphabet=" \t'\"\\#ab=-", max_size=16))
def test_split_words_is_shlex_split(text: str) -> None:
    try:
        expected: list[str] | None = shlex.split(text, comments=True)
    except ValueError:
        expected = None
    try:
        got: list[str] | None = split_words(text)
    except ValueError:
        got = None
    assert got == expected


def _timed(script: str) -> tuple[float, list[str] | str]:
    start = time.perf_counter()
    try:
        result: list[str] | str = parse_directives(script)
    except UsageError as exc:
        result = str(exc)
    return time.perf_counter() - start, result


def test_a_1_mib_directive_line_is_refused_at_once() -> None:
    # shlex took 23.6 s over this line: it grows a word one character at a time.
    elapsed, result = _timed("#!/bin/sh\n#SBATCH --job-name=" + "x" * (1 << 20) + "\necho\n")
    assert isinstance(result, str) and "line 2" in result and "at most" in result
    assert "\n" not in result and len(result) < 300
    assert elapsed < 0.1, f"{elapsed:.3f} s"


@pytest.mark.parametrize(
    "line",
    [
        "--job-name=" + "x" * (MAX_DIRECTIVE_LEN - 30),  # one long word: accepted
        '-J "' + "x y " * ((MAX_DIRECTIVE_LEN - 30) // 4) + '"',
        "-H " * 1000,  # many short words, still within the limit
    ],
)
def test_long_directive_lines_within_the_limit_parse_in_linear_time(line: str) -> None:
    elapsed, result = _timed(f"#!/bin/sh\n#SBATCH {line}\n")
    assert isinstance(result, list) and result
    assert elapsed < 0.5, f"{elapsed:.3f} s"  # ~0.04 s on a shared core


def test_too_many_directive_words_are_refused() -> None:
    script = "#!/bin/sh\n" + "#SBATCH -H -H -H -H\n" * (MAX_DIRECTIVE_WORDS // 4 + 1)
    elapsed, result = _timed(script)
    assert isinstance(result, str) and f"more than {MAX_DIRECTIVE_WORDS} words" in result
    assert elapsed < 0.5
