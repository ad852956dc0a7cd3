"""Start a master and node agents as processes, wait until they are ready, and stop them.

The one implementation behind local mode (:mod:`mgpu_client.local`), the integration tests'
clusters and the benchmarks' (bench/harness.py): each starts the real programs, as users
run them, from the same command lines.

Readiness is a condition polled under a deadline, never a fixed sleep: the master is ready
when the port file it writes *after* binding exists (the write is atomic), an agent when
the master lists it as up. A process that exits while it is being waited for fails the wait
at once with :class:`ProcessExited` (naming its log), rather than after the whole timeout.

Imports only the standard library and :mod:`mgpu_core`: it ships in the package for local
mode, and bench/ (which must not import the tests) and tests/ import it from there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Self, TypeVar

from mgpu_core.auth import KEY_FILE
from mgpu_core.config import SOCKET_FILE
from mgpu_core.constants import CA_CERT_FILE, TLS_DIR
from mgpu_core.errors import MgpuError

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
POLL_S = 0.02
LOCALHOST = "127.0.0.1"

_T = TypeVar("_T")
Child = subprocess.Popen[bytes]


class ProcessExited(MgpuError):
    """A process ended while we waited for it (or for something it should bring about); the
    message ends with the last lines of its log."""

    code = "process_exited"

    def __init__(self, log: Path, status: int, what: str) -> None:
        self.log, self.status = log, status
        self.tail = log_tail(log)
        super().__init__(
            f"{log.stem} exited (status {status}) while waiting for {what}; "
            f"the end of {log}:\n{self.tail}"
        )


class MasterProcess(NamedTuple):
    proc: Child
    port: int


PLAINTEXT_FLAG = "--insecure-plaintext"

# ---- command lines --------------------------------------------------------------------------


def program(name: str, module: str) -> list[str]:
    """How to start a sibling program: the bundled launcher next to this one when frozen
    (PyInstaller), else ``python -m module`` with this interpreter."""
    if getattr(sys, "frozen", False):
        return [str(Path(sys.executable).with_name(name))]
    return [sys.executable, "-m", module]


def master_command(
    *,
    state_dir: Path,
    port: int = 0,
    port_file: Path | None = None,
    host: str = LOCALHOST,
    extra: Sequence[str] = (),
    prog: Sequence[str] | None = None,
) -> list[str]:
    """The master's command line (``prog``: the program, default :func:`program`'s)."""
    argv = [*(prog or program("mgpu_master", "mgpu_server"))]
    argv += ["--host", host, "--port", str(port), "--state-dir", str(state_dir)]
    if port_file is not None:
        argv += ["--port-file", str(port_file)]
    return [*argv, *extra]


def agent_command(
    *,
    master_port: int,
    node_id: str,
    state_dir: Path,
    key_file: Path,
    tls_ca: Path | None,
    master_host: str = LOCALHOST,
    gpus: int | None = None,
    cpus: int | None = None,
    extra: Sequence[str] = (),
    prog: Sequence[str] | None = None,
) -> list[str]:
    """A node agent's command line; ``gpus`` fakes that many GPUs (None: the agent detects);
    ``tls_ca`` the cluster CA (None: plain TCP, to a master run with --insecure-plaintext)."""
    argv = [*(prog or program("mgpu_node", "mgpu_node"))]
    argv += ["--master-host", master_host, "--master-port", str(master_port)]
    argv += ["--node-id", node_id, "--state-dir", str(state_dir), "--key-file", str(key_file)]
    argv += ["--tls-ca", str(tls_ca)] if tls_ca is not None else ["--insecure-plaintext"]
    if gpus is not None:
        argv += ["--gpu-count", str(gpus)]
    if cpus is not None:
        argv += ["--cpus", str(cpus)]
    return [*argv, *extra]


# ---- starting and waiting -------------------------------------------------------------------


def spawn(
    argv: Sequence[str],
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    detach: bool = False,
) -> Child:
    """Start ``argv`` with stdout and stderr appended to ``log`` and no stdin; ``detach``
    puts it in its own session, so it outlives us and our terminal's signals."""
    with open(log, "ab") as out:  # the child has its own copy of the descriptor
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=None if env is None else dict(env),
            start_new_session=detach,
        )


