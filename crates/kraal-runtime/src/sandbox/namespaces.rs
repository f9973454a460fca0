//! Pinned namespaces: a new network, IPC and UTS namespace for a pod, kept alive by
//! bind-mounting their nsfs files onto files in the sandbox's state dir. No process has to
//! live for them, so a pod costs no pause container, and the pins survive kraald restarts.

use std::ffi::CString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};

use super::SandboxError;

/// Which namespaces a pod gets of its own. `false` means the pod shares the node's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NamespaceSet {
    pub net: bool,
    pub ipc: bool,
    pub uts: bool,
}

/// Paths of the pinned namespace files; `None` for namespaces shared with the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinnedNamespaces {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
}

impl PinnedNamespaces {
    pub fn all(&self) -> impl Iterator<Item = &PathBuf> {
        self.net
            .iter()
            .chain(self.ipc.iter())
            .chain(self.uts.iter())
    }
}

/// Creates the namespaces in `want` and pins them under `dir` (as `dir/net`, `dir/ipc`,
/// `dir/uts`). The UTS namespace gets `hostname` when one is given (else it keeps the
/// node's, which it starts with); the network namespace gets `lo` up.
///
/// The unshare happens on a throw-away thread: network, IPC and UTS namespaces belong to a
/// thread, so the daemon's other threads never see them, and the thread's exit drops its
/// reference once the bind mounts hold the namespaces. On any failure nothing stays pinned.
pub fn pin_namespaces(
    dir: &Path,
    want: NamespaceSet,
    hostname: Option<&str>,
) -> Result<PinnedNamespaces, SandboxError> {
    if want == NamespaceSet::default() {
        return Ok(PinnedNamespaces::default());
    }
    fs::create_dir_all(dir).map_err(|e| SandboxError::io("creating", dir, e))?;
    let dir = dir.to_path_buf();
    let hostname = hostname.map(str::to_owned);
    std::thread::spawn(move || pin_on_this_thread(&dir, want, hostname.as_deref()))
        .join()
        .map_err(|_| SandboxError::ThreadPanicked)?
}

fn pin_on_this_thread(
    dir: &Path,
    want: NamespaceSet,
    hostname: Option<&str>,
) -> Result<PinnedNamespaces, SandboxError> {
    let mut flags = CloneFlags::empty();
    let mut what: Vec<&str> = Vec::new();
    for (on, flag, name) in [
        (want.net, CloneFlags::CLONE_NEWNET, "net"),
        (want.ipc, CloneFlags::CLONE_NEWIPC, "ipc"),
        (want.uts, CloneFlags::CLONE_NEWUTS, "uts"),
    ] {
        if on {
            flags |= flag;
            what.push(name);
        }
    }
    unshare(flags).map_err(|e| SandboxError::Unshare {
        what: what.join(","),
        source: io::Error::from(e),
    })?;
    if want.uts
        && let Some(hostname) = hostname
    {
        nix::unistd::sethostname(hostname).map_err(|e| SandboxError::Unshare {
            what: format!("setting hostname {hostname:?}"),
            source: io::Error::from(e),
        })?;
    }
    if want.net {
        loopback_up().map_err(|e| SandboxError::Unshare {
            what: "bringing lo up".into(),
            source: e,
        })?;
    }

    let mut pinned = PinnedNamespaces::default();
    let result = (|| {
        for name in &what {
            let target = pin_one(dir, name)?;
            match *name {
                "net" => pinned.net = Some(target),
                "ipc" => pinned.ipc = Some(target),
                _ => pinned.uts = Some(target),
            }
        }
        Ok(())
    })();
    if let Err(err) = result {
        for path in pinned.all() {
            let _ = unpin_namespace(path);
        }
        return Err(err);
    }
    Ok(pinned)
}

fn pin_one(dir: &Path, name: &str) -> Result<PathBuf, SandboxError> {
    let target = dir.join(name);
    fs::File::create(&target).map_err(|e| SandboxError::io("creating", &target, e))?;
    let source = PathBuf::from(format!("/proc/thread-self/ns/{name}"));
    mount(
        Some(&source),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| SandboxError::io("bind-mounting the namespace onto", &target, e.into()))?;
    Ok(target)
}

/// Unmounts a pinned namespace file and removes it. A file that is already gone is fine.
pub fn unpin_namespace(path: &Path) -> Result<(), SandboxError> {
    crate::fsutil::detach_mount(path).map_err(|e| SandboxError::io("unmounting", path, e))?;
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(SandboxError::io("removing", path, e)),
    }
}

/// A new network namespace starts with `lo` down; pods expect 127.0.0.1 to work even before
/// (or without) CNI.
fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket(2); the fd is owned right below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor we own.
    let socket = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&socket);
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = CString::new("lo").map_err(io::Error::other)?;
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.as_bytes_with_nul()) {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we pass.
    if unsafe { libc::ioctl(raw, libc::SIOCGIFFLAGS as _, &mut request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the flags member of the union is the one SIOCGIFFLAGS filled in.
    unsafe {
        request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: as above.
    if unsafe { libc::ioctl(raw, libc::SIOCSIFFLAGS as _, &request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
