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
cargo build --release -p kraald -p kraalctl
echo "run: kraalctl is target/release/kraalctl (admin socket /run/kraal/admin.sock by default)" >&2
exec target/release/kraald "$@"
