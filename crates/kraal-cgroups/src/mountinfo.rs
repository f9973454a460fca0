//! Finding the cgroup hierarchies in `/proc/self/mountinfo`.
//!
//! Mount points differ between hosts (`/sys/fs/cgroup/cpu,cpuacct` co-mounted with
//! symlinks on most distributions, separate `cpu` and `cpuacct` mounts on others, cgroup2
//! at `/sys/fs/cgroup` or `/sys/fs/cgroup/unified`), so they are read, never assumed.
//!
//! Line format (proc(5)):
//! `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
//! — mount id, parent id, major:minor, root, mount point, mount options, optional
//! fields, a lone `-`, filesystem type, source, super options.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// The v1 controllers the kernel knows; super options of a `cgroup` mount name the
/// controllers bound to it among flags such as `rw`, `xattr` or `name=systemd`.
const KNOWN_V1_CONTROLLERS: &[&str] = &[
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "misc",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
    "rdma",
];

/// One mount that matters to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupMount {
    pub mount_point: PathBuf,
    /// The part of the hierarchy this mount shows; `/` unless it is a bind mount of a
    /// subtree.
    pub root: String,
    pub super_options: Vec<String>,
}

/// Every cgroup hierarchy found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CgroupMounts {
    /// v1 controller name -> its mount. Co-mounted controllers share one mount.
    pub v1: BTreeMap<String, CgroupMount>,
    pub unified: Option<CgroupMount>,
}