def wait_for(
    predicate: Callable[[], _T | None],
    timeout_s: float,
    what: str,
    *,
    every_s: float = POLL_S,
    watch: Mapping[Path, Child] | None = None,
) -> _T:
    """Poll ``predicate`` every ``every_s`` until it returns something truthy, and return it.

    :class:`TimeoutError` after ``timeout_s``; :class:`ProcessExited` as soon as a process in
    ``watch`` (its log file -> the process) has ended, with the end of its log. Polling is
    the honest way here: these are other processes' files and replies, with no event to wait
    on. (A poll that asks the master costs it CPU: long measurements should poll slowly.)
    """
    deadline = time.monotonic() + timeout_s
    while True:
        for log, proc in (watch or {}).items():
            status = proc.poll()
            if status is not None:
                raise ProcessExited(log, status, what)
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(every_s)


def start_master(
    *,
    state_dir: Path,
    port_file: Path,
    log: Path,
    port: int = 0,
    extra: Sequence[str] = (),
    prog: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    detach: bool = False,
    timeout_s: float = START_TIMEOUT_S,
) -> MasterProcess:
    """Start a master on 127.0.0.1:``port`` (0: a free one) and return it with the port it
    bound, once it listens. If it does not come up, it is stopped and the error raised."""
    port_file.unlink(missing_ok=True)
    argv = master_command(
        state_dir=state_dir, port=port, port_file=port_file, extra=extra, prog=prog
    )
    proc = spawn(argv, log=log, env=env, detach=detach)
    try:
        wait_for(port_file.exists, timeout_s, "the master to listen", watch={log: proc})
        return MasterProcess(proc, int(port_file.read_text()))
    except BaseException:
        stop_process(proc)
        raise


def node_up(nodes: Iterable[Mapping[str, Any]], node_id: str) -> bool:
    """Whether the master's node list (``nodes`` request) has ``node_id`` registered, not down."""
    return any(n["node_id"] == node_id and n["state"] != "down" for n in nodes)


