"""Process configuration: one frozen dataclass per process, validated once.

Precedence everywhere: command line > environment > config file > defaults. Nothing here exits
the process; invalid input raises :class:`ConfigError` with an actionable one-line message.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from mgpu_core.errors import ConfigError
from mgpu_core.protocol import DEFAULT_PORT, MAX_FRAME_BYTES

MASTER_ENV = "MGPU_MASTER"
SOCKET_ENV = "MGPU_SOCKET"
TLS_CA_ENV = "MGPU_TLS_CA"
CONFIG_ENV = "MGPU_CONFIG"
SYSTEM_CONFIG = Path("/etc/mgpu/config.toml")
# Where a system master (state directory /var/lib/mgpu) puts its Unix socket.
SYSTEM_SOCKET = Path("/var/lib/mgpu/master.sock")
SOCKET_FILE = "master.sock"
UNIX_PREFIX = "unix:"
# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107


@dataclass(frozen=True, slots=True)
class Address:
    """A TCP address, or a Unix-domain socket when ``path`` is set. ``tls_ca``: speak TLS
    and trust only this CA's certificates (TCP only)."""

    host: str
    port: int
    path: str = ""
    tls_ca: str = ""

    def __str__(self) -> str:
        if self.path:
            return f"{UNIX_PREFIX}{self.path}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def unix_address(path: Path | str) -> Address:
    text = str(path)
    if len(os.fsencode(text)) > MAX_SOCKET_PATH:
        raise ConfigError(f"socket path {text} is longer than {MAX_SOCKET_PATH} bytes")
    return Address("", 0, text)


def parse_address(text: str, *, default_port: int = DEFAULT_PORT) -> Address:
    """``host``, ``host:port``, ``[v6]:port`` or ``unix:/path/to/socket`` -> Address."""
    raw = text.strip()
    if not raw:
        raise ConfigError("empty master address: use HOST:PORT")
    if raw.startswith(UNIX_PREFIX):
        if not raw[len(UNIX_PREFIX) :]:
            raise ConfigError(f"invalid address '{text}': use unix:/path/to/socket")
        return unix_address(raw[len(UNIX_PREFIX) :])
    host, port_text = raw, ""
    if raw.startswith("["):
        end = raw.find("]")
        if end < 0:
            raise ConfigError(f"invalid address '{text}': unclosed '['")
        host, rest = raw[1:end], raw[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ConfigError(f"invalid address '{text}': use [HOST]:PORT")
        port_text = rest[1:]
    elif raw.count(":") == 1:
        host, port_text = raw.split(":")
    if not host:
        raise ConfigError(f"invalid address '{text}': no host")
    if not port_text:
        return Address(host, default_port)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"invalid address '{text}': port must be 1-65535")
    return Address(host, int(port_text))


def user_config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mgpu"


def user_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "mgpu"


def _config_files() -> list[Path]:
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return [Path(explicit)]
    return [user_config_dir() / "config.toml", SYSTEM_CONFIG]


def local_mode_dir() -> Path:
    """Where ``mgpu_client local`` keeps its cluster (master state in ``master/``)."""
    return user_state_dir() / "local"


def _from_files(key: str) -> str | None:
    # tomllib is imported only when a file exists: client start-up time matters.
    for path in _config_files():
        if not path.is_file():
            continue
        import tomllib

        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
        value = data.get(key)
        if value is not None:
            if not isinstance(value, str):
                raise ConfigError(f"{path}: '{key}' must be a string")
            return value
    return None


def resolve_master(cli_value: str | None) -> Address:
    """The master's address: --master, else $MGPU_MASTER, else a config file, else default;
    with TLS when $MGPU_TLS_CA or the config's ``tls_ca`` names the cluster's CA."""
    address = Address("127.0.0.1", DEFAULT_PORT)
    for value in (cli_value, os.environ.get(MASTER_ENV) or None, _from_files("master")):
        if value:
            address = parse_address(value)
            break
    return with_tls(address, None)


def with_tls(address: Address, ca: str | None) -> Address:
    """``address`` using TLS with ``ca`` (else $MGPU_TLS_CA, else the config's ``tls_ca``)."""
    if address.path:
        return address
    ca = ca or os.environ.get(TLS_CA_ENV) or _from_files("tls_ca")
    return dataclasses.replace(address, tls_ca=ca) if ca else address


def _is_socket(path: Path) -> bool:
    try:
        return path.is_socket()
    except OSError:  # a directory on the way we may not search
        return False


def client_addresses(cli_value: str | None) -> list[Address]:
    """Where a client tries to reach the master, in order.

    An explicit --master or $MGPU_MASTER is the only choice. Otherwise the master's Unix
    socket comes first when one exists on this host ($MGPU_SOCKET, the config's ``socket``,
    the local-mode cluster's, the system master's): there the kernel vouches for the user, so
    clients on the master's host need no token. Then the config's TCP address or the default.
    """
    explicit = cli_value or os.environ.get(MASTER_ENV)
    if explicit:
        return [resolve_master(explicit)]
    configured = os.environ.get(SOCKET_ENV) or _from_files("socket")
    candidates = (
        [Path(configured)]
        if configured
        else [local_mode_dir() / "master" / SOCKET_FILE, SYSTEM_SOCKET]
    )
    sockets = [unix_address(p) for p in candidates if _is_socket(p)]
    return [*sockets, resolve_master(None)]


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    state_dir: Path = Path("mgpu-state")
    port_file: Path | None = None
    socket_path: Path | None = None  # the Unix socket for clients on this host
    tls_cert: Path | None = None  # with tls_key: TLS on the TCP port
    tls_key: Path | None = None
    max_frame_bytes: int = MAX_FRAME_BYTES
    hello_timeout_s: float = 10.0
    node_timeout_s: float = 15.0
    kill_grace_s: float = 10.0
    # A client that stops reading (a stuck srun) is dropped past this much queued output,
    # instead of the master buffering a job's whole output in memory.
    max_client_backlog_bytes: int = 64 * 1024 * 1024
    admins: frozenset[str] = frozenset()
    private_commands: bool = False  # others' queue rows without command line and directory
    # Bounds on what one host (or everyone) can hold open: a flood costs a closed socket each.
    max_connections: int = 4096
    max_connections_per_address: int = 512

    def validate(self) -> ServerConfig:
        if not 0 <= self.port < 65536:
            raise ConfigError(f"invalid port {self.port}: use 0-65535")
        for name in ("hello_timeout_s", "node_timeout_s", "kill_grace_s"):
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
    fake_gpu_count: int | None = None
    state_dir: Path = Path("mgpu-node-state")
    heartbeat_interval_s: float = 5.0
    reconnect_max_s: float = 5.0
    max_frame_bytes: int = MAX_FRAME_BYTES
    job_user: JobUser = JobUser.SUBMITTER
    allow_root_jobs: bool = False  # without it, a job that would run as root fails

    def validate(self) -> NodeConfig:
        if not self.node_id or len(self.node_id) > 256 or any(c.isspace() for c in self.node_id):
            raise ConfigError(f"invalid node id {self.node_id!r}: 1-256 non-blank characters")
        if self.fake_gpu_count is not None and not 0 <= self.fake_gpu_count <= 64:
            raise ConfigError("--gpu-count must be between 0 and 64")
        if self.heartbeat_interval_s <= 0:
            raise ConfigError("heartbeat interval must be positive")
        return self
