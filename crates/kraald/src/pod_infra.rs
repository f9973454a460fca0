//! The infra process of a pod that shares one PID namespace between its containers: PID 1 of
//! that namespace, reaping orphans, doing nothing else. Only such pods get one (their other
//! namespaces are pinned files). It is kraald's own binary run as `kraald __pod-infra`,
//! before any runtime starts, so it stays a few hundred kilobytes.

use std::io::Write;
use std::process::{Command, Stdio};

use kraal_cgroups::{CgroupError, Cgroups};

use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigHandler, Signal, signal};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork, setsid};

pub const ARG: &str = "__pod-infra";

/// The name of the infra process's own cgroup below the pod's. Container cgroups are
/// `kraal-<64 hex digits>`, so it cannot collide with one.
const CGROUP_NAME: &str = "kraal-infra";

/// The cgroup (cgroupfs form) of a pod's infra process: a leaf of its own below the pod,
/// never the pod cgroup itself. On cgroup v2 a cgroup whose children use controllers (the
/// containers' do) may hold no process at all; the kernel refuses the move (EBUSY) or, worse,
/// a process there would keep the containers from getting their controllers. The one place
/// that decides where the infra process lives: `<pod>/kraal-infra` with cgroupfs, the scope
/// `kraal-infra-<sandbox id>.scope` in the pod slice with systemd.
pub fn cgroup(record: &crate::state::SandboxRecord) -> String {
    match record.systemd_slice {
        Some(_) => format!(
            "{}/{}",
            record.cgroup_parent,
            kraal_cgroups::systemd::infra_scope(&record.id)
        ),
        None => format!("{}/{CGROUP_NAME}", record.cgroup_parent),
    }
}

/// Removes the cgroupfs driver's infra cgroup once its (killed) process has left it; nothing
/// to do when it does not exist. With systemd, stopping the pod slice stops the scope.
pub fn remove_cgroup(
    cgroups: &Cgroups,
    record: &crate::state::SandboxRecord,
) -> Result<(), CgroupError> {
    cgroups.remove(&cgroup(record))
}

/// Runs in the freshly exec'd infra binary. Never returns.
pub fn main() -> ! {
    let outcome = (|| -> Result<i32, String> {
        setsid().map_err(|e| format!("setsid: {e}"))?;
        unshare(CloneFlags::CLONE_NEWPID).map_err(|e| format!("unshare(CLONE_NEWPID): {e}"))?;
        // SAFETY: single-threaded here (no runtime has started), so fork is sound.
        match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
            ForkResult::Parent { child } => Ok(child.as_raw()),
            ForkResult::Child => reap_forever(),
        }
    })();
    match outcome {
        Ok(pid) => {
            let _ = writeln!(std::io::stdout(), "{pid}");
            std::process::exit(0)
        }
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "pod infra: {err}");
            std::process::exit(1)
        }
    }
}

fn reap_forever() -> ! {
    // Let go of kraald's pipes at once: kraald reads the parent's output to its end, which
    // only comes when every copy of the pipe is closed.
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::fd::AsRawFd;
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors of this single-threaded process.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    // As PID 1 of the namespace it only gets signals it handles; ignore the usual ones
    // explicitly so a stray signal from inside the pod cannot end the namespace.
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGPIPE,
    ] {
        // SAFETY: setting SIG_IGN installs no Rust code as a handler.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
    let _ = std::env::set_current_dir("/");
    loop {
        match waitpid(None, None) {
            Ok(_) => {}
            // No children yet: wait for one to be reparented to us.
            Err(_) => std::thread::sleep(std::time::Duration::from_secs(1)),
        }
    }
}

/// Starts an infra process and returns its pid as seen from the node.
pub fn spawn() -> Result<i32, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding kraald's binary: {e}"))?;
    let output = Command::new(&exe)
        .arg(ARG)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("starting {} {ARG}: {e}", exe.display()))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
    }
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("the infra process printed no pid: {e}"))
}

/// Puts a pod's infra process into its cgroup (see [`cgroup`]). systemd driver: a scope of
/// its own in the pod slice, made by systemd with the process in it. cgroupfs: the leaf is
/// made in every hierarchy and the process moved there.
pub fn place(
    runtime: &crate::runtime::Runtime,
    record: &crate::state::SandboxRecord,
    pid: i32,
) -> Result<(), tonic::Status> {
    let pod = crate::cgroup_driver::PodCgroup::of(record);
    if pod.slice.is_some() {
        let unit = kraal_cgroups::systemd::infra_scope(&record.id);
        return runtime
            .driver
            .place(
                &pod,
                &unit,
                format!("kraal pod {} infra", record.id),
                pid,
                &[],
            )
            .map_err(|e| {
                tonic::Status::internal(format!(
                    "placing the infra process in its systemd scope {unit}: {e}"
                ))
            });
    }
    let rel = cgroup(record);
    runtime
        .cgroups
        .create(&rel)
        .and_then(|()| runtime.cgroups.add_pid(&rel, pid))
        .map_err(|e| {
            tonic::Status::internal(format!(
                "placing the infra process in its cgroup {rel}: {e}"
            ))
        })
}
