//! Seccomp: which profile a container gets, kraal's `RuntimeDefault` profile, and
//! `localhost` profiles (Docker/Kubernetes JSON) converted to the OCI form.
//!
//! # Which profile
//! containerd 1.6's rules: the `seccomp` field wins over the deprecated
//! `seccomp_profile_path`; `RuntimeDefault` (also `runtime/default`, `docker/default`) is
//! kraal's profile below, `Unconfined` and an empty path mean none, `Localhost` loads a
//! file. Privileged containers never get one. A profile that cannot be loaded is an error,
//! never silently "no profile".
//!
//! # The default profile: a deny list
//! Docker's profile is an allow list of ~370 syscalls with ERRNO for the rest. kraal's is
//! the complement written the other way round: default `SCMP_ACT_ALLOW`, and
//! `SCMP_ACT_ERRNO(EPERM)` for exactly the calls Docker/containerd keep out of a default
//! container — each group lifted when the container holds the capability Docker lifts
//! it for (so adding `SYS_ADMIN` behaves as on Docker). Why the deny form:
//!
//! * The dangerous surface is a short, stable list (kernel-global facilities that are not
//!   namespaced: modules, kexec, keyrings, clocks, swap, accounting, mounts and namespace
//!   creation, bpf/perf, io_uring). An allow list has to grow with every kernel; missing
//!   one (`clone3`, `faccessat2`, `close_range`, `statx` each broke real images under
//!   Docker's list) breaks programs with an EPERM they do not expect.
//! * The cost: a *new* dangerous syscall is allowed until it is added here. The groups are
//!   written so that new members of a family are easy to add, and every new kernel's
//!   syscall list should be reviewed against them.
//! * Unlisted architectures are killed by libseccomp (bad-arch action), so a 64-bit
//!   process cannot dodge the list through the 32-bit ABI: the x86 and x32 ABIs (arm on
//!   aarch64) are listed and get the same rules.
//! * `clone` is denied only with a namespace flag set (one rule per flag, so any flag
//!   matches). `clone3` passes its flags in memory seccomp cannot read, so it gets
//!   `ENOSYS` and libc falls back to `clone` (Docker does the same). `socket(AF_VSOCK)` is
//!   denied: vsock is not network-namespaced and reaches the host or hypervisor.
//! * Left allowed, as Docker does on kernels ≥ 4.8: `ptrace`, `process_vm_readv/writev`,
//!   `personality`; they stay within what the process could already reach.
//!
//! MASKED_EQ note: the OCI spec (and runc) read `value` as the mask and `valueTwo` as the
//! datum; libcontainer 0.7 reads them the other way round. The clone rules here use the
//! same number for both, which means the same under either reading.

use std::path::{Component, Path, PathBuf};

use kraal_api::runtime::v1 as cri;
use oci_spec::runtime::{
    Arch, Capabilities, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall,
    LinuxSyscallBuilder,
};
use serde::Deserialize;

use super::caps::CapSets;
use super::{SpecError, oci};

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;
/// Largest profile file kraal reads.
const MAX_PROFILE: u64 = 4 << 20;

/// The seccomp profile a container asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// No filter.
    Unconfined,
    /// kraal's default profile ([`runtime_default`]).
    RuntimeDefault,
    /// A profile file (absolute path).
    Localhost(PathBuf),
}

/// Picks the profile from the security context (see the module docs for the rules).
pub fn choose(
    sc: &cri::LinuxContainerSecurityContext,
    profile_root: &Path,
) -> Result<Choice, SpecError> {
    use cri::security_profile::ProfileType;
    if let Some(p) = &sc.seccomp {
        return match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Ok(Choice::RuntimeDefault),
            Ok(ProfileType::Unconfined) => Ok(Choice::Unconfined),
            Ok(ProfileType::Localhost) => localhost(
                "linux.security_context.seccomp.localhost_ref",
                &p.localhost_ref,
                profile_root,
            ),
            Err(_) => Err(SpecError::invalid(format!(
                "container config: linux.security_context.seccomp.profile_type {}: expected \
                 RuntimeDefault (0), Unconfined (1) or Localhost (2)",
                p.profile_type
            ))),
        };
    }
    #[allow(deprecated)]
    let path = sc.seccomp_profile_path.as_str();
    match path {
        "" | "unconfined" => Ok(Choice::Unconfined),
        "runtime/default" | "docker/default" => Ok(Choice::RuntimeDefault),
        p => match p.strip_prefix("localhost/") {
            Some(rest) => localhost(
                "linux.security_context.seccomp_profile_path",
                rest,
                profile_root,
            ),
            None => Err(SpecError::invalid(format!(
                "container config: linux.security_context.seccomp_profile_path {p:?}: \
                 expected \"runtime/default\", \"docker/default\", \"unconfined\" or \
                 \"localhost/<path>\""
            ))),
        },
    }
}

