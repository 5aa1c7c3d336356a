#!/usr/bin/env bash
# Sets up farcall (scripts/setup.sh) and runs the seed example: a child
# Python process is spawned and driven through proxies.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python examples/seed.py
