"""What the Slurm renderers share: reading rows, Slurm's column padding, hostlists, TRES and
user ids.

Rows are the dicts the master sends; a key an older master does not send reads as empty or 0
(:func:`text`, :func:`integer`, :func:`number`), never as an error.
"""

from __future__ import annotations

import pwd

from mgpu_core.slurm.timefmt import UNIT_MEGA, convert_num_unit, megabytes

TYPE_CHECKING = False  # not typing's: importing typing costs the commands ~3 ms
if TYPE_CHECKING:
    from collections.abc import Container, Iterable, Mapping
    from typing import Any

    Row = Mapping[str, Any]
    # A parsed output format: (field key or "" for literal text, width, right, suffix).
    Spec = tuple[str, int, bool, str]

NULL = "(null)"  # what glibc's printf("%s", NULL) prints: Slurm's text for an unset string

# slurm_protocol_defs.c job_state_string_compact, for the states mgpu has.
JOB_STATE_COMPACT = {
    "PENDING": "PD",
    "RUNNING": "R",
    "SUSPENDED": "S",
    "COMPLETING": "CG",
    "COMPLETED": "CD",
    "CANCELLED": "CA",
    "FAILED": "F",
    "TIMEOUT": "TO",
    "NODE_FAIL": "NF",
    "PREEMPTED": "PR",
    "BOOT_FAIL": "BF",
    "DEADLINE": "DL",
    "OUT_OF_MEMORY": "OOM",
    "REQUEUED": "RQ",
}


def text(row: Row, key: str) -> str:
    """``row[key]`` as text; missing or None reads as ``""``."""
    value = row.get(key)
    return "" if value is None else str(value)


def or_null(value: str) -> str:
    """Slurm prints an unset string field as ``(null)``."""
    return value or NULL


def integer(row: Row, key: str) -> int:
    """``row[key]`` as an int; missing, None or empty reads as 0."""
    value = row.get(key)
    return int(value) if value else 0


def number(row: Row, key: str) -> float:
    """``row[key]`` as a float; missing, None or empty reads as 0.0."""
    value = row.get(key)
    return float(value) if value else 0.0


def priority_tier(part: Row) -> int:
    """A partition's PriorityTier; Slurm's default, 1, when the row has none."""
    value = part.get("priority_tier")
    return 1 if value is None else int(value)


def pad(value: str, width: int, right: bool, cut: bool = True) -> str:
    """squeue's and sinfo's ``_print_str``: one field in its column.

    ``width`` 0 prints the value as is. Left-justified (``%-10j`` style, no dot) the value is
    cut to ``width`` and padded with spaces, always (C's ``%.Ns``). Right-justified
    (``%.10j``) it is padded on the left and, when ``cut``, cut to ``width`` (keeping its
    start); some fields (times, node lists) are printed uncut and overflow their column.
    A negative width (``-O name:-5``) prints the value and one space.
    """
    if width == 0:
        return value
    if width < 0:
        return value + " "
    if right:
        value = value.rjust(width)
        return value[:width] if cut else value
    return value[:width].ljust(width)


def parse_percent_format(fmt: str, keys: Container[str], what: str) -> list[Spec]:
    """Parse a ``-o`` format as squeue's and sinfo's opts.c ``parse_format`` do into specs
    ``(key, width, right, suffix)``: ``%[.][size]letter`` fields, the text up to the next
    ``%`` kept as the field's suffix, text before the first ``%`` as a literal spec with key
    ``""``. A ``.`` right-justifies; without a size a field is not padded. Empty tokens
    (``%%``) are skipped, as C's strtok skips them.

    Raises ValueError for a letter not in ``keys``, with Slurm's message ("Invalid job
    format specification: x"); Slurm prints it and carries on.
    """
    specs: list[Spec] = []
    prefix, percent, rest = fmt.partition("%")
    if prefix:
        specs.append(("", 0, False, prefix))
    for token in rest.split("%") if percent else ():
        if not token:
            continue
        right = token.startswith(".")
        end = start = int(right)
        while end < len(token) and token[end].isdigit():
            end += 1
        letter = token[end : end + 1]
        if not letter or letter not in keys:
            raise ValueError(f"Invalid {what} format specification: {letter or token}")
        width = checked_width(token[start:end], what) if end > start else 0
        specs.append((letter, width, right, token[end + 1 :]))
    return specs


