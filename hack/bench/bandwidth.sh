#!/usr/bin/env bash
# Bandwidth benchmark (issue 6), printed as two tables (egress, ingress): one pod capped at the
# same rate by kraal (HTB on the node's uplink and IFB, eBPF classification) and by the CNI
# `bandwidth` plugin (/usr/lib/cni/bandwidth, with containerd's burst and with kraal's), a
# saturating TCP flow and beside it a request/response flow from the same pod: goodput against
# the cap, retransmits, the first second, drops, p50/p99 request latency.
# Root only; everything runs in network namespaces it makes (a node, a router, a remote host,
# a pod) and removes again. About two minutes with the defaults.
#
# Usage: hack/bench/bandwidth.sh [--secs 10] [--cap 50M] [--rr-rate 200] [--cc cubic]
#          [--flows 1] [--cases kraal,cni,cni-fair,kraal-host] [--leaf as-set,...]
# (arguments go to crates/kraal-net/examples/bandwidth_bench.rs, which documents them)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=hack/setup.sh
source hack/setup.sh
if [ "$(id -u)" -ne 0 ]; then
  echo "bench: network namespaces, tc and eBPF need root" >&2
  exit 1
fi
cargo build --release --locked -p kraal-net --example bandwidth_bench
bench="${CARGO_TARGET_DIR:-target}/release/examples/bandwidth_bench"

# The bench removes what it made, also when it fails; this is for when it is killed. Its
# namespaces, cgroups and pins are named after its pid.
pidfile=$(mktemp)
cleanup() {
  local pid
  pid=$(cat "$pidfile" 2>/dev/null || true)
  rm -f "$pidfile"
  [ -n "$pid" ] || return 0
  for ns in $(ip netns list | awk '{print $1}' | grep "^kbw${pid}c" || true); do
    ip netns del "$ns"
  done
  rm -rf "/sys/fs/bpf/kraal-bw-test-$pid"
  local cg="/sys/fs/cgroup/unified/kraal-bw-test-$pid"
  if [ -d "$cg" ]; then
    find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null ||
      echo "bench: could not remove $cg (processes left in it?)" >&2
  fi
}
trap cleanup EXIT
# A subshell that becomes the bench, so its pid is known and Ctrl-C still reaches it.
(
  echo "$BASHPID" >"$pidfile"
  exec "$bench" "$@"
)
