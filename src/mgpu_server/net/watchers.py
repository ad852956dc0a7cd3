"""Who follows which job (srun, attach): the connections each job's events and output go to.

Not state: a client that reconnects after a blip or a master restart attaches again. A client
that lets more than ``max_backlog_bytes`` of a job's events pile up unread is not buffered
without bound, nor cut off with the wrong reason: it stops watching that job and is told so
(``watch_dropped``), and re-attaches from the offset it printed up to (the node replays the
rest).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from mgpu_core.aio import AsyncConnection
from mgpu_server.state.effects import ToWatchers

log = logging.getLogger(__name__)


class Watchers:
    def __init__(self, *, max_backlog_bytes: int, ended: Callable[[int], None]) -> None:
        """``ended``: called with a job's id when its end has been told (or nobody watched)."""
        self.max_backlog_bytes = max_backlog_bytes
        self.ended = ended
        self.by_job: dict[int, set[AsyncConnection]] = {}

    def watch(self, conn: AsyncConnection, job_id: int) -> None:
        self.by_job.setdefault(job_id, set()).add(conn)

    def count(self, job_id: int) -> int:
        return len(self.by_job.get(job_id, ()))

    def send(self, effect: ToWatchers) -> None:
        conns = self.by_job.get(effect.job_id)
        ended = effect.msg["t"] == "job_ended"
        if ended:
            self.by_job.pop(effect.job_id, None)
            self.ended(effect.job_id)
        if not conns:
            return
        for conn in list(conns):
            conn.send(effect.msg)
            behind = conn.backlog_bytes()
            if behind > self.max_backlog_bytes and not ended:
                log.warning("client %s reads job %d too slowly", conn.peer, effect.job_id)
                conns.discard(conn)
                conn.send({"t": "watch_dropped", "job_id": effect.job_id, "behind_bytes": behind})
        if not conns and not ended:
            del self.by_job[effect.job_id]

    def gone(self, conn: AsyncConnection) -> None:
        """A closed client's subscriptions."""
        for job_id, conns in list(self.by_job.items()):
            conns.discard(conn)
            if not conns:
                del self.by_job[job_id]
