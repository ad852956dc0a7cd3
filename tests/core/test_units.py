"""Tests for mgpu_core.units: Slurm time limits, squeue durations and memory sizes."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mgpu_core.units import format_duration, format_size, parse_size, parse_time_limit

TIME_HINT = "use MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"
KIB, MIB, GIB, TIB = 2**10, 2**20, 2**30, 2**40


# --------------------------------------------------------------------------- parse_time_limit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # MM (a bare number is minutes; the leading field is unbounded)
        ("5", 5 * 60),
        ("90", 90 * 60),
        ("007", 7 * 60),
        # MM:SS
        ("5:30", 5 * 60 + 30),
        ("90:00", 90 * 60),
        ("0:59", 59),
        # HH:MM:SS
        ("1:02:03", 3600 + 2 * 60 + 3),
        ("48:00:00", 48 * 3600),
        ("0:0:1", 1),
        # D-HH
        ("2-3", 2 * 86400 + 3 * 3600),
        ("0-23", 23 * 3600),
        # D-HH:MM
        ("1-02:03", 86400 + 2 * 3600 + 3 * 60),
        # D-HH:MM:SS
        ("1-02:03:04", 86400 + 2 * 3600 + 3 * 60 + 4),
        ("10-23:59:59", 10 * 86400 + 23 * 3600 + 59 * 60 + 59),
        # surrounding whitespace
        ("  15\n", 15 * 60),
        ("\t1:00:00 ", 3600),
    ],
)
def test_parse_time_limit_formats(text: str, expected: int) -> None:
    assert parse_time_limit(text) == expected


@pytest.mark.parametrize(
    "text", ["0", "00", "0:00", "0-0", "infinite", "UNLIMITED", "Infinite", " unlimited "]
)
def test_parse_time_limit_no_limit_is_zero(text: str) -> None:
    assert parse_time_limit(text) == 0


@pytest.mark.parametrize(
    "text",
    [
        "",  # empty
        "   ",  # blank
        "-5",  # negative
        "-1:00",  # negative
        "abc",  # letters
        "1:x",  # letters in a field
        "5m",  # unit suffix
        "1h",
        "1:2:3:4",  # too many fields
        "1-2:3:4:5",  # too many fields after the day
        "1-",  # day with nothing after it
        "-",
        "1-2-3",  # two dashes
        ":",  # empty fields
        "1:",
        ":30",
        "1::2",
        "1:60",  # seconds out of range
        "1:00:60",  # seconds out of range
        "1:60:00",  # minutes out of range
        "1-24",  # hours after a day out of range
        "1-00:60",  # minutes out of range
        "1-00:00:60",  # seconds out of range
        "1.5",  # decimals
        "+5",  # sign
        "1_000",  # int() would accept this
        "\u0661\u0662",  # non-ASCII digits (Arabic-Indic one, two)
        "infinity",
        "1 : 30",  # inner whitespace
    ],
)
def test_parse_time_limit_rejects(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_time_limit(text)
    message = str(info.value)
    assert message == f"invalid time limit {text!r}: {TIME_HINT}"
    assert "\n" not in message


def test_parse_time_limit_error_example_from_contract() -> None:
    with pytest.raises(ValueError, match=re.escape(f"invalid time limit '1:x': {TIME_HINT}")):
        parse_time_limit("1:x")


@given(
    days=st.integers(0, 10_000),
    hours=st.integers(0, 23),
    minutes=st.integers(0, 59),
    seconds=st.integers(0, 59),
)
def test_parse_time_limit_day_forms(days: int, hours: int, minutes: int, seconds: int) -> None:
    assert parse_time_limit(f"{days}-{hours}") == days * 86400 + hours * 3600
    assert parse_time_limit(f"{days}-{hours:02d}:{minutes:02d}") == (
        days * 86400 + hours * 3600 + minutes * 60
    )
    assert parse_time_limit(f"{days}-{hours}:{minutes}:{seconds}") == (
        days * 86400 + hours * 3600 + minutes * 60 + seconds
    )


@given(hours=st.integers(0, 10**6), minutes=st.integers(0, 59), seconds=st.integers(0, 59))
def test_parse_time_limit_clock_forms(hours: int, minutes: int, seconds: int) -> None:
    assert parse_time_limit(str(minutes + 60 * hours)) == (minutes + 60 * hours) * 60
    assert parse_time_limit(f"{hours * 60 + minutes}:{seconds:02d}") == (
        hours * 3600 + minutes * 60 + seconds
    )
    assert parse_time_limit(f"{hours}:{minutes:02d}:{seconds:02d}") == (
        hours * 3600 + minutes * 60 + seconds
    )


# --------------------------------------------------------------------------- format_duration


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0:00"),
        (5, "0:05"),
        (59, "0:59"),
        (60, "1:00"),
        (754, "12:34"),
        (3599, "59:59"),
        (3600, "1:00:00"),
        (3723, "1:02:03"),
        (86399, "23:59:59"),
        (86400, "1-00:00:00"),
        (2 * 86400 + 3 * 3600 + 4 * 60 + 5, "2-03:04:05"),
        (123 * 86400 + 45, "123-00:00:45"),
    ],
)
def test_format_duration(seconds: int, expected: str) -> None:
    assert format_duration(seconds) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(-1, "0:00"), (-86400.5, "0:00"), (0.999, "0:00"), (59.9, "0:59"), (3600.7, "1:00:00")],
)
def test_format_duration_clamps_and_truncates(seconds: float, expected: str) -> None:
    assert format_duration(seconds) == expected


@pytest.mark.parametrize("seconds", [float("nan"), float("inf"), float("-inf")])
def test_format_duration_rejects_non_finite(seconds: float) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        format_duration(seconds)


@given(st.integers(min_value=0, max_value=10**9))
def test_format_duration_round_trips_through_parse(seconds: int) -> None:
    assert parse_time_limit(format_duration(seconds)) == seconds


@given(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False))
def test_format_duration_of_float_is_truncated_whole_seconds(seconds: float) -> None:
    assert parse_time_limit(format_duration(seconds)) == max(0, int(seconds))


# --------------------------------------------------------------------------- parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("0G", 0),
        ("512", 512 * MIB),  # bare number: megabytes by default
        ("1.5", 3 * MIB // 2),
        ("100K", 100 * KIB),
        ("100k", 100 * KIB),
        ("100KB", 100 * KIB),
        ("100KiB", 100 * KIB),
        ("100kib", 100 * KIB),
        ("4M", 4 * MIB),
        ("4mb", 4 * MIB),
        ("80G", 80 * GIB),
        ("80GB", 80 * GIB),
        ("80GiB", 80 * GIB),
        ("1.5G", 3 * GIB // 2),
        ("2T", 2 * TIB),
        ("1.5TiB", 3 * TIB // 2),
        (".5G", GIB // 2),
        ("1.G", GIB),
        ("512B", 512),
        ("512b", 512),
        ("0.1K", 102),  # 102.4 bytes, truncated
        ("1.0000001B", 1),
        ("  16G\n", 16 * GIB),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("default_unit", "expected"),
    [("B", 10), ("K", 10 * KIB), ("kb", 10 * KIB), ("M", 10 * MIB), ("GiB", 10 * GIB)],
)
def test_parse_size_default_unit(default_unit: str, expected: int) -> None:
    assert parse_size("10", default_unit) == expected
    assert parse_size("10K", default_unit) == 10 * KIB  # an explicit suffix wins


@pytest.mark.parametrize("default_unit", ["X", "KK", "P", "BiB", "1"])
def test_parse_size_rejects_bad_default_unit(default_unit: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"invalid default unit {default_unit!r}")):
        parse_size("10", default_unit)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "  ",
        "-1",
        "-1G",
        "G",
        "abc",
        "1X",
        "1P",  # petabytes are not accepted
        "1GG",
        "1GBB",
        "1iB",
        "1BiB",
        "1 G",
        "1.5.5G",
        ".",
        "1e3",
        "inf",
        "nan",
        "1_000",
        "+1G",
        "\u0661G",  # non-ASCII digit
        "1\u212a",  # KELVIN SIGN, which case-folds to k
    ],
)
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_size(text)
    message = str(info.value)
    assert message.startswith(f"invalid size {text!r}: use a number")
    assert "K, M, G or T" in message
    assert "\n" not in message


# --------------------------------------------------------------------------- format_size


@pytest.mark.parametrize(
    ("num_bytes", "expected"),
    [
        (0, "0"),
        (1, "1B"),
        (512, "512B"),
        (1023, "1023B"),
        (1024, "1K"),
        (1536, "1.5K"),
        (1075, "1K"),  # 1.0498K rounds down
        (1076, "1.1K"),  # 1.0508K rounds up
        (1126, "1.1K"),
        (MIB - 1, "1M"),  # would be "1024K": moves up a unit
        (MIB, "1M"),
        (80 * GIB, "80G"),
        (3 * GIB // 2, "1.5G"),
        (3 * TIB // 2, "1.5T"),
        (2048 * TIB, "2048T"),  # no unit above T
    ],
)
def test_format_size(num_bytes: int, expected: str) -> None:
    assert format_size(num_bytes) == expected


def test_format_size_rejects_negative() -> None:
    with pytest.raises(ValueError, match=re.escape("invalid size -1: must not be negative")):
        format_size(-1)


@given(st.integers(min_value=0, max_value=2**60))
def test_format_size_parses_back_within_rounding(num_bytes: int) -> None:
    text = format_size(num_bytes)
    assert re.fullmatch(r"0|[1-9][0-9]*(\.[1-9])?[BKMGT]", text)
    back = parse_size(text)
    if num_bytes < KIB:
        assert back == num_bytes
    else:
        # One decimal of a unit the value is at least one of: within 5 %.
        assert abs(back - num_bytes) <= num_bytes * 0.05 + 1


@given(st.integers(min_value=0, max_value=1023), st.sampled_from(["B", "K", "M", "G", "T"]))
def test_format_size_exact_for_whole_units(count: int, unit: str) -> None:
    num_bytes = count * 1024 ** "BKMGT".index(unit)
    assert parse_size(format_size(num_bytes)) == num_bytes


def test_parse_begin_time() -> None:
    import datetime as dt

    from mgpu_core.units import parse_begin_time

    now = dt.datetime(2026, 11, 22, 10, 30, 0).timestamp()
    assert parse_begin_time("now", now) == now
    assert parse_begin_time("now+90", now) == now + 90
    assert parse_begin_time("now+2hours", now) == now + 7200
    assert parse_begin_time("now+1day", now) == now + 86_400
    assert parse_begin_time("16:00", now) == dt.datetime(2026, 11, 22, 16, 0).timestamp()
    assert parse_begin_time("09:15:30", now) == dt.datetime(2026, 11, 23, 9, 15, 30).timestamp()
    assert parse_begin_time("noon", now) == dt.datetime(2026, 11, 22, 12, 0).timestamp()
    assert parse_begin_time("midnight", now) == dt.datetime(2026, 11, 23, 0, 0).timestamp()
    assert parse_begin_time("tomorrow", now) == dt.datetime(2026, 11, 23).timestamp()
    assert (
        parse_begin_time("2026-12-24T18:30", now) == dt.datetime(2026, 12, 24, 18, 30).timestamp()
    )
    for bad in ("now-5", "now+5fortnights", "25:00", "soon", "2026-13-01"):
        with pytest.raises(ValueError, match="invalid begin time"):
            parse_begin_time(bad, now)
