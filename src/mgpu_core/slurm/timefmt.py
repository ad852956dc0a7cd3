"""Slurm's renderings of durations, timestamps, exit codes and memory sizes.

Each function names the Slurm source it follows (Slurm 23.02-24.05; the code of these is the
same in all three). Times are unix seconds (floats are truncated, as Slurm's ``time_t`` is
whole seconds); a time of 0 means "unknown", as in the rows the master sends.
"""

from __future__ import annotations

import time

from mgpu_core.procenv import getenv

YEAR_SECONDS = 365 * 24 * 3600  # squeue's print.c: longer times print as INVALID
_UNITS = ("", "K", "M", "G", "T", "P")  # slurm_protocol_api.c convert_num_unit2: "\0KMGTP?"
UNIT_NONE = 0
UNIT_KILO = 1
UNIT_MEGA = 2
_DEFAULT_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"  # parse_time.c: "%FT%T"


def _dhms(seconds: int) -> tuple[int, int, int, int]:
    """Days, hours, minutes, seconds, each computed the way C's ``/`` and ``%`` do (the
    callers only pass non-negative values)."""
    return seconds // 86400, seconds // 3600 % 24, seconds // 60 % 60, seconds % 60


def clock(seconds: float, *, check: bool = True) -> str:
    """squeue's and sinfo's ``_print_secs``: ``M:SS``, ``H:MM:SS`` or ``D-HH:MM:SS``.

    squeue prints ``INVALID`` for a negative time or one over a year (``check``); sinfo has
    no such check (``check=False``). Used by squeue %M %l %L and sinfo %l %L.
    """
    secs = int(seconds)
    if check and (secs < 0 or secs > YEAR_SECONDS):
        return "INVALID"
    days, hours, minutes, secs = _dhms(abs(secs))
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def duration(seconds: float) -> str:
    """parse_time.c ``secs2time_str``: ``HH:MM:SS`` or ``D-HH:MM:SS``; ``INVALID`` if negative.

    sacct's Elapsed, CPUTime and Timelimit, scontrol's RunTime and TimeLimit use it."""
    secs = int(seconds)
    if secs < 0:
        return "INVALID"
    days, hours, minutes, secs = _dhms(secs)
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


def limit(time_limit_s: float) -> str:
    """A time limit as sacct and scontrol print it: ``UNLIMITED`` for 0 (mgpu's "none"),
    else :func:`duration` (mgpu keeps seconds, so a limit of 90 s shows as ``00:01:30``
    where Slurm, counting minutes, could not have it)."""
    return "UNLIMITED" if not time_limit_s else duration(time_limit_s)


def limit_minutes(time_limit_s: float) -> str:
    """sacct's TimelimitRaw: the limit in minutes (rounded up, as Slurm's ``time_str2mins``
    rounds a ``--time`` given in seconds), or ``UNLIMITED``."""
    if not time_limit_s:
        return "UNLIMITED"
    return str(-(-int(time_limit_s) // 60))


def timestamp(t: float) -> str:
    """parse_time.c ``slurm_make_time_str``: local time ``2026-11-29T12:34:56``, or
    ``Unknown`` for 0.

    Like Slurm it honours ``SLURM_TIME_FORMAT``: unset or ``standard`` gives the ISO form; a
    ``strftime`` string containing ``%`` is used as is; ``relative`` (Slurm's "Ystday 20:13"
    style) is not supported here and gives the ISO form.
    """
    if not t:
        return "Unknown"
    fmt = getenv("SLURM_TIME_FORMAT", "") or ""
    if "%" not in fmt:
        fmt = _DEFAULT_TIME_FORMAT
    return time.strftime(fmt, time.localtime(int(t)))


def timestamp_or_na(t: float) -> str:
    """squeue's ``_print_time``: :func:`timestamp`, but ``N/A`` for 0 (%S %V %e ...)."""
    return timestamp(t) if t else "N/A"


def date_line(now: float) -> str:
    """slurm_time.c ``print_date``: the line ``squeue -l`` and ``sinfo -l`` print first,
    e.g. ``Thu Nov 29 12:34:56 2026`` (``%a %b %d %T %Y``, local time)."""
    return time.strftime("%a %b %d %H:%M:%S %Y", time.localtime(int(now)))


def exit_code(code: int | None, signal: int | None, *, sacct: bool = False) -> str:
    """``EXIT:SIGNAL`` as squeue, sacct and scontrol print a wait status.

    Slurm decodes one wait status, so a signal means the exit part is 0 (``0:9``); nothing
    known prints ``0:0``. sacct alone (print.c PRINT_EXITCODE) takes 128 off an exit code of
    128 or more (a shell's "killed by signal N" code): pass ``sacct=True`` for that.
    """
    if signal:
        return f"0:{signal}"
    status = code or 0
    if sacct and status >= 128:
        status -= 128
    return f"{status}:0"


def convert_num_unit(num: float, unit: int = UNIT_NONE) -> str:
    """slurm_protocol_api.c ``convert_num_unit2`` with ``CONVERT_NUM_UNIT_EXACT`` (the
    default of squeue, sacct and sinfo): divide by 1024 while the value stays whole or a
    half, then print a whole number or two decimals with the unit letter.

    ``16384`` MB gives ``16G``, ``1536`` MB ``1.50G``, ``4000`` MB ``4000M``; 0 gives ``0``.
    """
    if int(num) == 0:
        return "0"
    while num >= 1024 and int(num) % 512 == 0:
        num /= 1024
        unit += 1
    suffix = _UNITS[unit] if unit < len(_UNITS) else "?"
    whole = int(num)
    return f"{whole}{suffix}" if whole == num else f"{num:.2f}{suffix}"


def megabytes(mem_bytes: float) -> int:
    """Bytes as Slurm's whole megabytes (MiB), rounded up (Slurm stores memory in MB)."""
    return -(-int(mem_bytes) // 1048576)


def memory(mem_bytes: float) -> str:
    """A memory size as Slurm prints one held in MB: ``16G``, ``4000M``, ``0``."""
    return convert_num_unit(megabytes(mem_bytes), UNIT_MEGA)
