"""sinfo's output: its default, ``-l``, ``-N``, ``-s`` and ``-R`` formats, ``-o``
%-formats and ``-O`` names, the grouping of nodes into lines, the sort and the lines
(src/sinfo/opts.c, sinfo.c, print.c, sort.c).

Formats parse into the same specs as squeue's, ``(key, width, right, suffix)``. sinfo's
built-in formats size the partition column (and under ``-N`` the node list column) to fit
their longest value; :func:`format_sinfo` does that when it is given no format.
"""

from __future__ import annotations

from mgpu_core.slurm import nodestate as ns
from mgpu_core.slurm.common import (
    host_key,
    integer,
    pad,
    parse_name_format,
    parse_percent_format,
    priority_tier,
    text,
)
from mgpu_core.slurm.sinfo_fields import (
    EXACT_SPLIT,
    FIELDS,
    NAMES,
    NODE_SPLIT,
    PART_SPLIT,
    Record,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from mgpu_core.slurm.common import Row, Spec

# opts.c: the -O formats sinfo uses when given none. The docs write the default as
# "%#P %.5a %.10l %.6D %.6t %N", "#" meaning "as wide as the longest partition name".
DEFAULT_FORMAT = "partition:9 ,available:.5 ,time:.10 ,nodes:.6 ,statecompact:.6 ,nodelist:0"
LONG_FORMAT = (
    "partition:9 ,available:.5 ,time:.10 ,size:.10 ,root:.4 ,oversubscribe:.8 ,"
    "groups:.10 ,nodes:.6 ,statelong:.11 ,reservation:.11 ,nodelist:0"
)
NODE_FORMAT = "nodelist:0 ,nodes:.6 ,partition:.9 ,statecompact:6"
NODE_LONG_FORMAT = (
    "nodelist:0 ,nodes:.6 ,partition:.9 ,statelong:.11 ,cpus:4 ,socketcorethread:.8 ,"
    "memory:.6 ,disk:.8 ,weight:.6 ,features:.8 ,reason:20"
)
SUMMARIZE_FORMAT = "partition:9 ,available:.5 ,time:.10 ,nodeaiot:.16 ,nodelist:0"
REASON_FORMAT = "reason:20 ,user:9 ,timestamp:19 ,nodelist:0"
REASON_LONG_FORMAT = "reason:20 ,userlong:12 ,timestamp:19 ,statecompact:6 ,nodelist:0"
REASON_STATES = "down,fail,drain"  # opts.c: -R lists the nodes in these states
MIN_FIELD_SIZE = 9  # print.c MIN_PART_FIELD_SIZE, MIN_NODE_FIELD_SIZE
_LETTERS = frozenset(key for key in FIELDS if len(key) == 1)


def parse_format(fmt: str) -> list[Spec]:
    """Parse an ``-o`` format (``%P %.5a %N``). Raises ValueError for an unknown letter."""
    return parse_percent_format(fmt, _LETTERS, "node")


def parse_format_long(fmt: str) -> list[Spec]:
    """Parse an ``-O`` format (``Partition,NodeList:30``). Raises ValueError for an unknown
    name."""
    return parse_name_format(fmt, NAMES, "node")


def default_format(
    *, long: bool = False, node_oriented: bool = False, summarize: bool = False,
    list_reasons: bool = False,
) -> str:  # fmt: skip
    """The -O format sinfo uses without ``-o``/``-O`` for these options (opts.c; ``-s``
    wins over ``-N``, which wins over ``-R``)."""
    if summarize:
        return SUMMARIZE_FORMAT
    if node_oriented:
        return NODE_LONG_FORMAT if long else NODE_FORMAT
    if list_reasons:
        return REASON_LONG_FORMAT if long else REASON_FORMAT
    return LONG_FORMAT if long else DEFAULT_FORMAT


# ---------------------------------------------------------------- grouping


def _split_keys(specs: Sequence[Spec], exact: bool) -> tuple[list[Callable[[Row], Any]], ...]:
    keys = {key for key, *_ in specs}
    node = [get for key, get in NODE_SPLIT.items() if key in keys]
    if exact:
        node += [get for key, get in EXACT_SPLIT.items() if key in keys]
    part = [get for key, get in PART_SPLIT.items() if key in keys]
    return node, part


def build_records(
    partitions: Sequence[Row],
    nodes: Sequence[Row],
    specs: Sequence[Spec],
    *,
    node_oriented: bool = False,
    list_reasons: bool = False,
    exact: bool = False,
) -> list[Record]:
    """Group the nodes into sinfo's lines (sinfo.c ``_build_sinfo_data``).

    Every partition gets a line even without nodes when the format shows partitions (not
    under ``-N`` or ``-R``). Then each partition's nodes, in the order of ``nodes``, join the
    first line of an equal partition whose first node shows the same values in the fields
    of the format that split lines (state, GRES, reason, ...; with ``exact`` also CPUs and
    memory), else start a new one. ``-N`` gives each node its own line per partition; ``-R``
    ignores partitions. Nodes in no partition are not shown, as in sinfo.
    """
    node_keys, part_keys = _split_keys(specs, exact)
    shows_partition = any(key in ("P", "R") for key, *_ in specs)
    records: list[Record] = []
    if shows_partition and not node_oriented and not list_reasons:
        records = [Record(part, inx) for inx, part in enumerate(partitions)]
    for inx, part in enumerate(partitions):
        members = set(part.get("nodes") or ())
        for node in nodes:
            if text(node, "node_id") not in members:
                continue
            target = next(
                (
                    rec
                    for rec in records
                    if _same_partition(rec, part, part_keys, list_reasons)
                    and (not rec.nodes or _same_node(rec, node, node_keys, node_oriented))
                ),
                None,
            )
            if target is None:
                target = Record(None if list_reasons else part, inx)
                records.append(target)
            if all(text(n, "node_id") != text(node, "node_id") for n in target.nodes):
                target.nodes.append(node)
    for rec in records:
        rec.nodes.sort(key=lambda n: host_key(text(n, "node_id")))
    return records


def _same_partition(
    rec: Record, part: Row, keys: Sequence[Callable[[Row], Any]], list_reasons: bool
) -> bool:
    if list_reasons or rec.part is part:
        return True
    if rec.part is None:
        return False
    return all(get(rec.part) == get(part) for get in keys)


def _same_node(
    rec: Record, node: Row, keys: Sequence[Callable[[Row], Any]], node_oriented: bool
) -> bool:
    if node_oriented:
        return False
    first = rec.nodes[0]
    return all(get(first) == get(node) for get in keys)


# ---------------------------------------------------------------- sorting


def _state_number(rec: Record) -> int:
    return ns.state_code(rec.nodes[0]) if rec.nodes else 0


def _first_host(rec: Record) -> tuple[str, int, int]:
    return host_key(text(rec.nodes[0], "node_id")) if rec.nodes else ("", -1, 0)


_SORT_KEYS: dict[str, Callable[[Record], Any]] = {
    "a": lambda r: text(r.part or {}, "state").lower(),
    "c": lambda r: min((integer(n, "cpus") for n in r.nodes), default=0),
    "D": lambda r: len(r.nodes),
    "E": lambda r: ns.reason(r.nodes[0]) if r.nodes else "",
    "l": lambda r: integer(r.part or {}, "max_time_s") or float("inf"),
    "m": lambda r: min((integer(n, "mem_bytes") for n in r.nodes), default=0),
    "n": lambda r: host_key(text(r.nodes[0], "hostname")) if r.nodes else ("", -1, 0),
    "N": _first_host,
    "o": lambda r: text(r.nodes[0], "address") if r.nodes else "",
    "p": lambda r: priority_tier(r.part or {}),
    "P": lambda r: text(r.part or {}, "name"),
    "R": lambda r: text(r.part or {}, "name"),
    "t": _state_number,
    "T": _state_number,
}


def sort_records(
    records: Sequence[Record], sort: str | None = None, *, node_oriented: bool = False
) -> list[Record]:
    """Lines in sinfo's order (sort.c): the ``-S`` spec, by default ``#P,-t`` (partitions
    in their configured order, then by state number, highest first) or ``N`` under ``-N``.
    ``-`` reverses the key after it, ``#`` before P sorts partitions by their order; one
    stable sort per key, last key first. Keys sinfo has but mgpu cannot tell apart are
    accepted and leave the order as it is."""
    spec = sort if sort is not None else ("N" if node_oriented else "#P,-t")
    ordered = list(records)
    for i in range(len(spec) - 1, -1, -1):
        letter = spec[i]
        if letter in ",#+-":
            continue
        reverse = i > 0 and spec[i - 1] == "-"
        if letter in ("P", "R") and i > 0 and spec[i - 1] == "#":
            ordered.sort(key=lambda r: r.inx, reverse=reverse)
        elif letter in _SORT_KEYS:
            ordered.sort(key=_SORT_KEYS[letter], reverse=reverse)
    return ordered


# ---------------------------------------------------------------- lines


def _partition_cell(rec: Record, width: int, right: bool) -> str:
    """print.c _print_partition: the default partition gets a ``*``, replacing its last
    character when the name fills the column."""
    if rec.part is None:
        return pad("n/a", width, right)
    name = text(rec.part, "name")
    if rec.part.get("default"):
        name = name + "*" if len(name) < width or width == 0 else name[: width - 1] + "*"
    return pad(name, width, right)


def _auto_widths(records: Sequence[Record], node_oriented: bool) -> dict[str, int]:
    """print.c _set_part_field_size / _set_node_field_size (built-in formats only)."""
    part = max(
        [MIN_FIELD_SIZE]
        + [len(text(r.part, "name")) + bool(r.part.get("default")) for r in records if r.part]
    )
    widths = {"P": part, "R": part}
    if node_oriented:
        node = max([MIN_FIELD_SIZE] + [len(FIELDS["N"][1](r)) for r in records])
        widths.update(N=node, n=node)
    return widths


def render(
    records: Sequence[Record],
    specs: Sequence[Spec],
    *,
    header: bool = True,
    widths: dict[str, int] | None = None,
) -> list[str]:
    """The header (unless ``header=False``, sinfo's ``-h``) and one line per record.
    ``widths`` overrides the width of some fields (sinfo's computed column sizes)."""
    sizes = widths or {}
    specs = [(key, sizes.get(key, width), right, suffix) for key, width, right, suffix in specs]
    lines = []
    if header:
        parts = []
        for key, width, right, suffix in specs:
            if key:
                parts.append(pad(FIELDS[key][0], width, right, key not in ("N", "n", "o")))
            parts.append(suffix)
        lines.append("".join(parts))
    for rec in records:
        parts = []
        for key, width, right, suffix in specs:
            if key == "P":
                parts.append(_partition_cell(rec, width, right))
            elif key:
                parts.append(pad(FIELDS[key][1](rec), width, right))
            parts.append(suffix)
        lines.append("".join(parts))
    return lines


def format_sinfo(
    partitions: Sequence[Row],
    nodes: Sequence[Row],
    specs: Sequence[Spec] | None = None,
    *,
    long: bool = False,
    node_oriented: bool = False,
    summarize: bool = False,
    list_reasons: bool = False,
    exact: bool = False,
    header: bool = True,
    sort: str | None = None,
) -> list[str]:
    """sinfo's lines for the partitions (in their configured order) and nodes.

    ``specs`` is a parsed ``-o``/``-O`` format; None uses sinfo's built-in format for the
    options (:func:`default_format`) with its columns sized to fit. ``-R``
    (``list_reasons``) shows only down and drained nodes. Filter nodes (``-t``:
    ``nodestate.filter_nodes``; ``-n``) and partitions (``-p``) before calling. The line
    ``sinfo -l`` prints first is ``timefmt.date_line(now)``.
    """
    auto = specs is None
    if specs is None:
        fmt = default_format(
            long=long, node_oriented=node_oriented, summarize=summarize,
            list_reasons=list_reasons,
        )  # fmt: skip
        specs = parse_format_long(fmt)
    if list_reasons and not node_oriented and not summarize:
        nodes = ns.filter_nodes(nodes, REASON_STATES)
    records = build_records(
        partitions, nodes, specs, node_oriented=node_oriented and not summarize,
        list_reasons=list_reasons, exact=exact,
    )  # fmt: skip
    records = sort_records(records, sort, node_oriented=node_oriented)
    widths = _auto_widths(records, node_oriented and not summarize) if auto else None
    return render(records, specs, header=header, widths=widths)


def select_partitions(partitions: Sequence[Row], names: str) -> list[Row]:
    """sinfo ``-p``: the partitions named in a comma-separated list, in their order."""
    wanted = {name.strip() for name in names.split(",")}
    return [p for p in partitions if text(p, "name") in wanted]