fn localhost(field: &str, r: &str, root: &Path) -> Result<Choice, SpecError> {
    if r.is_empty() {
        return Err(SpecError::invalid(format!(
            "container config: {field}: a Localhost seccomp profile needs a path"
        )));
    }
    let p = Path::new(r);
    if p.is_absolute() {
        return Ok(Choice::Localhost(p.to_path_buf()));
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(SpecError::invalid(format!(
            "container config: {field} {r:?}: a relative profile path must stay inside the \
             seccomp profile root {} (no \"..\")",
            root.display()
        )));
    }
    Ok(Choice::Localhost(root.join(p)))
}

/// The OCI seccomp section for `choice`, given the container's capabilities (profiles
/// lift rules by capability).
pub(crate) fn resolve(
    choice: &Choice,
    caps: &CapSets,
    warnings: &mut Vec<String>,
) -> Result<Option<LinuxSeccomp>, SpecError> {
    match choice {
        Choice::Unconfined => Ok(None),
        Choice::RuntimeDefault => runtime_default(&caps.main).map(Some),
        Choice::Localhost(path) => load_profile(path, &caps.main, warnings).map(Some),
    }
}

/// The seccomp architectures of this build's host: the native ABI and the ones its
/// kernel also runs (x86 and x32 on x86_64, arm on aarch64).
pub fn host_architectures() -> Vec<Arch> {
    if cfg!(target_arch = "x86_64") {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
    } else if cfg!(target_arch = "x86") {
        vec![Arch::ScmpArchX86]
    } else if cfg!(target_arch = "arm") {
        vec![Arch::ScmpArchArm]
    } else {
        vec![Arch::ScmpArchNative]
    }
}

/// One group of the default deny list: denied unless the container holds one of
/// `lifted_by`.
struct Gate {
    lifted_by: &'static [Capability],
    names: &'static [&'static str],
}

/// The default deny list (EPERM), by the capability Docker lifts each group for.
const GATES: &[Gate] = &[
    // Never in a default container, whatever its capabilities: kernel keyrings are not
    // namespaced, vm86 and the removed calls are legacy attack surface, io_uring has been
    // the source of a run of privilege escalations (Docker 25 dropped it too).
    Gate {
        lifted_by: &[],
        names: &[
            "add_key",
            "keyctl",
            "request_key",
            "vm86",
            "vm86old",
            "uselib",
            "nfsservctl",
            "_sysctl",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
        ],
    },
    // Mounts, namespaces and other global state that CAP_SYS_ADMIN guards.
    Gate {
        lifted_by: &[Capability::SysAdmin],
        names: &[
            "mount",
            "umount",
            "umount2",
            "mount_setattr",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "move_mount",
            "open_tree",
            "pivot_root",
            "unshare",
            "setns",
            "swapon",
            "swapoff",
            "quotactl",
            "quotactl_fd",
            "fanotify_init",
            "name_to_handle_at",
            "lookup_dcookie",
            "sethostname",
            "setdomainname",
        ],
    },
    Gate {
        lifted_by: &[Capability::SysModule],
        names: &[
            "init_module",
            "finit_module",
            "delete_module",
            "create_module",
            "query_module",
            "get_kernel_syms",
        ],
    },
    Gate {
        lifted_by: &[Capability::SysBoot],
        names: &["reboot", "kexec_load", "kexec_file_load"],
    },
    Gate {
        lifted_by: &[Capability::SysTime],
        names: &[
            "settimeofday",
            "stime",
            "clock_settime",
            "clock_settime64",
            "clock_adjtime",
            "clock_adjtime64",
        ],
    },
    Gate {
        lifted_by: &[Capability::SysRawio],
        names: &["iopl", "ioperm"],
    },
    Gate {
        lifted_by: &[Capability::SysPacct],
        names: &["acct"],
    },
    Gate {
        lifted_by: &[Capability::SysPtrace],
        names: &["kcmp", "userfaultfd"],
    },
    Gate {
        lifted_by: &[Capability::SysNice],
        names: &["get_mempolicy", "set_mempolicy", "mbind", "move_pages"],
    },
    Gate {
        lifted_by: &[Capability::Syslog],
        names: &["syslog"],
    },
    Gate {
        lifted_by: &[Capability::SysTtyConfig],
        names: &["vhangup"],
    },
    Gate {
        lifted_by: &[Capability::DacReadSearch],
        names: &["open_by_handle_at"],
    },
    Gate {
        lifted_by: &[Capability::SysAdmin, Capability::Bpf],
        names: &["bpf"],
    },
    Gate {
        lifted_by: &[Capability::SysAdmin, Capability::Perfmon],
        names: &["perf_event_open"],
    },
];