def log_tail(log: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log (what a failed start said), or why there are none."""
    try:
        text = log.read_text(errors="replace")
    except OSError as exc:
        return f"(unreadable: {exc})"
    return "\n".join(text.splitlines()[-lines:])


# ---- stopping -------------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, dead but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return not os.path.isdir("/proc/self")  # gone since kill(0), unless there is no /proc
    except (OSError, IndexError):
        return True


def stop_process(proc: Child | int, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, then SIGKILL if it has not ended after ``timeout_s``.

    ``proc`` is our child (reaped here), or the pid of a process that is not (local mode's
    ``stop`` runs in another process than its ``start``): then liveness is polled.
    """
    if isinstance(proc, int):
        _stop_pid(proc, timeout_s)
    else:
        stop_processes([proc], timeout_s)


def stop_processes(procs: Iterable[Child], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """:func:`stop_process` for several children at once: all get SIGTERM first, so their
    shutdowns overlap; any still running ``timeout_s`` later gets SIGKILL."""
    live = [proc for proc in procs if proc.poll() is None]
    for proc in live:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for proc in live:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)


def _stop_pid(pid: int, timeout_s: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        wait_for(lambda: not pid_alive(pid), timeout_s, f"pid {pid} to end", every_s=0.05)
    except TimeoutError:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        wait_for(lambda: not pid_alive(pid), STOP_TIMEOUT_S, f"pid {pid} to die", every_s=0.05)


# ---- a whole cluster ------------------------------------------------------------------------


@dataclass
class ProcessCluster:
    """A master and node agents as child processes, all state and logs under ``root``
    (``master.log``, ``node-<id>.log``, ``master/``, ``node-<id>/``).

    What is common to the tests' and the benchmarks' clusters; they add their clients (this
    module imports no client). ``master_args`` and ``node_args`` go to every start.
    """

    root: Path
    master_args: tuple[str, ...] = ()
    node_args: tuple[str, ...] = ()
    master_prog: tuple[str, ...] | None = None
    node_prog: tuple[str, ...] | None = None
    child_env: dict[str, str] | None = None
    port: int = 0
    master_state: Path = Path()
    master: Child | None = None
    nodes: dict[str, Child] = field(default_factory=dict)
    last_master_args: tuple[str, ...] = ()

    @property
    def address(self) -> str:
        """The master's TCP address (nodes; clients with a token)."""
        return f"{LOCALHOST}:{self.port}"

    @property
    def socket_address(self) -> str:
        """The master's Unix socket: the user who started it needs no token there."""
        return f"unix:{self.master_state / SOCKET_FILE}"

    @property
    def key_file(self) -> Path:
        return self.master_state / KEY_FILE

    @property
    def ca_file(self) -> Path | None:
        """The cluster CA the master made at its first start (None: it speaks plain TCP)."""
        plain = PLAINTEXT_FLAG in self.master_args or PLAINTEXT_FLAG in self.last_master_args
        return None if plain else self.master_state / TLS_DIR / CA_CERT_FILE

    def log(self, name: str) -> Path:
        """``master`` or ``node-<id>``'s log file."""
        return self.root / f"{name}.log"

    def log_text(self, name: str) -> str:
        return self.log(name).read_text(errors="replace")

    def start_master(
        self,
        *extra: str,
        port: int = 0,
        state_dir: Path | None = None,
        timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        """Start (or restart, with ``port=cluster.port``) the master; returns once it listens."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.master_state = state_dir or self.root / "master"
        self.last_master_args = extra
        self.master, self.port = start_master(
            state_dir=self.master_state,
            port_file=self.root / "master.port",
            log=self.log("master"),
            port=port,
            extra=(*self.master_args, *extra),
            prog=self.master_prog,
            env=self.child_env,
            timeout_s=timeout_s,
        )

    def start_agent(
        self,
        node_id: str,
        *extra: str,
        gpus: int | None,
        cpus: int | None,
        up: Callable[[], bool] | None = None,
        timeout_s: float = START_TIMEOUT_S,
        master_port: int | None = None,
    ) -> Child:
        """Start an agent; with ``up`` (is it registered?), return once that holds.
        ``master_port``: another way to the master (a proxy) than its own port."""
        proc = spawn(
            agent_command(
                master_port=master_port or self.port,
                node_id=node_id,
                state_dir=self.root / f"node-{node_id}",
                key_file=self.key_file,
                tls_ca=self.ca_file,
                gpus=gpus,
                cpus=cpus,
                extra=(*self.node_args, *extra),
                prog=self.node_prog,
            ),
            log=self.log(f"node-{node_id}"),
            env=self.child_env,
        )
        self.nodes[node_id] = proc
        if up is not None:
            self.wait_for(up, timeout_s, f"node {node_id} to register", node_id)
        return proc

    def wait_for(
        self, predicate: Callable[[], _T | None], timeout_s: float, what: str, *node_ids: str
    ) -> _T:
        """:func:`wait_for`, failing at once if the master or one of ``node_ids`` exits."""
        watch = {self.log(f"node-{n}"): self.nodes[n] for n in node_ids}
        if self.master is not None:
            watch[self.log("master")] = self.master
        return wait_for(predicate, timeout_s, what, watch=watch)

    def kill_master(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        if self.master is not None:
            self.master.kill()
            self.master.wait(timeout=STOP_TIMEOUT_S)

    def stop(self) -> None:
        """The nodes first (each stops its jobs), then the master."""
        stop_processes(self.nodes.values())
        if self.master is not None:
            stop_process(self.master)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
