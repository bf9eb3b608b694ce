#!/usr/bin/env bash
# Builds a fully static raftmq and the FROM-scratch image `raftmq:latest` (override with IMAGE=...).
# The static build has its own target dir (target/static) so it never fights ordinary builds.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE="${IMAGE:-raftmq:latest}"
RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR=target/static \
  cargo build --locked --release --target x86_64-unknown-linux-gnu --bin raftmq
BIN=target/static/x86_64-unknown-linux-gnu/release/raftmq
if ldd "$BIN" 2>&1 | grep -q "=>"; then
  echo "error: $BIN is dynamically linked; the FROM scratch image needs a static binary" >&2
  exit 1
fi
# The image gets a copy without debug info (symbols stay, so backtraces name functions).
mkdir -p target/static/image
objcopy --strip-debug "$BIN" target/static/image/raftmq
docker build -q -t "$IMAGE" . >/dev/null
echo "image $IMAGE built from $BIN ($(du -h target/static/image/raftmq | cut -f1) in the image)"
