"""Real GPUs through NVML (``pynvml``, from the ``nvidia-ml-py`` package, imported lazily).

Whole GPUs are numbered in PCI bus order, so a whole GPU's ``visible_id`` (its NVML index)
matches CUDA only when jobs run with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``. MIG instances are
addressed by their UUID instead. Each device's ``model`` is its name normalised
(:func:`mgpu_core.gputypes.normalise`: "NVIDIA H100 80GB HBM3" is "h100"), a MIG instance's
its profile ("NVIDIA H100 80GB HBM3 MIG 1g.10gb" is "1g.10gb"), with its GPU's UUID and number
(``parent_uuid``, ``parent_index``: the GPU's position in PCI order on the node). A GPU with MIG
on offers only its instances; one with MIG off is one whole device. gpus.py chooses
between this backend and fake GPUs.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import psutil

from mgpu_core.gputypes import mig_profile, normalise
from mgpu_core.limits import MAX_NAME_LEN, shorten
from mgpu_core.models import GpuDevice, GpuProcess, GpuSample

logger = logging.getLogger(__name__)

# The NVIDIA driver's character devices: /dev/nvidiaN is (195, N); /dev/nvidiactl is (195, 255).
NVIDIA_MAJOR = 195
DeviceNumber = tuple[int, int]  # (major, minor) of a character device


class NvmlUnavailableError(RuntimeError):
    """NVML could not be loaded, initialised or queried; the message says why."""


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
        for physical, (bus_id, nvml_index, handle) in enumerate(gpus):
            try:
                units = self._units(nvml_index, handle)
                parent_uuid = _text(nvml.nvmlDeviceGetUUID(handle)) if units else ""
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
                is_slice = visible_id is None
                device = GpuDevice(
                    index=index,
                    uuid=uuid,
                    name=name,
                    # The type jobs ask for: the model (--gres=gpu:h100:1), a slice's profile
                    # (--gres=gpu:1g.10gb:1; "NVIDIA H100 80GB HBM3 MIG 1g.10gb").
                    model=mig_profile(name) if is_slice else normalise(name),
                    memory_total_bytes=memory,
                    visible_id=visible_id or uuid,
                    fake=False,
                    parent_uuid=parent_uuid if is_slice else "",
                    parent_index=physical if is_slice else -1,
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
