"""A session's terminals are warned 10 and 1 minutes before its TTL ends and when its grace
begins; a new TTL (session extend) moves the warnings; a job without a TTL gets none."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest

from mgpu_node.cgroups import hold_loader_vars
from mgpu_node.terminals import JobView, Terminals


def scheduled(views: dict[int, JobView | None], job_id: int) -> list[float]:
    """When (seconds from now) the warnings of ``job_id`` are due, after schedule_warnings."""

    async def run() -> list[float]:
        loop = asyncio.get_running_loop()
        sent: list[dict[str, Any]] = []

        def send(msg: dict[str, Any]) -> bool:
            sent.append(msg)
            return True

        terms = Terminals(send=send, job=views.get)
        terms.schedule_warnings(job_id)
        now = loop.time()
        handles = terms._warnings.get(job_id, [])
        due = sorted(float(round(h.when() - now)) for h in handles)
        terms.close()
        assert all(h.cancelled() for h in handles)
        return due

    return asyncio.run(run())


def test_warnings_before_the_ttl_and_at_the_grace() -> None:
    view = JobView(pid=1, start_wall=time.time(), ttl_s=3600, grace_s=300)
    assert scheduled({7: view}, 7) == [3000, 3540, 3600]


def test_a_new_ttl_moves_them_and_past_ones_are_skipped() -> None:
    started = time.time() - 3590  # ten seconds of its hour left
    assert scheduled({7: JobView(1, started, 3600, 300)}, 7) == [10]  # only the grace's
    assert scheduled({7: JobView(1, started, 7200, 0)}, 7) == [3010, 3550]  # extended, no grace


@pytest.mark.parametrize("view", [None, JobView(1, time.time(), 0, 0)])
def test_no_ttl_no_warnings(view: JobView | None) -> None:
    assert scheduled({7: view}, 7) == []


def test_a_container_job_the_agent_readopted_is_not_entered_on_the_host() -> None:
    """After an agent restart the job's container cannot be made again: the terminal is
    refused in one line rather than opened as a host shell beside the container."""
    sent: list[dict[str, Any]] = []

    def send(msg: dict[str, Any]) -> bool:
        sent.append(msg)
        return True

    view = JobView(os.getpid(), time.time(), 0, 0, container_image="localhost/img")
    order = {"t": "pty_open", "term_id": 5, "job_id": 9, "user": "u", "rows": 24, "cols": 80,
             "term": "xterm", "command": []}  # fmt: skip

    async def run() -> None:
        Terminals(send=send, job=lambda job_id: view).on_order(order)

    asyncio.run(run())
    [reply] = sent
    assert reply["t"] == "pty_exit" and reply["term_id"] == 5
    assert "runs in a container and this agent restarted" in reply["error"]


def collect() -> tuple[list[dict[str, Any]], Any]:
    sent: list[dict[str, Any]] = []

    def send(msg: dict[str, Any]) -> bool:
        sent.append(msg)
        return True

    return sent, send


def pty_open(term_id: int, command: list[str]) -> dict[str, Any]:
    return {"t": "pty_open", "term_id": term_id, "job_id": 9, "user": "u", "rows": 24,
            "cols": 80, "term": "xterm", "command": command}  # fmt: skip


def test_a_bad_order_fails_that_terminal_not_the_agent() -> None:
    """A command the kernel cannot take (a NUL byte) and a job whose pid is no longer its own
    each end in one pty_exit; nothing escapes to the agent's link."""
    sent, send = collect()
    views = {
        9: JobView(os.getpid(), time.time(), 0, 0),
        10: JobView(os.getpid(), time.time(), 0, 0, alive=lambda: False),
    }

    async def run() -> None:
        terms = Terminals(send=send, job=views.get)
        terms.on_order(pty_open(1, ["sh", "-c", "echo\0bad"]))
        terms.on_order({**pty_open(2, []), "job_id": 10})

    asyncio.run(run())
    assert [(m["term_id"], m["t"]) for m in sent] == [(1, "pty_exit"), (2, "pty_exit")]
    assert "null" in sent[0]["error"] and "job 10 has ended" in sent[1]["error"]


def test_input_the_shell_never_reads_is_bounded() -> None:
    """A client that types into a program that never reads: past 256 KiB the terminal is hung
    up, not buffered without bound in the agent."""
    sent, send = collect()
    views = {9: JobView(os.getpid(), time.time(), 0, 0)}

    async def run() -> None:
        terms = Terminals(send=send, job=views.get)
        terms.on_order(pty_open(1, ["sleep", "30"]))
        chunk = b"x" * 65536
        for _ in range(8):
            terms.on_order({"t": "pty_input", "term_id": 1, "data": chunk})
        deadline = time.monotonic() + 10
        while not any(m["t"] == "pty_exit" for m in sent) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        terms.close()
        while terms._reaping and time.monotonic() < deadline:  # the shell collected
            await asyncio.sleep(0.01)

    asyncio.run(run())
    exits = [m for m in sent if m["t"] == "pty_exit"]
    assert exits and "did not read its input" in exits[0]["error"]


def test_the_dynamic_loaders_variables_wait_for_the_gate() -> None:
    env, restore = hold_loader_vars(
        {"LD_PRELOAD": "/evil.so", "LD_LIBRARY_PATH": "/lib2", "LD_$(x)": "y", "PATH": "/bin"}
    )
    assert env == {"MGPU_HELD_LD_PRELOAD": "/evil.so", "MGPU_HELD_LD_LIBRARY_PATH": "/lib2",
                   "PATH": "/bin"}  # fmt: skip
    assert restore == (
        'export LD_PRELOAD="$MGPU_HELD_LD_PRELOAD"; unset MGPU_HELD_LD_PRELOAD\n'
        'export LD_LIBRARY_PATH="$MGPU_HELD_LD_LIBRARY_PATH"; unset MGPU_HELD_LD_LIBRARY_PATH\n'
    )
