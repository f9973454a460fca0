#!/usr/bin/env bash
# Installs what kraal needs to build, run and test on a fresh Debian machine of this kind
# (root, Rust toolchain present). Safe to run again: it only installs what is missing.
set -euo pipefail

need_packages=()
want() { # want <command-or-path> <debian package>
  if ! command -v "$1" >/dev/null 2>&1 && [ ! -e "$1" ]; then
    need_packages+=("$2")
  fi
}

want docker-registry docker-registry   # the test registry
want /bin/busybox busybox-static      # the test images' userland
want htpasswd apache2-utils           # basic-auth registry for auth tests
want python3 python3                  # hack/testimages.py builds and pushes test images
want curl curl
want ip iproute2
want gcc gcc                          # -sys crates (zstd) build C
want openssl openssl                  # the token-auth registry signs its tokens
want pkg-config pkg-config            # libseccomp-sys finds libseccomp through it
want /usr/include/seccomp.h libseccomp-dev # libcontainer with the libseccomp feature
want clang-19 clang-19                # kraal-ebpf compiles its C eBPF programs for -target bpf
want bpftool bpftool                  # kraal-ebpf's build.rs dumps vmlinux.h from kernel BTF
want /usr/include/bpf/bpf_helpers.h libbpf-dev # bpf_helpers.h/bpf_endian.h for those programs
want tc iproute2                      # kraal-net drives HTB, IFB and cls_bpf filters through tc
want iperf3 iperf3                    # bandwidth tests and benchmarks (kraal-net, hack/bench)
# Pod networking (bridge, host-local, loopback, portmap; hack/cni/10-kraal.conflist) and the CNI
# bandwidth plugin, the bench baseline.
for plugin in bridge host-local loopback portmap bandwidth; do
  want /usr/lib/cni/$plugin containernetworking-plugins
done
want iptables iptables                # portmap's hostPort rules

if [ ${#need_packages[@]} -gt 0 ]; then
  echo "setup: installing ${need_packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2046
  apt-get install -y -qq $(printf '%s\n' "${need_packages[@]}" | sort -u) >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "setup: cargo not found; kraal needs a Rust toolchain (stable 1.95 or newer)" >&2
    exit 1
  fi
fi
