//! Capabilities: containerd's default set, CRI add/drop (with `ALL`), ambient additions,
//! everything the host has for privileged containers.
//!
//! A process can never gain a capability outside its bounding set, so a container is only
//! ever granted capabilities in the host's (kraald's) bounding set: `ALL` and privileged
//! mean "all the host has", as with containerd, which grants its own capabilities.

use std::collections::HashSet;
use std::str::FromStr;

use kraal_api::runtime::v1 as cri;
use libcontainer::capabilities::CapabilityExt;
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities, LinuxCapabilitiesBuilder};

use super::{ErrorKind, SpecError, oci};

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

/// The bounding set in `/proc/<pid>/status` text (`CapBnd:\t000001ffffffffff`).
pub(crate) fn bounding_set_from_status(status: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let hex = l.strip_prefix("CapBnd:")?.trim();
        u64::from_str_radix(hex, 16).ok()
    })
}

/// Whether capability `c` is in the bitmask `bound` (bit n = capability number n, the
/// kernel's numbering as libcontainer uses it).
fn in_bound(c: Capability, bound: u64) -> bool {
    let n = u32::from(c.to_cap().index());
    n < 64 && bound & (1u64 << n) != 0
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
///
/// `bound` is the host's bounding set: "everything" and `ALL` are everything in it, default
/// capabilities outside it are left out with a warning, and a capability the request
/// names outside it is refused (runc under containerd fails on it too, with a bare EPERM).
pub(crate) fn capabilities(
    req: Option<&cri::Capability>,
    privileged: bool,
    bound: u64,
    warnings: &mut Vec<String>,
) -> Result<CapSets, SpecError> {
    let (mut main, ambient, all) = requested(req, privileged, bound)?;
    let outside: Vec<Capability> = main
        .iter()
        .copied()
        .filter(|c| !in_bound(*c, bound))
        .collect();
    if !outside.is_empty() {
        if !all {
            // `requested` refused named additions outside the set: these are defaults.
            let mut names: Vec<String> = outside.iter().map(|c| format!("CAP_{c}")).collect();
            names.sort();
            warnings.push(format!(
                "default capabilities {} left out: not in this node's capability bounding set",
                names.join(", ")
            ));
        }
        main.retain(|c| in_bound(*c, bound));
    }
    Ok(CapSets { main, ambient })
}

/// The sets the request asks for, before the host's bound; `true` when it asks for
/// everything (privileged or `add: [ALL]`). Named additions the host cannot grant are
/// refused here, where the field is known.
fn requested(
    req: Option<&cri::Capability>,
    privileged: bool,
    bound: u64,
) -> Result<(Capabilities, Capabilities, bool), SpecError> {
    if privileged {
        return Ok((ALL_CAPABILITIES.into_iter().collect(), HashSet::new(), true));
    }
    let mut main: Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
    let mut ambient = Capabilities::new();
    let Some(req) = req else {
        return Ok((main, ambient, false));
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
    for (field, named) in [
        ("add_capabilities", &add),
        ("add_ambient_capabilities", &amb),
    ] {
        if let Some(c) = named.iter().find(|c| !in_bound(**c, bound)) {
            return Err(SpecError::new(
                ErrorKind::FailedPrecondition,
                format!(
                    "container config: linux.security_context.capabilities.{field}: CAP_{c} \
                     is not in this node's capability bounding set, so no process here can \
                     have it"
                ),
            ));
        }
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
    Ok((main, ambient, add_all))
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

    const FULL: u64 = u64::MAX;

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
        let c = capabilities(None, false, FULL, &mut Vec::new()).unwrap();
        assert_eq!(c.main, set(&DEFAULT_CAPABILITIES));
        let c = capabilities(
            Some(&req(&["NET_ADMIN", "CAP_SYS_TIME"], &["CHOWN", "cap_kill"])),
            false,
            FULL,
            &mut Vec::new(),
        )
        .unwrap();
        assert!(c.main.contains(&Capability::NetAdmin));
        assert!(c.main.contains(&Capability::SysTime));
        assert!(!c.main.contains(&Capability::Chown));
        assert!(!c.main.contains(&Capability::Kill));
        assert_eq!(c.main.len(), 14);
        // drop ALL then add one.
        let c = capabilities(
            Some(&req(&["NET_BIND_SERVICE"], &["ALL"])),
            false,
            FULL,
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(c.main, set(&[Capability::NetBindService]));
        // add ALL, drop one.
        let c = capabilities(
            Some(&req(&["ALL"], &["CHOWN"])),
            false,
            FULL,
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(c.main.len(), ALL_CAPABILITIES.len() - 1);
        assert!(!c.main.contains(&Capability::Chown));
        // add and drop the same: dropped.
        let c = capabilities(
            Some(&req(&["SYS_ADMIN"], &["SYS_ADMIN"])),
            false,
            FULL,
            &mut Vec::new(),
        )
        .unwrap();
        assert!(!c.main.contains(&Capability::SysAdmin));
    }

    #[test]
    fn unknown_is_invalid() {
        let e = capabilities(
            Some(&req(&["NET_ADMIN", "CAP_BOGUS"], &[])),
            false,
            FULL,
            &mut Vec::new(),
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(
            e.message().contains("add_capabilities[1] \"CAP_BOGUS\""),
            "{e}"
        );
        let e = capabilities(Some(&req(&[], &[""])), false, FULL, &mut Vec::new()).unwrap_err();
        assert!(e.message().contains("drop_capabilities[0]"), "{e}");
    }

    #[test]
    fn privileged_and_ambient() {
        let c = capabilities(Some(&req(&[], &["ALL"])), true, FULL, &mut Vec::new()).unwrap();
        assert_eq!(c.main.len(), ALL_CAPABILITIES.len());
        let mut r = req(&[], &[]);
        r.add_ambient_capabilities = vec!["NET_ADMIN".into()];
        let c = capabilities(Some(&r), false, FULL, &mut Vec::new()).unwrap();
        assert!(c.main.contains(&Capability::NetAdmin));
        assert_eq!(c.ambient, set(&[Capability::NetAdmin]));
        let o = to_oci(&c).unwrap();
        assert_eq!(
            o.inheritable().as_ref().unwrap(),
            &set(&[Capability::NetAdmin])
        );
        assert_eq!(o.bounding().as_ref().unwrap(), &c.main);
        r.add_ambient_capabilities = vec!["ALL".into()];
        assert!(capabilities(Some(&r), false, FULL, &mut Vec::new()).is_err());
    }

    #[test]
    fn bounding_set() {
        let status = "Name:\tkraald\nCapInh:\t0000000000000000\nCapBnd:\t000001fffeffffff\n";
        let bound = bounding_set_from_status(status).unwrap();
        assert_eq!(bound, 0x1fffeffffff);
        assert_eq!(bounding_set_from_status("Name:\tx\n"), None);
        // CAP_SYS_RESOURCE is capability 24, the bit missing above.
        assert!(!in_bound(Capability::SysResource, bound));
        assert!(in_bound(Capability::Chown, bound));
        assert!(in_bound(Capability::CheckpointRestore, bound));

        // Privileged and add ALL: everything the host has, nothing more, no warning.
        let mut w = Vec::new();
        let c = capabilities(None, true, bound, &mut w).unwrap();
        assert_eq!(c.main.len(), ALL_CAPABILITIES.len() - 1);
        assert!(!c.main.contains(&Capability::SysResource));
        let c = capabilities(Some(&req(&["ALL"], &["CHOWN"])), false, bound, &mut w).unwrap();
        assert_eq!(c.main.len(), ALL_CAPABILITIES.len() - 2);
        assert!(w.is_empty(), "{w:?}");
        // A named one the host lacks is refused, naming it.
        let e = capabilities(Some(&req(&["SYS_RESOURCE"], &[])), false, bound, &mut w).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
        assert!(
            e.message().contains("add_capabilities: CAP_SYS_RESOURCE"),
            "{e}"
        );
        // Defaults the host lacks are left out with a warning (here CAP_KILL, number 5).
        let no_kill = FULL & !(1 << 5);
        let c = capabilities(None, false, no_kill, &mut w).unwrap();
        assert_eq!(c.main.len(), DEFAULT_CAPABILITIES.len() - 1);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("CAP_KILL"), "{w:?}");
    }
}
