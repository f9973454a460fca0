//! Capabilities: containerd's default set, CRI add/drop (with `ALL`), ambient additions,
//! everything for privileged containers.

use std::collections::HashSet;
use std::str::FromStr;

use kraal_api::runtime::v1 as cri;
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities, LinuxCapabilitiesBuilder};

use super::{SpecError, oci};

/// containerd's (and Docker's) default capabilities for a container.
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability oci-spec knows (Linux 5.9's set).
pub(crate) const ALL_CAPABILITIES: [Capability; 41] = [
    Capability::AuditControl,
    Capability::AuditRead,
    Capability::AuditWrite,
    Capability::BlockSuspend,
    Capability::Bpf,
    Capability::CheckpointRestore,
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::Kill,
    Capability::Lease,
    Capability::LinuxImmutable,
    Capability::MacAdmin,
    Capability::MacOverride,
    Capability::Mknod,
    Capability::NetAdmin,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetRaw,
    Capability::Perfmon,
    Capability::Setgid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::Setuid,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysChroot,
    Capability::SysModule,
    Capability::SysNice,
    Capability::SysPacct,
    Capability::SysPtrace,
    Capability::SysRawio,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Syslog,
    Capability::WakeAlarm,
];

/// Parses a capability name as Kubernetes writes it: `NET_ADMIN`, `CAP_NET_ADMIN`, any case.
pub fn parse_capability(name: &str) -> Option<Capability> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if bare.is_empty() || bare == "ALL" {
        return None;
    }
    Capability::from_str(bare).ok()
}

/// The container's capability sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CapSets {
    /// Bounding, effective and permitted.
    pub main: Capabilities,
    /// Ambient (also added to inheritable, as the kernel requires).
    pub ambient: Capabilities,
}

fn parse_list(field: &str, names: &[String]) -> Result<(bool, Vec<Capability>), SpecError> {
    let mut all = false;
    let mut caps = Vec::new();
    for (i, n) in names.iter().enumerate() {
        if n.trim().eq_ignore_ascii_case("ALL") || n.trim().eq_ignore_ascii_case("CAP_ALL") {
            all = true;
            continue;
        }
        caps.push(parse_capability(n).ok_or_else(|| {
            SpecError::invalid(format!(
                "container config: linux.security_context.capabilities.{field}[{i}] {n:?}: \
                 not a Linux capability (expected a name like \"NET_ADMIN\" or \
                 \"CAP_NET_ADMIN\", or \"ALL\")"
            ))
        })?);
    }
    Ok((all, caps))
}

/// containerd's order: add `ALL`, drop `ALL`, add the named ones, drop the named ones. So
/// `drop: [ALL], add: [NET_BIND_SERVICE]` leaves just that one, and `add: [ALL], drop:
/// [CHOWN]` everything but CHOWN. Privileged containers get everything and ignore add/drop.
pub(crate) fn capabilities(
    req: Option<&cri::Capability>,
    privileged: bool,
) -> Result<CapSets, SpecError> {
    if privileged {
        return Ok(CapSets {
            main: ALL_CAPABILITIES.into_iter().collect(),
            ambient: HashSet::new(),
        });
    }
    let mut main: Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
    let mut ambient = Capabilities::new();
    let Some(req) = req else {
        return Ok(CapSets { main, ambient });
    };
    let (add_all, add) = parse_list("add_capabilities", &req.add_capabilities)?;
    let (drop_all, drop) = parse_list("drop_capabilities", &req.drop_capabilities)?;
    let (amb_all, amb) = parse_list("add_ambient_capabilities", &req.add_ambient_capabilities)?;
    if amb_all {
        return Err(SpecError::invalid(
            "container config: linux.security_context.capabilities.add_ambient_capabilities: \
             \"ALL\" is not allowed for ambient capabilities; name them",
        ));
    }
    if add_all {
        main.extend(ALL_CAPABILITIES);
    }
    if drop_all {
        main.clear();
    }
    main.extend(add);
    for c in &drop {
        main.remove(c);
    }
    for c in amb {
        if drop.contains(&c) {
            continue;
        }
        main.insert(c);
        ambient.insert(c);
    }
    Ok(CapSets { main, ambient })
}