/// Parses mountinfo text. Errors name the offending line (1-based).
pub(crate) fn parse(text: &str) -> Result<CgroupMounts, String> {
    let mut mounts = CgroupMounts::default();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (fs_type, mount) =
            parse_line(line).ok_or_else(|| format!("line {}: malformed: {line:?}", index + 1))?;
        match fs_type {
            "cgroup2" => prefer(&mut mounts.unified, mount),
            "cgroup" => {
                let controllers: Vec<String> = mount
                    .super_options
                    .iter()
                    .filter(|o| KNOWN_V1_CONTROLLERS.contains(&o.as_str()))
                    .cloned()
                    .collect();
                for controller in controllers {
                    let mut slot = mounts.v1.remove(&controller);
                    prefer(&mut slot, mount.clone());
                    if let Some(m) = slot {
                        mounts.v1.insert(controller, m);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(mounts)
}

/// The same hierarchy can be mounted more than once (bind mounts, containers). Keep the
/// first mount of the whole hierarchy (root `/`); a subtree mount only when nothing better
/// is known, since kubelet's paths are relative to the hierarchy root.
fn prefer(slot: &mut Option<CgroupMount>, candidate: CgroupMount) {
    match slot {
        None => *slot = Some(candidate),
        Some(current) if current.root != "/" && candidate.root == "/" => *slot = Some(candidate),
        Some(_) => {}
    }
}

/// Returns the filesystem type and the mount, or None when the line is malformed.
fn parse_line(line: &str) -> Option<(&str, CgroupMount)> {
    let (left, right) = line.split_once(" - ")?;
    let mut left = left.split(' ');
    let _mount_id = left.next()?;
    let _parent_id = left.next()?;
    let _dev = left.next()?;
    let root = unescape(left.next()?);
    let mount_point = unescape(left.next()?);
    let _options = left.next()?;
    let mut right = right.split(' ');
    let fs_type = right.next()?;
    let _source = right.next()?;
    let super_options = right.next().unwrap_or("");
    let mount = CgroupMount {
        mount_point: PathBuf::from(OsString::from_vec(mount_point)),
        root: String::from_utf8_lossy(&root).into_owned(),
        super_options: super_options.split(',').map(str::to_string).collect(),
    };
    Some((fs_type, mount))
}

/// The kernel writes space, tab, newline and backslash in paths as `\ooo` octal escapes.
fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// This development machine: separate cpu and cpuacct mounts, cgroup2 at unified.
    pub(crate) const HYBRID_SEPARATE: &str = "\
22 1 253:0 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// Ubuntu 20.04 / Debian 10 style hybrid: co-mounted cpu,cpuacct, optional fields.
    pub(crate) const HYBRID_COMOUNTED: &str = "\
25 30 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,net_cls,net_prio
32 25 0:29 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,memory
33 25 0:30 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,cpuset,clone_children
34 25 0:31 / /sys/fs/cgroup/hugetlb rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,hugetlb
35 25 0:32 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:19 - cgroup cgroup rw,pids
";

    /// CentOS 7 style pure v1 (systemd in legacy mode, no cgroup2 at all).
    pub(crate) const V1_ONLY: &str = "\
24 18 0:20 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:6 - tmpfs tmpfs ro,mode=755
25 24 0:21 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:7 - cgroup cgroup rw,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd
27 24 0:23 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:8 - cgroup cgroup rw,cpu,cpuacct
28 24 0:24 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup rw,memory
29 24 0:25 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,pids
30 24 0:26 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,cpuset
";

    /// Modern systemd: one cgroup2 hierarchy at /sys/fs/cgroup.
    pub(crate) const V2_ONLY: &str = "\
21 26 0:20 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
25 21 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
26 1 0:23 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
";

    fn v1_dir(m: &CgroupMounts, c: &str) -> Option<PathBuf> {
        m.v1.get(c).map(|m| m.mount_point.clone())
    }

    #[test]
    fn hybrid_with_separate_cpu_and_cpuacct() {
        let m = parse(HYBRID_SEPARATE).unwrap();
        assert_eq!(
            v1_dir(&m, "cpu").unwrap(),
            PathBuf::from("/sys/fs/cgroup/cpu")
        );
        assert_eq!(
            v1_dir(&m, "cpuacct").unwrap(),
            PathBuf::from("/sys/fs/cgroup/cpuacct")
        );
        assert_eq!(
            m.v1.keys().map(String::as_str).collect::<Vec<_>>(),
            [
                "blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "memory", "pids"
            ]
        );
        let unified = m.unified.unwrap();
        assert_eq!(unified.mount_point, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(unified.root, "/");
    }

    #[test]
    fn hybrid_with_comounted_cpu_cpuacct() {
        let m = parse(HYBRID_COMOUNTED).unwrap();
        let both = PathBuf::from("/sys/fs/cgroup/cpu,cpuacct");
        assert_eq!(v1_dir(&m, "cpu").unwrap(), both);
        assert_eq!(v1_dir(&m, "cpuacct").unwrap(), both);
        assert_eq!(
            v1_dir(&m, "net_prio").unwrap(),
            PathBuf::from("/sys/fs/cgroup/net_cls,net_prio")
        );
        assert_eq!(
            v1_dir(&m, "hugetlb").unwrap(),
            PathBuf::from("/sys/fs/cgroup/hugetlb")
        );
        // clone_children is a flag, not a controller; name=systemd is no controller.
        assert!(!m.v1.contains_key("clone_children"));
        assert!(!m.v1.keys().any(|k| k.contains("systemd")));
        assert_eq!(
            m.unified.unwrap().mount_point,
            PathBuf::from("/sys/fs/cgroup/unified")
        );
    }

    #[test]
    fn v1_only() {
        let m = parse(V1_ONLY).unwrap();
        assert!(m.unified.is_none());
        assert_eq!(
            m.v1.keys().map(String::as_str).collect::<Vec<_>>(),
            ["cpu", "cpuacct", "cpuset", "memory", "pids"]
        );
    }

    #[test]
    fn v2_only() {
        let m = parse(V2_ONLY).unwrap();
        assert!(m.v1.is_empty());
        let unified = m.unified.unwrap();
        assert_eq!(unified.mount_point, PathBuf::from("/sys/fs/cgroup"));
        assert!(unified.super_options.iter().any(|o| o == "nsdelegate"));
    }

    #[test]
    fn escaped_mount_points_are_decoded() {
        let text = "40 31 0:37 / /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw\n";
        let m = parse(text).unwrap();
        assert_eq!(
            m.unified.unwrap().mount_point,
            PathBuf::from("/mnt/my cgroups")
        );
        assert_eq!(unescape("a\\134b\\011"), b"a\\b\t");
        // An incomplete escape is kept literally.
        assert_eq!(unescape("a\\04"), b"a\\04");
    }

    #[test]
    fn whole_hierarchy_mount_beats_subtree_bind_mount() {
        let text = "\
50 40 0:38 /kubepods /host/cgroup rw - cgroup2 cgroup2 rw
51 40 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
52 40 0:38 / /other rw - cgroup2 cgroup2 rw
60 40 0:39 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";
        let m = parse(text).unwrap();
        assert_eq!(
            m.unified.unwrap().mount_point,
            PathBuf::from("/sys/fs/cgroup")
        );
        // Only a subtree mount is known: use it rather than nothing.
        assert_eq!(m.v1["memory"].root, "/docker/abc");
    }

    #[test]
    fn no_cgroups_at_all() {
        let m = parse("22 1 253:0 / / rw,relatime - ext4 /dev/vda rw\n").unwrap();
        assert!(m.v1.is_empty() && m.unified.is_none());
    }

    #[test]
    fn malformed_line_is_an_error_naming_it() {
        let err = parse("22 1 253:0 / / rw\n").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
    }
}
