//! kubelet's cgroup driver as kraal runs it: cgroupfs (kraal makes plain directories) or
//! systemd (pod slices and one transient scope per container, made by systemd).
//!
//! Either way every record keeps cgroupfs-form paths: a sandbox's `cgroup_parent` is its
//! pod cgroup's path (with systemd the expanded slice, e.g.
//! `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice`) and a
//! container's `cgroups_path` its leaf (with systemd `<pod slice path>/kraal-<id>.scope`),
//! so policy files, the freezer, stats and eBPF work the same with both drivers. This
//! module adds what only systemd needs: making and stopping its units, and telling it the
//! limits it owns so that a `systemctl daemon-reload` writes kraal's values back rather than
//! its defaults.

use kraal_cgroups::Resources;
use kraal_cgroups::systemd::{self, DbusSystemd, Property, Systemd, SystemdError};
use tonic::Status;

use crate::config::CgroupDriver;

/// The driver in force.
pub enum Driver {
    Cgroupfs,
    Systemd(Box<dyn Systemd>, SystemdCaps),
}

/// What the node's systemd can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemdCaps {
    /// `CPUWeight=idle` (systemd 252+), see [`systemd::resource_properties`].
    pub idle_weight: bool,
}

/// A pod's cgroup as RunPodSandbox resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCgroup {
    /// cgroupfs-form path of the pod's cgroup.
    pub path: String,
    /// With systemd: the slice's unit name as the CRI gave it (or kraal chose).
    pub slice: Option<String>,
}

impl PodCgroup {
    /// A sandbox's pod cgroup as its record keeps it.
    pub fn of(record: &crate::state::SandboxRecord) -> Self {
        PodCgroup {
            path: record.cgroup_parent.clone(),
            slice: record.systemd_slice.clone(),
        }
    }
}

impl Driver {
    /// The configured driver; refuses systemd on a node it does not run.
    pub fn open(configured: CgroupDriver) -> anyhow::Result<Self> {
        match configured {
            CgroupDriver::Cgroupfs => Ok(Driver::Cgroupfs),
            CgroupDriver::Systemd => {
                let sd = DbusSystemd::connect().map_err(|e| {
                    anyhow::anyhow!(
                        "cgroup_driver = \"systemd\" is configured, but {e}; use cgroup_driver = \"cgroupfs\" (and kubelet's cgroupDriver: cgroupfs) on this node"
                    )
                })?;
                let version = sd
                    .version()
                    .map_err(|e| anyhow::anyhow!("cgroup_driver = \"systemd\": {e}"))?;
                let caps = SystemdCaps {
                    idle_weight: systemd::major_version(&version)
                        .is_some_and(|v| v >= systemd::IDLE_WEIGHT_SINCE),
                };
                tracing::debug!(%version, ?caps, "connected to systemd");
                Ok(Driver::Systemd(Box::new(sd), caps))
            }
        }
    }

    pub fn kind(&self) -> CgroupDriver {
        match self {
            Driver::Cgroupfs => CgroupDriver::Cgroupfs,
            Driver::Systemd(..) => CgroupDriver::Systemd,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Driver::Cgroupfs => "cgroupfs",
            Driver::Systemd(..) => "systemd",
        }
    }

    fn idle_weight(&self) -> bool {
        matches!(self, Driver::Systemd(_, caps) if caps.idle_weight)
    }

    fn systemd(&self) -> Option<&dyn Systemd> {
        match self {
            Driver::Cgroupfs => None,
            Driver::Systemd(sd, _) => Some(sd.as_ref()),
        }
    }

    /// Validates `linux.cgroup_parent` for the driver in force; empty: kraal's own.
    pub fn pod_cgroup(&self, given: &str, sandbox_id: &str) -> Result<PodCgroup, Status> {
        pod_cgroup(self.kind(), given, sandbox_id)
    }

    /// Makes the pod's slice unless it is up (kubelet makes its own); true if kraal made it,
    /// so that only then kraal stops it again.
    pub fn create_pod(&self, pod: &PodCgroup, sandbox_id: &str) -> Result<bool, SystemdError> {
        let (Some(sd), Some(slice)) = (self.systemd(), &pod.slice) else {
            return Ok(false);
        };
        if systemd::is_running(sd, slice)? {
            return Ok(false);
        }
        sd.start_transient(
            slice,
            &systemd::slice_properties(format!("kraal pod sandbox {sandbox_id}")),
        )?;
        Ok(true)
    }

    /// Stops a slice kraal made (and anything left in it).
    pub fn remove_pod(&self, slice: Option<&str>, created: bool) -> Result<(), SystemdError> {
        match (self.systemd(), slice) {
            (Some(sd), Some(slice)) if created => sd.stop(slice),
            _ => Ok(()),
        }
    }

