"""``sinfo``: partitions and nodes in Slurm's formats (default, ``-N``, ``-l``, ``-s``, ``-R``,
``-o``/``-O``), GPU gres included. Rendering is :mod:`mgpu_core.slurm.sinfo_fmt`'s."""

from __future__ import annotations

import sys

from mgpu_client.cmdline import (
    CLUSTERS,
    FLAG,
    LONG_HELP,
    MASTER,
    QUIET,
    USAGE,
    USE,
    VALUE,
    VERBOSE,
    VERSION,
    Opt,
    answer_common,
    as_dict,
    index,
    parse,
    split_list,
)
from mgpu_client.exits import run_command
from mgpu_core.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# fmt: off
OPTIONS = (
    Opt("-a --all", "all", FLAG, "", QUIET, "All partitions (always)."),
    Opt("-d --dead", "dead", FLAG, "", USE, "Only nodes that do not respond."),
    Opt("-e --exact", "exact", FLAG, "", QUIET, "Accepted."),
    Opt("-h --noheader", "noheader", FLAG, "", USE, "No header line."),
    Opt("-i --iterate", "iterate", VALUE, "", USE, "Print again every SECONDS.",
        metavar="SECONDS"),
    Opt("-l --long", "long", FLAG, "", USE, "Long format."),
    Opt("-N --Node", "node", FLAG, "", USE, "One line per node."),
    Opt("-n --nodes", "nodes", VALUE, "", USE, "Only these nodes.", metavar="NODES"),
    Opt("-o --format", "format", VALUE, "", USE, "Output format (%P %a %l %D %t %N ...).",
        metavar="FORMAT"),
    Opt("-O --Format", "Format", VALUE, "", USE, "Output fields.", metavar="FIELDS"),
    Opt("-p --partition", "partition", VALUE, "", USE, "Only these partitions.", metavar="LIST"),
    Opt("-r --responding", "responding", FLAG, "", USE, "Only responding nodes."),
    Opt("-R --list-reasons", "reasons", FLAG, "", USE, "Why nodes are down or drained."),
    Opt("-s --summarize", "summarize", FLAG, "", USE, "One line per partition."),
    Opt("-S --sort", "sort", VALUE, "", USE, "Sort keys.", metavar="KEYS"),
    Opt("-t --states", "states", VALUE, "", USE, "Only nodes in these states.", metavar="LIST"),
    Opt("-T --reservation", "reservation", FLAG, "", USE, "Reservations (there are none)."),
    CLUSTERS,
    VERBOSE,
    VERSION,
    USAGE,
    LONG_HELP,
    MASTER,
)
# fmt: on
TABLE = index(OPTIONS)


def _select(
    partitions: list[dict[str, Any]], nodes: list[dict[str, Any]], opts: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from mgpu_core.slurm import nodestate

    names = set(split_list(opts.get("partition")))
    if names:
        partitions = [p for p in partitions if p["name"] in names]
    if opts.get("states"):
        try:
            nodes = [dict(n) for n in nodestate.filter_nodes(nodes, str(opts["states"]))]
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    chosen = set()
    if opts.get("nodes"):
        from mgpu_client.jobspec import hosts

        chosen = set(hosts("-n/--nodes", opts["nodes"]))
    kept = []
    for node in nodes:
        if chosen and node["node_id"] not in chosen:
            continue
        down = nodestate.is_drained_or_down(nodestate.state_code(node)) and not node.get(
            "drain_reason"
        )
        if (opts.get("dead") and not down) or (opts.get("responding") and down):
            continue
        kept.append(node)
    return partitions, kept


def show(argv: list[str], prog: str) -> int:
    found, rest = parse(argv, TABLE, interspersed=True)
    opts = as_dict(found)
    summary = "View partitions and nodes."
    if answer_common(prog, found, rest, summary, OPTIONS, stray="Unrecognized option: {}"):
        return 0
    if opts.get("reservation"):
        sys.stdout.write(
            ""
            if opts.get("noheader")
            else "RESV_NAME     STATE           START_TIME             END_TIME     "
            "DURATION  NODELIST\n"
        )
        return 0
    from mgpu_client.client import connect

    with connect(opts.get("master")) as client:
        # Both requests out, the formatter imported while the master answers them.
        asked = client.send("partitions"), client.send("nodes")
        from mgpu_core.slurm import sinfo_fmt

        partitions = list(client.answer(asked[0])["partitions"])
        nodes = list(client.answer(asked[1])["nodes"])
    partitions, nodes = _select(partitions, nodes, opts)
    try:
        specs = None
        if opts.get("Format"):
            specs = sinfo_fmt.parse_format_long(str(opts["Format"]))
        elif opts.get("format"):
            specs = sinfo_fmt.parse_format(str(opts["format"]))
        lines = sinfo_fmt.format_sinfo(
            partitions,
            nodes,
            specs,
            long=bool(opts.get("long")),
            node_oriented=bool(opts.get("node")),
            summarize=bool(opts.get("summarize")),
            list_reasons=bool(opts.get("reasons")),
            header=not opts.get("noheader"),
            sort=str(opts["sort"]) if opts.get("sort") else None,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if opts.get("long"):
        import time

        from mgpu_core.slurm import timefmt

        lines.insert(0, timefmt.date_line(time.time()))
    sys.stdout.write("".join(line + "\n" for line in lines))
    return 0


def main(prog: str = "sinfo", *, slurm: bool = True) -> None:
    run_command(prog, lambda: show(sys.argv[1:], prog), slurm=slurm, exit_now=True)


def slurm_main() -> None:
    main("sinfo", slurm=True)


if __name__ == "__main__":
    main()
