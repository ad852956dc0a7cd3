"""The master's optional config file (TOML): scheduling policy, QoS, admins.

```toml
admins = ["alice"]                # besides root
private_commands = false          # true: others' jobs are listed without command and directory
[tls]                             # optional: TLS on the TCP port (see mgpu_master init)
cert = "/var/lib/mgpu/tls/master.pem"
key = "/var/lib/mgpu/tls/master.key"
[scheduler]
priority_weight_age = 1000
priority_weight_fairshare = 10000
priority_weight_qos = 1000
priority_max_age = "7-0"          # Slurm time format, or seconds
fairshare_half_life = "7-0"
default_qos = "normal"
queue_depth = 1000                # eligible jobs a scheduling pass examines at most
idle_after = "10:00"              # a job whose GPUs are idle this long is flagged (squeue, API)
idle_threshold_pct = 1            # ... idle: utilisation at most this, memory unchanged
[qos.normal]
max_sessions_per_user = 2         # sessions (mgpu_client session) one user may hold; 0: any
session_grace = 300               # a session goes on this long past its TTL, warned
idle_warn = "30:00"               # warn a job idle this long (its terminals, webhooks); 0: no
idle_end = "1:00:00"              # end a job idle this long (0, the default: never)
[qos.long]
priority = 10
max_wall = "3-0"
max_gpus_per_user = 8
max_jobs_per_user = 4
grace_time = 60                   # seconds past the time limit before the kill
[limits]                          # per user; admins are not limited (0: no limit)
max_pending_jobs_per_user = 10000 # an array counts each task
submit_rate = 200                 # submissions per second, on average ...
submit_burst = 2000               # ... and at once
[qos.high]
priority = 100
allowed_users = ["alice"]         # who may use this QoS (either list set: only those named;
allowed_groups = ["gpu-high"]     # groups resolved when a job is checked, not at start-up)
cluster_name = "mgpu"             # what jobs see as SLURM_CLUSTER_NAME (a top-level key)
[partition.gpu]                   # none: one partition "gpu" with every node, no limits
nodes = "gpu[01-04]"              # hostlist expression(s), a list of them, or "ALL" (default)
default = true                    # exactly one, or the first listed
max_time = "2-0"                  # longer jobs are refused (0 or "UNLIMITED": no limit)
default_time = "1:00:00"          # a job without --time gets this (else max_time)
allowed_qos = ["normal", "long"]  # (absent: every QoS)
allowed_users = ["alice"]         # as for a QoS: either list set, only those named
allowed_groups = ["lab"]
priority_tier = 1                 # higher tiers' jobs are considered first
state = "UP"                      # UP, DOWN, DRAIN or INACTIVE
[http]                            # the HTTP API, dashboard and /metrics (absent: off)
listen = "127.0.0.1:6861"         # HOST:PORT; https with the master's certificate unless
tls = true                        # tls = false
max_body = "1M"                   # request bodies at most
rate = 50                         # requests per second per address on average (0: no limit)
burst = 200                       # ... and at once
loopback_read = false             # true: GET without a token from this host (read-only)
[history]
keep_in_memory = "5m"             # finished jobs in the master's memory (squeue shows them)
retention = "90d"                 # then in its database (history, sacct, report); purged after
```
Unknown keys are errors (a typo must not silently change policy).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mgpu_core.constants import HISTORY_RETENTION_S, KEEP_FINISHED_S
from mgpu_core.errors import ConfigError
from mgpu_core.hostlist import expand_hostlist
from mgpu_core.limits import MAX_NAME_LEN
from mgpu_core.units import parse_duration_s, parse_size, parse_time_limit
from mgpu_server.net.notify import NotifySettings
from mgpu_server.notifyconf import notify_settings
from mgpu_server.scheduling.partitions import Partition, Partitions, PartitionState
from mgpu_server.scheduling.policy import PolicyConfig, Qos
from mgpu_server.state.quota import DEFAULT_LIMITS, UserLimits

_SCHEDULER_KEYS = {
    "priority_weight_age": "weight_age",
    "priority_weight_fairshare": "weight_fairshare",
    "priority_weight_qos": "weight_qos",
    "priority_max_age": "max_age_s",
    "fairshare_half_life": "half_life_s",
    "default_qos": "default_qos",
    "queue_depth": "queue_depth",
    "idle_after": "idle_after_s",
    "idle_threshold_pct": "idle_util_pct",
}
_QOS_KEYS = {
    "priority": "priority",
    "max_gpus_per_user": "max_gpus_per_user",
    "max_jobs_per_user": "max_jobs_per_user",
    "max_wall": "max_wall_s",
    "grace_time": "grace_s",
    "max_sessions_per_user": "max_sessions_per_user",
    "session_grace": "session_grace_s",
    "idle_warn": "idle_warn_s",
    "idle_end": "idle_end_s",
    "allowed_users": "allowed_users",
    "allowed_groups": "allowed_groups",
}
_PARTITION_KEYS = {
    "nodes": "nodes",
    "default": "default",
    "max_time": "max_time_s",
    "default_time": "default_time_s",
    "allowed_qos": "allowed_qos",
    "allowed_users": "allowed_users",
    "allowed_groups": "allowed_groups",
    "priority_tier": "priority_tier",
    "state": "state",
}
_DURATIONS = {
    "max_age_s",
    "half_life_s",
    "max_wall_s",
    "grace_s",
    "max_time_s",
    "default_time_s",
    "session_grace_s",
    "idle_after_s",
    "idle_warn_s",
    "idle_end_s",
}
_NAME_LISTS = {"allowed_users", "allowed_groups", "allowed_qos"}
# A partition's or the cluster's name: what -p lists (comma-separated) and jobs see.
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _value(where: str, key: str, value: Any) -> Any:
    if key in _DURATIONS:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        if isinstance(value, str):
            try:
                return parse_time_limit(value)
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        raise ConfigError(f"{where}: '{key}' must be seconds or a Slurm time like \"7-0\"")
    if key in _NAME_LISTS:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{where}: '{key}' must be a list of names")
        return frozenset(value)
    if key == "default_qos":
        if not isinstance(value, str):
            raise ConfigError(f"{where}: default_qos must be a string")
        return value
    if key == "queue_depth":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{where}: queue_depth must be a whole number of jobs, at least 1")
        return value
    if key in _PARTITION_VALUES:
        return _PARTITION_VALUES[key](where, value)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{where}: '{key}' must be a non-negative number")
    return value


def _node_names(where: str, value: Any) -> frozenset[str] | None:
    """``nodes``: "ALL", a hostlist expression, or a list of them."""
    if value == "ALL":
        return None
    exprs = [value] if isinstance(value, str) else value
    if not isinstance(exprs, list) or not exprs or not all(isinstance(e, str) for e in exprs):
        raise ConfigError(f'{where}: must be "ALL", a hostlist like "gpu[01-04]", or a list')
    try:
        return frozenset(name for expr in exprs for name in expand_hostlist(expr))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _flag(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: must be true or false")
    return value


def _tier(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65533:
        raise ConfigError(f"{where}: must be a whole number, 0..65533")
    return value


def _state(where: str, value: Any) -> PartitionState:
    if not isinstance(value, str) or value.upper() not in PartitionState.__members__:
        raise ConfigError(f"{where}: must be one of {', '.join(PartitionState)}")
    return PartitionState[value.upper()]


_PARTITION_VALUES = {
    "nodes": _node_names,
    "default": _flag,
    "priority_tier": _tier,
    "state": _state,
}


def _valid_name(name: object) -> bool:
    return isinstance(name, str) and 0 < len(name) <= MAX_NAME_LEN and set(name) <= _NAME_CHARS


def _partitions(path: Path, tables: object, qos: dict[str, Qos]) -> Partitions:
    """[partition.NAME] tables, in the file's order; none: the implicit partition."""
    if tables is None:
        return Partitions.implicit()
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"config file {path}: [partition.NAME] tables expected")
    found: dict[str, Partition] = {}
    for name, table in tables.items():
        where = f"{path}: [partition.{name}]"
        if not _valid_name(name):
            raise ConfigError(f"{where}: a partition's name is letters, digits, '.', '_', '-'")
        part = Partition(name, **_section(where, table, _PARTITION_KEYS))
        if part.default_time_s and part.max_time_s and part.default_time_s > part.max_time_s:
            raise ConfigError(f"{where}.default_time: longer than its max_time")
        unknown_qos = sorted((part.allowed_qos or frozenset()) - set(qos))
        if unknown_qos:
            raise ConfigError(f"{where}.allowed_qos: '{unknown_qos[0]}' is not a [qos.*] table")
        found[name] = part
    defaults = [p.name for p in found.values() if p.default]
    if len(defaults) > 1:
        raise ConfigError(
            f"config file {path}: [partition.*] default: only one may be the default "
            f"({', '.join(defaults)} say so)"
        )
    return Partitions(found, defaults[0] if defaults else next(iter(found)))


