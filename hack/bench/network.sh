#!/usr/bin/env bash
# Pod networking benchmark (issue 7): RunPodSandbox, and StopPodSandbox+RemovePodSandbox, of
# pods with a network namespace of their own (so the CNI ADD and DEL run), for kraald and for
# containerd (Debian's 1.6 with runc, its CRI plugin) configured with the SAME conflist and
# driven by the same client (kraal-bench sandboxes) in the same run. Both daemons run side by
# side; the timed lifecycles go in rounds that alternate between them (and which one goes
# first), to spread the machine's noise over both. No containers are created: the sandbox
# alone is what is timed. Every pod's IP is checked (untimed) to be in the run's subnet.
#
# The conflist is hack/cni/10-kraal.conflist with a network name, bridge and /24 subnet of this
# run (kraal-bench-<pid>, kbn<pid>, BENCH_SUBNET), in a conf dir of the run's own that both
# runtimes read; plugins from Debian's /usr/lib/cni.
#
# Usage: hack/bench/network.sh [iterations]     (default 30 per runtime; one untimed warm-up)
#   BENCH_ROUND=5                timed lifecycles per runtime per round
#   BENCH_SUBNET=10.232.0.0/24   the pods' subnet; must be a /24 no address or route here uses
#
# Everything the run creates (pods, processes, mounts, cgroups, temp dirs, the bridge, IPAM
# and CNI cache state, iptables rules) is removed at the end, also on failure, and then
# checked to be gone; net.ipv4.ip_forward (which the bridge plugin sets) is put back. Only
# processes this script started are ever killed.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=hack/setup.sh
source hack/setup.sh
# shellcheck source=hack/bench/lib.sh
source hack/bench/lib.sh
iterations=${1:-30}
round=${BENCH_ROUND:-5}
subnet=${BENCH_SUBNET:-10.232.0.0/24}
export RUST_LIB_BACKTRACE=0
[[ "$iterations" =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [iterations]" >&2; exit 2; }
[[ "$round" =~ ^[1-9][0-9]*$ ]] || { echo "bench: BENCH_ROUND must be a positive integer" >&2; exit 2; }
[[ "$subnet" =~ ^([0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3})\.0/24$ ]] ||
  { echo "bench: BENCH_SUBNET must be a /24 like 10.232.0.0/24" >&2; exit 2; }
prefix=${BASH_REMATCH[1]}.
if [ "$(id -u)" -ne 0 ]; then
  echo "bench: pod networking needs root" >&2
  exit 1
fi
if ip -4 -o addr show | grep -qF " inet $prefix" || ip -4 route show | grep -qF "$prefix"; then
  echo "bench: $subnet is in use on this machine; choose another with BENCH_SUBNET" >&2
  exit 1
fi

need_containerd
build_release

netname=kraal-bench-$$
bridge=kbn$$
cni_state=/var/lib/cni
ipam_dir=$cni_state/networks/$netname
work=$(mktemp -d /tmp/kraal-bench.XXXXXX)
# Every pod's cgroup_parent is $cg_root/<runtime>/<pod>: one tree to empty and remove.
cg_root=/$(basename "$work")
kraald_pid=
containerd_pid=

say() { echo "bench: $*" >&2; }

# What this run may change outside $work, as it was before.
ip_forward_before=$(cat /proc/sys/net/ipv4/ip_forward)
cni_state_existed=false
[ -d "$cni_state" ] && cni_state_existed=true
# ipt_rules: the nat and filter rules and chains of IPv4 and IPv6, without counters.
ipt_rules() {
  local cmd table
  for cmd in iptables-save ip6tables-save; do
    for table in nat filter; do
      "$cmd" -t "$table" 2>/dev/null | grep -v '^#' | sed -E "s/^(:[^ ]+ [^ ]+) \\[[0-9]+:[0-9]+\\]$/\\1/; s/^/$cmd $table /" || true
    done
  done
}
ipt_rules >"$work/iptables.before"
ip netns list | awk '{print $1}' | sort >"$work/netns.before"

# ours_in_iptables: rules that appeared during the run and mention this run's network (its
# name, bridge or subnet), and the per-pod chains (CNI-DN-<hash>, CNI-<hash>) those rules jump
# to, with their rules. portmap's shared CNI-HOSTPORT-* chains are left alone: other networks
# on this machine may use them (and with no hostPorts here portmap never creates them).
ours_in_iptables() {
  local new mine chain
  new=$(ipt_rules | grep -vxF -f "$work/iptables.before" || true)
  mine=$(grep -E "$netname|$bridge|${prefix//./\\.}" <<<"$new" || true)
  [ -n "$mine" ] || return 0
  echo "$mine"
  grep -oE -- '-j CNI-([A-Z]+-)?[0-9a-f]{16,}' <<<"$mine" | sed 's/^-j //' | sort -u |
    while read -r chain; do
      grep -E "^[^ ]+ [^ ]+ (:$chain |-A $chain )" <<<"$new" || true
    done | grep -vxF "$mine" || true
}

# network_leftovers: what the runtimes left of this run's pod networks once every pod is
# removed (the bridge itself stays by design: the bridge plugin never deletes it).
network_leftovers() {
  local f
  [ -d "/sys/class/net/$bridge/brif" ] &&
    for f in "/sys/class/net/$bridge/brif"/*; do
      [ -e "$f" ] && echo "veth on $bridge: ${f##*/}"
    done
  findmnt -rn -t nsfs -o TARGET | awk -v r="$work/" 'index($0, r) == 1 {print "netns mount: " $0}'
  # containerd names its netns cni-<uuid> (under its state dir here, by the config); kraal
  # pins its own under its state dir: a new one in /run/netns would be a runtime's mistake.
  ip netns list | awk '{print $1}' | sort | comm -13 "$work/netns.before" - |
    awk '/^cni-/ {print "netns: " $0}'
  if [ -d "$ipam_dir" ]; then
    # host-local keeps its lock and last_reserved_ip.* files; every other file is an address.
    find "$ipam_dir" -type f ! -name lock ! -name 'last_reserved_ip.*' -printf 'IPAM allocation: %f\n'
  fi
  [ -d "$cni_state/results" ] &&
    find "$cni_state/results" -name "$netname-*" -printf 'CNI result cache: %f\n'
  ours_in_iptables | sed 's/^/iptables: /'
  return 0
}

# remove_network: the bridge (with anything still on it), IPAM and cache state, iptables
# rules and chains of this run, ip_forward as it was.
remove_network() {
  local f cmd table rest chain rules
  if [ -d "/sys/class/net/$bridge" ]; then
    for f in "/sys/class/net/$bridge/brif"/*; do
      [ -e "$f" ] && ip link del "${f##*/}" 2>/dev/null
    done
    ip link del "$bridge" 2>/dev/null || say "cleanup: could not delete the bridge $bridge"
  fi
  rm -rf "$ipam_dir"
  [ -d "$cni_state/results" ] && find "$cni_state/results" -name "$netname-*" -delete
  # Rules first (-A lines become -D), then the chains they used (flushed, then deleted).
  rules=$(ours_in_iptables)
  while read -r cmd table rest; do
    [[ "$rest" == "-A "* ]] || continue
    # iptables-restore reads the rule back with iptables-save's own quoting.
    printf '*%s\n-D %s\nCOMMIT\n' "$table" "${rest#-A }" | "${cmd%-save}-restore" --noflush ||
      say "cleanup: could not delete $cmd $table $rest"
  done <<<"$rules"
  while read -r cmd table rest; do
    [[ "$rest" == :* ]] || continue
    chain=${rest#:}
    chain=${chain%% *}
    "${cmd%-save}" -t "$table" -F "$chain" 2>/dev/null || true
    "${cmd%-save}" -t "$table" -X "$chain" 2>/dev/null || say "cleanup: could not delete chain $chain ($cmd $table)"
  done <<<"$rules"
  if [ "$cni_state_existed" = false ]; then
    rmdir "$cni_state/networks" "$cni_state/results" "$cni_state" 2>/dev/null || true
  else
    rmdir "$cni_state/networks" "$cni_state/results" 2>/dev/null || true
  fi
  [ "$(cat /proc/sys/net/ipv4/ip_forward)" = "$ip_forward_before" ] ||
    echo "$ip_forward_before" >/proc/sys/net/ipv4/ip_forward
  return 0
}

cleanup() {
  local rc=$? left
  trap - EXIT INT TERM
  set +e
  stop_runtimes "$rc" "$work" "$bench" "$kraald_pid" "$containerd_pid" "$cg_root"
  remove_network
  left=$(network_leftovers)
  [ -d "/sys/class/net/$bridge" ] && left="$left${left:+$'\n'}bridge $bridge"
  if [ -n "$left" ]; then
    say "cleanup: still there after removing everything:"
    echo "$left" >&2
  else
    say "cleanup: nothing of the run left (bridge $bridge, veths, netns, IPAM, CNI cache, iptables)"
  fi
  remove_work_dir "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$work/cni" "$work/kraal" "$work/containerd"
start_run_registry "$work"

# The one conflist both runtimes read: the development network, renamed and re-addressed.
python3 - hack/cni/10-kraal.conflist "$work/cni/10-$netname.conflist" "$netname" "$bridge" "$subnet" <<'PY'
import json, sys
src, dst, name, bridge, subnet = sys.argv[1:]
with open(src) as f:
    conf = json.load(f)
conf["name"] = name
first = conf["plugins"][0]
assert first["type"] == "bridge", "hack/cni/10-kraal.conflist must start with bridge"
first["bridge"] = bridge
first["ipam"]["ranges"] = [[{"subnet": subnet}]]
with open(dst, "w") as f:
    json.dump(conf, f, indent=2)
    f.write("\n")
PY
say "network $netname: bridge $bridge, $subnet, conflist $work/cni/10-$netname.conflist"

cat >"$work/kraal/config.toml" <<TOML
[cni]
conf_dir = "$work/cni"
bin_dirs = ["/usr/lib/cni"]
TOML
start_kraald "$work" --config "$work/kraal/config.toml"
write_containerd_config "$work/containerd" "$KRAAL_TEST_REGISTRY" "$pause_image" "$work/cni"
start_containerd "$work/containerd"
sleep 2

# sandboxes RT ROUND COUNT WARMUP: one round of RT's timed lifecycles; JSON lines appended to
# $work/RT.json.
sandboxes() {
  local rt=$1 r=$2 count=$3 warmup=$4 socket
  local args=(--cgroup-root "$cg_root/$rt" --log-dir "$work/$rt/pod-logs" --iterations "$count"
    --warmup "$warmup" --name-prefix "r$r" --expect-ip-prefix "$prefix")
  case "$rt" in
    kraal) socket=$work/kraal/kraal.sock ;;
    containerd) socket=$work/containerd/containerd.sock; args+=(--pull "$pause_image") ;;
  esac
  "$bench" --socket "$socket" --runtime "$rt" sandboxes "${args[@]}" >>"$work/$rt.json"
}

