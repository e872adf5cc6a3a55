"""Numeric precision, decided in one place from the device.

On a CPU k2rl always computes in float32: bf16 is emulated on many CPUs (an order of magnitude
slower) and where it is native its rounding differs from one instruction set to the next, so a run
tuned on one machine would not reproduce on another. On an accelerator TRL's defaults stand.
"""

from __future__ import annotations

import torch
from transformers import TrainingArguments

from k2rl.errors import K2RLError

# transformers 5.x renamed gradient_checkpointing (kept as a deprecated alias that warns when set).
_CHECKPOINTING = (
    "activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__ else "gradient_checkpointing"
)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


def on_accelerator() -> bool:
    return torch.cuda.is_available()


def trainer_precision() -> dict:
    """Keyword arguments for any HF/TRL ``TrainingArguments`` built by k2rl.

    CPU: float32 without autocast, and no gradient checkpointing (at CPU model sizes it only costs
    time). Accelerator: nothing is overridden, so TRL's defaults (bf16 autocast) apply.
    """
    if on_accelerator():
        return {}
    return {"use_cpu": True, "bf16": False, "fp16": False, _CHECKPOINTING: False}


def policy_dtype(requested: str):
    """What ``from_pretrained`` gets for ``policy.dtype``: as asked on an accelerator; float32 on a CPU.

    ``auto`` (the checkpoint's own dtype) becomes float32 on a CPU; an explicit reduced precision there
    is a user error, reported before any weights load.
    """
    if requested not in _DTYPES:
        raise K2RLError(f"policy.dtype: unknown dtype {requested!r} (choose from {', '.join(_DTYPES)})")
    if on_accelerator():
        return _DTYPES[requested]
    if requested in ("bfloat16", "float16"):
        raise K2RLError(
            f"policy.dtype {requested} on a CPU: k2rl computes in float32 on CPUs (reduced precision is "
            "emulated or ISA-dependent there); drop policy.dtype or set it to float32"
        )
    return torch.float32
