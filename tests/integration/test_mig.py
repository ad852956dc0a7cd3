"""MIG slices end to end (issue 15), with a real master and a real agent whose fake GPUs have a
MIG layout (``--fake-gpus h100,h100/1g.10gb*2``): a job asks for a profile as for any GPU type
and runs with ``CUDA_VISIBLE_DEVICES=MIG-<uuid>``; a job without a type gets the whole GPU
only; the listings show each slice with its GPU."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

from mgpu_client.client import Client
from mgpu_core.config import parse_address
from mgpu_core.models import JobSpec
from tests.helpers.cluster import running_cluster, wait_for

VISIBLE = ["sh", "-c", 'echo "$CUDA_VISIBLE_DEVICES"; exec sleep 30']


def test_slices_are_allocated_by_profile_and_never_to_untyped_jobs(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as c:
        c.start_node("n1", None, "--fake-gpus", "h100,h100/1g.10gb*2")
        with Client(parse_address(c.socket_address)) as client:
            nodes = client.nodes()
            gpus = nodes[0]["gpus"]
            assert [g["model"] for g in gpus] == ["h100", "1g.10gb", "1g.10gb"]
            assert [g["parent_index"] for g in gpus] == [-1, 1, 1]
            slice_uuids = {g["uuid"] for g in gpus[1:]}

            def job(gpus: int, gpu_type: str = "") -> int:
                out = str(tmp_path / "out-%j")
                spec = JobSpec(argv=VISIBLE, cwd=str(tmp_path), stdout_path=out, gpus=gpus)
                return client.submit(replace(spec, gpu_type=gpu_type))

            first = job(gpus=1, gpu_type="1g.10gb")
            second = job(gpus=1, gpu_type="1g.10gb")
            whole = job(gpus=1)
            untyped_waits = job(gpus=1)  # the whole GPU is taken; the free slices are not for it
            third_slice = job(gpus=1, gpu_type="1g.10gb")
            rows = {j: c.wait_state(j, "RUNNING") for j in (first, second, whole)}
            assert sorted(rows[first]["gpu_indices"] + rows[second]["gpu_indices"]) == [1, 2]
            assert rows[whole]["gpu_indices"] == [0]

            def printed(job_id: int) -> str | None:
                path = tmp_path / f"out-{job_id}"
                text = path.read_text().strip() if path.exists() else ""
                return text or None

            seen = {
                j: wait_for(lambda j=j: printed(j), 20, f"job {j}'s output")  # type: ignore[misc]
                for j in (first, second, whole)
            }
            assert {seen[first], seen[second]} == slice_uuids  # each its own MIG-... UUID
            assert all(v.startswith("MIG-") for v in (seen[first], seen[second]))
            assert seen[whole] == "0"
            for waiting in (untyped_waits, third_slice):
                row = c.job(waiting)
                assert row["state"] == "PENDING" and row["reason"] in ("Resources", "Priority")

            client.cancel([whole])
            assert c.wait_state(untyped_waits, "RUNNING")["gpu_indices"] == [0]
            assert c.job(third_slice)["state"] == "PENDING"  # no whole GPU goes to a slice job
            client.cancel([first])
            c.wait_state(third_slice, "RUNNING")

        listing = c.cli("mgpu_client", "nodes", check=True).stdout
        assert "(MIG slice of GPU 1 GPU-fake-n1-1)" in listing
        c.cli("mgpu_client", "slurm-commands", str(tmp_path / "bin"), check=True)
        sinfo = subprocess.run(
            [str(tmp_path / "bin" / "sinfo"), "-h", "-N", "-o", "%N %G"],
            env=c.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert sinfo.stdout.split() == ["n1", "gpu:1g.10gb:2,gpu:h100:1"], sinfo.stderr


def test_whole_gpu_requests_beyond_the_whole_gpus_are_refused(tmp_path: Path) -> None:
    """A node with one whole GPU and seven slices holds at most one GPU for a job without a
    type: two are refused at submit, as any request no node can ever hold."""
    with running_cluster(tmp_path) as c:
        c.start_node("n1", None, "--fake-gpus", "a100,h100/1g.10gb*7")
        result = c.cli("mgpu_sbatch", "-G", "2", "--wrap", "true")
        assert result.returncode != 0
        assert result.stderr.count("\n") == 1 and "2 GPUs" in result.stderr, result.stderr
        ok = c.cli("mgpu_sbatch", "--parsable", "-G", "1g.10gb:7", "--wrap", "true")
        assert ok.returncode == 0, ok.stderr
        c.wait_state(int(ok.stdout.strip()), "COMPLETED")
