//! Freezing and thawing a cgroup and everything below it.
//!
//! Where: the v1 `freezer` controller when it is mounted (v1 and most hybrid hosts),
//! otherwise the unified tree's `cgroup.freeze`. `cgroup.freeze` is part of cgroup2's core,
//! not a controller, so it works in every non-root cgroup2 cgroup — including the
//! controller-less unified tree of a hybrid host, where kraal also places every process.
//!
//! Freezing is asynchronous in both versions: the write only asks, and each task stops
//! when it next leaves the kernel. So [`Cgroups::freeze`] polls until the kernel reports
//! the whole subtree frozen, and thaws again when that does not happen in time (a task in
//! uninterruptible sleep, e.g. on a hung NFS server, can block it), so no cgroup stays
//! half-frozen. The polling logic is written against [`Control`] so it can be tested
//! without a kernel.

use std::fmt;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::{debug, error, warn};

use crate::{CgroupError, CgroupPath, Cgroups, fs, stat_file};

/// The first pause between two looks at the state: most cgroups freeze within a
/// millisecond or two.
const FIRST_DELAY: Duration = Duration::from_millis(1);
/// The longest pause between two looks, so a slow freeze is still noticed promptly.
const MAX_DELAY: Duration = Duration::from_millis(20);
/// Thawing takes effect at once unless an ancestor is frozen too; wait no longer.
const THAW_TIMEOUT: Duration = Duration::from_millis(200);

/// Which mechanism freezes cgroups on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FreezerKind {
    /// The v1 `freezer` controller: `freezer.state`.
    V1,
    /// cgroup2's `cgroup.freeze` and the `frozen` key of `cgroup.events`.
    V2,
}

impl fmt::Display for FreezerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FreezerKind::V1 => "v1",
            FreezerKind::V2 => "v2",
        })
    }
}

/// The freezer state of a cgroup, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FreezerState {
    Thawed,
    /// Asked to freeze, but not every task has stopped yet.
    Freezing,
    /// Every task in the cgroup and below is stopped.
    Frozen,
}

impl fmt::Display for FreezerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FreezerState::Thawed => "thawed",
            FreezerState::Freezing => "freezing",
            FreezerState::Frozen => "frozen",
        })
    }
}

impl Cgroups {
    /// The mechanism [`Cgroups::freeze`] uses: the v1 freezer controller when mounted,
    /// else cgroup2; None when neither exists.
    pub fn freezer_kind(&self) -> Option<FreezerKind> {
        if self.v1.contains_key("freezer") {
            Some(FreezerKind::V1)
        } else if self.unified.is_some() {
            Some(FreezerKind::V2)
        } else {
            None
        }
    }

    /// Freezes `rel` and everything below it, and waits until the kernel reports it fully
    /// frozen (v1 `freezer.state` reads `FROZEN`, v2 `cgroup.events` has `frozen 1`).
    /// Returns the file written. When that does not happen within `timeout` the cgroup is
    /// thawed again and the error is [`CgroupError::FreezeTimeout`]. Freezing a frozen
    /// cgroup is fine.
    pub fn freeze(&self, rel: &str, timeout: Duration) -> Result<PathBuf, CgroupError> {
        let (path, control) = self.freezer_control(rel)?;
        freeze_with(&control, path.as_str(), timeout)
    }

    /// Thaws `rel` (`THAWED` / `cgroup.freeze` 0) and waits briefly until it is no
    /// longer frozen. Returns the file written. On both versions the cgroups below thaw
    /// with it unless they were frozen themselves; and `rel` stays frozen while an
    /// ancestor is — that is logged, not an error, since this cgroup's own setting is
    /// what was asked for.
    pub fn thaw(&self, rel: &str) -> Result<PathBuf, CgroupError> {
        let (path, control) = self.freezer_control(rel)?;
        thaw_with(&control, path.as_str())
    }

    /// The freezer state of `rel`. It includes the ancestors: a cgroup below a frozen one
    /// reads [`FreezerState::Frozen`]. On v2 a cgroup whose parent is still freezing
    /// reads [`FreezerState::Thawed`] until it is frozen (v2 reports only its own request).
    pub fn freezer_state(&self, rel: &str) -> Result<FreezerState, CgroupError> {
        let (_, control) = self.freezer_control(rel)?;
        control.state()
    }

