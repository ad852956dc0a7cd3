"""The messages of sessions: their TTL (``session_extend``), and a terminal inside a running
job (``mgpu_client session enter``, ``srun --jobid ID --pty``): a shell on a pseudo-terminal
on the job's node, relayed by the master between the client and the node. messages.py merges
these tables into its own.

A client opens a terminal with ``pty_open`` (answered with its ``term_id``), then sends its
keystrokes (``pty_input``), window sizes (``pty_resize``) and ``pty_close`` without waiting
for answers; the master pushes the terminal's output (``pty_output``) and its end
(``pty_exit``, also when it could not be opened). The same messages, keyed by the master's
``term_id``, go between the master and the node.
"""

from __future__ import annotations

from mgpu_core.limits import (
    ID,
    JOB_ID,
    JOB_REF,
    MAX_MESSAGE_LEN,
    MAX_PATH_LEN,
    MAX_TIME_LIMIT_S,
    NAME,
)
from mgpu_core.schema import REQUIRED, Bytes, Int, ListOf, Optional, Record, Str

MAX_PTY_CHUNK = 64 * 1024  # bytes of input or output in one message
MAX_TERMINALS_PER_CLIENT = 16
TERM_ID = Int(1, 2**53)
_ROWS = Int(1, 1000)
_COLS = Int(1, 1000)
# What the terminal runs: [] = the user's login shell.
_COMMAND = ListOf(Str(MAX_PATH_LEN), 256)
_TERM = Str(64)  # $TERM, e.g. xterm-256color

_INPUT = {"term_id": (TERM_ID, REQUIRED), "data": (Bytes(MAX_PTY_CHUNK), REQUIRED)}
_RESIZE = {"term_id": (TERM_ID, REQUIRED), "rows": (_ROWS, REQUIRED), "cols": (_COLS, REQUIRED)}
_EXIT = {
    "term_id": (TERM_ID, REQUIRED),
    "exit_code": (Optional(Int(-(2**31), 2**31)), None),
    "signal": (Optional(Int(1, 128)), None),
    "error": (Str(MAX_MESSAGE_LEN), ""),  # why it could not open, or was cut off
}

# From a client. Input, resize and close are not answered (their "id" may be left out).
CLIENT_TERMINAL_REQUESTS: dict[str, Record] = {
    "pty_open": Record(
        {
            "id": (ID, REQUIRED),
            "job_id": (JOB_REF, REQUIRED),
            "rows": (_ROWS, 24),
            "cols": (_COLS, 80),
            "term": (_TERM, "xterm"),
            "command": (_COMMAND, list),
        }
    ),
    "pty_input": Record({"id": (ID, 0), **_INPUT}),
    "pty_resize": Record({"id": (ID, 0), **_RESIZE}),
    "pty_close": Record({"id": (ID, 0), "term_id": (TERM_ID, REQUIRED)}),
    # mgpu_client session extend: the session's TTL (its time limit) grows by add_s.
    "session_extend": Record(
        {
            "id": (ID, REQUIRED),
            "job_id": (JOB_REF, REQUIRED),
            "add_s": (Int(1, MAX_TIME_LIMIT_S), REQUIRED),
        }
    ),
}
# Not answered: the client goes on with what it was doing.
UNANSWERED = frozenset({"pty_input", "pty_resize", "pty_close"})

# From the master to a node: open one for this job (as its user, in its allocation).
MASTER_TERMINAL_ORDERS: dict[str, Record] = {
    "pty_open": Record(
        {
            "term_id": (TERM_ID, REQUIRED),
            "job_id": (JOB_ID, REQUIRED),
            "user": (NAME, REQUIRED),
            "rows": (_ROWS, 24),
            "cols": (_COLS, 80),
            "term": (_TERM, "xterm"),
            "command": (_COMMAND, list),
        }
    ),
    "pty_input": Record(_INPUT),
    "pty_resize": Record(_RESIZE),
    "pty_close": Record({"term_id": (TERM_ID, REQUIRED)}),
    # A line for the job's terminals from the master (an idle job's warning).
    "notice": Record({"job_id": (JOB_ID, REQUIRED), "text": (Str(MAX_MESSAGE_LEN), REQUIRED)}),
    # A session's new time limit (session extend): the node moves its end and warnings.
    "time_limit": Record({"job_id": (JOB_ID, REQUIRED), "time_limit_s": (Int(0, 2**31), REQUIRED)}),
}

# The orders about sessions and terminals a node obeys (agent.py passes them on).
SESSION_ORDERS = frozenset(MASTER_TERMINAL_ORDERS)

# From a node (and, relayed, from the master to the client that opened the terminal).
NODE_TERMINAL_MESSAGES: dict[str, Record] = {
    "pty_output": Record(
        {"term_id": (TERM_ID, REQUIRED), "data": (Bytes(MAX_PTY_CHUNK), REQUIRED)}
    ),
    "pty_exit": Record(_EXIT),
}
