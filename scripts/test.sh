#!/usr/bin/env bash
# The whole test suite, from a fresh machine: Rust unit, property, crash-simulation, openraft
# conformance and multi-process fault tests, then the official RocketMQ Python client suite, then the
# official RocketMQ Rust client (crate rocketmq 5.0.0, clients/rust-check) round trip.
set -euo pipefail
cd "$(dirname "$0")/.."

# The official Python client (rocketmq-python-client from PyPI) in a project-local venv.
if [ ! -x .venv/bin/pytest ]; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -r tests/python/requirements.txt
fi

cargo build --locked
cargo test --locked --workspace

RAFTMQ_BIN="$PWD/target/debug/raftmq" .venv/bin/pytest tests/python -q

# A separate crate with its own lock file and target dir (it brings tonic 0.9): see clients/rust-check.
RAFTMQ_BIN="$PWD/target/debug/raftmq" scripts/rust-client.sh
