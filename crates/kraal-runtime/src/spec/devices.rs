//! Devices: CRI devices (created in the container and allowed in the device cgroup), the
//! default device cgroup rules, every host device for privileged containers.

use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use kraal_api::runtime::v1 as cri;
use oci_spec::runtime::{
    LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
};

use super::{ErrorKind, SpecError, io_reason, oci};

/// The devices to create and the device cgroup rules.
pub(crate) struct Devices {
    pub devices: Vec<LinuxDevice>,
    pub rules: Vec<LinuxDeviceCgroup>,
}

fn rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> Result<LinuxDeviceCgroup, SpecError> {
    let mut b = LinuxDeviceCgroupBuilder::default()
        .allow(allow)
        .typ(typ)
        .access(access.to_owned());
    if let Some(m) = major {
        b = b.major(m);
    }
    if let Some(m) = minor {
        b = b.minor(m);
    }
    oci("linux.resources.devices", b.build())
}

/// Deny everything, then allow the devices every container has: null, zero, full,
/// random, urandom, tty, ptmx and the pts of its own devpts (libcontainer adds the same
/// allow rules itself; listing them keeps the spec honest on its own).
pub(crate) fn default_rules() -> Result<Vec<LinuxDeviceCgroup>, SpecError> {
    use LinuxDeviceType::C;
    let mut rules = vec![rule(false, LinuxDeviceType::A, None, None, "rwm")?];
    for (major, minor) in [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2)] {
        rules.push(rule(true, C, Some(major), Some(minor), "rwm")?);
    }
    rules.push(rule(true, C, Some(136), None, "rwm")?);
    Ok(rules)
}

/// Checks CRI device permissions: a non-empty subset of `rwm`.
fn permissions(i: usize, p: &str, warnings: &mut Vec<String>) -> Result<String, SpecError> {
    if p.is_empty() {
        warnings.push(format!("devices[{i}].permissions is empty; using \"rwm\""));
        return Ok("rwm".to_owned());
    }
    let mut seen = String::new();
    for c in p.chars() {
        if !matches!(c, 'r' | 'w' | 'm') || seen.contains(c) {
            return Err(SpecError::invalid(format!(
                "container config: devices[{i}].permissions {p:?}: expected a subset of \"rwm\" \
                 (each letter once)"
            )));
        }
        seen.push(c);
    }
    Ok(p.to_owned())
}

fn device_type(md: &Metadata) -> Option<LinuxDeviceType> {
    let ft = md.file_type();
    if ft.is_char_device() {
        Some(LinuxDeviceType::C)
    } else if ft.is_block_device() {
        Some(LinuxDeviceType::B)
    } else {
        None
    }
}

fn device(path: PathBuf, md: &Metadata, typ: LinuxDeviceType) -> Result<LinuxDevice, SpecError> {
    let rdev = md.rdev();
    oci(
        "linux.devices",
        LinuxDeviceBuilder::default()
            .path(path)
            .typ(typ)
            .major(i64::from(rustix::fs::major(rdev)))
            .minor(i64::from(rustix::fs::minor(rdev)))
            .file_mode(md.mode() & 0o7777)
            .uid(md.uid())
            .gid(md.gid())
            .build(),
    )
}

/// Every device file under `dir` (recursively, not following symlinks), as
/// `(host path, metadata, type)`.
fn walk(
    dir: &Path,
    skip_dirs: &[&str],
    out: &mut Vec<(PathBuf, Metadata, LinuxDeviceType)>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if md.is_dir() {
            let name = entry.file_name();
            if skip_dirs.iter().any(|s| name == *s) {
                continue;
            }
            walk(&path, skip_dirs, out)?;
        } else if let Some(t) = device_type(&md) {
            out.push((path, md, t));
        }
    }
    Ok(())
}

