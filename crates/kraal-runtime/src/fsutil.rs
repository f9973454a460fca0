//! File-system steps shared by the monitor, the sandbox files and kraald's state records:
//! atomic writes, and lazy unmounts that may be repeated.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::mount::{MntFlags, umount2};

/// Writes `data` to `path` atomically: a temp file beside it, fsync, rename, fsync the
/// directory. Each call has a temp file of its own (`.<name>.<pid>.<n>.tmp`), so concurrent
/// writers of one path never touch each other's: the last rename wins whole, none fails.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir)?;
    let tmp = temp_path(dir, path)?;
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A temp name no other live writer uses: the pid tells processes apart, the counter the
/// calls of one process. A leftover of a crashed process with a reused pid is overwritten,
/// which is harmless. Hidden and ending in `.tmp`, so readers of the dir skip it.
fn temp_path(dir: &Path, path: &Path) -> io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    Ok(dir.join(tmp))
}

/// Lazily unmounts `target`. A path that is not a mount point (or no longer exists) is
/// fine, so every teardown can run any number of times.
pub fn detach_mount(target: &Path) -> io::Result<()> {
    match umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_writers_of_one_file_all_succeed_and_never_mix() {
        // Two writers of one record (kraald's exit watcher and StartContainer) must not
        // share a temp file: one's rename would find it gone (issue 15, item 7).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record.json");
        let writers: Vec<_> = (0..8u8)
            .map(|w| {
                let path = path.clone();
                std::thread::spawn(move || {
                    // Each writer's content is one byte repeated, so a mix shows.
                    let data = vec![b'a' + w; 4096 * (1 + w as usize)];
                    for round in 0..50 {
                        write_atomic(&path, &data)
                            .map_err(|e| format!("writer {w} round {round}: {e}"))?;
                    }
                    Ok::<_, String>(())
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap().unwrap();
        }
        let data = fs::read(&path).unwrap();
        let first = data[0];
        assert!((b'a'..b'a' + 8).contains(&first));
        assert_eq!(
            data.len(),
            4096 * (1 + (first - b'a') as usize),
            "a mixed write"
        );
        assert!(data.iter().all(|&b| b == first), "a mixed write");
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != "record.json")
            .collect();
        assert!(left.is_empty(), "temp files left behind: {left:?}");
    }
}
