//! Mounts: containerd's defaults, the pod's files (`/etc/hosts`, `/etc/resolv.conf`,
//! `/etc/hostname`, `/dev/shm`), then the CRI mounts; masked and read-only paths.
//!
//! A CRI mount replaces a default mount at the same destination, and a CRI `/dev` drops
//! every default under `/dev`. The pod's files and the CRI mounts are ordered by depth
//! (stable), so `/etc` is mounted before `/etc/hosts` whatever order they came in.

use std::path::{Component, Path, PathBuf};

use kraal_api::runtime::v1 as cri;
use oci_spec::runtime::{Mount, MountBuilder};

use super::{ErrorKind, SandboxContext, SpecError, io_reason, oci};

/// containerd's default masked paths (plus `/sys/devices/virtual/powercap`, masked since
/// containerd 1.7 because RAPL energy counters leak what other tenants compute).
pub(crate) const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// containerd's default read-only paths.
pub(crate) const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The mounts and the rootfs propagation they need.
pub(crate) struct Mounts {
    pub mounts: Vec<Mount>,
    pub rootfs_propagation: Option<String>,
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    oci(
        "mounts",
        MountBuilder::default()
            .destination(PathBuf::from(dest))
            .typ(typ.to_owned())
            .source(PathBuf::from(source))
            .options(options.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
            .build(),
    )
}

fn bind(dest: &Path, source: &Path, options: Vec<String>) -> Result<Mount, SpecError> {
    oci(
        "mounts",
        MountBuilder::default()
            .destination(dest.to_path_buf())
            .typ("bind".to_owned())
            .source(source.to_path_buf())
            .options(options)
            .build(),
    )
}

/// containerd's default mounts. `/sys` and `/sys/fs/cgroup` are read-only unless the
/// container is privileged.
pub(crate) fn default_mounts(privileged: bool) -> Result<Vec<Mount>, SpecError> {
    let ro_unless_privileged = if privileged { "rw" } else { "ro" };
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", ro_unless_privileged],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &[
                "nosuid",
                "noexec",
                "nodev",
                "relatime",
                ro_unless_privileged,
            ],
        )?,
    ])
}

/// An absolute, clean container path: `//a/./b/` → `/a/b`; `..` is refused.
fn clean_container_path(field: &str, p: &str) -> Result<PathBuf, SpecError> {
    if !p.starts_with('/') {
        return Err(SpecError::invalid(format!(
            "container config: {field} {p:?}: expected an absolute path"
        )));
    }
    let mut out = PathBuf::from("/");
    for c in Path::new(p).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(SpecError::invalid(format!(
                    "container config: {field} {p:?}: \"..\" is not allowed"
                )));
            }
        }
    }
    Ok(out)
}

fn depth(p: &Path) -> usize {
    p.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count()
}

/// The propagation the container's root mount needs for a CRI mount's events to cross it:
/// a slave root receives the host's new mounts, a shared one also sends its own back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum RootPropagation {
    Slave,
    Shared,
}

impl RootPropagation {
    /// `linux.rootfsPropagation` as libcontainer 0.7 reads it: only "shared", "slave",
    /// "private" and "unbindable" (it applies them to the whole tree, MS_REC, itself) —
    /// runc's "rshared"/"rslave" are refused there as unknown.
    fn oci(self) -> &'static str {
        match self {
            RootPropagation::Slave => "slave",
            RootPropagation::Shared => "shared",
        }
    }
}