/// The host's devices under `dev_root`, as runc/containerd list them for privileged
/// containers: not the per-mount directories (`pts`, `shm`, `mqueue`, `fd`) nor
/// `console`, which the runtime sets up itself.
pub(crate) fn host_devices(dev_root: &Path) -> Result<Vec<LinuxDevice>, SpecError> {
    let mut found = Vec::new();
    walk(
        dev_root,
        &["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"],
        &mut found,
    )
    .map_err(|e| {
        SpecError::from_io(
            format!("listing host devices in {}", dev_root.display()),
            &e,
        )
    })?;
    let mut out = Vec::with_capacity(found.len());
    for (path, md, typ) in found {
        let rel = path.strip_prefix(dev_root).unwrap_or(&path);
        if rel == Path::new("console") {
            continue;
        }
        out.push(device(Path::new("/dev").join(rel), &md, typ)?);
    }
    out.sort_by(|a, b| a.path().cmp(b.path()));
    Ok(out)
}

/// CRI devices: each host path is a device (or a directory of devices, mapped below the
/// container path); each becomes a device in the container and an allow rule.
fn cri_devices(
    devs: &[cri::Device],
    warnings: &mut Vec<String>,
) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>), SpecError> {
    let mut devices = Vec::new();
    let mut rules = Vec::new();
    for (i, d) in devs.iter().enumerate() {
        let access = permissions(i, &d.permissions, warnings)?;
        if d.host_path.is_empty() {
            return Err(SpecError::invalid(format!(
                "container config: devices[{i}].host_path is empty"
            )));
        }
        let container = if d.container_path.is_empty() {
            d.host_path.as_str()
        } else {
            d.container_path.as_str()
        };
        if !container.starts_with('/') {
            return Err(SpecError::invalid(format!(
                "container config: devices[{i}].container_path {container:?}: expected an \
                 absolute path"
            )));
        }
        let host = Path::new(&d.host_path);
        let md = std::fs::metadata(host).map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound {
                ErrorKind::NotFound
            } else {
                ErrorKind::FailedPrecondition
            };
            SpecError::new(
                kind,
                format!(
                    "container config: devices[{i}]: device host_path {:?}: {}",
                    d.host_path,
                    io_reason(&e)
                ),
            )
        })?;
        let mut found = Vec::new();
        if md.is_dir() {
            walk(host, &[], &mut found).map_err(|e| {
                SpecError::from_io(
                    format!("container config: devices[{i}]: listing {:?}", d.host_path),
                    &e,
                )
            })?;
            found.sort_by(|a, b| a.0.cmp(&b.0));
        } else if let Some(t) = device_type(&md) {
            found.push((host.to_path_buf(), md, t));
        } else {
            return Err(SpecError::invalid(format!(
                "container config: devices[{i}].host_path {:?}: not a character or block device",
                d.host_path
            )));
        }
        for (path, md, typ) in found {
            let dest = match path.strip_prefix(host) {
                Ok(rel) if !rel.as_os_str().is_empty() => Path::new(container).join(rel),
                _ => PathBuf::from(container),
            };
            let dev = device(dest, &md, typ)?;
            rules.push(rule(
                true,
                typ,
                Some(dev.major()),
                Some(dev.minor()),
                &access,
            )?);
            devices.retain(|x: &LinuxDevice| x.path() != dev.path());
            devices.push(dev);
        }
    }
    Ok((devices, rules))
}

