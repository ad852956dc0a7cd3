"""Slurm's time, exit code and memory renderings (mgpu_core.slurm.timefmt).

The expected strings follow the C they mirror: squeue/print.c and sinfo/print.c
``_print_secs``; common/parse_time.c ``secs2time_str`` and ``slurm_make_time_str``;
common/slurm_time.c ``slurm_ctime2``; sacct/print.c PRINT_EXITCODE; common/
slurm_protocol_api.c ``convert_num_unit2`` (all as of Slurm 23.02-24.05).
"""

from __future__ import annotations

import pytest

from mgpu_core.slurm import timefmt as tf

T0 = 1_700_000_000  # 2023-11-14T22:13:20 UTC (conftest pins TZ=UTC)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0:00"),
        (59, "0:59"),
        (61, "1:01"),
        (3599, "59:59"),
        (3600, "1:00:00"),  # "%ld:%2.2ld:%2.2ld": no padding on the hours
        (86399, "23:59:59"),
        (86400, "1-00:00:00"),
        (90061, "1-01:01:01"),
        (61.9, "1:01"),  # time_t: whole seconds
        (-1, "INVALID"),
        (tf.YEAR_SECONDS + 1, "INVALID"),
    ],
)
def test_clock_is_squeues_print_secs(seconds: float, expected: str) -> None:
    assert tf.clock(seconds) == expected


def test_clock_without_squeues_check_prints_long_times() -> None:
    # sinfo's _print_secs has no one-year check.
    assert tf.clock(400 * 86400, check=False) == "400-00:00:00"


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "00:00:00"),
        (5, "00:00:05"),
        (3661, "01:01:01"),
        (2 * 86400 + 5, "2-00:00:05"),
        (-1, "INVALID"),
    ],
)
def test_duration_is_secs2time_str(seconds: int, expected: str) -> None:
    assert tf.duration(seconds) == expected


def test_limits() -> None:
    assert tf.limit(0) == "UNLIMITED"
    assert tf.limit(3600) == "01:00:00"
    assert tf.limit(90) == "00:01:30"
    assert tf.limit_minutes(0) == "UNLIMITED"
    assert tf.limit_minutes(90) == "2"  # time_str2mins rounds up
    assert tf.limit_minutes(3600) == "60"


def test_timestamp_is_iso_local_time_or_unknown() -> None:
    assert tf.timestamp(T0) == "2023-11-14T22:13:20"
    assert tf.timestamp(T0 + 0.9) == "2023-11-14T22:13:20"
    assert tf.timestamp(0) == "Unknown"
    assert tf.timestamp_or_na(0) == "N/A"
    assert tf.timestamp_or_na(T0) == "2023-11-14T22:13:20"


def test_timestamp_honours_slurm_time_format(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_TIME_FORMAT", "%d.%m. %H:%M")
    assert tf.timestamp(T0) == "14.11. 22:13"
    monkeypatch.setenv("SLURM_TIME_FORMAT", "standard")
    assert tf.timestamp(T0) == "2023-11-14T22:13:20"
    monkeypatch.setenv("SLURM_TIME_FORMAT", "relative")  # not supported: the standard form
    assert tf.timestamp(T0) == "2023-11-14T22:13:20"


def test_date_line_is_ctime_without_newline() -> None:
    assert tf.date_line(T0) == "Tue Nov 14 22:13:20 2023"


@pytest.mark.parametrize(
    ("code", "signal", "sacct", "expected"),
    [
        (None, None, False, "0:0"),
        (0, None, False, "0:0"),
        (1, None, False, "1:0"),
        (None, 9, False, "0:9"),
        (1, 15, False, "0:15"),  # one wait status: signalled means no exit code
        (137, None, False, "137:0"),
        (137, None, True, "9:0"),  # sacct's "if (tmp_int >= 128) tmp_int -= 128"
        (2, None, True, "2:0"),
    ],
)
def test_exit_code(code: int | None, signal: int | None, sacct: bool, expected: str) -> None:
    assert tf.exit_code(code, signal, sacct=sacct) == expected


@pytest.mark.parametrize(
    ("num", "unit", "expected"),
    [
        (16384, tf.UNIT_MEGA, "16G"),
        (4000, tf.UNIT_MEGA, "4000M"),
        (1536, tf.UNIT_MEGA, "1.50G"),  # halves are exact: 1.5 printed "%.2f"
        (1000, tf.UNIT_MEGA, "1000M"),
        (1024 * 1024, tf.UNIT_MEGA, "1T"),
        (0, tf.UNIT_MEGA, "0"),
        (32, tf.UNIT_NONE, "32"),
        (1024, tf.UNIT_NONE, "1K"),
    ],
)
def test_convert_num_unit_exact(num: int, unit: int, expected: str) -> None:
    assert tf.convert_num_unit(num, unit) == expected


def test_memory_from_bytes() -> None:
    assert tf.memory(16 << 30) == "16G"
    assert tf.memory(4000 << 20) == "4000M"
    assert tf.memory(1) == "1M"  # whole megabytes, rounded up
    assert tf.memory(0) == "0"
    assert tf.megabytes(3 << 20) == 3
