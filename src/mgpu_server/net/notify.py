"""Notices of job events (``--mail-type``; the cluster's ``[[webhooks]]``; a job's ``--notify``
URL): mail through the SMTP relay of ``[mail]``, and JSON POSTs signed with HMAC-SHA256.

Nothing here runs on the scheduler's path: the state leaves a ``Notify`` effect, the server
hands it to :meth:`Notifier.submit`, which only queues it; a worker task delivers, retrying
with backoff (a mail is sent in a thread: smtplib blocks). A queue past its bound drops the
oldest notice, and a notice that cannot be delivered is logged and kept on the job as its
last notice error (``show``), never retried forever.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import smtplib
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import h11

from mgpu_server.state.effects import Notify

log = logging.getLogger(__name__)

MAX_QUEUED = 10_000
TRIES = 5
FIRST_RETRY_S = 1.0  # then 2, 4, 8 s
SEND_TIMEOUT_S = 10.0
# Notices whose subscribers to END get them too (Slurm mails one "Failed" where END is set).
ENDINGS = ("FAIL", "INVALID_DEPEND")


@dataclass(frozen=True)
class Webhook:
    url: str
    events: frozenset[str]  # empty: every event
    secret: bytes = b""


@dataclass(frozen=True)
class NotifySettings:
    """[mail] and [[webhooks]] of the master's config, and [notify] job_url_prefixes."""

    smtp_host: str = ""  # "": no mail
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_user: str = ""
    smtp_password: str = ""
    mail_from: str = "mgpu@localhost"
    mail_domain: str = ""  # a job's owner's address: USER@mail_domain ("": no default)
    webhooks: tuple[Webhook, ...] = ()
    job_url_prefixes: tuple[str, ...] = ()  # --notify URLs must start with one of these
    job_url_secret: bytes = b""  # signs --notify POSTs
    cluster_name: str = "mgpu"


def wants(subscribed: frozenset[str] | tuple[str, ...], event: str) -> bool:
    """Whether a subscriber to ``subscribed`` (empty: all) is told of ``event``."""
    if not subscribed:
        return True
    return event in subscribed or (event in ENDINGS and "END" in subscribed)


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


@dataclass
class _Delivery:
    kind: str  # "mail" | "post"
    target: str  # an address or a URL
    body: bytes
    job_id: int
    event: str
    secret: bytes = b""
    tries: int = 0
    subject: str = ""


