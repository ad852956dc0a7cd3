"""Parsing and formatting of Slurm-style time limits, durations and memory sizes.

Everything here is pure: no I/O, no global state, stdlib only.

* :func:`parse_time_limit` reads ``--time`` values and returns seconds (0 = no limit).
* :func:`format_duration` writes seconds the way squeue's TIME column does.
* :func:`parse_size` reads ``--mem`` values and returns bytes (binary units).
* :func:`format_size` writes bytes as a compact human size (binary units).
"""

from __future__ import annotations

import itertools
import math

__all__ = [
    "format_duration",
    "format_size",
    "parse_begin_time",
    "parse_duration_s",
    "parse_size",
    "parse_time_limit",
]

_TIME_FORMATS = "use MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"
_NO_LIMIT_WORDS = frozenset({"infinite", "unlimited"})

_SIZE_FORMS = (
    "use a number (decimals allowed) with an optional K, M, G or T suffix, "
    "optionally followed by B or iB (binary units), e.g. 512M, 1.5G or 80GiB"
)
# Patterns, not compiled ones: re (with enum and functools) is imported by the parsers that use
# them, not by every client that formats a duration (re caches what it compiles).
_SIZE_PATTERN = r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?P<unit>[A-Za-z]*)"
_UNIT_PATTERN = r"(?i:(?P<prefix>[KMGT])(?:I?B)?|B)?"
_SIZE_SUFFIXES = ("B", "K", "M", "G", "T")

_MINUTE = 60
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR


# --------------------------------------------------------------------------- time limits


def _time_error(text: str) -> ValueError:
    return ValueError(f"invalid time limit {text!r}: {_TIME_FORMATS}")


def _field(value: str, text: str, maximum: int | None = None) -> int:
    """Return ``value`` as an int; it must be ASCII digits and at most ``maximum``."""
    if not (value.isascii() and value.isdigit()):
        raise _time_error(text)
    try:
        number = int(value)
    except ValueError:  # more digits than int() accepts
        raise _time_error(text) from None
    if maximum is not None and number > maximum:
        raise _time_error(text)
    return number


def _parse_day_form(day_part: str, rest: str, text: str) -> int:
    """Seconds for ``D-HH``, ``D-HH:MM`` or ``D-HH:MM:SS`` (already split at the dash)."""
    fields = rest.split(":")
    if len(fields) > 3:
        raise _time_error(text)
    days = _field(day_part, text)
    hours = _field(fields[0], text, 23)
    minutes = _field(fields[1], text, 59) if len(fields) > 1 else 0
    seconds = _field(fields[2], text, 59) if len(fields) > 2 else 0
    return days * _DAY + hours * _HOUR + minutes * _MINUTE + seconds


def _parse_clock_form(body: str, text: str) -> int:
    """Seconds for ``MM``, ``MM:SS`` or ``HH:MM:SS`` (the leading field is unbounded)."""
    fields = body.split(":")
    if len(fields) == 1:
        return _field(fields[0], text) * _MINUTE
    if len(fields) == 2:
        return _field(fields[0], text) * _MINUTE + _field(fields[1], text, 59)
    if len(fields) == 3:
        hours = _field(fields[0], text)
        return hours * _HOUR + _field(fields[1], text, 59) * _MINUTE + _field(fields[2], text, 59)
    raise _time_error(text)


def parse_time_limit(text: str) -> int:
    """Parse a Slurm ``--time`` value and return it in seconds.

    Accepted forms (as in sbatch(1)): ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``,
    ``D-HH:MM`` and ``D-HH:MM:SS``. A bare number is minutes. Every field is
    one or more ASCII digits. The leading field is unbounded; minutes and seconds
    that are not the leading field must be 0..59, and hours after a day count
    must be 0..23. Surrounding whitespace is ignored.

    ``"0"`` (or any form adding up to zero) means no limit and returns 0; so do
    ``"infinite"`` and ``"unlimited"`` in any letter case.

    Raises:
        ValueError: for anything else (empty, negative, letters, too many fields,
            out-of-range fields); the one-line message names the text and lists
            the accepted forms.
    """
    body = text.strip()
    if body.lower() in _NO_LIMIT_WORDS:
        return 0
    if "-" in body:
        day_part, _, rest = body.partition("-")
        return _parse_day_form(day_part, rest, text)
    return _parse_clock_form(body, text)


