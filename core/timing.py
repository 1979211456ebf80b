"""Wall time per phase and peak memory, measured the same way for every method.

GPU work is asynchronous, so each phase synchronises CUDA before reading the clock. Peak memory is
CUDA's peak allocation on a GPU; on a CPU it is the peak resident set size, sampled by a
background thread because the process-wide ``ru_maxrss`` cannot be reset between methods.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import psutil
import torch

from .records import PhaseTime


class MemoryMonitor:
    """Peak memory since the last :meth:`reset`, for the device the run uses."""

    def __init__(self, device: torch.device, interval: float = 0.02) -> None:
        self.device = device
        self.interval = interval
        self._process = psutil.Process()
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> MemoryMonitor:
        if self.device.type != "cuda":
            self._thread = threading.Thread(target=self._sample, daemon=True, name="editbench-rss")
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._process.memory_info().rss)
            self._stop.wait(self.interval)

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self._peak = self._process.memory_info().rss

    def peak_bytes(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        self._peak = max(self._peak, self._process.memory_info().rss)
        return self._peak


class PhaseTimer:
    """Collects :class:`PhaseTime` records; ``drain`` hands them to the store at a checkpoint."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._pending: list[PhaseTime] = []

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def phase(self, name: str, step: int = 0) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self._pending.append(PhaseTime(name, step, time.perf_counter() - start))

    def record(self, name: str, step: int, seconds: float) -> None:
        """A duration measured elsewhere (a probe's forward passes, say)."""
        self._pending.append(PhaseTime(name, step, seconds))

    def drain(self) -> list[PhaseTime]:
        pending, self._pending = self._pending, []
        return pending


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {psutil.cpu_count()} cores)"
