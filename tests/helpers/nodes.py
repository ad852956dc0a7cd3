"""Node builders: a node's registration as its validated hello carries it."""

from __future__ import annotations

from mgpu_core.models import GpuDevice, NodeHello


def node_info(
    node_id: str,
    gpus: int,
    running: list[int] | None = None,
    *,
    cpus: int = 8,
    mem_bytes: int = 1 << 30,
) -> NodeHello:
    """A node's registration, as its validated hello carries it."""
    return NodeHello(
        node_id=node_id,
        hostname=node_id,
        address="10.0.0.1",
        cpus=cpus,
        mem_bytes=mem_bytes,
        gpu_backend="fake",
        agent_version="t",
        gpus=[
            GpuDevice(
                index=i,
                uuid=f"{node_id}-{i}",
                name="g",
                memory_total_bytes=1,
                visible_id=str(i),
                fake=True,
            )
            for i in range(gpus)
        ],
        running_job_ids=running or [],
    )
