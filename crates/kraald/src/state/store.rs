//! The in-memory maps and their files: `<state>/sandboxes/<id>.json` and
//! `<state>/containers/<id>.json`.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{ContainerRecord, SandboxRecord};

#[derive(Default)]
struct Maps {
    sandboxes: HashMap<String, SandboxRecord>,
    containers: HashMap<String, ContainerRecord>,
    /// Names being created right now, so two concurrent creates of one name cannot both win.
    reserved: HashSet<String>,
}

pub struct StateStore {
    dir: PathBuf,
    maps: Mutex<Maps>,
    /// Held by whoever writes a record, from reading it to its new version being in the map
    /// and on disk: concurrent updaters of one record (the exit watcher, StartContainer,
    /// StopContainer, policy changes) then compose instead of overwriting each other, and the
    /// map and the file never disagree. Striped by id so unrelated records rarely wait on
    /// each other; the maps' lock is never held across a write to disk.
    writers: [Mutex<()>; WRITER_STRIPES],
}

const WRITER_STRIPES: usize = 32;

/// A held name; dropping it releases the name (the record, once saved, keeps it taken).
pub struct Reservation {
    store: Arc<StateStore>,
    key: String,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.store.lock().reserved.remove(&self.key);
    }
}

impl StateStore {
    /// Opens the state dir and reads every record back. A record that cannot be read is
    /// moved aside (never silently dropped) and reported.
    pub fn open(dir: &Path) -> std::io::Result<(Self, Vec<String>)> {
        let mut maps = Maps::default();
        let mut problems = Vec::new();
        for kind in [SANDBOXES, CONTAINERS] {
            std::fs::create_dir_all(dir.join(kind))?;
        }
        for (id, record) in read_all::<SandboxRecord>(&dir.join(SANDBOXES), &mut problems)? {
            maps.sandboxes.insert(id, record);
        }
        for (id, record) in read_all::<ContainerRecord>(&dir.join(CONTAINERS), &mut problems)? {
            maps.containers.insert(id, record);
        }
        Ok((
            StateStore {
                dir: dir.to_path_buf(),
                maps: Mutex::new(maps),
                writers: std::array::from_fn(|_| Mutex::new(())),
            },
            problems,
        ))
    }

    fn lock(&self) -> MutexGuard<'_, Maps> {
        // A panic while holding the lock cannot leave the maps half-updated (every update is
        // a single insert or remove), so a poisoned lock is still safe to use.
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The writer lock of record `id` of `kind`. A panic in a change closure leaves the record
    /// as it was (nothing was saved), so a poisoned lock is still safe to use.
    fn writer(&self, kind: &str, id: &str) -> MutexGuard<'_, ()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (kind, id).hash(&mut hasher);
        let stripe = (hasher.finish() % WRITER_STRIPES as u64) as usize;
        self.writers[stripe]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub fn sandbox(&self, id: &str) -> Option<SandboxRecord> {
        self.lock().sandboxes.get(id).cloned()
    }

    pub fn sandboxes(&self) -> Vec<SandboxRecord> {
        self.lock().sandboxes.values().cloned().collect()
    }

    pub fn container(&self, id: &str) -> Option<ContainerRecord> {
        self.lock().containers.get(id).cloned()
    }

    pub fn containers(&self) -> Vec<ContainerRecord> {
        self.lock().containers.values().cloned().collect()
    }

    pub fn containers_of(&self, sandbox_id: &str) -> Vec<ContainerRecord> {
        self.lock()
            .containers
            .values()
            .filter(|c| c.sandbox_id == sandbox_id)
            .cloned()
            .collect()
    }

    /// Resolves a full id or a unique prefix of one (crictl users type prefixes).
    pub fn resolve_container(&self, id: &str) -> Option<String> {
        resolve(self.lock().containers.keys(), id)
    }

    pub fn resolve_sandbox(&self, id: &str) -> Option<String> {
        resolve(self.lock().sandboxes.keys(), id)
    }

