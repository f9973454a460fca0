//! OCI runtime spec from a CRI container request.
//!
//! [`build_spec`] turns a CRI `CreateContainer` request (the container config, what the
//! sandbox set up for the pod, the image config and the mounted rootfs) into the
//! `config.json` libcontainer runs. It follows what containerd 1.6 and CRI-O build, so a
//! pod behaves the same on kraal as on them; where kraal differs, the module that does
//! it says why.
//!
//! Everything here is a function of its input except four reads of the host, each
//! named where it happens: the image's `/etc/passwd` and `/etc/group` (read inside the
//! rootfs, never through a symlink out of it), `stat` of mount sources and devices, a
//! `localhost` seccomp profile, and, for privileged containers, the list of host devices.
//! Facts about the host's cgroups come in through [`HostFacts`] so tests can choose them.

mod caps;
mod devices;
mod mounts;
mod namespaces;
mod process;
mod resources;
pub mod seccomp;
mod user;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use kraal_api::runtime::v1 as cri;
use oci_spec::OciSpecError;
use oci_spec::runtime::{
    LinuxBuilder, LinuxCapabilities, LinuxResourcesBuilder, ProcessBuilder, RootBuilder, Spec,
    UserBuilder,
};

pub use caps::{DEFAULT_CAPABILITIES, parse_capability};
pub use user::{GroupEntry, PasswdEntry, ResolvedUser, parse_group, parse_passwd};

/// What the pod's sandbox set up, as the container sees it.
#[derive(Debug, Clone, Default)]
pub struct SandboxContext {
    /// Sandbox (pod) id.
    pub id: String,
    /// The pod's hostname (the node's when the pod asked for none); `HOSTNAME` in the
    /// environment.
    pub hostname: String,
    /// Pinned network namespace of the pod; `None` = the node's (hostNetwork).
    pub net_ns: Option<PathBuf>,
    /// Pinned IPC namespace of the pod; `None` = the node's (hostIPC).
    pub ipc_ns: Option<PathBuf>,
    /// Pinned UTS namespace of the pod (its hostname is already set there); `None` only for
    /// hostNetwork pods, whose containers share the node's UTS namespace (as on containerd).
    pub uts_ns: Option<PathBuf>,
    /// PID namespace of the container.
    pub pid: PidMode,
    /// The pod's `/etc/hosts`, bind-mounted into the container when set.
    pub etc_hosts: Option<PathBuf>,
    /// The pod's `/etc/resolv.conf`, bind-mounted into the container when set.
    pub resolv_conf: Option<PathBuf>,
    /// The pod's `/etc/hostname`, bind-mounted into the container when set.
    pub etc_hostname: Option<PathBuf>,
    /// The pod's `/dev/shm` (a tmpfs the sandbox mounted, or the node's for hostIPC),
    /// bind-mounted read-write; `None` = a private 64 MiB tmpfs.
    pub shm: Option<PathBuf>,
    /// The pod's cgroup, cgroupfs form (`/kubepods/burstable/pod123`).
    pub cgroup_parent: String,
    /// Namespaced sysctls from the sandbox config (`linux.sysctls`).
    pub sysctls: HashMap<String, String>,
    /// Whether the sandbox config allows privileged containers.
    pub privileged: bool,
}

/// The PID namespace a container runs in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PidMode {
    /// A new PID namespace of its own (CRI `CONTAINER`, the default).
    #[default]
    Container,
    /// Join this PID namespace: the pod's infra process's `/proc/<pid>/ns/pid` (CRI `POD`),
    /// or the target container's (CRI `TARGET`, ephemeral debug containers).
    Pod(PathBuf),
    /// The node's PID namespace (CRI `NODE`, hostPID): no PID namespace entry.
    Node,
}

/// Facts about the host that change the spec; [`HostFacts::detect`] reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFacts {
    /// The host runs cgroup v2 only (`/sys/fs/cgroup/cgroup.controllers` exists). Hybrid
    /// and v1 hosts are `false`: resources are v1 values there.
    pub cgroup_v2: bool,
    /// The memory controller accounts swap (`memory.memsw.*` on v1, `memory.swap.max` on v2);
    /// without it a swap limit cannot be set.
    pub swap_accounting: bool,
    /// The hugetlb controller is where libcontainer's cgroup manager can apply limits: a v1
    /// hierarchy on v1 and hybrid hosts (hugetlb bound only to cgroup2 does not count,
    /// libcontainer's v1 manager refuses every hugepage limit then), `cgroup.controllers`
    /// on v2 hosts.
    pub hugetlb: bool,
    /// The capabilities this host lets a process have: kraald's bounding set (`CapBnd`), bit
    /// n = capability n. A container can be granted none outside it (capset fails).
    pub capability_bound: u64,
}

