"""The daemons' logs: to stderr or a file (``--log-file``, opened anew at its path on SIGHUP,
so logrotate's rename-then-signal works), as text or as one JSON object a line
(``--log-format json``) for a log shipper.

The daemons write their events as ``key=value`` words (``job=12 node=n1 state=RUNNING``); the
JSON form lifts each of those into a field of its own beside ``time``, ``level``, ``logger``
and ``message``, so ``job``, ``node`` and ``user`` are fields a query can select on, with no
second way of logging in the code.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from io import TextIOWrapper
from pathlib import Path

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# key=value words in a message: the value runs to the next space (no quoting in our logs).
_PAIR = re.compile(r"(?<![\w.])([a-z][a-z0-9_]*)=(\S+)")
# The record's own attributes: never overwritten by a message's words.
_RESERVED = frozenset({"time", "level", "logger", "message", "exception"})


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (ISO 8601, UTC, ms), level, logger, message, the
    message's ``key=value`` words as fields (numbers as numbers), and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        for key, value in _PAIR.findall(message):
            if key not in _RESERVED and key not in entry:
                entry[key] = int(value) if value.isdigit() else value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class ReopeningFileHandler(logging.FileHandler):
    """A log file that :meth:`reopen` closes and opens again at its path (after a rotation,
    a new file there), created with ``file_mode``; with ``keep_mode``, a file made looser
    before us is set back to it."""

    file_mode = 0o640
    keep_mode = False

    def _open(self) -> TextIOWrapper:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, self.file_mode)
        try:
            if self.keep_mode:
                os.fchmod(fd, self.file_mode)
        except OSError:
            os.close(fd)
            raise
        return os.fdopen(fd, "a", encoding="utf-8")

    def reopen(self) -> None:
        """If that fails (OSError), the stream stays closed and the next line tries again."""
        self.acquire()
        try:
            if self.stream is not None:
                self.stream.close()
                self.stream = None
            self.stream = self._open()
        finally:
            self.release()


def configure(level: str, *, fmt: str = "text", log_file: Path | None = None) -> None:
    """The root logger's one handler: stderr, or ``log_file`` (OSError if it cannot be
    opened); text or JSON lines."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}: {', '.join(FORMATS)}")
    handler: logging.Handler = (
        ReopeningFileHandler(log_file, encoding="utf-8")
        if log_file is not None
        else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def reopen_logs() -> None:
    """Open every ``--log-file`` anew at its path (SIGHUP after a rotation)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, ReopeningFileHandler):
            try:
                handler.reopen()
            except OSError as exc:  # the old stream stays closed: the next line retries
                sys.stderr.write(f"cannot reopen log file {handler.baseFilename}: {exc}\n")
    logging.getLogger(__name__).info("log reopened")
