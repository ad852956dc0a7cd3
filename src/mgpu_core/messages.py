"""Every message type and its schema. docs/protocol.md documents the same table for humans.

Who may send what is explicit: a master accepts :data:`CLIENT_REQUESTS` from clients and
:data:`NODE_MESSAGES` from node agents, a node accepts :data:`MASTER_TO_NODE`, and a client
accepts :data:`MASTER_TO_CLIENT`. :func:`validate` checks a decoded message against the table
for its direction and returns it with defaults filled in, or raises a :class:`ProtocolError`
subclass whose code goes back to the peer.
"""

from __future__ import annotations

from typing import Any

from mgpu_core.errors import UnknownMessageType
from mgpu_core.protocol import Message
from mgpu_core.schema import (
    REQUIRED,
    AnyOf,
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
from mgpu_core.states import JobState

# Limits on what a peer may send. Generous for real use, small enough that a hostile peer
# cannot make the master hold much more than one frame's worth per message.
MAX_NAME_LEN = 256
MAX_PATH_LEN = 4096
MAX_ARG_LEN = 128 * 1024
MAX_ARGS = 4096
MAX_SCRIPT_BYTES = 4 * 1024 * 1024
MAX_ENV_CHARS = 1024 * 1024
MAX_OUTPUT_CHUNK = 1024 * 1024
MAX_GPUS_PER_NODE = 64
MAX_IDS_PER_REQUEST = 10_000

_ID = Int(0, 2**53)
_JOB_ID = Int(1, 2**53)
_NAME = Str(MAX_NAME_LEN)
_STATES = OneOf(*(s.value for s in JobState))
# A job id, or "ARRAYID_TASK" for one task of a job array (a bare array id names all tasks).
_JOB_REF = AnyOf(_JOB_ID, Str(32, min_len=3))
_JOB_REFS = ListOf(_JOB_REF, MAX_IDS_PER_REQUEST)

JOB_SPEC = Record(
    {
        "name": (_NAME, ""),
        "argv": (ListOf(Str(MAX_ARG_LEN), MAX_ARGS), list),
        "script": (Optional(Str(MAX_SCRIPT_BYTES)), None),
        "interactive": (Bool(), False),
        "gpus": (Int(0, MAX_GPUS_PER_NODE), 0),
        "cpus": (Int(1, 65_536), 1),
        "mem_bytes": (Int(0, 2**60), 0),
        "time_limit_s": (Int(0, 10 * 365 * 86_400), 0),
        "nodelist": (ListOf(_NAME, 4096), list),
        "env": (MapOf(Str(MAX_ARG_LEN), max_items=8192, max_total=MAX_ENV_CHARS), dict),
        "cwd": (Str(MAX_PATH_LEN), "/"),
        "stdout_path": (Optional(Str(MAX_PATH_LEN)), None),
        "stderr_path": (Optional(Str(MAX_PATH_LEN)), None),
        "array": (Str(4096), ""),
        # Requeue (rather than end NODE_FAIL) when the node fails under the job.
        "requeue": (Bool(), False),
        "nice": (Int(-10_000, 10_000), 0),
        "qos": (Str(MAX_NAME_LEN), ""),
        "dependency": (Str(64 * 1024), ""),
        "kill_on_invalid_dep": (Bool(), False),
        "hold": (Bool(), False),
        "begin_time": (Float(), 0.0),  # --begin: not before this Unix time (0 = now)
        # --signal SIG@SECONDS: warn the job this long before its time limit.
        "warn_signal": (Int(0, 64), 0),
        "warn_before_s": (Int(0, 65_535), 0),
    }
)

GPU_DEVICE = Record(
    {
        "index": (Int(0, MAX_GPUS_PER_NODE - 1), REQUIRED),
        "uuid": (_NAME, ""),
        "name": (_NAME, ""),
        "memory_total_bytes": (Int(0, 2**60), 0),
        "visible_id": (_NAME, REQUIRED),
        "fake": (Bool(), False),
    }
)

GPU_PROCESS = Record(
    {
        "pid": (Int(0, 2**32), REQUIRED),
        "user": (_NAME, "?"),
        "used_memory_bytes": (Int(0, 2**60), 0),
        "command": (_NAME, ""),
    }
)

GPU_SAMPLE = Record(
    {
        "index": (Int(0, MAX_GPUS_PER_NODE - 1), REQUIRED),
        "healthy": (Bool(), True),
        "error": (_NAME, ""),
        "utilization_pct": (Int(-1, 100), -1),
        "memory_used_bytes": (Int(-1, 2**60), -1),
        "processes": (ListOf(GPU_PROCESS, 256), list),
    }
)

NODE_HELLO = Record(
    {
        "node_id": (Str(MAX_NAME_LEN, min_len=1), REQUIRED),
        "hostname": (_NAME, ""),
        "address": (_NAME, ""),
        "cpus": (Int(1, 65_536), 1),
        "mem_bytes": (Int(0, 2**60), 0),
        "gpus": (ListOf(GPU_DEVICE, MAX_GPUS_PER_NODE), list),
        "gpu_backend": (_NAME, ""),
        "running_job_ids": (ListOf(_JOB_ID, MAX_IDS_PER_REQUEST), list),
        "agent_version": (_NAME, ""),
    }
)

HELLO = Record(
    {
        "id": (_ID, 0),
        "version": (Int(0, 2**31), REQUIRED),
        "role": (OneOf("client", "node"), REQUIRED),
        "user": (_NAME, ""),
        "node": (Optional(NODE_HELLO), None),
        "nonce": (Optional(Bytes(64)), None),  # the node's (or client's) challenge to the master
        # A TCP client's token id; it proves the secret after the master's challenge.
        "token": (Optional(Str(64, min_len=1)), None),
    }
)

# Node and token authentication, after the hello (see mgpu_core.auth).
CHALLENGE = Record({"id": (_ID, 0), "nonce": (Bytes(64), REQUIRED), "proof": (Bytes(64), REQUIRED)})
AUTH = Record({"proof": (Bytes(64), REQUIRED)})

CLIENT_REQUESTS: dict[str, Record] = {
    "submit": Record(
        {"id": (_ID, REQUIRED), "job": (JOB_SPEC, REQUIRED), "attach": (Bool(), False)}
    ),
    "cancel": Record({"id": (_ID, REQUIRED), "job_ids": (_JOB_REFS, REQUIRED)}),
    "queue": Record(
        {
            "id": (_ID, REQUIRED),
            "users": (ListOf(_NAME, 1024), list),
            "states": (ListOf(_STATES, 16), list),
            "job_ids": (_JOB_REFS, list),
            "include_finished": (Bool(), False),
            # Only these fields of each row ([] = all): a listing of 10,000 jobs is mostly
            # encoding and decoding, so a command asks for the columns it shows.
            "fields": (ListOf(_NAME, 64), list),
        }
    ),
    "nodes": Record({"id": (_ID, REQUIRED)}),
    "hold": Record({"id": (_ID, REQUIRED), "job_ids": (_JOB_REFS, REQUIRED)}),
    "release": Record({"id": (_ID, REQUIRED), "job_ids": (_JOB_REFS, REQUIRED)}),
    "requeue": Record({"id": (_ID, REQUIRED), "job_ids": (_JOB_REFS, REQUIRED)}),
    # Only the fields present are changed.
    "update": Record(
        {
            "id": (_ID, REQUIRED),
            "job_id": (_JOB_ID, REQUIRED),
            "changes": (
                Record(
                    {
                        "time_limit_s": (Int(0, 10 * 365 * 86_400), None),
                        "qos": (_NAME, None),
                        "gpus": (Int(0, MAX_GPUS_PER_NODE), None),
                        "nice": (Int(-10_000, 10_000), None),
                        "priority": (Int(0, 2**31), None),
                    }
                ),
                REQUIRED,
            ),
        }
    ),
    "priority": Record({"id": (_ID, REQUIRED), "job_ids": (_JOB_REFS, list)}),
    # The GPU turn queue: show it, or change it (admins).
    "turns": Record(
        {
            "id": (_ID, REQUIRED),
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
            "users": (ListOf(_NAME, 1000), list),
            "user": (_NAME, ""),
            "count": (Int(0, 1000), 1),
            "mode": (_NAME, ""),
            "seconds": (Float(), 0.0),
        }
    ),
    # Follow a job's output and state from now on (srun after a master restart, or another shell).
    "attach": Record({"id": (_ID, REQUIRED), "job_id": (_JOB_ID, REQUIRED)}),
    "node_update": Record(
        {
            "id": (_ID, REQUIRED),
            "node_id": (Str(MAX_NAME_LEN, min_len=1), REQUIRED),
            "action": (OneOf("drain", "resume", "remove"), REQUIRED),
            "reason": (Str(1024), ""),
        }
    ),
    "info": Record({"id": (_ID, REQUIRED)}),
    # User tokens for TCP clients (admins): issue one, list them, revoke a user's (or one).
    "token": Record(
        {
            "id": (_ID, REQUIRED),
            "action": (OneOf("create", "list", "revoke"), REQUIRED),
            "user": (_NAME, ""),
            "token_id": (Str(64), ""),
        }
    ),
}

NODE_MESSAGES: dict[str, Record] = {
    "heartbeat": Record({"gpus": (ListOf(GPU_SAMPLE, MAX_GPUS_PER_NODE), list)}),
    "job_started": Record({"job_id": (_JOB_ID, REQUIRED), "pid": (Int(0, 2**32), 0)}),
    "job_output": Record(
        {
            "job_id": (_JOB_ID, REQUIRED),
            "stream": (Int(1, 2), REQUIRED),
            "data": (Bytes(MAX_OUTPUT_CHUNK), REQUIRED),
        }
    ),
    "job_exited": Record(
        {
            "job_id": (_JOB_ID, REQUIRED),
            "exit_code": (Optional(Int(-(2**31), 2**31)), None),
            "signal": (Optional(Int(1, 128)), None),
            "timed_out": (Bool(), False),
            "reason": (Str(1024), ""),
            # The run this exit belongs to (launch.restart_count); None from older agents.
            "restart_count": (Optional(Int(0, 2**31)), None),
        }
    ),
}

LAUNCH_SPEC = Record(
    {
        "job_id": (_JOB_ID, REQUIRED),
        "user": (_NAME, ""),
        "spec": (JOB_SPEC, REQUIRED),
        "gpu_indices": (ListOf(Int(0, MAX_GPUS_PER_NODE - 1), MAX_GPUS_PER_NODE), list),
        "kill_grace_s": (Float(), 10.0),
        "restart_count": (Int(0, 2**31), 0),
    }
)

MASTER_TO_NODE: dict[str, Record] = {
    "ok": Record({"id": (_ID, 0), "data": (MapOf(Anything()), dict)}),
    "error": Record({"id": (Optional(_ID), None), "code": (_NAME, ""), "message": (Str(4096), "")}),
    "challenge": CHALLENGE,
    "launch": Record({"launch": (LAUNCH_SPEC, REQUIRED)}),
    "kill": Record({"job_id": (_JOB_ID, REQUIRED), "reason": (Str(1024), "")}),
    # The master has stored this job's exit: the node may forget it.
    "exit_ack": Record({"job_id": (_JOB_ID, REQUIRED)}),
}

MASTER_TO_CLIENT: frozenset[str] = frozenset(
    {"ok", "error", "challenge", "job_state", "job_output", "job_ended"}
)


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