/// One CRI mount as an OCI bind mount; also returns the rootfs propagation it needs.
fn cri_mount(
    i: usize,
    m: &cri::Mount,
    warnings: &mut Vec<String>,
) -> Result<(Mount, Option<RootPropagation>), SpecError> {
    use cri::MountPropagation as P;
    let field = format!("mounts[{i}]");
    if m.image.as_ref().is_some_and(|img| !img.image.is_empty()) {
        return Err(SpecError::new(
            ErrorKind::Unimplemented,
            format!(
                "container config: {field} (container_path {:?}): image volumes are not \
                 supported by kraal",
                m.container_path
            ),
        ));
    }
    if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
        return Err(SpecError::new(
            ErrorKind::Unimplemented,
            format!(
                "container config: {field} (container_path {:?}): idmapped mounts \
                 (uidMappings/gidMappings) are not supported by kraal",
                m.container_path
            ),
        ));
    }
    let dest = clean_container_path(&format!("{field}.container_path"), &m.container_path)?;
    if m.host_path.is_empty() {
        return Err(SpecError::invalid(format!(
            "container config: {field}.host_path is empty (container_path {:?})",
            m.container_path
        )));
    }
    // The source must exist (kraal does not create it, so a typo fails here rather than
    // as an empty directory in the container); symlinks are resolved now, as containerd
    // does, so the runtime binds what was checked.
    let source = std::fs::canonicalize(&m.host_path).map_err(|e| {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::PermissionDenied => ErrorKind::FailedPrecondition,
            _ => ErrorKind::InvalidArgument,
        };
        SpecError::new(
            kind,
            format!(
                "container config: {field}: mount host_path {:?} (container_path {:?}): {}",
                m.host_path,
                m.container_path,
                io_reason(&e)
            ),
        )
    })?;
    let propagation = P::try_from(m.propagation).map_err(|_| {
        SpecError::invalid(format!(
            "container config: {field}.propagation {}: expected PROPAGATION_PRIVATE (0), \
             PROPAGATION_HOST_TO_CONTAINER (1) or PROPAGATION_BIDIRECTIONAL (2)",
            m.propagation
        ))
    })?;
    let (prop, rootfs) = match propagation {
        P::PropagationPrivate => ("rprivate", None),
        P::PropagationHostToContainer => ("rslave", Some(RootPropagation::Slave)),
        // containerd also checks that the host source is a shared mount; kraal only sets
        // the option, so a private source simply propagates nothing back.
        P::PropagationBidirectional => ("rshared", Some(RootPropagation::Shared)),
    };
    if m.recursive_read_only && !(m.readonly && propagation == P::PropagationPrivate) {
        return Err(SpecError::invalid(format!(
            "container config: {field} (container_path {:?}): recursive_read_only needs \
             readonly and PROPAGATION_PRIVATE",
            m.container_path
        )));
    }
    if m.selinux_relabel {
        warnings.push(format!(
            "{field} (container_path {:?}): selinux_relabel ignored: kraal does not relabel",
            m.container_path
        ));
    }
    let mut options = vec!["rbind".to_owned(), prop.to_owned()];
    options.push(if m.readonly { "ro" } else { "rw" }.to_owned());
    if m.recursive_read_only {
        options.push("rro".to_owned());
    }
    Ok((bind(&dest, &source, options)?, rootfs))
}

