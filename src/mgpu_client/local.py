"""Local single-machine mode: a master and a node agent on this host, in the background.

``mgpu_client local start`` launches both as detached processes (their pid and log files in
the state directory) and returns once the node has registered; ``local stop`` ends them by
the recorded pids. Real GPUs are used when NVML finds them, ``--gpu-count`` fakes otherwise.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mgpu_client.client import Client
from mgpu_core import auth
from mgpu_core.config import SOCKET_FILE, Address, local_mode_dir, unix_address
from mgpu_core.errors import ConfigError, MasterUnreachable, MgpuError

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0


def default_dir() -> Path:
    return local_mode_dir()


def _program(name: str, module: str) -> list[str]:
    """How to start a sibling program: the bundled launcher when frozen, else ``python -m``."""
    if getattr(sys, "frozen", False):
        return [str(Path(sys.executable).with_name(name))]
    return [sys.executable, "-m", module]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def _spawn(argv: list[str], state: Path, name: str) -> int:
    log = open(state / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    with log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    (state / f"{name}.pid").write_text(f"{proc.pid}\n")
    return proc.pid


def start(*, state: Path, port: int, gpu_count: int | None, node_id: str) -> Address:
    state.mkdir(parents=True, exist_ok=True)
    if _read_pid(state / "master.pid") or _read_pid(state / "node.pid"):
        raise ConfigError(f"a local cluster is already running (state in {state}); stop it first")
    # Clients use the socket (no token needed; found without setup in the default directory).
    address = unix_address((state / "master" / SOCKET_FILE).absolute())
    # The key is made here, before either process starts, so the node never races the master.
    (state / "master").mkdir(exist_ok=True)
    key_file = state / "master" / auth.KEY_FILE
    auth.load_or_create_key(key_file)
    master = [
        *_program("mgpu_master", "mgpu_server"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--state-dir",
        str(state / "master"),
    ]
    master_pid = _spawn(master, state, "master")
    node = [
        *_program("mgpu_node", "mgpu_node"),
        "--master-host",
        "127.0.0.1",
        "--master-port",
        str(port),
        "--node-id",
        node_id,
        "--state-dir",
        str(state / "node"),
        "--key-file",
        str(key_file),
        # `local stop` means the jobs end too (a cluster agent leaves them for re-adoption).
        "--stop-jobs-on-exit",
    ]
    if os.geteuid() == 0:
        # Root's own jobs may run as root on its own machine; everyone else's run as
        # themselves (the socket tells the master who they are).
        node.append("--allow-root-jobs")
    # Real GPUs when NVML finds some; otherwise fake ones so the queue is usable at all.
    node += (
        ["--gpu-count", str(gpu_count)] if gpu_count is not None else ["--fallback-gpu-count", "2"]
    )
    node_pid = _spawn(node, state, "node")
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        for pid, name in ((master_pid, "master"), (node_pid, "node")):
            if not _alive(pid):
                stop(state=state)
                raise MgpuError(f"local {name} exited at start; see {state / (name + '.log')}")
        try:
            with Client(address, timeout_s=2.0) as client:
                if any(n["node_id"] == node_id and n["state"] != "down" for n in client.nodes()):
                    return address
        except (MasterUnreachable, MgpuError):
            pass
        time.sleep(0.05)  # polling a process we just started: there is no event to wait on
    stop(state=state)
    raise MgpuError(f"local cluster did not become ready in {READY_TIMEOUT_S:.0f} s; see {state}")


def stop(*, state: Path) -> list[str]:
    """Stop the node first (it kills its jobs), then the master. Returns what was stopped."""
    stopped = []
    for name in ("node", "master"):
        pid_file = state / f"{name}.pid"
        pid = _read_pid(pid_file)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
            stopped.append(f"{name} (pid {pid})")
        pid_file.unlink(missing_ok=True)
    return stopped


def status(*, state: Path) -> dict[str, int | None]:
    return {name: _read_pid(state / f"{name}.pid") for name in ("master", "node")}
