"""Plain-text tables for the listing commands (fast: no rich import on the hot path)."""

from __future__ import annotations

from mgpu_core.text import escape_controls
from mgpu_core.units import format_duration, format_size

TYPE_CHECKING = False  # not typing's: importing typing costs mgpu_queue ~3 ms
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, header: bool = True) -> str:
    """Left-aligned columns separated by two spaces; the last column is not padded.

    Column-wise (one max() per column, one format string for all rows): mgpu_queue prints
    tens of thousands of rows, and per-cell Python loops were a third of its wall time."""
    all_rows = [headers, *rows]
    # Cells hold others' text (job names, reasons, node ids): control characters are shown
    # escaped. Checked a column at a time, so a clean column costs one C-speed pass.
    columns = list(zip(*all_rows, strict=True))
    dirty = [i for i, column in enumerate(columns) if not "".join(column).isprintable()]
    for i in dirty:
        columns[i] = tuple(map(escape_controls, columns[i]))
    if dirty:
        all_rows = list(zip(*columns, strict=True))
    widths = [max(map(len, column)) for column in columns[:-1]]
    line = "  ".join([*(f"{{:<{w}}}" for w in widths), "{}"])
    lines = [line.format(*row).rstrip() for row in (all_rows if header else all_rows[1:])]
    return "\n".join(lines)


# Ended with a problem: the table shows why beside where. mgpu_core.states.FAILURE_STATES,
# spelled out: importing the states' enum would cost every mgpu_queue start-up.
TROUBLED = frozenset(("FAILED", "NODE_FAIL", "TIMEOUT", "OUT_OF_MEMORY"))

QUEUE_HEADERS = ("JOBID", "NAME", "USER", "STATE", "TIME", "GPUS", "NODE(REASON)")
# What queue_row reads: the listing asks the master for these fields only.
QUEUE_FIELDS = [
    "job_id",
    "job_ref",
    "name",
    "user",
    "state",
    "reason",
    "node",
    "gpu_indices",
    "elapsed_s",
    "gpus",
    "idle_s",
]


def queue_row(job: dict[str, Any]) -> list[str]:
    if job["state"] == "PENDING":
        where = f"({job['reason'] or 'None'})"
    elif job["node"]:
        where = job["node"]
        if job["gpu_indices"]:
            where += f" gpu:{','.join(str(i) for i in job['gpu_indices'])}"
        if job["state"] in TROUBLED and job["reason"]:
            where += f" ({job['reason']})"  # why it failed matters more than where
        elif job.get("idle_s"):  # its GPUs unused that long (state/idle.py)
            where += f" (idle {format_duration(job['idle_s'])})"
    else:
        where = f"({job['reason']})" if job["reason"] else ""
    return [
        str(job.get("job_ref") or job["job_id"]),
        job["name"][:24],
        job["user"],
        job["state"],
        format_duration(job["elapsed_s"]),
        str(job["gpus"]),
        where,
    ]


NODE_HEADERS = (
    "NODE", "STATE", "ADDRESS", "GPUS", "CPUS", "MEMORY", "JOBS", "ISOLATION", "RUNTIMES",
)  # fmt: skip


def node_row(node: dict[str, Any]) -> list[str]:
    gpus = node["gpus"]
    used = sum(1 for g in gpus if g["job_id"] is not None)
    down = sum(1 for g in gpus if not g["healthy"])
    gpu_text = f"{used}/{len(gpus)}" + (f" ({down} down)" if down else "")
    why = node["down_reason"] or node.get("drain_reason", "")
    state = node["state"] + (f" ({why})" if why else "")
    return [
        node["node_id"],
        state,
        node["address"],
        gpu_text,
        f"{node['cpus_alloc']}/{node['cpus']}",
        f"{format_size(node['mem_alloc_bytes'])}/{format_size(node['mem_bytes'])}",
        ",".join(str(j) for j in node["jobs"]) or "-",
        # How the node enforces the allocation beyond CUDA_VISIBLE_DEVICES ("-": not told).
        node.get("isolation") or "-",
        # The container runtimes for --container-image jobs, preferred first ("-": none).
        ",".join(node.get("runtimes") or ()) or "-",
    ]


def gpu_lines(node: dict[str, Any]) -> list[str]:
    """One line per GPU: what it is and what occupies it (ours and strangers' processes)."""
    lines = []
    for g in node["gpus"]:
        mem = format_size(g["memory_total_bytes"])
        if g["memory_used_bytes"] >= 0:
            mem = f"{format_size(g['memory_used_bytes'])}/{mem}"
        util = f" util {g['utilization_pct']}%" if g["utilization_pct"] >= 0 else ""
        status = (
            "down: " + (g["error"] or "unhealthy")
            if not g["healthy"]
            else (f"job {g['job_id']}" if g["job_id"] is not None else "free")
        )
        line = f"  gpu{g['index']}  {g['name']}  mem {mem}{util}  {status}"
        if g.get("parent_index", -1) >= 0:  # a MIG slice: which physical GPU it is part of
            parent = f"GPU {g['parent_index']} {g.get('parent_uuid') or ''}".rstrip()
            line += f"  (MIG slice of {parent})"
        others = [
            f"pid {p['pid']} {p['user']} {p['command'] or '?'} "
            f"{format_size(p['used_memory_bytes'])}"
            for p in g["processes"]
        ]
        if others:
            line += "  | not from mgpu: " + "; ".join(others)
        lines.append(escape_controls(line))  # GPU names, strangers' process names
    return lines
