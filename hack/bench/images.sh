#!/usr/bin/env bash
# Image benchmark: median PullImage of the busybox test image from a local registry, and idle
# RSS, for kraald and for containerd (Debian's 1.6, its CRI plugin) driven by the same client
# (kraal-bench) in the same run. Usage: hack/bench/images.sh [iterations]
set -euo pipefail
cd "$(dirname "$0")/../.."
source hack/setup.sh
# shellcheck source=hack/bench/lib.sh
source hack/bench/lib.sh
iterations=${1:-20}

if ! command -v containerd >/dev/null 2>&1; then
  echo "bench: installing containerd and runc (the peer to compare with)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containerd runc >/dev/null
fi

cargo build --release -p kraald -p kraal-bench
bench=target/release/kraal-bench

work=$(mktemp -d /tmp/kraal-bench.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  hack/registry.sh stop "$work/registry" >/dev/null 2>&1 || true
  umount -R "$work/containerd/root" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/registry"
hack/registry.sh start "$work/registry" >/dev/null
# shellcheck disable=SC1091
source "$work/registry/registry.env"
image="$KRAAL_TEST_REGISTRY/kraal-test/busybox:latest"


# --- kraald
mkdir -p "$work/kraal"
target/release/kraald --socket "$work/kraal/kraal.sock" --root "$work/kraal/root" \
  --state "$work/kraal/state" --log-level warn 2>"$work/kraal/log" &
kraald_pid=$!; pids+=("$kraald_pid")
wait_socket "$work/kraal/kraal.sock" "$kraald_pid"
sleep 1
kraal_idle=$(rss_kb "$kraald_pid")
kraal_pull=$($bench --socket "$work/kraal/kraal.sock" --runtime kraal pull --image "$image" --iterations "$iterations")
sleep 1
kraal_after=$(rss_kb "$kraald_pid")

# --- containerd
write_containerd_config "$work/containerd" "$KRAAL_TEST_REGISTRY"
containerd --config "$work/containerd/config.toml" --log-level warn 2>"$work/containerd/log" &
containerd_pid=$!; pids+=("$containerd_pid")
wait_socket "$work/containerd/containerd.sock" "$containerd_pid"
sleep 2
containerd_idle=$(rss_kb "$containerd_pid")
containerd_pull=$($bench --socket "$work/containerd/containerd.sock" --runtime containerd pull --image "$image" --iterations "$iterations")
sleep 1
containerd_after=$(rss_kb "$containerd_pid")

median() { sed -E 's/.*"median_ms":([0-9.]+).*/\1/' <<<"$1"; }
km=$(median "$kraal_pull"); cm=$(median "$containerd_pull")
echo "$kraal_pull"
echo "$containerd_pull"
printf '\n%-34s %12s %12s %10s\n' "image benchmark ($iterations pulls)" kraal containerd ratio
printf '%-34s %12.1f %12.1f %10.2f\n' "PullImage busybox median (ms)" "$km" "$cm" "$(awk -v a="$km" -v b="$cm" 'BEGIN{print a/b}')"
printf '%-34s %12.1f %12.1f %10.2f\n' "idle RSS at start (MB)" "$(awk -v k="$kraal_idle" 'BEGIN{print k/1024}')" "$(awk -v k="$containerd_idle" 'BEGIN{print k/1024}')" "$(awk -v a="$kraal_idle" -v b="$containerd_idle" 'BEGIN{print a/b}')"
printf '%-34s %12.1f %12.1f %10.2f\n' "idle RSS after the pulls (MB)" "$(awk -v k="$kraal_after" 'BEGIN{print k/1024}')" "$(awk -v k="$containerd_after" 'BEGIN{print k/1024}')" "$(awk -v a="$kraal_after" -v b="$containerd_after" 'BEGIN{print a/b}')"
