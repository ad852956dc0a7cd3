"""Which row fields an squeue format (and an order) reads: the master sends a command only
those, and keys its rendered lines by those it shows (mgpu_server/api/listingtext.py).

"""

from __future__ import annotations

from mgpu_core.slurm import squeue_fmt

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from mgpu_core.slurm.common import Spec

# One row of each kind a format tells apart (pending, held, running, an ended array task, a
# failed interactive job), every field set: formatting them shows which fields a format reads,
# whatever branch it takes. Only those are asked for: a listing of 500 jobs costs the master
# ~14 ms with every field and ~8 with the default format's (tests/client/test_squeue_fields.py
# checks that the answer formats exactly as the full rows do).
COMMON = {
    "job_id": 9, "job_ref": "9", "array_job_id": None, "array_task_id": None, "name": "n",
    "user": "root", "state": "PENDING", "reason": "Priority", "node": "", "gpus": 1,
    "gpu_indices": [], "cpus": 2, "mem_bytes": 1 << 30, "time_limit_s": 3600,
    "submit_time": 1.0e9, "start_time": 0.0, "end_time": 0.0, "elapsed_s": 0.0,
    "exit_code": None, "signal": None, "restart_count": 0, "priority": 100.0, "qos": "normal",
    "nice": 0, "hold": "", "interactive": False, "output_bytes": None,
    "eligible_time": 1.0e9, "cancelled_by": "", "partition": "gpu", "account": "a",
    "ntasks": 1, "gpu_type": "a100", "exclusive": False, "expected_start": 1.0e9 + 60,
    "command": "c", "cwd": "/w", "stdout_path": "o", "stderr_path": "e",
    "dependency": "afterok:1", "submit_host": "h", "gpu_util_pct": None,
    "gpu_mem_peak_bytes": None, "ports": [], "session": False, "idle_s": 0,
}  # fmt: skip
PROTOTYPES = (
    COMMON,
    {**COMMON, "hold": "user", "reason": "JobHeldUser", "expected_start": 0.0},
    {**COMMON, "state": "RUNNING", "reason": "", "node": "n1", "gpu_indices": [0],
     "start_time": 1.0e9 + 5, "elapsed_s": 5.0},
    {**COMMON, "state": "COMPLETING", "reason": "", "node": "n1", "start_time": 1.0e9 + 5},
    {**COMMON, "state": "COMPLETED", "reason": "", "node": "n1", "array_job_id": 8,
     "array_task_id": 1, "job_ref": "8_1", "start_time": 1.0e9 + 5, "end_time": 1.0e9 + 9,
     "elapsed_s": 4.0, "exit_code": 0},
    {**COMMON, "state": "FAILED", "reason": "boom", "node": "n1", "interactive": True,
     "start_time": 1.0e9 + 5, "end_time": 1.0e9 + 6, "exit_code": 1, "signal": 9,
     "stderr_path": None, "time_limit_s": 0},
)  # fmt: skip


class _Recorder(dict):  # type: ignore[type-arg]
    """A row that records which of its fields are read."""

    def __init__(self, row: dict[str, Any], read: set[str]) -> None:
        super().__init__(row)
        self.read = read

    def get(self, key: Any, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: Any) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return super().__contains__(key)


def fields_read(specs: Sequence[Spec], sort: str | None, *, order: bool = True) -> set[str]:
    """The row fields that formatting ``specs`` reads, and sorting by ``sort`` too unless
    ``order`` is false. ValueError for a sort letter squeue refuses."""
    read: set[str] = set()
    rows = [_Recorder(row, read) for row in PROTOTYPES]
    now = 1.0e9 + 10
    ordered = squeue_fmt.sort_jobs(rows, sort, now=now) if order else rows
    squeue_fmt.format_jobs(ordered, specs, now=now)
    return read & set(COMMON)
