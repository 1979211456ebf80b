"""What decides a run's floating-point rounding, recorded with every stretch of work it does.

The same code, model and edits give slightly different numbers under another CPU kernel set (torch's
``ATEN_CPU_CAPABILITY``: AVX-512, AVX2 or plain C++), another BLAS instruction set
(``MKL_ENABLE_INSTRUCTIONS``), another thread count (the order of a sum) or other deterministic-mode
flags. The store keeps these for the baseline and for each start or resume of a method, so a page
can say how its numbers were obtained and a resume under other settings says so.
"""

from __future__ import annotations

import os
from typing import Any

#: environment variables that change the kernels torch or its BLAS pick, recorded where set
KERNEL_VARIABLES = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR")


def current_numerics(device: Any) -> dict[str, object]:
    """The settings of this process that decide rounding on ``device`` (a ``torch.device``). torch
    is imported here only: the reports read these records without it."""
    import torch

    numerics: dict[str, object] = {
        "device_type": device.type,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        numerics["cudnn_deterministic"] = bool(torch.backends.cudnn.deterministic)
        numerics["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
    environment = {name: os.environ[name] for name in KERNEL_VARIABLES if os.environ.get(name)}
    if environment:
        numerics["environment"] = environment
    return numerics


def numerics_difference(before: dict[str, object], now: dict[str, object]) -> str | None:
    """``"threads 2 -> 1, cpu_capability AVX512 -> AVX2"`` where the two differ, else None. The
    session's code hash is not numerics: a run resumed under other code is the runner's to stop."""
    keys = sorted((set(before) | set(now)) - {"code"})
    changed = [
        f"{k} {before.get(k, '-')} -> {now.get(k, '-')}"
        for k in keys
        if before.get(k) != now.get(k)
    ]
    return ", ".join(changed) or None


def describe_numerics(numerics: dict[str, object]) -> str:
    """One short phrase for a page or a log line: ``AVX512 kernels, 2 threads``."""
    parts = [
        f"{numerics.get('cpu_capability', '?')} kernels",
        f"{numerics.get('threads', '?')} thread(s)",
    ]
    if numerics.get("deterministic"):
        parts.append("deterministic algorithms")
    parts += [f"{name}={value}" for name, value in dict(numerics.get("environment") or {}).items()]
    if numerics.get("code"):  # the session's code hash (core/identity.py)
        parts.append(f"code {numerics['code']}")
    return ", ".join(parts)