/// `CLONE_NEW*` flags `clone` may not carry without CAP_SYS_ADMIN.
const CLONE_NS_FLAGS: [u64; 7] = [
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];
const AF_VSOCK: u64 = 40;

fn deny(names: Vec<String>, errno: u32) -> Result<LinuxSyscall, SpecError> {
    oci(
        "linux.seccomp.syscalls",
        LinuxSyscallBuilder::default()
            .names(names)
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(errno)
            .build(),
    )
}

fn deny_if_arg(
    name: &str,
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: u64,
    errno: u32,
) -> Result<LinuxSyscall, SpecError> {
    let arg = oci(
        "linux.seccomp.syscalls.args",
        LinuxSeccompArgBuilder::default()
            .index(index)
            .value(value)
            .value_two(value_two)
            .op(op)
            .build(),
    )?;
    oci(
        "linux.seccomp.syscalls",
        LinuxSyscallBuilder::default()
            .names(vec![name.to_owned()])
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(errno)
            .args(vec![arg])
            .build(),
    )
}

/// kraal's `RuntimeDefault` profile for a container holding `caps` (bounding set); see the
/// module docs for its design.
pub fn runtime_default(caps: &Capabilities) -> Result<LinuxSeccomp, SpecError> {
    let held = |c: &[Capability]| c.iter().any(|c| caps.contains(c));
    let mut syscalls = Vec::new();
    for gate in GATES {
        if !held(gate.lifted_by) {
            syscalls.push(deny(
                gate.names.iter().map(|s| (*s).to_owned()).collect(),
                EPERM,
            )?);
        }
    }
    if !held(&[Capability::SysAdmin]) {
        for flag in CLONE_NS_FLAGS {
            // (flags & flag) == flag; mask and datum equal, see the module docs.
            syscalls.push(deny_if_arg(
                "clone",
                0,
                LinuxSeccompOperator::ScmpCmpMaskedEq,
                flag,
                flag,
                EPERM,
            )?);
        }
        syscalls.push(deny(vec!["clone3".to_owned()], ENOSYS)?);
    }
    syscalls.push(deny_if_arg(
        "socket",
        0,
        LinuxSeccompOperator::ScmpCmpEq,
        AF_VSOCK,
        0,
        EPERM,
    )?);
    oci(
        "linux.seccomp",
        LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActAllow)
            .architectures(host_architectures())
            .syscalls(syscalls)
            .build(),
    )
}

// ---- localhost profiles ----------------------------------------------------------------

