#!/usr/bin/env bash
# Sets up a development environment: a virtualenv in .venv with maturin and
# pytest, and the farcall package built into it. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install --quiet --upgrade pip
# The system libraries the Qt wheels load, even headless (offscreen).
QT_DEBS="libgl1 libegl1 libxkbcommon0 libfontconfig1 libdbus-1-3 libglib2.0-0"
if command -v dpkg >/dev/null && ! dpkg -s $QT_DEBS >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $QT_DEBS >/dev/null
    else
        echo "setup.sh: Qt needs $QT_DEBS (install them as root); the Qt tests will fail" >&2
    fi
fi
.venv/bin/pip install --quiet "maturin>=1.5,<2" "pytest>=7" "pytest-timeout>=2" \
    "mypy>=1.10" numpy pyzmq msgpack "across==0.1.0" "teleprox==2.4.0" \
    "PyQt5>=5.15" "PyQt6>=6.5" "PySide6-Essentials>=6.5" \
    "opentelemetry-api>=1.20" "opentelemetry-sdk>=1.20"
(. .venv/bin/activate && maturin develop --quiet)