def format_duration(seconds: float) -> str:
    """Format a duration the way squeue's TIME column does.

    ``M:SS`` below one hour (``"0:05"``, ``"12:34"``), ``H:MM:SS`` below one day
    (``"1:02:03"``) and ``D-HH:MM:SS`` from one day on (``"2-03:04:05"``).
    Negative values are clamped to 0 and fractions of a second are truncated.
    The result always parses back with :func:`parse_time_limit` to the same
    whole number of seconds.

    Raises:
        ValueError: if ``seconds`` is NaN or infinite.
    """
    if not math.isfinite(seconds):
        raise ValueError(f"invalid duration {seconds!r}: must be a finite number of seconds")
    total = max(0, int(seconds))
    days, rem = divmod(total, _DAY)
    hours, rem = divmod(rem, _HOUR)
    minutes, secs = divmod(rem, _MINUTE)
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


_DURATION_PATTERN = r"(?a:(?:[0-9]+[dhms])+|[0-9]+)"
_DURATION_PART_PATTERN = r"(?a:([0-9]+)([dhms]))"
_DURATION_UNITS = {"d": _DAY, "h": _HOUR, "m": _MINUTE, "s": 1}


def parse_duration_s(text: str) -> int:
    """Parse a duration such as ``90s``, ``30m``, ``1h``, ``1h30m`` or ``7d`` (a bare number is
    seconds) and return it in seconds: how long something lasts (a join token's ``--ttl``),
    where :func:`parse_time_limit`'s Slurm forms would read a bare number as minutes.

    Raises:
        ValueError: for anything else; the one-line message names the text and the forms.
    """
    import re

    body = text.strip().lower()
    if not re.fullmatch(_DURATION_PATTERN, body):
        raise ValueError(f"invalid duration {text!r}: use e.g. 90s, 30m, 1h, 1h30m or 7d")
    if body.isdigit():
        return int(body)
    return sum(int(n) * _DURATION_UNITS[u] for n, u in re.findall(_DURATION_PART_PATTERN, body))


# --------------------------------------------------------------------------- sizes


def _unit_power(unit: str) -> int | None:
    """Power of 1024 for a unit such as ``""``, ``"B"``, ``"g"``, ``"GB"``, ``"GiB"``."""
    import re

    match = re.fullmatch(_UNIT_PATTERN, unit, re.ASCII)
    if match is None:
        return None
    prefix = match.group("prefix")
    return 0 if prefix is None else "KMGT".index(prefix.upper()) + 1


def parse_size(text: str, default_unit: str = "M") -> int:
    """Parse a Slurm ``--mem`` size and return it in bytes.

    The text is a non-negative decimal number (``"512"``, ``"1.5"``, ``".5"``)
    followed, with no space, by an optional unit: ``K``, ``M``, ``G`` or ``T``
    (any case), each optionally followed by ``B`` or ``iB``, or a plain ``B``
    for bytes. All units are binary (1K = 1024). A bare number is in
    ``default_unit`` (Slurm's default, megabytes). Surrounding whitespace is
    ignored. Fractional byte counts are truncated toward zero; ``"0"`` is 0.

    Raises:
        ValueError: for an empty, negative or malformed size (the one-line
            message names the text and shows the accepted forms), or for an
            unknown ``default_unit``.
    """
    default_power = _unit_power(default_unit)
    if default_power is None:
        raise ValueError(f"invalid default unit {default_unit!r}: use B, K, M, G or T")
    import re

    match = re.fullmatch(_SIZE_PATTERN, text.strip())
    if match is None:
        raise ValueError(f"invalid size {text!r}: {_SIZE_FORMS}")
    unit = match.group("unit")
    power = _unit_power(unit) if unit else default_power
    if power is None:
        raise ValueError(f"invalid size {text!r}: {_SIZE_FORMS}")
    from fractions import Fraction  # ~1 ms of a client's start-up, only for --mem

    try:
        number = Fraction(match.group("number"))
    except ValueError:  # more digits than int() accepts
        raise ValueError(f"invalid size {text!r}: {_SIZE_FORMS}") from None
    return int(number * 1024**power)


def format_size(num_bytes: int) -> str:
    """Format a byte count compactly with binary units.

    0 is ``"0"``; below 1 KiB the exact count with ``B`` (``"512B"``);
    otherwise the largest of K, M, G, T that keeps the value at least 1,
    rounded half up to one decimal with a trailing ``.0`` dropped
    (``"1.5K"``, ``"80G"``, ``"1.5T"``). A value that rounds up to 1024 of a
    unit moves to the next unit (``2**20 - 1`` is ``"1M"``). Values beyond
    1024T stay in T. Every result is accepted by :func:`parse_size`.

    Raises:
        ValueError: if ``num_bytes`` is negative.
    """
    if num_bytes < 0:
        raise ValueError(f"invalid size {num_bytes!r}: must not be negative")
    if num_bytes == 0:
        return "0"
    if num_bytes < 1024:
        return f"{num_bytes}B"
    power = 1
    while power < len(_SIZE_SUFFIXES) - 1 and num_bytes >= 1024 ** (power + 1):
        power += 1
    tenths = _round_tenths(num_bytes, 1024**power)
    if tenths >= 10240 and power < len(_SIZE_SUFFIXES) - 1:
        power += 1
        tenths = _round_tenths(num_bytes, 1024**power)
    whole, frac = divmod(tenths, 10)
    number = f"{whole}" if frac == 0 else f"{whole}.{frac}"
    return number + _SIZE_SUFFIXES[power]


