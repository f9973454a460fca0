//! Safe extraction of one image layer into its own directory, in overlayfs form.
//!
//! Layers are untrusted input unpacked as root. The `tar` crate only parses; every
//! placement decision is made here: entry paths must be relative without `..`, nothing is
//! ever created through a symlink, hard links are made by us from paths inside the layer,
//! and whiteouts become what overlayfs understands (each layer is one lower dir later):
//! `.wh.<name>` → a 0:0 character device `<name>`, `.wh..wh..opq` → the xattr
//! `trusted.overlay.opaque=y` on its directory.
//!
//! The caller unpacks into a fresh temporary directory and renames it into place only
//! when this returns `Ok` and the diff_id matched, so a refused or broken layer leaves
//! nothing visible behind.

mod attrs;
mod entry_path;
mod placement;

use std::fs::{self, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode};
use tar::EntryType;
use tracing::debug;

use crate::digest::HashingReader;
use crate::error::ErrorKind;
use crate::manifest::Compression;
use attrs::{Attrs, Kind, apply_owner_mode_xattrs, apply_times};
use entry_path::{EntryRole, classify, clean_entry_path};
use placement::{
    Existing, PlaceError, check_link_target, clear_target, ensure_dirs, ensure_parents,
};

/// xattr that makes an overlayfs directory hide the lower layers' contents.
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Why a layer could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The layer breaks a safety or format rule; it is refused as a whole.
    #[error("entry {entry:?} refused: {reason}")]
    Refused { entry: String, reason: String },
    /// The local file system failed while placing an entry.
    #[error("entry {entry:?}: {context}: {source}")]
    Io {
        entry: String,
        context: String,
        #[source]
        source: io::Error,
    },
    /// The (decompressed) stream is not a readable tar archive.
    #[error("layer stream is corrupt: {0}")]
    Stream(#[source] io::Error),
}

impl UnpackError {
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            UnpackError::Refused { .. } => ErrorKind::InvalidArgument,
            UnpackError::Io { .. } => ErrorKind::Internal,
            UnpackError::Stream(_) => ErrorKind::DataLoss,
        }
    }
}

/// Decompresses `compressed`, unpacks the tar into `root` and returns the sha256 of the
/// whole uncompressed stream (to compare with the config's diff_id). Reads `compressed`
/// to its end, so a producer feeding it never blocks on a reader that went away early.
pub(crate) fn unpack_layer<R: Read>(
    compressed: &mut R,
    compression: Compression,
    root: &Path,
) -> Result<String, UnpackError> {
    let diff_id = {
        let decoder: Box<dyn Read + '_> = match compression {
            Compression::None => Box::new(&mut *compressed),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(
                &mut *compressed,
            ))),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::new(&mut *compressed).map_err(UnpackError::Stream)?,
            ),
        };
        let hashing = unpack_tar(HashingReader::new(decoder), root)?;
        hashing.finish().map_err(UnpackError::Stream)?
    };
    io::copy(compressed, &mut io::sink()).map_err(UnpackError::Stream)?;
    Ok(diff_id)
}

/// Unpacks a tar stream into `root` (an existing, empty directory) and hands the reader
/// back so the caller can hash what follows the end-of-archive marker.
pub(crate) fn unpack_tar<R: Read>(reader: R, root: &Path) -> Result<R, UnpackError> {
    // The temp dir starts as 0700; a container's "/" must be traversable by everyone
    // unless the layer says otherwise with a "./" entry.
    placement::set_mode(root, 0o755).map_err(|source| UnpackError::Io {
        entry: "./".into(),
        context: "setting mode of the layer root".into(),
        source,
    })?;
    let mut archive = tar::Archive::new(reader);
    let mut unpacker = Unpacker {
        root,
        dir_times: Vec::new(),
        buf: vec![0u8; 64 * 1024],
    };
    let entries = archive.entries().map_err(UnpackError::Stream)?;
    for entry in entries {
        let mut entry = entry.map_err(UnpackError::Stream)?;
        unpacker.entry(&mut entry)?;
    }
    unpacker.finish()?;
    Ok(archive.into_inner())
}

struct Unpacker<'a> {
    root: &'a Path,
    /// Directory mtimes are set last: adding entries to a directory changes its mtime.
    dir_times: Vec<(PathBuf, rustix::fs::Timespec)>,
    buf: Vec<u8>,
}

