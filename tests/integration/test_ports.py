"""``--ports N`` end to end (issue 15): the master gives each job N TCP ports from its node's
``--port-range``, the job finds them in MGPU_PORTS, ``show`` and the queue rows list them, a
port is never held by two jobs at once (even across a master crash), and jobs that find too
few free wait for them."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from mgpu_client.client import Client
from mgpu_core.config import parse_address
from mgpu_core.models import JobSpec
from tests.helpers.cluster import running_cluster, wait_for

PORTS_JOB = ["sh", "-c", 'echo "$MGPU_PORTS"; exec sleep 60']


def _printed(tmp_path: Path, job_id: int) -> str | None:
    path = tmp_path / f"out-{job_id}"
    text = path.read_text().strip() if path.exists() else ""
    return text or None


def test_ports_are_given_once_and_survive_a_master_crash(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as c:
        c.start_node("n1", 4, "--port-range", "21000-21004")
        spec = JobSpec(argv=PORTS_JOB, cwd=str(tmp_path), stdout_path=str(tmp_path / "out-%j"))
        ids: list[int] = []
        asked: dict[int, int] = {}
        lock = threading.Lock()

        def submit(ports: int) -> None:
            with Client(parse_address(c.socket_address)) as client:
                job_id = client.submit(JobSpec(**{**spec.to_wire(), "ports": ports}))
            with lock:
                ids.append(job_id)
                asked[job_id] = ports

        # Six clients at once, 2 + 2 + 1 + 1 + 1 + 1 ports asked, 5 in the range.
        threads = [threading.Thread(target=submit, args=(n,)) for n in (2, 2, 1, 1, 1, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert len(ids) == 6

        def running() -> dict[int, list[int]] | None:
            jobs = c.jobs()
            live = {j: jobs[j]["ports"] for j in ids if jobs[j]["state"] == "RUNNING"}
            pending = [j for j in ids if jobs[j]["state"] == "PENDING"]
            return live if live and sum(map(len, live.values())) + 1 >= 5 and pending else None

        live = wait_for(running, 20, "the range in use")
        held = [p for ports in live.values() for p in ports]
        assert len(held) == len(set(held)) and set(held) <= set(range(21000, 21005))
        for job_id, ports in live.items():
            assert len(ports) == asked[job_id]
            seen = wait_for(lambda j=job_id: _printed(tmp_path, j), 20, "MGPU_PORTS")  # type: ignore[misc]
            assert seen == ",".join(map(str, ports))
        first = next(iter(live))
        shown = c.cli("mgpu_client", "show", str(first), check=True).stdout
        assert f"n1:{live[first][0]}" in shown

        # A crash of the master loses nothing: the ports stay held by the same jobs.
        c.kill_master()
        c.start_master(*c.last_master_args, port=c.port)
        c.wait_for(lambda: c.node_up("n1"), 20, "n1 back")
        again = {j: c.job(j)["ports"] for j in live}
        assert again == live
        extra = c.sbatch("--ports", "1", "--wrap", "true")
        row = c.job(extra)
        assert row["state"] == "PENDING" or not set(row["ports"]) & set(held)

        # Cancelling the running ones hands their ports to the waiting ones, never twice.
        with Client(parse_address(c.socket_address)) as client:
            client.cancel(list(live))
        rest = [j for j in ids if j not in live]

        def rest_running() -> dict[int, list[int]] | None:
            jobs = c.jobs()
            got = {j: jobs[j]["ports"] for j in rest if jobs[j]["state"] == "RUNNING"}
            return got if len(got) == len(rest) else None

        later = wait_for(rest_running, 20, "the waiting jobs running")
        ports_now = [p for ports in later.values() for p in ports]
        assert len(ports_now) == len(set(ports_now))


def test_more_ports_than_any_node_has_are_refused_at_submit(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as c:
        c.start_node("n1", 1, "--port-range", "21010-21011")
        result = c.cli("mgpu_sbatch", "--ports", "3", "--wrap", "true")
        assert result.returncode != 0 and result.stderr.count("\n") == 1
        assert "3 ports asked (--ports); the most a node offers is 2" in result.stderr
        bad = c.cli("mgpu_sbatch", "--ports", "x", "--wrap", "true")
        assert bad.returncode != 0 and "--ports" in bad.stderr and bad.stderr.count("\n") == 1
        rows = json.loads(c.cli("mgpu_client", "nodes", "--json", check=True).stdout)["nodes"]
        assert rows[0]["port_range"] == [21010, 21011]