rounds=$(((iterations + round - 1) / round))
say "$iterations networked sandbox lifecycles per runtime, in $rounds alternating rounds"
for ((r = 0; r < rounds; r++)); do
  count=$round
  [ $((iterations - r * round)) -ge "$round" ] || count=$((iterations - r * round))
  warmup=0
  [ "$r" -gt 0 ] || warmup=1
  if ((r % 2 == 0)); then order="kraal containerd"; else order="containerd kraal"; fi
  for rt in $order; do sandboxes "$rt" "$r" "$count" "$warmup"; done
done

# Every pod is removed: whatever of the network is still there, the runtimes left behind.
sleep 1
leftovers=$(network_leftovers)

# samples RT CALL: every timed sample of CALL (ms), one a line.
samples() {
  grep -F "\"call\":\"$2\"" "$work/$1.json" |
    sed -E 's/.*"samples_ms":\[([^]]*)\].*/\1/' | tr ',' '\n' | grep -v '^$'
}
# quantile Q: kraal-bench's pick (nearest rank, (n-1)*Q rounded) of the numbers on stdin.
quantile() {
  sort -g | awk -v q="$1" '{a[NR]=$1} END {if (NR == 0) exit; printf "%.3f", a[int((NR-1)*q + 0.5) + 1]}'
}
declare -A res
calls=(RunPodSandbox StopPodSandbox RemovePodSandbox StopPodSandbox+RemovePodSandbox)
for rt in kraal containerd; do
  for call in "${calls[@]}"; do
    res[$rt.$call.n]=$(samples "$rt" "$call" | wc -l)
    res[$rt.$call.median]=$(samples "$rt" "$call" | quantile 0.5)
    res[$rt.$call.p90]=$(samples "$rt" "$call" | quantile 0.9)
    printf '{"runtime":"%s","call":"%s","network":"cni","n":%s,"median_ms":%s,"p90_ms":%s}\n' \
      "$rt" "$call" "${res[$rt.$call.n]}" "${res[$rt.$call.median]:-0}" "${res[$rt.$call.p90]:-0}"
  done
done

ms() { [ -n "$1" ] && awk -v v="$1" 'BEGIN {printf "%.1f", v}' || echo -; }
ratio() { [ -n "$1" ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a/b; else print "-"}' || echo -; }
verdict() { [ -n "$1" ] && [ "$1" != - ] && awk -v v="$1" -v l="$2" 'BEGIN {print (v <= l) ? "yes" : "NO"}' || echo -; }
row() { printf '%-46s %9s %11s %7s   %s\n' "$@"; }

echo
row "networked sandboxes ($iterations each, CNI bridge)" kraal containerd ratio "goal (met?)"
for call in "${calls[@]}"; do
  for q in median p90; do
    k=${res[kraal.$call.$q]:-}
    c=${res[containerd.$call.$q]:-}
    r=$(ratio "$k" "$c")
    goal=
    [ "$call.$q" != RunPodSandbox.median ] || goal="ratio <= 0.50 ($(verdict "$r" 0.5))"
    row "$call $q (ms)" "$(ms "$k")" "$(ms "$c")" "$r" "$goal"
  done
done
echo "left behind by the runtimes once every pod was removed (the bridge aside): ${leftovers:-nothing}"