    /// Puts `pid` (a container's init, created but not started, or a pod's infra process)
    /// into its own scope `unit` in the pod's slice, with `props` as its first limits. The
    /// cgroupfs path of the scope is `<pod path>/<unit>`, where libcontainer already made
    /// the directory: systemd adopts it.
    pub fn place(
        &self,
        pod: &PodCgroup,
        unit: &str,
        description: String,
        pid: i32,
        limits: &[Property],
    ) -> Result<(), SystemdError> {
        let (Some(sd), Some(slice)) = (self.systemd(), &pod.slice) else {
            return Ok(());
        };
        let pid = u32::try_from(pid).map_err(|_| SystemdError::Property(format!("pid {pid}")))?;
        let mut props = systemd::scope_properties(slice, description, pid);
        props.extend_from_slice(limits);
        sd.start_transient(unit, &props)
    }

    /// Stops a container's scope, if it is still there (it goes by itself when its last
    /// process exits).
    pub fn remove_scope(&self, cgroups_path: &str) -> Result<(), SystemdError> {
        match (self.systemd(), unit_of(cgroups_path)) {
            (Some(sd), Some(unit)) => sd.stop(unit),
            _ => Ok(()),
        }
    }

    /// Tells systemd the limits kraal just wrote into the unit at `cgroups_path`, so that it
    /// writes the same values when it re-applies the unit. No-op with cgroupfs and for
    /// cgroups that are no systemd unit.
    pub fn mirror(&self, cgroups_path: &str, resources: &Resources) -> Result<(), SystemdError> {
        let (Some(sd), Some(unit)) = (self.systemd(), unit_of(cgroups_path)) else {
            return Ok(());
        };
        let props = systemd::resource_properties(resources, self.idle_weight())
            .map_err(SystemdError::Property)?;
        sd.set_properties(unit, &props)
    }
}

/// After a restart: a live container's scope should still be there (systemd keeps scopes
/// while they have processes, whatever happens to kraald). One that is not means something
/// outside kraal stopped it or moved the container; said, since stats and limits would be
/// read from a cgroup that no longer holds it.
pub fn check_recovered_scope(runtime: &crate::runtime::Runtime, id: &str, cgroups_path: &str) {
    let (Some(sd), Some(unit)) = (runtime.driver.systemd(), unit_of(cgroups_path)) else {
        return;
    };
    match systemd::is_running(sd, unit) {
        Ok(true) => tracing::debug!(container = %id, unit, "scope still active"),
        Ok(false) => {
            tracing::warn!(container = %id, unit, "the container runs but its systemd scope is gone")
        }
        Err(err) => {
            tracing::warn!(container = %id, unit, %err, "cannot ask systemd about the container's scope")
        }
    }
}

/// After a restart: a pod made under the other driver keeps its cgroups as they are; said,
/// because with a changed driver kraald no longer makes or stops that pod's units.
pub fn check_recovered_pod(
    runtime: &crate::runtime::Runtime,
    record: &crate::state::SandboxRecord,
) {
    let made_with_systemd = record.systemd_slice.is_some();
    let now_systemd = runtime.driver.systemd().is_some();
    if made_with_systemd != now_systemd {
        tracing::warn!(
            sandbox = %record.id,
            cgroup = %record.cgroup_parent,
            driver = runtime.driver.name(),
            "pod made under the other cgroup driver: its cgroup stays where it is; remove the pod to clean it up under the driver it was made with"
        );
    }
}

/// A container's cgroupfs path: its leaf in the pod cgroup, with systemd the scope's.
pub fn container_path(sandbox: &crate::state::SandboxRecord, container_id: &str) -> String {
    match sandbox.systemd_slice {
        Some(_) => format!(
            "{}/{}",
            sandbox.cgroup_parent,
            systemd::container_scope(container_id)
        ),
        None => format!("{}/kraal-{container_id}", sandbox.cgroup_parent),
    }
}

/// kubelet's container limits (CRI: 0 or empty is "not set") as a new scope's properties.
pub fn kubelet_limits(
    resources: Option<&kraal_api::runtime::v1::LinuxContainerResources>,
) -> Result<Vec<Property>, String> {
    let Some(r) = resources else {
        return Ok(Vec::new());
    };
    let text = |s: &String| (!s.is_empty()).then(|| s.clone());
    // No idle here: kubelet's limits never make a container idle; the policy's mirror does.
    systemd::resource_properties(
        &Resources {
            cpu_shares: u64::try_from(r.cpu_shares).ok().filter(|v| *v > 0),
            cpu_quota_us: (r.cpu_quota != 0).then_some(r.cpu_quota),
            cpu_period_us: u64::try_from(r.cpu_period).ok().filter(|v| *v > 0),
            cpuset_cpus: text(&r.cpuset_cpus),
            cpuset_mems: text(&r.cpuset_mems),
            memory_limit_bytes: (r.memory_limit_in_bytes > 0).then_some(r.memory_limit_in_bytes),
            ..Resources::default()
        },
        false,
    )
}

/// The unit whose cgroup `path` is: its last component when that is a slice or scope.
pub fn unit_of(path: &str) -> Option<&str> {
    path.rsplit('/')
        .next()
        .filter(|n| n.ends_with(".slice") || n.ends_with(".scope"))
}

