"""The HTTP API, for real: a master with ``[http]`` serves HTTPS with its own certificate in
its own loop; bearer tokens are the users' tokens; every endpoint is a wire request with the
same owner rules and error codes; bodies and request rates are bounded; /metrics is
Prometheus's format; and the master keeps serving its TCP clients throughout."""

from __future__ import annotations

import json
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.cluster import Cluster, running_cluster, wait_for

pytestmark = pytest.mark.timeout(120)


class Api:
    def __init__(self, c: Cluster) -> None:
        port = int((c.master_state / "http.port").read_text())
        self.base = f"https://127.0.0.1:{port}"
        assert c.ca_file is not None
        self.tls = ssl.create_default_context(cafile=str(c.ca_file))
        self.cluster = c

    def call(
        self,
        method: str,
        path: str,
        user: str | None = "alice",
        body: Any = None,
        raw: bytes | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if user is not None:
            req.add_header("Authorization", f"Bearer {self.cluster.token(user)}")
        try:
            with urllib.request.urlopen(req, context=self.tls, timeout=20) as resp:
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()

    def json(self, method: str, path: str, user: str | None = "alice", body: Any = None) -> Any:
        status, _, data = self.call(method, path, user, body)
        return status, json.loads(data)


@pytest.fixture
def api(tmp_path: Path) -> Any:
    config = tmp_path / "master.toml"
    config.write_text('[http]\nlisten = "127.0.0.1:0"\nrate = 20\nburst = 60\nmax_body = "64K"\n')
    with running_cluster(tmp_path, "--config", str(config)) as c:
        c.start_node("n1", gpus=2)
        yield Api(c)


def test_jobs_through_http_with_the_wire_rules(api: Api) -> None:
    status, doc = api.json("GET", "/api/openapi.json", user=None)
    assert (
        status == 200 and "/api/jobs" in doc["paths"] and "JobSpec" in doc["components"]["schemas"]
    )
    status, err = api.json("GET", "/api/jobs", user=None)
    assert status == 401 and err["error"]["code"] == "authentication_failed"
    assert api.json("GET", "/api/whoami") == (200, {"user": "alice", "admin": False})

    job = {"argv": ["sh", "-c", "echo from-http"], "cwd": str(api.cluster.tmp), "gpus": 1}
    status, submitted = api.json("POST", "/api/jobs", body={"job": job})
    assert status == 200, submitted
    job_id = submitted["job_id"]
    wait_for(lambda: api.json("GET", f"/api/jobs/{job_id}")[1]["state"] == "COMPLETED", 20, "done")
    status, headers, data = api.call("GET", f"/api/jobs/{job_id}/log")
    assert status == 200 and data == b"from-http\n"
    assert headers["x-mgpu-job-state"] == "COMPLETED" and headers["x-mgpu-size"] == "10"
    status, rows = api.json("GET", "/api/jobs?finished=1&user=alice")
    assert status == 200 and [j["job_id"] for j in rows["jobs"]] == [job_id]

    held = api.json("POST", "/api/jobs", body={"job": {**job, "hold": True}})[1]["job_id"]
    status, err = api.json("DELETE", f"/api/jobs/{held}", user="bob")
    assert status == 403 and err["error"]["code"] == "permission_denied"
    assert api.json("DELETE", f"/api/jobs/{held}")[0] == 200
    status, err = api.json("GET", "/api/jobs/999999")
    assert status == 404 and err["error"]["code"] == "job_not_found"
    status, nodes = api.json("GET", "/api/nodes")
    assert status == 200 and nodes["nodes"][0]["node_id"] == "n1"
    status, history = api.json("GET", "/api/history?user=alice")
    assert status == 200 and {j["job_id"] for j in history["jobs"]} == {job_id, held}


def test_bad_requests_limits_and_metrics(api: Api) -> None:
    status, err = api.json("POST", "/api/jobs", body=None)
    assert status == 400 and err["error"]["code"] == "bad_message"
    assert api.call("POST", "/api/jobs", raw=b"{not json")[0] == 400
    assert api.call("POST", "/api/jobs", raw=b"x" * (65 * 1024))[0] == 413
    assert api.call("GET", "/api/nope")[0] == 404
    assert api.call("GET", "/api/jobs?limit=x&fields=nope")[0] == 400

    status, headers, text = api.call("GET", "/metrics")
    body = text.decode()
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert 'mgpu_node_gpus_total{node="n1"} 2' in body and "mgpu_node_up{" in body
    assert "mgpu_scheduling_pass_seconds_bucket" in body and "mgpu_db_commit_seconds" in body
    # Past the rate and burst, 429 with Retry-After; the TCP clients are served meanwhile.
    answers = [api.call("GET", "/api/whoami") for _ in range(90)]
    assert answers[0][0] == 200
    refused = [headers for status, headers, _ in answers if status == 429]
    assert refused and refused[0]["retry-after"] == "1"
    with api.cluster.client("bob") as bob:
        assert bob.queue()["jobs"] == []


def test_garbage_on_the_http_port_gets_400_and_nothing_else_breaks(api: Api) -> None:
    port = int(api.base.rsplit(":", 1)[1])
    for garbage in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 5000 + b"\r\n"):
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        with raw, api.tls.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
            conn.sendall(garbage)
            answer = conn.recv(65536)
        assert answer.startswith(b"HTTP/1.1 4"), answer[:80]
    assert api.json("GET", "/api/whoami")[0] == 200


def test_loopback_read_serves_gets_without_a_token_and_nothing_else(tmp_path: Path) -> None:
    config = tmp_path / "master.toml"
    config.write_text('[http]\nlisten = "127.0.0.1:0"\nloopback_read = true\n')
    with running_cluster(tmp_path, "--config", str(config)) as c:
        c.start_node("n1", gpus=1)
        api = Api(c)
        job = {"argv": ["sleep", "60"], "cwd": str(c.tmp), "gpus": 1, "hold": True}
        job_id = api.json("POST", "/api/jobs", body={"job": job})[1]["job_id"]
        assert api.json("GET", "/api/whoami", user=None) == (
            200,
            {"user": "(anonymous)", "admin": False},
        )
        status, rows = api.json("GET", "/api/jobs", user=None)
        assert status == 200 and [j["job_id"] for j in rows["jobs"]] == [job_id]
        assert api.json("GET", f"/api/jobs/{job_id}", user=None)[1]["script"] is None
        assert api.call("DELETE", f"/api/jobs/{job_id}", user=None)[0] == 401  # no token: no change
        assert api.call("GET", f"/api/jobs/{job_id}/log", user=None)[0] == 403
