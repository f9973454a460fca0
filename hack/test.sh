#!/usr/bin/env bash
# Sets up what is missing and runs every check and test: formatting, clippy, unit tests and
# the end-to-end tests that drive kraald through its CRI socket against a real registry.
# Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/setup.sh
if [ "$(id -u)" -ne 0 ]; then
  echo "test: the tests create real containers, cgroups and mounts and must run as root" >&2
  exit 1
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== build"
cargo build --workspace --all-targets --locked

fixtures=$(mktemp -d /tmp/kraal-test-registry.XXXXXX)
cleanup() {
  hack/registry.sh stop "$fixtures" || true
  rm -rf "$fixtures"
}
trap cleanup EXIT
echo "== test registry"
hack/registry.sh start "$fixtures"
set -a
# shellcheck disable=SC1091
source "$fixtures/registry.env"
set +a

echo "== cargo test"
cargo test --workspace --locked -- "$@"