def _cluster_name(path: Path, value: object) -> str:
    if not _valid_name(value):
        raise ConfigError(
            f"config file {path}: cluster_name must be a name (letters, digits, '.', '_', '-')"
        )
    assert isinstance(value, str)
    return value


def _section(where: str, data: Any, keys: dict[str, str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(set(data) - set(keys))
    if unknown:
        raise ConfigError(f"{where}: unknown setting '{unknown[0]}' (known: {', '.join(keys)})")
    return {keys[k]: _value(f"{where}.{k}", keys[k], v) for k, v in data.items()}


@dataclass(frozen=True, slots=True)
class MasterSettings:
    policy: PolicyConfig
    admins: frozenset[str] = frozenset()
    private_commands: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    limits: UserLimits = DEFAULT_LIMITS
    keep_finished_s: float = KEEP_FINISHED_S  # [history] keep_in_memory
    history_retention_s: float = HISTORY_RETENTION_S  # [history] retention
    http: HttpSettings | None = None  # [http]: None, off
    notify: NotifySettings = field(default_factory=NotifySettings)  # [mail] [[webhooks]] [notify]


def _limits(path: Path, table: object) -> UserLimits:
    """[limits]: whole numbers of jobs, a rate that may be fractional."""
    if table is None:
        return DEFAULT_LIMITS
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: [limits] must be a table")
    keys = {
        "max_pending_jobs_per_user": "max_pending_jobs",
        "submit_rate": "submit_rate_per_s",
        "submit_burst": "submit_burst",
    }
    unknown = sorted(set(table) - set(keys))
    if unknown:
        known = ", ".join(keys)
        raise ConfigError(f"config file {path}: [limits]: unknown setting '{unknown[0]}' ({known})")
    for key, value in table.items():
        numeric = int | float if key == "submit_rate" else int
        if isinstance(value, bool) or not isinstance(value, numeric) or value < 0:
            kind = "number" if key == "submit_rate" else "whole number"
            raise ConfigError(f"config file {path}: [limits] {key} must be a {kind}, 0 or more")
    if table.get("submit_burst") == 0:
        raise ConfigError(f"config file {path}: [limits] submit_burst must be at least 1")
    return UserLimits(**{keys[k]: v for k, v in table.items()})


def _history(path: Path, table: object) -> tuple[float, float]:
    """[history] keep_in_memory and retention: durations ("5m", "90d") or seconds."""
    if table is None:
        return KEEP_FINISHED_S, HISTORY_RETENTION_S
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: [history] must be a table")
    unknown = sorted(set(table) - {"keep_in_memory", "retention"})
    if unknown:
        raise ConfigError(
            f"config file {path}: [history]: unknown setting '{unknown[0]}' "
            "(keep_in_memory, retention)"
        )
    found = {"keep_in_memory": KEEP_FINISHED_S, "retention": HISTORY_RETENTION_S}
    for key, value in table.items():
        try:
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ValueError("a duration (90s, 30m, 8h, 7d) or a number of seconds")
            seconds = parse_duration_s(value) if isinstance(value, str) else float(value)
        except ValueError as exc:
            raise ConfigError(f"config file {path}: [history] {key}: {exc}") from None
        if seconds < 0:
            raise ConfigError(f"config file {path}: [history] {key} must be 0 or more")
        found[key] = float(seconds)
    if found["retention"] < found["keep_in_memory"]:
        raise ConfigError(
            f"config file {path}: [history] retention must be at least keep_in_memory"
        )
    return found["keep_in_memory"], found["retention"]


@dataclass(frozen=True)
class HttpSettings:
    host: str
    port: int
    tls: bool = True
    max_body_bytes: int = 1024 * 1024
    rate_per_s: float = 50.0
    burst: int = 200
    loopback_read: bool = False


def _http(path: Path, table: object) -> HttpSettings | None:
    """[http] listen = "HOST:PORT" (required), tls, max_body, rate, burst."""
    if table is None:
        return None
    where = f"config file {path}: [http]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    known = {"listen", "tls", "max_body", "rate", "burst", "loopback_read"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting '{unknown[0]}' ({', '.join(sorted(known))})")
    listen = table.get("listen")
    host, _, port_text = str(listen or "").rpartition(":")
    if not isinstance(listen, str) or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f'{where} listen must be "HOST:PORT" (e.g. "127.0.0.1:6861")')
    tls = table.get("tls", True)
    if not isinstance(tls, bool):
        raise ConfigError(f"{where} tls must be true or false")
    try:
        body = parse_size(str(table.get("max_body", "1M")), default_unit="B")
    except ValueError as exc:
        raise ConfigError(f"{where} max_body: {exc}") from None
    rate, burst = table.get("rate", 50.0), table.get("burst", 200)
    if isinstance(rate, bool) or not isinstance(rate, int | float) or rate < 0:
        raise ConfigError(f"{where} rate must be a number of requests per second (0: no limit)")
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        raise ConfigError(f"{where} burst must be a whole number, 1 or more")
    loopback_read = table.get("loopback_read", False)
    if not isinstance(loopback_read, bool):
        raise ConfigError(f"{where} loopback_read must be true or false")
    host = host.strip("[]")
    if loopback_read and host not in ("127.0.0.1", "::1", "localhost"):
        raise ConfigError(f"{where} loopback_read needs a loopback listen address, not {host}")
    return HttpSettings(host, int(port_text), tls, body, float(rate), burst, loopback_read)


