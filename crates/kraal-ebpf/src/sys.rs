//! The two bpf(2) commands aya 0.14 does not expose: opening a pinned link by path and
//! detaching it synchronously.
//!
//! Removing a link's last pin only drops a reference; the kernel frees (and so detaches) the
//! link later from a workqueue, so a caller that checks right after `detach` could still see
//! the programs attached. BPF_LINK_DETACH detaches at once.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_DETACH: libc::c_long = 34;

/// `union bpf_attr` as used by BPF_OBJ_GET.
#[repr(C)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    _pad: u32,
}

/// `union bpf_attr` as used by BPF_LINK_DETACH.
#[repr(C)]
struct LinkDetachAttr {
    link_fd: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &T) -> std::io::Result<libc::c_long> {
    // SAFETY: attr points to a live, correctly laid out bpf_attr prefix of the given size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const T,
            std::mem::size_of::<T>(),
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Detaches the link pinned at `pin` from its cgroup now; the pin itself stays.
pub(crate) fn detach_pinned_link(pin: &Path) -> std::io::Result<()> {
    let path = CString::new(pin.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let attr = ObjGetAttr {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        _pad: 0,
    };
    let fd = bpf(BPF_OBJ_GET, &attr)? as RawFd;
    // SAFETY: BPF_OBJ_GET returned a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let attr = LinkDetachAttr {
        link_fd: std::os::fd::AsRawFd::as_raw_fd(&fd) as u32,
    };
    bpf(BPF_LINK_DETACH, &attr).map(|_| ())
}
