"""The vLLM engine as a child process of the run: started from the recipe, stopped with the run.

vLLM pins a transformers release the trainer cannot use, so the engine runs under its own
interpreter (``.venv-vllm``, built by ``scripts/setup.sh``) executing :mod:`k2rl.rollouts.vllm_worker`.
The two talk over an authenticated local socket; weights go through a safetensors file in shared
memory (``/dev/shm`` where it exists), which the engine maps instead of copying through a pipe.

Every way the engine can fail -- environment missing, start-up refused, a request failing, the process
dying -- reaches the user as one ``k2rl: error:`` line naming the log file with vLLM's own output.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
import threading
import time
from multiprocessing.connection import Listener
from pathlib import Path

from k2rl.errors import K2RLError

WORKER = Path(__file__).with_name("vllm_worker.py")
REPO_ROOT = Path(__file__).resolve().parent.parent
# One thread, an in-process engine core (no extra process inside ours), a small KV cache, nothing online.
ENGINE_ENV = {
    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
}
# vLLM's CPU MLA kernel takes only DeepSeek's latent width (kv_lora_rank 512 + rope 64).
CPU_MLA_WIDTH = 576


def vllm_python(explicit: str | None = None) -> Path | None:
    """The vLLM environment's interpreter: ``explicit``, else ``$K2RL_VLLM_PYTHON``, else ``.venv-vllm`` in the repo."""
    if explicit:
        if not Path(explicit).is_file():
            raise K2RLError(f"rollout.vllm_python: {explicit} does not exist (build it with scripts/setup.sh)")
        return Path(explicit)
    for candidate in (os.environ.get("K2RL_VLLM_PYTHON"), REPO_ROOT / ".venv-vllm" / "bin" / "python"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def mla_fallback(config: dict, cpu: bool) -> bool:
    """Whether vLLM must run a DeepSeek-family model without its MLA kernel (``VLLM_MLA_DISABLE=1``):
    on CPU, when the latent width is not the one kernel's."""
    if not cpu or config.get("kv_lora_rank") is None:
        return False
    return config["kv_lora_rank"] + config.get("qk_rope_head_dim", 0) != CPU_MLA_WIDTH


class VLLMEngine:
    """``start`` once, then ``generate`` / ``push``; ``close`` (or the run's end) stops the process."""

    def __init__(self, model_dir: str | os.PathLike, *, eos_token_ids: list[int], max_model_len: int, max_num_seqs: int,
                 seed: int = 0, compile: bool = False, python: str | None = None, log_path: str | os.PathLike | None = None,
                 start_timeout_s: float = 900.0):
        self.python = vllm_python(python)
        if self.python is None:
            raise K2RLError("rollout.backend=vllm: no vLLM environment (.venv-vllm); build it with scripts/setup.sh "
                            "or point rollout.vllm_python / K2RL_VLLM_PYTHON at one")
        self.model_dir = Path(model_dir)
        self.log_path = Path(log_path) if log_path else self.model_dir.parent / "vllm_engine.log"
        self.start_timeout_s = start_timeout_s
        self._options = {"model": str(self.model_dir), "dtype": "float32", "max_model_len": max_model_len,
                         "max_num_seqs": max_num_seqs, "seed": seed, "compile": compile,
                         "eos_token_ids": list(eos_token_ids)}
        self.process: subprocess.Popen | None = None
        self._lock = threading.Lock()  # one request at a time (rollouts ahead run on another thread)
        self.connection = None
        self.info: dict = {}
        shm = Path("/dev/shm")
        self._scratch = Path(tempfile.mkdtemp(prefix="k2rl-vllm-", dir=shm if shm.is_dir() else None))

    # ------------------------------------------------------------------ lifecycle
    def start(self, cpu: bool | None = None) -> dict:
        """Start the process and the engine in it (``cpu``: whether vLLM runs on CPU; default: no CUDA here)."""
        import json

        import torch

        cpu = not torch.cuda.is_available() if cpu is None else cpu
        key = secrets.token_bytes(32)
        address = str(self._scratch / "socket")
        listener = Listener(address, family="AF_UNIX", authkey=key)
        env = {**os.environ, **ENGINE_ENV, "K2RL_VLLM_ADDRESS": address, "K2RL_VLLM_KEY": key.hex()}
        env.pop("PYTHONPATH", None)  # the trainer's packages must not shadow the engine's
        config = json.loads((self.model_dir / "config.json").read_text())
        if mla_fallback(config, cpu):
            env["VLLM_MLA_DISABLE"] = "1"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([str(self.python), str(WORKER)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        log.close()
        accepted: dict = {}
        waiter = threading.Thread(target=lambda: accepted.update(connection=listener.accept()), daemon=True)
        waiter.start()
        deadline = time.monotonic() + 120.0  # the worker connects before it imports vLLM
        while waiter.is_alive() and self.process.poll() is None and time.monotonic() < deadline:
            waiter.join(0.2)
        listener.close()
        self.connection = accepted.get("connection")
        if self.connection is None:
            self._stop()
            raise K2RLError(f"the vLLM engine did not start ({self._last_log_line()}); see {self.log_path}")
        self.info = {**self._request("start", timeout=self.start_timeout_s, **self._options), "pid": self.process.pid}
        return self.info

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        if self.connection is not None:
            try:
                self.connection.send({"command": "close"})
                if self.connection.poll(30):
                    self.connection.recv()
            except (OSError, EOFError):
                pass
            self.connection.close()
            self.connection = None
        if self.process is not None:
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        for leftover in self._scratch.glob("*"):
            leftover.unlink(missing_ok=True)
        if self._scratch.exists():
            self._scratch.rmdir()

    def __enter__(self) -> "VLLMEngine":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ------------------------------------------------------------------ requests
    def generate(self, contexts: list[list[int]], max_tokens: list[int], temperature: float, top_p: float = 1.0,
                 top_k: int | None = None, seed: int | None = None) -> list[tuple[list[int], list[float]]]:
        reply = self._request("generate", contexts=contexts, max_tokens=max_tokens, temperature=temperature,
                              top_p=top_p, top_k=top_k, seed=seed)
        return [(list(ids), list(logprobs)) for ids, logprobs in reply["results"]]

    def push(self, tensors: dict) -> dict:
        """Load ``tensors`` (checkpoint names, as vLLM's ``load_weights`` reads them) into the running engine."""
        from safetensors.torch import save_file

        started = time.perf_counter()
        path = self._scratch / "push.safetensors"
        save_file({name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}, str(path))
        written = time.perf_counter() - started
        try:
            reply = self._request("push", path=str(path))
        finally:
            path.unlink(missing_ok=True)
        return {**reply, "write_s": round(written, 4), "push_s": round(time.perf_counter() - started, 4)}

    def _request(self, command: str, timeout: float | None = None, **payload) -> dict:
        with self._lock:
            return self._exchange(command, timeout, payload)

    def _exchange(self, command: str, timeout: float | None, payload: dict) -> dict:
        if self.connection is None:
            raise K2RLError("the vLLM engine is not running")
        try:
            self.connection.send({"command": command, **payload})
            while not self.connection.poll(1.0):
                if self.process.poll() is not None:
                    raise EOFError
                if timeout is not None and (timeout := timeout - 1.0) <= 0:
                    raise K2RLError(f"the vLLM engine did not answer '{command}' in time; see {self.log_path}")
            reply = self.connection.recv()
        except (OSError, EOFError) as exc:
            code = self.process.poll() if self.process else None
            self.connection = None
            raise K2RLError(f"the vLLM engine stopped during '{command}' (exit code {code}: {self._last_log_line()}); "
                            f"see {self.log_path}") from exc
        if not reply.pop("ok"):
            raise K2RLError(f"the vLLM engine refused '{command}': {reply['error']}; see {self.log_path}")
        return reply

    def _last_log_line(self) -> str:
        try:
            lines = [line.strip() for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return "no log"
        errors = [line for line in lines if "Error" in line or "error" in line]
        return (errors or lines or ["no output"])[-1][:300]