    fn freezer_control(&self, rel: &str) -> Result<(CgroupPath, FileControl), CgroupError> {
        let path = CgroupPath::parse(rel)?;
        let kind = self.freezer_kind().ok_or(CgroupError::FreezerUnavailable)?;
        let dir = match kind {
            FreezerKind::V1 => self.v1_dir("freezer", &path),
            FreezerKind::V2 => self.unified_dir(&path),
        }
        .ok_or(CgroupError::FreezerUnavailable)?;
        if !dir.is_dir() {
            // Missing everywhere: NotFound. Missing only from the freezer's tree (created
            // by someone else): the file access fails naming the file, also not-found.
            self.ensure_exists(&path)?;
        }
        Ok((path, FileControl { kind, dir }))
    }
}

/// What freezing needs from a cgroup: ask, and look.
pub(crate) trait Control {
    /// Asks the kernel to freeze (true) or thaw; returns the file written.
    fn request(&self, frozen: bool) -> Result<PathBuf, CgroupError>;
    fn state(&self) -> Result<FreezerState, CgroupError>;
}

/// The freezer files of one cgroup directory.
struct FileControl {
    kind: FreezerKind,
    dir: PathBuf,
}

impl Control for FileControl {
    fn request(&self, frozen: bool) -> Result<PathBuf, CgroupError> {
        let (file, value) = match (self.kind, frozen) {
            (FreezerKind::V1, true) => ("freezer.state", "FROZEN"),
            (FreezerKind::V1, false) => ("freezer.state", "THAWED"),
            (FreezerKind::V2, true) => ("cgroup.freeze", "1"),
            (FreezerKind::V2, false) => ("cgroup.freeze", "0"),
        };
        let file = self.dir.join(file);
        fs::write(&file, value)?;
        Ok(file)
    }

    fn state(&self) -> Result<FreezerState, CgroupError> {
        match self.kind {
            FreezerKind::V1 => {
                let file = self.dir.join("freezer.state");
                fs::parse_at(&file, parse_v1_state(&fs::read(&file)?))
            }
            FreezerKind::V2 => v2_state(&self.dir),
        }
    }
}

/// v1 `freezer.state`: `THAWED`, `FREEZING` or `FROZEN`. Reading it is also what makes
/// the kernel notice that a freezing cgroup has become frozen.
fn parse_v1_state(text: &str) -> Result<FreezerState, String> {
    match text.trim() {
        "THAWED" => Ok(FreezerState::Thawed),
        "FREEZING" => Ok(FreezerState::Freezing),
        "FROZEN" => Ok(FreezerState::Frozen),
        other => Err(format!(
            "expected THAWED, FREEZING or FROZEN, found {other:?}"
        )),
    }
}

/// v2: `frozen 1` in `cgroup.events` is the effective state (own or inherited from an
/// ancestor); `cgroup.freeze` is this cgroup's own request, so 1 there while not yet
/// frozen means freezing.
fn v2_state(dir: &Path) -> Result<FreezerState, CgroupError> {
    let events_file = dir.join("cgroup.events");
    let events = fs::read(&events_file)?;
    let frozen = stat_file::flat_keyed(&events, "frozen").ok_or_else(|| CgroupError::Parse {
        path: events_file.clone(),
        reason: "no \"frozen\" key (the cgroup2 freezer needs Linux 5.2 or later)".into(),
    })?;
    if frozen == 1 {
        return Ok(FreezerState::Frozen);
    }
    let freeze_file = dir.join("cgroup.freeze");
    let requested = fs::parse_at(
        &freeze_file,
        stat_file::single_u64(&fs::read(&freeze_file)?),
    )?;
    Ok(if requested == 1 {
        FreezerState::Freezing
    } else {
        FreezerState::Thawed
    })
}

/// [`Cgroups::freeze`] over any [`Control`].
pub(crate) fn freeze_with(
    control: &impl Control,
    rel: &str,
    timeout: Duration,
) -> Result<PathBuf, CgroupError> {
    let start = Instant::now();
    let file = control.request(true)?;
    match wait_until(timeout, || Ok(control.state()? == FreezerState::Frozen)) {
        Ok(true) => {
            debug!(cgroup = rel, elapsed = ?start.elapsed(), "cgroup frozen");
            Ok(file)
        }
        Ok(false) => {
            let waited_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
            error!(
                cgroup = rel,
                waited_ms, "cgroup did not freeze in time; thawing it"
            );
            // A failed thaw is the worse news (the cgroup may stay half-frozen): report
            // that one rather than the timeout.
            thaw_with(control, rel)?;
            Err(CgroupError::FreezeTimeout {
                rel: rel.to_string(),
                waited_ms,
            })
        }
        Err(err) => {
            // Could not even look (e.g. the cgroup went away): do not leave a request
            // to freeze behind.
            if let Err(error) = control.request(false) {
                warn!(cgroup = rel, %error, "thawing after a failed freeze");
            }
            Err(err)
        }
    }
}

