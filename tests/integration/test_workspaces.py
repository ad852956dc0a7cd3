"""Persistent workspaces end to end (issue 15), with a real master and agent: a job finds its
workspace in MGPU_WORKSPACE and leaves a file there, a later job (a later session) finds the
file; ``mgpu_client workspace list`` shows it with its size; another user may neither list
nor remove it, its owner cannot remove it while a job of theirs runs there, and then can."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mgpu_core.errors import PermissionDenied
from mgpu_core.models import JobSpec
from tests.helpers.cluster import Cluster, wait_for_text

pytestmark = pytest.mark.timeout(120)

DATA_BYTES = 300_000


def test_a_workspace_outlives_its_jobs_and_only_its_owner_removes_it(cluster: Cluster) -> None:
    cluster.start_node("n1", gpus=0)
    tmp = cluster.tmp

    def batch(script: str, out: str) -> JobSpec:
        return JobSpec(argv=["sh", "-c", script], cwd=str(tmp), stdout_path=str(tmp / out))

    with cluster.client("alice") as alice, cluster.client("bob") as bob:
        write = 'echo "$MGPU_WORKSPACE"; head -c 300000 /dev/urandom > "$MGPU_WORKSPACE/ckpt"'
        first = alice.submit(batch(write, "first.out"))
        cluster.wait_state(first, "COMPLETED")
        path = Path(wait_for_text(tmp / "first.out"))
        assert path.name == "alice" and path.parent.name == "workspaces"
        assert path.stat().st_mode & 0o777 == 0o700

        later = alice.submit(batch('wc -c < "$MGPU_WORKSPACE/ckpt"', "later.out"))
        cluster.wait_state(later, "COMPLETED")
        assert wait_for_text(tmp / "later.out") == str(DATA_BYTES)

        [entry] = alice.request("workspace", action="list")["nodes"]
        assert (entry["node"], entry["nodes"], entry["error"]) == ("n1", ["n1"], "")
        [ws] = entry["workspaces"]
        assert (ws["user"], ws["path"], ws["complete"]) == ("alice", str(path), True)
        assert ws["used_bytes"] >= DATA_BYTES and entry["free_bytes"] > 0
        assert bob.request("workspace", action="list")["nodes"][0]["workspaces"] == []

        with pytest.raises(PermissionDenied, match="only alice or an admin can remove"):
            bob.request("workspace", action="rm", user="alice")
        with pytest.raises(PermissionDenied, match="only alice or an admin can list"):
            bob.request("workspace", action="list", user="alice")
        assert (path / "ckpt").stat().st_size == DATA_BYTES

        # The admin's view, through the command (the socket's user is the test's: an admin).
        listing = cluster.cli("mgpu_client", "workspace", "list", check=True).stdout.splitlines()
        assert listing[0].split() == ["NODE", "USER", "USED", "QUOTA", "FREE", "PATH"]
        assert [line.split()[:2] for line in listing[1:]] == [["n1", "alice"]]
        assert listing[1].split()[-1] == str(path)
        out = cluster.cli("mgpu_client", "workspace", "list", "--json", "--user", "alice")
        assert json.loads(out.stdout)["nodes"][0]["workspaces"][0]["path"] == str(path)

        running = alice.submit(batch('touch "$MGPU_WORKSPACE/busy"; exec sleep 60', "r.out"))
        cluster.wait_state(running, "RUNNING")
        [busy] = alice.request("workspace", action="rm")["nodes"]
        assert busy["removed"] == "" and f"in use by running job {running}" in busy["error"]
        assert (path / "ckpt").exists()
        refused = cluster.cli("mgpu_client", "workspace", "rm", "--user", "alice", "--yes")
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines() == [
            f"mgpu_client workspace rm: node n1: {busy['error']}"
        ]

        alice.cancel([running])
        cluster.wait_state(running, "CANCELLED")
        unconfirmed = cluster.cli("mgpu_client", "workspace", "rm", "--user", "alice")
        assert unconfirmed.returncode != 0 and "add --yes" in unconfirmed.stderr
        assert len(unconfirmed.stderr.strip().splitlines()) == 1
        [done] = alice.request("workspace", action="rm")["nodes"]
        assert (done["removed"], done["error"]) == (str(path), "")
        assert not path.exists()
        assert alice.request("workspace", action="list")["nodes"][0]["workspaces"] == []
        gone = cluster.cli("mgpu_client", "workspace", "rm", "--user", "alice", "--yes")
        assert gone.returncode == 0 and gone.stdout == "no workspace of alice on node n1\n"

        fresh = alice.submit(batch('ls -A "$MGPU_WORKSPACE" | wc -l', "fresh.out"))
        cluster.wait_state(fresh, "COMPLETED")
        assert wait_for_text(tmp / "fresh.out") == "0"  # a new, empty workspace


def test_a_node_with_workspaces_off_gives_jobs_none(cluster: Cluster) -> None:
    cluster.start_node("n1", 0, "--workspace-root", "none")
    spec = JobSpec(
        argv=["sh", "-c", 'echo "[${MGPU_WORKSPACE-unset}]"'],
        cwd=str(cluster.tmp),
        stdout_path=str(cluster.tmp / "out"),
        env={"MGPU_WORKSPACE": "/from/the/submitters/shell"},
    )
    with cluster.client("alice") as alice:
        cluster.wait_state(alice.submit(spec), "COMPLETED")
        assert wait_for_text(cluster.tmp / "out") == "[unset]"
        assert alice.request("workspace", action="list")["nodes"] == []
    named = cluster.cli("mgpu_client", "workspace", "list", "--node", "n1")
    assert named.returncode == 1
    assert named.stderr == "mgpu_client workspace list: node n1: node n1 keeps no workspaces\n"
