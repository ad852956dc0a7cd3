"""sinfo's fields: for each %-letter (and -O name) its header and how one output line reads
its partition and nodes (src/sinfo/print.c), and which fields split nodes into separate
lines (src/sinfo/sinfo.c ``_match_node_data`` and ``_match_part_data``).

mgpu nodes report no sockets or cores: like a Slurm node configured with only ``CPUs=``,
each has ``Sockets=CPUs``, ``CoresPerSocket=1`` and ``ThreadsPerCore=1``.
"""

from __future__ import annotations

from mgpu_core.slurm import nodestate as ns
from mgpu_core.slurm import timefmt as tf
from mgpu_core.slurm.common import NULL, compress_hostlist, integer, priority_tier, text
from mgpu_core.slurm.timefmt import megabytes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from mgpu_core.slurm.common import Row


class Record:
    """One sinfo line: a partition (None under ``-R``, which ignores partitions), its
    index in the partition list, and the nodes grouped on the line."""

    __slots__ = ("inx", "nodes", "part")

    def __init__(self, part: Row | None, inx: int) -> None:
        self.part = part
        self.inx = inx
        self.nodes: list[Row] = []


def _first(rec: Record) -> Row:
    return rec.nodes[0] if rec.nodes else {}


def _min_max(rec: Record, value: Callable[[Row], int]) -> str:
    """print.c _build_min_max_*_string without a range: ``8``, or ``8+`` when they vary."""
    values = [value(n) for n in rec.nodes] or [0]
    low, high = min(values), max(values)
    return str(high) if low == high else f"{low}+"


def _part_text(rec: Record, get: Callable[[Row], str]) -> str:
    part = rec.part
    return "n/a" if part is None else get(part)


def _state(rec: Record, name: Callable[[int], str]) -> str:
    return name(ns.state_code(_first(rec))).lower() if rec.nodes else "n/a"


def _cpus_aiot(rec: Record) -> str:
    alloc = idle = other = total = 0
    for node in rec.nodes:
        cpus, used = integer(node, "cpus"), integer(node, "cpus_alloc")
        alloc, total = alloc + used, total + cpus
        if ns.is_drained_or_down(ns.state_code(node)):
            other += cpus - used
        else:
            idle += cpus - used
    return f"{alloc}/{idle}/{other}/{total}"


def _nodes_aiot(rec: Record) -> tuple[int, int, int, int]:
    alloc = idle = other = 0
    for node in rec.nodes:
        code = ns.state_code(node)
        if code & 0xF in (ns.ALLOCATED, ns.MIXED):
            alloc += 1
        elif ns.is_drained_or_down(code):
            other += 1
        else:
            idle += 1
    return alloc, idle, other, alloc + idle + other


def _max_time(part: Row) -> str:
    """print.c _print_time: ``infinite`` for no limit (mgpu's 0)."""
    seconds = integer(part, "max_time_s")
    return tf.clock(seconds, check=False) if seconds else "infinite"


def _default_time(part: Row) -> str:
    """print.c _print_default_time: ``n/a`` when the partition sets none."""
    seconds = integer(part, "default_time_s")
    return tf.clock(seconds, check=False) if seconds else "n/a"


def _groups(part: Row) -> str:
    return ",".join(part.get("allowed_groups") or ()) or "all"


def _same(value: str) -> Callable[[Record], str]:
    return lambda rec: value


