"""Several processes, one run: who writes the run directory, and when the others wait.

``accelerate launch`` (or ``torchrun``) starts the whole recipe once per process. The trainers
(TRL/HF) already shard batches and all-reduce gradients; what the recipe itself must add is that
files are written once (by the main process) and that the other processes wait for files they read
(the built policy, the warm-started model) and agree on one run directory.

On a machine without CUDA the process group is gloo (``PartialState(cpu=True)``), the same choice the
Trainer makes with ``use_cpu=True``. Outside a launcher everything here is a no-op.
"""

from __future__ import annotations

import torch
from accelerate import PartialState


def state() -> PartialState:
    return PartialState(cpu=not torch.cuda.is_available())


def is_main() -> bool:
    return state().is_main_process


def wait_for_everyone() -> None:
    state().wait_for_everyone()


def from_main(compute):
    """``compute()`` on the main process only; every process gets its result (picklable)."""
    current = state()
    if current.num_processes == 1:
        return compute()
    value = [compute() if current.is_main_process else None]
    torch.distributed.broadcast_object_list(value, src=0)
    return value[0]
