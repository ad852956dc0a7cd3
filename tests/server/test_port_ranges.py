"""A node's --port-range as the master keeps it: the lowest free ports are given, a port is
never held by two jobs, a job's end frees its ports, and the planner sees how many are free."""

from __future__ import annotations

import pytest

from mgpu_core.models import GpuDevice, NodeHello
from mgpu_server.records.nodes import NodeRecord


def node(port_range: list[int]) -> NodeRecord:
    gpu = GpuDevice(index=0, uuid="g0", visible_id="0")
    hello = NodeHello(node_id="n1", cpus=8, gpus=[gpu], port_range=port_range)
    return NodeRecord.from_hello(hello, now=0.0)


def test_lowest_free_ports_are_given_and_freed_at_the_end() -> None:
    n = node([30000, 30003])
    assert n.total_ports == 4 and n.view().free_ports == 4
    first = n.free_ports(2)
    assert first == (30000, 30001)
    n.allocate(1, (), 1, 0, first)
    assert n.free_ports(3) == (30002, 30003)  # fewer than asked: all there are
    n.allocate(2, (), 1, 0, (30002,))
    assert n.view().free_ports == 1
    with pytest.raises(RuntimeError, match="port 30002 on n1 already held by 2"):
        n.allocate(3, (), 1, 0, (30002,))
    n.release(1, 1, 0)
    assert n.free_ports(4) == (30000, 30001, 30003) and n.view().free_ports == 3


def test_a_node_without_a_range_offers_none() -> None:
    n = node([])
    assert n.total_ports == 0 and n.free_ports(1) == () and n.view().total_ports == 0


def test_the_range_survives_the_store() -> None:
    n = node([30000, 30010])
    again = NodeRecord.from_info(n.to_info(), now=1.0)
    assert again.port_range == (30000, 30010)
