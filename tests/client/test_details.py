"""``mgpu_client show``'s text: one aligned line per fact, a failed job's reason in its state,
the GPUs' measured use, the script last and indented, and others' text escaped."""

from __future__ import annotations

import pytest

from mgpu_client.details import render

pytestmark = pytest.mark.timeout(30)

ROW = {
    "job_id": 7, "job_ref": "7", "name": "train\x1b[2J", "user": "alice", "account": "lab",
    "state": "FAILED", "reason": "exit code 3", "exit_code": 3, "signal": None, "partition": "gpu",
    "qos": "normal", "gpus": 2, "cpus": 4, "mem_bytes": 0, "time_limit_s": 3600,
    "submit_time": 1.7e9, "eligible_time": 1.7e9, "start_time": 1.7e9 + 5, "end_time": 1.7e9 + 65,
    "wait_s": 5.0, "elapsed_s": 60.0, "node": "n1", "gpu_indices": [0, 1],
    "gpu_uuids": ["GPU-a", "GPU-b"], "expected_start": 0.0, "stdout_path": "/w/out",
    "stderr_path": "/w/out", "cwd": "/w", "command": "sh train.sh", "restart_count": 0,
    "priority_factors": None, "dependency": "afterok:3", "dependency_status": "satisfied",
    "hold": "", "attached": 0, "gpu_util_pct": 61.4, "gpu_mem_peak_bytes": 7 << 30,
    "script": "#!/bin/sh\npython train.py\n", "steps": [], "notice_error": "",
}  # fmt: skip


def test_show_says_what_happened_and_where() -> None:
    lines = render(ROW, now=1.7e9 + 100).splitlines()
    fields = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in lines if ":" in ln)}
    assert fields["State"] == "FAILED (exit code 3)" and fields["Exit"] == "3"
    assert fields["Node"] == "n1 gpu 0,1" and fields["GPU UUIDs"] == "GPU-a, GPU-b"
    assert fields["GPU usage"] == "61% mean utilisation, 7G peak memory"
    assert fields["Waited"] == "0:05" and fields["Dependency"] == "afterok:3 (satisfied)"
    assert "\x1b" not in "\n".join(lines) and "train\\x1b[2J" in fields["Name"]
    assert lines[-2:] == ["  #!/bin/sh", "  python train.py"]
    # Values line up: every key's colon is followed by the value at one column.
    starts = {ln.index(ln.split(":", 1)[1].strip()) for ln in lines[:10]}
    assert len(starts) == 1


def test_the_listings_failure_states_are_the_masters() -> None:
    from mgpu_core.states import FAILURE_STATES
    from mgpu_core.tables import TROUBLED

    assert {s.value for s in FAILURE_STATES} == TROUBLED
