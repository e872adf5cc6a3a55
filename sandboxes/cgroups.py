"""A memory and process cap for a whole local sandbox, where the kernel lets us set one (root).

Why: rlimits are per process. ``RLIMIT_AS`` stops one process from taking more than its share, and
``RLIMIT_NPROC`` bounds how many there are, but their product (64 processes x 1 GiB) is more than a
training host can spare. When the harness runs as root and the cgroup filesystem is writable, each
harness moves itself into a cgroup of its own with ``memory`` and ``pids`` limits; bubblewrap, the
zygote and every candidate inherit it, so a fork-and-allocate bomb is stopped (OOM-killed inside
the cgroup) before the host notices. Docker containers get the same from the engine.

Works with cgroup v2 (``memory.max``, ``pids.max``) and v1 (``memory.limit_in_bytes``,
``pids.max`` in separate hierarchies). Without root or a writable cgroupfs this does nothing and
the rlimits remain the only bound.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


def _own_paths() -> dict[str, str]:
    """controller -> this process's cgroup path ("" key for the v2 unified hierarchy)."""
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            paths[name] = path
    return paths


def _targets() -> list[tuple[Path, dict[str, str]]]:
    """``(directory to create under, {file: which limit})`` for each hierarchy we can use."""
    paths = _own_paths()
    if (ROOT / "cgroup.controllers").exists():  # pure v2
        base = ROOT / paths.get("", "/").lstrip("/")
        return [(base, {"memory.max": "memory", "pids.max": "pids"})]
    targets = []
    if "memory" in paths and (ROOT / "memory").is_dir():
        targets.append((ROOT / "memory" / paths["memory"].lstrip("/"), {"memory.limit_in_bytes": "memory"}))
    if "pids" in paths and (ROOT / "pids").is_dir():
        targets.append((ROOT / "pids" / paths["pids"].lstrip("/"), {"pids.max": "pids"}))
    return targets


def confine(memory_mb: int, pids: int) -> list[Path]:
    """Move this process into fresh cgroups with the given limits; returns what to remove later."""
    if os.geteuid() != 0:
        return []
    created: list[Path] = []
    values = {"memory": str(memory_mb << 20), "pids": str(pids)}
    for base, files in _targets():
        group = base / f"k2rl-sandbox-{os.getpid()}"
        try:
            group.mkdir(exist_ok=True)
            created.append(group)
            for name, which in files.items():
                (group / name).write_text(values[which])
            (group / "cgroup.procs").write_text(str(os.getpid()))
        except OSError:
            continue
    return created


def release(created: list[Path]) -> None:
    """Leave the cgroups made by :func:`confine` (back to the parent) and remove them."""
    for group in created:
        try:
            (group.parent / "cgroup.procs").write_text(str(os.getpid()))
            group.rmdir()
        except OSError:
            pass


class OomKills:
    """The kernel's OOM-kill count in the cgroups made by :func:`confine`, read twice per job.

    The counter files are opened once and re-read with ``pread``, so no path lookup (nor a failed
    open for the controller a hierarchy lacks) is repeated on every job.
    """

    def __init__(self, created: list[Path]):
        self.fds: list[int] = []
        for group in created:
            for name in ("memory.events", "memory.oom_control"):  # cgroup v2, v1
                try:
                    self.fds.append(os.open(group / name, os.O_RDONLY | os.O_CLOEXEC))
                    break
                except OSError:
                    continue

    def count(self) -> int:
        total = 0
        for fd in self.fds:
            try:
                text = os.pread(fd, 4096, 0)
            except OSError:
                continue
            for line in text.splitlines():
                key, _, value = line.partition(b" ")
                if key == b"oom_kill" and value.strip().isdigit():
                    total += int(value)
        return total

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()
