#!/usr/bin/env bash
# Sets up a development environment: a virtualenv in .venv with maturin and
# pytest, and the farcall package built into it. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet "maturin>=1.5,<2" "pytest>=7" "pytest-timeout>=2" \
    "mypy>=1.10" numpy pyzmq msgpack "across==0.1.0" "teleprox==2.4.0"
(. .venv/bin/activate && maturin develop --quiet)
