#!/usr/bin/env bash
# Sets up what is missing and runs every check and test: formatting, clippy, unit tests and
# the end-to-end tests that drive kraald through its CRI socket against a real registry, on
# this host and then, the same suite, in a cgroup v2 + systemd guest (../shared/vm): the
# kind of node Kubernetes runs on today, which this hybrid-cgroup host without systemd is not.
# Exits non-zero on the first failure. KRAAL_TEST_GUEST=0 runs this host's suite only.
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

vm=../shared/vm/vm
if [ "${KRAAL_TEST_GUEST:-1}" = 0 ]; then
  echo "== the v2 + systemd guest: not run (KRAAL_TEST_GUEST=0)"
  exit 0
fi
if [ ! -x "$vm" ]; then
  echo "test: $vm is missing, so the suite cannot run on a cgroup v2 + systemd node;" \
    "put ../shared beside the checkout, or set KRAAL_TEST_GUEST=0 to test this host only" >&2
  exit 1
fi
echo "== the suite in the cgroup v2 + systemd guest ($vm test)"
# The host's registry is not needed there: the guest starts its own from hack/registry.sh.
cleanup
trap - EXIT
# The guest is software-emulated here (TCG, ~10x slower): it cannot push 50 Mbit/s flows
# through HTB steadily enough for these two rate-accuracy tests (seen: 47.0 Mbit/s for a 50M
# cap, and a rate change that took 1.5 s to show). They measure tc and HTB, which do not
# depend on the cgroup hierarchy, and they ran above on this host; every other test,
# shaping's cgroup and eBPF ones included, runs in the guest too.
guest_skips=(
  --skip a_live_rate_change_takes_effect_within_a_second
  --skip egress_cap_holds_for_one_and_four_flows_without_a_first_second_overshoot
)
"$vm" test -- -- "${guest_skips[@]}" "$@"
