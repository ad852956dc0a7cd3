"""Partitions and GPU types with a real master and two real agents with fake GPUs of different
models (issue 13): jobs land in the partition and on the GPUs they ask for, what no node of
their partitions has is refused, and the listings say what each partition and node holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mgpu_client.client import Client
from mgpu_core.config import parse_address
from mgpu_core.errors import InvalidPartition, InvalidRequest
from mgpu_core.models import JobSpec
from tests.helpers.cluster import running_cluster

CONFIG = """
cluster_name = "lab"
[partition.a100s]
nodes = "na"
default = true
max_time = "1:00:00"
[partition.h100s]
nodes = ["nh"]
priority_tier = 1
[partition.every]
nodes = "ALL"
"""


def test_jobs_are_placed_by_partition_and_gpu_type(tmp_path: Path) -> None:
    config = tmp_path / "master.toml"
    config.write_text(CONFIG)
    with running_cluster(tmp_path, "--config", str(config)) as c:
        c.start_node("na", None, "--fake-gpus", "a100*2")
        c.start_node("nh", None, "--fake-gpus", "a100*1,h100*2")
        with Client(parse_address(c.socket_address)) as client:

            def job(**spec: Any) -> int:
                return client.submit(JobSpec(argv=["true"], cwd=str(tmp_path), **spec))

            typed = job(gpus=2, gpu_type="h100", partition="a100s,h100s")
            default = job(gpus=1)
            anywhere = job(gpus=1, gpu_type="a100", partition="h100s")
            rows = {j: c.wait_state(j, "COMPLETED") for j in (typed, default, anywhere)}
            assert (rows[typed]["node"], rows[typed]["partition"]) == ("nh", "h100s")
            assert sorted(rows[typed]["gpu_indices"]) == [1, 2]  # the h100s, not the a100
            assert (rows[default]["node"], rows[default]["partition"]) == ("na", "a100s")
            assert rows[default]["time_limit_s"] == 3600  # the partition's MaxTime
            assert (rows[anywhere]["node"], rows[anywhere]["gpu_indices"]) == ("nh", [0])

            with pytest.raises(InvalidRequest, match="1 h100 GPUs, 1 CPUs asked"):
                job(gpus=1, gpu_type="h100")  # no node of a100s has one
            with pytest.raises(InvalidRequest) as err:
                job(gpus=1, gpu_type="v100")
            assert str(err.value) == "unknown GPU type 'v100' (this cluster has: a100, h100)"
            with pytest.raises(InvalidPartition, match="invalid partition specified: gpu"):
                job(partition="gpu")

            trial = {"argv": ["true"], "gpus": 2, "gpu_type": "h100", "partition": "every"}
            estimate = client.request("submit", job=trial, test_only=True)
            assert estimate["job_id"] is None
            assert (estimate["node"], estimate["partition"]) == ("nh", "every")
            assert estimate["would_start"] > 0

            partitions = client.request("partitions")["partitions"]
            assert [(p["name"], p["nodes"], p["total_gpus"]) for p in partitions] == [
                ("a100s", ["na"], 2),
                ("h100s", ["nh"], 3),
                ("every", ["na", "nh"], 5),
            ]
            nodes = {n["node_id"]: n for n in client.nodes()}
            assert nodes["na"]["partitions"] == ["a100s", "every"]
            assert [g["model"] for g in nodes["nh"]["gpus"]] == ["a100", "h100", "h100"]