# The widest column a format may ask for: Slurm reads any int, but a width of a billion is a
# gigabyte of spaces per line (mgpu's one-line-error rule for bad input applies).
MAX_WIDTH = 4096


def checked_width(digits: str, what: str) -> int:
    """A format's column width from its digits (sign allowed), at most :data:`MAX_WIDTH`."""
    body = digits.lstrip("+-")
    if len(body) > 6 or (body and int(body) > MAX_WIDTH):
        raise ValueError(
            f"Invalid {what} format specification: width {digits} (at most {MAX_WIDTH})"
        )
    return int(digits) if body else 0


def parse_name_format(fmt: str, names: Mapping[str, str], what: str) -> list[Spec]:
    """Parse an ``-O`` format as opts.c ``parse_long_format`` does: comma-separated names
    (case-insensitive, ``names`` maps them lowered to keys), each optionally ``:[.]size``
    followed by literal suffix text (``name:.30``, ``jobid:10|``). A name without ``:`` is
    20 wide, left-justified, with nothing after it: such fields abut, as in Slurm.
    Raises ValueError for an unknown name."""
    specs: list[Spec] = []
    for token in fmt.split(","):
        if not token:
            continue
        name, colon, size = token.partition(":")
        key = names.get(name.lower())
        if key is None:
            raise ValueError(f"Invalid {what} format specification: {name}")
        if not colon:
            specs.append((key, 20, False, ""))
            continue
        right = size.startswith(".")
        size = size[int(right) :]
        end = 1 if size[:1] in ("-", "+") else 0
        while end < len(size) and size[end].isdigit():
            end += 1
        digits = size[:end]
        width = checked_width(digits, what)  # strtol: no digits reads 0
        specs.append((key, width, right, size[end:]))
    return specs


def job_state(job: Row) -> str:
    """The job's state in Slurm's words (mgpu uses the same ones)."""
    value = job.get("state")
    return value.upper() if type(value) is str else text(job, "state").upper()


def has_started(job: Row) -> bool:
    """Whether the job got an allocation (a node and a start time)."""
    return job_state(job) != "PENDING" and number(job, "start_time") > 0


# ---------------------------------------------------------------- GPUs and TRES


def gres(count: int, gpu_type: str) -> str:
    """A GPU GRES as Slurm writes it in a node's Gres or a job's GRES: ``gpu:h100:2``,
    ``gpu:2`` without a type."""
    return f"gpu:{gpu_type}:{count}" if gpu_type else f"gpu:{count}"


def tres_per_node(job: Row) -> str:
    """squeue's %b and scontrol's TresPerNode: ``gres/gpu:h100:2`` (the ``gres/`` form of
    Slurm 22.05 and later), or ``""`` for a job without GPUs."""
    gpus = integer(job, "gpus")
    return "gres/" + gres(gpus, text(job, "gpu_type")) if gpus else ""


def job_tres(job: Row, *, billing: bool = True) -> list[str]:
    """A job's TRES, ``name=value``, in Slurm's TRES id order (cpu, mem, node, billing,
    gres): what squeue's tres-alloc and scontrol's ReqTRES/AllocTRES print joined by commas.

    Billing is the CPU count, as with Slurm's default TRESBillingWeights; steps have none
    (``billing=False``). Memory not requested (0) is left out. sacct prints the same items
    sorted by name (:func:`sorted_tres`).
    """
    items = [f"cpu={integer(job, 'cpus')}"]
    mem_bytes = integer(job, "mem_bytes")
    if mem_bytes:
        items.append(f"mem={convert_num_unit(megabytes(mem_bytes), UNIT_MEGA)}")
    items.append("node=1")
    if billing:
        items.append(f"billing={integer(job, 'cpus')}")
    gpus = integer(job, "gpus")
    if gpus:
        items.append(f"gres/gpu={gpus}")
        if text(job, "gpu_type"):
            items.append(f"gres/gpu:{text(job, 'gpu_type')}={gpus}")
    return items


