"""Watches every Linear forward in a block: was CPU autocast on, and did any output leave float32?"""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def watch_precision():
    """``with watch_precision() as seen:`` ... ``seen["forwards"]``, ``seen["autocast"]``, ``seen["dtypes"]``."""
    seen = {"forwards": 0, "autocast": 0, "dtypes": set()}

    def hook(module, args, output):
        if not isinstance(module, torch.nn.Linear):
            return
        seen["forwards"] += 1
        seen["autocast"] += int(torch.is_autocast_enabled("cpu"))
        if isinstance(output, torch.Tensor):
            seen["dtypes"].add(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def assert_full_precision(seen: dict) -> None:
    assert seen["forwards"] > 0, "no forward was watched"
    assert seen["autocast"] == 0, f"{seen['autocast']} of {seen['forwards']} CPU forwards ran under autocast"
    assert seen["dtypes"] == {torch.float32}, seen["dtypes"]
