"""A node row in Slurm's words: its state (as sinfo and scontrol spell it), its GRES, and
sinfo's ``-t`` state filter.

mgpu's node states (the master's ``display_state``: idle, mixed, allocated, down, drain,
draining) map onto Slurm's base states and flags (slurm/slurm.h), and the strings come from
slurm_protocol_defs.c's ``node_state_string``, ``node_state_string_compact`` and
``node_state_string_complete``. A node whose agent is not connected (mgpu's down reason
``not connected``) is Slurm's NOT_RESPONDING: ``down*``.
"""

from __future__ import annotations

from mgpu_core.slurm.common import NULL, compress_hostlist, gres, integer, text

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from mgpu_core.slurm.common import Row

# slurm.h base states and flags (the numbers sinfo sorts its -t/-T column by).
DOWN, IDLE, ALLOCATED, MIXED = 1, 2, 3, 5
DRAIN = 0x200
NO_RESPOND = 0x800
_BASE_NAMES = {DOWN: "DOWN", IDLE: "IDLE", ALLOCATED: "ALLOCATED", MIXED: "MIXED", 0: "UNKNOWN"}
_COMPACT = {DOWN: "DOWN", IDLE: "IDLE", ALLOCATED: "ALLOC", MIXED: "MIX", 0: "UNK"}
NOT_CONNECTED = "not connected"  # the master's down_reason for an agent it has lost


def _busy_base(node: Row) -> int:
    """ALLOCATED when every GPU or every CPU is taken, else MIXED (the master's rule)."""
    gpus = node.get("gpus") or []
    busy = sum(1 for g in gpus if g.get("job_id") is not None)
    full_cpus = integer(node, "cpus_alloc") >= integer(node, "cpus") > 0
    return ALLOCATED if (gpus and busy == len(gpus)) or full_cpus else MIXED


def state_code(node: Row) -> int:
    """The node's state as Slurm's number: base state | DRAIN | NO_RESPOND."""
    state = text(node, "state").lower()
    if state in ("drain", "drained"):
        code = IDLE | DRAIN
    elif state in ("draining", "drng"):
        code = _busy_base(node) | DRAIN
    else:
        code = {"idle": IDLE, "mixed": MIXED, "mix": MIXED, "allocated": ALLOCATED,
                "alloc": ALLOCATED, "down": DOWN}.get(state, 0)  # fmt: skip
    if text(node, "down_reason") == NOT_CONNECTED:
        code |= NO_RESPOND
    return code


def state_long(code: int) -> str:
    """``node_state_string``: IDLE, MIXED, ALLOCATED, DOWN, DRAINED, DRAINING, with ``*``
    when not responding."""
    base = code & 0xF
    if code & DRAIN:
        name = "DRAINED" if base in (IDLE, DOWN) else "DRAINING"
    else:
        name = _BASE_NAMES.get(base, "UNKNOWN")
    return name + "*" if code & NO_RESPOND else name


def state_compact(code: int) -> str:
    """``node_state_string_compact``: IDLE, MIX, ALLOC, DOWN, DRAIN, DRNG (+ ``*``)."""
    base = code & 0xF
    if code & DRAIN:
        name = "DRAIN" if base in (IDLE, DOWN) else "DRNG"
    else:
        name = _COMPACT.get(base, "UNK")
    return name + "*" if code & NO_RESPOND else name


def state_complete(code: int) -> str:
    """``node_state_string_complete`` (scontrol's State=): the base state then each flag,
    ``IDLE+DRAIN``, ``DOWN+NOT_RESPONDING``."""
    name = _BASE_NAMES.get(code & 0xF, "UNKNOWN")
    if code & DRAIN:
        name += "+DRAIN"
    if code & NO_RESPOND:
        name += "+NOT_RESPONDING"
    return name


def is_drained_or_down(code: int) -> bool:
    """What sinfo counts as "other" (not allocated, not idle) in A/I/O/T."""
    return bool(code & DRAIN) or (code & 0xF) == DOWN


def reason(node: Row) -> str:
    """The node's reason (Slurm has one): why it is down, else why it drains."""
    return text(node, "down_reason") or text(node, "drain_reason")


# ---------------------------------------------------------------- GRES


def _gpus_by_type(node: Row) -> dict[str, list[Row]]:
    by_type: dict[str, list[Row]] = {}
    for gpu in node.get("gpus") or ():
        by_type.setdefault(text(gpu, "model"), []).append(gpu)
    return by_type


