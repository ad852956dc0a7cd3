"""Every message type and its schema. docs/protocol.md documents the same table for humans.

Who may send what is explicit: a master accepts :data:`CLIENT_REQUESTS` from clients and
:data:`NODE_MESSAGES` from node agents, a node accepts :data:`MASTER_TO_NODE`, and a client
accepts :data:`MASTER_TO_CLIENT`. :func:`validate` checks a decoded message against the table
for its direction and returns it with defaults filled in, or raises a :class:`ProtocolError`
subclass whose code goes back to the peer.
"""

from __future__ import annotations

from mgpu_core.constants import JOIN_TOKEN_TTL_S
from mgpu_core.errors import BadMessage, UnknownMessageType
from mgpu_core.handshake import CHALLENGE
from mgpu_core.limits import (
    ID,
    JOB_ID,
    JOB_REF,
    MAX_CPUS,
    MAX_GPUS_PER_NODE,
    MAX_IDS_PER_REQUEST,
    MAX_LOG_READ,
    MAX_MESSAGE_LEN,
    MAX_NAME_LEN,
    MAX_NICE,
    MAX_OUTPUT_CHUNK,
    MAX_PATH_LEN,
    MAX_REASON_LEN,
    MAX_TIME_LIMIT_S,
    NAME,
    PID,
    shorten,
)
from mgpu_core.models import (
    GpuDevice,
    GpuSample,
    JobExited,
    JobSpec,
    Launch,
    NodeHello,
    SubmitRequest,
)
from mgpu_core.protocol import error_reply
from mgpu_core.schema import (
    REQUIRED,
    Anything,
    Bool,
    Bytes,
    Float,
    Int,
    ListOf,
    MapOf,
    OneOf,
    Optional,
    Record,
    Str,
)
from mgpu_core.states import COMPLETING, JobState
from mgpu_core.termmsgs import (
    CLIENT_TERMINAL_REQUESTS,
    MASTER_TERMINAL_ORDERS,
    NODE_TERMINAL_MESSAGES,
)
from mgpu_core.wsmsgs import (
    CLIENT_WORKSPACE_REQUESTS,
    MASTER_WORKSPACE_ORDERS,
    NODE_WORKSPACE_MESSAGES,
)

# Types only, and not typing's TYPE_CHECKING: see mgpu_core.records.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from mgpu_core.protocol import Message

_STATES = OneOf(*(s.value for s in JobState), COMPLETING)
_JOB_REFS = ListOf(JOB_REF, MAX_IDS_PER_REQUEST)
_RUN = Int(0, 2**31)  # a job's restart_count
MAX_HISTORY_ROWS = 100_000  # one history answer's rows at most
MAX_JOIN_TOKEN_TTL_S = 365 * 24 * 3600
MAX_JOIN_TOKEN_USES = 10_000
MAX_SIGNAL = 64
MAX_FORMAT_LEN = 4096  # an squeue -o or -O format
SIGNAL_SCOPES = ("all", "batch")


def _request(schema: Record) -> Record:
    """A client request: the required request ``id``, then ``schema``'s fields."""
    return Record({"id": (ID, REQUIRED), **schema.fields})


# The records' schemas (mgpu_core.models declares their fields, limits and defaults).
JOB_SPEC = JobSpec.SCHEMA
GPU_DEVICE = GpuDevice.SCHEMA
NODE_HELLO = NodeHello.SCHEMA
LAUNCH_SPEC = Launch.SCHEMA
GPU_SAMPLE = GpuSample.SCHEMA

HELLO = Record(
    {
        "id": (ID, 0),
        "version": (Int(0, 2**31), REQUIRED),
        # "join": a new host with a join token, for its node key (docs/protocol.md, "Joining").
        "role": (OneOf("client", "node", "join"), REQUIRED),
        "user": (NAME, ""),
        "node": (Optional(NODE_HELLO), None),
        "nonce": (Optional(Bytes(64)), None),  # the node's (or client's) challenge to the master
        # A TCP client's token id (or a joining host's join token id); it proves the secret
        # after the master's challenge.
        "token": (Optional(Str(64, min_len=1)), None),
        # The node id a joining host asks for.
        "node_id": (Optional(Str(MAX_NAME_LEN, min_len=1)), None),
    }
)

