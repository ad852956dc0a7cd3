"""The pending jobs, kept in priority order as they come and go, so that a scheduling pass
reads the top of the queue instead of sorting all of it.

The multifactor priority (:mod:`mgpu_server.scheduling.policy`) of a job below the age cap is

    w_fs * fairshare(user) + [class - w_age * submit / max_age] + w_age * now / max_age

where ``class = w_qos * qos - nice``. The bracket is fixed for the job; the first term is the
same for all of one user's jobs and the last the same for every job. So the jobs of one user
and class keep their order among themselves while they wait: the queue's order is a merge of
per-(user, class) lists, each sorted once by the fixed part and offset by the user's
fair-share of the moment. A pass merges the heads (a heap of one cursor per list) and reads as
far as it needs: O(lists + examined jobs * log lists), whatever the length of the queue, with
priorities exact as of the pass, fair-share included (so there is no periodic recomputation,
Slurm's PriorityCalcPeriod, and no staleness).

A job's partitions' priority tier (the highest of them; Slurm's PriorityTier) comes before its
priority: it is part of the class, and the merge compares tiers first.

Within a class the fixed part falls with the submit time, so the jobs at the age cap (pending
``max_age_s`` or more) are a prefix of its list: found by bisection, they move in one slice to
the class's capped list, where all have the priority ``w_fs * fairshare + class + w_age`` and
are ordered by id. Jobs with an admin's priority have a list per user, without offset. Removal
is lazy: an entry is live while it is the job's current place (:attr:`_place`); dead entries
are skipped, and compacted away between walks once they are half of a class.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterator, ValuesView
from operator import itemgetter

from mgpu_server.records.jobs import Job
from mgpu_server.scheduling.policy import PolicyConfig

# (-fixed part, job id). A class's aging list is sorted by it: the highest first, then the
# lowest id; its capped list by id alone.
Entry = tuple[float, int]
# (user, class, priority tier), or (user, None, tier): an admin's priority.
ClassKey = tuple[str, float | None, int]
_BY_ID = itemgetter(1)


class _Class:
    """The pending jobs of one user and class."""

    __slots__ = ("aging", "capped", "capped_to", "dead")

    def __init__(self, capped_to: float) -> None:
        self.aging: list[Entry] = []
        self.capped: list[Entry] = []
        self.capped_to = capped_to  # entries whose -fixed part is <= this are in `capped`
        self.dead = 0  # dead entries in both lists


class _MinCount:
    """A multiset of ints with its minimum (lazy heap)."""

    def __init__(self) -> None:
        self.count: Counter[int] = Counter()
        self._heap: list[int] = []

    def add(self, value: int) -> None:
        if not self.count[value]:
            heapq.heappush(self._heap, value)
        self.count[value] += 1

    def discard(self, value: int) -> None:
        self.count[value] -= 1
        if not self.count[value]:
            del self.count[value]

    def min(self) -> int:
        while self._heap and not self.count.get(self._heap[0]):
            heapq.heappop(self._heap)
        return self._heap[0] if self._heap else 0


class PendingQueue:
    """The pending jobs by id (insertion order, like a dict) and in priority order."""

    def __init__(self, policy: PolicyConfig) -> None:
        self.policy = policy
        self._top_qos = policy.top_qos_priority()
        self._jobs: dict[int, Job] = {}
        self._classes: dict[ClassKey, _Class] = {}
        self._place: dict[int, tuple[ClassKey, float]] = {}  # job id -> (class, -fixed part)
        # Parked jobs (held, waiting for a dependency or for their --begin time) are pending
        # but in no ordered list: a pass never steps over them. The lifecycle parks and
        # unparks them as their hold, dependencies and begin time change.
        self._parked: set[int] = set()
        # What the ordered (not parked) jobs ask for: the smallest request bounds a pass.
        self._asks: dict[int, tuple[int, int, int]] = {}
        self._begin: list[tuple[float, int]] = []  # (--begin time, id)
        self._users: Counter[str] = Counter()
        # Pending jobs that ask for GPUs, and how many per user (the turn queue's "waiting").
        self._gpu_jobs: set[int] = set()
        self._gpu_users: Counter[str] = Counter()
        self._gpus, self._cpus, self._mem = _MinCount(), _MinCount(), _MinCount()

    # ---- the mapping --------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def __iter__(self) -> Iterator[int]:
        return iter(self._jobs)

    def __getitem__(self, job_id: int) -> Job:
        return self._jobs[job_id]

    def get(self, job_id: int) -> Job | None:
        return self._jobs.get(job_id)

    def values(self) -> ValuesView[Job]:
        return self._jobs.values()

    def add(self, job: Job, *, parked: bool = False) -> None:
        """A job joins the queue: in priority order, or ``parked`` (out of every walk)."""
        if job.job_id in self._jobs:
            self.remove(job.job_id)
        self._jobs[job.job_id] = job
        if parked:
            self._parked.add(job.job_id)
        else:
            self._insert(job)
        if job.spec.begin_time:
            heapq.heappush(self._begin, (job.spec.begin_time, job.job_id))
        self._users[job.user] += 1
        self._count_gpus(job)

    def remove(self, job_id: int) -> Job | None:
        """Take a job out (it started, ended or was undone); None if it was not here."""
        job = self._jobs.pop(job_id, None)
        if job is None:
            return None
        if job_id in self._parked:
            self._parked.discard(job_id)
        else:
            self._withdraw(job_id)
        self._users[job.user] -= 1
        if not self._users[job.user]:
            del self._users[job.user]
        if job_id in self._gpu_jobs:
            self._gpu_jobs.discard(job_id)
            self._gpu_users[job.user] -= 1
            if not self._gpu_users[job.user]:
                del self._gpu_users[job.user]
        return job

    def _count_gpus(self, job: Job) -> None:
        """Count the job among the GPU jobs if it asks for GPUs now (added, or updated)."""
        if job.spec.gpus and job.job_id not in self._gpu_jobs:
            self._gpu_jobs.add(job.job_id)
            self._gpu_users[job.user] += 1
        elif not job.spec.gpus and job.job_id in self._gpu_jobs:
            self._gpu_jobs.discard(job.job_id)
            self._gpu_users[job.user] -= 1
            if not self._gpu_users[job.user]:
                del self._gpu_users[job.user]

    def park(self, job_id: int) -> None:
        """Keep a pending job out of the order until :meth:`unpark` (no-op if parked)."""
        if job_id in self._jobs and job_id not in self._parked:
            self._withdraw(job_id)
            self._parked.add(job_id)

    def unpark(self, job: Job) -> None:
        """Put a parked job back in the order, at its place by priority (no-op if not parked)."""
        if job.job_id in self._parked:
            self._parked.discard(job.job_id)
            self._insert(job)

    def is_parked(self, job_id: int) -> bool:
        return job_id in self._parked

    def refresh(self, job: Job) -> None:
        """Re-place a job whose request, QoS, nice or admin priority changed."""
        self._count_gpus(job)
        if job.job_id in self._parked:
            return  # placed when it is unparked
        self._withdraw(job.job_id)
        self._insert(job)

    # ---- what a pass needs to know ------------------------------------------------------

    def users(self) -> set[str]:
        """Users with pending jobs."""
        return set(self._users)

    def count_of(self, user: str) -> int:
        """How many pending jobs ``user`` has (held and waiting ones too)."""
        return self._users.get(user, 0)

    def gpu_waiting(self) -> dict[str, int]:
        """Each user's pending jobs that ask for GPUs (held and waiting ones too)."""
        return dict(self._gpu_users)

    def min_request(self) -> tuple[int, int, int]:
        """The smallest GPU, CPU and memory request among the ordered jobs (each on its own):
        where a node has less free than this, no job a pass can reach starts on it."""
        return self._gpus.min(), self._cpus.min(), self._mem.min()

    def due(self, now: float) -> list[int]:
        """Pending jobs whose ``--begin`` time has come (each returned once)."""
        heap, found = self._begin, []
        while heap and heap[0][0] <= now:
            _, job_id = heapq.heappop(heap)
            if job_id in self._jobs:
                found.append(job_id)
        return found

    def next_begin(self) -> float | None:
        """The earliest ``--begin`` time still to come among the pending jobs."""
        heap = self._begin
        while heap and heap[0][1] not in self._jobs:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def priority(self, job: Job, now: float, fairshare: Callable[[str], float]) -> float:
        """A pending job's priority at ``now`` (the multifactor value, in this form)."""
        key, neg_fixed = self._place.get(job.job_id) or self._class_of(job)
        user, base, _ = key
        if base is None:
            return -neg_fixed
        cls = self._classes.get(key)
        capped_to = cls.capped_to if cls is not None else -math.inf
        if neg_fixed <= max(capped_to, self._cap_line(base, now)):
            return self._capped_priority(user, base, fairshare)
        return self._aging_offset(user, now, fairshare) - neg_fixed

    def ordered(self, now: float, fairshare: Callable[[str], float]) -> Iterator[Job]:
        """The pending jobs in priority order at ``now`` (the highest partition tier first, then
        the highest priority, then the lowest id), each with ``priority`` set as it is reached.
        Read lazily: a pass stops when it has seen enough. Jobs removed during the walk are
        skipped; none may be added."""
        self._prune()
        # One cursor per non-empty list: its class, the list, and the offset of its entries'
        # priority (None for a capped list: all its entries have the same priority). The heap
        # holds (-tier, -priority, job id, cursor, position): a higher partition tier first
        # (Slurm's PriorityTier), and a tie between a dead and a live entry of one job goes to
        # the cursor number, so nothing else is ever compared.
        cursors: list[tuple[ClassKey, list[Entry], float | None]] = []
        heap: list[tuple[int, float, int, int, int]] = []
        aging_offset: dict[str, float] = {}
        for key in list(self._classes):
            cls = self._classes[key]
            if cls.dead > (len(cls.aging) + len(cls.capped)) // 2:
                self._compact(key)
                if key not in self._classes:
                    continue
            user, base, tier = key
            offset = 0.0  # an admin's priority is the whole value
            if base is not None:
                self._cap(cls, base, now)
                if user not in aging_offset:
                    aging_offset[user] = self._aging_offset(user, now, fairshare)
                offset = aging_offset[user]
                if cls.capped:
                    neg_priority = -self._capped_priority(user, base, fairshare)
                    heap.append((-tier, neg_priority, cls.capped[0][1], len(cursors), 0))
                    cursors.append((key, cls.capped, None))
            if cls.aging:
                heap.append((-tier, cls.aging[0][0] - offset, cls.aging[0][1], len(cursors), 0))
                cursors.append((key, cls.aging, offset))
        heapq.heapify(heap)
        while heap:
            neg_tier, neg_priority, job_id, cursor, pos = heap[0]
            key, entries, list_offset = cursors[cursor]
            job = self._jobs.get(job_id)
            if job is not None and self._place.get(job_id) == (key, entries[pos][0]):
                job.priority = -neg_priority
                yield job
            if pos + 1 == len(entries):
                heapq.heappop(heap)
                continue
            neg_fixed, next_id = entries[pos + 1]
            if list_offset is not None:
                neg_priority = neg_fixed - list_offset
            heapq.heapreplace(heap, (neg_tier, neg_priority, next_id, cursor, pos + 1))

    # ---- internals ----------------------------------------------------------------------

    def _aging_offset(self, user: str, now: float, fairshare: Callable[[str], float]) -> float:
        cfg = self.policy
        offset = cfg.weight_fairshare * fairshare(user)
        if cfg.max_age_s > 0:
            offset += cfg.weight_age * now / cfg.max_age_s
        return offset

    def _capped_priority(self, user: str, base: float, fairshare: Callable[[str], float]) -> float:
        cfg = self.policy
        return cfg.weight_fairshare * fairshare(user) + base + cfg.weight_age

    def _cap_line(self, base: float, now: float) -> float:
        """The -fixed part at or below which a job of this class is at the cap at ``now``:
        pending max_age_s or more <=> submit <= now - max_age_s."""
        cfg = self.policy
        if cfg.max_age_s <= 0:
            return math.inf
        return -(base - cfg.weight_age * (now - cfg.max_age_s) / cfg.max_age_s)

    def _class_of(self, job: Job) -> tuple[ClassKey, float]:
        """The job's class and the -fixed part of its priority (its place in the class)."""
        cfg = self.policy
        tier = cfg.partitions.tier_of(job.spec.partition)
        if job.priority_override is not None:
            return (job.user, None, tier), -float(job.priority_override)
        base = cfg.weight_qos * cfg.qos_factor(job.spec.qos, self._top_qos) - job.spec.nice
        # A clock that steps back below a job's submit time gives it a slightly negative
        # age here, where the formula says 0: it only reorders jobs within such a step.
        age_s = job.submit_time if cfg.max_age_s > 0 else 0.0
        return (job.user, base, tier), -(base - cfg.weight_age * age_s / (cfg.max_age_s or 1.0))

    def _insert(self, job: Job) -> None:
        cfg = self.policy
        key, neg_fixed = self._class_of(job)
        cls = self._classes.get(key)
        if cls is None:
            capped_to = -math.inf if key[1] is None or cfg.max_age_s > 0 else math.inf
            cls = self._classes[key] = _Class(capped_to)
        entry = (neg_fixed, job.job_id)
        if neg_fixed <= cls.capped_to:
            entries = cls.capped
            i = bisect_left(entries, job.job_id, key=_BY_ID)
        else:
            entries = cls.aging
            i = bisect_left(entries, entry)
        if i < len(entries) and entries[i] == entry:
            cls.dead -= 1  # its old entry (it left and came back unchanged) lives again
        else:
            entries.insert(i, entry)
        self._place[job.job_id] = (key, neg_fixed)
        spec = job.spec
        asks = self._asks[job.job_id] = (spec.gpus, spec.cpus, spec.mem_bytes)
        self._gpus.add(asks[0])
        self._cpus.add(asks[1])
        self._mem.add(asks[2])

    def _withdraw(self, job_id: int) -> None:
        """Take a job out of the order (its entry dies; see :meth:`_compact`)."""
        key, _ = self._place.pop(job_id)
        self._classes[key].dead += 1
        gpus, cpus, mem = self._asks.pop(job_id)
        self._gpus.discard(gpus)
        self._cpus.discard(cpus)
        self._mem.discard(mem)

    def _cap(self, cls: _Class, base: float, now: float) -> None:
        """Move the class's jobs that reached the age cap to its capped list: a bisection,
        and a slice (entries are moved as they are, live or dead, without looking at them)."""
        line = self._cap_line(base, now)
        if line <= cls.capped_to:
            return  # nothing new (or the clock stepped back: what is capped stays so)
        cls.capped_to = line
        i = bisect_right(cls.aging, (line, math.inf))
        if i:
            cls.capped.extend(cls.aging[:i])
            del cls.aging[:i]
            cls.capped.sort(key=_BY_ID)  # two runs sorted by id: linear

    def _prune(self) -> None:
        """Drop the --begin entries of jobs that left, once they outnumber the rest."""
        if len(self._begin) > 2 * len(self._jobs) + 1024:
            self._begin = [
                (j.spec.begin_time, i) for i, j in self._jobs.items() if j.spec.begin_time
            ]
            heapq.heapify(self._begin)

    def _compact(self, key: ClassKey) -> None:
        place, cls = self._place, self._classes[key]
        cls.aging = [e for e in cls.aging if place.get(e[1]) == (key, e[0])]
        cls.capped = [e for e in cls.capped if place.get(e[1]) == (key, e[0])]
        cls.dead = 0
        if not cls.aging and not cls.capped:
            del self._classes[key]
