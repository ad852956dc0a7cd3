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
    gpu_name: str | list[str] = "g",
) -> NodeHello:
    """A node's registration, as its validated hello carries it. ``gpu_name``: NVML's name of
    every GPU, or of each ("NVIDIA H100 80GB HBM3": type h100; "g": no type)."""
    names = [gpu_name] * gpus if isinstance(gpu_name, str) else gpu_name
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
                name=names[i],
                memory_total_bytes=1,
                visible_id=str(i),
                fake=True,
            )
            for i in range(gpus)
        ],
        running_job_ids=running or [],
    )
