"""GPU discovery and monitoring for the node agent.

Everything the agent knows about GPUs goes through one small interface, :class:`GpuBackend`:

* :class:`~mgpu_node.nvml.NvmlBackend` talks to the NVIDIA driver through NVML (nvml.py).
* :class:`FakeGpuBackend` pretends to have ``count`` idle GPUs (for tests and for nodes started
  with ``--gpu-count N`` or ``--fake-gpus h100*2,a100``: generic GPUs, or GPUs of the models
  given, :func:`parse_fake_gpus`); with ``kind="none"`` and no devices it stands for "this node
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
from pathlib import Path
from typing import Protocol

from mgpu_core.gputypes import normalise, valid_type
from mgpu_core.limits import MAX_NAME_LEN, shorten
from mgpu_core.models import GpuDevice, GpuSample
from mgpu_node.nvml import NVIDIA_MAJOR, DeviceNumber, NvmlBackend, NvmlUnavailableError

logger = logging.getLogger(__name__)

MAX_FAKE_GPUS = 64
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


def parse_fake_gpus(text: str) -> list[str]:
    """``--fake-gpus``: the model of each fake GPU, from a comma list of ``MODEL*N`` (N GPUs of
    that model) or ``MODEL`` (one): ``"a100*1,h100*2"`` is ``["a100", "h100", "h100"]``.

    A model is normalised as NVML's names are (``H100``, ``"NVIDIA H100 80GB"``: ``h100``), or
    taken as typed, lowercase, if that is a valid type (``rtx4090``). ValueError with a
    one-line reason otherwise; MIG slices (``h100/1g.10gb*7``) are not supported yet.
    """
    models: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        name, _, count_text = item.rpartition("*") if "*" in item else (item, "", "1")
        name, count_text = name.strip(), count_text.strip()
        if "/" in name:
            raise ValueError(
                f"MIG slices in --fake-gpus ({item}) are not supported yet: "
                "give whole GPUs, e.g. h100*2"
            )
        digits = count_text.isascii() and count_text.isdigit()
        count = int(count_text) if digits and len(count_text.lstrip("0")) <= 3 else 0
        if not 0 < count <= MAX_FAKE_GPUS:
            raise ValueError(f"invalid GPU count in '{item}': use MODEL*N, N 1..64, e.g. h100*2")
        model = normalise(name) or (name.lower() if valid_type(name.lower()) else "")
        if not model:
            raise ValueError(
                f"invalid GPU model '{name}' in --fake-gpus: use a model such as h100 or a100"
            )
        if len(models) + count > MAX_FAKE_GPUS:
            raise ValueError(f"too many fake GPUs in --fake-gpus: at most {MAX_FAKE_GPUS}")
        models += [model] * count
    return models


class FakeGpuBackend:
    """``count`` fake, idle GPUs named after the node: generic ones ("Fake GPU", no model), or
    of the ``models`` given, one per GPU ("NVIDIA H100 (fake)", model ``h100``).

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
        models: Sequence[str] | None = None,
    ) -> None:
        if isinstance(count, bool) or not 0 <= count <= MAX_FAKE_GPUS:
            raise ValueError(f"fake GPU count must be 0..{MAX_FAKE_GPUS}, got {count!r}")
        if models is not None and len(models) != count:
            raise ValueError(f"{len(models)} fake GPU models given for {count} GPUs")
        models = models or [""] * count
        self.kind = kind
        self.fault_file = fault_file
        safe_name = re.sub(r"[^A-Za-z0-9._-]", "_", node_name) or "node"
        self._devices = [
            GpuDevice(
                index=i,
                uuid=f"GPU-fake-{safe_name}-{i}",
                name=f"NVIDIA {model.upper()} (fake)" if model else "Fake GPU",
                model=model,
                memory_total_bytes=FAKE_GPU_MEMORY_BYTES,
                visible_id=str(i),
                fake=True,
            )
            for i, model in enumerate(models)
        ]
        self._last_text: str | None = None
        self._faults: dict[int, str] = {}

    def devices(self) -> list[GpuDevice]:
        """Return the fake devices (a new list each call)."""
        return list(self._devices)

    def device_numbers(self) -> list[DeviceNumber | None]:
        return [(NVIDIA_MAJOR, d.index) for d in self._devices]

    def make_device_nodes(self, dev_dir: Path) -> None:
        """``dev_dir/nvidia<i>`` for fake GPU i, with a real GPU's numbers and mode: a path for
        the devices cgroup's tests. Root only (mknod), as are cgroups."""
        try:
            if self._devices:
                dev_dir.mkdir(parents=True, exist_ok=True)
            for device in self._devices:  # (none: no directory either)
                path = dev_dir / f"nvidia{device.index}"
                path.unlink(missing_ok=True)  # whatever a previous agent left: made afresh
                os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(NVIDIA_MAJOR, device.index))
                path.chmod(0o666)  # after mknod, which the umask narrows
        except OSError as exc:
            logger.info("fake GPU device nodes not made in %s: %s", dev_dir, exc)

    def sample(self) -> list[GpuSample]:
        """Every fake device idle and empty; healthy unless the fault file names it."""
        faults = self._read_faults()
        return [
            GpuSample(index=d.index, healthy=False, error=faults[d.index])
            if d.index in faults
            else GpuSample(index=d.index, utilization_pct=0, memory_used_bytes=0)
            for d in self._devices
        ]

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


def detect_gpus(
    *,
    fake_count: int | None,
    node_name: str,
    fault_file: Path | None = None,
    fake_models: Sequence[str] | None = None,
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
