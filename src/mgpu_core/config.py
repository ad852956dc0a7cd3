"""Where the master is: addresses, the Unix socket, config files, TLS trust. Clients import
this at every start, so it stays light; the daemons' own settings are in mgpu_core.daemons.

Precedence everywhere: command line > environment > config file > defaults. Nothing here exits
the process; invalid input raises :class:`ConfigError` with an actionable one-line message.
"""

from __future__ import annotations

from mgpu_core import procenv
from mgpu_core.constants import (
    APP_DIR,
    CA_CERT_FILE,
    CONFIG_MASTER,
    CONFIG_SOCKET,
    CONFIG_TLS_CA,
    LOCAL_DIR,
    MASTER_DIR,
    SYSTEM_CONFIG,
    SYSTEM_CONFIG_DIR,
    SYSTEM_SOCKET,
    TLS_DIR,
    USER_CONFIG_FILE,
)
from mgpu_core.constants import SOCKET_FILE as SOCKET_FILE  # re-exported: older importers
from mgpu_core.errors import ConfigError
from mgpu_core.protocol import DEFAULT_PORT

# Not typing.TYPE_CHECKING: typing and pathlib would cost every client ~8 ms of start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

MASTER_ENV = "MGPU_MASTER"
SOCKET_ENV = "MGPU_SOCKET"
TLS_CA_ENV = "MGPU_TLS_CA"
PLAINTEXT_ENV = "MGPU_INSECURE_PLAINTEXT"
CONFIG_ENV = "MGPU_CONFIG"
UNIX_PREFIX = "unix:"
# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107


class Address:
    """A TCP address, or a Unix-domain socket when ``path`` is set. Over TCP, ``tls_ca``:
    speak TLS and trust only this CA's certificates; ``plaintext``: the user chose plain TCP
    (a master run with ``--insecure-plaintext``); neither: no way to reach the master safely,
    refused at connect (:func:`check_transport`). Immutable; a plain class rather than a
    dataclass because ``dataclasses`` (and the ``inspect`` it imports) would cost every client
    command several milliseconds of start-up."""

    __slots__ = ("host", "path", "plaintext", "port", "tls_ca")

    def __init__(
        self, host: str, port: int, path: str = "", tls_ca: str = "", plaintext: bool = False
    ) -> None:
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "port", port)
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "tls_ca", tls_ca)
        object.__setattr__(self, "plaintext", plaintext)

    host: str
    port: int
    path: str
    tls_ca: str
    plaintext: bool

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Address is immutable")

    def _key(self) -> tuple[str, int, str, str, bool]:
        return (self.host, self.port, self.path, self.tls_ca, self.plaintext)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Address) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Address({self.host!r}, {self.port!r}, path={self.path!r}, "
            f"tls_ca={self.tls_ca!r}, plaintext={self.plaintext!r})"
        )

    def __str__(self) -> str:
        if self.path:
            return f"{UNIX_PREFIX}{self.path}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def unix_address(path: Path | str) -> Address:
    text = str(path)
    if len(procenv.fsencode(text)) > MAX_SOCKET_PATH:
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
    digits = port_text.isascii() and port_text.isdigit() and len(port_text) <= 5
    if not digits or not 0 < int(port_text) < 65536:
        raise ConfigError(f"invalid address '{text}': port must be 1-65535")
    return Address(host, int(port_text))


# The path helpers work on strings (procenv, not os: a command's start-up); the public ones
# return pathlib Paths, imported when called.


def _config_home() -> str:
    return procenv.getenv("XDG_CONFIG_HOME") or procenv.join(procenv.home(), ".config")


def _state_home() -> str:
    return procenv.getenv("XDG_STATE_HOME") or procenv.join(procenv.home(), ".local", "state")


def user_config_dir() -> Path:
    from pathlib import Path

    return Path(_config_home(), APP_DIR)


def user_state_dir() -> Path:
    from pathlib import Path

    return Path(_state_home(), APP_DIR)


def local_mode_dir() -> Path:
    """Where ``mgpu_client local`` keeps its cluster (master state in ``master/``)."""
    return user_state_dir() / LOCAL_DIR


def _config_files() -> list[str]:
    explicit = procenv.getenv(CONFIG_ENV)
    if explicit:
        return [explicit]
    return [procenv.join(_config_home(), APP_DIR, USER_CONFIG_FILE), SYSTEM_CONFIG]


