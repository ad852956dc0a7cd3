"""GPU discovery and monitoring for the node agent.

Everything the agent knows about GPUs goes through one small interface, :class:`GpuBackend`:

* :class:`NvmlBackend` talks to the NVIDIA driver through NVML (``pynvml``, from the
  ``nvidia-ml-py`` package). Whole GPUs are numbered in PCI bus order, so a whole GPU's
  ``visible_id`` (its NVML index) matches CUDA only when jobs run with
  ``CUDA_DEVICE_ORDER=PCI_BUS_ID``. MIG instances are addressed by their UUID instead.
* :class:`FakeGpuBackend` pretends to have ``count`` idle GPUs (for tests and for nodes started
  with ``--gpu-count``); with ``kind="none"`` and no devices it stands for "this node has no GPU".
  A fake GPU can be made to fail, as a real one falls off the bus, through a fault file, and
  can have a device node with a real GPU's numbers, for the devices cgroup (cgroups.py).

Use :func:`detect_gpus` to pick one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import threading
from pathlib import Path
from typing import Any, Protocol

import psutil

from mgpu_core.limits import MAX_NAME_LEN, shorten
from mgpu_core.models import GpuDevice, GpuProcess, GpuSample

logger = logging.getLogger(__name__)

MAX_FAKE_GPUS = 64
FAKE_GPU_MEMORY_BYTES = 80 * 1024**3
# The NVIDIA driver's character devices: /dev/nvidiaN is (195, N); /dev/nvidiactl is (195, 255).
NVIDIA_MAJOR = 195
DeviceNumber = tuple[int, int]  # (major, minor) of a character device


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


class NvmlUnavailableError(RuntimeError):
    """NVML could not be loaded, initialised or queried; the message says why."""


class FakeGpuBackend:
    """``count`` fake, idle GPUs named after the node.

    Raises ValueError unless ``0 <= count <= 64``. ``kind`` is "fake" by default; the no-GPU
    backend is ``FakeGpuBackend(0, node_name, kind="none")``.

    ``fault_file`` (the agent passes ``<state_dir>/fake-gpu-faults``) is read on every
    :meth:`sample`: each line ``<index> <reason text>`` makes that GPU sample unhealthy with
    that reason, until the line is removed. No file means every GPU is healthy; blank lines,
    ``#`` comments and lines that name no fake GPU are ignored (logged once).
    """

    def __init__(
        self, count: int, node_name: str, *, kind: str = "fake", fault_file: Path | None = None
    ) -> None:
        if isinstance(count, bool) or not 0 <= count <= MAX_FAKE_GPUS:
            raise ValueError(f"fake GPU count must be 0..{MAX_FAKE_GPUS}, got {count!r}")
        self.kind = kind
        self.fault_file = fault_file
        safe_name = re.sub(r"[^A-Za-z0-9._-]", "_", node_name) or "node"
        self._devices = [
            GpuDevice(
                index=i,
                uuid=f"GPU-fake-{safe_name}-{i}",
                name="Fake GPU",
                memory_total_bytes=FAKE_GPU_MEMORY_BYTES,
                visible_id=str(i),
                fake=True,
            )
            for i in range(count)
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


def _text(value: object) -> str:
    """NVML strings are bytes on old pynvml versions and str on new ones."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _describe_process(pid: int, used_memory: object) -> GpuProcess:
    """Resolve a pid's owner and name with psutil; unknown parts become "?" and ""."""
    user, command = "?", ""
    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
        proc = psutil.Process(pid)
        with contextlib.suppress(psutil.AccessDenied):
            user = proc.username()
        with contextlib.suppress(psutil.AccessDenied):
            command = proc.name()
    memory = used_memory if isinstance(used_memory, int) and used_memory >= 0 else 0
    return GpuProcess(
        pid=pid,
        user=shorten(user, MAX_NAME_LEN),
        used_memory_bytes=memory,
        command=shorten(command, MAX_NAME_LEN),
    )


