"""The audit log: who did what from where, and what was refused to whom.

One JSON object a line: ``{"time": ..., "event": NAME, FIELD: VALUE, ...}``. json.dumps
escapes every value, so nothing a peer chose (a node id, a token id, a job name with a newline
or a terminal escape sequence in it) can end a line early or add one of its own; non-ASCII is
escaped too (``\\u...``), so a line is plain ASCII. ``time`` is UTC, ISO 8601 to the
millisecond. A refused request has ``"refused": WHY`` (:func:`log_refused`); no other line
has a ``refused`` field.

Failures before authentication (a bad hello, a refused connection: :func:`log_failure`) are
aggregated per address: the first :data:`~mgpu_core.constants.AUDIT_FAILURE_BURST` in each
:data:`~mgpu_core.constants.AUDIT_FAILURE_INTERVAL_S` are logged, the rest counted and told in
one ``failures_suppressed`` line when that interval ends, so that a flood of bad hellos grows
the log by a bounded amount. Authenticated requests, refused or not, are logged each time:
their users are known, and an allowed request costs a line just the same.

It is the ``mgpu.audit`` logger (propagating to the ordinary log). :func:`open_log` sends it to
a file as well (the master: ``<state-dir>/audit.log``, mode 0600), which :func:`reopen` opens
anew at the same path (the master does on SIGHUP, after a log rotation moved the file away).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mgpu_core import constants
from mgpu_core.logformat import ReopeningFileHandler

log = logging.getLogger("mgpu.audit")

# Addresses whose failures are counted at once; beyond that, new ones share one count (a
# flood from many addresses must not grow the master's memory either).
MAX_TRACKED_ADDRESSES = 10_000
OTHER_ADDRESSES = "(other addresses)"
_HEADER = ("time", "event")


def log_event(event: str, **fields: object) -> None:
    """One line: ``event`` and ``fields`` (values JSON can hold; anything else as ``str``)."""
    # A field cannot pass for the header: one named like it is written with a "_" after.
    record: dict[str, object] = {"time": _now(), "event": event}
    record.update({(f"{k}_" if k in _HEADER else k): v for k, v in fields.items()})
    try:
        line = json.dumps(record, default=str, allow_nan=False)
    except (TypeError, ValueError):  # a dict with odd keys, a NaN: the line still gets out
        line = json.dumps({k: str(v) for k, v in record.items()})
    log.info(line)


def log_refused(event: str, why: str, /, **fields: object) -> None:
    """A request that was refused: ``"refused": WHY`` marks every such line (a field of its
    own, as the request's fields may have a ``reason`` of their own: a drain's, say)."""
    log_event(event, refused=why, **fields)


def log_failure(event: str, *, peer: str, **fields: object) -> None:
    """A failure of an unauthenticated peer (a bad hello, a refused connection), aggregated
    per address (see the module's docstring)."""
    logged, summaries = _failures.admit(_address(peer), event, time.monotonic())
    _emit(summaries)
    if logged:
        log_event(event, peer=peer, **fields)


def flush_failures(*, everything: bool = False) -> None:
    """Write the summaries of the aggregation intervals that have ended (all of them with
    ``everything``, as the master stops): called every second by the master's timer."""
    _emit(_failures.due(time.monotonic(), everything=everything))


def _emit(summaries: list[dict[str, object]]) -> None:
    for summary in summaries:
        log_event("failures_suppressed", **summary)


def _address(peer: str) -> str:
    """Who a failure is counted against: the IP of ``ip:port``, or a Unix socket peer's uid."""
    return peer if peer.startswith("unix:") else peer.rsplit(":", 1)[0]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class _Window:
    start_s: float
    logged: int = 0
    suppressed: dict[str, int] = field(default_factory=dict)  # event -> count


class FailureLimiter:
    """Per address, the first ``burst`` failures of each ``interval_s`` are logged; the others
    are counted, and the count is told once that interval has ended. A flood from one address
    thus costs at most ``burst + 1`` lines per interval. Pure: the caller passes the time."""

    def __init__(self, burst: int, interval_s: float) -> None:
        self.burst = burst
        self.interval_s = interval_s
        self.windows: dict[str, _Window] = {}

    def admit(self, address: str, event: str, now_s: float) -> tuple[bool, list[dict[str, object]]]:
        """Whether to log this failure, and the summary of the address's previous interval
        if that has just turned out to be over."""
        if address not in self.windows and len(self.windows) >= MAX_TRACKED_ADDRESSES:
            address = OTHER_ADDRESSES
        window = self.windows.get(address)
        summaries = []
        if window is not None and now_s - window.start_s >= self.interval_s:
            summaries = self._close(address)
            window = None
        if window is None:
            window = self.windows[address] = _Window(now_s)
        if window.logged < self.burst:
            window.logged += 1
            return True, summaries
        window.suppressed[event] = window.suppressed.get(event, 0) + 1
        return False, summaries

    def due(self, now_s: float, *, everything: bool = False) -> list[dict[str, object]]:
        """Summaries of the intervals that have ended (all, with ``everything``); their
        addresses are forgotten."""
        ended = [
            address
            for address, window in self.windows.items()
            if everything or now_s - window.start_s >= self.interval_s
        ]
        return [summary for address in ended for summary in self._close(address)]

    def _close(self, address: str) -> list[dict[str, object]]:
        window = self.windows.pop(address)
        count = sum(window.suppressed.values())
        if not count:
            return []
        kinds = ", ".join(f"{n} {event}" for event, n in sorted(window.suppressed.items()))
        return [
            {
                "address": address,
                "count": count,
                "events": dict(sorted(window.suppressed.items())),
                "interval_s": self.interval_s,
                "message": f"{count} more failures from {address} not logged ({kinds})",
            }
        ]


_failures = FailureLimiter(constants.AUDIT_FAILURE_BURST, constants.AUDIT_FAILURE_INTERVAL_S)


class AuditFile(ReopeningFileHandler):
    """The audit log's file: created (and kept) mode 0600, for the admins' eyes only, and
    opened anew at its path by :meth:`reopen`."""

    file_mode = 0o600
    keep_mode = True

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8")
        self.setFormatter(logging.Formatter("%(message)s"))  # the time is in the object


def open_log(path: Path) -> None:
    """Send the audit log to ``path`` too (OSError if it cannot be opened)."""
    log.addHandler(AuditFile(path))
    log.setLevel(logging.INFO)  # whatever --log-level says of the ordinary log


def reopen() -> None:
    """Open every audit file anew at its path (the master's SIGHUP), and say so in it."""
    for handler in log.handlers:
        if isinstance(handler, AuditFile):
            try:
                handler.reopen()
            except OSError as exc:
                logging.getLogger(__name__).error(
                    "cannot reopen the audit log %s: %s", handler.baseFilename, exc
                )
    log_event("log_reopened")