CLIENT_REQUESTS: dict[str, Record] = {
    "submit": _request(SubmitRequest.SCHEMA),
    "cancel": Record(
        {
            "id": (ID, REQUIRED),
            "job_ids": (_JOB_REFS, REQUIRED),
            # scancel --signal: send this signal instead of cancelling (KILL still cancels);
            # "all": the job's whole process group, "batch": its batch shell only.
            "signal": (Optional(Int(1, MAX_SIGNAL)), None),
            "scope": (OneOf(*SIGNAL_SCOPES), "all"),
        }
    ),
    "queue": Record(
        {
            "id": (ID, REQUIRED),
            "users": (ListOf(NAME, 1024), list),
            "states": (ListOf(_STATES, 16), list),
            "job_ids": (_JOB_REFS, list),
            "include_finished": (Bool(), False),
            # Only these fields of each row ([] = all): a listing of 10,000 jobs is mostly
            # encoding and decoding, so a command asks for the columns it shows.
            "fields": (ListOf(NAME, 64), list),
            # Only jobs with these names (as rows show them).
            "names": (ListOf(NAME, 1024), list),
            # sacct -S/-E: only jobs submitted before window_end_s that had not ended by
            # window_start_s (null: open on that side).
            "window_start_s": (Optional(Float()), None),
            "window_end_s": (Optional(Float()), None),
            # Each row gets its job's steps (as "steps" in fields does).
            "steps": (Bool(), False),
            # The answer as the text a command prints instead of rows ("text"): "squeue" in
            # squeue's -o "format" (or -O "format_long"; neither: the default) and -S "sort"
            # order, "table" as mgpu_queue's table. Decoding and formatting 500 rows would
            # cost a command more than its whole start-up (docs/performance.md).
            "render": (OneOf("", "squeue", "table"), ""),
            "format": (Str(MAX_FORMAT_LEN), ""),
            "format_long": (Str(MAX_FORMAT_LEN), ""),
            "sort": (Str(64), ""),
            "header": (Bool(), True),
        }
    ),
    # Job steps (srun inside a job): registered so that sacct shows them.
    "step": Record(
        {
            "id": (ID, REQUIRED),
            "action": (OneOf("start", "end"), REQUIRED),
            "job_id": (JOB_ID, REQUIRED),
            "name": (NAME, ""),  # start
            "ntasks": (Int(1, MAX_CPUS), 1),  # start
            "step_id": (Optional(Int(0, 2**31)), None),  # end: required
            "exit_code": (Optional(Int(-(2**31), 2**31)), None),  # end
            "signal": (Optional(Int(1, 128)), None),  # end
        }
    ),
    "nodes": Record({"id": (ID, REQUIRED)}),
    # The partitions: their nodes, limits, access lists and GPUs (sinfo; read-only).
    "partitions": Record({"id": (ID, REQUIRED)}),
    "hold": Record({"id": (ID, REQUIRED), "job_ids": (_JOB_REFS, REQUIRED)}),
    "release": Record({"id": (ID, REQUIRED), "job_ids": (_JOB_REFS, REQUIRED)}),
    "requeue": Record({"id": (ID, REQUIRED), "job_ids": (_JOB_REFS, REQUIRED)}),
    # Only the fields present are changed.
    "update": Record(
        {
            "id": (ID, REQUIRED),
            "job_id": (JOB_ID, REQUIRED),
            "changes": (
                Record(
                    {
                        "time_limit_s": (Int(0, MAX_TIME_LIMIT_S), None),
                        "qos": (NAME, None),
                        "gpus": (Int(0, MAX_GPUS_PER_NODE), None),
                        "nice": (Int(-MAX_NICE, MAX_NICE), None),
                        "priority": (Int(0, 2**31), None),
                    }
                ),
                REQUIRED,
            ),
        }
    ),
    "priority": Record({"id": (ID, REQUIRED), "job_ids": (_JOB_REFS, list)}),
    # A byte range of a job's output file (mgpu_client log), read on its node: from
    # ``offset``, or (offset null) the last ``from_end`` bytes.
    "log": Record(
        {
            "id": (ID, REQUIRED),
            "job_id": (JOB_REF, REQUIRED),
            "stream": (OneOf("stdout", "stderr"), "stdout"),
            "offset": (Optional(Int(0, 2**62)), 0),
            "from_end": (Int(0, 2**62), 0),
            "max_bytes": (Int(1, MAX_LOG_READ), MAX_LOG_READ),
        }
    ),
    # Jobs from the database (mgpu_client history, sacct): finished ones too, long after the
    # master let them go from memory; newest first.
    "history": Record(
        {
            "id": (ID, REQUIRED),
            "users": (ListOf(NAME, 1024), list),
            "states": (ListOf(_STATES, 16), list),
            "names": (ListOf(NAME, 1024), list),
            "job_ids": (_JOB_REFS, list),
            "window_start_s": (Optional(Float()), None),
            "window_end_s": (Optional(Float()), None),
            "limit": (Int(1, MAX_HISTORY_ROWS), 1000),
            "fields": (ListOf(NAME, 64), list),
            "steps": (Bool(), False),
        }
    ),
    # GPU-hours, outcomes and waits per user, account or partition (mgpu_client report).
    "report": Record(
        {
            "id": (ID, REQUIRED),
            "group": (OneOf("user", "account", "partition"), "user"),
            "start_s": (Float(), REQUIRED),
            "end_s": (Float(), REQUIRED),
        }
    ),
    # GPU-seconds used per step of a window (the dashboard's utilisation plot).
    "usage": Record(
        {
            "id": (ID, REQUIRED),
            "start_s": (Float(), REQUIRED),
            "end_s": (Float(), REQUIRED),
            "step_s": (Float(), 3600.0),
        }
    ),
    # Jobs in full (mgpu_client show): every task of an array named by its id.
    "job": Record({"id": (ID, REQUIRED), "job_ids": (_JOB_REFS, REQUIRED)}),
    # The GPU turn queue: show it, or change it (admins).
    "turns": Record(
        {
            "id": (ID, REQUIRED),
            "action": (
                OneOf(
                    "status",
                    "history",
                    "set",
                    "add",
                    "remove",
                    "clear",
                    "repeat",
                    "mode",
                    "slice",
                    "revoke",
                    "assign",
                    "next",
                    "force-next",
                ),
                REQUIRED,
            ),
            "users": (ListOf(NAME, 1000), list),
            "user": (NAME, ""),
            "count": (Int(0, 1000), 1),
            "mode": (NAME, ""),
            "seconds": (Float(), 0.0),
        }
    ),
    # Follow a job's output and state from now on (srun after a master restart, or another shell).
    "attach": Record(
        {
            "id": (ID, REQUIRED),
            "job_id": (JOB_ID, REQUIRED),
            # Replay the job's output from this offset (what the client has printed so far);
            # absent: only what comes next.
            "offset": (Optional(Int(0, 2**62)), None),
        }
    ),
    "node_update": Record(
        {
            "id": (ID, REQUIRED),
            "node_id": (Str(MAX_NAME_LEN, min_len=1), REQUIRED),
            "action": (OneOf("drain", "resume", "remove"), REQUIRED),
            "reason": (Str(MAX_REASON_LEN), ""),
        }
    ),
    "info": Record({"id": (ID, REQUIRED)}),
    # User tokens for TCP clients (admins): issue one, list them, revoke a user's (or one).
    "token": Record(
        {
            "id": (ID, REQUIRED),
            "action": (OneOf("create", "list", "revoke"), REQUIRED),
            "user": (NAME, ""),
            "token_id": (Str(64), ""),
        }
    ),
    # Join tokens for new nodes (admins): issue one, list them, revoke one.
    "join_token": Record(
        {
            "id": (ID, REQUIRED),
            "action": (OneOf("create", "list", "revoke"), REQUIRED),
            "ttl_s": (Int(1, MAX_JOIN_TOKEN_TTL_S), int(JOIN_TOKEN_TTL_S)),
            "uses": (Int(1, MAX_JOIN_TOKEN_USES), 1),
            "token_id": (Str(64), ""),
        }
    ),
}