/// The OCI form: bounding = effective = permitted = the set; inheritable = ambient =
/// the ambient additions only (containerd leaves inheritable empty since CVE-2022-24769).
pub(crate) fn to_oci(c: &CapSets) -> Result<LinuxCapabilities, SpecError> {
    oci(
        "process.capabilities",
        LinuxCapabilitiesBuilder::default()
            .bounding(c.main.clone())
            .effective(c.main.clone())
            .permitted(c.main.clone())
            .inheritable(c.ambient.clone())
            .ambient(c.ambient.clone())
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ErrorKind;

    fn req(add: &[&str], drop: &[&str]) -> cri::Capability {
        cri::Capability {
            add_capabilities: add.iter().map(|s| (*s).to_owned()).collect(),
            drop_capabilities: drop.iter().map(|s| (*s).to_owned()).collect(),
            add_ambient_capabilities: vec![],
        }
    }

    fn set(c: &[Capability]) -> Capabilities {
        c.iter().copied().collect()
    }

    #[test]
    fn names() {
        assert_eq!(parse_capability("NET_ADMIN"), Some(Capability::NetAdmin));
        assert_eq!(
            parse_capability("CAP_NET_ADMIN"),
            Some(Capability::NetAdmin)
        );
        assert_eq!(
            parse_capability("cap_sys_ptrace"),
            Some(Capability::SysPtrace)
        );
        assert_eq!(parse_capability("SYSLOG"), Some(Capability::Syslog));
        assert_eq!(
            parse_capability("CHECKPOINT_RESTORE"),
            Some(Capability::CheckpointRestore)
        );
        assert_eq!(parse_capability("NET_FOO"), None);
        assert_eq!(parse_capability("ALL"), None);
        // Every capability round-trips through its name.
        for c in ALL_CAPABILITIES {
            assert_eq!(parse_capability(&format!("CAP_{c}")), Some(c), "{c}");
        }
    }

    #[test]
    fn default_and_add_drop() {
        let c = capabilities(None, false).unwrap();
        assert_eq!(c.main, set(&DEFAULT_CAPABILITIES));
        let c = capabilities(
            Some(&req(&["NET_ADMIN", "CAP_SYS_TIME"], &["CHOWN", "cap_kill"])),
            false,
        )
        .unwrap();
        assert!(c.main.contains(&Capability::NetAdmin));
        assert!(c.main.contains(&Capability::SysTime));
        assert!(!c.main.contains(&Capability::Chown));
        assert!(!c.main.contains(&Capability::Kill));
        assert_eq!(c.main.len(), 14);
        // drop ALL then add one.
        let c = capabilities(Some(&req(&["NET_BIND_SERVICE"], &["ALL"])), false).unwrap();
        assert_eq!(c.main, set(&[Capability::NetBindService]));
        // add ALL, drop one.
        let c = capabilities(Some(&req(&["ALL"], &["CHOWN"])), false).unwrap();
        assert_eq!(c.main.len(), ALL_CAPABILITIES.len() - 1);
        assert!(!c.main.contains(&Capability::Chown));
        // add and drop the same: dropped.
        let c = capabilities(Some(&req(&["SYS_ADMIN"], &["SYS_ADMIN"])), false).unwrap();
        assert!(!c.main.contains(&Capability::SysAdmin));
    }

    #[test]
    fn unknown_is_invalid() {
        let e = capabilities(Some(&req(&["NET_ADMIN", "CAP_BOGUS"], &[])), false).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(
            e.message().contains("add_capabilities[1] \"CAP_BOGUS\""),
            "{e}"
        );
        let e = capabilities(Some(&req(&[], &[""])), false).unwrap_err();
        assert!(e.message().contains("drop_capabilities[0]"), "{e}");
    }

    #[test]
    fn privileged_and_ambient() {
        let c = capabilities(Some(&req(&[], &["ALL"])), true).unwrap();
        assert_eq!(c.main.len(), ALL_CAPABILITIES.len());
        let mut r = req(&[], &[]);
        r.add_ambient_capabilities = vec!["NET_ADMIN".into()];
        let c = capabilities(Some(&r), false).unwrap();
        assert!(c.main.contains(&Capability::NetAdmin));
        assert_eq!(c.ambient, set(&[Capability::NetAdmin]));
        let o = to_oci(&c).unwrap();
        assert_eq!(
            o.inheritable().as_ref().unwrap(),
            &set(&[Capability::NetAdmin])
        );
        assert_eq!(o.bounding().as_ref().unwrap(), &c.main);
        r.add_ambient_capabilities = vec!["ALL".into()];
        assert!(capabilities(Some(&r), false).is_err());
    }
}
