"""sinfo's lines (mgpu_core.slurm.sinfo_fmt).

The cluster is the one of sinfo's man page EXAMPLES (sinfo.1): partition batch with
adev[8-15] (8-9 allocated), the default partition debug with adev[0-7] and a 30 minute
limit. The expected lines follow the code rather than that page's hand-written samples: the
built-in formats are src/sinfo/opts.c's -O strings ("partition:9 ,available:.5 ,time:.10
,nodes:.6 ,statecompact:.6 ,nodelist:0", so STATE is right-justified), the partition column
grows to the longest name plus the default's "*" (print.c ``_set_part_field_size``,
minimum 9), and lines are sorted "#P,-t" (configured partition order, then state number
descending: sort.c).
"""

from __future__ import annotations

from typing import Any

import pytest

from mgpu_core.slurm import nodestate as ns
from mgpu_core.slurm import sinfo_fmt as si


def node(i: int, state: str = "idle", **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "node_id": f"adev{i}", "hostname": f"adev{i}", "address": f"10.0.0.{i}",
        "state": state, "down_reason": "", "drain_reason": "", "cpus": 2, "cpus_alloc": 0,
        "mem_bytes": 3448 << 20, "mem_alloc_bytes": 0, "gpus": [], "jobs": [],
    }  # fmt: skip
    row.update(fields)
    return row


NODES = [node(i) for i in range(8)] + [
    node(i, "allocated" if i < 10 else "idle", cpus_alloc=2 if i < 10 else 0) for i in range(8, 16)
]
BATCH = {"name": "batch", "default": False, "state": "UP", "max_time_s": 0,
         "nodes": [f"adev{i}" for i in range(8, 16)]}  # fmt: skip
DEBUG = {"name": "debug", "default": True, "state": "UP", "max_time_s": 1800,
         "nodes": [f"adev{i}" for i in range(8)]}  # fmt: skip
PARTS = [BATCH, DEBUG]


def test_default() -> None:
    assert si.format_sinfo(PARTS, NODES) == [
        "PARTITION AVAIL  TIMELIMIT  NODES  STATE NODELIST",
        "batch        up   infinite      2  alloc adev[8-9]",
        "batch        up   infinite      6   idle adev[10-15]",
        "debug*       up      30:00      8   idle adev[0-7]",
    ]


def test_no_header() -> None:
    assert si.format_sinfo([DEBUG], NODES, header=False) == [
        "debug*       up      30:00      8   idle adev[0-7]"
    ]


def test_summarize() -> None:
    assert si.format_sinfo(PARTS, NODES, summarize=True) == [
        "PARTITION AVAIL  TIMELIMIT   NODES(A/I/O/T) NODELIST",
        "batch        up   infinite          2/6/0/8 adev[8-15]",
        "debug*       up      30:00          0/8/0/8 adev[0-7]",
    ]


def test_long() -> None:
    assert si.format_sinfo([DEBUG], NODES, long=True) == [
        "PARTITION AVAIL  TIMELIMIT   JOB_SIZE ROOT OVERSUBS     GROUPS  NODES       STATE"
        " RESERVATION NODELIST",
        "debug*       up      30:00 1-infinite   no       NO        all      8        idle"
        "             adev[0-7]",
    ]


def test_node_oriented() -> None:
    # opts.c -N: "nodelist:0 ,nodes:.6 ,partition:.9 ,statecompact:6", the node list
    # column sized to the longest (minimum 9); one line per node and partition, by name.
    lines = si.format_sinfo(PARTS, NODES, node_oriented=True)
    assert lines[:3] == [
        "NODELIST   NODES PARTITION STATE ",
        "adev0          1    debug* idle  ",
        "adev1          1    debug* idle  ",
    ]
    assert lines[9:12] == [
        "adev8          1     batch alloc ",
        "adev9          1     batch alloc ",
        "adev10         1     batch idle  ",
    ]
    assert len(lines) == 17


def test_node_oriented_long() -> None:
    assert si.format_sinfo([DEBUG], NODES[:1], node_oriented=True, long=True) == [
        "NODELIST   NODES PARTITION       STATE CPUS    S:C:T MEMORY TMP_DISK WEIGHT AVAIL_FE"
        " REASON              ",
        "adev0          1    debug*        idle 2       2:1:1   3448        0      1   (null)"
        " none                ",
    ]


def test_down_drained_and_not_responding_nodes() -> None:
    nodes = [
        node(0, "down", down_reason="Memory errors"),
        node(5, "down", down_reason="Memory errors"),
        node(6, "drain", drain_reason="maintenance"),
        node(7, "draining", drain_reason="maintenance", cpus_alloc=1),
        node(8, "down", down_reason="not connected"),
        node(1),
    ]
    part = {"name": "all", "default": True, "state": "UP", "max_time_s": 0,
            "nodes": [n["node_id"] for n in nodes]}  # fmt: skip
    assert si.format_sinfo([part], nodes) == [
        "PARTITION AVAIL  TIMELIMIT  NODES  STATE NODELIST",
        "all*         up   infinite      1  down* adev8",
        "all*         up   infinite      1   drng adev7",
        "all*         up   infinite      1  drain adev6",
        "all*         up   infinite      1   idle adev1",
        "all*         up   infinite      2   down adev[0,5]",
    ]
    assert si.format_sinfo([part], nodes, list_reasons=True) == [
        # No state column: drained and draining nodes with one reason share a line;
        # lines still sort by their first node's state number, descending.
        "REASON               USER      TIMESTAMP           NODELIST",
        "not connected        Unknown   Unknown             adev8",
        "maintenance          Unknown   Unknown             adev[6-7]",
        "Memory errors        Unknown   Unknown             adev[0,5]",
    ]


