"""The bubblewrap command that starts one local sandbox (the zygote as PID 1 of fresh namespaces).

What the candidate sees: read-only ``/usr`` (and the ``/lib*``, ``/bin`` links or binds of the host
layout), the trimmed interpreter at ``/opt/python``, a private ``/proc`` and minimal ``/dev``, and a
size-capped tmpfs at ``/tmp`` and ``/dev/shm`` (the only writable places) -- nothing else of the host: no ``/etc``, no home directories, no
``/run`` or ``/var`` (so no ``docker.sock``), no environment variables but the few set here, no
network interfaces but its own loopback, no other processes, and no way to create further user
namespaces (``--disable-userns``). When the caller is root, bubblewrap is
started as ``nobody`` so the sandbox's processes are not host-root for rlimit purposes
(``RLIMIT_NPROC`` is ignored for uid 0) or for file permissions.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from k2rl.errors import K2RLError
from k2rl.sandboxes.runtime import SANDBOX_ENV, SANDBOX_PREFIX, python_runtime, zygote_command

NOBODY = 65534


def bwrap_binary() -> str:
    found = shutil.which("bwrap") or ("/usr/bin/bwrap" if os.path.exists("/usr/bin/bwrap") else None)
    if not found:
        raise K2RLError("the local sandbox needs bubblewrap: install the 'bubblewrap' package (bwrap)")
    return found


def _system_dirs() -> list[str]:
    """Bind or link the host's /bin, /lib* like the host has them (merged-/usr or not)."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), f"/{name}"]
        elif path.is_dir():
            args += ["--ro-bind", str(path), f"/{name}"]
    return args


def bwrap_command(tmp_mb: int, role: str = "candidate") -> tuple[list[str], dict]:
    """``(argv, popen_kwargs)`` for one sandbox running the zygote (a candidate's or the judge's).

    The root and ``/dev`` are remounted read-only once set up, so ``/tmp`` and ``/dev/shm`` (both
    size-capped tmpfs, emptied after every job) are the only writable places.
    """
    args = [bwrap_binary(), "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session", "--as-pid-1",
            "--hostname", "sandbox"]
    args += _system_dirs()
    args += ["--ro-bind", str(python_runtime()), SANDBOX_PREFIX,
             "--proc", "/proc", "--dev", "/dev",
             "--size", str(tmp_mb << 20), "--perms", "1777", "--tmpfs", "/tmp",
             "--size", str(tmp_mb << 20), "--perms", "1777", "--tmpfs", "/dev/shm",
             "--remount-ro", "/dev", "--remount-ro", "/",
             "--chdir", "/tmp", "--clearenv"]
    for key, value in SANDBOX_ENV.items():
        args += ["--setenv", key, value]
    kwargs: dict = {}
    if os.geteuid() == 0:
        kwargs = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
    return args + zygote_command(role), kwargs
