//! Namespaces from the sandbox, and the pod's namespaced sysctls.

use std::collections::HashMap;
use std::path::Path;

use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType};

use super::{HostFacts, PidMode, SandboxContext, SpecError, oci};

fn ns(typ: LinuxNamespaceType, path: Option<&Path>) -> Result<LinuxNamespace, SpecError> {
    let mut b = LinuxNamespaceBuilder::default().typ(typ);
    if let Some(p) = path {
        b = b.path(p.to_path_buf());
    }
    oci("linux.namespaces", b.build())
}

/// Network, IPC and UTS: join the pod's, or the node's when the sandbox has none (no
/// entry). PID per [`PidMode`]. Mount: always new. Cgroup: new on cgroup v2 hosts only
/// (on v1/hybrid hosts a cgroup namespace would hide nothing useful and libcontainer
/// mounts the v1 hierarchies itself).
pub(crate) fn namespaces(
    sandbox: &SandboxContext,
    host: HostFacts,
) -> Result<Vec<LinuxNamespace>, SpecError> {
    let mut out = vec![ns(LinuxNamespaceType::Mount, None)?];
    if let Some(p) = &sandbox.net_ns {
        out.push(ns(LinuxNamespaceType::Network, Some(p))?);
    }
    if let Some(p) = &sandbox.ipc_ns {
        out.push(ns(LinuxNamespaceType::Ipc, Some(p))?);
    }
    if let Some(p) = &sandbox.uts_ns {
        out.push(ns(LinuxNamespaceType::Uts, Some(p))?);
    }
    match &sandbox.pid {
        PidMode::Container => out.push(ns(LinuxNamespaceType::Pid, None)?),
        PidMode::Pod(p) => out.push(ns(LinuxNamespaceType::Pid, Some(p))?),
        PidMode::Node => {}
    }
    if host.cgroup_v2 {
        out.push(ns(LinuxNamespaceType::Cgroup, None)?);
    }
    Ok(out)
}

/// The namespace a sysctl lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SysctlNs {
    Net,
    Ipc,
    Uts,
}

/// The IPC-namespaced sysctls (those libcontainer accepts; `kernel.shm*`, `kernel.msg*`).
const IPC_SYSCTLS: [&str; 8] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

fn classify(key: &str) -> Option<SysctlNs> {
    if key.starts_with("net.") {
        Some(SysctlNs::Net)
    } else if IPC_SYSCTLS.contains(&key) || key.starts_with("fs.mqueue.") {
        Some(SysctlNs::Ipc)
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        Some(SysctlNs::Uts)
    } else {
        None
    }
}

/// Kubernetes also accepts `/` as the separator (`net/ipv4/ip_forward`). libcontainer
/// writes `/proc/sys/<key with . → />`, so a slash-form key becomes dotted; one with a dot
/// inside a component (an interface name like `eth0.100`) has no form it can write.
fn normalize(key: &str) -> Result<String, SpecError> {
    match key.find(['.', '/']) {
        Some(i) if key.as_bytes()[i] == b'/' => {
            if key.contains('.') {
                return Err(SpecError::invalid(format!(
                    "sandbox config: linux.sysctls {key:?}: a name with a dot inside one of \
                     its parts is not supported"
                )));
            }
            Ok(key.replace('/', "."))
        }
        _ => Ok(key.to_owned()),
    }
}

