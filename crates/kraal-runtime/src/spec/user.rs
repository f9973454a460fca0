//! The user the process runs as: CRI `run_as_user` / `run_as_username` / `run_as_group`,
//! else the image's `User`, resolved against the image's `/etc/passwd` and `/etc/group`.
//!
//! Those two files are read *inside* the rootfs with `openat2(RESOLVE_IN_ROOT)`: a symlink
//! in the image (absolute or `../..`) resolves as it would inside the container and can
//! never reach a host file. Kernels without `openat2` (< 5.6) get a walk that refuses
//! every symlink instead.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::Path;

use kraal_api::runtime::v1 as cri;
use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::{ErrorKind, SpecError, io_reason};

/// Largest `/etc/passwd` or `/etc/group` kraal reads.
const MAX_FILE: u64 = 16 << 20;

/// One line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

/// One line of `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    /// Group name.
    pub name: String,
    /// Group id.
    pub gid: u32,
    /// User names listed as members.
    pub members: Vec<String>,
}

/// The user a container's process runs as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups, the primary group first (containerd does the same since
    /// CVE-2023-25173, so dropping the primary group with `setgroups` is not a bypass).
    pub additional_gids: Vec<u32>,
    /// The user's name in the image's `/etc/passwd`, when it has an entry.
    pub username: Option<String>,
}

/// Parses `/etc/passwd`: `name:password:uid:gid:gecos:home:shell`. Comments, blank lines,
/// NIS lines (`+`/`-`) and lines whose uid or gid is not a number are skipped.
pub fn parse_passwd(content: &str) -> Vec<PasswdEntry> {
    content
        .lines()
        .filter(|l| !skip_line(l))
        .filter_map(|line| {
            let mut f = line.split(':');
            let name = f.next()?;
            let _password = f.next()?;
            let uid = f.next()?.trim().parse().ok()?;
            let gid = f.next()?.trim().parse().ok()?;
            (!name.is_empty()).then(|| PasswdEntry {
                name: name.to_owned(),
                uid,
                gid,
            })
        })
        .collect()
}

/// Parses `/etc/group`: `name:password:gid:member,member`. Skips what
/// [`parse_passwd`] skips.
pub fn parse_group(content: &str) -> Vec<GroupEntry> {
    content
        .lines()
        .filter(|l| !skip_line(l))
        .filter_map(|line| {
            let mut f = line.split(':');
            let name = f.next()?;
            let _password = f.next()?;
            let gid = f.next()?.trim().parse().ok()?;
            let members = f
                .next()
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect();
            (!name.is_empty()).then(|| GroupEntry {
                name: name.to_owned(),
                gid,
                members,
            })
        })
        .collect()
}

fn skip_line(l: &str) -> bool {
    let t = l.trim();
    t.is_empty() || t.starts_with('#') || t.starts_with('+') || t.starts_with('-')
}

/// Reads `rel` (relative, like `etc/passwd`) inside `root`, resolving every path component
/// as the container would see it. `Ok(None)` when it does not exist.
pub(crate) fn read_in_root(root: &Path, rel: &str) -> io::Result<Option<String>> {
    let dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let fd: OwnedFd = match open_in_root(&dir, rel) {
        Ok(fd) => fd,
        Err(e) if e == rustix::io::Errno::NOENT || e == rustix::io::Errno::NOTDIR => {
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    let mut s = String::new();
    File::from(fd).take(MAX_FILE).read_to_string(&mut s)?;
    Ok(Some(s))
}

fn open_in_root(dir: &OwnedFd, rel: &str) -> rustix::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    for _ in 0..8 {
        match rustix::fs::openat2(
            dir,
            rel,
            flags,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            // A concurrent rename somewhere on the host; the kernel asks to retry.
            Err(rustix::io::Errno::AGAIN) => continue,
            Err(rustix::io::Errno::NOSYS) => return open_no_symlinks(dir, rel, flags),
            other => return other,
        }
    }
    Err(rustix::io::Errno::AGAIN)
}

/// Fallback without `openat2`: walk the components with `O_NOFOLLOW`; any symlink is
/// refused (`ELOOP`), so nothing outside `dir` is reachable.
fn open_no_symlinks(dir: &OwnedFd, rel: &str, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let parts: Vec<&str> = rel
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(rustix::io::Errno::INVAL);
    }
    let mut cur = rustix::fs::openat(
        dir,
        ".",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let f = if last {
            flags | OFlags::NOFOLLOW
        } else {
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
        };
        cur = rustix::fs::openat(&cur, *part, f, Mode::empty())?;
    }
    Ok(cur)
}

/// A user or group as written: a number or a name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Id {
    Num(u32),
    Name(String),
}