NODE_MESSAGES: dict[str, Record] = {
    "heartbeat": Record(
        {
            "gpus": (ListOf(GPU_SAMPLE, MAX_GPUS_PER_NODE), list),
            # The jobs the node runs now, and those whose exit the master has not acknowledged
            # (None from an older agent: no reconciliation by heartbeat).
            "running_job_ids": (Optional(ListOf(JOB_ID, MAX_IDS_PER_REQUEST)), None),
            # The highest Launch.launch_seq the node has received on this link.
            "launch_seq": (Int(0, 2**53), 0),
            # The node's count of heartbeats on this link, echoed by heartbeat_ack: the node
            # renews its lease from the time it *sent* the acknowledged heartbeat, so an ack
            # held up in the network never stretches the fence past what the master assumes.
            "seq": (Int(0, 2**53), 0),
        }
    ),
    "job_started": Record({"job_id": (JOB_ID, REQUIRED), "pid": (PID, 0)}),
    "job_output": Record(
        {
            "job_id": (JOB_ID, REQUIRED),
            "stream": (Int(1, 2), REQUIRED),
            "data": (Bytes(MAX_OUTPUT_CHUNK), REQUIRED),
            # Where this chunk starts in the job's combined output (stdout and stderr, in
            # the order the node read them); the node keeps that output on disk and resends
            # it from an offset on `replay`. null from an older agent.
            "offset": (Optional(Int(0, 2**62)), None),
            # Bytes from `offset` on that the node no longer has (past its bound): a replay
            # from before what it keeps starts with such a chunk (data empty).
            "lost": (Int(0, 2**62), 0),
        }
    ),
    "job_exited": JobExited.SCHEMA,
    # The answer to a read_output: the bytes, where they start, the file's size now; or why
    # there are none.
    "output_data": Record(
        {
            "req": (ID, REQUIRED),
            "data": (Bytes(MAX_LOG_READ), b""),
            "offset": (Int(0, 2**62), 0),
            "size": (Int(0, 2**62), 0),
            "error": (Str(MAX_MESSAGE_LEN), ""),
        }
    ),
}

