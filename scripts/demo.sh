#!/usr/bin/env bash
# Builds farcall and runs the demo: a child process is spawned and driven
# through proxies.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet -p farcall --bins --examples
exec target/debug/examples/demo