def test_partitions_without_nodes_and_long_names() -> None:
    empty = {"name": "a-long-partition", "default": True, "state": "DOWN",
             "max_time_s": 2 * 86400, "nodes": []}  # fmt: skip
    assert si.format_sinfo([empty, BATCH], NODES[8:10]) == [
        "PARTITION         AVAIL  TIMELIMIT  NODES  STATE NODELIST",
        "a-long-partition*  down 2-00:00:00      0    n/a ",
        "batch                up   infinite      2  alloc adev[8-9]",
    ]


def test_percent_format_with_gres_and_cpus() -> None:
    gpus = [{"index": i, "model": "h100", "job_id": 7 if i < 2 else None} for i in range(4)]
    nodes = [
        node(1, "mixed", cpus=32, cpus_alloc=8, gpus=gpus, mem_bytes=256 << 30),
        node(2, "idle", cpus=32, gpus=[{"index": 0, "model": "h100", "job_id": None}] * 4,
             mem_bytes=512 << 30),
        node(3, "idle", cpus=64, mem_bytes=512 << 30),
    ]  # fmt: skip
    part = {"name": "gpu", "default": False, "nodes": ["adev1", "adev2", "adev3"]}
    specs = si.parse_format("%P %.5a %G %C %c %m %D %t %N")
    assert si.format_sinfo([part], nodes, specs) == [
        "PARTITION AVAIL GRES CPUS(A/I/O/T) CPUS MEMORY NODES STATE NODELIST",
        "gpu    up gpu:h100:4 8/24/0/32 32 262144 1 mix adev1",
        "gpu    up gpu:h100:4 0/32/0/32 32 524288 1 idle adev2",
        "gpu    up (null) 0/64/0/64 64 524288 1 idle adev3",
    ]
    # Without GRES in the format, idle nodes share a line: the minimum CPUs with a "+";
    # without the state either, every node does.
    assert si.format_sinfo([part], nodes, si.parse_format("%c|%m|%D|%t|%N"), header=False) == [
        "32|262144|1|mix|adev1",
        "32+|524288|2|idle|adev[2-3]",
    ]
    assert si.format_sinfo([part], nodes, si.parse_format("%c|%m|%N"), header=False) == [
        "32+|262144+|adev[1-3]"
    ]
    used = si.parse_format_long("NodeList,GresUsed:30")
    assert si.format_sinfo([part], nodes[:1], used, header=False) == [
        "adev1               gpu:h100:2(IDX:0-1)           "
    ]


def test_default_partition_star_replaces_last_character_of_full_column() -> None:
    specs = si.parse_format("%5P|%P|%R")
    assert si.format_sinfo([DEBUG], NODES[:1], specs, header=False) == ["debu*|debug*|debug"]


def test_sort_spec() -> None:
    lines = si.format_sinfo(PARTS, NODES, si.parse_format("%P %D %t"), sort="-D", header=False)
    assert lines == ["debug* 8 idle", "batch 6 idle", "batch 2 alloc"]


def test_unknown_fields_raise() -> None:
    with pytest.raises(ValueError, match="Invalid node format specification: y"):
        si.parse_format("%P %y")
    with pytest.raises(ValueError, match="Invalid node format specification: bogus"):
        si.parse_format_long("partition,bogus")


def test_state_filter() -> None:
    nodes = [
        node(0, "idle"),
        node(1, "mixed", cpus_alloc=1),
        node(2, "drain"),
        node(3, "draining", cpus_alloc=1),
        node(4, "down", down_reason="not connected"),
    ]
    names = [n["node_id"] for n in ns.filter_nodes(nodes, "drain")]
    assert names == ["adev2", "adev3"]
    # As in sinfo, "idle" and "mix" compare the base state: drained nodes match them too;
    # "alloc" matches every node with allocated CPUs.
    idle_mix = ns.filter_nodes(nodes, "idle,mix")
    assert [n["node_id"] for n in idle_mix] == ["adev0", "adev1", "adev2", "adev3"]
    assert [n["node_id"] for n in ns.filter_nodes(nodes, "alloc")] == ["adev1", "adev3"]
    assert [n["node_id"] for n in ns.filter_nodes(nodes, "drained")] == ["adev2"]
    assert [n["node_id"] for n in ns.filter_nodes(nodes, "down,no_respond", all_of=True)] == [
        "adev4"
    ]
    assert ns.filter_nodes(nodes, "maint") == []
    with pytest.raises(ValueError, match='Bad state string: "sleepy"'):
        ns.filter_nodes(nodes, "idle,sleepy")
    assert [p["name"] for p in si.select_partitions(PARTS, "debug,nope")] == ["debug"]


@pytest.mark.parametrize(
    ("state", "reason", "compact", "long", "complete"),
    [
        ("idle", "", "IDLE", "IDLE", "IDLE"),
        ("mixed", "", "MIX", "MIXED", "MIXED"),
        ("allocated", "", "ALLOC", "ALLOCATED", "ALLOCATED"),
        ("down", "", "DOWN", "DOWN", "DOWN"),
        ("down", "not connected", "DOWN*", "DOWN*", "DOWN+NOT_RESPONDING"),
        ("drain", "", "DRAIN", "DRAINED", "IDLE+DRAIN"),
        ("draining", "", "DRNG", "DRAINING", "MIXED+DRAIN"),
    ],
)
def test_node_state_strings(
    state: str, reason: str, compact: str, long: str, complete: str
) -> None:
    code = ns.state_code(node(0, state, down_reason=reason, cpus_alloc=1))
    assert (ns.state_compact(code), ns.state_long(code), ns.state_complete(code)) == (
        compact, long, complete,
    )  # fmt: skip
