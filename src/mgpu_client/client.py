"""The client library: one blocking connection to the master, one method per verb.

Imports only the wire and the socket adapter (no asyncio, no rich): every command-line tool
pays for its imports at every start.
"""

from __future__ import annotations

from mgpu_core import procenv
from mgpu_core.config import Address, client_addresses, parse_address
from mgpu_core.conn import BlockingConnection
from mgpu_core.errors import (
    AuthenticationFailed,
    ConfigError,
    MasterUnreachable,
    ProtocolError,
    UsageError,
    error_from_wire,
)
from mgpu_core.protocol import PROTOCOL_VERSION, Message

# Types only (and not typing's TYPE_CHECKING: importing typing costs a command ~3 ms).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from mgpu_core.auth import Token
    from mgpu_core.models import JobResult, JobSpec

EVENT_TYPES = frozenset(
    {"job_state", "job_output", "job_ended", "watch_dropped", "pty_output", "pty_exit"}
)


def current_user() -> str:
    import pwd  # small C module; only needed here

    try:
        return pwd.getpwuid(procenv.getuid()).pw_name
    except KeyError:
        return procenv.getenv("USER") or str(procenv.getuid())


def _data(reply: Message) -> dict[str, Any]:
    data = reply.get("data")
    return data if isinstance(data, dict) else {}


