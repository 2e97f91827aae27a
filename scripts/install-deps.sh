#!/usr/bin/env bash
# Install what backupctl's tests need: Debian packages (when root with apt) and the Python package.
# Usage: scripts/install-deps.sh [pip extras, default "test"]
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test}"

if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    missing=()
    while read -r pkg; do
        [[ -z "$pkg" || "$pkg" == \#* ]] && continue
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done < scripts/debian-packages.txt
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

python3 -m pip install -q --disable-pip-version-check -e ".[${extras}]"
# An editable install byte-compiles nothing, and with PYTHONDONTWRITEBYTECODE set no command would
# cache its compiled modules: compile them once here so every command starts ~0.1 s sooner.
python3 -m compileall -q backupctl engine_tools repo_plugins scheduler api >/dev/null
