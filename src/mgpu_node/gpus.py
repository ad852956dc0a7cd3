"""GPU discovery and monitoring for the node agent.

Everything the agent knows about GPUs goes through one small interface, :class:`GpuBackend`:

* :class:`~mgpu_node.nvml.NvmlBackend` talks to the NVIDIA driver through NVML (nvml.py).
* :class:`FakeGpuBackend` pretends to have ``count`` idle GPUs (for tests and for nodes started
  with ``--gpu-count N`` or ``--fake-gpus h100*2,a100,h100/1g.10gb*7``: generic GPUs, or GPUs
  of the models given, whole or split into MIG slices, :func:`parse_fake_gpus`); with
  ``kind="none"`` and no devices it stands for "this node
  has no GPU". A fake GPU can be made to fail, as a real one falls off the bus, through a fault
  file, and can have a device node with a real GPU's numbers, for the devices cgroup
  (cgroups.py).

Use :func:`detect_gpus` to pick one.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from mgpu_core.gputypes import (
    is_mig_profile,
    mig_compute_slices,
    mig_memory_bytes,
    normalise,
    valid_type,
)
from mgpu_core.limits import MAX_GPU_PROCESSES, MAX_NAME_LEN, shorten
from mgpu_core.models import GpuDevice, GpuSample
from mgpu_node.nvml import NVIDIA_MAJOR, DeviceNumber, NvmlBackend, NvmlUnavailableError

logger = logging.getLogger(__name__)

MAX_FAKE_GPUS = 64
FAKE_GPU_LOAD_FILE = "fake-gpu-load"  # beside the fault file: what fake GPUs report busy
FAKE_GPU_MEMORY_BYTES = 80 * 1024**3


class GpuBackend(Protocol):
    """What the agent needs from a GPU source.

    ``devices()`` is fixed for the backend's lifetime. ``sample()`` returns exactly one
    :class:`GpuSample` per device, in ``devices()`` order, its texts cut to what the wire
    takes; a single failing GPU is reported as unhealthy in its sample, never raised.
    ``close()`` releases the backend and may be called more than once. ``device_numbers()``:
    per device, the numbers of the node a process opens to use it (a MIG instance: its GPU's).
    """

    kind: str  # "nvml", "fake" or "none"

    def devices(self) -> list[GpuDevice]: ...

    def device_numbers(self) -> list[DeviceNumber | None]: ...

    def sample(self) -> list[GpuSample]: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class FakeUnit:
    """One schedulable fake device: a whole GPU of ``model`` ("" generic), or a MIG slice of
    ``profile`` on it. ``gpu`` numbers the physical GPUs (slices of one GPU share it)."""

    model: str
    profile: str = ""
    gpu: int = 0


MAX_SLICES_PER_GPU = 7  # NVIDIA's A100/H100/H200: seven compute slices, seven instances at most


def parse_fake_gpus(text: str) -> list[FakeUnit]:
    """``--fake-gpus``: the fake devices, from a comma list of items. ``MODEL*N``: N whole GPUs
    of that model (``MODEL``: one). ``MODEL/PROFILE*N``: one GPU of that model with MIG on,
    split into N slices of that profile; more profiles on one GPU with more slashes
    (``h100/3g.40gb/2g.20gb*2``: a 3g.40gb and two 2g.20gb slices).
    ``"a100,h100*2,h100/1g.10gb*7"`` is 3 whole GPUs and one GPU of 7 slices.

    A model is normalised as NVML's names are (``H100``, ``"NVIDIA H100 80GB"``: ``h100``), or
    taken as typed, lowercase, if that is a valid type (``rtx4090``); a profile is
    ``<N>g.<M>gb`` (:func:`mgpu_core.gputypes.is_mig_profile`), at most 7 compute slices a GPU.
    ValueError with a one-line reason otherwise.
    """
    units: list[FakeUnit] = []
    gpu = 0
    for item in (part.strip() for part in text.split(",")):
        model_text, *profiles = item.split("/")
        if profiles:
            model = _fake_model(model_text.strip(), item)
            slices: list[str] = []
            for part in profiles:
                profile = part.rpartition("*")[0] if "*" in part else part
                profile = profile.strip().lower()
                if not is_mig_profile(profile):
                    raise ValueError(
                        f"invalid MIG profile '{profile}' in '{item}': use e.g. h100/1g.10gb*7 "
                        "or a100/3g.40gb/2g.20gb*2"
                    )
                slices += [profile] * _count(part, item)
            if sum(mig_compute_slices(p) for p in slices) > MAX_SLICES_PER_GPU:
                raise ValueError(
                    f"too many MIG slices on one GPU in '{item}': at most "
                    f"{MAX_SLICES_PER_GPU} compute slices (a 1g profile takes one, 3g three)"
                )
            units += [FakeUnit(model, profile, gpu) for profile in slices]
            gpu += 1
        else:
            name = model_text.rpartition("*")[0] if "*" in model_text else model_text
            model = _fake_model(name.strip(), item)
            for _ in range(_count(model_text, item)):
                units.append(FakeUnit(model, "", gpu))
                gpu += 1
        if len(units) > MAX_FAKE_GPUS:
            raise ValueError(f"too many fake GPUs in --fake-gpus: at most {MAX_FAKE_GPUS}")
    return units


def _count(part: str, item: str) -> int:
    """N of ``NAME*N`` (1 without ``*``); ValueError unless 1..64."""
    if "*" not in part:
        return 1
    count_text = part.rpartition("*")[2].strip()
    digits = count_text.isascii() and count_text.isdigit()
    count = int(count_text) if digits and len(count_text.lstrip("0")) <= 3 else 0
    if not 0 < count <= MAX_FAKE_GPUS:
        raise ValueError(f"invalid GPU count in '{item}': use MODEL*N, N 1..64, e.g. h100*2")
    return count


def _fake_model(name: str, item: str) -> str:
    model = normalise(name) or (name.lower() if valid_type(name.lower()) else "")
    if not model or is_mig_profile(model):
        raise ValueError(
            f"invalid GPU model '{name}' in --fake-gpus: use a model such as h100 or a100"
        )
    return model


class FakeGpuBackend:
    """``count`` fake, idle GPUs named after the node: generic ones ("Fake GPU", no model), or
    the ``models`` given, one per device: a model name for a whole GPU ("NVIDIA H100 (fake)",
    model ``h100``), or a :class:`FakeUnit` (a whole GPU, or a MIG slice: "NVIDIA H100 (fake)
    MIG 1g.10gb", model ``1g.10gb``, ``CUDA_VISIBLE_DEVICES`` its ``MIG-...`` UUID, as NVML
    gives them).

    Raises ValueError unless ``0 <= count <= 64`` and ``models``, if given, has ``count``
    entries. ``kind`` is "fake" by default; the no-GPU backend is
    ``FakeGpuBackend(0, node_name, kind="none")``.

    ``fault_file`` (the agent passes ``<state_dir>/fake-gpu-faults``) is read on every
    :meth:`sample`: each line ``<index> <reason text>`` makes that GPU sample unhealthy with
    that reason, until the line is removed. No file means every GPU is healthy; blank lines,
    ``#`` comments and lines that name no fake GPU are ignored (logged once).
    """

    def __init__(
        self,
        count: int,
        node_name: str,
        *,
        kind: str = "fake",
        fault_file: Path | None = None,
        models: Sequence[str | FakeUnit] | None = None,
    ) -> None:
        if isinstance(count, bool) or not 0 <= count <= MAX_FAKE_GPUS:
            raise ValueError(f"fake GPU count must be 0..{MAX_FAKE_GPUS}, got {count!r}")
        if models is not None and len(models) != count:
            raise ValueError(f"{len(models)} fake GPU models given for {count} GPUs")
        units = [
            FakeUnit(m, "", i) if isinstance(m, str) else m
            for i, m in enumerate(models or [""] * count)
        ]
        self.kind = kind
        self.fault_file = fault_file
        safe_name = re.sub(r"[^A-Za-z0-9._-]", "_", node_name) or "node"
        self._devices = [_fake_device(i, unit, safe_name) for i, unit in enumerate(units)]
        self._last_text: str | None = None
        self._faults: dict[int, str] = {}

    def devices(self) -> list[GpuDevice]:
        """Return the fake devices (a new list each call)."""
        return list(self._devices)

    def device_numbers(self) -> list[DeviceNumber | None]:
        """/dev/nvidia<N> of each device's physical GPU (a slice's: its GPU's, as NVML's)."""
        return [(NVIDIA_MAJOR, _physical(d)) for d in self._devices]

    def make_device_nodes(self, dev_dir: Path) -> None:
        """``dev_dir/nvidia<i>`` for fake GPU i, with a real GPU's numbers and mode: a path for
        the devices cgroup's tests. Root only (mknod), as are cgroups."""
        try:
            if self._devices:
                dev_dir.mkdir(parents=True, exist_ok=True)
            for number in sorted({_physical(d) for d in self._devices}):  # (none: no directory)
                path = dev_dir / f"nvidia{number}"
                path.unlink(missing_ok=True)  # whatever a previous agent left: made afresh
                os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(NVIDIA_MAJOR, number))
                path.chmod(0o666)  # after mknod, which the umask narrows
        except OSError as exc:
            logger.info("fake GPU device nodes not made in %s: %s", dev_dir, exc)

    def sample(self) -> list[GpuSample]:
        """Every fake device idle and empty unless the load file says otherwise; healthy
        unless the fault file names it."""
        faults = self._read_faults()
        load = self._read_load()
        return [
            GpuSample(index=d.index, healthy=False, error=faults[d.index])
            if d.index in faults
            else GpuSample(
                index=d.index,
                utilization_pct=load.get(d.index, (0, 0))[0],
                memory_used_bytes=load.get(d.index, (0, 0))[1],
            )
            for d in self._devices
        ]

    def _read_load(self) -> dict[int, tuple[int, int]]:
        """``fake-gpu-load`` beside the fault file: ``<index> <utilisation %> [<memory
        bytes>]`` per line, what a fake GPU reports busy (idle detection's tests); lines that
        do not parse are ignored."""
        if self.fault_file is None:
            return {}
        try:
            text = (self.fault_file.parent / FAKE_GPU_LOAD_FILE).read_text(errors="replace")
        except OSError:
            return {}
        load = {}
        for line in text.splitlines():
            fields = line.split()
            if 2 <= len(fields) <= 3 and all(f.isdigit() for f in fields):
                index, util, *mem = (int(f) for f in fields)
                if 0 <= index < len(self._devices) and util <= 100:
                    load[index] = (
                        util,
                        min(mem[0] if mem else 0, self._devices[index].memory_total_bytes),
                    )
        return load

    def _read_faults(self) -> dict[int, str]:
        if self.fault_file is None:
            return {}
        try:
            text = self.fault_file.read_text(errors="replace")
        except FileNotFoundError:
            text = ""
        except OSError as exc:
            text = self._last_text or ""  # keep what we knew rather than heal the GPUs
            logger.warning("cannot read %s: %s", self.fault_file, exc)
        if text != self._last_text:  # parse (and log) only when the file changes
            self._last_text = text
            faults = self._parse_faults(text)
            for index in sorted(faults.keys() - self._faults.keys()):
                logger.warning("fake GPU %d is unhealthy: %s", index, faults[index])
            for index in sorted(self._faults.keys() - faults.keys()):
                logger.info("fake GPU %d is healthy again", index)
            self._faults = faults
        return self._faults

    def _parse_faults(self, text: str) -> dict[int, str]:
        faults: dict[int, str] = {}
        for line in text.splitlines():
            fields = line.split(None, 1)
            if not fields or fields[0].startswith("#"):
                continue
            index = int(fields[0]) if fields[0].isdigit() else -1
            if not 0 <= index < len(self._devices):
                logger.warning("%s: no fake GPU %r; line ignored", self.fault_file, fields[0])
                continue
            reason = fields[1].strip() if len(fields) > 1 else "fault injected"
            faults[index] = shorten(reason, MAX_NAME_LEN)
        return faults

    def close(self) -> None:
        """Nothing to release."""