class NvmlBackend:
    """Real GPUs through NVML.

    The constructor initialises NVML and enumerates the devices; it raises
    :class:`NvmlUnavailableError` if pynvml cannot be imported or NVML fails as a whole. A GPU
    that cannot be queried during enumeration is skipped with a WARNING. ``sample()`` and
    ``close()`` are thread-safe; ``sample()`` after ``close()`` raises RuntimeError.
    """

    kind = "nvml"

    def __init__(self) -> None:
        try:
            import pynvml
        except ImportError as exc:
            raise NvmlUnavailableError(f"pynvml not importable: {exc}") from exc
        self._nvml: Any = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise NvmlUnavailableError(str(exc)) from exc
        self._lock = threading.Lock()
        self._closed = False
        self._unhealthy: set[int] = set()
        self._numbers: list[DeviceNumber | None] = []  # filled by _enumerate, per device
        try:
            self._devices, self._handles = self._enumerate()
        except pynvml.NVMLError as exc:
            self.close()
            raise NvmlUnavailableError(str(exc)) from exc

    def _enumerate(self) -> tuple[list[GpuDevice], list[Any]]:
        """List schedulable units in PCI bus order (MIG instances in MIG index order)."""
        nvml = self._nvml
        gpus: list[tuple[str, int, Any]] = []
        for nvml_index in range(nvml.nvmlDeviceGetCount()):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(nvml_index)
                bus_id = _text(nvml.nvmlDeviceGetPciInfo(handle).busId).lower()
            except nvml.NVMLError as exc:
                logger.warning("GPU at NVML index %d skipped: %s", nvml_index, exc)
                continue
            gpus.append((bus_id, nvml_index, handle))
        gpus.sort(key=lambda gpu: (gpu[0], gpu[1]))

        devices: list[GpuDevice] = []
        handles: list[Any] = []
        for bus_id, nvml_index, handle in gpus:
            try:
                units = self._units(nvml_index, handle)
            except nvml.NVMLError as exc:
                logger.warning("GPU %d (%s) skipped: %s", nvml_index, bus_id, exc)
                continue
            number: DeviceNumber | None = None  # /dev/nvidia<minor>, its MIG instances' too
            with contextlib.suppress(nvml.NVMLError):
                number = (NVIDIA_MAJOR, nvml.nvmlDeviceGetMinorNumber(handle))
            for unit, visible_id in units:
                try:
                    uuid = _text(nvml.nvmlDeviceGetUUID(unit))
                    name = shorten(_text(nvml.nvmlDeviceGetName(unit)), MAX_NAME_LEN)
                    memory = int(nvml.nvmlDeviceGetMemoryInfo(unit).total)
                except nvml.NVMLError as exc:
                    logger.warning("a device of GPU %d (%s) skipped: %s", nvml_index, bus_id, exc)
                    continue
                index = len(devices)
                device = GpuDevice(
                    index=index,
                    uuid=uuid,
                    name=name,
                    memory_total_bytes=memory,
                    visible_id=visible_id or uuid,
                    fake=False,
                )
                devices.append(device)
                handles.append(unit)
                self._numbers.append(number)
                logger.info("GPU %d: %s %s (%s, %d MiB)", index, uuid, name, bus_id, memory >> 20)
        return devices, handles

    def _units(self, nvml_index: int, handle: Any) -> list[tuple[Any, str | None]]:
        """Return (handle, visible_id) for a GPU's schedulable units.

        visible_id is None for MIG instances, whose visible id is their UUID.
        """
        nvml = self._nvml
        try:
            current_mode = nvml.nvmlDeviceGetMigMode(handle)[0]
        except (nvml.NVMLError_NotSupported, nvml.NVMLError_FunctionNotFound):
            current_mode = nvml.NVML_DEVICE_MIG_DISABLE
        if current_mode != nvml.NVML_DEVICE_MIG_ENABLE:
            return [(handle, str(nvml_index))]
        units: list[tuple[Any, str | None]] = []
        for mig_index in range(nvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
            try:
                units.append((nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, mig_index), None))
            except nvml.NVMLError_NotFound:
                continue
        if not units:
            logger.warning("GPU %d has MIG enabled but no MIG instances: no devices", nvml_index)
        return units

    def devices(self) -> list[GpuDevice]:
        """Return the devices found at start-up (a new list each call)."""
        return list(self._devices)

    def device_numbers(self) -> list[DeviceNumber | None]:
        return list(self._numbers)

    def sample(self) -> list[GpuSample]:
        """Query every device; a device whose query fails is reported unhealthy."""
        with self._lock:
            if self._closed:
                raise RuntimeError("NVML backend is closed")
            samples = [self._sample_one(i, h) for i, h in enumerate(self._handles)]
        for sample in samples:
            self._log_health_change(sample)
        return samples

    def _sample_one(self, index: int, handle: Any) -> GpuSample:
        nvml = self._nvml
        try:
            memory_used = int(nvml.nvmlDeviceGetMemoryInfo(handle).used)
            utilization = self._utilization(handle)
            processes = self._processes(handle)
        except nvml.NVMLError as exc:
            error = _text(exc) or type(exc).__name__
            return GpuSample(index=index, healthy=False, error=shorten(error, MAX_NAME_LEN))
        return GpuSample(
            index=index,
            utilization_pct=utilization,
            memory_used_bytes=memory_used,
            processes=processes,
        )

    def _utilization(self, handle: Any) -> int:
        """GPU busy percentage, -1 where NVML does not support it (e.g. MIG instances)."""
        try:
            return int(self._nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except self._nvml.NVMLError_NotSupported:
            return -1

    def _processes(self, handle: Any) -> list[GpuProcess]:
        """Compute and graphics processes on a device, one entry per pid, ordered by pid.

        Listings NVML refuses (not supported, no permission, e.g. MIG without root) count as empty.
        """
        nvml = self._nvml
        mismatch = getattr(nvml, "NVMLLibraryMismatchError", nvml.NVMLError_FunctionNotFound)
        queries = [nvml.nvmlDeviceGetComputeRunningProcesses]
        if hasattr(nvml, "nvmlDeviceGetGraphicsRunningProcesses"):
            queries.append(nvml.nvmlDeviceGetGraphicsRunningProcesses)
        memory_by_pid: dict[int, object] = {}
        for query in queries:
            try:
                infos = query(handle)
            except (nvml.NVMLError_NotSupported, nvml.NVMLError_NoPermission, mismatch):
                continue
            for info in infos:
                memory_by_pid.setdefault(int(info.pid), getattr(info, "usedGpuMemory", None))
        return [_describe_process(pid, memory_by_pid[pid]) for pid in sorted(memory_by_pid)]

    def _log_health_change(self, sample: GpuSample) -> None:
        if not sample.healthy and sample.index not in self._unhealthy:
            self._unhealthy.add(sample.index)
            logger.warning("GPU %d is unhealthy: %s", sample.index, sample.error)
        elif sample.healthy and sample.index in self._unhealthy:
            self._unhealthy.discard(sample.index)
            logger.info("GPU %d is healthy again", sample.index)

    def close(self) -> None:
        """Shut NVML down; later calls do nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError as exc:
                logger.warning("nvmlShutdown failed: %s", exc)


def detect_gpus(
    *, fake_count: int | None, node_name: str, fault_file: Path | None = None
) -> GpuBackend:
    """Choose the node's GPU backend.

    With ``fake_count`` (the agent's ``--gpu-count``) return ``FakeGpuBackend(fake_count,
    node_name, fault_file=fault_file)`` (ValueError if out of range), warning if NVML sees real
    GPUs that are thereby ignored. Otherwise return an :class:`NvmlBackend`, or, if NVML is
    unavailable, a backend of kind "none" with no devices. Never raises because of NVML.
    """
    if fake_count is not None:
        backend = FakeGpuBackend(fake_count, node_name, fault_file=fault_file)
        logger.info("using %d fake GPU(s) (--gpu-count)", fake_count)
        try:
            probe = NvmlBackend()
        except NvmlUnavailableError:
            return backend
        real_count = len(probe.devices())
        probe.close()
        if real_count:
            logger.warning(
                "%d real GPU device(s) found by NVML are ignored because --gpu-count was given",
                real_count,
            )
        return backend
    try:
        return NvmlBackend()
    except NvmlUnavailableError as exc:
        logger.info("NVML unavailable (%s): no GPUs", exc)
        return FakeGpuBackend(0, node_name, kind="none")