impl Unpacker<'_> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw_name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let refuse = |reason: String| UnpackError::Refused {
            entry: raw_name.clone(),
            reason,
        };
        let mut entry_type = entry.header().entry_type();
        if entry_type == EntryType::XGlobalHeader {
            return Ok(()); // archive-wide PAX defaults; nothing to place
        }
        // Pre-POSIX tars mark directories with a trailing '/' on a regular entry.
        if entry_type == EntryType::Regular && raw_name.ends_with('/') {
            entry_type = EntryType::Directory;
        }
        let raw_path = entry.path().map_err(UnpackError::Stream)?.into_owned();
        let rel = clean_entry_path(&raw_path).map_err(&refuse)?;
        let attrs = Attrs::from_entry(entry).map_err(&refuse)?;

        if rel.as_os_str().is_empty() {
            // "./": the layer root itself.
            if entry_type != EntryType::Directory {
                return Err(refuse("the layer root must be a directory".into()));
            }
            let root = self.root.to_path_buf();
            self.apply_attrs(&raw_name, &root, &attrs, Kind::Node)?;
            self.dir_times.push((root, attrs.mtime));
            return Ok(());
        }

        match classify(&rel).map_err(&refuse)? {
            EntryRole::Ignored => {
                debug!(entry = %raw_name, "skipping AUFS metadata entry");
                Ok(())
            }
            EntryRole::OpaqueDir(dir) => self.opaque(&raw_name, &dir),
            EntryRole::Whiteout(target) => self.whiteout(&raw_name, &target),
            EntryRole::Plain => self.plain(entry, entry_type, &raw_name, &rel, &attrs),
        }
    }

    fn plain<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        entry_type: EntryType,
        raw_name: &str,
        rel: &Path,
        attrs: &Attrs,
    ) -> Result<(), UnpackError> {
        let refuse = |reason: String| UnpackError::Refused {
            entry: raw_name.to_string(),
            reason,
        };
        self.parents(raw_name, rel)?;
        let path = self.root.join(rel);
        let io_err = |context: &str| {
            let entry = raw_name.to_string();
            let context = context.to_string();
            move |source| UnpackError::Io {
                entry,
                context,
                source,
            }
        };

        match entry_type {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                clear_target(&path, false).map_err(io_err("replacing an earlier entry"))?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc_nofollow())
                    .open(&path)
                    .map_err(io_err("creating file"))?;
                self.copy_content(entry, &mut file, raw_name)?;
                drop(file);
                self.apply_attrs(raw_name, &path, attrs, Kind::Node)?;
                apply_times(&path, attrs.mtime).map_err(io_err("setting times"))?;
            }
            EntryType::Directory => {
                if clear_target(&path, true).map_err(io_err("replacing an earlier entry"))?
                    == Existing::Nothing
                {
                    fs::create_dir(&path).map_err(io_err("creating directory"))?;
                }
                self.apply_attrs(raw_name, &path, attrs, Kind::Node)?;
                self.dir_times.push((path, attrs.mtime));
            }
            EntryType::Symlink => {
                // The target may point anywhere (absolute targets are normal in images);
                // it is only never followed while unpacking.
                let target = entry
                    .link_name()
                    .map_err(UnpackError::Stream)?
                    .ok_or_else(|| refuse("symlink without a target".into()))?;
                if target.as_os_str().is_empty() {
                    return Err(refuse("symlink with an empty target".into()));
                }
                clear_target(&path, false).map_err(io_err("replacing an earlier entry"))?;
                std::os::unix::fs::symlink(&target, &path).map_err(io_err("creating symlink"))?;
                self.apply_attrs(raw_name, &path, attrs, Kind::Symlink)?;
                apply_times(&path, attrs.mtime).map_err(io_err("setting times"))?;
            }
            EntryType::Link => {
                let raw_target = entry
                    .link_name()
                    .map_err(UnpackError::Stream)?
                    .ok_or_else(|| refuse("hard link without a target".into()))?;
                let target_rel = clean_entry_path(&raw_target).map_err(|why| {
                    refuse(format!("hard link target {}: {why}", raw_target.display()))
                })?;
                if target_rel.as_os_str().is_empty() {
                    return Err(refuse("hard link to the layer root".into()));
                }
                if target_rel == rel {
                    return Err(refuse("hard link to itself".into()));
                }
                let target = check_link_target(self.root, &target_rel)
                    .map_err(|e| place_error(raw_name, e))?;
                clear_target(&path, false).map_err(io_err("replacing an earlier entry"))?;
                // linkat without AT_SYMLINK_FOLLOW: a symlink target is linked, not followed.
                fs::hard_link(&target, &path).map_err(io_err("creating hard link"))?;
                // Owner, mode and times belong to the shared inode, set by its own entry.
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let file_type = match entry_type {
                    EntryType::Char => FileType::CharacterDevice,
                    EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let header = entry.header();
                let major = header
                    .device_major()
                    .map_err(|e| refuse(format!("bad device major: {e}")))?
                    .unwrap_or(0);
                let minor = header
                    .device_minor()
                    .map_err(|e| refuse(format!("bad device minor: {e}")))?
                    .unwrap_or(0);
                clear_target(&path, false).map_err(io_err("replacing an earlier entry"))?;
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &path,
                    file_type,
                    Mode::from_raw_mode(attrs.mode),
                    rustix::fs::makedev(major, minor),
                )
                .map_err(|e| io_err("creating device node")(e.into()))?;
                self.apply_attrs(raw_name, &path, attrs, Kind::Node)?;
                apply_times(&path, attrs.mtime).map_err(io_err("setting times"))?;
            }
            other => {
                return Err(refuse(format!("unsupported tar entry type {other:?}")));
            }
        }
        Ok(())
    }

    /// `.wh.<name>` → character device 0:0 at `<name>`, overlayfs' whiteout.
    fn whiteout(&mut self, raw_name: &str, target: &Path) -> Result<(), UnpackError> {
        self.parents(raw_name, target)?;
        let path = self.root.join(target);
        let io_err = |context: &str, source| UnpackError::Io {
            entry: raw_name.to_string(),
            context: context.to_string(),
            source,
        };
        clear_target(&path, false).map_err(|e| io_err("replacing an earlier entry", e))?;
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            FileType::CharacterDevice,
            Mode::empty(),
            rustix::fs::makedev(0, 0),
        )
        .map_err(|e| io_err("creating whiteout device", e.into()))?;
        std::os::unix::fs::lchown(&path, Some(0), Some(0))
            .map_err(|e| io_err("setting owner of whiteout", e))?;
        Ok(())
    }

    /// `.wh..wh..opq` → `trusted.overlay.opaque=y` on its directory.
    fn opaque(&mut self, raw_name: &str, dir: &Path) -> Result<(), UnpackError> {
        ensure_dirs(self.root, dir).map_err(|e| place_error(raw_name, e))?;
        let path = self.root.join(dir);
        rustix::fs::lsetxattr(&path, OPAQUE_XATTR, b"y", rustix::fs::XattrFlags::empty()).map_err(
            |e| UnpackError::Io {
                entry: raw_name.to_string(),
                context: format!("setting {OPAQUE_XATTR} on {}", dir.display()),
                source: e.into(),
            },
        )
    }

    fn parents(&self, raw_name: &str, rel: &Path) -> Result<(), UnpackError> {
        ensure_parents(self.root, rel).map_err(|e| place_error(raw_name, e))
    }

    fn apply_attrs(
        &self,
        raw_name: &str,
        path: &Path,
        attrs: &Attrs,
        kind: Kind,
    ) -> Result<(), UnpackError> {
        apply_owner_mode_xattrs(path, attrs, kind).map_err(|(context, source)| UnpackError::Io {
            entry: raw_name.to_string(),
            context,
            source,
        })
    }

    /// Copies file content; read errors are the stream's fault, write errors ours.
    fn copy_content<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        file: &mut fs::File,
        raw_name: &str,
    ) -> Result<(), UnpackError> {
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(UnpackError::Stream(e)),
            };
            file.write_all(&self.buf[..n])
                .map_err(|source| UnpackError::Io {
                    entry: raw_name.to_string(),
                    context: "writing file content".into(),
                    source,
                })?;
        }
    }

    fn finish(self) -> Result<(), UnpackError> {
        for (path, mtime) in self.dir_times.iter().rev() {
            match apply_times(path, *mtime) {
                Ok(()) => {}
                // Replaced by a later entry of the same layer: nothing to date.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(UnpackError::Io {
                        entry: path
                            .strip_prefix(self.root)
                            .unwrap_or(path)
                            .display()
                            .to_string(),
                        context: "setting directory times".into(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }
}

fn place_error(raw_name: &str, e: PlaceError) -> UnpackError {
    match e {
        PlaceError::Refused(reason) => UnpackError::Refused {
            entry: raw_name.to_string(),
            reason,
        },
        PlaceError::Io(context, source) => UnpackError::Io {
            entry: raw_name.to_string(),
            context,
            source,
        },
    }
}

/// `O_NOFOLLOW | O_CLOEXEC` for `OpenOptions::custom_flags`.
fn libc_nofollow() -> i32 {
    (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC).bits() as i32
}

#[cfg(test)]
mod tests;