/// A profile file as Docker, containerd and the Kubernetes Security Profiles Operator write
/// it (a superset of the OCI `linux.seccomp` object).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProfileFile {
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Option<Vec<Arch>>,
    #[serde(default)]
    arch_map: Option<Vec<ArchMap>>,
    #[serde(default)]
    flags: Option<Vec<LinuxSeccompFilterFlag>>,
    #[serde(default)]
    listener_path: Option<PathBuf>,
    #[serde(default)]
    listener_metadata: Option<String>,
    #[serde(default)]
    syscalls: Option<Vec<SyscallRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: Arch,
    #[serde(default)]
    sub_architectures: Option<Vec<Arch>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SyscallRule {
    #[serde(default)]
    names: Option<Vec<String>>,
    /// Docker's old single-name form.
    #[serde(default)]
    name: Option<String>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<ArgRule>>,
    #[serde(default)]
    includes: Option<Filter>,
    #[serde(default)]
    excludes: Option<Filter>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArgRule {
    index: usize,
    value: u64,
    #[serde(default)]
    value_two: Option<u64>,
    op: LinuxSeccompOperator,
}

/// Docker's conditions on a rule.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Option<Vec<String>>,
    #[serde(default)]
    arches: Option<Vec<String>>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// The host facts a profile's conditions look at.
#[derive(Debug, Clone)]
pub(crate) struct ProfileHost {
    /// Go's name of the architecture (`amd64`, `arm64`), as Docker's `arches` use.
    pub go_arch: &'static str,
    /// The host's native seccomp architecture.
    pub native: Arch,
    /// Kernel (major, minor).
    pub kernel: Option<(u32, u32)>,
}

impl ProfileHost {
    fn detect() -> Self {
        let go_arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        let native = host_architectures()
            .first()
            .copied()
            .unwrap_or(Arch::ScmpArchNative);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .and_then(|s| parse_kernel(&s));
        Self {
            go_arch,
            native,
            kernel,
        }
    }
}

fn parse_kernel(s: &str) -> Option<(u32, u32)> {
    let mut it = s.trim().split(['.', '-', '+']);
    let major = it.next()?.parse().ok()?;
    let minor = it.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

/// Loads a profile file and converts it for a container holding `caps`.
pub fn load_profile(
    path: &Path,
    caps: &Capabilities,
    warnings: &mut Vec<String>,
) -> Result<LinuxSeccomp, SpecError> {
    use std::io::Read;
    let what = format!("seccomp localhost profile {:?}", path.display().to_string());
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_PROFILE + 1).read_to_string(&mut text))
        .map_err(|e| SpecError::from_io(&what, &e))?;
    if text.len() as u64 > MAX_PROFILE {
        return Err(SpecError::invalid(format!(
            "{what}: larger than {MAX_PROFILE} bytes"
        )));
    }
    convert_profile(&text, caps, &ProfileHost::detect(), warnings)
        .map_err(|e| SpecError::new(e.kind(), format!("{what}: {}", e.message())))
}