impl HostFacts {
    /// Reads the facts from `/sys/fs/cgroup`, `/proc/self/cgroup` and `/proc/self/status`.
    pub fn detect() -> Self {
        let root = Path::new("/sys/fs/cgroup");
        let cgroup_v2 = root.join("cgroup.controllers").exists();
        let swap_accounting = if cgroup_v2 {
            // The root cgroup has no memory.swap.max; look at our own cgroup's.
            std::fs::read_to_string("/proc/self/cgroup")
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
                })
                .map(|p| {
                    root.join(p.trim_start_matches('/'))
                        .join("memory.swap.max")
                        .exists()
                })
                .unwrap_or(false)
        } else {
            root.join("memory/memory.memsw.limit_in_bytes").exists()
        };
        let hugetlb = if cgroup_v2 {
            std::fs::read_to_string(root.join("cgroup.controllers"))
                .is_ok_and(|s| s.split_whitespace().any(|c| c == "hugetlb"))
        } else {
            std::fs::read_to_string("/proc/self/cgroup")
                .is_ok_and(|s| v1_hierarchy_has(&s, "hugetlb"))
        };
        let capability_bound = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| caps::bounding_set_from_status(&s))
            .unwrap_or_else(|| {
                // Without /proc the bounding set is unknown: assume every capability, as
                // before (libcontainer's capset then reports anything the host lacks).
                tracing::warn!("cannot read CapBnd from /proc/self/status; assuming all");
                u64::MAX
            });
        Self {
            cgroup_v2,
            swap_accounting,
            hugetlb,
            capability_bound,
        }
    }
}

/// Whether `/proc/self/cgroup` text lists `controller` on a v1 hierarchy (`N:a,b:/path`
/// with N > 0; the `0::` line is cgroup2). libcontainer's v1 manager finds a controller's
/// cgroup exactly this way, so a controller missing here is one it cannot use.
fn v1_hierarchy_has(proc_self_cgroup: &str, controller: &str) -> bool {
    proc_self_cgroup.lines().any(|line| {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers)) = (parts.next(), parts.next()) else {
            return false;
        };
        id != "0" && controllers.split(',').any(|c| c == controller)
    })
}

/// Everything [`build_spec`] needs.
#[derive(Debug, Clone, Copy)]
pub struct SpecInput<'a> {
    /// kraal's id of the container.
    pub container_id: &'a str,
    /// The CRI container config.
    pub config: &'a cri::ContainerConfig,
    /// What the pod's sandbox set up.
    pub sandbox: &'a SandboxContext,
    /// The whole OCI/Docker image config JSON (`{"config": {"Env", "Entrypoint", "Cmd",
    /// "WorkingDir", "User", ...}, ...}`).
    pub image_config: &'a serde_json::Value,
    /// The mounted rootfs; `/etc/passwd` and `/etc/group` are read inside it.
    pub rootfs: &'a Path,
    /// `linux.cgroupsPath`, cgroupfs form (`<cgroup_parent>/kraal-<id>`).
    pub cgroups_path: &'a str,
    /// The lowest `oom_score_adj` this host lets kraal set; lower requests are raised to
    /// it, with a warning.
    pub oom_score_adj_floor: i32,
    /// Where relative `localhost` seccomp profiles live (kubelet's `<root>/seccomp`);
    /// absolute references are used as they are.
    pub seccomp_profile_root: &'a Path,
    /// The host's cgroup facts.
    pub host: HostFacts,
}

/// The built spec, with what kraald should log and record.
#[derive(Debug, Clone)]
pub struct BuiltSpec {
    /// The OCI runtime spec (`config.json`).
    pub spec: Spec,
    /// Things kraal changed or ignored in the request, one sentence each; kraald logs them.
    pub warnings: Vec<String>,
    /// The user the process runs as (CRI `ContainerStatus.user` reports it).
    pub user: ResolvedUser,
}

/// Which gRPC status an error maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is wrong or impossible on its own terms.
    InvalidArgument,
    /// Something the request names (a host path, a device, a profile) does not exist.
    NotFound,
    /// The request is fine but the host or the image is not in a state that allows it.
    FailedPrecondition,
    /// kraal does not implement what the request asks for.
    Unimplemented,
    /// A bug in kraal or an unexpected host error.
    Internal,
}

/// Why a spec could not be built. The message names the field, the value and what was
/// expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SpecError {
    kind: ErrorKind,
    message: String,
}

