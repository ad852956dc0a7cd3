"""Local single-machine mode: a master and a node agent on this host, in the background.

``mgpu_client local start`` launches both as detached processes (their pid and log files in
the state directory) and returns once the node has registered; ``local stop`` ends them by
the recorded pids. Real GPUs are used when NVML finds them, ``--gpu-count`` fakes otherwise.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from mgpu_client import launch
from mgpu_client.client import Client
from mgpu_core.config import Address, local_mode_dir, unix_address
from mgpu_core.constants import (
    CA_CERT_FILE,
    KEY_FILE,
    LOCAL_NODE_DIR,
    MASTER_DIR,
    SOCKET_FILE,
    TLS_DIR,
)
from mgpu_core.errors import ConfigError, MasterUnreachable, MgpuError

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
NAMES = ("master", "node")


def default_dir() -> Path:
    return local_mode_dir()


def _read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if launch.pid_alive(pid) else None


def start(*, state: Path, port: int, gpu_count: int | None, node_id: str) -> Address:
    state.mkdir(parents=True, exist_ok=True)
    if any(_read_pid(state / f"{name}.pid") for name in NAMES):
        raise ConfigError(f"a local cluster is already running (state in {state}); stop it first")
    # Clients use the socket (no token needed; found without setup in the default directory).
    address = unix_address((state / MASTER_DIR / SOCKET_FILE).absolute())
    # The master makes the key with its database (a key without one is a lost history to it)
    # before it listens, and the node starts only once it listens.
    key_file = state / MASTER_DIR / KEY_FILE
    master = _start_master(state, port)
    node = _start_node(state, port, key_file, gpu_count=gpu_count, node_id=node_id)

    def node_ready() -> bool:
        try:
            with Client(address, timeout_s=2.0) as client:
                return launch.node_up(client.nodes(), node_id)
        except (MasterUnreachable, MgpuError):
            return False

    watch = {state / "master.log": master, state / "node.log": node}
    try:
        launch.wait_for(node_ready, READY_TIMEOUT_S, f"node {node_id} to register", watch=watch)
    except TimeoutError:
        stop(state=state)
        raise MgpuError(
            f"local cluster did not become ready in {READY_TIMEOUT_S:.0f} s; see {state}"
        ) from None
    except launch.ProcessExited as exc:
        stop(state=state)
        raise _exited(exc) from None
    except BaseException:
        stop(state=state)
        raise
    return address


def _start_master(state: Path, port: int) -> subprocess.Popen[bytes]:
    try:
        master, _ = launch.start_master(
            state_dir=state / MASTER_DIR,
            port_file=state / "master.port",
            log=state / "master.log",
            port=port,
            detach=True,
            timeout_s=READY_TIMEOUT_S,
        )
    except TimeoutError:
        raise MgpuError(
            f"local master did not start in {READY_TIMEOUT_S:.0f} s; see {state}"
        ) from None
    except launch.ProcessExited as exc:
        raise _exited(exc) from None
    (state / "master.pid").write_text(f"{master.pid}\n")
    return master


def _start_node(
    state: Path, port: int, key_file: Path, *, gpu_count: int | None, node_id: str
) -> subprocess.Popen[bytes]:
    extra = [
        # `local stop` means the jobs end too (a cluster agent leaves them for re-adoption).
        "--stop-jobs-on-exit",
        # Real GPUs when NVML finds some; otherwise fake ones so the queue is usable at all.
        *([] if gpu_count is not None else ["--fallback-gpu-count", "2"]),
    ]
    if os.geteuid() == 0:
        # Root's own jobs may run as root on its own machine; everyone else's run as
        # themselves (the socket tells the master who they are).
        extra.append("--allow-root-jobs")
    argv = launch.agent_command(
        master_port=port,
        node_id=node_id,
        state_dir=state / LOCAL_NODE_DIR,
        key_file=key_file,
        tls_ca=key_file.parent / TLS_DIR / CA_CERT_FILE,  # made by the master at its start
        gpus=gpu_count,
        extra=extra,
    )
    node = launch.spawn(argv, log=state / "node.log", detach=True)
    (state / "node.pid").write_text(f"{node.pid}\n")
    return node


def _exited(exc: launch.ProcessExited) -> MgpuError:
    """One line, as every command's errors are: the log's last line says why, most often."""
    last = exc.tail.splitlines()[-1] if exc.tail.strip() else "no output"
    return MgpuError(f"local {exc.log.stem} exited at start: {last} (see {exc.log})")


def stop(*, state: Path) -> list[str]:
    """Stop the node first (it kills its jobs), then the master. Returns what was stopped."""
    stopped = []
    for name in reversed(NAMES):
        pid_file = state / f"{name}.pid"
        pid = _read_pid(pid_file)
        if pid is not None:
            launch.stop_process(pid, STOP_TIMEOUT_S)
            stopped.append(f"{name} (pid {pid})")
        pid_file.unlink(missing_ok=True)
    return stopped


def status(*, state: Path) -> dict[str, int | None]:
    return {name: _read_pid(state / f"{name}.pid") for name in NAMES}