/// Parses and converts a profile's JSON text.
pub(crate) fn convert_profile(
    text: &str,
    caps: &Capabilities,
    host: &ProfileHost,
    warnings: &mut Vec<String>,
) -> Result<LinuxSeccomp, SpecError> {
    let file: ProfileFile = serde_json::from_str(text)
        .map_err(|e| SpecError::invalid(format!("not a valid seccomp profile: {e}")))?;
    if file.default_action == LinuxSeccompAction::ScmpActNotify {
        return Err(SpecError::invalid(
            "defaultAction SCMP_ACT_NOTIFY is not supported (the container could not talk to \
             its listener)",
        ));
    }

    let architectures = match (&file.architectures, &file.arch_map) {
        (Some(a), _) if !a.is_empty() => a.clone(),
        (_, Some(map)) => map
            .iter()
            .filter(|m| m.architecture == host.native)
            .flat_map(|m| {
                std::iter::once(m.architecture).chain(m.sub_architectures.iter().flatten().copied())
            })
            .collect(),
        _ => Vec::new(),
    };

    let mut syscalls = Vec::new();
    let mut masked_eq_asymmetric = false;
    for (i, rule) in file.syscalls.iter().flatten().enumerate() {
        let mut names: Vec<String> = rule.names.clone().unwrap_or_default();
        if let Some(n) = &rule.name {
            names.push(n.clone());
        }
        if names.is_empty() || names.iter().any(String::is_empty) {
            return Err(SpecError::invalid(format!(
                "syscalls[{i}]: expected \"names\" with at least one non-empty syscall name"
            )));
        }
        if !applies(rule.includes.as_ref(), true, caps, host)?
            || !applies(rule.excludes.as_ref(), false, caps, host)?
        {
            continue;
        }
        if rule.action == LinuxSeccompAction::ScmpActNotify && file.listener_path.is_none() {
            return Err(SpecError::invalid(format!(
                "syscalls[{i}]: action SCMP_ACT_NOTIFY needs a listenerPath"
            )));
        }
        let mut b = LinuxSyscallBuilder::default()
            .names(names)
            .action(rule.action);
        if let Some(e) = rule.errno_ret {
            b = b.errno_ret(e);
        }
        if let Some(args) = &rule.args
            && !args.is_empty()
        {
            let mut out = Vec::with_capacity(args.len());
            for (j, a) in args.iter().enumerate() {
                if a.index > 5 {
                    return Err(SpecError::invalid(format!(
                        "syscalls[{i}].args[{j}].index {}: expected 0 to 5",
                        a.index
                    )));
                }
                if a.op == LinuxSeccompOperator::ScmpCmpMaskedEq
                    && a.value != a.value_two.unwrap_or(0)
                {
                    masked_eq_asymmetric = true;
                }
                let mut ab = LinuxSeccompArgBuilder::default()
                    .index(a.index)
                    .value(a.value)
                    .op(a.op);
                if let Some(v2) = a.value_two {
                    ab = ab.value_two(v2);
                }
                out.push(oci("linux.seccomp.syscalls.args", ab.build())?);
            }
            b = b.args(out);
        }
        syscalls.push(oci("linux.seccomp.syscalls", b.build())?);
    }
    if masked_eq_asymmetric {
        warnings.push(
            "seccomp profile uses SCMP_CMP_MASKED_EQ with value != valueTwo: the OCI spec reads \
             value as the mask and valueTwo as the datum, libcontainer 0.7 the other way round"
                .to_owned(),
        );
    }

    let mut b = LinuxSeccompBuilder::default()
        .default_action(file.default_action)
        .syscalls(syscalls);
    if let Some(e) = file.default_errno_ret {
        b = b.default_errno_ret(e);
    }
    if !architectures.is_empty() {
        b = b.architectures(architectures);
    }
    if let Some(f) = file.flags
        && !f.is_empty()
    {
        b = b.flags(f);
    }
    if let Some(p) = file.listener_path {
        b = b.listener_path(p);
    }
    if let Some(m) = file.listener_metadata {
        b = b.listener_metadata(m);
    }
    oci("linux.seccomp", b.build())
}

