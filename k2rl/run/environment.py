"""What a run was computed on, recorded in its summary so two runs can be compared.

The same recipe and seed give different floating-point summation orders with a different thread
count or CPU instruction set, and different code paths with other package versions; a figure is
only comparable with another when these fields match.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform

import torch

PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "math-verify")
ISA_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "OMP_NUM_THREADS")


def _cpuinfo(field: str) -> str | None:
    """The first ``field`` line of /proc/cpuinfo (None where there is no such file or line)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags (avx2, avx512f, amx_tile, ...); empty where the OS does not say."""
    return set((_cpuinfo("flags") or "").split())


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    """Package versions, Python, device, CPU name and instruction set, thread count, ISA overrides."""
    return {
        "packages": {name: _version(name) for name in PACKAGES},
        "python": platform.python_version(),
        "device": f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu",
        "cpu": cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "isa_overrides": {name: os.environ[name] for name in ISA_VARIABLES if name in os.environ},
    }