    /// Reserves `key` unless a record or another create holds it; `taken` says who does.
    pub fn reserve(
        self: &Arc<Self>,
        key: String,
        taken: impl Fn(&RecordsView) -> Option<String>,
    ) -> Result<Reservation, String> {
        let mut maps = self.lock();
        let view = RecordsView {
            sandboxes: &maps.sandboxes,
            containers: &maps.containers,
        };
        if let Some(holder) = taken(&view) {
            return Err(holder);
        }
        if !maps.reserved.insert(key.clone()) {
            return Err("a request being served right now".to_string());
        }
        Ok(Reservation {
            store: self.clone(),
            key,
        })
    }

    /// Saves a record as given, replacing any earlier version. For a record that may exist
    /// and be changed concurrently, use [`StateStore::update_sandbox`].
    pub fn save_sandbox(&self, record: &SandboxRecord) -> std::io::Result<()> {
        let _writer = self.writer(SANDBOXES, &record.id);
        self.write_sandbox(record)
    }

    /// Saves a record as given; see [`StateStore::save_sandbox`].
    pub fn save_container(&self, record: &ContainerRecord) -> std::io::Result<()> {
        let _writer = self.writer(CONTAINERS, &record.id);
        self.write_container(record)
    }

    fn write_sandbox(&self, record: &SandboxRecord) -> std::io::Result<()> {
        write_record(&self.dir.join(SANDBOXES), &record.id, record)?;
        self.lock()
            .sandboxes
            .insert(record.id.clone(), record.clone());
        Ok(())
    }

    fn write_container(&self, record: &ContainerRecord) -> std::io::Result<()> {
        write_record(&self.dir.join(CONTAINERS), &record.id, record)?;
        self.lock()
            .containers
            .insert(record.id.clone(), record.clone());
        Ok(())
    }

    /// Changes a container record and saves it, atomically with respect to every other
    /// writer of that record: `change` sees the latest saved version, and nothing is written
    /// in between. None when the record is gone. An unchanged record is not written again.
    /// `change` must not write to the store itself.
    pub fn update_container(
        &self,
        id: &str,
        change: impl FnOnce(&mut ContainerRecord),
    ) -> std::io::Result<Option<ContainerRecord>> {
        let _writer = self.writer(CONTAINERS, id);
        let Some(mut record) = self.container(id) else {
            return Ok(None);
        };
        let before = record.clone();
        change(&mut record);
        if record != before {
            self.write_container(&record)?;
        }
        Ok(Some(record))
    }

    /// Changes a sandbox record and saves it; see [`StateStore::update_container`].
    pub fn update_sandbox(
        &self,
        id: &str,
        change: impl FnOnce(&mut SandboxRecord),
    ) -> std::io::Result<Option<SandboxRecord>> {
        let _writer = self.writer(SANDBOXES, id);
        let Some(mut record) = self.sandbox(id) else {
            return Ok(None);
        };
        let before = record.clone();
        change(&mut record);
        if record != before {
            self.write_sandbox(&record)?;
        }
        Ok(Some(record))
    }

    pub fn delete_sandbox(&self, id: &str) -> std::io::Result<()> {
        let _writer = self.writer(SANDBOXES, id);
        remove_record(&self.dir.join(SANDBOXES), id)?;
        self.lock().sandboxes.remove(id);
        Ok(())
    }

    pub fn delete_container(&self, id: &str) -> std::io::Result<()> {
        let _writer = self.writer(CONTAINERS, id);
        remove_record(&self.dir.join(CONTAINERS), id)?;
        self.lock().containers.remove(id);
        Ok(())
    }
}

const SANDBOXES: &str = "sandboxes";
const CONTAINERS: &str = "containers";

/// A read-only view of the maps for reservation checks.
pub struct RecordsView<'a> {
    pub sandboxes: &'a HashMap<String, SandboxRecord>,
    pub containers: &'a HashMap<String, ContainerRecord>,
}

fn resolve<'a>(ids: impl Iterator<Item = &'a String>, wanted: &str) -> Option<String> {
    if wanted.is_empty() {
        return None;
    }
    let mut found = None;
    for id in ids {
        if id == wanted {
            return Some(id.clone());
        }
        if id.starts_with(wanted) {
            if found.is_some() {
                return None; // ambiguous prefix
            }
            found = Some(id.clone());
        }
    }
    found
}

