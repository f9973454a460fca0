//! One async lock per digest, so concurrent pulls sharing a blob fetch it once.
//!
//! The pattern is: lock the digest, look whether the content is already in the store,
//! fetch it only if not, unlock. A second pull of the same image waits on the lock and
//! then finds the content present. Entries disappear from the map when nobody holds or
//! waits for them, so the map never grows with the number of digests ever seen.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

type LockMap = HashMap<String, Arc<AsyncMutex<()>>>;

/// A set of named async locks.
#[derive(Default, Clone)]
pub(crate) struct DigestLocks {
    map: Arc<Mutex<LockMap>>,
}

/// Holds the lock of one key until dropped.
pub(crate) struct DigestGuard {
    // Field order matters: the guard is released before the handle cleans up.
    _guard: OwnedMutexGuard<()>,
    _handle: Handle,
}

/// Keeps a key's entry alive while someone holds or waits for it; removes the entry
/// when the last interested party goes (including a waiter that was cancelled).
struct Handle {
    map: Arc<Mutex<LockMap>>,
    key: String,
    lock: Arc<AsyncMutex<()>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let mut map = lock_map(&self.map);
        // One reference in the map, one here: nobody else holds or waits.
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.key);
        }
    }
}

fn lock_map(map: &Mutex<LockMap>) -> MutexGuard<'_, LockMap> {
    // The map stays consistent even if a holder panicked: every update is one call.
    map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl DigestLocks {
    /// Waits for and takes the lock of `key`.
    pub(crate) async fn lock(&self, key: &str) -> DigestGuard {
        let lock = lock_map(&self.map)
            .entry(key.to_string())
            .or_default()
            .clone();
        let handle = Handle {
            map: self.map.clone(),
            key: key.to_string(),
            lock,
        };
        let guard = handle.lock.clone().lock_owned().await;
        DigestGuard {
            _guard: guard,
            _handle: handle,
        }
    }

    /// Number of keys currently held or waited for.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock_map(&self.map).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// The pull pattern: lock, check presence, "download" only if absent.
    async fn fetch_once(
        locks: DigestLocks,
        store: Arc<Mutex<HashSet<String>>>,
        downloads: Arc<AtomicUsize>,
        digest: &'static str,
    ) {
        let _guard = locks.lock(digest).await;
        if store.lock().unwrap().contains(digest) {
            return;
        }
        downloads.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        store.lock().unwrap().insert(digest.to_string());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_fetches_of_one_digest_download_once() {
        let locks = DigestLocks::default();
        let store = Arc::new(Mutex::new(HashSet::new()));
        let downloads = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let digest = if i % 2 == 0 { "sha256:a" } else { "sha256:b" };
                tokio::spawn(fetch_once(
                    locks.clone(),
                    store.clone(),
                    downloads.clone(),
                    digest,
                ))
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            downloads.load(Ordering::SeqCst),
            2,
            "one download per digest"
        );
        assert_eq!(locks.len(), 0, "no entries left behind");
    }

    #[tokio::test]
    async fn different_digests_do_not_block_each_other() {
        let locks = DigestLocks::default();
        let _a = locks.lock("sha256:a").await;
        let b = tokio::time::timeout(Duration::from_secs(1), locks.lock("sha256:b")).await;
        assert!(b.is_ok());
    }

    #[tokio::test]
    async fn same_digest_waits_until_released() {
        let locks = DigestLocks::default();
        let a = locks.lock("sha256:a").await;
        let waiting = tokio::time::timeout(Duration::from_millis(50), locks.lock("sha256:a")).await;
        assert!(waiting.is_err(), "second lock must wait");
        // The cancelled waiter did not leak; the holder still owns the entry.
        assert_eq!(locks.len(), 1);
        drop(a);
        assert_eq!(locks.len(), 0);
        let again = tokio::time::timeout(Duration::from_secs(1), locks.lock("sha256:a")).await;
        assert!(again.is_ok());
    }
}