impl SpecError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl fmt::Display) -> Self {
        Self {
            kind,
            message: message.to_string(),
        }
    }
    pub(crate) fn invalid(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
    pub(crate) fn internal(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
    /// The gRPC status to answer with.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    /// The message, without the kind.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// An error from reading `what` on the host, classified by its errno.
    pub(crate) fn from_io(what: impl fmt::Display, err: &std::io::Error) -> Self {
        let kind = match err.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::PermissionDenied => ErrorKind::FailedPrecondition,
            _ => ErrorKind::Internal,
        };
        Self::new(kind, format!("{what}: {}", io_reason(err)))
    }
}

/// `"no such file or directory"` rather than `"No such file or directory (os error 2)"`.
pub(crate) fn io_reason(err: &std::io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_lowercase(),
        None => err.to_string(),
    }
}

/// Maps an oci-spec builder error into an internal error naming what was built.
pub(crate) fn oci<T>(what: &str, r: Result<T, OciSpecError>) -> Result<T, SpecError> {
    r.map_err(|e| SpecError::internal(format!("building the OCI spec's {what}: {e}")))
}

/// Builds the OCI runtime spec for a CRI `CreateContainer` request.
pub fn build_spec(input: &SpecInput) -> Result<BuiltSpec, SpecError> {
    let config = input.config;
    let sandbox = input.sandbox;
    let mut warnings = Vec::new();
    let linux_cfg = config.linux.clone().unwrap_or_default();
    let sc = linux_cfg.security_context.clone().unwrap_or_default();
    let privileged = sc.privileged;
    if privileged && !sandbox.privileged {
        return Err(SpecError::invalid(format!(
            "linux.security_context.privileged: a privileged container needs a privileged \
             sandbox, and sandbox {} is not privileged",
            sandbox.id
        )));
    }

    // Process: args, env, cwd, user, capabilities.
    let image = process::ImageConfig::from_json(input.image_config)?;
    let args = process::process_args(&config.command, &config.args, &image)?;
    let env = process::merge_env(&image.env, &config.envs, &sandbox.hostname, config.tty)?;
    let cwd = process::working_dir(&config.working_dir, &image.working_dir)?;
    let user = user::resolve(&sc, &image.user, input.rootfs)?;
    let caps = caps::capabilities(
        sc.capabilities.as_ref(),
        privileged,
        input.host.capability_bound,
        &mut warnings,
    )?;
    let caps_oci: LinuxCapabilities = caps::to_oci(&caps)?;

    let resources_cfg = linux_cfg.resources.clone().unwrap_or_default();
    let oom = resources::oom_score_adj(
        linux_cfg.resources.as_ref(),
        input.oom_score_adj_floor,
        &mut warnings,
    )?;

    let mut process = ProcessBuilder::default()
        .terminal(config.tty)
        .args(args)
        .env(env)
        .cwd(cwd)
        .user(oci(
            "process.user",
            UserBuilder::default()
                .uid(user.uid)
                .gid(user.gid)
                .additional_gids(user.additional_gids.clone())
                .build(),
        )?)
        .capabilities(caps_oci);
    // Only `Some(true)` is written: libcontainer 0.7 loads seccomp before dropping
    // capabilities only when the field is absent, and after dropping them (which then needs
    // no_new_privs) whenever it is present, so an explicit `false` makes every seccomp
    // profile fail to load with EACCES.
    if sc.no_new_privs {
        process = process.no_new_privileges(true);
    }
    if let Some(oom) = oom {
        process = process.oom_score_adj(oom);
    }
    if let Some(profile) = apparmor_profile(&sc)? {
        process = process.apparmor_profile(profile);
    }
    let mut process = oci("process", process.build())?;
    if !sc.no_new_privs {
        // The builder fills unset fields from oci-spec's Process default, which says `true`.
        process.set_no_new_privileges(None);
    }
    // oci-spec's Process default carries RLIMIT_NOFILE 1024; containerd sets no rlimits,
    // so the container inherits those of the process that starts it (kraal-monitor).
    process.set_rlimits(None);

    // Mounts.
    let mounts = mounts::build(&config.mounts, sandbox, privileged, &sc, &mut warnings)?;

    // Devices and the device cgroup.
    let devices::Devices {
        devices: linux_devices,
        rules: device_rules,
    } = devices::build(
        &config.devices,
        privileged,
        Path::new("/dev"),
        &mut warnings,
    )?;

    // Resources.
    let res = resources::build(&resources_cfg, input.host, &mut warnings)?;
    let mut resources = LinuxResourcesBuilder::default().devices(device_rules);
    if let Some(cpu) = res.cpu {
        resources = resources.cpu(cpu);
    }
    if let Some(memory) = res.memory {
        resources = resources.memory(memory);
    }
    if !res.hugepage_limits.is_empty() {
        resources = resources.hugepage_limits(res.hugepage_limits);
    }
    if let Some(unified) = res.unified {
        resources = resources.unified(unified);
    }
    let resources = oci("linux.resources", resources.build())?;

    // Namespaces and sysctls.
    let namespaces = namespaces::namespaces(sandbox, input.host)?;
    let sysctls = namespaces::sysctls(sandbox)?;

    // Seccomp, masked and read-only paths.
    let seccomp = if privileged {
        None
    } else {
        let choice = seccomp::choose(&sc, input.seccomp_profile_root)?;
        seccomp::resolve(&choice, &caps, &mut warnings)?
    };
    let (masked, readonly) = if privileged {
        (Vec::new(), Vec::new())
    } else {
        (
            if sc.masked_paths.is_empty() {
                mounts::DEFAULT_MASKED_PATHS
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect()
            } else {
                sc.masked_paths.clone()
            },
            if sc.readonly_paths.is_empty() {
                mounts::DEFAULT_READONLY_PATHS
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect()
            } else {
                sc.readonly_paths.clone()
            },
        )
    };
    if let Some(se) = &sc.selinux_options
        && !(se.user.is_empty()
            && se.role.is_empty()
            && se.r#type.is_empty()
            && se.level.is_empty())
    {
        warnings.push(
            "linux.security_context.selinux_options ignored: kraal does not apply SELinux labels"
                .to_owned(),
        );
    }

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .devices(linux_devices)
        .resources(resources)
        .cgroups_path(PathBuf::from(input.cgroups_path))
        .masked_paths(masked)
        .readonly_paths(readonly);
    if !sysctls.is_empty() {
        linux = linux.sysctl(sysctls);
    }
    if let Some(seccomp) = seccomp {
        linux = linux.seccomp(seccomp);
    }
    if let Some(prop) = mounts.rootfs_propagation {
        linux = linux.rootfs_propagation(prop);
    }
    let linux = oci("linux", linux.build())?;

    let root = oci(
        "root",
        RootBuilder::default()
            .path(input.rootfs.to_path_buf())
            .readonly(sc.readonly_rootfs)
            .build(),
    )?;

    let mut spec = Spec::default();
    spec.set_hostname(None)
        .set_domainname(None)
        .set_root(Some(root))
        .set_process(Some(process))
        .set_mounts(Some(mounts.mounts))
        .set_annotations(Some(config.annotations.clone()))
        .set_linux(Some(linux))
        .set_hooks(None);
    tracing::debug!(
        container = input.container_id,
        sandbox = %sandbox.id,
        warnings = warnings.len(),
        "built OCI spec"
    );
    Ok(BuiltSpec {
        spec,
        warnings,
        user,
    })
}

