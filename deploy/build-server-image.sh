#!/usr/bin/env bash
# Build the sandbox service image offline: `k2rl sandbox build-image`'s image plus the server.
#   bash deploy/build-server-image.sh [TAG]      (default tag: k2rl-sandbox-server:latest)
# Needs the Docker engine, bubblewrap on this machine, and PyPI for aiohttp/PyYAML; no image registry.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${K2RL_PYTHON:-.venv/bin/python}"
TAG="${1:-k2rl-sandbox-server:latest}"
BASE="$("$PY" -m k2rl.cli sandbox build-image | tail -n 1)"
CTX="$(mktemp -d)"
trap 'rm -rf "$CTX"' EXIT
SITE="$CTX/rootfs/opt/k2rl/site"
# The base image's interpreter is this machine's, so wheels for this Python fit it.
"$PY" -m pip install -q --no-compile --no-deps --target "$SITE" .
"$PY" -m pip install -q --no-compile --target "$SITE" "aiohttp>=3.9" "pyyaml>=6"
BWRAP="$(command -v bwrap)"
mkdir -p "$CTX/rootfs/usr/bin" "$CTX/rootfs/var/cache/k2rl" "$CTX/rootfs/var/run/k2rl"
cp "$BWRAP" "$CTX/rootfs/usr/bin/bwrap"
for lib in $(ldd "$BWRAP" | grep -o '/[^ ]*\.so[^ ]*'); do
    mkdir -p "$CTX/rootfs$(dirname "$lib")"
    cp -L "$lib" "$CTX/rootfs$lib"
done
cp deploy/Dockerfile "$CTX/Dockerfile"
docker build -q --build-arg BASE="$BASE" -t "$TAG" "$CTX" >/dev/null
echo "$TAG"
