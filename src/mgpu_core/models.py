"""Domain records shared across processes, and their wire conversion.

Three representations, converted only here: dataclass <-> wire dict (validated by
:mod:`mgpu_core.messages`) <-> bytes (:mod:`mgpu_core.protocol`).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class JobSpec:
    """What a user asks for. Immutable once submitted (updates are issue #4's verbs).

    Exactly one of ``argv`` (run directly, srun-style) or ``script`` (a batch script's text,
    copied at submit time as sbatch does) is set. Memory and CPUs are scheduling quantities.
    """

    name: str = ""
    argv: list[str] = field(default_factory=list)
    script: str | None = None
    interactive: bool = False
    gpus: int = 0
    cpus: int = 1
    mem_bytes: int = 0
    time_limit_s: int = 0
    nodelist: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "/"
    stdout_path: str | None = None
    stderr_path: str | None = None
    array: str = ""  # --array, e.g. "0-15%4": the master makes one job per task
    requeue: bool = False
    nice: int = 0
    qos: str = ""
    dependency: str = ""
    kill_on_invalid_dep: bool = False
    hold: bool = False
    begin_time: float = 0.0
    warn_signal: int = 0
    warn_before_s: int = 0

    def to_wire(self) -> dict[str, Any]:
        # Not dataclasses.asdict: its generic deep copy costs ~0.1 ms a spec, paid for every
        # job the master launches. The fields are str, numbers and flat str containers.
        wire = {name: getattr(self, name) for name in self.__slots__}
        wire["argv"], wire["nodelist"] = list(self.argv), list(self.nodelist)
        wire["env"] = dict(self.env)
        return wire

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> JobSpec:
        """Build from a dict already checked by ``messages.JOB_SPEC``."""
        return cls(**{k: data[k] for k in cls.__slots__ if k in data})

    def command_display(self) -> str:
        """A one-line rendering of what runs, for queue listings and logs."""
        if self.script is not None:
            return f"(batch script) {self.name}".strip()
        return shlex.join(self.argv)

    def display_name(self) -> str:
        if self.name:
            return self.name
        if self.argv:
            return self.argv[0].rsplit("/", 1)[-1]
        return "batch"


def expand_path_template(template: str, *, job_id: int, name: str, user: str, node: str) -> str:
    """Slurm's filename patterns: %j job id, %x job name, %u user, %N node, %% a percent.

    Unknown ``%`` sequences are kept as written rather than rejected, so a literal percent in
    a path survives.
    """
    out: list[str] = []
    i = 0
    subs = {"j": str(job_id), "x": name, "u": user, "N": node, "%": "%"}
    while i < len(template):
        ch = template[i]
        if ch == "%" and i + 1 < len(template) and template[i + 1] in subs:
            out.append(subs[template[i + 1]])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)
