//! Compiles the C eBPF programs in `bpf/` into BPF objects in OUT_DIR.
//!
//! There is no `rust-src` on the build machines, so the programs are C built by clang for the
//! `bpf` target. Their kernel types come from a `vmlinux.h` generated here from the running
//! kernel's BTF (never committed: it must match the kernel the object is built against).

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, exit};

const CLANG: &str = "clang-19";
const BPFTOOL: &str = "bpftool";
const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";
const PROGRAMS: &[&str] = &["ports", "bandwidth"];

fn main() {
    println!("cargo:rerun-if-changed=bpf");
    println!("cargo:rerun-if-changed=build.rs");
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_else(|| fail("OUT_DIR is not set")));

    require_tool(CLANG, "clang-19");
    require_tool(BPFTOOL, "bpftool");
    if !Path::new(KERNEL_BTF).exists() {
        fail(&format!(
            "{KERNEL_BTF} is missing: the kernel must be built with CONFIG_DEBUG_INFO_BTF"
        ));
    }
    if !Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
        fail("bpf/bpf_helpers.h is missing: install the Debian package `libbpf-dev`");
    }

    let vmlinux = out.join("vmlinux.h");
    let dump = run(Command::new(BPFTOOL).args(["btf", "dump", "file", KERNEL_BTF, "format", "c"]));
    if let Err(e) = std::fs::write(&vmlinux, dump) {
        fail(&format!("writing {}: {e}", vmlinux.display()));
    }

    // The multiarch include dir holds asm/types.h, which the libbpf headers pull in.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    let (bpf_arch, multiarch) = match arch.as_str() {
        "aarch64" => ("arm64", "aarch64-linux-gnu"),
        _ => ("x86", "x86_64-linux-gnu"),
    };
    for name in PROGRAMS {
        let src = PathBuf::from("bpf").join(format!("{name}.bpf.c"));
        let obj = out.join(format!("{name}.bpf.o"));
        run(Command::new(CLANG)
            // -g: maps are declared in `.maps` and need BTF to be parsed; -mcpu=v3: the
            // allocator needs atomic fetch-and-or, which older BPF ISA levels lack.
            .args([
                "-target", "bpf", "-g", "-O2", "-mcpu=v3", "-Wall", "-Werror",
            ])
            .arg(format!("-D__TARGET_ARCH_{bpf_arch}"))
            .arg("-I")
            .arg(&out)
            .arg(format!("-I/usr/include/{multiarch}"))
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj));
    }
}

fn require_tool(tool: &str, package: &str) {
    let found = Command::new(tool).arg("--version").output().is_ok();
    if !found {
        fail(&format!(
            "`{tool}` was not found: install the Debian package `{package}` (hack/setup.sh does)"
        ));
    }
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let shown = format!("{cmd:?}");
    match cmd.output() {
        Ok(out) if out.status.success() => out.stdout,
        Ok(out) => fail(&format!(
            "{shown} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(e) => fail(&format!("{shown} could not run: {e}")),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("kraal-ebpf build: {msg}");
    println!("cargo:warning=kraal-ebpf build: {msg}");
    exit(1)
}
