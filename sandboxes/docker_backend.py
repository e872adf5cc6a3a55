"""Docker backend: the same zygote as the local backend, as PID 1 of a locked-down container.

Each pool slot's harness starts two containers, the candidate's and the judge's
(``network_mode="none"``, memory/pids/CPU limits, read-only root with size-capped ``/tmp`` and
``/dev/shm``, uid 65534, all capabilities dropped, ``no-new-privileges``, no logs kept) and talks to
each zygote over a Unix socket (see :func:`start_container`). The containers are created with
``auto_remove``: when the harness goes away, even by SIGKILL, the zygote sees end-of-input, exits,
and the container disappears.

The default image is built offline by :func:`build_image` (``k2rl sandbox build-image``): a root
filesystem holding the same trimmed interpreter the local backend uses, the shared libraries it
links against, and ``/bin/sh`` with a few coreutils, imported with ``docker import``. No registry.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import socket
import struct
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from k2rl.errors import K2RLError
from k2rl.sandboxes.runtime import SANDBOX_ENV, SANDBOX_PREFIX, python_runtime, zygote_command
from k2rl.sandboxes.zygote import SOCKET_ENV

REPOSITORY = "k2rl-sandbox"
IMAGE_VERSION = 2  # bump when the root filesystem's recipe changes
LABEL = "k2rl.sandbox"
_TOOLS = ("sh", "echo", "cat", "ls", "true", "false", "sleep", "env", "mkdir", "rm", "cp", "wc", "head")
SANDBOX_UID = 65534
_LINK_DIR = "/run/k2rl"  # where the container sees the harness's socket (read-only)
_LIB_DIRS = "/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu:/lib64:/usr/lib64:/lib:/usr/lib"


def _client():
    try:
        import docker
    except ImportError:
        raise K2RLError("the docker backend needs the Docker SDK: pip install 'k2rl[docker]'") from None
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure here means "no usable engine"
        raise K2RLError(f"cannot reach the Docker engine ({type(exc).__name__}); start dockerd "
                        "(in CI: bash .ci/setup-docker.sh)") from None
    return client


def default_image() -> str:
    """Tag derived from the interpreter, so a different Python gets a different image."""
    runtime = python_runtime()
    digest = hashlib.sha256(f"{runtime.name}|{_TOOLS}|{IMAGE_VERSION}".encode()).hexdigest()[:12]
    return f"{REPOSITORY}:{digest}"


def _shared_libraries(paths: list[str]) -> set[str]:
    found: set[str] = set()
    for path in paths:
        try:
            out = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        for line in out.splitlines():
            parts = line.split()
            for part in parts:
                if part.startswith("/") and os.path.exists(part):
                    found.add(part)
    return found


def _add_file(tar: tarfile.TarFile, source: str, dest: str) -> None:
    info = tar.gettarinfo(os.path.realpath(source), arcname=dest.lstrip("/"))
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    with open(os.path.realpath(source), "rb") as handle:
        tar.addfile(info, handle)


def _add_text(tar: tarfile.TarFile, dest: str, text: str, mode: int = 0o644) -> None:
    data = text.encode()
    info = tarfile.TarInfo(dest.lstrip("/"))
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, dest: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(dest.lstrip("/"))
    info.type, info.mode = tarfile.DIRTYPE, mode
    tar.addfile(info)


def _rootfs(path: Path) -> None:
    runtime = python_runtime()
    tools = [p for p in (f"/bin/{t}" for t in _TOOLS) if os.path.exists(p)]
    binaries = [str(runtime / "bin" / "python3"), *map(str, runtime.glob("lib/libpython*.so*")),
                *map(str, runtime.glob("lib/python*/lib-dynload/*.so")), *tools]
    with tarfile.open(path, "w") as tar:
        for directory in ("bin", "etc", "tmp", "opt", "proc", "dev", "sys", "usr", "usr/bin"):
            _add_dir(tar, directory, 0o1777 if directory == "tmp" else 0o755)
        for root, dirs, files in os.walk(runtime):
            rel = os.path.relpath(root, runtime)
            dest = SANDBOX_PREFIX if rel == "." else f"{SANDBOX_PREFIX}/{rel}"
            _add_dir(tar, dest)
            for name in files:
                _add_file(tar, os.path.join(root, name), f"{dest}/{name}")
        for lib in sorted(_shared_libraries(binaries)):
            if not lib.startswith(str(runtime)) and not os.path.basename(lib).startswith("libpython"):
                _add_file(tar, lib, lib)
        for tool in tools:
            _add_file(tar, tool, tool)
        _add_text(tar, "/etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/tmp:/bin/sh\n")
        _add_text(tar, "/etc/group", "root:x:0:\nnogroup:x:65534:\n")


def image_exists(client, image: str) -> bool:
    import docker

    try:
        client.images.get(image)
        return True
    except docker.errors.ImageNotFound:
        return False


def build_image(image: str | None = None, force: bool = False) -> str:
    """Build (or reuse) the default sandbox image offline; returns its tag."""
    client = _client()
    image = image or default_image()
    if not force and image_exists(client, image):
        return image
    repository, _, tag = image.partition(":")
    with tempfile.TemporaryDirectory(prefix="k2rl-rootfs-") as tmp:
        tar_path = Path(tmp) / "rootfs.tar"
        _rootfs(tar_path)
        client.api.import_image_from_file(str(tar_path), repository=repository, tag=tag or "latest")
    if not image_exists(client, image):
        raise K2RLError(f"docker import did not produce {image}")
    return image


def _listen() -> tuple[socket.socket, str]:
    """A Unix socket only uid 65534 (the containers' user) may connect to, in a fresh directory."""
    directory = tempfile.mkdtemp(prefix="k2rl-zygote-")
    os.chmod(directory, 0o711)
    path = os.path.join(directory, "zygote.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    os.chmod(path, 0o600)
    if os.geteuid() == 0:
        os.chown(path, SANDBOX_UID, SANDBOX_UID)
    else:
        os.chmod(path, 0o666)  # the engine maps the container's uid; the peer is checked on accept
    listener.listen(1)
    return listener, directory


def _accept(listener: socket.socket, container, deadline: float) -> socket.socket:
    """The zygote's connection; anyone else (a wrong uid) is turned away."""
    while True:
        listener.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            conn, _ = listener.accept()
        except socket.timeout:
            raise K2RLError("the sandbox container did not connect in time") from None
        pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        if uid == SANDBOX_UID or os.geteuid() != 0:
            conn.settimeout(None)
            return conn
        conn.close()


def start_container(config: dict, role: str = "candidate"):
    """A started container running the zygote (the candidate's or the judge's), and our socket to it.

    The channel is a Unix socket the zygote connects to through a read-only bind mount, not the
    attach stream: a Unix socket can carry descriptors, so the judge and the candidate talk on a
    socket of their own, as with the local backend. The listener is gone before any job runs.
    """
    client = _client()
    options, limits = config["docker"], config["limits"]
    image = options.get("image") or default_image()
    if not image_exists(client, image):
        if options.get("image"):
            raise K2RLError(f"docker image {image} not found")
        build_image(image)
    env = {**SANDBOX_ENV, "LD_LIBRARY_PATH": f"{SANDBOX_PREFIX}/lib:{_LIB_DIRS}", SOCKET_ENV: f"{_LINK_DIR}/zygote.sock"}
    listener, directory = _listen()
    try:
        container = client.containers.create(
            image, command=zygote_command(role), stdin_open=False, detach=True, tty=False,
            network_mode="none", mem_limit=f"{limits['sandbox_memory_mb']}m",
            memswap_limit=f"{limits['sandbox_memory_mb']}m", pids_limit=limits["pids"], nano_cpus=int(options["cpus"] * 1e9), read_only=True,
            tmpfs={"/tmp": f"size={limits['tmp_mb']}m,mode=1777"}, shm_size=f"{limits['tmp_mb']}m",
            user=f"{SANDBOX_UID}:{SANDBOX_UID}", cap_drop=["ALL"],
            security_opt=["no-new-privileges"], environment=env, working_dir="/tmp", hostname="sandbox",
            volumes={directory: {"bind": _LINK_DIR, "mode": "ro"}}, log_config={"type": "none"},
            auto_remove=True, labels={LABEL: str(os.getpid())}, ipc_mode="private")  # value: the owning harness
        container.start()
        sock = _accept(listener, container, time.monotonic() + 120.0)
    finally:
        listener.close()
        shutil.rmtree(directory, ignore_errors=True)
    container._k2rl_client = client
    return container, sock


def stop_container(container) -> None:
    try:
        container.kill()
    except Exception:  # noqa: BLE001 - already gone (auto_remove) is fine
        pass
    sock = getattr(container, "_k2rl_sock", None)
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass


def remove_leftovers() -> int:
    """Kill every container this package started (by label); returns how many."""
    client = _client()
    count = 0
    for container in client.containers.list(all=True, filters={"label": LABEL}):
        try:
            container.remove(force=True)
            count += 1
        except Exception:  # noqa: BLE001
            pass
    return count
