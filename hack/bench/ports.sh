#!/usr/bin/env bash
# Port-range benchmark (issue 5), printed as tables:
#   - ns per socket()+bind()+close() (bind(0) and an explicit port) and per connect(), bare
#     and with kraal's port programs attached to the measuring process's cgroup;
#   - the bind(0) failure rate against the occupancy of a 100-port range, kraal's tracking
#     allocator next to the random-choice baseline (kernel-findings.md).
# Runs as root on loopback only; its scratch cgroup and bpffs pins are removed at the end.
#
# Usage: hack/bench/ports.sh [iterations [rounds]]   (the bench's defaults: 5000 and 15)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=hack/setup.sh
source hack/setup.sh
for arg in "$@"; do
  [[ "$arg" =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [iterations [rounds]]" >&2; exit 2; }
done
if [ "$(id -u)" -ne 0 ]; then
  echo "bench: attaching eBPF programs needs root" >&2
  exit 1
fi
cargo build --release --locked -p kraal-ebpf --example ports_bench
exec target/release/examples/ports_bench "$@"