@dataclass
class Notifier:
    settings: NotifySettings
    errors: dict[int, str] = field(default_factory=dict)  # job id -> its last notice error
    delivered: int = 0
    _queue: deque[_Delivery] = field(default_factory=deque)
    _wake: asyncio.Event | None = None

    def submit(self, notice: Notify) -> None:
        """Queue the deliveries of one notice (never waits)."""
        cfg = self.settings
        body = json.dumps(
            {
                "event": notice.event,
                "cluster": cfg.cluster_name,
                "time": time.time(),
                "job": notice.job,
            },
            sort_keys=True,
        ).encode()
        job_id, event = int(notice.job["job_id"]), notice.event
        found: list[_Delivery] = []
        if wants(notice.mail_types, event) and notice.mail_types:
            to = notice.mail_user or (
                f"{notice.job['user']}@{cfg.mail_domain}" if cfg.mail_domain else ""
            )
            if cfg.smtp_host and to:
                found.append(_Delivery("mail", to, _mail_text(notice).encode(), job_id, event,
                                       subject=_subject(notice, cfg.cluster_name)))  # fmt: skip
            if notice.notify_url:
                found.append(
                    _Delivery("post", notice.notify_url, body, job_id, event, cfg.job_url_secret)
                )
        for hook in cfg.webhooks:
            if wants(hook.events, event):
                found.append(_Delivery("post", hook.url, body, job_id, event, hook.secret))
        for delivery in found:
            if len(self._queue) >= MAX_QUEUED:
                dropped = self._queue.popleft()
                log.error(
                    "notice queue full: dropped job=%d event=%s", dropped.job_id, dropped.event
                )
            self._queue.append(delivery)
        if found and self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        """Deliver, forever (the server runs this as a task)."""
        self._wake = asyncio.Event()
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            delivery = self._queue.popleft()
            try:
                await self._deliver(delivery)
                self.delivered += 1
            except (
                OSError,
                smtplib.SMTPException,
                h11.ProtocolError,
                TimeoutError,
                ValueError,
            ) as exc:
                self._failed(delivery, exc)

    async def _deliver(self, d: _Delivery) -> None:
        if d.kind == "mail":
            await asyncio.to_thread(self._send_mail, d)
        else:
            status = await asyncio.wait_for(_post(d.target, d.body, d), SEND_TIMEOUT_S)
            if not 200 <= status < 300:
                raise ValueError(f"HTTP {status}")

    def _failed(self, d: _Delivery, exc: BaseException) -> None:
        d.tries += 1
        what = f"{d.kind} to {d.target} ({d.event}) failed: {type(exc).__name__}: {exc}"
        if d.tries >= TRIES:
            log.error("job=%d notice %s; gave up after %d tries", d.job_id, what, d.tries)
            self.errors[d.job_id] = f"{what} (gave up after {d.tries} tries)"
            if len(self.errors) > MAX_QUEUED:
                self.errors.pop(next(iter(self.errors)))
            return
        delay_s = FIRST_RETRY_S * 2 ** (d.tries - 1)
        log.warning("job=%d notice %s; retry in %.0f s", d.job_id, what, delay_s)
        asyncio.get_running_loop().call_later(delay_s, self._retry, d)

    def _retry(self, d: _Delivery) -> None:
        self._queue.append(d)
        if self._wake is not None:
            self._wake.set()

    def _send_mail(self, d: _Delivery) -> None:
        cfg = self.settings
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = cfg.mail_from, d.target, d.subject
        msg.set_content(d.body.decode())
        with smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=SEND_TIMEOUT_S) as smtp:
            if cfg.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if cfg.smtp_user:
                smtp.login(cfg.smtp_user, cfg.smtp_password)
            smtp.send_message(msg)


async def _post(url: str, body: bytes, d: _Delivery) -> int:
    """POST ``body`` (JSON) to ``url`` with its signature; the response's status."""
    parts = urlsplit(url)
    tls = ssl.create_default_context() if parts.scheme == "https" else None
    port = parts.port or (443 if tls else 80)
    host = parts.hostname or ""
    reader, writer = await asyncio.open_connection(host, port, ssl=tls)
    try:
        conn = h11.Connection(h11.CLIENT)
        headers = [
            ("host", parts.netloc),
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            ("user-agent", "mgpu-master"),
            ("x-mgpu-event", d.event),
            ("connection", "close"),
        ]
        if d.secret:
            headers.append(("x-mgpu-signature", signature(d.secret, body)))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        writer.write(conn.send(h11.Request(method="POST", target=target, headers=headers)) or b"")
        writer.write(conn.send(h11.Data(data=body)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Response):
                return int(event.status_code)
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("closed before a response")
    finally:
        writer.close()


def _subject(n: Notify, cluster: str) -> str:
    job = n.job
    words = {"BEGIN": "Began", "END": "Ended", "FAIL": "Failed", "REQUEUE": "Requeued",
             "INVALID_DEPEND": "Dependency never satisfied"}  # fmt: skip
    what = words.get(n.event, f"Reached {n.event.replace('TIME_LIMIT', 'time limit')} %")
    ref = job.get("job_ref") or job["job_id"]
    return f"{cluster} job {ref} ({job['name']}): {what}, {job['state']}"


def _mail_text(n: Notify) -> str:
    job: dict[str, Any] = n.job
    lines = [f"{key}: {job[key]}" for key in sorted(job) if job[key] not in (None, "")]
    return f"Event: {n.event}\n" + "\n".join(lines) + "\n"
