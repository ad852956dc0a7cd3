"""The daemons' configuration: one frozen dataclass per process, validated once.

Precedence everywhere: command line > environment > config file > defaults. Nothing here exits
the process; invalid input raises :class:`ConfigError` with an actionable one-line message.
Clients never import this module (dataclasses cost start-up time).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from mgpu_core import constants
from mgpu_core.config import Address, user_state_dir
from mgpu_core.errors import ConfigError
from mgpu_core.protocol import DEFAULT_PORT, MAX_FRAME_BYTES


def default_master_state_dir() -> Path:
    """/var/lib/mgpu for a master run by root, else ~/.local/state/mgpu/master."""
    if os.geteuid() == 0:
        return Path(constants.SYSTEM_STATE_DIR)
    return user_state_dir() / constants.MASTER_DIR


def default_node_state_dir(node_id: str) -> Path:
    """~/.local/state/mgpu/node-ID: per node name, so that agents of several fake nodes on one
    host (tests, demos) never share a directory."""
    return user_state_dir() / f"{constants.NODE_DIR_PREFIX}{node_id}"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    state_dir: Path = field(default_factory=default_master_state_dir)
    port_file: Path | None = None
    socket_path: Path | None = None  # the Unix socket for clients on this host
    tls_cert: Path | None = None  # with tls_key: TLS on the TCP port
    tls_key: Path | None = None
    # Plain TCP on the port (no TLS): only by explicit choice (--insecure-plaintext), since
    # every frame after the handshake could then be read and injected on the network.
    insecure_plaintext: bool = False
    max_frame_bytes: int = MAX_FRAME_BYTES
    hello_timeout_s: float = constants.HELLO_TIMEOUT_S
    node_timeout_s: float = constants.NODE_TIMEOUT_S
    kill_grace_s: float = constants.KILL_GRACE_S
    fence_timeout_s: float = constants.FENCE_TIMEOUT_S
    # A client that stops reading (a stuck srun) is dropped past this much queued output,
    # instead of the master buffering a job's whole output in memory.
    max_client_backlog_bytes: int = 64 * 1024 * 1024
    admins: frozenset[str] = frozenset()
    private_commands: bool = False  # others' queue rows without command line and directory
    # Bounds on what one host (or everyone) can hold open: a flood costs a closed socket each.
    max_connections: int = constants.MAX_CONNECTIONS
    max_connections_per_address: int = constants.MAX_CONNECTIONS_PER_ADDRESS  # per network
    max_unauthenticated_per_address: int = constants.MAX_UNAUTHENTICATED_PER_ADDRESS
    # [history]: finished jobs stay in the master's memory this long (squeue shows them),
    # then only in the database, which purges them after the retention.
    keep_finished_s: float = constants.KEEP_FINISHED_S
    history_retention_s: float = constants.HISTORY_RETENTION_S
    # [http]: the HTTP API, dashboard and /metrics (None: off). TLS with the master's own
    # certificate unless tls = false; the body limit and each address's request rate.
    http_listen: tuple[str, int] | None = None
    http_tls: bool = True
    http_max_body_bytes: int = 1024 * 1024
    http_rate_per_s: float = 50.0
    http_burst: int = 200
    # [http] loopback_read: a listener on loopback answers GETs without a token (read-only,
    # as "anonymous"): the dashboard on the master's own host without a login.
    http_loopback_read: bool = False

    def validate(self) -> ServerConfig:
        if not 0 <= self.port < 65536:
            raise ConfigError(f"invalid port {self.port}: use 0-65535")
        for name in ("hello_timeout_s", "node_timeout_s", "kill_grace_s", "fence_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        return self


class JobUser(StrEnum):
    """Whose account a node agent runs jobs under (``mgpu_node --job-user``)."""

    SUBMITTER = "submitter"  # the submitting user's (a root agent switches to it)
    AGENT = "agent"  # the agent's own, whoever submitted (single-user setups, tests)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    master: Address
    node_id: str
    # No default here: the default depends on node_id (default_node_state_dir), and a
    # fixed one would let two agents share a directory.
    state_dir: Path = field(kw_only=True)
    fake_gpu_count: int | None = None
    heartbeat_interval_s: float = constants.HEARTBEAT_INTERVAL_S
    # The fence when the master does not say (an older master): the jobs are killed after this
    # long without word from it (mgpu_node.lease).
    fence_timeout_s: float = constants.FENCE_TIMEOUT_S
    reconnect_max_s: float = 5.0
    max_frame_bytes: int = MAX_FRAME_BYTES
    job_user: JobUser = JobUser.SUBMITTER
    allow_root_jobs: bool = False  # without it, a job that would run as root fails
    # --port-range LO-HI: TCP ports the master may give this node's jobs (--ports); () = none.
    port_range: tuple[int, ...] = ()

    def validate(self) -> NodeConfig:
        if not self.node_id or len(self.node_id) > 256 or any(c.isspace() for c in self.node_id):
            raise ConfigError(f"invalid node id {self.node_id!r}: 1-256 non-blank characters")
        if self.fake_gpu_count is not None and not 0 <= self.fake_gpu_count <= 64:
            raise ConfigError("--gpu-count must be between 0 and 64")
        if self.heartbeat_interval_s <= 0:
            raise ConfigError("heartbeat interval must be positive")
        if self.fence_timeout_s <= 0:
            raise ConfigError("--fence-timeout must be positive")
        return self