/// The container's devices and device cgroup. Privileged: every host device under
/// `dev_root` and no restriction (containerd's `WithHostDevices` +
/// `WithAllDevicesAllowed`); CRI devices are added either way.
pub(crate) fn build(
    devs: &[cri::Device],
    privileged: bool,
    dev_root: &Path,
    warnings: &mut Vec<String>,
) -> Result<Devices, SpecError> {
    let (cri, cri_rules) = cri_devices(devs, warnings)?;
    if privileged {
        let mut devices = host_devices(dev_root)?;
        devices.retain(|d| !cri.iter().any(|c| c.path() == d.path()));
        devices.extend(cri);
        return Ok(Devices {
            devices,
            rules: vec![rule(true, LinuxDeviceType::A, None, None, "rwm")?],
        });
    }
    let mut rules = default_rules()?;
    rules.extend(cri_rules);
    Ok(Devices {
        devices: cri,
        rules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(host: &str, container: &str, perms: &str) -> cri::Device {
        cri::Device {
            host_path: host.into(),
            container_path: container.into(),
            permissions: perms.into(),
        }
    }

    #[test]
    fn defaults_deny_then_allow() {
        let d = build(&[], false, Path::new("/dev"), &mut Vec::new()).unwrap();
        assert!(d.devices.is_empty());
        let first = &d.rules[0];
        assert!(!first.allow());
        assert_eq!(first.typ(), Some(LinuxDeviceType::A));
        assert_eq!(first.access().as_deref(), Some("rwm"));
        let allowed: Vec<_> = d.rules[1..]
            .iter()
            .map(|r| (r.major(), r.minor()))
            .collect();
        for want in [
            (Some(1), Some(3)),
            (Some(1), Some(9)),
            (Some(5), Some(2)),
            (Some(136), None),
        ] {
            assert!(allowed.contains(&want), "{want:?}");
        }
    }

    #[test]
    fn cri_device_from_host() {
        let mut w = Vec::new();
        let d = build(
            &[dev("/dev/null", "/dev/mynull", "rw")],
            false,
            Path::new("/dev"),
            &mut w,
        )
        .unwrap();
        assert_eq!(d.devices.len(), 1);
        let nd = &d.devices[0];
        assert_eq!(nd.path(), Path::new("/dev/mynull"));
        assert_eq!(nd.typ(), LinuxDeviceType::C);
        assert_eq!((nd.major(), nd.minor()), (1, 3));
        let last = d.rules.last().unwrap();
        assert!(last.allow());
        assert_eq!((last.major(), last.minor()), (Some(1), Some(3)));
        assert_eq!(last.access().as_deref(), Some("rw"));
        // Empty container path = host path; empty permissions = rwm with a warning.
        let d = build(
            &[dev("/dev/zero", "", "")],
            false,
            Path::new("/dev"),
            &mut w,
        )
        .unwrap();
        assert_eq!(d.devices[0].path(), Path::new("/dev/zero"));
        assert_eq!(d.rules.last().unwrap().access().as_deref(), Some("rwm"));
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn cri_device_errors() {
        let mut w = Vec::new();
        let e = build(
            &[dev("/dev/nonexistent-kraal", "/dev/x", "r")],
            false,
            Path::new("/dev"),
            &mut w,
        )
        .err()
        .unwrap();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.message().contains("\"/dev/nonexistent-kraal\""), "{e}");
        let e = build(
            &[dev("/dev/null", "/dev/x", "rwx")],
            false,
            Path::new("/dev"),
            &mut w,
        )
        .err()
        .unwrap();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.message().contains("permissions \"rwx\""), "{e}");
        assert!(
            build(
                &[dev("/dev/null", "/dev/x", "rr")],
                false,
                Path::new("/dev"),
                &mut w
            )
            .is_err()
        );
        assert!(
            build(
                &[dev("/dev/null", "x", "r")],
                false,
                Path::new("/dev"),
                &mut w
            )
            .is_err()
        );
        let f = tempfile::NamedTempFile::new().unwrap();
        let e = build(
            &[dev(f.path().to_str().unwrap(), "/dev/x", "r")],
            false,
            Path::new("/dev"),
            &mut w,
        )
        .err()
        .unwrap();
        assert!(
            e.message().contains("not a character or block device"),
            "{e}"
        );
    }

    #[test]
    fn privileged_gets_host_devices() {
        let d = build(&[], true, Path::new("/dev"), &mut Vec::new()).unwrap();
        assert_eq!(d.rules.len(), 1);
        assert!(d.rules[0].allow());
        assert_eq!(d.rules[0].typ(), Some(LinuxDeviceType::A));
        assert!(d.devices.iter().any(|x| x.path() == Path::new("/dev/null")));
        assert!(!d.devices.iter().any(|x| x.path().starts_with("/dev/pts")));
        assert!(
            !d.devices
                .iter()
                .any(|x| x.path() == Path::new("/dev/console"))
        );
    }
}