fn write_record<T: Serialize>(dir: &Path, id: &str, record: &T) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
    kraal_runtime::fsutil::write_atomic(&dir.join(format!("{id}.json")), &bytes)
}

fn remove_record(dir: &Path, id: &str) -> std::io::Result<()> {
    match std::fs::remove_file(dir.join(format!("{id}.json"))) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn read_all<T: DeserializeOwned>(
    dir: &Path,
    problems: &mut Vec<String>,
) -> std::io::Result<Vec<(String, T)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.starts_with('.') || name.ends_with(".tmp") {
            // A temp file from a write a crash interrupted: the old record (if any) stands.
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let Some(id) = name.strip_suffix(".json") else {
            continue;
        };
        let parsed = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| serde_json::from_slice::<T>(&bytes).map_err(|e| e.to_string()));
        match parsed {
            Ok(record) => out.push((id.to_string(), record)),
            Err(err) => {
                let aside = path.with_extension("json.unreadable");
                let _ = std::fs::rename(&path, &aside);
                problems.push(format!(
                    "{}: {err} (moved to {})",
                    path.display(),
                    aside.display()
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_resolve_only_when_unique() {
        let ids = ["abc123".to_string(), "abd456".to_string()];
        assert_eq!(resolve(ids.iter(), "abc"), Some("abc123".into()));
        assert_eq!(resolve(ids.iter(), "ab"), None);
        assert_eq!(resolve(ids.iter(), "abd456"), Some("abd456".into()));
        assert_eq!(resolve(ids.iter(), ""), None);
        assert_eq!(resolve(ids.iter(), "x"), None);
    }

    #[test]
    fn an_interrupted_write_leaves_the_old_record_readable() {
        let dir = tempfile::tempdir().unwrap();
        let (store, problems) = StateStore::open(dir.path()).unwrap();
        assert!(problems.is_empty());
        let record = sample("c1");
        store.save_container(&record).unwrap();
        // A crash between create and rename leaves a temp file behind.
        std::fs::write(dir.path().join("containers/.c1.json.tmp"), b"{\"trunc").unwrap();
        // A corrupt record (written by something else) is moved aside, not fatal.
        std::fs::write(dir.path().join("containers/c2.json"), b"garbage").unwrap();
        let (store, problems) = StateStore::open(dir.path()).unwrap();
        assert_eq!(store.container("c1"), Some(record));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(dir.path().join("containers/c2.json.unreadable").exists());
        assert!(!dir.path().join("containers/.c1.json.tmp").exists());
    }

    #[test]
    fn concurrent_updates_of_one_record_all_land() {
        // The exit watcher, StartContainer and policy updates change one container's record
        // from different threads; each change must survive the others (issue 15, item 7).
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = StateStore::open(dir.path()).unwrap();
        let store = Arc::new(store);
        store.save_container(&sample("c1")).unwrap();
        let (threads, rounds) = (8, 25);
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for r in 0..rounds {
                        store
                            .update_container("c1", |c| {
                                c.labels.insert(format!("t{t}-r{r}"), String::new());
                            })
                            .map_err(|e| format!("thread {t} round {r}: {e}"))?;
                    }
                    Ok::<_, String>(())
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap().unwrap();
        }
        let in_memory = store.container("c1").unwrap();
        assert_eq!(in_memory.labels.len(), threads * rounds, "lost updates");
        let (reopened, problems) = StateStore::open(dir.path()).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            reopened.container("c1"),
            Some(in_memory),
            "file and memory differ"
        );
    }

    fn sample(id: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            sandbox_id: "s".into(),
            name: "n".into(),
            attempt: 0,
            labels: Default::default(),
            annotations: Default::default(),
            image: "busybox".into(),
            image_id: "sha256:x".into(),
            created_at_unix_nanos: 1,
            started_at_unix_nanos: 0,
            finished_at_unix_nanos: 0,
            state: super::super::ContainerState::Created,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            log_path: String::new(),
            mounts: vec![],
            cgroups_path: "/kraal/x".into(),
            pid: 1,
            pid_start_time: 2,
            monitor_pid: 3,
            monitor_start_time: 4,
            stop_signal: None,
            tty: false,
            resources: vec![],
            applied: vec![],
            policy_warnings: vec![],
        }
    }
}