def _tls(path: Path, table: object) -> tuple[Path | None, Path | None]:
    """[tls] cert and key (relative paths are relative to the config file)."""
    if table is None:
        return None, None
    if not isinstance(table, dict) or set(table) != {"cert", "key"}:
        raise ConfigError(f"config file {path}: [tls] needs exactly 'cert' and 'key'")
    if not all(isinstance(v, str) and v for v in table.values()):
        raise ConfigError(f"config file {path}: [tls] cert and key must be paths")
    return path.parent / table["cert"], path.parent / table["key"]


def load_master_settings(path: Path) -> MasterSettings:
    """The file's settings; ConfigError naming the file and the problem."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    sections = {"admins", "private_commands", "scheduler", "qos", "tls", "limits"}
    sections |= {"partition", "cluster_name", "history", "http", "mail", "webhooks", "notify"}
    unknown = sorted(set(data) - sections)
    if unknown:
        raise ConfigError(f"config file {path}: unknown section '{unknown[0]}'")
    admins = data.get("admins", [])
    if not isinstance(admins, list) or not all(isinstance(a, str) for a in admins):
        raise ConfigError(f"config file {path}: admins must be a list of user names")
    sched = _section(f"{path}: [scheduler]", data.get("scheduler", {}), _SCHEDULER_KEYS)
    qos_tables = data.get("qos", {"normal": {}})
    if not isinstance(qos_tables, dict) or not qos_tables:
        raise ConfigError(f"config file {path}: [qos.NAME] tables expected")
    qos = {
        name: Qos(name, **_section(f"{path}: [qos.{name}]", table, _QOS_KEYS))
        for name, table in qos_tables.items()
    }
    default = sched.get("default_qos", "normal" if "normal" in qos else next(iter(qos)))
    if default not in qos:
        raise ConfigError(f"config file {path}: default_qos '{default}' is not a [qos.*] table")
    sched["default_qos"] = default
    private = data.get("private_commands", False)
    if not isinstance(private, bool):
        raise ConfigError(f"config file {path}: private_commands must be true or false")
    cert, key = _tls(path, data.get("tls"))
    partitions = _partitions(path, data.get("partition"), qos)
    cluster = _cluster_name(path, data.get("cluster_name", "mgpu"))
    notices = notify_settings(f"config file {path}", data, cluster)
    return MasterSettings(
        PolicyConfig(
            qos=qos,
            partitions=partitions,
            cluster_name=cluster,
            notify_url_prefixes=notices.job_url_prefixes,
            **sched,
        ),
        frozenset(admins),
        private,
        cert,
        key,
        _limits(path, data.get("limits")),
        *_history(path, data.get("history")),
        _http(path, data.get("http")),
        notices,
    )
