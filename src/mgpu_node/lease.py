"""The fence's lease: until when this node's jobs may run without word from the master.

The invariant (docs/architecture.md, "Fencing"): a job starts again elsewhere only once its
old copy is known dead. The master takes a silent node's jobs for lost only after
fence_timeout_s + the kill grace + a margin of silence; by then the node must have killed them
itself, even if its agent is frozen, dead or cut off. So the agent keeps a lease in
``<state-dir>/lease``, renewed only when the master acknowledges a heartbeat
(``heartbeat_ack``), and the guard (guard.py), a process of its own, kills the jobs once the
lease has run out.

The deadline is the time the acknowledged heartbeat was *sent* plus fence_timeout_s: the master
received it later, so the node's deadline is never later than the master's last word from the
node plus fence_timeout_s, however long the ack took on the way back. It is on CLOCK_BOOTTIME,
which no wall-clock step moves and which keeps counting while the machine is suspended (a node
that wakes from a long sleep kills its jobs at once). A lease of an earlier boot means nothing
(its clock restarted, and its jobs died with the boot), so it carries the boot id; so does no
lease at all (a state directory from before the fence: jobs an older agent left are fenced from
the first registration on).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mgpu_core.constants import KILL_GRACE_S, LEASE_FILE
from mgpu_node.spool import write_atomic

log = logging.getLogger(__name__)

BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
# Heartbeats awaiting their ack that are remembered; the ack of a forgotten one renews nothing.
MAX_IN_FLIGHT = 64
# Heartbeats per fence period at least: one lost or late heartbeat never fences.
BEATS_PER_FENCE = 4
# A link that brings nothing (no ack) for this many heartbeats, or half the fence up to
# MAX_SILENCE_S, is given up for a new one (LeaseKeeper.silence_limit).
SILENT_BEATS = 3
MAX_SILENCE_S = 30.0


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


@functools.cache
def boot_id() -> str:
    try:
        return BOOT_ID_FILE.read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True, slots=True)
class Lease:
    deadline: float  # on CLOCK_BOOTTIME: SIGTERM to every job after this
    fence_timeout_s: float  # the silence the deadline allows
    kill_grace_s: float  # SIGKILL this long after the deadline
    boot_id: str

    def expired(self, now: float) -> bool:
        return now > self.deadline

    def silence_s(self, now: float) -> float:
        """Time since the last acknowledged heartbeat was sent."""
        return now - self.deadline + self.fence_timeout_s


def write_lease(state_dir: Path, lease: Lease) -> None:
    """Replace the lease in one step: the guard reads the old one or the new one."""
    write_atomic(state_dir / LEASE_FILE, json.dumps(asdict(lease)).encode(), durable=False)


def read_lease(state_dir: Path) -> Lease | None:
    """The lease; None if none was written in this boot. One that cannot be read has run out
    (logged): the fence must not depend on a file being intact."""
    path = state_dir / LEASE_FILE
    try:
        lease = Lease(**json.loads(path.read_bytes()))
        if not all(math.isfinite(v) for v in (lease.deadline, lease.kill_grace_s)):
            raise ValueError("not finite")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        log.error("lease %s unreadable (%s): taken as run out", path, exc)
        return Lease(0.0, 0.0, KILL_GRACE_S, boot_id())
    return lease if lease.boot_id == boot_id() else None


def _seconds(value: object) -> float | None:
    """A positive, finite number of seconds from the master's reply, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value > 0 else None


class LeaseKeeper:
    """The agent's side: the current link's fence settings, and the heartbeats sent on it that
    await their ack."""

    def __init__(self, state_dir: Path, fence_timeout_s: float) -> None:
        self.state_dir = state_dir
        self.default_fence_s = fence_timeout_s
        self.fence_timeout_s = fence_timeout_s
        self.kill_grace_s = KILL_GRACE_S
        self.master_fences = False  # the master acknowledges heartbeats
        self._seq = 0
        self._sent: dict[int, float] = {}  # heartbeat seq -> when sent (BOOTTIME), in order

    def registered(self, data: Mapping[str, Any], hello_sent: float) -> None:
        """A new link: the fence settings of the master's ok reply, and a lease from the
        hello's sending. An older master says nothing of a fence (and acknowledges no
        heartbeat): the agent's own --fence-timeout then applies, counted from its own
        heartbeats on a link that is up, so a frozen or dead agent or a closed link still
        fences its jobs (a link black-holed before TCP notices does not)."""
        fence_s = _seconds(data.get("fence_timeout_s"))
        self.master_fences = fence_s is not None
        self.fence_timeout_s = fence_s or self.default_fence_s
        self.kill_grace_s = _seconds(data.get("kill_grace_s")) or KILL_GRACE_S
        self._seq = 0
        self._sent.clear()
        log.info(
            "fence: jobs are killed %.1f s after the last %s heartbeat (SIGKILL %.1f s later)",
            self.fence_timeout_s,
            "acknowledged" if self.master_fences else "sent (the master acknowledges none)",
            self.kill_grace_s,
        )
        self.renew(hello_sent)

    def heartbeat_interval(self, configured_s: float) -> float:
        return min(configured_s, self.fence_timeout_s / BEATS_PER_FENCE)

    def silence_limit(self, configured_s: float) -> float | None:
        """How long the link may bring nothing before the agent gives it up and connects again:
        a few heartbeats' worth, and well within the fence, so that a new link can renew the
        lease in time. None (no limit) for a master that acknowledges nothing, which may be
        silent when it has nothing to say."""
        if not self.master_fences:
            return None
        interval_s = self.heartbeat_interval(configured_s)
        return max(SILENT_BEATS * interval_s, min(self.fence_timeout_s / 2, MAX_SILENCE_S))

    def heartbeat_sent(self, at: float) -> int:
        """The seq of a heartbeat sent at ``at`` (BOOTTIME)."""
        self._seq += 1
        if not self.master_fences:
            self.renew(at)
        else:
            if len(self._sent) >= MAX_IN_FLIGHT:
                del self._sent[next(iter(self._sent))]
            self._sent[self._seq] = at
        return self._seq

    def acked(self, seq: int) -> None:
        """``heartbeat_ack``: renew from the sending of the heartbeat it acknowledges."""
        sent = self._sent.get(seq)
        if sent is None:
            log.debug("heartbeat_ack of unknown heartbeat %d ignored", seq)
            return
        for earlier in [s for s in self._sent if s <= seq]:
            del self._sent[earlier]
        self.renew(sent)

    def renew(self, sent_at: float) -> None:
        lease = Lease(
            sent_at + self.fence_timeout_s, self.fence_timeout_s, self.kill_grace_s, boot_id()
        )
        try:
            write_lease(self.state_dir, lease)
        except OSError as exc:
            log.error("lease not renewed (%s): the guard fences the jobs when it runs out", exc)
