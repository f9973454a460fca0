#!/usr/bin/env bash
# Pod and container benchmark: median RunPodSandbox, CreateContainer+StartContainer,
# StopContainer+RemoveContainer and StopPodSandbox+RemovePodSandbox of hostNetwork pods
# (PID namespace per container, cgroup_parent under a kraal-bench cgroup), then memory: the
# daemon's RSS idle and with 50 running containers (10 pods x 5), and the per-container
# processes (kraal-monitor, containerd-shim-runc-v2), for kraald and for containerd (Debian's
# 1.6 with runc, its CRI plugin) driven by the same client (kraal-bench) in the same run.
#
# Usage: hack/bench/pods.sh [iterations]        (default 20; one untimed warm-up first)
#   BENCH_RUNTIMES="kraal containerd"  which runtimes to run (default both)
#
# Everything the run creates (pods, processes, mounts, cgroups, temp dirs) is removed at
# the end, also on failure; only processes this script started are ever killed.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=hack/setup.sh
source hack/setup.sh
# shellcheck source=hack/bench/lib.sh
source hack/bench/lib.sh
iterations=${1:-20}
# anyhow errors from kraal-bench without a backtrace (RUST_BACKTRACE may be set around us)
export RUST_LIB_BACKTRACE=0
[[ "$iterations" =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [iterations]" >&2; exit 2; }
runtimes=${BENCH_RUNTIMES:-kraal containerd}
fill_pods=10
fill_containers=5
fill_total=$((fill_pods * fill_containers))

need_containerd
build_release

work=$(mktemp -d /tmp/kraal-bench.XXXXXX)
# Every pod's cgroup_parent is $cg_root/<runtime>/<pod>: one tree to empty and remove.
cg_root=/$(basename "$work")
kraald_pid=
containerd_pid=

say() { echo "bench: $*" >&2; }

# children_matching PARENTS PREFIX: children of the (space-separated) PARENTS whose command
# line starts with PREFIX.
children_matching() {
  local parents=" $1 " prefix=$2 p ppid cmd
  for p in /proc/[0-9]*; do
    ppid=$(awk '{print $4}' "$p/stat" 2>/dev/null) || continue
    [[ "$parents" == *" $ppid "* ]] || continue
    cmd=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
    [[ "$cmd" == "$prefix"* ]] && echo "${p#/proc/}"
  done
  return 0
}

monitor_pids() { our_procs kraal-monitor "$work/ks/"; }
shim_pids() { our_procs containerd-shim-runc-v2 "$work/containerd/"; }

trap teardown_run EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_run_registry "$work"

pss_kb() { awk '/^Pss:/ {print $2; found=1} END {if (!found) print 0}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR == 0) print 0; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
sum() { awk '{s+=$1} END {print s+0}'; }
# field JSON_LINES CALL KEY: KEY of the line whose "call" is CALL.
field() { grep -F "\"call\":\"$2\"" <<<"$1" | sed -E "s/.*\"$3\":([0-9.]+).*/\\1/" | head -n 1; }

declare -A res
json_lines=()

# measure RT DAEMON_PID SOCKET PROCS_FN PAUSE: the timed lifecycles, then memory at 0 and
# at $fill_total containers. PROCS_FN lists the per-container processes; PAUSE is the
# command-line prefix of per-pod sandbox processes (children of those), or empty.
measure() {
  local rt=$1 pid=$2 socket=$3 procs_fn=$4 pause=$5 out procs pauses p call left
  local args=(--image "$image" --cgroup-root "$cg_root/$rt" --log-dir "$work/$rt/pod-logs")
  [ "$rt" != containerd ] || args+=(--also-pull "$pause_image")
  res[$rt.rss_start]=$(rss_kb "$pid")
  say "$rt: $iterations pod lifecycles"
  out=$("$bench" --socket "$socket" --runtime "$rt" pods "${args[@]}" --iterations "$iterations")
  json_lines+=("$out")
  for call in RunPodSandbox CreateContainer+StartContainer StopContainer+RemoveContainer \
    StopPodSandbox+RemovePodSandbox; do
    res[$rt.$call]=$(field "$out" "$call" median_ms)
  done
  sleep 2
  res[$rt.rss_idle]=$(rss_kb "$pid")
  say "$rt: $fill_pods pods x $fill_containers containers"
  out=$("$bench" --socket "$socket" --runtime "$rt" fill "${args[@]}" \
    --pods "$fill_pods" --containers "$fill_containers")
  json_lines+=("$out")
  res[$rt.fill_ms]=$(field "$out" fill total_ms)
  sleep 2
  res[$rt.rss_full]=$(rss_kb "$pid")
  procs=$($procs_fn | tr '\n' ' ')
  res[$rt.procs]=$(wc -w <<<"$procs")
  res[$rt.proc_rss_median]=$(for p in $procs; do rss_kb "$p"; done | median)
  res[$rt.proc_rss_max]=$(for p in $procs; do rss_kb "$p"; done | sort -n | tail -n 1)
  res[$rt.proc_rss_total]=$(for p in $procs; do rss_kb "$p"; done | sum)
  res[$rt.proc_pss_total]=$(for p in $procs; do pss_kb "$p"; done | sum)
  pauses=
  [ -z "$pause" ] || pauses=$(children_matching "$procs" "$pause" | tr '\n' ' ')
  res[$rt.pause_n]=$(wc -w <<<"$pauses")
  res[$rt.pause_rss_total]=$(for p in $pauses; do rss_kb "$p"; done | sum)
  say "$rt: removing them"
  out=$("$bench" --socket "$socket" --runtime "$rt" clean)
  json_lines+=("$out")
  res[$rt.clean_ms]=$(field "$out" clean total_ms)
  sleep 2
  res[$rt.rss_after]=$(rss_kb "$pid")
  left=$($procs_fn | wc -l)
  [ "$left" -eq 0 ] || say "$rt: $left per-container processes still there after removing every pod"
  json_lines+=("$(printf '{"runtime":"%s","call":"memory","daemon_rss_kb":{"start":%s,"idle":%s,"containers_%s":%s,"after_removal":%s},"per_container_processes":%s,"process_rss_kb":{"median":%s,"max":%s,"total":%s},"process_pss_total_kb":%s,"pause_processes":%s,"pause_rss_total_kb":%s}' \
    "$rt" "${res[$rt.rss_start]}" "${res[$rt.rss_idle]}" "$fill_total" "${res[$rt.rss_full]}" \
    "${res[$rt.rss_after]}" "${res[$rt.procs]}" "${res[$rt.proc_rss_median]}" \
    "${res[$rt.proc_rss_max]:-0}" "${res[$rt.proc_rss_total]}" "${res[$rt.proc_pss_total]}" \
    "${res[$rt.pause_n]}" "${res[$rt.pause_rss_total]}")")
}

for rt in $runtimes; do
  case "$rt" in
    kraal)
      start_kraald "$work"
      sleep 1
      measure kraal "$kraald_pid" "$work/kraal/kraal.sock" monitor_pids ""
      stop_pid "$kraald_pid"
      kraald_pid=
      ;;
    containerd)
      write_containerd_config "$work/containerd" "$KRAAL_TEST_REGISTRY" "$pause_image"
      start_containerd "$work/containerd"
      sleep 2
      measure containerd "$containerd_pid" "$work/containerd/containerd.sock" shim_pids \
        "sleep 2147483647"
      stop_pid "$containerd_pid"
      containerd_pid=
      ;;
    *)
      say "unknown runtime $rt in BENCH_RUNTIMES (kraal, containerd)"
      exit 2
      ;;
  esac
