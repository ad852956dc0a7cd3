"""Notices, for real: a master with a [mail] relay (a local SMTP sink), a [[webhooks]] table
and [notify] prefixes; a job with --mail-type and --mail-user gets its mail, the webhook gets
every event's JSON signed with HMAC-SHA256, a job's own --notify URL is taken only under an
allowed prefix, and a webhook that keeps failing ends as the job's notice error in show."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
from collections.abc import Iterator
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.helpers.cluster import Cluster, running_cluster, wait_for

pytestmark = pytest.mark.timeout(120)
SECRET = "s3cret"


class Sink:
    """aiosmtpd's handler: every mail received."""

    def __init__(self) -> None:
        self.mails: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append(message_from_bytes(envelope.content))
        return "250 OK"


class Hooks:
    """A webhook receiver: every POST (path, headers, body); a path with "fail" gets 500."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, str], bytes]] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(500 if "fail" in self.path else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self, path: str, job_id: int) -> list[str]:
        return [
            json.loads(body)["event"]
            for p, _, body in self.posts
            if p == path and json.loads(body)["job"]["job_id"] == job_id
        ]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Cluster, Sink, Hooks]]:
    sink, hooks = Sink(), Hooks()
    with socket.socket() as probe:  # aiosmtpd's controller needs a port it can connect to
        probe.bind(("127.0.0.1", 0))
        smtp_port = probe.getsockname()[1]
    smtp = Controller(sink, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    config = tmp_path / "master.toml"
    config.write_text(
        f'[mail]\nsmtp = "127.0.0.1:{smtp_port}"\n'
        'from = "mgpu@lab.test"\ndomain = "lab.test"\n'
        f'[[webhooks]]\nurl = "{hooks.url}/all"\nsecret = "{SECRET}"\n'
        f'[notify]\njob_url_prefixes = ["{hooks.url}/job"]\n'
    )
    try:
        with running_cluster(tmp_path, "--config", str(config)) as c:
            c.start_node("n1", gpus=1)
            yield c, sink, hooks
    finally:
        smtp.stop()
        hooks.server.shutdown()
        hooks.server.server_close()


def test_mail_webhooks_and_a_jobs_own_url(setup: tuple[Cluster, Sink, Hooks]) -> None:
    c, sink, hooks = setup
    ok = c.sbatch("--mail-type=END,FAIL", "--mail-user=ann@lab.test", "-J", "m1", "--wrap", "true")
    bad = c.sbatch("--mail-type=FAIL", "--notify", f"{hooks.url}/job", "--wrap", "exit 2")
    for job_id in (ok, bad):
        c.wait_state(job_id, "COMPLETED", "FAILED")
    wait_for(lambda: len(sink.mails) >= 1, 20, "the mail")
    wait_for(lambda: "END" in hooks.events("/all", ok), 20, "the webhook's END")
    [mail] = [m for m in sink.mails if f"job {ok} " in m["Subject"]]
    assert mail["To"] == "ann@lab.test" and mail["From"] == "mgpu@lab.test"
    assert "Ended, COMPLETED" in mail["Subject"] and f"job_id: {ok}" in mail.get_payload()
    # The cluster's webhook: every event, signed.
    assert hooks.events("/all", ok) == ["BEGIN", "END"]
    wait_for(lambda: hooks.events("/all", bad) == ["BEGIN", "FAIL"], 20, "the failure")
    signed = [(h, b) for p, h, b in hooks.posts if p == "/all"]
    for headers, body in signed:
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["x-mgpu-signature"] == expected and headers["x-mgpu-event"]
    # The job's own URL: its --mail-type's events only (no mail: bad's owner has no address
    # but root@lab.test, and FAIL mail goes there).
    wait_for(lambda: hooks.events("/job", bad) == ["FAIL"], 20, "the job's own notice")
    body = json.loads(next(b for p, _, b in hooks.posts if p == "/job"))
    assert body["job"]["exit_code"] == 2 and body["job"]["state"] == "FAILED"


def test_a_url_outside_the_prefixes_is_refused_and_failures_show(
    setup: tuple[Cluster, Sink, Hooks],
) -> None:
    c, _, hooks = setup
    refused = c.cli("mgpu_sbatch", "--notify", "http://10.0.0.1/x", "--wrap", "true")
    assert refused.returncode == 1 and "not under one of this cluster's" in refused.stderr
    job_id = c.sbatch("--mail-type=END", "--notify", f"{hooks.url}/job?fail", "--wrap", "true")
    c.wait_state(job_id, "COMPLETED")

    def notice_error() -> str:
        shown = json.loads(c.cli("mgpu_client", "show", "--json", str(job_id)).stdout)
        return str(shown[0]["notice_error"])

    # 5 tries, 1 + 2 + 4 + 8 s apart, then given up: the error is the job's.
    assert "HTTP 500" in wait_for(notice_error, 40, "the notice given up")