/// [`Cgroups::thaw`] over any [`Control`].
pub(crate) fn thaw_with(control: &impl Control, rel: &str) -> Result<PathBuf, CgroupError> {
    let file = control.request(false)?;
    if wait_until(
        THAW_TIMEOUT,
        || Ok(control.state()? == FreezerState::Thawed),
    )? {
        debug!(cgroup = rel, "cgroup thawed");
    } else {
        warn!(
            cgroup = rel,
            "cgroup still frozen after thawing it: an ancestor cgroup is frozen"
        );
    }
    Ok(file)
}

/// Polls `done` until it is true (Ok(true)) or `timeout` has passed (Ok(false)), sleeping
/// [`FIRST_DELAY`], doubling up to [`MAX_DELAY`], in between. Looks at least once, and
/// once more at the deadline.
fn wait_until(
    timeout: Duration,
    mut done: impl FnMut() -> Result<bool, CgroupError>,
) -> Result<bool, CgroupError> {
    let deadline = Instant::now() + timeout;
    let mut delay = FIRST_DELAY;
    loop {
        if done()? {
            return Ok(true);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        sleep(delay.min(deadline - now));
        delay = (delay * 2).min(MAX_DELAY);
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use super::*;

    /// A cgroup that reaches the frozen state after `polls_to_freeze` looks, or never.
    struct Fake {
        polls_to_freeze: Option<usize>,
        requested: Cell<bool>,
        polls: Cell<usize>,
        writes: RefCell<Vec<bool>>,
    }

    impl Fake {
        fn new(polls_to_freeze: Option<usize>) -> Fake {
            Fake {
                polls_to_freeze,
                requested: Cell::new(false),
                polls: Cell::new(0),
                writes: RefCell::new(Vec::new()),
            }
        }
    }

    impl Control for Fake {
        fn request(&self, frozen: bool) -> Result<PathBuf, CgroupError> {
            self.requested.set(frozen);
            self.polls.set(0);
            self.writes.borrow_mut().push(frozen);
            Ok(PathBuf::from("/fake/freezer.state"))
        }

        fn state(&self) -> Result<FreezerState, CgroupError> {
            if !self.requested.get() {
                return Ok(FreezerState::Thawed);
            }
            self.polls.set(self.polls.get() + 1);
            Ok(match self.polls_to_freeze {
                Some(n) if self.polls.get() >= n => FreezerState::Frozen,
                _ => FreezerState::Freezing,
            })
        }
    }

    #[test]
    fn freeze_waits_until_frozen() {
        let fake = Fake::new(Some(4));
        let file = freeze_with(&fake, "/pod", Duration::from_secs(5)).unwrap();
        assert_eq!(file, PathBuf::from("/fake/freezer.state"));
        assert_eq!(fake.polls.get(), 4);
        assert_eq!(*fake.writes.borrow(), [true]);
    }

    #[test]
    fn freeze_timeout_thaws_again() {
        let fake = Fake::new(None);
        let start = Instant::now();
        let err = freeze_with(&fake, "/pod", Duration::from_millis(50)).unwrap_err();
        let elapsed = start.elapsed();
        match err {
            CgroupError::FreezeTimeout { ref rel, waited_ms } => {
                assert_eq!(rel, "/pod");
                assert!((50..1000).contains(&waited_ms), "{err}");
            }
            ref other => panic!("unexpected {other}"),
        }
        assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
        // Asked to freeze, then thawed: nothing stays half-frozen.
        assert_eq!(*fake.writes.borrow(), [true, false]);
        assert!(!fake.requested.get());
    }

    #[test]
    fn a_zero_timeout_still_looks_once() {
        let fake = Fake::new(Some(1));
        freeze_with(&fake, "/pod", Duration::ZERO).unwrap();
    }

    #[test]
    fn v1_states_parse() {
        assert_eq!(parse_v1_state("FROZEN\n"), Ok(FreezerState::Frozen));
        assert_eq!(parse_v1_state("FREEZING\n"), Ok(FreezerState::Freezing));
        assert_eq!(parse_v1_state("THAWED\n"), Ok(FreezerState::Thawed));
        assert!(parse_v1_state("frozen").is_err());
    }

    #[test]
    fn states_display_lower_case() {
        assert_eq!(FreezerState::Freezing.to_string(), "freezing");
        assert_eq!(FreezerKind::V2.to_string(), "v2");
    }
}
