"""The queue as the text a command prints: squeue's formats and mgpu_queue's table, rendered
by the master (a queue request's ``render``).

Why here: a command that asks for 500 rows spends more on decoding and formatting them (~10
ms in pure Python) than on its whole start-up, and the budget of a command is ~15 ms. The
master already holds the jobs; it formats with the commands' own code (``mgpu_core.slurm``,
``mgpu_core.tables``), and keeps each line it rendered, keyed by the values the line shows:
a listing in which few jobs changed since the last one reformats only those. A line that
shows a running job's time (squeue's %M and %L, the table's TIME) is keyed by the second too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from mgpu_core.errors import InvalidRequest
from mgpu_core.slurm import LOCAL_KEYS, LOCAL_SORT, squeue_fmt
from mgpu_core.slurm.squeue_fields import fields_read
from mgpu_core.tables import QUEUE_FIELDS, QUEUE_HEADERS, queue_row, table

if TYPE_CHECKING:
    from mgpu_core.slurm.common import Spec

MAX_LAYOUTS = 32  # formats whose lines are kept (a new one beyond: all are dropped)
_CLOCK_KEYS = frozenset("ML")  # a started job's time used and left: they change each second


@dataclass(frozen=True, slots=True)
class Layout:
    """A parsed request: the fields to ask the job table for and those the lines show."""

    specs: tuple[Spec, ...]
    sort: str | None
    fields: tuple[str, ...]
    shown: Callable[[dict[str, Any]], object]  # the values a line shows
    clock: bool  # lines of started jobs change with the second
    exact_clock: bool  # every line changes with the clock (-O PendingTime)


def _layout(fmt: str, fmt_long: str, sort: str) -> Layout:
    try:
        if fmt_long:
            specs = squeue_fmt.parse_format_long(fmt_long)
        else:
            specs = squeue_fmt.parse_format(fmt or squeue_fmt.DEFAULT_FORMAT)
        order = sort or None
        keys = {spec[0] for spec in specs}
        local = sorted(keys & LOCAL_KEYS) + sorted(set(sort) & LOCAL_SORT)
        if local:
            raise InvalidRequest(
                f"the format or order reads {local[0]!r}, which only the command's host can "
                "render (its users, its time zone): ask for rows"
            )
        fields = fields_read(specs, order)
        shown = sorted(fields_read(specs, order, order=False))
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    return Layout(
        tuple(specs),
        order,
        tuple(sorted(fields)),
        itemgetter(*shown) if shown else (lambda row: ()),  # literal text only: one line
        bool(keys & _CLOCK_KEYS),
        "pendingtime" in keys,
    )


class ListingText:
    """Rendered listings, and the lines kept from the last listing of each layout."""

    def __init__(self) -> None:
        self._layouts: dict[tuple[str, str, str], Layout] = {}
        self._lines: dict[object, dict[object, Any]] = {}

    def layout(self, msg: dict[str, Any]) -> Layout:
        key = (msg["format"], msg["format_long"], msg["sort"])
        found = self._layouts.get(key)
        if found is None:
            if len(self._layouts) >= MAX_LAYOUTS:
                self._layouts.clear()
            found = self._layouts[key] = _layout(*key)
        return found

    def fields(self, msg: dict[str, Any]) -> list[str]:
        """The row fields the request's text needs."""
        if msg["render"] == "table":
            return list(QUEUE_FIELDS)
        return list(self.layout(msg).fields)

    def render(self, msg: dict[str, Any], rows: list[dict[str, Any]], now: float) -> str:
        if msg["render"] == "table":
            cells = self._memo("table", rows, _table_key, queue_row)
            return table(QUEUE_HEADERS, cells, header=msg["header"]) + "\n"
        layout = self.layout(msg)
        ordered = squeue_fmt.sort_jobs(rows, layout.sort, now=now)
        second = int(now)

        def key(row: dict[str, Any]) -> object:
            values = layout.shown(row)
            if layout.exact_clock:
                return (values, now)
            if layout.clock and row["state"] != "PENDING":
                return (values, second)
            return values

        specs = layout.specs
        lines = self._memo(layout, ordered, key, lambda row: squeue_fmt.job_line(row, specs, now))
        if msg["header"]:
            lines = [squeue_fmt.header_line(specs), *lines]
        return "".join(line + "\n" for line in lines)

    def _memo(self, layout: object, rows: Sequence[Any], key: Any, make: Any) -> list[Any]:
        """``make(row)`` for each row, reusing what the last listing of ``layout`` made for a
        row with the same key; keeps only this listing's (memory: one listing's lines)."""
        if layout not in self._lines and len(self._lines) >= MAX_LAYOUTS:
            self._lines.clear()
        kept = self._lines.get(layout, {})
        fresh: dict[object, Any] = {}
        out = []
        for row in rows:
            try:
                k = key(row)
                made = fresh.get(k) or kept.get(k)
            except TypeError:  # a value that is a list (GPU indices): made every time
                out.append(make(row))
                continue
            if made is None:
                made = make(row)
            fresh[k] = made
            out.append(made)
        self._lines[layout] = fresh
        return out


_TABLE_SHOWN = itemgetter(*(f for f in QUEUE_FIELDS if f != "gpu_indices"))


def _table_key(row: dict[str, Any]) -> object:
    return (_TABLE_SHOWN(row), tuple(row["gpu_indices"]))
