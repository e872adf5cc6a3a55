"""Where ``policy.model`` points: a local directory, or a hub id. Apart from :mod:`.build` (which needs
torch and transformers) so that a wrong path is reported with the recipe's other mistakes, before they load."""

from __future__ import annotations

import os

from k2rl.errors import K2RLError


def resolve_model_source(name_or_path: str) -> str:
    """Fail early, in one line, on a local-looking path that does not exist."""
    looks_local = name_or_path.startswith((".", "/", "~")) or os.sep in name_or_path.strip("/").split("/", 1)[-1]
    expanded = os.path.expanduser(name_or_path)
    if os.path.exists(expanded):
        return expanded
    if looks_local or name_or_path.count("/") > 1:
        raise K2RLError(f"model path does not exist: {name_or_path}")
    return name_or_path  # a hub id such as "moonshotai/Moonlight-16B-A3B-Instruct"
