#!/usr/bin/env bash
# Set up ailab-deploy on a fresh Debian 12 machine: system packages, a venv, the project.
# Idempotent and quick on a second run: apt runs only for missing packages, pip only when
# pyproject.toml changed since the venv was last installed. Run from anywhere as root.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(python3 python3-venv python3-dev gcc git openssh-client)
if [[ -f .ci/apt-packages.txt ]]; then
    while read -r package; do
        [[ -n "$package" && "$package" != \#* ]] && packages+=("$package")
    done < .ci/apt-packages.txt
fi
missing=()
for package in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)
    [[ "$status" == installed ]] || missing+=("$package")
done
if (( ${#missing[@]} )); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The venv is reinstalled when the project's dependencies (pyproject.toml) change.
stamp=.venv/.ailab-installed
wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -x .venv/bin/ailab-deploy || ! -f $stamp || "$(cat "$stamp")" != "$wanted" ]]; then
    python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip wheel
    .venv/bin/pip install -q -e '.[dev]'
    echo "$wanted" > "$stamp"
fi
echo "ready: .venv/bin/ailab-deploy --help"