MASTER_TO_NODE: dict[str, Record] = {
    "ok": Record({"id": (ID, 0), "data": (MapOf(Anything()), dict)}),
    "error": Record(
        {
            "id": (Optional(ID), None),
            "code": (NAME, ""),
            "message": (Str(MAX_MESSAGE_LEN), ""),
            # An error about one of the node's events (which have no id): that event's type
            # and, where it had a readable one, its job and run (docs/protocol.md §5.5).
            "event": (NAME, ""),
            "job_id": (Optional(JOB_ID), None),
            "restart_count": (Optional(_RUN), None),
        }
    ),
    "challenge": CHALLENGE,
    "launch": Record({"launch": (LAUNCH_SPEC, REQUIRED)}),
    "kill": Record({"job_id": (JOB_ID, REQUIRED), "reason": (Str(MAX_REASON_LEN), "")}),
    # scancel --signal: send this signal to the job ("all": its process group and strays,
    # "batch": its batch shell only); the job goes on.
    "signal": Record(
        {
            "job_id": (JOB_ID, REQUIRED),
            "signal": (Int(1, MAX_SIGNAL), REQUIRED),
            "scope": (OneOf(*SIGNAL_SCOPES), "all"),
        }
    ),
    # The master has stored this job's exit: the node may forget it.
    "exit_ack": Record({"job_id": (JOB_ID, REQUIRED)}),
    # The master processed a heartbeat: the node renews its fence lease (docs/architecture.md).
    "heartbeat_ack": Record({"seq": (Int(0, 2**53), 0)}),
    # Read a job's output file (for a client's log): the master resolved the path; the node
    # reads it only if it is a regular file owned by the account the job ran as.
    "read_output": Record(
        {
            "req": (ID, REQUIRED),
            "job_id": (JOB_ID, REQUIRED),
            "path": (Str(2 * MAX_PATH_LEN), REQUIRED),  # cwd + the output path
            "user": (NAME, REQUIRED),
            "offset": (Optional(Int(0, 2**62)), 0),
            "from_end": (Int(0, 2**62), 0),
            "max_bytes": (Int(1, MAX_LOG_READ), MAX_LOG_READ),
        }
    ),
    # Send this interactive job's output again from this offset, in order, then go on live.
    "replay": Record({"job_id": (JOB_ID, REQUIRED), "offset": (Int(0, 2**62), 0)}),
}

MASTER_TO_CLIENT: frozenset[str] = frozenset(
    {"ok", "error", "challenge", "job_state", "job_output", "job_ended", "watch_dropped"}
    | NODE_TERMINAL_MESSAGES.keys()
)
# Sessions and terminals (termmsgs.py), workspaces (wsmsgs.py): described where they are.
CLIENT_REQUESTS.update(CLIENT_TERMINAL_REQUESTS, **CLIENT_WORKSPACE_REQUESTS)
NODE_MESSAGES.update(NODE_TERMINAL_MESSAGES, **NODE_WORKSPACE_MESSAGES)
MASTER_TO_NODE.update(MASTER_TERMINAL_ORDERS, **MASTER_WORKSPACE_ORDERS)


def validate(msg: Message, table: dict[str, Record]) -> dict[str, Any]:
    """Validate ``msg`` against the schema for its type in ``table``.

    Returns the checked copy with ``t`` kept; raises UnknownMessageType or BadMessage.
    """
    kind = msg["t"]
    schema = table.get(kind)
    if schema is None:
        raise UnknownMessageType(f"unknown message type {kind!r}")
    checked: dict[str, Any] = schema.check(msg)
    checked["t"] = kind
    return checked


def event_error(event: Message, code: str, message: str) -> Message:
    """The ``error`` that refuses one event of a node's (an event has no request id): it names
    the event's type and, where the event holds a readable one, its ``job_id`` and
    ``restart_count``, so that the node knows which of its events was refused (an exit it
    would otherwise keep resending). A field that is not readable is left out (``null``)."""
    kind = event.get("t")
    reply = error_reply(None, code, message)
    reply["event"] = shorten(kind, MAX_NAME_LEN) if isinstance(kind, str) else ""
    for name, check in (("job_id", JOB_ID), ("restart_count", _RUN)):
        try:
            reply[name] = check.check(event.get(name), name)
        except BadMessage:
            reply[name] = None
    return reply
