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

# write_containerd_config DIR REGISTRY [SANDBOX_IMAGE]: a containerd 1.6 config whose
# root, state, sockets and opt dir all live in DIR, with REGISTRY (host:port, loopback) as a
# plain-HTTP mirror of itself. restrict_oom_score_adj because this VM refuses to lower it.
write_containerd_config() {
  local dir=$1 registry=$2 sandbox_image=${3:-}
  mkdir -p "$dir/cni"
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
TOML
    [ -n "$sandbox_image" ] && echo "  sandbox_image = \"$sandbox_image\""
    cat <<TOML
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."$registry"]
    endpoint = ["http://$registry"]
TOML
  } >"$dir/config.toml"
}
