"""A launch of another run of a job whose earlier run still ends on the node: held, then
started once that run's exit is out, or ended unstarted if cancelled meanwhile. One exit per
launch, never two runs at once. (With a real agent and master: tests/integration/
test_node_fence.py.)"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from mgpu_core.daemons import JobUser
from mgpu_core.messages import MASTER_TO_NODE, validate
from mgpu_core.models import Launch
from mgpu_node.executor import Executor
from mgpu_node.held import HELD_CANCELLED
from mgpu_node.jobuser import JobUserPolicy
from mgpu_node.spool import ExitSpool

pytestmark = pytest.mark.timeout(60)


def launch(job_id: int, cwd: Path, script: str, restart_count: int) -> Launch:
    msg = {
        "t": "launch",
        "launch": {
            "job_id": job_id,
            "kill_grace_s": 30.0,
            "restart_count": restart_count,
            "spec": {"argv": ["sh", "-c", script], "cwd": str(cwd)},
        },
    }
    return Launch.from_checked(validate(msg, MASTER_TO_NODE)["launch"])


class Node:
    def __init__(self, state: Path) -> None:
        self.events: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self.executor = Executor(
            node_name="n1",
            devices=[],
            state_dir=state,
            exits=ExitSpool(state / "exits"),
            emit=self.emit,
            job_users=JobUserPolicy(JobUser.AGENT, allow_root=True),
        )

    def emit(self, msg: dict[str, Any]) -> None:
        self.events.append(msg)
        self.changed.set()

    def kinds(self) -> list[tuple[str, int | None]]:
        return [(m["t"], m.get("restart_count")) for m in self.events]

    async def wait_exits(self, count: int, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while sum(m["t"] == "job_exited" for m in self.events) < count:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), deadline - time.monotonic())


async def wait_file(path: Path) -> None:
    deadline = time.monotonic() + 20
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        await asyncio.sleep(0.01)  # a file the job writes: no event to wait on


def ending_slowly(tmp: Path) -> str:
    """A run that ignores SIGTERM until ``release`` exists."""
    return f"trap '' TERM; touch {tmp}/up; while [ ! -e {tmp}/release ]; do sleep 0.02; done"


def test_a_cancelled_held_run_never_starts(tmp_path: Path) -> None:
    async def main() -> None:
        node = Node(tmp_path / "state")
        node.executor.launch(launch(1, tmp_path, ending_slowly(tmp_path), 0))
        await wait_file(tmp_path / "up")
        node.executor.kill(1, "node failed")
        node.executor.launch(launch(1, tmp_path, f"touch {tmp_path}/ran", 1))
        node.executor.kill(1, "cancelled")  # the master's current run: the held one
        (tmp_path / "release").touch()
        await node.wait_exits(2)
        assert node.kinds() == [("job_started", None), ("job_exited", 0), ("job_exited", 1)]
        held = node.events[-1]
        assert (held["exit_code"], held["signal"], held["reason"]) == (None, None, HELD_CANCELLED)
        assert not (tmp_path / "ran").exists() and node.executor.running_ids() == []

    asyncio.run(main())


def test_an_agent_stopping_its_jobs_ends_a_held_run_unstarted(tmp_path: Path) -> None:
    async def main() -> None:
        node = Node(tmp_path / "state")
        node.executor.launch(launch(1, tmp_path, ending_slowly(tmp_path), 0))
        await wait_file(tmp_path / "up")
        node.executor.launch(launch(1, tmp_path, f"touch {tmp_path}/ran", 1))
        await node.executor.stop_all()
        assert node.kinds() == [("job_started", None), ("job_exited", 0), ("job_exited", 1)]
        assert node.events[-1]["reason"] == HELD_CANCELLED
        assert not (tmp_path / "ran").exists()

    asyncio.run(main())
