//! How much the image store occupies, for CRI `ImageFsInfo`.
//!
//! Bytes are allocated blocks (what `du` reports), and every inode is counted once even
//! when hard-linked from several places. The walk never follows symlinks.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::ImageError;

/// Space and inodes used by the image store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsUsage {
    /// The store directory (`<kraal root>/images`).
    pub path: PathBuf,
    /// Mount point of the file system holding it.
    pub mountpoint: PathBuf,
    pub used_bytes: u64,
    pub inodes_used: u64,
}

/// Walks `dir` and sums allocated bytes and distinct inodes.
pub(crate) fn measure(dir: &Path) -> Result<FsUsage, ImageError> {
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut used_bytes = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            // Removed by a concurrent garbage collection: no longer used.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(ImageError::io("measuring image store usage", &path, e)),
        };
        if seen.insert((meta.dev(), meta.ino())) {
            used_bytes += meta.blocks() * 512;
        }
        if meta.is_dir() {
            let entries = match fs::read_dir(&path) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(ImageError::io("measuring image store usage", &path, e)),
            };
            for entry in entries {
                let entry =
                    entry.map_err(|e| ImageError::io("measuring image store usage", &path, e))?;
                stack.push(entry.path());
            }
        }
    }
    Ok(FsUsage {
        path: dir.to_path_buf(),
        mountpoint: mountpoint_of(dir),
        used_bytes,
        inodes_used: seen.len() as u64,
    })
}

/// The longest mount point in `/proc/self/mountinfo` that contains `dir`; `/` when the
/// table cannot be read.
fn mountpoint_of(dir: &Path) -> PathBuf {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let table = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    longest_mount_prefix(&table, &dir)
}

fn longest_mount_prefix(mountinfo: &str, dir: &Path) -> PathBuf {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mount_field(field)))
        .filter(|mount| dir.starts_with(mount))
        .max_by_key(|mount| mount.as_os_str().len())
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .map(|d| d.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0')))
            .and_then(|v| u8::try_from(v).ok());
        if let Some(value) = octal {
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_hard_links_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("images");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("a"), vec![1u8; 10_000]).unwrap();
        fs::hard_link(root.join("a"), root.join("b")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", root.join("l")).unwrap();
        let usage = measure(&root).unwrap();
        // root dir + file (linked twice) + symlink
        assert_eq!(usage.inodes_used, 3);
        assert!(usage.used_bytes >= 10_000, "{usage:?}");
        assert_eq!(usage.path, root);
        assert!(root.starts_with(&usage.mountpoint));
    }

    #[test]
    fn mount_table_parsing() {
        let table = "22 27 0:21 / /proc rw - proc proc rw\n\
                     27 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
                     30 27 8:2 / /var/lib rw - ext4 /dev/sda2 rw\n\
                     31 27 8:3 / /mnt/with\\040space rw - ext4 /dev/sda3 rw\n";
        assert_eq!(
            longest_mount_prefix(table, Path::new("/var/lib/kraal/images")),
            PathBuf::from("/var/lib")
        );
        assert_eq!(
            longest_mount_prefix(table, Path::new("/var/libx")),
            PathBuf::from("/")
        );
        assert_eq!(
            longest_mount_prefix(table, Path::new("/mnt/with space/x")),
            PathBuf::from("/mnt/with space")
        );
        assert_eq!(
            longest_mount_prefix("", Path::new("/x")),
            PathBuf::from("/")
        );
    }
}
