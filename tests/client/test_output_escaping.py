"""What the client commands print of others' text (job names, reasons, node ids, error
messages) shows control characters escaped: a job name cannot clear the screen or fake a row."""

from __future__ import annotations

from typing import Any

import pytest

from mgpu_client.exits import fail
from mgpu_core.tables import QUEUE_HEADERS, gpu_lines, queue_row, table

pytestmark = pytest.mark.timeout(30)

ROW: dict[str, Any] = {
    "job_id": 7,
    "job_ref": None,
    "name": "x\x1b[2Jy",
    "user": "alice",
    "state": "PENDING",
    "reason": "Held\nfake 8 row",
    "node": "",
    "gpu_indices": [],
    "elapsed_s": 0.0,
    "gpus": 1,
}


def test_the_queue_table_escapes_names_and_reasons() -> None:
    text = table(QUEUE_HEADERS, [queue_row(ROW), queue_row({**ROW, "name": "clean"})])
    lines = text.splitlines()
    assert len(lines) == 3 and "\x1b" not in text
    assert "x\\x1b[2Jy" in lines[1] and "(Held\\x0afake 8 row)" in lines[1]
    # Columns stay aligned: widths are those of the escaped text.
    assert lines[1].index("alice") == lines[2].index("alice") == lines[0].index("USER")


def test_a_table_without_controls_is_unchanged() -> None:
    assert table(("A", "B"), [("x", "y")]) == "A  B\nx  y"
    assert table(("A", "B"), [("x", "y")], header=False) == "x  y"


def test_gpu_lines_escape_strangers_process_names() -> None:
    node = {
        "gpus": [
            {
                "index": 0,
                "name": "GPU\x1b]0;t\x07",
                "memory_total_bytes": 1 << 30,
                "memory_used_bytes": -1,
                "utilization_pct": -1,
                "healthy": True,
                "error": "",
                "job_id": None,
                "processes": [
                    {"pid": 5, "user": "eve", "command": "\x1b[1A", "used_memory_bytes": 0}
                ],
            }
        ]
    }
    (line,) = gpu_lines(node)
    assert "\x1b" not in line and "GPU\\x1b]0;t\\x07" in line and "\\x1b[1A" in line


def test_error_messages_are_one_line_with_controls_escaped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        fail("mgpu_queue", "node 'n1\n\x1b[31mok' is unknown")
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert err == "mgpu_queue: error: node 'n1\\x0a\\x1b[31mok' is unknown\n"