/// `linux.cgroup_parent` checked against `driver`: cgroupfs takes absolute paths, systemd
/// slice names. A parent in the other driver's form is refused naming the form expected,
/// since it means kubelet and kraal disagree on the driver.
pub fn pod_cgroup(
    driver: CgroupDriver,
    given: &str,
    sandbox_id: &str,
) -> Result<PodCgroup, Status> {
    match driver {
        CgroupDriver::Cgroupfs => {
            if given.is_empty() {
                return Ok(PodCgroup {
                    path: format!("/kraal/pod-{sandbox_id}"),
                    slice: None,
                });
            }
            let ok = given.starts_with('/')
                && !given.contains('\0')
                && given
                    .split('/')
                    .skip(1)
                    .all(|c| !c.is_empty() && c != "." && c != "..");
            if !ok {
                let hint = if given.ends_with(".slice") {
                    " (a systemd slice: kraald runs with cgroup_driver = \"cgroupfs\"; set cgroup_driver = \"systemd\" in kraald's config to match kubelet's cgroupDriver: systemd)"
                } else {
                    ""
                };
                return Err(Status::invalid_argument(format!(
                    "RunPodSandbox: linux.cgroup_parent {given:?} is not a cgroupfs path; the cgroupfs driver expects an absolute path like /kubepods/burstable/pod<uid>{hint}"
                )));
            }
            Ok(PodCgroup {
                path: given.trim_end_matches('/').to_string(),
                slice: None,
            })
        }
        CgroupDriver::Systemd => {
            let slice = if given.is_empty() {
                systemd::default_pod_slice(sandbox_id)
            } else {
                given.to_string()
            };
            let path = systemd::expand_slice(&slice).map_err(|e| {
                let hint = if given.starts_with('/') {
                    " (a cgroupfs path: kraald runs with cgroup_driver = \"systemd\"; kubelet must use cgroupDriver: systemd too)"
                } else {
                    ""
                };
                Status::invalid_argument(format!(
                    "RunPodSandbox: linux.cgroup_parent {given:?}: the systemd driver expects a slice name like kubepods-besteffort-pod<uid>.slice: {e}{hint}"
                ))
            })?;
            if path == "/" {
                return Err(Status::invalid_argument(
                    "RunPodSandbox: linux.cgroup_parent \"-.slice\" is the root slice; a pod needs a slice of its own",
                ));
            }
            Ok(PodCgroup {
                path,
                slice: Some(slice),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn cgroupfs_takes_paths_and_names_the_driver_for_slices() {
        let p = pod_cgroup(CgroupDriver::Cgroupfs, "/kubepods/pod1", "ab").unwrap();
        assert_eq!(p.path, "/kubepods/pod1");
        assert_eq!(p.slice, None);
        let p = pod_cgroup(CgroupDriver::Cgroupfs, "", "ab").unwrap();
        assert_eq!(p.path, "/kraal/pod-ab");
        let err = pod_cgroup(CgroupDriver::Cgroupfs, "kubepods-pod1.slice", "ab").unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message().contains("cgroup_driver = \"systemd\""),
            "{}",
            err.message()
        );
        for bad in ["kubepods", "/a/../b", "/a//b"] {
            assert!(
                pod_cgroup(CgroupDriver::Cgroupfs, bad, "ab").is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn systemd_takes_slices_and_names_the_driver_for_paths() {
        let p = pod_cgroup(
            CgroupDriver::Systemd,
            "kubepods-besteffort-podu1.slice",
            "ab",
        )
        .unwrap();
        assert_eq!(
            p.path,
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podu1.slice"
        );
        assert_eq!(p.slice.as_deref(), Some("kubepods-besteffort-podu1.slice"));
        let p = pod_cgroup(CgroupDriver::Systemd, "", "ab").unwrap();
        assert_eq!(p.path, "/kraal.slice/kraal-podab.slice");
        assert_eq!(p.slice.as_deref(), Some("kraal-podab.slice"));
        let err = pod_cgroup(CgroupDriver::Systemd, "/kubepods/pod1", "ab").unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message().contains("cgroupDriver: systemd"),
            "{}",
            err.message()
        );
        assert!(
            err.message().contains("slice name like"),
            "{}",
            err.message()
        );
        assert!(pod_cgroup(CgroupDriver::Systemd, "-.slice", "ab").is_err());
        assert!(pod_cgroup(CgroupDriver::Systemd, "a--b.slice", "ab").is_err());
    }

    #[test]
    fn units_are_the_last_component() {
        assert_eq!(
            unit_of("/kraal.slice/kraal-podab.slice/kraal-c1.scope"),
            Some("kraal-c1.scope")
        );
        assert_eq!(
            unit_of("/kraal.slice/kraal-podab.slice"),
            Some("kraal-podab.slice")
        );
        assert_eq!(unit_of("/kraal/pod-ab/kraal-c1"), None);
    }
}