def _round_tenths(num_bytes: int, unit: int) -> int:
    """``num_bytes / unit`` in tenths, rounded half up, in exact integer arithmetic."""
    return (num_bytes * 10 * 2 + unit) // (unit * 2)


_BEGIN_UNITS = {
    "": 1,
    "s": 1,
    "sec": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86_400,
    "day": 86_400,
    "days": 86_400,
}
_BEGIN_WORDS = {"midnight": (0, 0), "noon": (12, 0), "teatime": (16, 0)}
_MAX_BEGIN_DELAY_S = 100 * 365 * _DAY


def parse_begin_time(text: str, now: float) -> float:
    """sbatch's ``--begin``: ``now+60`` (seconds), ``now+2hours``, ``16:00`` (the next such
    time), ``2026-12-24``, ``2026-12-24T18:30[:00]``, ``today``, ``tomorrow``, ``midnight``,
    ``noon``, ``teatime``. Returns a Unix time; ``ValueError`` with a one-line reason."""
    import datetime as dt  # only sbatch needs it

    raw = text.strip().lower()
    if raw.startswith("now"):
        rest = raw[3:]
        if not rest:
            return now
        number = rest.lstrip("+")
        digits = "".join(itertools.takewhile(lambda c: c.isascii() and c.isdigit(), number))
        unit = number[len(digits) :]
        if not rest.startswith("+") or not digits or unit not in _BEGIN_UNITS:
            raise ValueError(f"invalid begin time '{text}': use now+N[seconds|minutes|hours|days]")
        # (the digits bounded first: int() refuses 4,300 of them, float() overflows)
        if len(digits) > 12 or int(digits) * _BEGIN_UNITS[unit] > _MAX_BEGIN_DELAY_S:
            raise ValueError(f"invalid begin time '{text}': more than 100 years from now")
        return now + int(digits) * _BEGIN_UNITS[unit]
    local_now = dt.datetime.fromtimestamp(now)
    if raw in ("today", "tomorrow"):
        day = local_now.date() + dt.timedelta(days=raw == "tomorrow")
        return dt.datetime.combine(day, dt.time()).timestamp()
    if raw in _BEGIN_WORDS or (raw.count(":") in (1, 2) and "-" not in raw):
        hour, minute, second = (*_BEGIN_WORDS[raw], 0) if raw in _BEGIN_WORDS else _clock(text)
        when = local_now.replace(hour=hour, minute=minute, second=second, microsecond=0)
        if when.timestamp() <= now:
            when += dt.timedelta(days=1)
        return when.timestamp()
    try:
        return dt.datetime.fromisoformat(raw.upper()).timestamp()
    except ValueError:
        raise ValueError(
            f"invalid begin time '{text}': use now+N[unit], HH:MM[:SS], YYYY-MM-DD[THH:MM[:SS]]"
        ) from None


def _clock(text: str) -> tuple[int, int, int]:
    parts = text.strip().split(":")
    if not all(p.isascii() and p.isdigit() for p in parts):
        raise ValueError(f"invalid begin time '{text}': use HH:MM[:SS]")
    hour, minute, second = (int(p) for p in [*parts, "0"][:3])
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"invalid begin time '{text}': use HH:MM[:SS]")
    return hour, minute, second


def parse_port_range(text: str) -> tuple[int, int]:
    """``LO-HI`` (inclusive, 1..65535, LO <= HI): a node's ``--port-range``; ValueError with a
    one-line reason otherwise."""
    lo_text, dash, hi_text = text.strip().partition("-")
    lo, hi = (_port(lo_text), _port(hi_text)) if dash else (0, 0)
    if not (lo and hi and lo <= hi):
        raise ValueError(f"invalid port range '{text}': use LO-HI, e.g. 20000-20999")
    return lo, hi


def _port(text: str) -> int:
    text = text.strip()
    value = int(text) if text.isascii() and text.isdigit() and len(text) <= 5 else 0
    return value if 1 <= value <= 65_535 else 0