/// All mounts of the container.
pub(crate) fn build(
    cri_mounts: &[cri::Mount],
    sandbox: &SandboxContext,
    privileged: bool,
    sc: &cri::LinuxContainerSecurityContext,
    warnings: &mut Vec<String>,
) -> Result<Mounts, SpecError> {
    let mut own_warnings = Vec::new();
    let mut rootfs_propagation: Option<RootPropagation> = None;
    let mut extra: Vec<Mount> = Vec::new();
    for (i, m) in cri_mounts.iter().enumerate() {
        let (mnt, prop) = cri_mount(i, m, &mut own_warnings)?;
        if let Some(dup) = extra.iter().find(|e| e.destination() == mnt.destination()) {
            return Err(SpecError::invalid(format!(
                "container config: mounts[{i}].container_path {:?}: another mount already \
                 targets {}",
                m.container_path,
                dup.destination().display()
            )));
        }
        // Shared also receives, so one bidirectional mount makes the root shared.
        rootfs_propagation = rootfs_propagation.max(prop);
        extra.push(mnt);
    }
    let taken = |dest: &Path| extra.iter().any(|m| m.destination() == dest);
    let cri_dev = taken(Path::new("/dev"));

    // The pod's files: bind the sandbox's copies unless the request mounts its own.
    // Read-only exactly when the rootfs is (containerd).
    let file_opts = || {
        vec![
            "rbind".to_owned(),
            "rprivate".to_owned(),
            if sc.readonly_rootfs { "ro" } else { "rw" }.to_owned(),
        ]
    };
    let mut pod_mounts = Vec::new();
    for (dest, src) in [
        ("/etc/hostname", &sandbox.etc_hostname),
        ("/etc/hosts", &sandbox.etc_hosts),
        ("/etc/resolv.conf", &sandbox.resolv_conf),
    ] {
        if let Some(src) = src
            && !taken(Path::new(dest))
        {
            pod_mounts.push(bind(Path::new(dest), src, file_opts())?);
        }
    }
    let shm = Path::new("/dev/shm");
    if !taken(shm) && !cri_dev {
        pod_mounts.push(match &sandbox.shm {
            // The pod's shared tmpfs; read-write even in a read-only rootfs.
            Some(src) => bind(
                shm,
                src,
                ["rbind", "rprivate", "rw", "nosuid", "nodev", "noexec"]
                    .map(str::to_owned)
                    .to_vec(),
            )?,
            None => mount(
                "/dev/shm",
                "tmpfs",
                "shm",
                &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            )?,
        });
    }

    let mut mounts: Vec<Mount> = default_mounts(privileged)?
        .into_iter()
        .filter(|m| {
            let d = m.destination();
            let under_cri_dev = cri_dev && d.starts_with("/dev");
            !taken(d) && !under_cri_dev
        })
        .collect();
    let mut rest: Vec<Mount> = pod_mounts.into_iter().chain(extra).collect();
    rest.sort_by_key(|m| depth(m.destination()));
    mounts.extend(rest);
    warnings.append(&mut own_warnings);
    Ok(Mounts {
        mounts,
        rootfs_propagation: rootfs_propagation.map(|p| p.oci().to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(container: &str, host: &str, ro: bool, prop: cri::MountPropagation) -> cri::Mount {
        cri::Mount {
            container_path: container.into(),
            host_path: host.into(),
            readonly: ro,
            propagation: prop as i32,
            ..Default::default()
        }
    }

    fn find<'a>(ms: &'a [Mount], dest: &str) -> Option<&'a Mount> {
        ms.iter().find(|m| m.destination() == Path::new(dest))
    }

    fn opts(m: &Mount) -> Vec<String> {
        m.options().clone().unwrap_or_default()
    }

    fn sc() -> cri::LinuxContainerSecurityContext {
        Default::default()
    }

    #[test]
    fn defaults() {
        let ms = build(
            &[],
            &SandboxContext::default(),
            false,
            &sc(),
            &mut Vec::new(),
        )
        .unwrap();
        let dests: Vec<_> = ms
            .mounts
            .iter()
            .map(|m| m.destination().display().to_string())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup",
                "/dev/shm"
            ]
        );
        assert!(opts(find(&ms.mounts, "/sys").unwrap()).contains(&"ro".to_owned()));
        assert!(opts(find(&ms.mounts, "/dev/pts").unwrap()).contains(&"ptmxmode=0666".into()));
        let shm = find(&ms.mounts, "/dev/shm").unwrap();
        assert_eq!(shm.typ().as_deref(), Some("tmpfs"));
        assert!(ms.rootfs_propagation.is_none());
        let ms = build(
            &[],
            &SandboxContext::default(),
            true,
            &sc(),
            &mut Vec::new(),
        )
        .unwrap();
        assert!(opts(find(&ms.mounts, "/sys").unwrap()).contains(&"rw".to_owned()));
        assert!(opts(find(&ms.mounts, "/sys/fs/cgroup").unwrap()).contains(&"rw".to_owned()));
    }

    #[test]
    fn pod_files_and_shm() {
        let sb = SandboxContext {
            etc_hosts: Some("/run/pod/hosts".into()),
            resolv_conf: Some("/run/pod/resolv.conf".into()),
            etc_hostname: Some("/run/pod/hostname".into()),
            shm: Some("/run/pod/shm".into()),
            ..Default::default()
        };
        let ms = build(&[], &sb, false, &sc(), &mut Vec::new()).unwrap();
        let hosts = find(&ms.mounts, "/etc/hosts").unwrap();
        assert_eq!(hosts.source().as_deref(), Some(Path::new("/run/pod/hosts")));
        assert_eq!(opts(hosts), ["rbind", "rprivate", "rw"]);
        let shm = find(&ms.mounts, "/dev/shm").unwrap();
        assert_eq!(shm.typ().as_deref(), Some("bind"));
        assert!(opts(shm).contains(&"rw".to_owned()));
        let mut ro = sc();
        ro.readonly_rootfs = true;
        let ms = build(&[], &sb, false, &ro, &mut Vec::new()).unwrap();
        assert_eq!(
            opts(find(&ms.mounts, "/etc/resolv.conf").unwrap()),
            ["rbind", "rprivate", "ro"]
        );
        assert!(opts(find(&ms.mounts, "/dev/shm").unwrap()).contains(&"rw".to_owned()));
    }

    #[test]
    fn cri_mounts_propagation_and_override() {
        use cri::MountPropagation as P;
        let d = tempfile::tempdir().unwrap();
        let h = d.path().to_str().unwrap();
        let sb = SandboxContext {
            etc_hosts: Some("/run/pod/hosts".into()),
            ..Default::default()
        };
        let req = [
            m("/data/deep/x", h, false, P::PropagationPrivate),
            m("/data", h, true, P::PropagationHostToContainer),
            m("/etc/hosts", h, true, P::PropagationPrivate),
            m("/sys", h, false, P::PropagationPrivate),
        ];
        let ms = build(&req, &sb, false, &sc(), &mut Vec::new()).unwrap();
        assert_eq!(ms.rootfs_propagation.as_deref(), Some("slave"));
        let data = find(&ms.mounts, "/data").unwrap();
        assert_eq!(opts(data), ["rbind", "rslave", "ro"]);
        assert_eq!(data.typ().as_deref(), Some("bind"));
        assert_eq!(
            opts(find(&ms.mounts, "/data/deep/x").unwrap()),
            ["rbind", "rprivate", "rw"]
        );
        // Overrides: one /etc/hosts (the CRI one), one /sys (the CRI one).
        let hosts: Vec<_> = ms
            .mounts
            .iter()
            .filter(|m| m.destination() == Path::new("/etc/hosts"))
            .collect();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].source().as_deref(), Some(d.path()));
        assert_eq!(
            ms.mounts
                .iter()
                .filter(|m| m.destination() == Path::new("/sys"))
                .count(),
            1
        );
        assert_eq!(
            find(&ms.mounts, "/sys").unwrap().typ().as_deref(),
            Some("bind")
        );
        // Parents before children.
        let pos = |p: &str| {
            ms.mounts
                .iter()
                .position(|m| m.destination() == Path::new(p))
                .unwrap()
        };
        assert!(pos("/data") < pos("/data/deep/x"));

        let ms = build(
            &[
                m("/shared", h, false, P::PropagationBidirectional),
                m("/s2", h, false, P::PropagationHostToContainer),
            ],
            &sb,
            false,
            &sc(),
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(ms.rootfs_propagation.as_deref(), Some("shared"));
        assert_eq!(
            opts(find(&ms.mounts, "/shared").unwrap()),
            ["rbind", "rshared", "rw"]
        );
    }

    #[test]
    fn cri_dev_replaces_dev_defaults() {
        let d = tempfile::tempdir().unwrap();
        let req = [m(
            "/dev",
            d.path().to_str().unwrap(),
            false,
            cri::MountPropagation::PropagationPrivate,
        )];
        let ms = build(
            &req,
            &SandboxContext::default(),
            false,
            &sc(),
            &mut Vec::new(),
        )
        .unwrap();
        let under_dev: Vec<_> = ms
            .mounts
            .iter()
            .filter(|m| m.destination().starts_with("/dev"))
            .collect();
        assert_eq!(under_dev.len(), 1);
        assert_eq!(under_dev[0].typ().as_deref(), Some("bind"));
    }

    #[test]
    fn errors_and_warnings() {
        use cri::MountPropagation as P;
        let sb = SandboxContext::default();
        let e = build(
            &[m("/x", "/nonexistent-kraal", false, P::PropagationPrivate)],
            &sb,
            false,
            &sc(),
            &mut Vec::new(),
        )
        .err()
        .unwrap();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(
            e.message(),
            "container config: mounts[0]: mount host_path \"/nonexistent-kraal\" (container_path \
             \"/x\"): no such file or directory"
        );
        let d = tempfile::tempdir().unwrap();
        let h = d.path().to_str().unwrap();
        let e = build(
            &[m("x", h, false, P::PropagationPrivate)],
            &sb,
            false,
            &sc(),
            &mut Vec::new(),
        )
        .err()
        .unwrap();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.message().contains("expected an absolute path"), "{e}");
        let e = build(
            &[m("/a/../b", h, false, P::PropagationPrivate)],
            &sb,
            false,
            &sc(),
            &mut Vec::new(),
        )
        .err()
        .unwrap();
        assert!(e.message().contains("\"..\""), "{e}");
        let e = build(
            &[
                m("/a", h, false, P::PropagationPrivate),
                m("/a/", h, false, P::PropagationPrivate),
            ],
            &sb,
            false,
            &sc(),
            &mut Vec::new(),
        )
        .err()
        .unwrap();
        assert!(e.message().contains("another mount"), "{e}");
        let mut bad = m("/a", h, false, P::PropagationPrivate);
        bad.propagation = 7;
        assert!(build(&[bad], &sb, false, &sc(), &mut Vec::new()).is_err());
        let mut rro = m("/a", h, false, P::PropagationPrivate);
        rro.recursive_read_only = true;
        assert!(build(&[rro.clone()], &sb, false, &sc(), &mut Vec::new()).is_err());
        rro.readonly = true;
        let ms = build(&[rro], &sb, false, &sc(), &mut Vec::new()).unwrap();
        assert_eq!(
            opts(find(&ms.mounts, "/a").unwrap()),
            ["rbind", "rprivate", "ro", "rro"]
        );
        let mut sel = m("/a", h, false, P::PropagationPrivate);
        sel.selinux_relabel = true;
        let mut w = Vec::new();
        build(&[sel], &sb, false, &sc(), &mut w).unwrap();
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("selinux_relabel"), "{w:?}");
        let mut img = m("/a", "", false, P::PropagationPrivate);
        img.image = Some(cri::ImageSpec {
            image: "busybox".into(),
            ..Default::default()
        });
        let e = build(&[img], &sb, false, &sc(), &mut Vec::new())
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::Unimplemented);
    }
}
