"""Chaos: three agents and the master are killed, frozen and restarted at random while a few
hundred jobs run (some failing, some past their time limit, some cancelled). Every job proves
by kernel locks that it ran alone and its GPUs were its own (tests/helpers/ledger.py).

Afterwards: no acknowledged job is lost, no job ran two copies at once, no GPU was held by two
jobs at once, every job ended in the state its kind calls for with its exit code, nothing is
stuck. The counts are printed (pytest -s shows them). Bounded: about a minute of chaos, then
at most two minutes for the queue to drain.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import ledger
from tests.helpers.cluster import FAST_FENCE, PY, Cluster, running_cluster, wait_for

pytestmark = [pytest.mark.timeout(400), pytest.mark.slow]

NODES = ("c1", "c2", "c3")
JOBS = 160
CHAOS_S = 45.0
SEED = 20261129


def _kind(i: int) -> str:
    return ("ok", "ok", "ok", "ok", "ok", "fail", "timeout", "cancel")[i % 8]


def _submit(c: Cluster, script: Path, book: Path, kind: str, rng: random.Random) -> int | None:
    """One sbatch, retried while the master is down; None if it never got an answer."""
    seconds = {"timeout": 60.0, "cancel": 300.0}.get(kind, round(rng.uniform(0.2, 2.0), 2))
    code = 3 if kind == "fail" else 0
    args = ["--gpus", str(rng.choice((1, 1, 1, 2))), "--parsable"]
    if kind == "timeout":
        args += ["-t", "0:02"]  # two seconds (MM:SS)
    args += ["--wrap", f"{PY} {script} {book} {seconds} {code}"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        result = c.cli("mgpu_sbatch", *args)
        if result.returncode == 0:
            return int(result.stdout.strip())
        assert result.returncode == 2, result.stderr  # only "master unreachable" is retried
        time.sleep(0.2)  # pacing a retry against a master that is restarting
    return None


class Chaos:
    """Random faults on the master and the agents, undone before the end."""

    def __init__(self, c: Cluster, rng: random.Random) -> None:
        self.c = c
        self.rng = rng
        self.stopped: dict[str, float] = {}  # name -> when to SIGCONT
        self.dead: dict[str, float] = {}  # name -> when to restart
        self.counts: Counter[str] = Counter()

    def pid(self, name: str) -> int | None:
        proc = self.c.master if name == "master" else self.c.nodes.get(name)
        return None if proc is None or proc.poll() is not None else proc.pid

    def act(self) -> None:
        name = self.rng.choice(["master", *NODES, *NODES])
        pid = self.pid(name)
        if pid is None or name in self.stopped:
            return
        roll = self.rng.random()
        now = time.monotonic()
        if roll < 0.4:
            os.kill(pid, signal.SIGKILL)
            self.dead[name] = now + self.rng.uniform(0.5, 3.0)
            self.counts[f"kill -9 {'master' if name == 'master' else 'agent'}"] += 1
        else:
            os.kill(pid, signal.SIGSTOP)
            longest = 3.0 if name == "master" else 12.0  # past the fence, sometimes
            self.stopped[name] = now + self.rng.uniform(1.0, longest)
            self.counts[f"SIGSTOP {'master' if name == 'master' else 'agent'}"] += 1

    def tick(self, *, heal_all: bool = False) -> None:
        now = time.monotonic()
        for name, when in list(self.stopped.items()):
            if heal_all or now >= when:
                pid = self.pid(name)
                if pid is not None:
                    os.kill(pid, signal.SIGCONT)
                del self.stopped[name]
        for name, when in list(self.dead.items()):
            if heal_all or now >= when:
                self.restart(name)
                del self.dead[name]

    def restart(self, name: str) -> None:
        proc = self.c.master if name == "master" else self.c.nodes[name]
        assert proc is not None
        proc.wait(timeout=10)
        if name == "master":
            self.c.start_master(port=self.c.port)
        else:
            self.c.start_node(name, 2, wait=False)


def test_chaos(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    with running_cluster(tmp_path, *FAST_FENCE) as c:
        book = tmp_path / "book"
        script = ledger.install(book)
        for name in NODES:
            c.start_node(name, 2)
        chaos = Chaos(c, rng)
        kinds: dict[int, str] = {}
        started = time.monotonic()
        next_fault = started + 2.0
        i = 0
        while i < JOBS or time.monotonic() - started < CHAOS_S:
            if i < JOBS:
                job_id = _submit(c, script, book, _kind(i), rng)
                if job_id is not None:
                    kinds[job_id] = _kind(i)
                    if kinds[job_id] == "cancel":
                        c.cli("mgpu_cancel", str(job_id))  # may fail while the master is down
                i += 1
            else:
                time.sleep(0.1)  # pacing the fault loop once every job is submitted
            if time.monotonic() >= next_fault:
                chaos.act()
                next_fault = time.monotonic() + rng.uniform(1.5, 3.0)
            chaos.tick()
        chaos.tick(heal_all=True)
        # Every agent back and registered.
        wait_for(lambda: all(c.node_up(n) for n in NODES), 60, "every agent to register again")
        # Cancels that could not reach the master are asked again now: they must take.
        for job_id, kind in kinds.items():
            if kind == "cancel":
                c.cli("mgpu_cancel", str(job_id))

        def drained() -> dict[int, dict[str, object]] | None:
            jobs = c.jobs()
            live = [j for j in jobs.values() if j["state"] not in TERMINAL]
            return None if live else jobs

        jobs = wait_for(drained, 180, "every job to end")
        _check(jobs, kinds, book, chaos)


TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"}
EXPECTED = {
    "ok": {"COMPLETED"},
    "fail": {"FAILED"},
    "timeout": {"TIMEOUT"},
    "cancel": {"CANCELLED"},
}


def _check(
    jobs: dict[int, dict[str, object]], kinds: dict[int, str], book: Path, chaos: Chaos
) -> None:
    lost = sorted(set(kinds) - set(jobs))
    wrong = {
        job_id: (kind, jobs[job_id]["state"], jobs[job_id]["exit_code"], jobs[job_id]["reason"])
        for job_id, kind in kinds.items()
        if job_id in jobs and jobs[job_id]["state"] not in EXPECTED[kind]
    }
    bad_codes = [
        job_id
        for job_id, kind in kinds.items()
        if kind == "fail" and jobs.get(job_id, {}).get("exit_code") != 3
    ]
    clashes = ledger.clashes(book)
    states = Counter(str(jobs[j]["state"]) for j in kinds if j in jobs)
    restarts = sum(int(str(jobs[j]["restart_count"])) for j in kinds if j in jobs)
    print(
        f"\nchaos: {dict(chaos.counts)}; jobs acknowledged {len(kinds)}, lost {len(lost)}, "
        f"final states {dict(states)}, requeues {restarts}, clashes {len(clashes)}, "
        f"wrong states {len(wrong)}"
    )
    assert lost == [], f"acknowledged jobs lost: {lost}"
    assert clashes == [], f"two copies of a job, or two jobs on a GPU: {clashes[:5]}"
    assert wrong == {}, f"jobs in the wrong final state: {list(wrong.items())[:5]}"
    assert bad_codes == [], f"failed jobs without their exit code: {bad_codes[:5]}"