fn parse_id(s: &str) -> Id {
    match s.parse::<u32>() {
        Ok(n) => Id::Num(n),
        Err(_) => Id::Name(s.to_owned()),
    }
}

fn id_from_i64(field: &str, v: i64) -> Result<u32, SpecError> {
    u32::try_from(v)
        .ok()
        .filter(|v| *v != u32::MAX)
        .ok_or_else(|| {
            SpecError::invalid(format!(
                "container config: {field} {v}: expected an id from 0 to {}",
                u32::MAX - 1
            ))
        })
}

/// What to resolve, and where each part came from (for error messages).
struct Request {
    user: Id,
    user_from: String,
    group: Option<Id>,
    group_from: String,
}

fn request(
    sc: &cri::LinuxContainerSecurityContext,
    image_user: &str,
) -> Result<Request, SpecError> {
    // containerd's rule: a group alone is an error even when the image names a user (kubelet
    // always sends the image's user as run_as_user or run_as_username with a group).
    if let Some(g) = &sc.run_as_group
        && sc.run_as_user.is_none()
        && sc.run_as_username.is_empty()
    {
        return Err(SpecError::invalid(format!(
            "container config: linux.security_context.run_as_group {} is set without \
             run_as_user or run_as_username; a group needs a user",
            g.value
        )));
    }
    let (user, user_from, mut group, mut group_from) = if let Some(u) = &sc.run_as_user {
        let uid = id_from_i64("linux.security_context.run_as_user", u.value)?;
        (
            Id::Num(uid),
            format!("linux.security_context.run_as_user {uid}"),
            None,
            String::new(),
        )
    } else if !sc.run_as_username.is_empty() {
        let name = &sc.run_as_username;
        (
            parse_id(name),
            format!("linux.security_context.run_as_username {name:?}"),
            None,
            String::new(),
        )
    } else {
        let (u, g) = match image_user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (image_user, None),
        };
        let from = format!("image config User {image_user:?}");
        let user = if u.is_empty() {
            Id::Num(0)
        } else {
            parse_id(u)
        };
        let group = g.filter(|g| !g.is_empty()).map(parse_id);
        (user, from.clone(), group, from)
    };
    if let Some(g) = &sc.run_as_group {
        let gid = id_from_i64("linux.security_context.run_as_group", g.value)?;
        group = Some(Id::Num(gid));
        group_from = format!("linux.security_context.run_as_group {gid}");
    }
    Ok(Request {
        user,
        user_from,
        group,
        group_from,
    })
}

/// Resolves the process user against the rootfs's `/etc/passwd` and `/etc/group`.
pub(crate) fn resolve(
    sc: &cri::LinuxContainerSecurityContext,
    image_user: &str,
    rootfs: &Path,
) -> Result<ResolvedUser, SpecError> {
    let req = request(sc, image_user)?;
    let read = |rel: &str| {
        read_in_root(rootfs, rel).map_err(|e| {
            SpecError::new(
                ErrorKind::FailedPrecondition,
                format!(
                    "reading /{rel} in the image (rootfs {}): {}",
                    rootfs.display(),
                    io_reason(&e)
                ),
            )
        })
    };
    let passwd = read("etc/passwd")?.map(|s| parse_passwd(&s));
    let strict = sc.supplemental_groups_policy == cri::SupplementalGroupsPolicy::Strict as i32;
    // /etc/group is needed for a group name, or for the user's supplementary groups.
    let need_groups = matches!(req.group, Some(Id::Name(_))) || !strict;
    let group = if need_groups {
        read("etc/group")?.map(|s| parse_group(&s))
    } else {
        None
    };
    resolve_with(&req, sc, passwd.as_deref(), group.as_deref(), strict)
}

