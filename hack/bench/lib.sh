# shellcheck shell=bash
# Shared by the benchmark scripts (sourced, not run).

# rss_kb PID: VmRSS in kB, 0 once the process is gone.
rss_kb() { awk '/^VmRSS:/ {print $2; found=1} END {if (!found) print 0}' "/proc/$1/status" 2>/dev/null || echo 0; }

# wait_socket PATH PID: until PATH is a socket; fails if PID exits first or after 10 s.
wait_socket() {
  local _
  for _ in $(seq 1 200); do
    [ -S "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || { echo "bench: the daemon (pid $2) exited before opening $1" >&2; return 1; }
    sleep 0.05
  done
  echo "bench: $1 did not appear" >&2
  return 1
}

# release_dir: where cargo puts release binaries (CARGO_TARGET_DIR is honoured).
release_dir() { echo "${CARGO_TARGET_DIR:-$PWD/target}/release"; }

# our_procs NAME NEEDLE: pids whose executable is named NAME and whose command line
# mentions NEEDLE (a path inside the run's work dir: only what this run started matches).
our_procs() {
  local name=$1 needle=$2 p exe cmd
  for p in /proc/[0-9]*; do
    exe=$(readlink "$p/exe" 2>/dev/null) || continue
    exe=${exe% (deleted)}
    [ "${exe##*/}" = "$name" ] || continue
    cmd=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
    [[ "$cmd" == *"$needle"* ]] && echo "${p#/proc/}"
  done
  return 0
}

# stop_pid PID: TERM, up to 15 s, then KILL.
stop_pid() {
  local pid=$1 i
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || break
    [ "$i" -lt 150 ] || { echo "bench: pid $pid ignored SIGTERM; sending SIGKILL" >&2; kill -KILL "$pid" 2>/dev/null || true; }
    sleep 0.1
  done
  wait "$pid" 2>/dev/null || true
}

# unmount_under DIR: everything mounted at or below DIR, deepest first.
unmount_under() {
  local root=$1 mp i mps
  for i in 1 2 3 4 5; do
    mapfile -t mps < <(awk -v r="$root" '$5 == r || index($5, r "/") == 1 {print $5}' \
      /proc/self/mountinfo | sort -r)
    [ ${#mps[@]} -gt 0 ] || return 0
    for mp in "${mps[@]}"; do umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || true; done
  done
  awk -v r="$root" '$5 == r || index($5, r "/") == 1 {found=1} END {exit !found}' \
    /proc/self/mountinfo && return 1
  return 0
}

# cgroup_tree_pids ROOT: every process in the cgroup tree ROOT (e.g. /kraal-bench.XXXX) of
# any hierarchy.
cgroup_tree_pids() {
  local root=${1#/} ctrl
  for ctrl in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
    [ -d "$ctrl$root" ] || continue
    find "$ctrl$root" -name cgroup.procs -exec cat {} + 2>/dev/null || true
  done | sort -un
}

# kill_cgroup_tree ROOT: SIGKILL every process in it until none is left (up to 5 s).
kill_cgroup_tree() {
  local i left
  for i in $(seq 1 50); do
    left=$(cgroup_tree_pids "$1")
    [ -n "$left" ] || return 0
    # shellcheck disable=SC2086 # one pid per word
    kill -KILL $left 2>/dev/null
    sleep 0.1
  done
}

# remove_cgroup_tree ROOT: rmdir the tree in every hierarchy, deepest first (up to 5 s).
remove_cgroup_tree() {
  local root=${1#/} ctrl i left
  for i in $(seq 1 50); do
    left=
    for ctrl in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
      [ -d "$ctrl$root" ] || continue
      find "$ctrl$root" -depth -type d -exec rmdir {} \; 2>/dev/null
      [ -d "$ctrl$root" ] && left="$left $ctrl$root"
    done
    [ -n "$left" ] || return 0
    sleep 0.1
  done
  echo "bench: cleanup: could not remove the cgroups$left" >&2
  return 1
}

# write_containerd_config DIR REGISTRY [SANDBOX_IMAGE [CNI_CONF_DIR]]: a containerd 1.6
# config whose root, state, sockets and opt dir all live in DIR, with REGISTRY (host:port,
# loopback) as a plain-HTTP mirror of itself. restrict_oom_score_adj because this VM refuses
# to lower it. The pods' network config is read from CNI_CONF_DIR (default DIR/cni, empty),
# the plugins from Debian's /usr/lib/cni; pod network namespaces are mounted under DIR's
# state dir rather than /run/netns, so removing DIR removes them.
write_containerd_config() {
  local dir=$1 registry=$2 sandbox_image=${3:-} cni_conf_dir=${4:-$1/cni}
  mkdir -p "$cni_conf_dir"
  {
    cat <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
TOML
    [ -n "$sandbox_image" ] && echo "  sandbox_image = \"$sandbox_image\""
    cat <<TOML
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$cni_conf_dir"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."$registry"]
    endpoint = ["http://$registry"]
TOML
  } >"$dir/config.toml"
}

# Takes down both runtimes of a side-by-side run: on failure the ends of their logs, then their
# pods through CRI while they still run (kraal's pods outlive kraald; each runtime's own CNI DEL
# runs), the daemons, and whatever is left of ours — monitors, shims, the pods' processes (by
# cgroup), mounts under the work dir, the cgroup tree.
# Usage: stop_runtimes RC WORK BENCH KRAALD_PID CONTAINERD_PID CGROUP_ROOT
stop_runtimes() {
  local rc=$1 work=$2 bench=$3 kraald_pid=$4 containerd_pid=$5 cg_root=$6 pid
  if [ "$rc" -ne 0 ]; then
    [ -s "$work/kraal/log" ] && { say "end of kraald's log ($work/kraal/log):"; tail -n 40 "$work/kraal/log" >&2; }
    [ -s "$work/containerd/log" ] && { say "end of containerd's log:"; tail -n 20 "$work/containerd/log" >&2; }
  fi
  if [ -n "$kraald_pid" ] && kill -0 "$kraald_pid" 2>/dev/null; then
    timeout 300 "$bench" --socket "$work/kraal/kraal.sock" --runtime kraal clean >/dev/null ||
      say "cleanup: removing kraal's pods through CRI failed; removing what is left"
  fi
  if [ -n "$containerd_pid" ] && kill -0 "$containerd_pid" 2>/dev/null; then
    timeout 300 "$bench" --socket "$work/containerd/containerd.sock" --runtime containerd clean >/dev/null ||
      say "cleanup: removing containerd's pods through CRI failed; removing what is left"
  fi
  stop_pid "$kraald_pid"
  stop_pid "$containerd_pid"
  for pid in $(our_procs kraal-monitor "$work/ks/") $(our_procs containerd-shim-runc-v2 "$work/containerd/"); do
    say "cleanup: killing leftover $(cat "/proc/$pid/comm" 2>/dev/null) $pid"
    kill -KILL "$pid" 2>/dev/null
  done
  kill_cgroup_tree "$cg_root"
  unmount_under "$work" || say "cleanup: mounts under $work would not go away"
  remove_cgroup_tree "$cg_root"
}

# Stops the run's registry and removes its work dir, unless something is still mounted there.
remove_work_dir() {
  local work=$1
  hack/registry.sh stop "$work/registry" >/dev/null 2>&1
  if awk -v r="$work" 'index($5, r "/") == 1 {found=1} END {exit !found}' /proc/self/mountinfo; then
    say "cleanup: something is still mounted under $work; leaving it in place"
  else
    rm -rf --one-file-system "$work"
  fi
}

# Starts the run's own registry under WORK/registry (remove_work_dir stops it) and sets
# KRAAL_TEST_REGISTRY, image (busybox) and pause_image from it.
start_run_registry() {
  mkdir -p "$1/registry"
  hack/registry.sh start "$1/registry" >/dev/null
  # shellcheck disable=SC1091
  source "$1/registry/registry.env"
  image="$KRAAL_TEST_REGISTRY/kraal-test/busybox:latest"
  pause_image="$KRAAL_TEST_REGISTRY/kraal-test/pause:3.9"
}

# The EXIT trap of a side-by-side run with nothing else to undo: both runtimes taken down,
# the work dir removed, the run's exit status kept. Reads the run's globals work, bench,
# kraald_pid, containerd_pid and cg_root.
teardown_run() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  stop_runtimes "$rc" "$work" "$bench" "$kraald_pid" "$containerd_pid" "$cg_root"
  remove_work_dir "$work"
  exit "$rc"
}

# Installs containerd and runc, the peer the side-by-side benchmarks compare with, when missing.
need_containerd() {
  command -v containerd >/dev/null 2>&1 && command -v runc >/dev/null 2>&1 && return 0
  say "installing containerd and runc (the peer to compare with)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq containerd runc >/dev/null
}

# Builds kraald, kraal-monitor and kraal-bench for release; sets release, bench and kraald_bin.
build_release() {
  cargo build --release -p kraal-bench -p kraald -p kraal-runtime
  release=$(release_dir)
  bench=$release/kraal-bench
  kraald_bin=$release/kraald
  [ -x "$release/kraal-monitor" ] ||
    { say "$release/kraal-monitor is missing after the build"; exit 1; }
}

# start_kraald WORK [ARGS...]: kraald with its socket, root and log under WORK/kraal and a short
# state dir, WORK/ks (the monitors' control sockets live in it, and a unix socket path holds at
# most 107 bytes); ARGS go to kraald too. Sets kraald_pid once the socket answers.
start_kraald() {
  local work=$1
  shift
  mkdir -p "$work/kraal"
  "$kraald_bin" "$@" --socket "$work/kraal/kraal.sock" --root "$work/kraal/root" \
    --state "$work/ks" --log-level warn 2>"$work/kraal/log" &
  kraald_pid=$!
  wait_socket "$work/kraal/kraal.sock" "$kraald_pid"
}

# start_containerd DIR: containerd from DIR/config.toml (write_containerd_config), logging to
# DIR/log. Sets containerd_pid once the socket answers.
start_containerd() {
  local dir=$1
  containerd --config "$dir/config.toml" --log-level warn 2>"$dir/log" &
  containerd_pid=$!
  wait_socket "$dir/containerd.sock" "$containerd_pid"
}
