//! Ownership, mode, extended attributes and times of unpacked entries.
//!
//! Order matters: owner first (chown clears set-id bits), then mode, then xattrs (a
//! `security.capability` xattr is also cleared by chown), then times last. Nothing here
//! follows a symlink: `lchown`, `lsetxattr`, `utimensat(AT_SYMLINK_NOFOLLOW)`, and
//! `chmod` is only ever called on paths known not to be symlinks.

use std::io;
use std::path::Path;

use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, XattrFlags};
use tracing::warn;

use super::placement::set_mode;

/// PAX records carrying xattrs, as GNU tar and Docker write them.
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";
/// overlayfs' own metadata; an image must not be able to plant redirects or opaque
/// flags of its choosing. Whiteouts are expressed with `.wh.` files instead.
const OVERLAY_XATTR_PREFIX: &str = "trusted.overlay.";

/// Everything about an entry except its content and type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Attrs {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Permission bits incl. set-id and sticky (`& 0o7777`).
    pub(crate) mode: u32,
    pub(crate) mtime: Timespec,
    pub(crate) xattrs: Vec<(String, Vec<u8>)>,
}

impl Attrs {
    /// Reads the header and PAX records of an entry.
    pub(crate) fn from_entry<R: io::Read>(entry: &mut tar::Entry<'_, R>) -> Result<Attrs, String> {
        let header = entry.header();
        let uid = header.uid().map_err(|e| format!("bad uid field: {e}"))?;
        let gid = header.gid().map_err(|e| format!("bad gid field: {e}"))?;
        let mode = header.mode().map_err(|e| format!("bad mode field: {e}"))? & 0o7777;
        let mtime = header
            .mtime()
            .map_err(|e| format!("bad mtime field: {e}"))?;
        let uid = u32::try_from(uid).map_err(|_| format!("uid {uid} does not fit 32 bits"))?;
        let gid = u32::try_from(gid).map_err(|_| format!("gid {gid} does not fit 32 bits"))?;
        let mut attrs = Attrs {
            uid,
            gid,
            mode,
            mtime: Timespec {
                tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX),
                tv_nsec: 0,
            },
            xattrs: Vec::new(),
        };
        if let Some(pax) = entry
            .pax_extensions()
            .map_err(|e| format!("bad PAX header: {e}"))?
        {
            for record in pax {
                let record = record.map_err(|e| format!("bad PAX record: {e}"))?;
                let Ok(key) = record.key() else { continue };
                if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
                    attrs
                        .xattrs
                        .push((name.to_string(), record.value_bytes().to_vec()));
                } else if key == "mtime"
                    && let Some(ts) = record.value().ok().and_then(parse_pax_time)
                {
                    attrs.mtime = ts;
                }
            }
        }
        Ok(attrs)
    }
}

/// PAX time: decimal seconds with an optional fraction, e.g. `1700000000.5`.
pub(crate) fn parse_pax_time(value: &str) -> Option<Timespec> {
    let (secs, frac) = match value.split_once('.') {
        Some((s, f)) => (s, f),
        None => (value, ""),
    };
    let tv_sec: i64 = secs.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let mut tv_nsec: i64 = digits.parse().ok()?;
    if tv_sec < 0 && tv_nsec > 0 {
        // "-1.5" is 1.5 s before the epoch: -2 s + 0.5 s.
        return Some(Timespec {
            tv_sec: tv_sec - 1,
            tv_nsec: 1_000_000_000 - tv_nsec,
        });
    }
    tv_nsec = tv_nsec.clamp(0, 999_999_999);
    Some(Timespec { tv_sec, tv_nsec })
}

/// Which steps apply to a kind of object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Regular file, directory, device, fifo: everything.
    Node,
    /// Symlink: no chmod (Linux symlinks have no mode of their own).
    Symlink,
}

/// Applies owner, mode and xattrs (not times: see [`apply_times`]).
pub(crate) fn apply_owner_mode_xattrs(
    path: &Path,
    attrs: &Attrs,
    kind: Kind,
) -> Result<(), (String, io::Error)> {
    std::os::unix::fs::lchown(path, Some(attrs.uid), Some(attrs.gid))
        .map_err(|e| (format!("setting owner {}:{}", attrs.uid, attrs.gid), e))?;
    if kind == Kind::Node {
        set_mode(path, attrs.mode).map_err(|e| (format!("setting mode {:o}", attrs.mode), e))?;
    }
    for (name, value) in &attrs.xattrs {
        if name.starts_with(OVERLAY_XATTR_PREFIX) {
            warn!(path = %path.display(), xattr = %name, "ignoring overlayfs xattr carried by the layer");
            continue;
        }
        match rustix::fs::lsetxattr(path, name.as_str(), value, XattrFlags::empty()) {
            Ok(()) => {}
            // The store's file system may not support a namespace (e.g. user.* on
            // symlinks); the file is still usable, so note it and go on.
            Err(e) if e == rustix::io::Errno::NOTSUP || e == rustix::io::Errno::PERM => {
                warn!(path = %path.display(), xattr = %name, error = %e, "extended attribute not supported here, skipped");
            }
            Err(e) => return Err((format!("setting xattr {name}"), e.into())),
        }
    }
    Ok(())
}

/// Sets access and modification time to the entry's mtime, not following symlinks.
pub(crate) fn apply_times(path: &Path, mtime: Timespec) -> io::Result<()> {
    let times = Timestamps {
        last_access: mtime,
        last_modification: mtime,
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        let t = |s: i64, n: i64| {
            Some(Timespec {
                tv_sec: s,
                tv_nsec: n,
            })
        };
        assert_eq!(parse_pax_time("1700000000"), t(1_700_000_000, 0));
        assert_eq!(
            parse_pax_time("1700000000.5"),
            t(1_700_000_000, 500_000_000)
        );
        assert_eq!(parse_pax_time("1.123456789123"), t(1, 123_456_789));
        assert_eq!(parse_pax_time("-1.5"), t(-2, 500_000_000));
        assert_eq!(parse_pax_time("x"), None);
        assert_eq!(parse_pax_time("1.x"), None);
    }
}
