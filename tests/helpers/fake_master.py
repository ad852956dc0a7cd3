"""A master played by a test: it accepts a real node agent process, authenticates it and
records what it sends, so a test can say anything to an agent, hostile frames included.

The agent connects out to its master, so this is the only way to reach it. Each connection
is a :class:`Link`; after the handshake a thread reads the agent's messages into the
:class:`FakeMaster`'s records and acknowledges each exit and each heartbeat at once, as a real
master does; its registration reply carries the fence settings, as the real master's does.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mgpu_client import launch
from mgpu_core import auth, constants
from mgpu_core.errors import ProtocolError
from mgpu_core.handshake import Responder
from mgpu_core.messages import NODE_MESSAGES, event_error, validate
from mgpu_core.protocol import PROTOCOL_VERSION, FrameDecoder
from tests.helpers.wire import frame

NODE_ID = "fz1"


class Link:
    """One connection from the agent."""

    def __init__(self, master: FakeMaster, sock: socket.socket, index: int) -> None:
        self.master = master
        self.sock = sock
        self.index = index
        self.opened_s = time.monotonic()
        self.hello: dict[str, Any] = {}
        self.registered = False
        self._decoder = FrameDecoder()
        self._pending: list[dict[str, Any]] = []
        self._send_lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self.eof = threading.Event()  # the agent closed (or reset) the connection

    def recv(self) -> dict[str, Any]:
        """The agent's next message (blocking, for the handshake); ConnectionError at EOF."""
        while not self._pending:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the agent closed the link")
            self._pending.extend(self._decoder.feed(data))
        return self._pending.pop(0)

    def send(self, data: bytes) -> bool:
        """Send raw bytes; False if the agent has already hung up."""
        with self._send_lock:
            try:
                self.sock.sendall(data)
            except OSError:
                return False
            return True

    def end_writing(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def start_reading(self) -> None:
        self.sock.settimeout(None)
        self._reader = threading.Thread(target=self._read, name=f"link-{self.index}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            while True:
                for msg in self._pending:
                    self.master.record(self, msg)
                self._pending.clear()
                data = self.sock.recv(256 * 1024)
                if not data:
                    return
                self._pending.extend(self._decoder.feed(data))
        except OSError:
            return
        except ProtocolError as exc:
            self.master.note_bad(f"link {self.index}: undecodable frame from the agent: {exc}")
        finally:
            self.eof.set()
            self.master.notify()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        if self._reader is not None:
            self._reader.join(timeout=10)
        self.sock.close()


class FakeMaster:
    """Listens on 127.0.0.1; owns the cluster key the agent is started with."""

    def __init__(
        self,
        tmp: Path,
        *,
        fence_timeout_s: float | None = constants.FENCE_TIMEOUT_S,
        kill_grace_s: float = constants.KILL_GRACE_S,
    ) -> None:
        self.tmp = tmp
        # Sent in the registration reply (None: not at all, as an older master).
        self.fence_timeout_s = fence_timeout_s
        self.kill_grace_s = kill_grace_s
        self.ack_heartbeats = True  # answer each heartbeat with heartbeat_ack
        # Exits to refuse, as the real master refuses an event it cannot take: job id -> the
        # error's message, sent instead of the exit_ack.
        self.refuse_exits: dict[int, str] = {}
        self.key_file = tmp / "cluster.key"
        self.key = auth.create_key(self.key_file)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.links: list[Link] = []
        self._cond = threading.Condition()
        # What the agent reported, over all links (guarded by _cond).
        self.started: dict[int, dict[str, Any]] = {}
        self.exited: dict[int, dict[str, Any]] = {}
        self.exit_counts: dict[int, int] = defaultdict(int)
        self.output: dict[int, bytes] = defaultdict(bytes)
        self.heartbeats: list[tuple[int, float]] = []  # (link index, monotonic time)
        self.beats: list[dict[str, Any]] = []  # the heartbeats themselves
        self.events: list[dict[str, Any]] = []  # job events (started, exited) in order
        self.bad: list[str] = []  # anything the agent sent that a real master would refuse

    # ---- the agent process ---------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        """The agent's."""
        return self.tmp / "node"

    def start_agent(self, *extra: str) -> subprocess.Popen[bytes]:
        argv = launch.agent_command(
            master_port=self.port,
            node_id=NODE_ID,
            gpus=2,
            cpus=4,
            state_dir=self.state_dir,
            key_file=self.key_file,
            tls_ca=None,  # plain TCP: what is tested here is the agent, not the transport
            extra=("--stop-jobs-on-exit", *extra),
        )
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        return launch.spawn(argv, log=self.tmp / "node.log", env=env)

    def log_text(self) -> str:
        return (self.tmp / "node.log").read_text(errors="replace")

    # ---- links ---------------------------------------------------------------------------

    def accept(self, timeout_s: float = 15.0) -> Link:
        """The agent's next connection, with its hello read (nothing answered yet)."""
        self.listener.settimeout(timeout_s)
        sock, _ = self.listener.accept()
        sock.settimeout(10)
        link = Link(self, sock, len(self.links))
        self.links.append(link)
        link.hello = link.recv()
        assert link.hello["t"] == "hello" and link.hello["role"] == "node", link.hello
        return link

    def challenge(self, link: Link) -> Responder:
        """Prove we hold the key (the agent checks); returns the exchange for :meth:`verify`."""
        responder = Responder(self.key, NODE_ID, "node")
        link.send(frame(responder.on_hello(link.hello)))
        return responder

    def verify(self, link: Link, responder: Responder) -> None:
        """Read the agent's auth; raises (AuthenticationFailed, ProtocolError) unless it
        proves the key."""
        responder.on_auth(link.recv())

    def register(self, link: Link) -> None:
        hello = link.hello
        data: dict[str, Any] = {"node_id": NODE_ID, "version": PROTOCOL_VERSION}
        if self.fence_timeout_s is not None:
            data |= {"fence_timeout_s": self.fence_timeout_s, "kill_grace_s": self.kill_grace_s}
        link.send(frame({"t": "ok", "id": hello["id"], "data": data}))
        link.registered = True
        link.start_reading()

    def connect(self, timeout_s: float = 15.0) -> Link:
        """Accept the agent's next connection and register it, as the real master would."""
        link = self.accept(timeout_s)
        self.verify(link, self.challenge(link))
        self.register(link)
        return link

    # ---- what the agent sends ------------------------------------------------------------

    def record(self, link: Link, msg: dict[str, Any]) -> None:
        try:
            msg = validate(msg, NODE_MESSAGES)
        except ProtocolError as exc:
            self.note_bad(f"link {link.index}: {exc}: {str(msg)[:200]}")
            return
        kind = msg["t"]
        with self._cond:
            if kind == "heartbeat":
                self.heartbeats.append((link.index, time.monotonic()))
                self.beats.append(msg)
            elif kind == "job_started":
                self.started[msg["job_id"]] = msg
                self.events.append(msg)
            elif kind == "job_output":
                self.output[msg["job_id"]] += msg["data"]
            elif kind == "job_exited":
                self.exited[msg["job_id"]] = msg
                self.exit_counts[msg["job_id"]] += 1
                self.events.append(msg)
            self._cond.notify_all()
            ack = kind == "heartbeat" and self.ack_heartbeats
            refusal = self.refuse_exits.get(msg["job_id"]) if kind == "job_exited" else None
        if refusal is not None:
            link.send(frame(event_error(msg, "bad_message", refusal)))
        elif kind == "job_exited":
            link.send(frame({"t": "exit_ack", "job_id": msg["job_id"]}))
        elif ack:
            link.send(frame({"t": "heartbeat_ack", "seq": msg["seq"]}))

    def note_bad(self, what: str) -> None:
        with self._cond:
            self.bad.append(what)

    def notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def wait(self, predicate: Callable[[], Any], timeout_s: float, what: str) -> None:
        """Wait until ``predicate()`` (called with the records locked) is true."""
        with self._cond:
            if not self._cond.wait_for(predicate, timeout_s):
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")

    def close(self) -> None:
        for link in self.links:
            link.close()
        self.listener.close()