def _physical(device: GpuDevice) -> int:
    """The number of the physical fake GPU a device is (or is a slice of)."""
    return device.parent_index if device.is_slice else int(device.visible_id)


def _fake_device(index: int, unit: FakeUnit, safe_name: str) -> GpuDevice:
    name = f"NVIDIA {unit.model.upper()} (fake)" if unit.model else "Fake GPU"
    gpu_uuid = f"GPU-fake-{safe_name}-{unit.gpu}"
    if not unit.profile:
        return GpuDevice(
            index=index,
            uuid=gpu_uuid,
            name=name,
            model=unit.model,
            memory_total_bytes=FAKE_GPU_MEMORY_BYTES,
            visible_id=str(unit.gpu),
            fake=True,
        )
    uuid = f"MIG-fake-{safe_name}-{unit.gpu}-{index}"
    return GpuDevice(
        index=index,
        uuid=uuid,
        name=f"{name} MIG {unit.profile}",
        model=unit.profile,
        memory_total_bytes=mig_memory_bytes(unit.profile),
        visible_id=uuid,
        fake=True,
        parent_uuid=gpu_uuid,
        parent_index=unit.gpu,
    )


def strangers_only(backend: GpuBackend, ours: set[int]) -> list[GpuSample]:
    """This moment's GPU samples, each listing only the processes of strangers (whose session
    is none of ``ours``, our jobs' sessions), as many as the wire takes."""
    out = []
    for sample in backend.sample():
        foreign = [p for p in sample.processes if _session_of(p.pid) not in ours]
        out.append(replace(sample, processes=foreign[:MAX_GPU_PROCESSES]))
    return out


