"""Interactive jobs' output, kept on disk until the master has the job's exit, and the cursor
that sends it.

Every chunk an interactive job prints is appended to its log before it is sent. A chunk's
*offset* is where it starts in the job's combined output (stdout and stderr in the order they
were read). While the link is down nothing is sent and the cursor stays; after registering the
agent sends what the link missed, and the master's ``replay`` (a node link restored, a client
re-attaching from the offset it printed up to) sends it again from any offset, in order.

A log keeps the newest ``limit`` bytes at most, in two segments (``<job id>.<start offset>``):
when the newer one is full the older one is deleted. A replay from before what is kept starts
with a chunk whose ``lost`` says how many bytes are gone, so a client can say so in one line.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

OUTPUT_LOG_BYTES = 64 * 1024 * 1024  # kept per job (the newest); older output is dropped
DONE_DIR = "done"  # ended jobs' logs, for `mgpu_client log`
KEEP_DONE_S = 24 * 3600.0
_HEADER = struct.Struct("!BI")  # stream, data length


class OutputLog:
    """One job's output on disk: records (stream, data) in at most two segment files."""

    def __init__(self, directory: Path, job_id: int, *, limit: int = OUTPUT_LOG_BYTES) -> None:
        self.directory, self.job_id, self.limit = directory, job_id, limit
        self.segments: list[int] = []  # start offsets, oldest first
        self.end = 0  # the offset the next chunk gets
        self.stored_end = 0  # what the files hold up to (less after a write failure)
        self._seg_bytes = 0  # data bytes in the newest segment
        self._load()

    def _path(self, start: int) -> Path:
        return self.directory / f"{self.job_id}.{start}"

    def _load(self) -> None:
        """Take up what an earlier agent left (a re-adopted job's output stays replayable)."""
        prefix = f"{self.job_id}."
        for path in self.directory.glob(f"{self.job_id}.*"):
            tail = path.name[len(prefix) :]
            if tail.isdigit():
                self.segments.append(int(tail))
        self.segments.sort()
        if self.segments:
            start = self.segments[-1]
            size = sum(len(data) for _, _, data in self._records(start, start))
            self.end = self.stored_end = start + size
            self._seg_bytes = size

    def append(self, stream: int, data: bytes) -> int:
        """Store a chunk; returns its offset (also when it could not be stored)."""
        offset = self.end
        self.end += len(data)
        if self.stored_end != offset:
            return offset  # an earlier write failed: the rest is lost to replays
        if not self.segments or self._seg_bytes >= self.limit // 2:
            self.segments.append(offset)
            self._seg_bytes = 0
            while len(self.segments) > 2:
                self._unlink(self.segments.pop(0))
        try:
            # Opened per chunk: no descriptor to leak per job (a chunk is a read of a pipe).
            with open(self._path(self.segments[-1]), "ab") as f:
                f.write(_HEADER.pack(stream, len(data)) + data)
        except OSError as exc:
            log.error("job=%d output not kept (%s): a replay will miss it", self.job_id, exc)
            return offset
        self._seg_bytes += len(data)
        self.stored_end = self.end
        return offset

    def read_from(self, offset: int) -> Iterator[tuple[int, int, bytes, int]]:
        """(offset, stream, data, lost) from ``offset`` on: whole chunks (the first may start
        before ``offset``), a ``lost`` chunk for what is no longer kept."""
        first = self.segments[0] if self.segments else self.stored_end
        if offset < first:
            yield offset, 2, b"", first - offset
            offset = first
        for i, start in enumerate(self.segments):
            following = self.segments[i + 1] if i + 1 < len(self.segments) else self.stored_end
            if following <= offset:
                continue
            for at, stream, data in self._records(start, offset):
                yield at, stream, data, 0
        if self.stored_end < self.end and offset < self.end:
            at = max(offset, self.stored_end)
            yield at, 2, b"", self.end - at

    def _records(self, start: int, offset: int) -> Iterator[tuple[int, int, bytes]]:
        at = start
        try:
            with open(self._path(start), "rb") as f:
                while header := f.read(_HEADER.size):
                    if len(header) < _HEADER.size:
                        return
                    stream, size = _HEADER.unpack(header)
                    if at + size <= offset:
                        f.seek(size, os.SEEK_CUR)
                    else:
                        data = f.read(size)
                        if len(data) < size:
                            return
                        yield at, stream, data
                    at += size
        except FileNotFoundError:
            return

    def _unlink(self, start: int) -> None:
        _unlink(self._path(start), self.job_id)

    def remove(self) -> None:
        for start in self.segments:
            self._unlink(start)
        self.segments.clear()


Send = Callable[[dict[str, Any]], bool]  # False: no link now


