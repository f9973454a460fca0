#!/usr/bin/env bash
# Sets up what is missing, builds kraald and runs it in the foreground as root.
# Without arguments it uses the embedded defaults (socket /run/kraal/kraal.sock);
# any argument is passed to kraald (e.g. --config FILE, --socket PATH, --log-level debug).
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/setup.sh
if [ "$(id -u)" -ne 0 ]; then
  echo "run: kraald manages containers and cgroups and must run as root" >&2
  exit 1
fi
# The development pod network, unless the node already has one (never overwritten).
conf_dir=/etc/cni/net.d
if ! ls "$conf_dir"/*.conflist "$conf_dir"/*.conf "$conf_dir"/*.json >/dev/null 2>&1; then
  echo "run: installing hack/cni/10-kraal.conflist into $conf_dir (bridge kraal0, 10.231.0.0/16)" >&2
  install -D -m 0644 hack/cni/10-kraal.conflist "$conf_dir/10-kraal.conflist"
fi
# kraald runs every container under kraal-monitor (package kraal-runtime), which it looks for
# beside itself: the three packages are built together (a kraald unit test checks this line).
cargo build --release --bins -p kraald -p kraal-runtime -p kraalctl
bin="${CARGO_TARGET_DIR:-target}/release"
echo "run: talk to it with $bin/kraalctl: 'kraalctl cri version|pods|containers|images'" >&2
echo "run: reads the CRI socket (--cri-socket, default /run/kraal/kraal.sock); 'kraalctl pod ...' uses" >&2
echo "run: the admin socket (--socket, default /run/kraal/admin.sock). crictl works too, if installed." >&2
exec "$bin/kraald" "$@"
