#!/usr/bin/env bash
# Set up ailab-deploy on a fresh Debian 12 machine: system packages, a venv, the project.
# Idempotent; run from the repository root as root (or with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(python3 python3-venv python3-dev gcc git openssh-client)
if [[ -f .ci/apt-packages.txt ]]; then
    while read -r package; do
        [[ -n "$package" && "$package" != \#* ]] && packages+=("$package")
    done < .ci/apt-packages.txt
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null

python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip wheel
.venv/bin/pip install -q -e '.[dev]'
echo "ready: .venv/bin/ailab-deploy --help"
