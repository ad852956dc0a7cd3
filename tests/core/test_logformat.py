"""The daemons' log lines: JSON objects with the message's key=value words as fields, and a
log file that SIGHUP's reopen sends to a new file at its path after a rotation."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from mgpu_core.logformat import JsonFormatter, configure, reopen_logs

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            import sys

            info = sys.exc_info()
    return logging.LogRecord("mgpu.x", logging.WARNING, __file__, 1, msg, args, info)


def test_a_json_line_has_the_messages_words_as_fields() -> None:
    line = JsonFormatter().format(
        record("job=%d node=%s user=%s state=RUNNING gpus=0,1", 12, "n1", "alice")
    )
    entry = json.loads(line)
    assert entry["job"] == 12 and entry["node"] == "n1" and entry["user"] == "alice"
    assert entry["state"] == "RUNNING" and entry["gpus"] == "0,1"
    assert entry["level"] == "WARNING" and entry["logger"] == "mgpu.x"
    assert entry["message"].startswith("job=12") and entry["time"].endswith("Z")
    # A word cannot replace the record's own fields; a traceback stays one line of JSON.
    tricky = json.loads(JsonFormatter().format(record("level=x message=y", exc=True)))
    assert tricky["level"] == "WARNING" and tricky["message"] == "level=x message=y"
    assert "ValueError: boom" in tricky["exception"]
    assert "\n" not in JsonFormatter().format(record("two\nlines job=1", exc=True))


def test_the_log_file_is_opened_anew_after_a_rotation(tmp_path: Path, restore_root: None) -> None:
    log_file = tmp_path / "master.log"
    configure("info", fmt="json", log_file=log_file)
    logging.getLogger("mgpu.t").info("job=1 before")
    log_file.rename(tmp_path / "master.log.1")  # logrotate moves it ...
    logging.getLogger("mgpu.t").info("job=2 moved")  # ... lines still go to the old file
    reopen_logs()  # ... then SIGHUP
    logging.getLogger("mgpu.t").info("job=3 after")
    old = [json.loads(x) for x in (tmp_path / "master.log.1").read_text().splitlines()]
    new = [json.loads(x) for x in log_file.read_text().splitlines()]
    assert [e.get("job") for e in old] == [1, 2]
    assert [e.get("job") for e in new if "job" in e] == [3]
    with pytest.raises(ValueError, match="unknown log format"):
        configure("info", fmt="xml")