def _session_of(pid: int) -> int:
    try:
        return os.getsid(pid)
    except OSError:
        return -1


def detect_gpus(
    *,
    fake_count: int | None,
    node_name: str,
    fault_file: Path | None = None,
    fake_models: Sequence[str | FakeUnit] | None = None,
) -> GpuBackend:
    """Choose the node's GPU backend.

    With ``fake_count`` (the agent's ``--gpu-count``) return ``FakeGpuBackend(fake_count,
    node_name, fault_file=fault_file)`` (ValueError if out of range); with ``fake_models``
    (``--fake-gpus``, :func:`parse_fake_gpus`) fake GPUs of those models. Either way, warn if
    NVML sees real GPUs that are thereby ignored. Otherwise return an :class:`NvmlBackend`, or,
    if NVML is unavailable, a backend of kind "none" with no devices. Never raises because of
    NVML.
    """
    flag = "--gpu-count"
    if fake_models is not None:
        fake_count, flag = len(fake_models), "--fake-gpus"
    if fake_count is not None:
        backend = FakeGpuBackend(fake_count, node_name, fault_file=fault_file, models=fake_models)
        logger.info("using %d fake GPU(s) (%s)", fake_count, flag)
        try:
            probe = NvmlBackend()
        except NvmlUnavailableError:
            return backend
        real_count = len(probe.devices())
        probe.close()
        if real_count:
            logger.warning(
                "%d real GPU device(s) found by NVML are ignored because %s was given",
                real_count,
                flag,
            )
        return backend
    try:
        return NvmlBackend()
    except NvmlUnavailableError as exc:
        logger.info("NVML unavailable (%s): no GPUs", exc)
        return FakeGpuBackend(0, node_name, kind="none")