def node_gres(node: Row) -> str:
    """The node's Gres as sinfo %G and scontrol print it: ``gpu:h100:4`` (one item per GPU
    type, sorted), ``(null)`` without GPUs."""
    by_type = _gpus_by_type(node)
    return ",".join(gres(len(g), t) for t, g in sorted(by_type.items())) or NULL


def _index_ranges(indices: Sequence[int]) -> str:
    """Slurm's bitmap format, ``0-1,3``."""
    runs: list[list[int]] = []
    for i in sorted(set(indices)):
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in runs)


def node_gres_used(node: Row) -> str:
    """sinfo's GresUsed and scontrol's GresUsed: ``gpu:h100:2(IDX:0-1)``, ``(IDX:N/A)``
    when none is in use; ``(null)`` without GPUs."""
    items = []
    for gpu_type, gpus in sorted(_gpus_by_type(node).items()):
        used = [integer(g, "index") for g in gpus if g.get("job_id") is not None]
        idx = _index_ranges(used) if used else "N/A"
        items.append(f"{gres(len(used), gpu_type)}(IDX:{idx})")
    return ",".join(items) or NULL


def gpu_count(node: Row) -> int:
    return len(node.get("gpus") or ())


def gpus_used(node: Row) -> int:
    return sum(1 for g in node.get("gpus") or () if g.get("job_id") is not None)


# ---------------------------------------------------------------- sinfo -t


# sinfo's state names (opts.c _node_state_id) that mgpu nodes can be in, and sinfo.c
# _filter_out's test for each: DRAIN matches any drain flag, DRAINING/DRAINED the two halves
# of it; ALLOCATED any node with allocated CPUs (so mixed nodes too); the others compare the
# base state only (so "idle" also lists drained idle nodes, as in sinfo). Other names sinfo
# knows (maint, fail, future, planned, ...) match no mgpu node.
def _base_is(base: int) -> Callable[[int, Row], bool]:
    return lambda code, node: (code & 0xF) == base


def _draining(code: int, node: Row) -> bool:
    return bool(code & DRAIN) and (code & 0xF) in (ALLOCATED, MIXED)


_STATE_TESTS: dict[str, Callable[[int, Row], bool]] = {
    "alloc": lambda code, node: integer(node, "cpus_alloc") > 0,
    "allocated": lambda code, node: integer(node, "cpus_alloc") > 0,
    "down": _base_is(DOWN),
    "drain": lambda code, node: bool(code & DRAIN),
    "drained": lambda code, node: bool(code & DRAIN) and not _draining(code, node),
    "draining": _draining,
    "drng": _draining,
    "idle": _base_is(IDLE),
    "mix": _base_is(MIXED),
    "mixed": _base_is(MIXED),
    "no_respond": lambda code, node: bool(code & NO_RESPOND),
}
_OTHER_STATES = frozenset(
    (
        "unk", "unknown", "fail", "failing", "future", "maint", "planned", "pl", "plnd",
        "resv", "reserved", "comp", "completing", "cloud", "power_down", "powered_down",
        "powering_down", "powering_up", "power_up", "reboot", "reboot_issued",
        "reboot_requested", "inval", "blocked", "npc", "perfctrs",
    )
)  # fmt: skip


def _never(code: int, node: Row) -> bool:
    return False


def filter_nodes(nodes: Iterable[Row], states: str, *, all_of: bool = False) -> list[Row]:
    """The nodes in any (``all_of``: every one, sinfo's ``&`` form) of the comma-separated
    states, as sinfo's ``-t``. Raises ValueError with sinfo's message for a name it does
    not know."""
    tests: list[Callable[[int, Row], bool]] = []
    for name in states.lower().split(","):
        name = name.strip()
        if name in _STATE_TESTS:
            tests.append(_STATE_TESTS[name])
        elif name in _OTHER_STATES:
            tests.append(_never)
        elif name != "all":
            raise ValueError(f'Bad state string: "{name}"')
    if not tests:
        return list(nodes)
    check = all if all_of else any
    return [n for n in nodes if check(test(state_code(n), n) for test in tests)]


def node_names(nodes: Iterable[Row]) -> str:
    """The nodes' ids as one hostlist."""
    return compress_hostlist(text(n, "node_id") for n in nodes)
