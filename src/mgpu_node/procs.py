"""Process helpers for the executor: signalling a job's tree, and waiting for any process to end.

A job's main process is our child only while the agent that started it lives; a restarted
agent re-adopts processes it did not fork, and ``waitpid`` cannot wait for those. A pidfd
(Linux >= 5.3) becomes readable when its process ends, child or not, so one mechanism serves
both; where pidfds are unavailable (old kernels, seccomp) we fall back to polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable

import psutil

POLL_INTERVAL_S = 0.2
# psutil derives create_time from clock ticks since boot (1/100 s): equal within this.
CREATE_TIME_TOLERANCE_S = 0.05


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def signal_tree(pid: int, sig: int) -> None:
    """Signal the job's process group and any descendant that left it (setpgid/setsid)."""
    strays: list[psutil.Process] = []
    with contextlib.suppress(psutil.Error):
        strays = psutil.Process(pid).children(recursive=True)
    signal_group(pid, sig)
    for child in strays:
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(child.pid) != pid:
                child.send_signal(sig)


def signal_children(pid: int, sig: int) -> None:
    """Signal ``pid``'s direct children only: the job wrapper's command (a batch script's
    shell), not what that started."""
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(pid).children():
            with contextlib.suppress(psutil.Error, OSError):
                child.send_signal(sig)


def command_started(wrapper_pid: int) -> bool:
    """Whether the job wrapper ``wrapper_pid`` has started its command: a child of the wrapper
    runs another program than the wrapper (a fork of the wrapper that has not exec'd yet has
    the wrapper's command line). Until then a signal to the job can be lost (wrapper.py). A
    wrapper that is gone, or that we cannot inspect, counts as started: there is nothing to
    wait for."""
    try:
        wrapper = psutil.Process(wrapper_pid)
        own = wrapper.cmdline()
        return any(child.cmdline() != own for child in wrapper.children())
    except psutil.Error:
        return True


def create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def is_same_live_process(pid: int, started: float) -> bool:
    """Whether ``pid`` still is the process that started at ``started`` and has not ended.

    The start time guards against pid reuse; a zombie has ended (only its parent, no longer
    us after a restart, can reap it).
    """
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - started) > CREATE_TIME_TOLERANCE_S:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def status_of(pid: int, started: float) -> str | None:
    """psutil's status of ``pid`` if it still is the process that started at ``started``
    (``psutil.STATUS_ZOMBIE`` for one that ended and awaits its parent's wait); None if it is
    gone or ``pid`` is another process's now."""
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - started) > CREATE_TIME_TOLERANCE_S:
            return None
        return str(proc.status())
    except psutil.Error:
        return None


def open_pidfd(pid: int) -> int | None:
    """A pidfd for ``pid``; None where the kernel or a sandbox refuses one, or the process is
    gone already (callers then check the process by other means)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def kill_leftovers(pgid: int, job_id: int) -> None:
    """SIGKILL what is left of a job's process group after its leader ended unwatched.

    Only processes whose environment names the job: with the leader gone, the group's number
    may have been given to someone else's process since.
    """
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(proc.pid) == pgid and proc.environ().get("MGPU_JOB_ID") == str(job_id):
                proc.kill()


async def wait_pidfd(pidfd: int) -> None:
    """Wait until the process behind ``pidfd`` ends; closes ``pidfd`` in any case."""
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not ended.done():
            ended.set_result(None)

    loop.add_reader(pidfd, readable)
    try:
        await ended
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


async def wait_polling(
    still_running: Callable[[], bool], interval_s: float = POLL_INTERVAL_S
) -> None:
    """Poll ``still_running()`` until it is false (where no event tells: no pidfd, or a
    condition that only /proc shows)."""
    while still_running():
        await asyncio.sleep(interval_s)