def _from_files(key: str) -> str | None:
    for path in _config_files():
        try:
            info = procenv.stat(path)
        except OSError:
            continue
        value = _read_table(path, info.st_mtime_ns, info.st_size).get(key)
        if value is not None:
            if not isinstance(value, str):
                raise ConfigError(f"{path}: '{key}' must be a string")
            return value
    return None


# Parsed config files by (path, mtime_ns, size): a plain dict, not functools.lru_cache,
# whose import (functools, collections) costs a client command ~1 ms of start-up.
_TABLES: dict[tuple[str, int, int], dict[str, object]] = {}


def _read_table(path: str, mtime_ns: int, size: int) -> dict[str, object]:
    """A config file's table, parsed once per process (a client asks it for the socket, the
    master and the CA) and again only if the file changed."""
    key = (path, mtime_ns, size)
    if key in _TABLES:
        return _TABLES[key]
    # tomllib is imported only when a file exists: client start-up time matters.
    import tomllib

    try:
        with open(path, encoding="utf-8") as f:
            table = tomllib.loads(f.read())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    if len(_TABLES) >= 8:
        _TABLES.clear()
    _TABLES[key] = table
    return table


def resolve_master(cli_value: str | None) -> Address:
    """The master's address: --master, else $MGPU_MASTER, else a config file, else default;
    with TLS when $MGPU_TLS_CA or the config's ``tls_ca`` names the cluster's CA."""
    address = Address("127.0.0.1", DEFAULT_PORT)
    for value in (cli_value, procenv.getenv(MASTER_ENV) or None, _from_files(CONFIG_MASTER)):
        if value:
            address = parse_address(value)
            break
    return with_tls(address, None)


def with_tls(address: Address, ca: str | None, *, plaintext: bool = False) -> Address:
    """``address`` over TLS with ``ca``, else $MGPU_TLS_CA, else the config's ``tls_ca``,
    else ``ca.pem`` in the user's or the system's mgpu config directory (where ``mgpu_client
    admin token create --install`` and ``mgpu_node join`` put it). ``plaintext`` (or
    $MGPU_INSECURE_PLAINTEXT=1): plain TCP, for a master run with ``--insecure-plaintext``."""
    if address.path:
        return address
    if plaintext or procenv.getenv(PLAINTEXT_ENV) == "1":
        return Address(address.host, address.port, plaintext=True)
    ca = ca or procenv.getenv(TLS_CA_ENV) or _from_files(CONFIG_TLS_CA) or _default_ca()
    return Address(address.host, address.port, tls_ca=ca) if ca else address


def _default_ca() -> str | None:
    for directory in (procenv.join(_config_home(), APP_DIR), SYSTEM_CONFIG_DIR):
        path = procenv.join(directory, CA_CERT_FILE)
        if procenv.is_file(path):
            return path
    return None


def check_transport(address: Address) -> None:
    """Refuse a TCP address with neither a CA to verify the master by nor an explicit choice
    of plain TCP: nothing is sent to a master that has not proved who it is."""
    if address.path or address.tls_ca or address.plaintext:
        return
    raise ConfigError(
        f"no cluster CA to verify the master at {address} by: copy the master's "
        f"STATE_DIR/{TLS_DIR}/{CA_CERT_FILE} to ~/.config/{APP_DIR}/{CA_CERT_FILE} "
        f"(or set ${TLS_CA_ENV}); for a master run with --insecure-plaintext, "
        f"set {PLAINTEXT_ENV}=1"
    )


def client_addresses(cli_value: str | None) -> list[Address]:
    """Where a client tries to reach the master, in order.

    An explicit --master or $MGPU_MASTER is the only choice. Otherwise the master's Unix
    socket comes first when one exists on this host ($MGPU_SOCKET, the config's ``socket``,
    the local-mode cluster's, the system master's): there the kernel vouches for the user, so
    clients on the master's host need no token. Then the config's TCP address or the default.
    """
    explicit = cli_value or procenv.getenv(MASTER_ENV)
    if explicit:
        return [resolve_master(explicit)]
    configured = procenv.getenv(SOCKET_ENV) or _from_files(CONFIG_SOCKET)
    candidates = (
        [configured]
        if configured
        else [
            procenv.join(_state_home(), APP_DIR, LOCAL_DIR, MASTER_DIR, SOCKET_FILE),
            SYSTEM_SOCKET,
        ]
    )
    sockets = [unix_address(p) for p in candidates if procenv.is_socket(p)]
    return [*sockets, resolve_master(None)]