/// The sandbox's sysctls, checked: only namespaced ones, and only when the pod has its
/// own namespace for them — a `net.*` sysctl in a hostNetwork pod would change the node.
pub(crate) fn sysctls(sandbox: &SandboxContext) -> Result<HashMap<String, String>, SpecError> {
    let mut out = HashMap::new();
    let mut keys: Vec<_> = sandbox.sysctls.keys().collect();
    keys.sort();
    for raw in keys {
        let key = normalize(raw)?;
        if key == "kernel.hostname" {
            return Err(SpecError::invalid(format!(
                "sandbox config: linux.sysctls {raw:?}: the pod's hostname is set by its \
                 sandbox (hostname), not by a sysctl"
            )));
        }
        let value = &sandbox.sysctls[raw];
        let (own, what) = match classify(&key) {
            Some(SysctlNs::Net) => (sandbox.net_ns.is_some(), "network namespace (hostNetwork)"),
            Some(SysctlNs::Ipc) => (sandbox.ipc_ns.is_some(), "IPC namespace (hostIPC)"),
            Some(SysctlNs::Uts) => (sandbox.uts_ns.is_some(), "UTS namespace (hostNetwork)"),
            None => {
                return Err(SpecError::invalid(format!(
                    "sandbox config: linux.sysctls {raw:?}: not a namespaced sysctl; kraal sets \
                     only net.*, fs.mqueue.*, kernel.domainname and {}",
                    IPC_SYSCTLS.join(", ")
                )));
            }
        };
        if !own {
            return Err(SpecError::invalid(format!(
                "sandbox config: linux.sysctls {raw:?}: the pod uses the node's {what}, so \
                 this sysctl would change the node"
            )));
        }
        out.insert(key, value.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ErrorKind;

    const V1: HostFacts = HostFacts {
        cgroup_v2: false,
        swap_accounting: false,
        hugetlb: true,
        capability_bound: u64::MAX,
    };

    fn pod() -> SandboxContext {
        SandboxContext {
            net_ns: Some("/run/kraal/ns/net".into()),
            ipc_ns: Some("/run/kraal/ns/ipc".into()),
            uts_ns: Some("/run/kraal/ns/uts".into()),
            ..Default::default()
        }
    }

    fn types(v: &[LinuxNamespace]) -> Vec<(LinuxNamespaceType, Option<String>)> {
        v.iter()
            .map(|n| (n.typ(), n.path().as_ref().map(|p| p.display().to_string())))
            .collect()
    }

    #[test]
    fn pod_namespaces() {
        use LinuxNamespaceType as T;
        let got = types(&namespaces(&pod(), V1).unwrap());
        assert_eq!(
            got,
            [
                (T::Mount, None),
                (T::Network, Some("/run/kraal/ns/net".into())),
                (T::Ipc, Some("/run/kraal/ns/ipc".into())),
                (T::Uts, Some("/run/kraal/ns/uts".into())),
                (T::Pid, None),
            ]
        );
        let mut sb = pod();
        sb.pid = PidMode::Pod("/proc/42/ns/pid".into());
        let got = types(
            &namespaces(
                &sb,
                HostFacts {
                    cgroup_v2: true,
                    swap_accounting: true,
                    ..V1
                },
            )
            .unwrap(),
        );
        assert!(got.contains(&(T::Pid, Some("/proc/42/ns/pid".into()))));
        assert!(got.contains(&(T::Cgroup, None)));
        // Host everything.
        let sb = SandboxContext {
            pid: PidMode::Node,
            ..Default::default()
        };
        assert_eq!(types(&namespaces(&sb, V1).unwrap()), [(T::Mount, None)]);
    }

    #[test]
    fn sysctl_rules() {
        let mut sb = pod();
        sb.sysctls = HashMap::from([
            (
                "net.ipv4.ip_local_port_range".to_owned(),
                "20000 20999".to_owned(),
            ),
            ("kernel.shm_rmid_forced".to_owned(), "1".to_owned()),
            ("net/ipv4/conf/all/forwarding".to_owned(), "1".to_owned()),
        ]);
        let s = sysctls(&sb).unwrap();
        assert_eq!(s["net.ipv4.ip_local_port_range"], "20000 20999");
        assert_eq!(s["kernel.shm_rmid_forced"], "1");
        assert_eq!(s["net.ipv4.conf.all.forwarding"], "1");
        let mut dotted = pod();
        dotted.sysctls = HashMap::from([(
            "net/ipv4/conf/eth0.100/forwarding".to_owned(),
            "1".to_owned(),
        )]);
        assert!(sysctls(&dotted).is_err());
        dotted.sysctls = HashMap::from([("kernel.hostname".to_owned(), "x".to_owned())]);
        assert!(sysctls(&dotted).is_err());

        let mut host_net = sb.clone();
        host_net.net_ns = None;
        let e = sysctls(&host_net).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(
            e.message().contains("\"net.ipv4.ip_local_port_range\""),
            "{e}"
        );
        assert!(e.message().contains("hostNetwork"), "{e}");

        let mut host_ipc = pod();
        host_ipc.ipc_ns = None;
        host_ipc.sysctls = HashMap::from([("fs.mqueue.msg_max".to_owned(), "20".to_owned())]);
        assert!(
            sysctls(&host_ipc)
                .unwrap_err()
                .message()
                .contains("hostIPC")
        );

        let mut global = pod();
        global.sysctls = HashMap::from([("vm.swappiness".to_owned(), "1".to_owned())]);
        assert!(
            sysctls(&global)
                .unwrap_err()
                .message()
                .contains("not a namespaced sysctl")
        );
    }
}
