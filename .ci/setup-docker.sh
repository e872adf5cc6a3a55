#!/usr/bin/env bash
# Install and start dockerd, then build k2rl's default sandbox image (offline, no registry pulls).
# Idempotent: safe to run on a fresh machine (as root) or again on a machine where it already ran.
set -euo pipefail

# The Python that has k2rl installed: $K2RL_PYTHON, else the repo's .venv, else /work/venv, else python3.
cd "$(dirname "$0")/.."
PY="${K2RL_PYTHON:-}"
for candidate in .venv/bin/python /work/venv/bin/python; do
    if [ -z "$PY" ] && [ -x "$candidate" ]; then PY="$candidate"; fi
done
PY="${PY:-python3}"

need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
command -v bwrap >/dev/null 2>&1 || need_pkgs+=(bubblewrap)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
fi
"$PY" -c "import docker" 2>/dev/null || "$PY" -m pip install -q "docker>=7"

if ! docker info >/dev/null 2>&1; then
    mkdir -p /var/log
    # No bridge network or iptables: sandbox containers run with network_mode="none" anyway, and
    # some CI machines cannot load the netfilter modules dockerd would otherwise insist on.
    nohup dockerd --bridge=none --iptables=false --ip6tables=false >/var/log/k2rl-dockerd.log 2>&1 &
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    if ! docker info >/dev/null 2>&1; then
        echo "setup-docker: dockerd did not come up; last log lines:" >&2
        tail -n 30 /var/log/k2rl-dockerd.log >&2 || true
        exit 1
    fi
fi

"$PY" -m k2rl.cli sandbox build-image