class Outputs:
    """The logs of a node's interactive jobs and, per job, how far they were sent."""

    def __init__(self, directory: Path, send: Send, *, limit: int = OUTPUT_LOG_BYTES) -> None:
        self.directory, self.send, self.limit = directory, send, limit
        self.logs: dict[int, OutputLog] = {}
        self.cursor: dict[int, int] = {}  # sent up to, on the current or last link
        self._swept_s = 0.0

    def _log(self, job_id: int) -> OutputLog:
        olog = self.logs.get(job_id)
        if olog is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            olog = self.logs[job_id] = OutputLog(self.directory, job_id, limit=self.limit)
            self.cursor.setdefault(job_id, olog.end)
        return olog

    def start(self, job_id: int) -> None:
        """A new run of an interactive job: its output starts at offset 0."""
        self.remove(job_id)
        self._log(job_id)

    def write(self, job_id: int, stream: int, data: bytes) -> None:
        """A chunk the job printed: kept, then sent if everything before it was."""
        olog = self._log(job_id)
        offset = olog.append(stream, data)
        if self.cursor[job_id] == offset and self.send(_chunk(job_id, offset, stream, data, 0)):
            self.cursor[job_id] = olog.end

    def end(self, job_id: int) -> int | None:
        """Where the job's output ends; None when no log of it is here."""
        olog = self.logs.get(job_id)
        if olog is None and self.directory.is_dir() and any(self.directory.glob(f"{job_id}.*")):
            olog = self._log(job_id)  # a re-adopted job's, not loaded yet
        return olog.end if olog is not None else None

    def replay(self, job_id: int, offset: int) -> None:
        """Send again from ``offset`` (the master's ``replay``), then go on live."""
        olog = self.logs.get(job_id)
        if olog is None:
            return  # not an interactive job of ours, or its output is gone
        self.cursor[job_id] = min(offset, olog.end)
        for at, stream, data, lost in olog.read_from(offset):
            if not self.send(_chunk(job_id, at, stream, data, lost)):
                return
            self.cursor[job_id] = at + (lost or len(data))
        self.cursor[job_id] = olog.end

    def resume(self, rewind: dict[int, int]) -> None:
        """After registering: send what each job printed while the link was down, and from
        further back where the master asks (``rewind``: job id -> offset, from its
        registration reply: what an old link may have lost)."""
        for job_id, offset in rewind.items():
            if job_id in self.cursor:
                self.cursor[job_id] = min(self.cursor[job_id], offset)
        for job_id, sent in list(self.cursor.items()):
            if sent < self.logs[job_id].end:
                self.replay(job_id, sent)

    def remove(self, job_id: int) -> None:
        """A new run starts over: the job's earlier output is dropped."""
        olog = self.logs.pop(job_id, None)
        if olog is not None:
            olog.remove()
        self.cursor.pop(job_id, None)

    def retire(self, job_id: int) -> None:
        """The master has the job's exit: nothing is sent any more, but ``mgpu_client log``
        may still read it: its segments move to ``done/`` for KEEP_DONE_S."""
        olog = self.logs.pop(job_id, None)
        self.cursor.pop(job_id, None)
        if olog is None:
            return
        done = self.directory / DONE_DIR
        try:
            done.mkdir(exist_ok=True)
            for start in olog.segments:
                os.replace(olog._path(start), done / f"{job_id}.{start}")
        except OSError as exc:
            log.warning("job=%d output not kept for log: %s", job_id, exc)
            olog.remove()
        self._sweep_done()

    def _sweep_done(self) -> None:
        """Retired logs past KEEP_DONE_S go (checked at most once a minute)."""
        now = time.time()
        if now - self._swept_s < 60:
            return
        self._swept_s = now
        done = self.directory / DONE_DIR
        for path in done.iterdir() if done.is_dir() else ():
            try:
                if now - path.stat().st_mtime > KEEP_DONE_S:
                    path.unlink()
            except OSError:
                continue

    def read_range(
        self, job_id: int, offset: int | None, from_end: int, max_bytes: int
    ) -> dict[str, Any]:
        """``output_data``'s fields for a log read of an interactive job's output (stdout and
        stderr as srun showed them), running or retired."""
        olog = self.logs.get(job_id)
        if olog is None:
            done = self.directory / DONE_DIR
            if not any(done.glob(f"{job_id}.*")) if done.is_dir() else True:
                return {"error": f"job {job_id}'s output is no longer kept on this node"}
            olog = OutputLog(done, job_id, limit=self.limit)
        first = olog.segments[0] if olog.segments else olog.end
        start = offset if offset is not None else max(first, olog.end - from_end)
        start = min(max(start, first), olog.end)
        data = bytearray()
        for at, _, chunk, lost in olog.read_from(start):
            if lost:
                continue
            piece = chunk[max(0, start - at) :] if at < start else chunk
            data += piece[: max_bytes - len(data)]
            if len(data) >= max_bytes:
                break
        return {"data": bytes(data), "offset": start, "size": olog.end}

    def keep_only(self, job_ids: set[int]) -> None:
        """At start: forget the logs of jobs that are neither running nor awaiting an ack."""
        if not self.directory.is_dir():
            return
        for path in self.directory.iterdir():
            if path.name == DONE_DIR:
                continue  # retired logs: kept for `log` until _sweep_done takes them
            head = path.name.split(".", 1)[0]
            if head.isdigit() and int(head) not in job_ids:
                _unlink(path, int(head))
            elif head.isdigit() and int(head) not in self.logs:
                self._log(int(head))


def replay_offsets(data: object) -> dict[int, int]:
    """The registration reply's ``replay`` ([job id, offset] pairs), checked."""
    pairs = data.get("replay") if isinstance(data, dict) else None
    found: dict[int, int] = {}
    for pair in pairs if isinstance(pairs, list) else ():
        if isinstance(pair, list) and len(pair) == 2:
            job_id, offset = pair
            if isinstance(job_id, int) and isinstance(offset, int) and offset >= 0:
                found[job_id] = offset
    return found


def _unlink(path: Path, job_id: int) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("job=%d output segment not removed: %s", job_id, exc)


def _chunk(job_id: int, offset: int, stream: int, data: bytes, lost: int) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "t": "job_output",
        "job_id": job_id,
        "stream": stream,
        "data": data,
        "offset": offset,
    }
    if lost:
        msg["lost"] = lost
    return msg