/// AppArmor: only an explicit `localhost` profile is applied (libcontainer loads it by
/// name); kraal ships no default AppArmor profile, so `RuntimeDefault` means none.
fn apparmor_profile(sc: &cri::LinuxContainerSecurityContext) -> Result<Option<String>, SpecError> {
    use cri::security_profile::ProfileType;
    if sc.privileged {
        return Ok(None);
    }
    if let Some(p) = &sc.apparmor {
        return match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::Localhost) if p.localhost_ref.is_empty() => Err(SpecError::invalid(
                "linux.security_context.apparmor: profile_type Localhost needs a localhost_ref",
            )),
            Ok(ProfileType::Localhost) => Ok(Some(p.localhost_ref.clone())),
            Ok(_) => Ok(None),
            Err(_) => Err(SpecError::invalid(format!(
                "linux.security_context.apparmor.profile_type {}: expected RuntimeDefault (0), \
                 Unconfined (1) or Localhost (2)",
                p.profile_type
            ))),
        };
    }
    #[allow(deprecated)]
    let legacy = sc.apparmor_profile.as_str();
    match legacy {
        "" | "runtime/default" | "unconfined" => Ok(None),
        s => match s.strip_prefix("localhost/") {
            Some(name) if !name.is_empty() => Ok(Some(name.to_owned())),
            _ => Err(SpecError::invalid(format!(
                "linux.security_context.apparmor_profile {s:?}: expected \"runtime/default\", \
                 \"unconfined\" or \"localhost/<profile>\""
            ))),
        },
    }
}

#[cfg(test)]
mod tests;