# key -> (header, getter); keys are sinfo's %-letters, or lowered -O names.
FIELDS: dict[str, tuple[str, Callable[[Record], str]]] = {
    "a": ("AVAIL", lambda r: _part_text(r, lambda p: text(p, "state").lower() or "up")),
    "A": ("NODES(A/I)", lambda r: "{}/{}".format(*_nodes_aiot(r)[:2])),
    "b": ("ACTIVE_FEATURES", _same(NULL)),
    "B": ("MAX_CPUS_PER_NODE", _same("UNLIMITED")),
    "c": ("CPUS", lambda r: _min_max(r, lambda n: integer(n, "cpus"))),
    "C": ("CPUS(A/I/O/T)", _cpus_aiot),
    "d": ("TMP_DISK", _same("0")),
    "D": ("NODES", lambda r: str(len(r.nodes))),
    "e": ("FREE_MEM", _same("N/A")),
    "E": ("REASON", lambda r: ns.reason(_first(r)) or "none"),
    "f": ("AVAIL_FEATURES", _same(NULL)),
    "F": ("NODES(A/I/O/T)", lambda r: "{}/{}/{}/{}".format(*_nodes_aiot(r))),
    "g": ("GROUPS", lambda r: _part_text(r, _groups)),
    "G": ("GRES", lambda r: ns.node_gres(_first(r))),
    "h": ("OVERSUBSCRIBE", lambda r: _part_text(r, lambda p: "NO")),
    "H": ("TIMESTAMP", _same("Unknown")),
    "i": ("RESERVATION", _same("")),
    "I": ("PRIO_JOB_FACTOR", _same("1")),
    "l": ("TIMELIMIT", lambda r: _part_text(r, _max_time)),
    "L": ("DEFAULTTIME", lambda r: _part_text(r, _default_time)),
    "m": ("MEMORY", lambda r: _min_max(r, lambda n: megabytes(integer(n, "mem_bytes")))),
    "M": ("PREEMPT_MODE", _same("OFF")),
    "n": ("HOSTNAMES", lambda r: compress_hostlist(text(n, "hostname") for n in r.nodes)),
    "N": ("NODELIST", lambda r: ns.node_names(r.nodes)),
    "o": ("NODE_ADDR", lambda r: compress_hostlist(text(n, "address") for n in r.nodes)),
    "O": ("CPU_LOAD", _same("N/A")),
    "p": ("PRIO_TIER", lambda r: _part_text(r, lambda p: str(priority_tier(p)))),
    "P": ("PARTITION", lambda r: _part_text(r, lambda p: text(p, "name"))),
    "r": ("ROOT", lambda r: _part_text(r, lambda p: "no")),
    "R": ("PARTITION", lambda r: _part_text(r, lambda p: text(p, "name"))),
    "s": ("JOB_SIZE", lambda r: _part_text(r, lambda p: "1-infinite")),
    "S": ("ALLOCNODES", lambda r: _part_text(r, lambda p: "all")),
    "t": ("STATE", lambda r: _state(r, ns.state_compact)),
    "T": ("STATE", lambda r: _state(r, ns.state_long)),
    "u": ("USER", _same("Unknown")),
    "U": ("USER", _same("Unknown")),
    "v": ("VERSION", lambda r: text(_first(r), "agent_version") or "N/A"),
    "V": ("CLUSTER", _same("N/A")),
    "w": ("WEIGHT", _same("1")),
    "X": ("SOCKETS", lambda r: _min_max(r, lambda n: integer(n, "cpus"))),
    "Y": ("CORES", _same("1")),
    "z": ("S:C:T", lambda r: _min_max(r, lambda n: integer(n, "cpus")) + ":1:1"),
    "Z": ("THREADS", _same("1")),
    "allocmem": ("ALLOCMEM", lambda r: str(megabytes(integer(_first(r), "mem_alloc_bytes")))),
    "comment": ("COMMENT", _same(NULL)),
    "extra": ("EXTRA", _same(NULL)),
    "gresused": ("GRES_USED", lambda r: ns.node_gres_used(_first(r))),
    "statecomplete": ("STATECOMPLETE", lambda r: _state(r, ns.state_complete)),
}

# opts.c fmt_data: -O names -> keys.
NAMES: dict[str, str] = {
    "allocnodes": "S", "available": "a", "cluster": "V", "cores": "Y", "cpus": "c",
    "cpusload": "O", "cpusstate": "C", "defaulttime": "L", "disk": "d", "features": "f",
    "features_act": "b", "freemem": "e", "gres": "G", "groups": "g", "maxcpuspernode": "B",
    "memory": "m", "nodeaddr": "o", "nodeai": "A", "nodeaiot": "F", "nodehost": "n",
    "nodelist": "N", "nodes": "D", "oversubscribe": "h", "partition": "P",
    "partitionname": "R", "preemptmode": "M", "priorityjobfactor": "I", "prioritytier": "p",
    "reason": "E", "reservation": "i", "root": "r", "share": "h", "size": "s",
    "sockets": "X", "socketcorethread": "z", "statecompact": "t", "statelong": "T",
    "threads": "Z", "time": "l", "timestamp": "H", "user": "u", "userlong": "U",
    "version": "v", "weight": "w",
}  # fmt: skip
NAMES.update((key, key) for key in FIELDS if len(key) > 1)

# sinfo.c _match_node_data / _match_part_data: the fields whose values split nodes into
# separate lines (node fields) or partitions into separate entries (partition fields).
NODE_SPLIT = {
    "n": lambda n: text(n, "hostname"), "o": lambda n: text(n, "address"),
    "G": ns.node_gres, "gresused": ns.node_gres_used, "E": ns.reason,
    "t": lambda n: ns.state_long(ns.state_code(n)),
    "T": lambda n: ns.state_long(ns.state_code(n)),
    "statecomplete": lambda n: ns.state_complete(ns.state_code(n)),
    "allocmem": lambda n: integer(n, "mem_alloc_bytes"),
}  # fmt: skip
# With -e (exact) sinfo also splits on these.
EXACT_SPLIT = {
    "c": lambda n: integer(n, "cpus"), "X": lambda n: integer(n, "cpus"),
    "z": lambda n: integer(n, "cpus"), "m": lambda n: integer(n, "mem_bytes"),
    "v": lambda n: text(n, "agent_version"),
}  # fmt: skip
PART_SPLIT = {
    "P": lambda p: text(p, "name"), "R": lambda p: text(p, "name"),
    "a": lambda p: text(p, "state"), "g": lambda p: tuple(p.get("allowed_groups") or ()),
    "l": lambda p: integer(p, "max_time_s"), "L": lambda p: integer(p, "default_time_s"),
    "p": priority_tier,
}  # fmt: skip