fn resolve_with(
    req: &Request,
    sc: &cri::LinuxContainerSecurityContext,
    passwd: Option<&[PasswdEntry]>,
    group: Option<&[GroupEntry]>,
    strict: bool,
) -> Result<ResolvedUser, SpecError> {
    let (uid, entry) = match &req.user {
        Id::Num(uid) => (*uid, passwd.and_then(|p| p.iter().find(|e| e.uid == *uid))),
        Id::Name(name) => {
            let Some(p) = passwd else {
                return Err(SpecError::invalid(format!(
                    "{}: user {name:?} cannot be resolved: the image has no /etc/passwd",
                    req.user_from
                )));
            };
            let e = p.iter().find(|e| &e.name == name).ok_or_else(|| {
                SpecError::invalid(format!(
                    "{}: user {name:?} not found in the image's /etc/passwd",
                    req.user_from
                ))
            })?;
            (e.uid, Some(e))
        }
    };
    let gid = match &req.group {
        Some(Id::Num(gid)) => *gid,
        Some(Id::Name(name)) => {
            let Some(g) = group else {
                return Err(SpecError::invalid(format!(
                    "{}: group {name:?} cannot be resolved: the image has no /etc/group",
                    req.group_from
                )));
            };
            g.iter()
                .find(|e| &e.name == name)
                .ok_or_else(|| {
                    SpecError::invalid(format!(
                        "{}: group {name:?} not found in the image's /etc/group",
                        req.group_from
                    ))
                })?
                .gid
        }
        // containerd: the passwd entry's group, else 0.
        None => entry.map_or(0, |e| e.gid),
    };
    let username = entry.map(|e| e.name.clone());

    let mut gids = vec![gid];
    if !strict && let (Some(name), Some(groups)) = (&username, group) {
        gids.extend(
            groups
                .iter()
                .filter(|g| g.members.iter().any(|m| m == name))
                .map(|g| g.gid),
        );
    }
    for (i, g) in sc.supplemental_groups.iter().enumerate() {
        gids.push(id_from_i64(
            &format!("linux.security_context.supplemental_groups[{i}]"),
            *g,
        )?);
    }
    let mut seen = std::collections::HashSet::new();
    gids.retain(|g| seen.insert(*g));
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: gids,
        username,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
# comment
daemon:x:1:1::/:/sbin/nologin
app:x:1000:1001:App:/home/app:/bin/sh
bad:x:notanumber:1::/:
+nis
nobody:x:65534:65534::/nonexistent:/usr/sbin/nologin
";
    const GROUP: &str = "\
root:x:0:
wheel:x:10:root,app
appgrp:x:1001:
video:x:44:app , other
staff:x:50:
nogroup:x:65534:
";

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("etc")).unwrap();
        fs::write(d.path().join("etc/passwd"), PASSWD).unwrap();
        fs::write(d.path().join("etc/group"), GROUP).unwrap();
        d
    }

    fn sc() -> cri::LinuxContainerSecurityContext {
        cri::LinuxContainerSecurityContext::default()
    }

    fn user(uid: u32, gid: u32, gids: &[u32], name: Option<&str>) -> ResolvedUser {
        ResolvedUser {
            uid,
            gid,
            additional_gids: gids.to_vec(),
            username: name.map(str::to_owned),
        }
    }

    #[test]
    fn parse_files() {
        let p = parse_passwd(PASSWD);
        assert_eq!(p.len(), 4);
        assert_eq!(
            p[2],
            PasswdEntry {
                name: "app".into(),
                uid: 1000,
                gid: 1001
            }
        );
        let g = parse_group(GROUP);
        assert_eq!(g.len(), 6);
        assert_eq!(g[3].members, vec!["app".to_owned(), "other".to_owned()]);
        assert!(g[0].members.is_empty());
    }

    #[test]
    fn image_user_matrix() {
        let d = rootfs();
        let r = |u: &str| resolve(&sc(), u, d.path());
        assert_eq!(r("").unwrap(), user(0, 0, &[0, 10], Some("root")));
        assert_eq!(
            r("app").unwrap(),
            user(1000, 1001, &[1001, 10, 44], Some("app"))
        );
        assert_eq!(
            r("1000").unwrap(),
            user(1000, 1001, &[1001, 10, 44], Some("app"))
        );
        assert_eq!(
            r("1000:50").unwrap(),
            user(1000, 50, &[50, 10, 44], Some("app"))
        );
        assert_eq!(
            r("app:staff").unwrap(),
            user(1000, 50, &[50, 10, 44], Some("app"))
        );
        assert_eq!(r("4242").unwrap(), user(4242, 0, &[0], None));
        assert_eq!(r("4242:7").unwrap(), user(4242, 7, &[7], None));
        let e = r("ghost").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert_eq!(
            e.message(),
            "image config User \"ghost\": user \"ghost\" not found in the image's /etc/passwd"
        );
        let e = r("app:ghosts").unwrap_err();
        assert!(e.message().contains("group \"ghosts\" not found"), "{e}");
    }

    #[test]
    fn security_context_matrix() {
        let d = rootfs();
        let mut c = sc();
        c.run_as_user = Some(cri::Int64Value { value: 1000 });
        // run_as_user wins over the image user entirely (group part included).
        assert_eq!(
            resolve(&c, "daemon:staff", d.path()).unwrap(),
            user(1000, 1001, &[1001, 10, 44], Some("app"))
        );
        c.run_as_group = Some(cri::Int64Value { value: 3000 });
        c.supplemental_groups = vec![5, 10, 6];
        assert_eq!(
            resolve(&c, "", d.path()).unwrap(),
            user(1000, 3000, &[3000, 10, 44, 5, 6], Some("app"))
        );
        c.supplemental_groups_policy = cri::SupplementalGroupsPolicy::Strict as i32;
        assert_eq!(
            resolve(&c, "", d.path()).unwrap(),
            user(1000, 3000, &[3000, 5, 10, 6], Some("app"))
        );

        let mut c = sc();
        c.run_as_username = "nobody".into();
        assert_eq!(
            resolve(&c, "app", d.path()).unwrap(),
            user(65534, 65534, &[65534], Some("nobody"))
        );
        c.run_as_username = "nobody2".into();
        let e = resolve(&c, "", d.path()).unwrap_err();
        assert_eq!(
            e.message(),
            "linux.security_context.run_as_username \"nobody2\": user \"nobody2\" not found \
             in the image's /etc/passwd"
        );
        // run_as_group without a CRI user is refused, even when the image names one
        // (containerd); with run_as_username it applies.
        let mut c = sc();
        c.run_as_group = Some(cri::Int64Value { value: 9 });
        for image_user in ["app:staff", ""] {
            let e = resolve(&c, image_user, d.path()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            assert!(
                e.message().contains("run_as_group 9")
                    && e.message().contains("without run_as_user"),
                "{e}"
            );
        }
        c.run_as_username = "app".into();
        assert_eq!(
            resolve(&c, "", d.path()).unwrap(),
            user(1000, 9, &[9, 10, 44], Some("app"))
        );
        let mut c = sc();
        c.run_as_user = Some(cri::Int64Value { value: -1 });
        assert!(
            resolve(&c, "", d.path())
                .unwrap_err()
                .message()
                .contains("run_as_user -1")
        );
    }

    #[test]
    fn missing_files() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            resolve(&sc(), "123", d.path()).unwrap(),
            user(123, 0, &[0], None)
        );
        assert_eq!(
            resolve(&sc(), "", d.path()).unwrap(),
            user(0, 0, &[0], None)
        );
        let e = resolve(&sc(), "app", d.path()).unwrap_err();
        assert!(e.message().contains("the image has no /etc/passwd"), "{e}");
        let e = resolve(&sc(), "1:wheel", d.path()).unwrap_err();
        assert!(e.message().contains("the image has no /etc/group"), "{e}");
    }

    #[test]
    fn symlink_out_of_rootfs_is_not_followed() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(
            outside.path().join("passwd"),
            "evil:x:777:777::/:/bin/sh\nroot:x:0:666::/:/bin/sh\n",
        )
        .unwrap();
        fs::write(outside.path().join("group"), "evilgrp:x:888:root\n").unwrap();
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("etc")).unwrap();
        // Absolute link: resolves inside the rootfs, where the target does not exist.
        std::os::unix::fs::symlink(outside.path().join("passwd"), d.path().join("etc/passwd"))
            .unwrap();
        // Relative link climbing out: clamped at the rootfs's root.
        let ups = "../".repeat(64);
        let rel = format!("{ups}{}", outside.path().join("group").display());
        std::os::unix::fs::symlink(rel, d.path().join("etc/group")).unwrap();
        let e = resolve(&sc(), "evil", d.path()).unwrap_err();
        assert!(e.message().contains("no /etc/passwd"), "{e}");
        assert_eq!(
            resolve(&sc(), "", d.path()).unwrap(),
            user(0, 0, &[0], None)
        );
        let e = resolve(&sc(), "0:evilgrp", d.path()).unwrap_err();
        assert!(e.message().contains("no /etc/group"), "{e}");
        // A link that stays inside works, resolved against the rootfs.
        fs::create_dir_all(d.path().join("data")).unwrap();
        fs::write(d.path().join("data/passwd"), "in:x:5:6::/:/bin/sh\n").unwrap();
        fs::remove_file(d.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/data/passwd", d.path().join("etc/passwd")).unwrap();
        assert_eq!(
            resolve(&sc(), "in", d.path()).unwrap(),
            user(5, 6, &[6], Some("in"))
        );
    }

    #[test]
    fn no_symlink_fallback_refuses_links() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("etc")).unwrap();
        fs::write(d.path().join("real"), "x").unwrap();
        std::os::unix::fs::symlink("/real", d.path().join("etc/passwd")).unwrap();
        fs::write(d.path().join("etc/group"), "g:x:1:\n").unwrap();
        let dir =
            rustix::fs::open(d.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let flags = OFlags::RDONLY | OFlags::CLOEXEC;
        assert_eq!(
            open_no_symlinks(&dir, "etc/passwd", flags).unwrap_err(),
            rustix::io::Errno::LOOP
        );
        assert!(open_no_symlinks(&dir, "etc/group", flags).is_ok());
        assert!(open_no_symlinks(&dir, "../etc/group", flags).is_err());
    }
}
