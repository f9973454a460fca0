//! One kraald per root (and per state dir): an exclusive `flock` held for the daemon's life.
//! The kernel drops the lock when the process dies, so a crashed kraald never blocks the next.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

const LOCK_FILE: &str = "kraald.lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot open lock file {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "another kraald{holder} is already using {dir} (it holds {path}); stop it first or give this one its own --root and --state"
    )]
    Held {
        dir: PathBuf,
        path: PathBuf,
        holder: String,
    },
    #[error("cannot lock {path}: {source}")]
    Lock { path: PathBuf, source: nix::Error },
    #[error("cannot write pid into {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Held locks; dropping it releases them.
#[derive(Debug)]
pub struct DirLocks {
    _locks: Vec<Flock<File>>,
}

pub fn acquire(dirs: &[&Path]) -> Result<DirLocks, LockError> {
    let mut locks = Vec::with_capacity(dirs.len());
    for dir in dirs {
        locks.push(lock_dir(dir)?);
    }
    Ok(DirLocks { _locks: locks })
}

fn lock_dir(dir: &Path) -> Result<Flock<File>, LockError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| LockError::Open {
            path: path.clone(),
            source,
        })?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, nix::Error::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let holder = match pid.trim() {
                "" => String::new(),
                pid => format!(" (pid {pid})"),
            };
            return Err(LockError::Held {
                dir: dir.to_path_buf(),
                path,
                holder,
            });
        }
        Err((_, source)) => return Err(LockError::Lock { path, source }),
    };
    // The pid is only for the message a second kraald prints; the lock is the truth.
    let write = |file: &mut File| -> std::io::Result<()> {
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())
    };
    write(&mut lock).map_err(|source| LockError::Write { path, source })?;
    Ok(lock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_the_same_dir_is_refused_with_the_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = acquire(&[dir.path()]).expect("first lock");
        let err = acquire(&[dir.path()]).expect_err("second lock must fail");
        let text = err.to_string();
        assert!(text.contains(&std::process::id().to_string()), "{text}");
        drop(first);
        acquire(&[dir.path()]).expect("lock is free again after drop");
    }
}
