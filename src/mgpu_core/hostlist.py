"""Slurm-style hostlist expressions: ``"node[1-3,5],gpu[01-02]"``.

Pure functions, stdlib only:

* :func:`expand_hostlist` turns an expression into the list of host names.
* :func:`compress_hostlist` turns host names back into a compact expression.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass

__all__ = ["MAX_HOSTS", "compress_hostlist", "expand_hostlist"]

MAX_HOSTS = 100_000
"""The most names one expression may expand to (counted before duplicates are removed)."""

_RANGE_RE = re.compile(r"(?P<lo>[0-9]+)(?:-(?P<hi>[0-9]+))?")
_SUFFIX_RE = re.compile(r"(?P<prefix>.*?)(?P<digits>[0-9]+)")
_FORBIDDEN_RE = re.compile(r"[\s,\[\]]")


@dataclass(frozen=True)
class _Range:
    """An inclusive numeric range; numbers are zero-padded to ``width`` digits."""

    lo: int
    hi: int
    width: int

    @property
    def count(self) -> int:
        """How many numbers the range holds (may exceed ``sys.maxsize``)."""
        return self.hi - self.lo + 1

    def names(self) -> list[str]:
        return [f"{n:0{self.width}d}" for n in range(self.lo, self.hi + 1)]


# A parsed item: literal text segments and bracket segments (a tuple of ranges).
_Segment = str | tuple[_Range, ...]


def _error(expr: str, reason: str) -> ValueError:
    return ValueError(f"invalid hostlist {expr!r}: {reason}")


def _split_items(expr: str) -> list[str]:
    """Split at commas outside brackets, checking that brackets balance and do not nest."""
    items: list[str] = []
    depth = 0
    start = 0
    for i, char in enumerate(expr):
        if char == "[":
            if depth:
                raise _error(expr, "nested '['")
            depth = 1
        elif char == "]":
            if not depth:
                raise _error(expr, "unbalanced ']'")
            depth = 0
        elif char == "," and not depth:
            items.append(expr[start:i])
            start = i + 1
    if depth:
        raise _error(expr, "unbalanced '['")
    items.append(expr[start:])
    return items


def _parse_ranges(body: str, expr: str) -> tuple[_Range, ...]:
    """Parse the inside of one bracket, e.g. ``"1-3,5"`` or ``"08-10"``."""
    ranges: list[_Range] = []
    for part in body.split(","):
        match = _RANGE_RE.fullmatch(part)
        if match is None:
            raise _error(expr, f"bad range {part!r}: use N or N-M with digits")
        lo_text, hi_text = match.group("lo"), match.group("hi")
        try:
            lo = int(lo_text)
            hi = lo if hi_text is None else int(hi_text)
        except ValueError:  # more digits than int() accepts
            raise _error(expr, f"bad range {part!r}: number too long") from None
        if hi < lo:
            raise _error(expr, f"reversed range {part!r}")
        ranges.append(_Range(lo, hi, len(lo_text)))
    return tuple(ranges)


def _parse_item(item: str, expr: str) -> list[_Segment]:
    """Split one item into literal text and bracket segments (brackets already balanced)."""
    if re.search(r"\s", item):
        raise _error(expr, f"whitespace in {item!r}")
    segments: list[_Segment] = []
    rest = item
    while "[" in rest:
        before, _, after = rest.partition("[")
        body, _, rest = after.partition("]")
        if before:
            segments.append(before)
        segments.append(_parse_ranges(body, expr))
    if rest:
        segments.append(rest)
    return segments


def _count(segments: list[_Segment]) -> int:
    """How many names an item expands to, without expanding it."""
    return math.prod(sum(r.count for r in seg) for seg in segments if not isinstance(seg, str))


def _expand_item(segments: list[_Segment]) -> list[str]:
    choices: list[list[str]] = []
    for seg in segments:
        if isinstance(seg, str):
            choices.append([seg])
        else:
            choices.append([name for r in seg for name in r.names()])
    return ["".join(parts) for parts in itertools.product(*choices)]


def expand_hostlist(expr: str) -> list[str]:
    """Expand a Slurm hostlist expression into host names.

    The expression is a comma-separated list of items; commas inside brackets do
    not split items. An item is a name with zero or more bracket groups, each a
    comma-separated list of ``N`` or ``N-M`` (ASCII digits, ``N <= M``). Numbers
    are zero-padded to the length of the range's start (``"gpu[08-10]"`` gives
    ``gpu08, gpu09, gpu10``; ``"n[9-10]"`` gives ``n9, n10``). Several groups
    expand as a product, leftmost slowest: ``"a[1-2]b[1-2]"`` gives
    ``a1b1, a1b2, a2b1, a2b2``. Whitespace around items is ignored; empty items
    are skipped. Duplicates are removed, keeping the first occurrence's place.

    Raises:
        ValueError: with a one-line message naming the expression, when the
            result is empty, brackets are unbalanced or nested, a range is
            reversed or not digits, an item contains whitespace, or the
            expansion would exceed :data:`MAX_HOSTS` names (before duplicates
            are removed; checked before any name is built).
    """
    parsed: list[list[_Segment]] = []
    total = 0
    for item in _split_items(expr):
        stripped = item.strip()
        if not stripped:
            continue
        segments = _parse_item(stripped, expr)
        total += _count(segments)
        if total > MAX_HOSTS:
            raise _error(expr, f"expands to more than {MAX_HOSTS} names")
        parsed.append(segments)
    if not parsed:
        raise _error(expr, "no host names")
    names = [name for segments in parsed for name in _expand_item(segments)]
    return list(dict.fromkeys(names))


def _runs(digit_strings: list[str]) -> list[str]:
    """Compress distinct numeric suffixes into ``N`` / ``N-M`` range texts.

    Suffixes are taken in numeric order (shorter first on ties). A run grows
    while the next number is one more and prints, padded to the width of the
    run's start, exactly as given; so the run expands back to the same strings.
    """
    ordered = sorted(digit_strings, key=lambda s: (int(s), len(s)))
    runs: list[str] = []
    start = last = ordered[0]
    for digits in ordered[1:]:
        value = int(digits)
        if value == int(last) + 1 and f"{value:0{len(start)}d}" == digits:
            last = digits
            continue
        runs.append(start if start == last else f"{start}-{last}")
        start = last = digits
    runs.append(start if start == last else f"{start}-{last}")
    return runs


def compress_hostlist(names: list[str]) -> str:
    """Compress host names into a hostlist expression, for display.

    Names ending in digits are grouped by the text before those digits; a
    group of one is written as the plain name, a larger group as
    ``prefix[runs]`` (``["node1", "node2", "node3", "node5"]`` gives
    ``"node[1-3,5]"``). Zero padding is preserved: ``gpu08..gpu10`` gives
    ``"gpu[08-10]"``. Names without a numeric suffix appear as is. Items are
    sorted by prefix, a prefix's plain name before its numbered names.
    Duplicates are ignored and an empty list gives ``""``.

    For any non-empty list of valid names, ``set(expand_hostlist(result))``
    equals ``set(names)``.

    Raises:
        ValueError: if a name is empty or contains whitespace, ``,``, ``[`` or ``]``.
    """
    plain: set[str] = set()
    groups: dict[str, set[str]] = {}
    for name in names:
        if not name or _FORBIDDEN_RE.search(name):
            raise ValueError(
                f"invalid host name {name!r}: must be non-empty without , [ ] or spaces"
            )
        match = _SUFFIX_RE.fullmatch(name)
        if match is None:
            plain.add(name)
        else:
            groups.setdefault(match.group("prefix"), set()).add(match.group("digits"))
    items: list[str] = []
    for prefix in sorted(plain | groups.keys()):
        if prefix in plain:
            items.append(prefix)
        suffixes = groups.get(prefix)
        if not suffixes:
            continue
        if len(suffixes) == 1:
            items.append(prefix + next(iter(suffixes)))
        else:
            items.append(f"{prefix}[{','.join(_runs(list(suffixes)))}]")
    return ",".join(items)
