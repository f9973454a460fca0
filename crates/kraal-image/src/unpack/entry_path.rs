//! Pure rules about tar entry names: which paths are acceptable, and which names are
//! whiteouts. No file system access here, so every rule is unit-tested directly.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Prefix of a whiteout file in the image layer format.
const WHITEOUT_PREFIX: &str = ".wh.";
/// Whiteout names starting with this are AUFS metadata (`.wh..wh.plnk`, …).
const WHITEOUT_META_PREFIX: &str = ".wh..wh.";
/// Marks its directory as opaque: nothing of the lower layers shows through.
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// An entry path relative to the layer root, or the reason it is refused.
///
/// Refuses absolute paths and any `..` component (even ones that would stay inside:
/// simpler to reason about, and real images never need them). `.` components and a
/// leading `./` are dropped. An empty result means the layer root itself.
pub(crate) fn clean_entry_path(raw: &Path) -> Result<PathBuf, String> {
    let mut clean = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err("absolute path (starts with '/')".into());
            }
            Component::ParentDir => return Err("path has a '..' component".into()),
        }
    }
    Ok(clean)
}

/// What an entry means for the overlay lower dir being built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntryRole {
    /// An ordinary file system object at this path.
    Plain,
    /// `.wh.<name>`: delete `<name>` from lower layers → whiteout device at this path.
    Whiteout(PathBuf),
    /// `.wh..wh..opq`: this directory hides lower layers' contents.
    OpaqueDir(PathBuf),
    /// Other `.wh..wh.*` AUFS bookkeeping: nothing to do.
    Ignored,
}

/// Classifies a cleaned entry path by its file name.
pub(crate) fn classify(path: &Path) -> Result<EntryRole, String> {
    let Some(name) = path.file_name() else {
        return Ok(EntryRole::Plain);
    };
    let name = name.as_bytes();
    let parent = path.parent().unwrap_or(Path::new(""));
    if name == OPAQUE_MARKER.as_bytes() {
        return Ok(EntryRole::OpaqueDir(parent.to_path_buf()));
    }
    if name.starts_with(WHITEOUT_META_PREFIX.as_bytes()) {
        return Ok(EntryRole::Ignored);
    }
    if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
        if target.is_empty() || target == b"." || target == b".." {
            return Err(format!(
                "whiteout {:?} names no deletable entry",
                String::from_utf8_lossy(name)
            ));
        }
        return Ok(EntryRole::Whiteout(parent.join(OsStr::from_bytes(target))));
    }
    Ok(EntryRole::Plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(p: &str) -> Result<String, String> {
        clean_entry_path(Path::new(p)).map(|p| p.to_string_lossy().into_owned())
    }

    #[test]
    fn accepts_relative_paths() {
        assert_eq!(clean("etc/passwd"), Ok("etc/passwd".into()));
        assert_eq!(clean("./etc/passwd"), Ok("etc/passwd".into()));
        assert_eq!(clean("etc/./passwd"), Ok("etc/passwd".into()));
        assert_eq!(clean("etc//passwd"), Ok("etc/passwd".into()));
        assert_eq!(clean("bin/"), Ok("bin".into()));
        assert_eq!(clean("./"), Ok("".into()));
        assert_eq!(clean("."), Ok("".into()));
        assert_eq!(clean("a/..b/c.."), Ok("a/..b/c..".into()));
    }

    #[test]
    fn refuses_absolute_and_dotdot() {
        assert!(clean("/etc/passwd").unwrap_err().contains("absolute"));
        assert!(clean("//etc").unwrap_err().contains("absolute"));
        assert!(clean("../etc").unwrap_err().contains(".."));
        assert!(clean("a/../../etc").unwrap_err().contains(".."));
        // Would stay inside, refused anyway.
        assert!(clean("a/../b").unwrap_err().contains(".."));
        assert!(clean("./..").unwrap_err().contains(".."));
    }

    #[test]
    fn classifies_whiteouts() {
        let c = |p: &str| classify(Path::new(p));
        assert_eq!(c("etc/passwd"), Ok(EntryRole::Plain));
        assert_eq!(c(""), Ok(EntryRole::Plain));
        assert_eq!(
            c("etc/.wh.passwd"),
            Ok(EntryRole::Whiteout("etc/passwd".into()))
        );
        assert_eq!(c(".wh.top"), Ok(EntryRole::Whiteout("top".into())));
        assert_eq!(
            c("var/cache/.wh..wh..opq"),
            Ok(EntryRole::OpaqueDir("var/cache".into()))
        );
        assert_eq!(c(".wh..wh..opq"), Ok(EntryRole::OpaqueDir("".into())));
        assert_eq!(c("x/.wh..wh.plnk"), Ok(EntryRole::Ignored));
        assert_eq!(c("x/.wh..wh.aufs"), Ok(EntryRole::Ignored));
        assert!(c("x/.wh.").is_err());
        assert!(c("x/.wh..").is_err());
        // A name that merely contains ".wh." is an ordinary file.
        assert_eq!(c("x/a.wh.b"), Ok(EntryRole::Plain));
    }
}
