//! Filesystem checks: bpffs for the pins, cgroup2 for the pods.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{Error, Result, io};

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

fn fs_magic(file: &File, path: &Path) -> Result<i64> {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: fstatfs writes a full statfs into the buffer when it returns 0.
    let rc = unsafe { libc::fstatfs(file.as_raw_fd(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io("statfs", path)(std::io::Error::last_os_error()));
    }
    // SAFETY: initialised by the successful fstatfs above.
    // f_type is `__fsword_t`, whose width differs between architectures.
    #[allow(clippy::useless_conversion)]
    let f_type = i64::from(unsafe { st.assume_init() }.f_type);
    Ok(f_type)
}

pub(crate) fn require_bpffs(path: &Path) -> Result<()> {
    let dir = File::open(path).map_err(io("opening", path))?;
    if fs_magic(&dir, path)? != BPF_FS_MAGIC {
        return Err(Error::NotBpffs { path: path.into() });
    }
    Ok(())
}

/// Opens a pod's cgroup2 directory; the fd is what programs attach to.
pub(crate) fn open_cgroup2(path: &Path) -> Result<File> {
    let dir = File::open(path).map_err(io("opening", path))?;
    if fs_magic(&dir, path)? != CGROUP2_SUPER_MAGIC {
        return Err(Error::NotCgroup2 { path: path.into() });
    }
    Ok(dir)
}

/// `struct file_handle` of a kernfs (cgroup2) node: its 64-bit id, which is the inode number.
#[repr(C)]
struct KernfsHandle {
    handle_bytes: u32,
    handle_type: i32,
    id: u64,
}

/// `FILEID_KERNFS` from include/linux/exportfs.h.
const FILEID_KERNFS: i32 = 0xfe;

/// Opens the cgroup2 directory whose id (inode number) is `id`, wherever it is: what a pod
/// known only by its id needs to get more programs attached.
pub(crate) fn open_cgroup2_by_id(id: u64) -> Result<File> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(io("reading", "/proc/self/mountinfo"))?;
    let mount = info
        .lines()
        .find_map(|line| {
            let mut halves = line.splitn(2, " - ");
            let (left, right) = (halves.next()?, halves.next()?);
            (right.split(' ').next() == Some("cgroup2")).then(|| left.split(' ').nth(4))?
        })
        .ok_or_else(|| {
            io("finding", "/proc/self/mountinfo")(std::io::Error::other("no cgroup2 mount"))
        })?;
    let root = File::open(mount).map_err(io("opening", mount))?;
    let mut handle = KernfsHandle {
        handle_bytes: 8,
        handle_type: FILEID_KERNFS,
        id,
    };
    // SAFETY: handle is a valid file_handle with 8 bytes of f_handle; the returned fd is new and
    // owned by nobody else.
    let fd = unsafe {
        libc::open_by_handle_at(
            root.as_raw_fd(),
            (&mut handle as *mut KernfsHandle).cast(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io("opening by id the cgroup under", mount)(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fd was just returned by open_by_handle_at.
    Ok(unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Mounts bpffs on `mountpoint` unless one is already there. Returns whether it mounted.
pub fn ensure_bpffs(mountpoint: &Path) -> Result<bool> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(io("reading", "/proc/self/mountinfo"))?;
    let wanted = mountpoint.to_string_lossy();
    let mounted = info.lines().any(|line| {
        // Field 5 is the mount point; the fs type follows the " - " separator.
        let mut halves = line.splitn(2, " - ");
        let (left, right) = (halves.next().unwrap_or(""), halves.next().unwrap_or(""));
        left.split(' ').nth(4) == Some(&*wanted) && right.split(' ').next() == Some("bpf")
    });
    if mounted {
        return Ok(false);
    }
    std::fs::create_dir_all(mountpoint).map_err(io("creating", mountpoint))?;
    let target = std::ffi::CString::new(wanted.as_bytes())
        .map_err(|e| io("mounting bpffs on", mountpoint)(std::io::Error::other(e)))?;
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io("mounting bpffs on", mountpoint)(
            std::io::Error::last_os_error(),
        ));
    }
    tracing::info!(mountpoint = %mountpoint.display(), "mounted bpffs");
    Ok(true)
}
