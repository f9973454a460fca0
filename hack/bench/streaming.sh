#!/usr/bin/env bash
# Streaming benchmark: exec round trip of `true` through ExecSync and through Exec + its
# URL (SPDY, remotecommand v4), and port-forward echo throughput of one connection over
# 10 s, driven by kraal-bench through the CRI socket.
#
# Usage: hack/bench/streaming.sh [iterations] [seconds]     (default 50 and 10)
#
# kraald only for now: the containerd side (as hack/bench/pods.sh starts it) is not wired
# in yet; `kraal-bench streaming` itself is runtime-agnostic and can be pointed at
# containerd's socket as is. Needs the test registry (hack/registry.sh, registry.env
# sourced). Only processes this script started are killed.
set -euo pipefail
cd "$(dirname "$0")/../.."
iterations=${1:-50}
seconds=${2:-10}
: "${KRAAL_TEST_REGISTRY:?source the registry.env that hack/registry.sh start wrote}"

cargo build --release -p kraal-bench -p kraald -p kraal-runtime
target=${CARGO_TARGET_DIR:-$PWD/target}/release
work=$(mktemp -d /tmp/kraal-stream-bench.XXXXXX)
kraald_pid=
cleanup() {
  if [ -n "$kraald_pid" ]; then
    "$target/kraal-bench" --socket "$work/kraal.sock" --runtime kraal clean >/dev/null 2>&1 || true
    kill "$kraald_pid" 2>/dev/null || true
    wait "$kraald_pid" 2>/dev/null || true
  fi
  rmdir "/sys/fs/cgroup/$(basename "$work")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/config.toml" <<CFG
socket = "$work/kraal.sock"
root = "$work/root"
state = "$work/state"
[registry.mirrors]
CFG
"$target/kraald" --config "$work/config.toml" >"$work/kraald.log" 2>&1 &
kraald_pid=$!
for _ in $(seq 100); do [ -S "$work/kraal.sock" ] && break; sleep 0.1; done
[ -S "$work/kraal.sock" ] || { cat "$work/kraald.log" >&2; exit 1; }

"$target/kraal-bench" --socket "$work/kraal.sock" --runtime kraal streaming \
  --image "$KRAAL_TEST_REGISTRY/kraal-test/busybox:latest" \
  --cgroup-parent "/$(basename "$work")/stream" \
  --iterations "$iterations" --seconds "$seconds"
