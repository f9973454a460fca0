//! kraald's sockets: replace a stale one safely, never steal a live one. The CRI socket is
//! mode 0660 (root and `socket_group`), the admin socket 0600 (root only).

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, umask};
use nix::unistd::{Gid, Group, chown};
use tokio::net::UnixListener;

pub const CRI_SOCKET_MODE: u32 = 0o660;
pub const ADMIN_SOCKET_MODE: u32 = 0o600;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("another server is already listening on {0}; refusing to replace a live socket")]
    Live(PathBuf),
    #[error("{0} exists and is not a socket; refusing to remove it")]
    NotASocket(PathBuf),
    #[error("socket {path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    #[error("socket_group {0:?}: no such group")]
    UnknownGroup(String),
    #[error("socket {path}: setting group {group}: {source}")]
    Chown {
        path: PathBuf,
        group: String,
        source: nix::Error,
    },
}

/// The socket file this process created, so shutdown removes only its own file and not one
/// a newer kraald put at the same path.
pub struct SocketFile {
    path: PathBuf,
    inode: u64,
}

pub fn bind(
    path: &Path,
    group: &str,
    mode: u32,
) -> Result<(UnixListener, SocketFile), SocketError> {
    let io = |action: &'static str| {
        let path = path.to_path_buf();
        move |source| SocketError::Io {
            path,
            action,
            source,
        }
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io("creating its directory"))?;
    }
    remove_if_stale(path)?;
    // The umask keeps the socket from being world-connectable between bind() and chmod().
    let previous = umask(Mode::from_bits_truncate(0o777 & !mode));
    let listener = UnixListener::bind(path);
    umask(previous);
    let listener = listener.map_err(io("binding"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io("setting its mode"))?;
    if !group.is_empty() {
        let gid = resolve_group(group)?;
        chown(path, None, Some(gid)).map_err(|source| SocketError::Chown {
            path: path.to_path_buf(),
            group: group.to_string(),
            source,
        })?;
    }
    let inode = std::fs::symlink_metadata(path)
        .map_err(io("reading back"))?
        .ino();
    let file = SocketFile {
        path: path.to_path_buf(),
        inode,
    };
    Ok((listener, file))
}

impl SocketFile {
    /// Removes the socket file if it is still the one this process created.
    pub fn remove(&self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.ino() == self.inode => {
                if let Err(err) = std::fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), %err, "could not remove the socket");
                }
            }
            _ => {}
        }
    }
}

fn remove_if_stale(path: &Path) -> Result<(), SocketError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(SocketError::Io {
                path: path.to_path_buf(),
                action: "inspecting the existing path",
                source,
            });
        }
    };
    if !meta.file_type().is_socket() {
        return Err(SocketError::NotASocket(path.to_path_buf()));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(SocketError::Live(path.to_path_buf())),
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "replacing a stale socket left by an earlier kraald");
            std::fs::remove_file(path).map_err(|source| SocketError::Io {
                path: path.to_path_buf(),
                action: "removing the stale socket",
                source,
            })
        }
        Err(source) => Err(SocketError::Io {
            path: path.to_path_buf(),
            action: "probing the existing socket",
            source,
        }),
    }
}

fn resolve_group(group: &str) -> Result<Gid, SocketError> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(Gid::from_raw(gid));
    }
    match Group::from_name(group) {
        Ok(Some(found)) => Ok(found.gid),
        _ => Err(SocketError::UnknownGroup(group.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stale_socket_is_replaced_live_one_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kraal.sock");
        let (first, _) = bind(&path, "", CRI_SOCKET_MODE).expect("first bind");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        assert!(matches!(
            bind(&path, "", CRI_SOCKET_MODE),
            Err(SocketError::Live(_))
        ));
        drop(first);
        // The file is still there but nobody listens: stale, so it is replaced.
        let (_second, file) = bind(&path, "", CRI_SOCKET_MODE).expect("stale socket replaced");
        file.remove();
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_regular_file_is_never_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kraal.sock");
        std::fs::write(&path, b"precious").expect("write");
        assert!(matches!(
            bind(&path, "", CRI_SOCKET_MODE),
            Err(SocketError::NotASocket(_))
        ));
        assert_eq!(std::fs::read(&path).expect("read"), b"precious");
    }
}