/// Docker's `includes` (all must hold) / `excludes` (none may hold) on caps, arches and
/// minimum kernel.
fn applies(
    filter: Option<&Filter>,
    include: bool,
    caps: &Capabilities,
    host: &ProfileHost,
) -> Result<bool, SpecError> {
    let Some(f) = filter else { return Ok(true) };
    let mut conds = Vec::new();
    for c in f.caps.iter().flatten() {
        let cap = super::caps::parse_capability(c).ok_or_else(|| {
            SpecError::invalid(format!("includes/excludes: {c:?} is not a capability"))
        })?;
        conds.push(caps.contains(&cap));
    }
    if let Some(arches) = &f.arches
        && !arches.is_empty()
    {
        // Docker: the rule's arch list matches if it names this host's architecture.
        let any = arches.iter().any(|a| a == host.go_arch);
        if include {
            conds.push(any);
        } else if any {
            return Ok(false);
        }
    }
    if let Some(k) = &f.min_kernel {
        let want = parse_kernel(k).ok_or_else(|| {
            SpecError::invalid(format!(
                "minKernel {k:?}: expected a kernel version like \"4.8\""
            ))
        })?;
        conds.push(host.kernel.is_some_and(|have| have >= want));
    }
    Ok(if include {
        conds.iter().all(|c| *c)
    } else {
        // An exclude drops the rule when any of its conditions holds.
        !conds.iter().any(|c| *c)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ErrorKind;
    use crate::spec::caps::{ALL_CAPABILITIES, DEFAULT_CAPABILITIES};

    fn default_caps() -> Capabilities {
        DEFAULT_CAPABILITIES.into_iter().collect()
    }

    /// The errno a profile returns for `name` called with no arguments matched, or
    /// `None` if allowed.
    fn denied(p: &LinuxSeccomp, name: &str) -> Option<u32> {
        p.syscalls()
            .iter()
            .flatten()
            .filter(|s| s.names().iter().any(|n| n == name) && s.args().is_none())
            .map(|s| s.errno_ret().unwrap_or(EPERM))
            .next()
    }

    fn sc_with(
        seccomp: Option<cri::SecurityProfile>,
        path: &str,
    ) -> cri::LinuxContainerSecurityContext {
        #[allow(deprecated)]
        cri::LinuxContainerSecurityContext {
            seccomp,
            seccomp_profile_path: path.into(),
            ..Default::default()
        }
    }

    fn prof(t: cri::security_profile::ProfileType, r: &str) -> Option<cri::SecurityProfile> {
        Some(cri::SecurityProfile {
            profile_type: t as i32,
            localhost_ref: r.into(),
        })
    }

    #[test]
    fn choice() {
        use cri::security_profile::ProfileType as T;
        let root = Path::new("/var/lib/kubelet/seccomp");
        let c = |s, p| choose(&sc_with(s, p), root);
        assert_eq!(c(None, "").unwrap(), Choice::Unconfined);
        assert_eq!(c(None, "unconfined").unwrap(), Choice::Unconfined);
        assert_eq!(c(None, "runtime/default").unwrap(), Choice::RuntimeDefault);
        assert_eq!(c(None, "docker/default").unwrap(), Choice::RuntimeDefault);
        assert_eq!(
            c(None, "localhost//etc/p.json").unwrap(),
            Choice::Localhost("/etc/p.json".into())
        );
        assert_eq!(
            c(None, "localhost/profiles/a.json").unwrap(),
            Choice::Localhost(root.join("profiles/a.json"))
        );
        assert!(c(None, "localhost/../x").is_err());
        let e = c(None, "bogus").unwrap_err();
        assert!(
            e.message().contains("seccomp_profile_path \"bogus\""),
            "{e}"
        );
        // The field wins over the legacy path.
        assert_eq!(
            c(prof(T::RuntimeDefault, ""), "unconfined").unwrap(),
            Choice::RuntimeDefault
        );
        assert_eq!(
            c(prof(T::Unconfined, ""), "runtime/default").unwrap(),
            Choice::Unconfined
        );
        assert_eq!(
            c(prof(T::Localhost, "/x.json"), "").unwrap(),
            Choice::Localhost("/x.json".into())
        );
        assert_eq!(
            c(prof(T::Localhost, "x.json"), "").unwrap(),
            Choice::Localhost(root.join("x.json"))
        );
        assert!(c(prof(T::Localhost, ""), "").is_err());
        let bad = Some(cri::SecurityProfile {
            profile_type: 9,
            localhost_ref: String::new(),
        });
        assert!(c(bad, "").unwrap_err().message().contains("profile_type 9"));
    }

    #[test]
    fn default_blocks_the_dangerous_calls() {
        let p = runtime_default(&default_caps()).unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActAllow);
        assert_eq!(p.architectures().as_ref().unwrap(), &host_architectures());
        for name in [
            "unshare",
            "mount",
            "umount2",
            "setns",
            "pivot_root",
            "kexec_load",
            "reboot",
            "init_module",
            "finit_module",
            "delete_module",
            "bpf",
            "perf_event_open",
            "keyctl",
            "add_key",
            "request_key",
            "open_by_handle_at",
            "iopl",
            "ioperm",
            "acct",
            "settimeofday",
            "clock_settime",
            "userfaultfd",
            "quotactl",
            "lookup_dcookie",
            "swapon",
            "swapoff",
            "vm86",
            "io_uring_setup",
            "fsopen",
            "open_tree",
        ] {
            assert_eq!(denied(&p, name), Some(EPERM), "{name}");
        }
        assert_eq!(denied(&p, "clone3"), Some(ENOSYS));
        for name in ["read", "ptrace", "clone", "chroot", "personality", "socket"] {
            assert_eq!(denied(&p, name), None, "{name}");
        }
        // clone: one rule per namespace flag, including CLONE_NEWUSER.
        let clone_rules: Vec<_> = p
            .syscalls()
            .iter()
            .flatten()
            .filter(|s| s.names() == &["clone".to_owned()])
            .collect();
        assert_eq!(clone_rules.len(), 7);
        assert!(clone_rules.iter().any(|r| {
            let a = &r.args().as_ref().unwrap()[0];
            a.value() == 0x1000_0000
                && a.value_two() == Some(0x1000_0000)
                && a.op() == LinuxSeccompOperator::ScmpCmpMaskedEq
        }));
    }

    #[test]
    fn default_lifts_by_capability() {
        let mut caps = default_caps();
        caps.insert(Capability::SysAdmin);
        caps.insert(Capability::SysTime);
        let p = runtime_default(&caps).unwrap();
        for name in [
            "mount",
            "unshare",
            "setns",
            "bpf",
            "perf_event_open",
            "settimeofday",
        ] {
            assert_eq!(denied(&p, name), None, "{name}");
        }
        assert_eq!(denied(&p, "clone3"), None);
        assert_eq!(denied(&p, "keyctl"), Some(EPERM));
        assert_eq!(denied(&p, "reboot"), Some(EPERM));
        let all: Capabilities = ALL_CAPABILITIES.into_iter().collect();
        let p = runtime_default(&all).unwrap();
        assert_eq!(denied(&p, "reboot"), None);
        assert_eq!(denied(&p, "keyctl"), Some(EPERM));
    }

    fn host() -> ProfileHost {
        ProfileHost {
            go_arch: "amd64",
            native: Arch::ScmpArchX86_64,
            kernel: Some((6, 1)),
        }
    }

    #[test]
    fn convert_k8s_style_profile() {
        let text = r#"{
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "flags": ["SECCOMP_FILTER_FLAG_LOG"],
            "syscalls": [
                {"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"},
                {"name": "futex", "action": "SCMP_ACT_ALLOW", "comment": "old form"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                {"names": ["mkdir"], "action": "SCMP_ACT_LOG"}
            ]
        }"#;
        let mut w = Vec::new();
        let p = convert_profile(text, &default_caps(), &host(), &mut w).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(1));
        assert_eq!(p.architectures().as_ref().unwrap().len(), 3);
        assert_eq!(
            p.flags().as_ref().unwrap(),
            &[LinuxSeccompFilterFlag::SeccompFilterFlagLog]
        );
        let s = p.syscalls().as_ref().unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[1].names(), &["futex".to_owned()]);
        assert_eq!(s[2].args().as_ref().unwrap()[0].value(), 8);
        assert_eq!(s[3].action(), LinuxSeccompAction::ScmpActLog);
    }

    #[test]
    fn convert_docker_style_conditions() {
        let text = r#"{
            "defaultAction": "SCMP_ACT_ERRNO",
            "archMap": [
                {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
                {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
            ],
            "syscalls": [
                {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
                {"names": ["newer"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "7.0"}},
                {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64", "x32"]}},
                {"names": ["arm_fadvise64_64"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm", "arm64"]}},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
                 "excludes": {"caps": ["CAP_SYS_ADMIN"]}}
            ]
        }"#;
        let mut w = Vec::new();
        let p = convert_profile(text, &default_caps(), &host(), &mut w).unwrap();
        assert_eq!(
            p.architectures().as_ref().unwrap(),
            &[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
        );
        let names: Vec<_> = p
            .syscalls()
            .iter()
            .flatten()
            .map(|s| s.names()[0].clone())
            .collect();
        assert_eq!(names, ["read", "ptrace", "arch_prctl", "clone"]);
        assert_eq!(w.len(), 1, "MASKED_EQ warning: {w:?}");
        let mut caps = default_caps();
        caps.insert(Capability::SysAdmin);
        let p = convert_profile(text, &caps, &host(), &mut Vec::new()).unwrap();
        let names: Vec<_> = p
            .syscalls()
            .iter()
            .flatten()
            .map(|s| s.names()[0].clone())
            .collect();
        assert_eq!(names, ["read", "mount", "ptrace", "arch_prctl"]);
    }

    #[test]
    fn bad_profiles() {
        let caps = default_caps();
        let bad = |t: &str| convert_profile(t, &caps, &host(), &mut Vec::new()).unwrap_err();
        assert!(
            bad("{")
                .message()
                .starts_with("not a valid seccomp profile")
        );
        assert!(
            bad(r#"{"syscalls": []}"#)
                .message()
                .contains("defaultAction")
        );
        assert!(
            bad(r#"{"defaultAction": "SCMP_ACT_BOGUS"}"#)
                .message()
                .contains("SCMP_ACT_BOGUS")
        );
        assert!(
            bad(r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": [], "action": "SCMP_ACT_ALLOW"}]}"#)
                .message()
                .contains("syscalls[0]")
        );
        assert!(
            bad(r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]}"#)
                .message()
                .contains("index 9")
        );
        assert!(
            bad(r#"{"defaultAction": "SCMP_ACT_NOTIFY"}"#)
                .message()
                .contains("NOTIFY")
        );
        assert_eq!(bad("[]").kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn load_from_file() {
        let d = tempfile::tempdir().unwrap();
        let good = d.path().join("good.json");
        std::fs::write(
            &good,
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["unshare"], "action": "SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        let p = load_profile(&good, &default_caps(), &mut Vec::new()).unwrap();
        assert_eq!(denied(&p, "unshare"), Some(EPERM));
        let bad = d.path().join("bad.json");
        std::fs::write(&bad, "not json").unwrap();
        let e = load_profile(&bad, &default_caps(), &mut Vec::new()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(
            e.message().starts_with("seccomp localhost profile \""),
            "{e}"
        );
        assert!(e.message().contains("bad.json"), "{e}");
        let e = load_profile(
            &d.path().join("missing.json"),
            &default_caps(),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(
            e.message()
                .contains("missing.json\": no such file or directory"),
            "{e}"
        );
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_kernel("4.8"), Some((4, 8)));
        assert_eq!(parse_kernel("5"), Some((5, 0)));
        assert_eq!(parse_kernel("x"), None);
    }

    /// Loads the default profile with libcontainer's seccomp code in a child process and
    /// checks the kernel refuses `unshare(CLONE_NEWUSER)`, `mount` and
    /// `clone(CLONE_NEWUSER)` while plain calls and `fork` still work.
    #[test]
    fn default_profile_in_the_kernel() {
        const CHILD: &str = "KRAAL_SPEC_SECCOMP_CHILD";
        if std::env::var_os(CHILD).is_some() {
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "spec::seccomp::tests::seccomp_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("SECCOMP-CHILD-OK"),
            "child did not run: {stdout}"
        );
    }

    /// The child half of [`default_profile_in_the_kernel`]; a no-op in a normal run.
    #[test]
    fn seccomp_child() {
        if std::env::var_os("KRAAL_SPEC_SECCOMP_CHILD").is_none() {
            return;
        }
        let p = runtime_default(&default_caps()).unwrap();
        nix::sys::prctl::set_no_new_privs().unwrap();
        libcontainer::seccomp::initialize_seccomp(&p).unwrap();
        let errno = |r: libc::c_long| {
            if r == -1 {
                std::io::Error::last_os_error().raw_os_error()
            } else {
                None
            }
        };
        // SAFETY: raw syscalls with integer arguments; none of them touch our memory.
        unsafe {
            assert_eq!(
                errno(libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER)),
                Some(libc::EPERM)
            );
            assert_eq!(
                errno(libc::syscall(
                    libc::SYS_mount,
                    c"none".as_ptr(),
                    c"/nonexistent-kraal-seccomp-test".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    0
                )),
                Some(libc::EPERM)
            );
            assert_eq!(
                errno(libc::syscall(
                    libc::SYS_clone,
                    libc::CLONE_NEWUSER | libc::SIGCHLD,
                    0,
                    0,
                    0,
                    0
                )),
                Some(libc::EPERM)
            );
            assert_eq!(
                errno(libc::syscall(
                    libc::SYS_clone,
                    libc::CLONE_NEWNET | libc::SIGCHLD,
                    0,
                    0,
                    0,
                    0
                )),
                Some(libc::EPERM)
            );
            assert_eq!(
                errno(libc::syscall(libc::SYS_clone3, 0, 0)),
                Some(libc::ENOSYS)
            );
            assert_eq!(
                errno(libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0)),
                Some(libc::EPERM)
            );
            assert!(libc::getpid() > 0);
        }
        // Plain process creation still works (std uses clone3 → ENOSYS → clone/vfork).
        let st = std::process::Command::new("/bin/true").status().unwrap();
        assert!(st.success());
        println!("SECCOMP-CHILD-OK");
    }
}