def sorted_tres(items: list[str]) -> str:
    """slurmdb_make_tres_string_from_simple: sacct's AllocTRES/ReqTRES sort the items by
    name (``billing=4,cpu=4,gres/gpu:h100=1,gres/gpu=1,mem=16G,node=1``)."""
    return ",".join(sorted(items))


# ---------------------------------------------------------------- hostlists


def host_key(name: str) -> tuple[str, int, int]:
    """Slurm's hostlist order: by the text before the trailing digits, then by their value
    (then their width); a name without trailing digits sorts before its numbered ones."""
    end = len(name)
    while end and name[end - 1].isdigit():
        end -= 1
    digits = name[end:]
    if not digits:
        return name, -1, 0
    return name[:end], int(digits), len(digits)


def compress_hostlist(names: Iterable[str]) -> str:
    """Slurm's ranged hostlist (``hostlist_ranged_string``) of some host names, sorted and
    without duplicates: ``node[1-3,5],gpu7``-style.

    Names sharing the text before their trailing digits go in one bracket (``node[1-3,5]``);
    a prefix with a single number prints plain (``node5``). A run grows while the numbers
    follow one another with the padding of the run's start (``n[09-10]``, ``n[9-10]``, but
    ``n1`` and ``n01`` stay apart). Empty names are skipped; none at all gives ``""``.
    """
    groups: list[tuple[str, list[list[str]] | None]] = []
    for name in sorted(set(names) - {""}, key=host_key):
        prefix, value, width = host_key(name)
        if width == 0:
            groups.append((prefix, None))
            continue
        digits = name[len(prefix) :]
        runs = groups[-1][1] if groups and groups[-1][0] == prefix else None
        if runs is None:
            groups.append((prefix, [[digits, digits]]))
            continue
        first, last = runs[-1]
        if value == int(last) + 1 and f"{value:0{len(first)}d}" == digits:
            runs[-1][1] = digits
        else:
            runs.append([digits, digits])
    out = []
    for prefix, group in groups:
        if group is None:
            out.append(prefix)
        elif len(group) == 1 and group[0][0] == group[0][1]:
            out.append(prefix + group[0][0])
        else:
            ranges = (lo if lo == hi else f"{lo}-{hi}" for lo, hi in group)
            out.append(f"{prefix}[{','.join(ranges)}]")
    return ",".join(out)


# ---------------------------------------------------------------- user and group ids

_UIDS: dict[str, tuple[int, int] | None] = {}


def _passwd(user: str) -> tuple[int, int] | None:
    if user not in _UIDS:
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            _UIDS[user] = None
        else:
            _UIDS[user] = (entry.pw_uid, entry.pw_gid)
    return _UIDS[user]


def uid_of(user: str) -> int | None:
    """The user's uid from the local passwd database (cached), None if unknown here."""
    entry = _passwd(user) if user else None
    return None if entry is None else entry[0]


def gid_of(user: str) -> int | None:
    """The user's primary gid from the local passwd database, None if unknown here."""
    entry = _passwd(user) if user else None
    return None if entry is None else entry[1]


def group_name(gid: int | None) -> str:
    """The group's name, its number if it has none here, ``""`` for an unknown gid."""
    if gid is None:
        return ""
    # Imported here, not at the top: grp is a shared library (pwd is built in) whose load
    # costs every command ~0.2 ms, and only group columns need it.
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