class Client:
    """A session with the master. Requests are sequential; pushed job events are queued.

    On the master's Unix socket the kernel tells the master who we are. Over TCP we prove a
    user token (``token``, else the token file; see mgpu_core.auth) by challenge-response.
    """

    def __init__(
        self,
        address: Address,
        *,
        timeout_s: float = 30.0,
        user: str | None = None,
        token: Token | None = None,
    ) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self._conn = BlockingConnection.connect(address, timeout_s=timeout_s)
        self._next_id = 1
        self._events: list[Message] = []  # no deque: collections' import costs start-up
        self._server_version = self._user = ""
        # On the Unix socket the hello is not waited for: its answer comes before the first
        # request's (the master reads a connection's frames in order), which saves a command
        # one round trip; a refused hello is raised by that first request.
        self._hello_id: int | None = None
        try:
            # Who we are is the kernel's word (Unix socket) or the token's (TCP), never a name
            # we claim: none is looked up for the hello, and one given is only informative.
            hello = self._hello(user or "", token)
        except BaseException:
            self._conn.close()
            raise
        if hello is not None:
            self._settled(hello)

    def _settled(self, hello: dict[str, Any]) -> None:
        self._server_version = str(hello.get("server", ""))
        self._user = str(hello.get("user", ""))

    def _settle_hello(self) -> None:
        if self._hello_id is not None:
            req_id, self._hello_id = self._hello_id, None
            self._settled(_data(self._reply(req_id)))

    @property
    def server_version(self) -> str:
        self._settle_hello()
        return self._server_version

    @property
    def user(self) -> str:
        """The user the master knows this session as."""
        self._settle_hello()
        return self._user

    def _hello(self, user: str, token: Token | None) -> dict[str, Any] | None:
        msg: Message = {"t": "hello", "version": PROTOCOL_VERSION, "role": "client"}
        if user:
            msg["user"] = user
        if self.address.path:
            self._hello_id = self._send(msg)
            return None
        # TCP: the token costs hashlib/hmac imports, paid only here.
        from mgpu_core import auth
        from mgpu_core.handshake import Initiator

        token_file = auth.default_token_file()
        if token is None and token_file.exists():
            token = auth.load_token(token_file)
        if token is None:
            # Nothing is sent -- not even our user name -- to a master that proved nothing.
            raise AuthenticationFailed(
                f"no token file {token_file}: TCP clients need a user token (ask an admin: "
                "mgpu_client admin token create USER), or use the master's Unix socket on its host"
            )
        handshake = Initiator(
            token.secret,
            "client",
            token.token_id,
            peer=f"the server at {self.address}",
            binding=self._conn.binding,
        )
        req_id = self._send({**msg, "token": token.token_id, **handshake.hello_fields()})
        # An "ok" is let through so that the handshake refuses it as a master that never
        # proved it knows our token.
        self._conn.send(handshake.on_challenge(self._reply(req_id, accept=("challenge", "ok"))))
        return _data(self._reply(req_id))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    def _call(self, msg: Message) -> dict[str, Any]:
        return _data(self._reply(self._send(msg)))

    def _send(self, msg: Message) -> int:
        req_id = self._next_id
        self._next_id += 1
        msg["id"] = req_id
        self._conn.send(msg)
        return req_id

    def _reply(self, req_id: int, accept: tuple[str, ...] = ("ok",)) -> Message:
        """The master's answer to request ``req_id``, queueing job events that come first."""
        if self._hello_id is not None and self._hello_id != req_id:
            self._settle_hello()
        while True:
            try:
                reply = self._conn.recv(self.timeout_s)
            except TimeoutError:
                # A master that accepts but never answers (stopped, or swamped): as unreachable,
                # one line and exit 2, not a traceback.
                raise MasterUnreachable(
                    f"no answer from the master at {self.address} within "
                    f"{self.timeout_s:g} s (is it stopped or overloaded?)"
                ) from None
            kind = reply["t"]
            if kind in EVENT_TYPES:
                self._events.append(reply)
                continue
            if reply.get("id") not in (req_id, None):
                raise ProtocolError(f"reply for request {reply.get('id')}, expected {req_id}")
            if kind == "error":
                raise error_from_wire(reply.get("code"), reply.get("message"))
            if kind not in accept:
                raise ProtocolError(f"unexpected message {kind!r} from master")
            return reply

    def request(self, kind: str, **fields: Any) -> dict[str, Any]:
        return self._call({"t": kind, **fields})

    def send(self, kind: str, **fields: Any) -> int:
        """Send a request without waiting: its id, for :meth:`answer`. A command overlaps its
        own work (importing its formatter) with the master's this way."""
        return self._send({"t": kind, **fields})

    def tell(self, kind: str, **fields: Any) -> None:
        """Send a message the master does not answer (a terminal's keystrokes)."""
        self._conn.send({"t": kind, **fields})

    def fileno(self) -> int:
        """The connection's socket, for select (see :meth:`buffered` first)."""
        return self._conn.fileno()

    def buffered(self) -> bool:
        """Whether a message may be read without waiting for the socket (events queued, or
        bytes the connection or TLS already holds)."""
        return bool(self._events) or self._conn.buffered()

    def answer(self, req_id: int) -> dict[str, Any]:
        """The answer to a request :meth:`send` sent (requests are answered in order)."""
        return _data(self._reply(req_id))

    def next_event(self, timeout_s: float | None = None) -> Message:
        """The next pushed job event (``TimeoutError`` if none arrives in time)."""
        self._settle_hello()
        if self._events:
            return self._events.pop(0)
        while True:
            msg = self._conn.recv(timeout_s)
            if msg["t"] in EVENT_TYPES:
                return msg
            if msg["t"] == "error":
                raise error_from_wire(msg.get("code"), msg.get("message"))

    # ---- verbs ---------------------------------------------------------------------------

    # The records (mgpu_core.models) are imported by the verbs that use them: dataclasses and
    # the records' classes would cost mgpu_srun and mgpu_queue ~10 ms at every start.

    def submit(self, spec: JobSpec, *, attach: bool = False) -> int:
        from mgpu_core.models import SubmitRequest

        data = self._call({"t": "submit", **SubmitRequest(job=spec, attach=attach).to_wire()})
        return int(data["job_id"])

    def submit_job(
        self, job: dict[str, Any], *, attach: bool = False, test_only: bool = False
    ) -> dict[str, Any]:
        """Submit a job in its wire form (mgpu_client.jobspec builds it without the records'
        classes, which would cost the command their import); the master checks every field."""
        request = {"t": "submit", "job": job, "attach": attach}
        if test_only:
            request["test_only"] = True
        return self._call(request)

    def submit_many(self, specs: list[JobSpec], *, window: int = 1000) -> list[int]:
        """Submit pipelined: up to ``window`` requests in flight, so one connection is not
        bound by round trips and the master commits each burst once (group commit). The ids
        come back in order; the first refused submission raises (later ones may be stored)."""
        from collections import deque

        from mgpu_core.models import SubmitRequest

        ids: list[int] = []
        in_flight: deque[int] = deque()
        for spec in specs:
            in_flight.append(self._send({"t": "submit", **SubmitRequest(job=spec).to_wire()}))
            if len(in_flight) >= window:
                ids.append(int(_data(self._reply(in_flight.popleft()))["job_id"]))
        while in_flight:
            ids.append(int(_data(self._reply(in_flight.popleft()))["job_id"]))
        return ids

    def per_job(self, verb: str, job_ids: list[int | str]) -> list[JobResult]:
        """``cancel``, ``hold``, ``release`` or ``requeue`` ``job_ids``: one result per job
        (an array id stands for its tasks), in order; refusals are results, not raised."""
        from mgpu_core.models import JobResult

        results = self.request(verb, job_ids=job_ids).get("results")
        if not isinstance(results, list):
            raise ProtocolError(f"the master's {verb} reply has no list of results")
        return [JobResult.from_wire(result) for result in results]

    def cancel(self, job_ids: list[int | str]) -> list[JobResult]:
        return self.per_job("cancel", job_ids)

    def queue(
        self,
        *,
        users: list[str] | None = None,
        states: list[str] | None = None,
        job_ids: list[int | str] | None = None,
        include_finished: bool = False,
        fields: list[str] | None = None,
    ) -> dict[str, Any]:
        return self.request(
            "queue",
            users=users or [],
            states=states or [],
            job_ids=job_ids or [],
            include_finished=include_finished,
            fields=fields or [],
        )

    def nodes(self) -> list[dict[str, Any]]:
        return list(self.request("nodes")["nodes"])

    def info(self) -> dict[str, Any]:
        return self.request("info")


def connect(master: str | None) -> Client:
    """A session with the first reachable of the addresses the client may use (``--master``).
    A malformed ``--master`` is a usage error."""
    if master is not None:
        try:
            parse_address(master)
        except ConfigError as err:
            raise UsageError(f"invalid value for '--master': {err}") from None
    addresses = client_addresses(master)
    for address in addresses[:-1]:
        try:
            return Client(address)
        except MasterUnreachable:
            continue  # a stale socket file left by a stopped master: try the next
    return Client(addresses[-1])
