"""The Python runtime the sandboxes run: a trimmed copy of the host interpreter, always at /opt/python.

Why a copy instead of binding the host interpreter where it lives: the host prefix may sit under a
home directory the sandbox user cannot traverse (``/root/.pyenv/...``), it carries site-packages the
candidate has no business importing, and the Docker image needs the same files anyway. Both backends
therefore see the same interpreter at ``/opt/python`` (``LD_LIBRARY_PATH=/opt/python/lib``) with the
standard library only, and the zygote source is handed to it on the command line.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

from k2rl.errors import K2RLError

SANDBOX_PREFIX = "/opt/python"
SANDBOX_PYTHON = f"{SANDBOX_PREFIX}/bin/python3"
SANDBOX_ENV = {
    "LD_LIBRARY_PATH": f"{SANDBOX_PREFIX}/lib",
    "PATH": f"{SANDBOX_PREFIX}/bin:/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONIOENCODING": "utf-8",
}
# Parts of the standard library a candidate never needs; they only make the copy larger.
_SKIP = {"site-packages", "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3"}
_HERE = Path(__file__).resolve().parent


# What each kind of sandbox runs: the candidate's (the program) and the judge's (the tests, see
# :mod:`k2rl.sandboxes.judge`). Neither holds the other's code.
SOURCES = {"candidate": ("wire.py", "candidate.py", "zygote.py"),
           "judge": ("wire.py", "verdict.py", "session.py", "candidate.py", "judge.py", "zygote.py")}


def zygote_source(role: str = "candidate") -> str:
    """The program a sandbox interpreter runs: the wire format, the side it plays, then the zygote."""
    return "\n".join((_HERE / name).read_text() for name in SOURCES[role])


def zygote_command(role: str = "candidate") -> list[str]:
    return [SANDBOX_PYTHON, "-I", "-S", "-B", "-c", zygote_source(role)]


def _cache_root() -> Path:
    if os.environ.get("K2RL_SANDBOX_CACHE"):
        return Path(os.environ["K2RL_SANDBOX_CACHE"])
    if os.geteuid() == 0:  # root: a root-owned place the unprivileged sandbox user can read
        return Path("/var/cache/k2rl")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "k2rl"


def _ignore(directory: str, names: list[str]) -> set[str]:
    if os.path.basename(directory) == f"python{sys.version_info[0]}.{sys.version_info[1]}":
        return {n for n in names if n in _SKIP or n.startswith("config-")}
    return set()


def python_runtime() -> Path:
    """A world-readable copy of this interpreter and its standard library (made once, then reused)."""
    prefix = Path(sys.base_prefix)
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    tag = f"python-{sys.version.split()[0]}-{hashlib.sha256(str(prefix).encode()).hexdigest()[:10]}"
    target = _cache_root() / tag
    if (target / "bin" / "python3").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(target.parent, 0o755)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        binary = Path(sys.executable).resolve()
        if not binary.name.startswith("python"):
            raise K2RLError(f"cannot find the interpreter binary behind {sys.executable}")
        (staging / "bin").mkdir()
        shutil.copy2(binary, staging / "bin" / "python3")
        shutil.copytree(prefix / "lib" / f"python{version}", staging / "lib" / f"python{version}",
                        ignore=_ignore, symlinks=True)
        # LIBDIR is where the interpreter was built to live; an interpreter moved since (the one in
        # the service image, at /opt/python) keeps its shared library next to its stdlib instead.
        libdirs = {Path(sysconfig.get_config_var("LIBDIR") or prefix / "lib"), prefix / "lib"}
        for lib in sorted({lib.name: lib for d in libdirs for lib in d.glob("libpython*.so*")}.values()):
            shutil.copy2(lib, staging / "lib" / lib.name, follow_symlinks=True)
        for root, dirs, files in os.walk(staging):
            os.chmod(root, 0o755)
            for name in files:
                path = os.path.join(root, name)
                if not os.path.islink(path):
                    os.chmod(path, 0o755 if os.access(path, os.X_OK) else 0o644)
        os.chmod(staging, 0o755)
        try:
            os.rename(staging, target)
        except OSError:  # another process finished first; use theirs
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