done

for line in "${json_lines[@]}"; do echo "$line"; done

# --- the table
val() { echo "${res[$1]:-}"; }
mb() { [ -n "$1" ] && awk -v k="$1" 'BEGIN {printf "%.1f", k/1024}' || echo -; }
ms() { [ -n "$1" ] && awk -v v="$1" 'BEGIN {printf "%.1f", v}' || echo -; }
ratio() { [ -n "$1" ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a/b; else print "-"}' || echo -; }
# verdict VALUE LIMIT: "yes" if VALUE <= LIMIT, "NO" if not, "-" if unknown.
verdict() { [ -n "$1" ] && [ "$1" != - ] && awk -v v="$1" -v l="$2" 'BEGIN {print (v <= l) ? "yes" : "NO"}' || echo -; }
row() { printf '%-44s %10s %11s %7s   %s\n' "$@"; }

echo
row "pod benchmark ($iterations lifecycles)" kraal containerd ratio "goal (met?)"
r=$(ratio "$(val kraal.RunPodSandbox)" "$(val containerd.RunPodSandbox)")
row "RunPodSandbox median (ms)" "$(ms "$(val kraal.RunPodSandbox)")" \
  "$(ms "$(val containerd.RunPodSandbox)")" "$r" "ratio <= 0.33 ($(verdict "$r" 0.3333))"
r=$(ratio "$(val kraal.CreateContainer+StartContainer)" "$(val containerd.CreateContainer+StartContainer)")
row "CreateContainer+StartContainer median (ms)" "$(ms "$(val kraal.CreateContainer+StartContainer)")" \
  "$(ms "$(val containerd.CreateContainer+StartContainer)")" "$r" "ratio <= 0.50 ($(verdict "$r" 0.5))"
for call in StopContainer+RemoveContainer StopPodSandbox+RemovePodSandbox; do
  row "$call median (ms)" "$(ms "$(val "kraal.$call")")" "$(ms "$(val "containerd.$call")")" \
    "$(ratio "$(val "kraal.$call")" "$(val "containerd.$call")")" ""
done
row "$fill_pods pods x $fill_containers containers, all started (ms)" "$(ms "$(val kraal.fill_ms)")" \
  "$(ms "$(val containerd.fill_ms)")" "$(ratio "$(val kraal.fill_ms)" "$(val containerd.fill_ms)")" ""
row "... all stopped and removed (ms)" "$(ms "$(val kraal.clean_ms)")" \
  "$(ms "$(val containerd.clean_ms)")" "$(ratio "$(val kraal.clean_ms)" "$(val containerd.clean_ms)")" ""
row "daemon RSS at start (MB)" "$(mb "$(val kraal.rss_start)")" "$(mb "$(val containerd.rss_start)")" \
  "$(ratio "$(val kraal.rss_start)" "$(val containerd.rss_start)")" ""
row "daemon RSS idle, 0 containers (MB)" "$(mb "$(val kraal.rss_idle)")" "$(mb "$(val containerd.rss_idle)")" \
  "$(ratio "$(val kraal.rss_idle)" "$(val containerd.rss_idle)")" ""
k=$(val kraal.rss_full)
row "daemon RSS, $fill_total running containers (MB)" "$(mb "$k")" "$(mb "$(val containerd.rss_full)")" \
  "$(ratio "$k" "$(val containerd.rss_full)")" "kraald <= 30 MB ($(verdict "$([ -n "$k" ] && mb "$k")" 30))"
row "daemon RSS after removing them (MB)" "$(mb "$(val kraal.rss_after)")" "$(mb "$(val containerd.rss_after)")" \
  "$(ratio "$(val kraal.rss_after)" "$(val containerd.rss_after)")" ""
row "monitors / shims for $fill_total containers" "$(val kraal.procs)" "$(val containerd.procs)" "" \
  "kraal: one per container; containerd: one per pod"
k=$(val kraal.proc_rss_median)
row "monitor / shim RSS median (MB)" "$(mb "$k")" "$(mb "$(val containerd.proc_rss_median)")" \
  "$(ratio "$k" "$(val containerd.proc_rss_median)")" "monitor <= 3 MB ($(verdict "$([ -n "$k" ] && mb "$k")" 3))"
row "monitors / shims RSS total (MB)" "$(mb "$(val kraal.proc_rss_total)")" \
  "$(mb "$(val containerd.proc_rss_total)")" \
  "$(ratio "$(val kraal.proc_rss_total)" "$(val containerd.proc_rss_total)")" ""
row "monitors / shims PSS total (MB)" "$(mb "$(val kraal.proc_pss_total)")" \
  "$(mb "$(val containerd.proc_pss_total)")" \
  "$(ratio "$(val kraal.proc_pss_total)" "$(val containerd.proc_pss_total)")" "shared pages split"
row "pause processes (RSS total, MB)" "$(val kraal.pause_n) ($(mb "$(val kraal.pause_rss_total)"))" \
  "$(val containerd.pause_n) ($(mb "$(val containerd.pause_rss_total)"))" "" ""
