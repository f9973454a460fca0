//! One node-wide lock around the plugins that edit shared iptables chains.
//!
//! The portmap plugin (Debian's 1.1.1, and upstream's before it) creates its shared chains
//! (`CNI-HOSTPORT-SETMARK`, `-MASQ`, `-DNAT`) with "list, then create if missing", without a
//! lock of its own. Two pods set up at once both see the chain missing, and the second
//! `iptables -N` fails with `CHAIN_USER_ADD failed (File exists)`, failing that pod's ADD.
//! The firewall plugin does the same with `CNI-FORWARD`. Taking a lock file around these
//! plugins' calls makes the check and the create one step. The lock is a file under /run, not
//! a mutex in kraald, because every kraald on the node (and a restarted one) must share it;
//! iptables serialises on its own xtables lock anyway, so this costs pods nothing.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::error::CniError;

/// The plugins whose calls are serialised node-wide.
const SERIALISED: &[&str] = &["portmap", "firewall"];

/// The node-wide lock file (`/run/lock` is a tmpfs on Debian: no stale lock after a reboot).
pub const LOCK_FILE: &str = "/run/lock/kraal-cni-iptables.lock";

/// Held for the length of one plugin call; dropping it (closing the file) releases the lock.
#[derive(Debug)]
pub struct HostLock {
    _file: File,
}

/// Takes the lock if `plugin` needs it, waiting for the holder; None for other plugins.
pub fn for_plugin(plugin: &str) -> Result<Option<HostLock>, CniError> {
    if !SERIALISED.contains(&plugin) {
        return Ok(None);
    }
    take(Path::new(LOCK_FILE)).map(Some)
}

fn take(path: &Path) -> Result<HostLock, CniError> {
    let failed = |source: std::io::Error| CniError::HostLock {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(failed)?;
    loop {
        // SAFETY: flock on a descriptor this function owns; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return Ok(HostLock { _file: file });
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(failed(err));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn only_the_racy_plugins_take_it() {
        assert!(for_plugin("bridge").unwrap().is_none());
        assert!(for_plugin("host-local").unwrap().is_none());
    }

    #[test]
    fn holders_never_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let path = Arc::new(dir.path().join("sub/lock"));
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (path, inside, most) = (path.clone(), inside.clone(), most.clone());
                std::thread::spawn(move || {
                    for _ in 0..5 {
                        let _held = take(&path).unwrap();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(2));
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // flock locks belong to open file descriptions, so threads of one process exclude
        // each other just as separate kraalds do.
        assert_eq!(most.load(Ordering::SeqCst), 1);
    }
}
