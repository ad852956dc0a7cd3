"""Reading a job's output file for the master (``read_output``, for ``mgpu_client log``).

The agent reads as root, but hands out only what the job's own account could read anyway: a
regular file that account owns. The path is the master's (the job's ``-o`` as the node
expanded it at start), and the user controls it and every directory on the way, so the file is
opened without following a final symlink and without blocking (a FIFO), then checked by its
descriptor: never by its name, which can be swapped between a check and the open.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
from typing import Any

from mgpu_node.outlog import Outputs

_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def read_range(
    path: str, *, uid: int, offset: int | None, from_end: int, max_bytes: int, node: str
) -> dict[str, Any]:
    """``output_data``'s fields (but ``req``): up to ``max_bytes`` from ``offset`` (None: from
    ``from_end`` bytes before the end), with the file's size now; or ``error``."""
    try:
        fd = os.open(path, _FLAGS)
    except FileNotFoundError:
        return {"error": f"{path} does not exist on node {node} (moved or deleted)"}
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return {"error": f"{path} on node {node} is a symbolic link: not read"}
        return {"error": f"cannot read {path} on node {node}: {exc.strerror}"}
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return {"error": f"{path} on node {node} is not a regular file: not read"}
        if st.st_uid != uid:
            return {"error": f"{path} on node {node} is not the job's file (another owner)"}
        size = st.st_size
        start = min(size, offset if offset is not None else max(0, size - from_end))
        data = os.pread(fd, min(max_bytes, size - start), start) if start < size else b""
        return {"data": data, "offset": start, "size": size}
    except OSError as exc:
        return {"error": f"cannot read {path} on node {node}: {exc.strerror}"}
    finally:
        os.close(fd)


async def read_answer(
    msg: dict[str, Any], uid: int | None, outputs: Outputs, *, node: str
) -> dict[str, Any]:
    """The node's answer to a ``read_output`` (a client's ``log``), read in a thread: a slow
    or network filesystem must not hold up the agent's loop (heartbeats, exits). ``uid``: the
    account the job's owner runs as here (None: none)."""
    if not msg["path"]:  # an interactive job: its output log, as srun showed it
        return outputs.read_range(msg["job_id"], msg["offset"], msg["from_end"], msg["max_bytes"])
    if uid is None:
        return {"error": f"{msg['user']}'s jobs do not run on this node"}
    return await asyncio.to_thread(
        read_range,
        msg["path"],
        uid=uid,
        offset=msg["offset"],
        from_end=msg["from_end"],
        max_bytes=msg["max_bytes"],
        node=node,
    )
