#!/usr/bin/env bash
# Streaming benchmark: exec round trip of `true` through ExecSync and through Exec + its
# URL (SPDY, remotecommand v4), and port-forward echo throughput of one connection, for
# kraald and for containerd (Debian's 1.6 with runc, its CRI plugin and streaming server)
# driven by the same client (kraal-bench streaming) in the same run: both daemons run at
# once and the client alternates between them (rounds of execs, port-forward runs).
#
# Usage: hack/bench/streaming.sh [iterations] [seconds]     (default 50 and 10)
#   BENCH_RUNTIMES="kraal containerd"  which runtimes to run (default both; the first is the
#                                      one the ratio column divides)
#   BENCH_ROUNDS=5                     rounds the execs are split into
#   BENCH_FORWARD_RUNS=2               port-forward runs of [seconds] per runtime
#
# The run starts its own registry (hack/registry.sh) for the busybox and pause images.
# Everything the run creates (pods, processes, mounts, cgroups, daemon state, the registry,
# the temp dir) is removed at the end, also on failure; only processes this script started
# are ever killed.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=hack/bench/lib.sh
source hack/bench/lib.sh
iterations=${1:-50}
seconds=${2:-10}
runtimes=${BENCH_RUNTIMES:-kraal containerd}
rounds=${BENCH_ROUNDS:-5}
forward_runs=${BENCH_FORWARD_RUNS:-2}
[[ "$iterations" =~ ^[1-9][0-9]*$ && "$seconds" =~ ^[1-9][0-9]*$ ]] ||
  { echo "usage: $0 [iterations] [seconds]" >&2; exit 2; }
export RUST_LIB_BACKTRACE=0

if [[ " $runtimes " == *" containerd "* ]]; then
  need_containerd
fi
build_release

work=$(mktemp -d /tmp/kraal-stream-bench.XXXXXX)
# Every pod's cgroup_parent is $cg_root/<runtime>: one tree to empty and remove.
cg_root=/$(basename "$work")
kraald_pid=
containerd_pid=

trap teardown_run EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_run_registry "$work"

first=
peers=()
for rt in $runtimes; do
  case "$rt" in
    kraal)
      # The streaming server is on its default (loopback, a kernel-chosen port), as
      # containerd's.
      start_kraald "$work"
      socket=$work/kraal/kraal.sock
      ;;
    containerd)
      write_containerd_config "$work/containerd" "$KRAAL_TEST_REGISTRY" "$pause_image"
      start_containerd "$work/containerd"
      socket=$work/containerd/containerd.sock
      ;;
    *)
      say "unknown runtime $rt in BENCH_RUNTIMES (kraal, containerd)"
      exit 2
      ;;
  esac
  if [ -z "$first" ]; then
    first=$rt
    first_socket=$socket
  else
    peers+=(--peer "$rt=$socket")
  fi
done
[ -n "$first" ] || { say "BENCH_RUNTIMES is empty"; exit 2; }
# Let both daemons finish starting their plugins before anything is timed.
sleep 2

"$bench" --socket "$first_socket" --runtime "$first" streaming "${peers[@]}" \
  --image "$image" --also-pull "$pause_image" --cgroup-parent "$cg_root" \
  --iterations "$iterations" --rounds "$rounds" --seconds "$seconds" \
  --forward-runs "$forward_runs"
