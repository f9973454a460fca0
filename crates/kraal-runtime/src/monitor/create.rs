//! `kraal-monitor create`: fork the monitor, create the container through libcontainer,
//! report one JSON line, then monitor the container until its init exits.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, pipe2, setsid};

use super::attach::Attachers;
use super::config::{CreateFailed, Created, ExitStatus, MonitorConfig, MonitorState};
use super::{libcontainer_error, proc_start_time, sys, write_exit_file};
use crate::log::{LogWriter, Stream};

/// After init has exited, stop draining its output when nothing arrived for this long
/// (processes that outlive init — no PID namespace of its own — may hold the pipes open
/// forever; with its own PID namespace the kernel kills them and the pipes close at once).
const DRAIN_IDLE: Duration = Duration::from_secs(2);
/// …and in any case this long after init exited, even if output keeps coming.
const DRAIN_MAX: Duration = Duration::from_secs(10);
/// How long the container's init may take to send its pty master once libcontainer's
/// build has returned (it sends it before reporting ready, so this is only a bound).
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Reads from the container's pipes use a buffer this big.
const READ_BUF: usize = 32 * 1024;
/// A control request is one short line.
const MAX_REQUEST: usize = 4096;
/// How long one control connection may take to send its request and take the reply.
const CONTROL_IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Entry point of `kraal-monitor create --config <path>`; returns the exit code of the
/// invoked process (the forked monitor never returns from here).
pub(crate) fn run(config_path: &Path) -> i32 {
    let cfg = match MonitorConfig::load(config_path) {
        Ok(cfg) => cfg,
        Err(e) => return print_failure(e.to_string()),
    };
    let (report_r, report_w) = match pipe2(OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return print_failure(format!("pipe: {e}")),
    };
    // SAFETY: the process is single-threaded here (no thread has been started), so the
    // child may run arbitrary code after fork.
    match unsafe { fork() } {
        Err(e) => print_failure(format!("fork: {e}")),
        Ok(ForkResult::Parent { child }) => {
            drop(report_w);
            wait_for_report(report_r, child, &cfg)
        }
        Ok(ForkResult::Child) => {
            drop(report_r);
            let code = monitor_main(cfg, File::from(report_w));
            std::process::exit(code)
        }
    }
}

/// Prints a [`CreateFailed`] line on stdout; returns exit code 1.
fn print_failure(error: String) -> i32 {
    let line = serde_json::to_string(&CreateFailed { error })
        .unwrap_or_else(|_| r#"{"error":"unprintable error"}"#.to_owned());
    println!("{line}");
    1
}

/// The invoked process: wait for the monitor's one line, print it, exit 0 on success.
fn wait_for_report(report: OwnedFd, child: Pid, cfg: &MonitorConfig) -> i32 {
    match read_report_line(report, child) {
        Ok(Some(line)) => {
            let ok = serde_json::from_str::<Created>(&line).is_ok();
            println!("{line}");
            if !ok {
                // The monitor exits right after reporting a failure: reap it.
                let _ = waitpid(child, None);
            }
            i32::from(!ok)
        }
        Ok(None) => {
            let how = match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => format!("exit status {code}"),
                Ok(WaitStatus::Signaled(_, sig, _)) => format!("killed by {sig}"),
                Ok(other) => format!("{other:?}"),
                Err(e) => format!("waitpid: {e}"),
            };
            print_failure(format!(
                "the monitor process exited before reporting ({how}); see {}",
                cfg.monitor_log.display()
            ))
        }
        Err(e) => print_failure(format!("reading the monitor's report: {e}")),
    }
}

/// Reads up to the first newline from `report`. `None` when the monitor exited without
/// writing a line. Watches the monitor through a pidfd as well: processes it cloned may
/// still hold the pipe's write end, so end-of-file alone is not enough.
fn read_report_line(report: OwnedFd, child: Pid) -> io::Result<Option<String>> {
    sys::set_nonblocking(report.as_fd(), true)?;
    let pidfd = sys::pidfd_open(child.as_raw())?;
    let mut file = File::from(report);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut fds = [
            sys::pollin(file.as_raw_fd()),
            sys::pollin(pidfd.as_raw_fd()),
        ];
        match sys::poll(&mut fds, -1) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        let child_gone = fds[1].revents != 0;
        // Read everything available now.
        loop {
            match file.read(&mut chunk) {
                Ok(0) => {
                    return Ok(first_line(&buf));
                }
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(line) = first_line(&buf) {
                        return Ok(Some(line));
                    }
                    if buf.len() > 1 << 20 {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "report line longer than 1 MiB",
                        ));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if child_gone {
            return Ok(None);
        }
    }
}

fn first_line(buf: &[u8]) -> Option<String> {
    let end = buf.iter().position(|&b| b == b'\n')?;
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// Writes the one report line and closes the pipe.
fn send_report(mut report: File, line: &str) -> io::Result<()> {
    let mut data = Vec::with_capacity(line.len() + 1);
    data.extend_from_slice(line.as_bytes());
    data.push(b'\n');
    report.write_all(&data)
}

fn failure_line(error: String) -> String {
    serde_json::to_string(&CreateFailed { error })
        .unwrap_or_else(|_| r#"{"error":"unprintable error"}"#.to_owned())
}

/// The forked monitor: detach, create, report, monitor. Returns its exit code.
fn monitor_main(cfg: MonitorConfig, report: File) -> i32 {
    let log = match detach(&cfg, report.as_raw_fd()) {
        Ok(log) => log,
        Err(e) => {
            let _ = send_report(report, &failure_line(e));
            return 1;
        }
    };
    init_tracing(log);
    // The container's processes are cloned from this one: they must start with default
    // signal dispositions and an empty mask (the Rust runtime ignores SIGPIPE).
    if let Err(e) = sys::reset_signals_for_children() {
        let _ = send_report(report, &failure_line(format!("resetting signals: {e}")));
        return 1;
    }
    tracing::info!(id = %cfg.id, bundle = %cfg.bundle.display(), "creating container");

    let mut monitor = match Monitor::create(cfg) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!("create failed: {e}");
            let _ = send_report(report, &failure_line(e));
            return 1;
        }
    };
    if let Err(e) = monitor.setup_signals() {
        let e = format!("setting up signal handling: {e}");
        tracing::error!("{e}");
        monitor.destroy();
        let _ = send_report(report, &failure_line(e));
        return 1;
    }
    let me = std::process::id() as i32;
    let line = proc_start_time(monitor.init.as_raw())
        .map_err(|e| format!("start time of init (pid {}): {e}", monitor.init))
        .and_then(|pid_start_time| {
            let monitor_start_time = proc_start_time(me)
                .map_err(|e| format!("start time of the monitor (pid {me}): {e}"))?;
            let created = Created {
                pid: monitor.init.as_raw(),
                pid_start_time,
                monitor_pid: me,
                monitor_start_time,
            };
            serde_json::to_string(&created).map_err(|e| e.to_string())
        });
    let line = match line {
        Ok(line) => line,
        Err(e) => {
            tracing::error!("{e}");
            monitor.destroy();
            let _ = send_report(report, &failure_line(e));
            return 1;
        }
    };
    if let Err(e) = send_report(report, &line) {
        // Whoever asked is gone and will never learn about this container: undo it.
        tracing::error!("could not report the created container ({e}); deleting it");
        monitor.destroy();
        return 1;
    }
    tracing::info!(pid = monitor.init.as_raw(), "container created");
    monitor.shrink();
    monitor.run();
    0
}

/// New session, subreaper, stdio away from the caller's, no inherited descriptors.
/// Returns the monitor log, for tracing.
fn detach(cfg: &MonitorConfig, report_fd: i32) -> Result<File, String> {
    setsid().map_err(|e| format!("setsid: {e}"))?;
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| format!("PR_SET_CHILD_SUBREAPER: {e}"))?;
    let devnull = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("/dev/null: {e}"))?;
    let log = sys::open_append(&cfg.monitor_log, 0o640)
        .map_err(|e| format!("monitor log {}: {e}", cfg.monitor_log.display()))?;
    nix::unistd::dup2_stdin(&devnull).map_err(|e| format!("dup2 stdin: {e}"))?;
    nix::unistd::dup2_stdout(&devnull).map_err(|e| format!("dup2 stdout: {e}"))?;
    nix::unistd::dup2_stderr(&log).map_err(|e| format!("dup2 stderr: {e}"))?;
    drop(devnull);
    sys::close_fds_except(&[report_fd, log.as_raw_fd()])
        .map_err(|e| format!("closing inherited fds: {e}"))?;
    Ok(log)
}

/// Tracing goes to the monitor log through its own descriptor, not fd 2: the processes
/// libcontainer clones from the monitor (intermediate, init) keep logging through the
/// same subscriber after init has pointed fds 0-2 at the container's pipes, and their
/// messages must not end up in the container's CRI log.
fn init_tracing(log: File) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("KRAAL_MONITOR_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(MonitorLog {
            file: log,
            monitor_pid: std::process::id(),
        })
        .try_init();
}

/// Writer of the monitor log. Lines written by processes cloned from the monitor are
/// tagged `[pid N] `, so a failed creation can quote what the container's init said.
struct MonitorLog {
    file: File,
    monitor_pid: u32,
}

/// Tag of monitor-log lines written by the processes libcontainer clones.
const CHILD_TAG: &str = "[pid ";

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for MonitorLog {
    type Writer = MonitorLogWriter<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        MonitorLogWriter(self)
    }
}

struct MonitorLogWriter<'a>(&'a MonitorLog);

impl Write for MonitorLogWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let pid = std::process::id();
        let mut file = &self.0.file;
        if pid == self.0.monitor_pid {
            return file.write(buf);
        }
        // The formatter hands over one whole event per write: tag it in one write too.
        let mut line = format!("{CHILD_TAG}{pid}] ").into_bytes();
        line.extend_from_slice(buf);
        file.write_all(&line)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the processes libcontainer cloned logged as errors since `offset` of the monitor
/// log, without timestamps and targets, joined by "; ".
fn child_errors(monitor_log: &Path, offset: u64) -> String {
    use std::io::{Seek, SeekFrom};
    let mut data = Vec::new();
    if let Ok(mut f) = File::open(monitor_log)
        && f.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = f.take(256 * 1024).read_to_end(&mut data);
    }
    let text = String::from_utf8_lossy(&data);
    let mut said: Vec<&str> = Vec::new();
    for line in text.lines().filter(|l| l.starts_with(CHILD_TAG)) {
        let Some((_, msg)) = line.split_once(" ERROR ") else {
            continue;
        };
        // Drop the target ("libcontainer::rootfs::mount: ").
        let msg = match msg.split_once(": ") {
            Some((target, rest)) if target.contains("::") && !target.contains(' ') => rest,
            _ => msg,
        }
        .trim();
        if !msg.is_empty() && !said.contains(&msg) {
            said.push(msg);
        }
    }
    said.join("; ")
}

/// The CRI log file, or nowhere (no log path, or reopening failed).
struct LogSink(Option<File>);

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.0 {
            Some(f) => f.write(buf),
            None => Ok(buf.len()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The state of a running monitor.
struct Monitor {
    cfg: MonitorConfig,
    init: Pid,
    /// Read ends of the container's stdout and stderr; `None` once at end-of-file.
    outputs: [Option<File>; 2],
    /// Attached clients, and the write end of the container's stdin pipe (kept open until
    /// a `stdin_once` attach ends, or for the container's life).
    attach: Attachers,
    signals: Option<SignalFd>,
    listener: UnixListener,
    log: LogWriter<LogSink>,
    log_failed: bool,
    started: bool,
    exit: Option<ExitStatus>,
    exited_at: Option<Instant>,
    last_output: Instant,
    buf: Vec<u8>,
}

const STREAMS: [Stream; 2] = [Stream::Stdout, Stream::Stderr];

impl Monitor {
    /// Creates the container (init blocked until `start`) and everything around it.
    /// On error nothing is left behind.
    fn create(cfg: MonitorConfig) -> Result<Self, String> {
        let stdio = if cfg.tty {
            Stdio::Console
        } else {
            Stdio::pipes(cfg.stdin)?
        };
        let log_file = match &cfg.log_path {
            Some(p) => Some(
                sys::open_append(p, 0o640)
                    .map_err(|e| format!("opening the log file {}: {e}", p.display()))?,
            ),
            None => None,
        };

        let spec_path = cfg.bundle.join("config.json");
        File::open(&spec_path)
            .map_err(|e| format!("bundle config {}: {e}", spec_path.display()))?;
        let dir = cfg.container_dir();
        if dir.exists() {
            return Err(format!(
                "container {:?} already exists ({} is present)",
                cfg.id,
                dir.display()
            ));
        }
        fs::create_dir_all(&cfg.libcontainer_root).map_err(|e| {
            format!(
                "creating the libcontainer root {}: {e}",
                cfg.libcontainer_root.display()
            )
        })?;
        let listener = bind_control(&cfg.control_socket)?;
        // A tty container's init opens a pty in the container's own devpts, makes the slave
        // its controlling terminal, stdio and /dev/console, and sends the master over this
        // socket (libcontainer's console socket, what runc does for containerd). That beats
        // handing init a pty of ours as plain stdio: init calls setsid, so such a pty would
        // be nobody's controlling terminal — no SIGWINCH on resize, no Ctrl-C.
        let console = match &stdio {
            Stdio::Console => match bind_console(&cfg.console_socket()) {
                Ok(l) => Some(l),
                Err(e) => {
                    let _ = fs::remove_file(&cfg.control_socket);
                    return Err(e);
                }
            },
            Stdio::Pipes { .. } => None,
        };

        let log_offset = fs::metadata(&cfg.monitor_log).map(|m| m.len()).unwrap_or(0);
        let (outputs, stdin_w, built) = match stdio {
            Stdio::Pipes {
                out_r,
                out_w,
                err_r,
                err_w,
                stdin_r,
                stdin_w,
            } => {
                let built = ContainerBuilder::new(cfg.id.clone(), SyscallType::Linux)
                    .with_root_path(&cfg.libcontainer_root)
                    .and_then(|b| {
                        b.with_stdin(stdin_r)
                            .with_stdout(out_w)
                            .with_stderr(err_w)
                            .as_init(&cfg.bundle)
                            .with_systemd(false)
                            .with_detach(true)
                            .build()
                    });
                // The builder is gone: the write ends of the output pipes are now held only
                // by the container's init, so end-of-file means the container closed them.
                ([Some(out_r), Some(err_r)], stdin_w, built)
            }
            Stdio::Console => {
                let built = ContainerBuilder::new(cfg.id.clone(), SyscallType::Linux)
                    .with_root_path(&cfg.libcontainer_root)
                    .and_then(|b| {
                        b.with_console_socket(Some(cfg.console_socket()))
                            .as_init(&cfg.bundle)
                            .with_systemd(false)
                            .with_detach(true)
                            .build()
                    });
                ([None, None], None, built)
            }
        };
        let container = match built {
            Ok(c) => c,
            Err(e) => {
                let mut msg = format!("libcontainer: {}", libcontainer_error(&e));
                // The container's init logs the cause before telling libcontainer only
                // "failed to prepare rootfs" or the like.
                let said = child_errors(&cfg.monitor_log, log_offset);
                if !said.is_empty() {
                    msg = format!("{msg} (container init: {said})");
                }
                remove_partial_container(&cfg);
                let _ = fs::remove_file(&cfg.control_socket);
                let _ = fs::remove_file(cfg.console_socket());
                return Err(msg);
            }
        };
        let Some(init) = container.pid().map(|p| Pid::from_raw(p.as_raw())) else {
            destroy(&cfg, None);
            return Err("libcontainer created the container but recorded no init pid".into());
        };
        let (outputs, stdin_w, terminal) = match console {
            None => (outputs, stdin_w, None),
            Some(console) => {
                let master = receive_console(&console);
                drop(console);
                let _ = fs::remove_file(cfg.console_socket());
                let master = match master {
                    Ok(m) => m,
                    Err(e) => {
                        destroy(&cfg, Some(init));
                        return Err(e);
                    }
                };
                tracing::info!("terminal received from the container's init");
                match terminal_fds(master, cfg.stdin) {
                    Ok(fds) => fds,
                    Err(e) => {
                        destroy(&cfg, Some(init));
                        return Err(e);
                    }
                }
            }
        };

        if let Some(unified) = &cfg.unified_cgroup {
            let procs = unified.join("cgroup.procs");
            if let Err(e) = fs::write(&procs, init.as_raw().to_string()) {
                destroy(&cfg, Some(init));
                return Err(format!(
                    "moving init (pid {init}) into the unified cgroup {}: {e}",
                    procs.display()
                ));
            }
        }

        Ok(Monitor {
            init,
            outputs: outputs.map(|o| o.map(File::from)),
            attach: Attachers::new(stdin_w, cfg.stdin_once, terminal),
            signals: None,
            listener,
            log: LogWriter::new(LogSink(log_file)),
            log_failed: false,
            started: false,
            exit: None,
            exited_at: None,
            last_output: Instant::now(),
            buf: vec![0; READ_BUF],
            cfg,
        })
    }

    /// From now on the monitor must outlive kraald: ignore hang-ups and broken pipes, and
    /// take SIGCHLD (and termination requests, which are logged and ignored: the way to
    /// stop a container is `kraal-monitor delete`) through a signalfd. Done after the
    /// container's processes were cloned, so they do not inherit any of it.
    fn setup_signals(&mut self) -> io::Result<()> {
        sys::ignore_signal(Signal::SIGHUP)?;
        sys::ignore_signal(Signal::SIGPIPE)?;
        let mut mask = SigSet::empty();
        for sig in [
            Signal::SIGCHLD,
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGQUIT,
        ] {
            mask.add(sig);
        }
        mask.thread_block().map_err(io::Error::from)?;
        let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(io::Error::from)?;
        self.signals = Some(sfd);
        Ok(())
    }

    /// Gives back memory only the creation needed (libcontainer's code, freed heap).
    fn shrink(&self) {
        // SAFETY: malloc_trim only returns free heap memory to the kernel.
        unsafe { libc::malloc_trim(0) };
        if let Err(e) = sys::drop_clean_file_pages() {
            tracing::debug!("dropping clean file pages: {e}");
        }
    }

    /// Kills and deletes the container, reaps init, removes the control socket.
    fn destroy(&mut self) {
        destroy(&self.cfg, Some(self.init));
    }

    /// The event loop: output to the log, signals, control requests; until init has
    /// exited and its output is drained. Then the exit file is written.
    fn run(&mut self) {
        // init may have died before the signalfd existed.
        self.reap();
        loop {
            let timeout = match self.exited_at {
                None => -1,
                Some(exited) => {
                    if self.outputs.iter().all(Option::is_none) {
                        break;
                    }
                    let now = Instant::now();
                    let idle_end = self.last_output.max(exited) + DRAIN_IDLE;
                    let hard_end = exited + DRAIN_MAX;
                    let end = idle_end.min(hard_end);
                    if now >= end {
                        tracing::warn!(
                            "init has exited but its output is still open (held by \
                             processes that outlived it); no longer reading it"
                        );
                        break;
                    }
                    let ms = (end - now).as_millis().min(i32::MAX as u128) as i32;
                    ms.max(1)
                }
            };
            let mut fds = vec![sys::pollin(-1); 4];
            if let Some(s) = &self.signals {
                fds[0] = sys::pollin(s.as_fd().as_raw_fd());
            }
            fds[1] = sys::pollin(sys::raw(&self.listener));
            for (i, out) in self.outputs.iter().enumerate() {
                if let Some(f) = out {
                    fds[2 + i] = sys::pollin(f.as_raw_fd());
                }
            }
            fds.extend(self.attach.poll_fds());
            match sys::poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!("poll: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
            for i in 0..2 {
                if fds[2 + i].revents != 0 {
                    self.read_output(i);
                }
            }
            if fds[0].revents != 0 {
                self.handle_signals();
            }
            // Before accepting: the attach descriptors polled are the ones listed above.
            self.attach.handle(&fds[4..]);
            if fds[1].revents != 0 {
                self.accept_control();
            }
        }
        self.finish();
    }

    /// Reads what stream `i` has now (bounded, to stay fair to the other fds).
    fn read_output(&mut self, i: usize) {
        let stream = STREAMS[i];
        for _ in 0..8 {
            let Some(f) = &mut self.outputs[i] else {
                return;
            };
            match f.read(&mut self.buf) {
                Ok(0) => {
                    self.close_output(i);
                    return;
                }
                Ok(n) => {
                    self.last_output = Instant::now();
                    let r = self.log.write(stream, &self.buf[..n]);
                    self.note_log_result(r);
                    self.attach.broadcast(stream, &self.buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A pty master reads EIO once every slave descriptor is closed: the
                // terminal's end-of-file.
                Err(e) if self.cfg.tty && e.raw_os_error() == Some(libc::EIO) => {
                    self.close_output(i);
                    return;
                }
                Err(e) => {
                    tracing::warn!("reading the container's {}: {e}", stream.as_str());
                    self.close_output(i);
                    return;
                }
            }
        }
    }

    fn close_output(&mut self, i: usize) {
        self.outputs[i] = None;
        let r = self.log.finish(STREAMS[i]);
        self.note_log_result(r);
    }

    /// A log failure never stops the draining; it is reported once (until a reopen).
    fn note_log_result(&mut self, r: io::Result<()>) {
        if let Err(e) = r {
            if !self.log_failed {
                self.log_failed = true;
                let path = self.cfg.log_path.as_deref().unwrap_or(Path::new("-"));
                tracing::warn!(
                    "writing the log file {} failed: {e}; output is dropped until it works again",
                    path.display()
                );
            }
        } else if self.log_failed && self.log.get_ref().0.is_some() {
            self.log_failed = false;
        }
    }

    fn handle_signals(&mut self) {
        loop {
            let Some(s) = &self.signals else { return };
            match s.read_signal() {
                Ok(Some(info)) => {
                    if info.ssi_signo == Signal::SIGCHLD as u32 {
                        self.reap();
                    } else {
                        tracing::info!(
                            signal = info.ssi_signo,
                            sender = info.ssi_pid,
                            "ignoring termination signal: the monitor lives as long as the \
                             container (use `kraal-monitor delete`)"
                        );
                    }
                }
                Ok(None) => return,
                Err(Errno::EINTR) => {}
                Err(e) => {
                    tracing::error!("reading the signalfd: {e}");
                    return;
                }
            }
        }
    }

    /// Reaps every exited child: init, and processes re-parented to this subreaper.
    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => return,
                Ok(status) => {
                    if status.pid() == Some(self.init) {
                        if let Some((exit_code, signal)) = exit_code_of(&status) {
                            tracing::info!(exit_code, ?signal, "init exited");
                            self.exit = Some(ExitStatus {
                                exit_code,
                                signal,
                                finished_at_unix_nanos: unix_nanos(SystemTime::now()),
                            });
                            self.exited_at = Some(Instant::now());
                        }
                    } else {
                        tracing::debug!(?status, "reaped a re-parented process");
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::ECHILD) => return,
                Err(e) => {
                    tracing::error!("waitpid: {e}");
                    return;
                }
            }
        }
    }

    fn accept_control(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((conn, _)) => self.serve(conn),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!("accepting on the control socket: {e}");
                    return;
                }
            }
        }
    }

    /// One request, one reply line.
    fn serve(&mut self, mut conn: UnixStream) {
        let request = match read_request(&mut conn) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("reading a control request: {e}");
                let _ = conn.write_all(format!("error: reading the request: {e}\n").as_bytes());
                return;
            }
        };
        if let Some(mode) = request.strip_prefix("attach") {
            self.serve_attach(conn, mode.trim());
            return;
        }
        let reply = match request.as_str() {
            "start" => self.start().map(|()| String::new()),
            "reopen-log" => self.reopen_log().map(|()| String::new()),
            "state" => self.state(),
            other => Err(format!(
                "unknown command {other:?} (known: start, reopen-log, state, attach)"
            )),
        };
        let line = match reply {
            Ok(payload) if payload.is_empty() => "ok\n".to_owned(),
            Ok(payload) => format!("ok {payload}\n"),
            Err(e) => {
                tracing::warn!(command = %request, "control command failed: {e}");
                format!("error: {}\n", e.replace('\n', " "))
            }
        };
        if let Err(e) = conn.write_all(line.as_bytes()) {
            tracing::warn!(command = %request, "writing the control reply: {e}");
        }
        if request == "start" {
            // Starting went through libcontainer's code once more.
            self.shrink();
        }
    }

    /// `attach` or `attach stdin`: answers `ok` and keeps the connection as an attached
    /// client (see [`super::attach`]).
    fn serve_attach(&mut self, mut conn: UnixStream, mode: &str) {
        let wants_stdin = match mode {
            "" => false,
            "stdin" => true,
            other => {
                let _ = conn.write_all(
                    format!("error: attach {other:?}: expected `attach` or `attach stdin`\n")
                        .as_bytes(),
                );
                return;
            }
        };
        if wants_stdin && !self.attach.has_stdin() {
            let _ = conn.write_all(
                b"error: the container has no stdin (its config has stdin: false, or stdin_once closed it)\n",
            );
            return;
        }
        if self.exit.is_some() {
            let _ = conn.write_all(b"error: the container has already exited\n");
            return;
        }
        if let Err(e) = conn.write_all(b"ok\n") {
            tracing::warn!("answering attach: {e}");
            return;
        }
        self.attach.add(conn, wants_stdin);
    }

    fn start(&mut self) -> Result<(), String> {
        if self.exit.is_some() {
            return Err("the container has already exited".into());
        }
        let mut container = Container::load(self.cfg.container_dir())
            .map_err(|e| format!("loading the container state: {}", libcontainer_error(&e)))?;
        container
            .start()
            .map_err(|e| format!("libcontainer start: {}", libcontainer_error(&e)))?;
        self.started = true;
        tracing::info!("container started");
        Ok(())
    }

    fn reopen_log(&mut self) -> Result<(), String> {
        let Some(path) = &self.cfg.log_path else {
            return Ok(());
        };
        // Close the old file first: a rotating kubelet has renamed it already.
        self.log.get_mut().0 = None;
        match sys::open_append(path, 0o640) {
            Ok(f) => {
                self.log.get_mut().0 = Some(f);
                self.log_failed = false;
                tracing::info!("log file reopened");
                Ok(())
            }
            Err(e) => {
                let msg = format!("reopening the log file {}: {e}", path.display());
                tracing::warn!("{msg}; output is dropped until a reopen succeeds");
                self.log_failed = true;
                Err(msg)
            }
        }
    }

    fn state(&self) -> Result<String, String> {
        serde_json::to_string(&MonitorState {
            pid: self.init.as_raw(),
            started: self.started,
            exited: self.exit.is_some(),
        })
        .map_err(|e| e.to_string())
    }

    /// Flush partial lines, record the exit status, remove the control socket.
    fn finish(&mut self) {
        for i in 0..2 {
            if self.outputs[i].is_some() {
                self.close_output(i);
            }
        }
        let _ = self.log.flush();
        self.attach.finish();
        if let Some(status) = &self.exit {
            match write_exit_file(&self.cfg.exit_file, status) {
                Ok(()) => tracing::info!(exit_code = status.exit_code, "exit file written"),
                Err(e) => tracing::error!("writing the exit file: {e}"),
            }
        }
        let _ = fs::remove_file(&self.cfg.control_socket);
    }
}

/// The container's stdio as the monitor sets it up before creating the container.
enum Stdio {
    /// Pipes: the monitor keeps the read ends of stdout and stderr and the write end of
    /// stdin (`None`: the container's stdin is /dev/null).
    Pipes {
        out_r: OwnedFd,
        out_w: OwnedFd,
        err_r: OwnedFd,
        err_w: OwnedFd,
        stdin_r: OwnedFd,
        stdin_w: Option<OwnedFd>,
    },
    /// A terminal, which the container's init creates and sends over the console socket.
    Console,
}

impl Stdio {
    fn pipes(stdin: bool) -> Result<Stdio, String> {
        let pipe = || pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"));
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (stdin_r, stdin_w): (OwnedFd, Option<OwnedFd>) = if stdin {
            let (r, w) = pipe()?;
            (r, Some(w))
        } else {
            let null = File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
            (null.into(), None)
        };
        for f in [&out_r, &err_r] {
            sys::set_nonblocking(f.as_fd(), true).map_err(|e| format!("O_NONBLOCK: {e}"))?;
        }
        Ok(Stdio::Pipes {
            out_r,
            out_w,
            err_r,
            err_w,
            stdin_r,
            stdin_w,
        })
    }
}

/// Binds the console socket (replacing a stale one), owner-only.
fn bind_console(path: &Path) -> Result<UnixListener, String> {
    let err = |what: &str, e: io::Error| format!("console socket {}: {what}: {e}", path.display());
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err("removing a stale socket", e)),
    }
    let listener = UnixListener::bind(path).map_err(|e| err("bind", e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(|e| err("chmod", e))?;
    Ok(listener)
}

/// Takes the pty master the container's init sent on the console socket. libcontainer
/// connected to the socket in this process and init sent the master before reporting
/// ready, so it is there by now; the timeout only keeps a surprise from hanging the monitor.
fn receive_console(listener: &UnixListener) -> Result<OwnedFd, String> {
    let err = |what: &str, e: io::Error| format!("console socket: {what}: {e}");
    let mut fds = [sys::pollin(listener.as_raw_fd())];
    let deadline = Instant::now() + CONSOLE_TIMEOUT;
    loop {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as i32;
        match sys::poll(&mut fds, left) {
            Ok(0) => {
                return Err(format!(
                    "the container's init did not connect to the console socket within \
                     {CONSOLE_TIMEOUT:?}"
                ));
            }
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(err("poll", e)),
        }
    }
    let (conn, _) = listener.accept().map_err(|e| err("accept", e))?;
    conn.set_read_timeout(Some(CONSOLE_TIMEOUT))
        .map_err(|e| err("read timeout", e))?;
    let master = sys::recv_fd(conn.as_fd()).map_err(|e| err("receiving the pty master", e))?;
    // What arrives is used as the container's terminal: refuse anything else (runc and
    // libcontainer check their side the same way since CVE-2025-52565).
    if !sys::is_pty_master(master.as_fd()) {
        return Err("console socket: what the container's init sent is not a pty master".into());
    }
    Ok(master)
}

/// A tty container's descriptors from its pty master: the output to read (as stdout), the
/// stdin to write (only when the container has stdin) and the terminal to resize.
#[allow(clippy::type_complexity)]
fn terminal_fds(
    master: OwnedFd,
    stdin: bool,
) -> Result<([Option<OwnedFd>; 2], Option<OwnedFd>, Option<OwnedFd>), String> {
    sys::set_nonblocking(master.as_fd(), true).map_err(|e| format!("pty O_NONBLOCK: {e}"))?;
    let dup = |fd: &OwnedFd| {
        fd.try_clone()
            .map_err(|e| format!("dup of the pty master: {e}"))
    };
    let terminal = dup(&master)?;
    let stdin = if stdin { Some(dup(&master)?) } else { None };
    Ok(([Some(master), None], stdin, Some(terminal)))
}

/// Binds the control socket (replacing a stale one), owner-only.
fn bind_control(path: &Path) -> Result<UnixListener, String> {
    let err = |what: &str, e: io::Error| format!("control socket {}: {what}: {e}", path.display());
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| err("creating its directory", e))?;
    }
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err("removing a stale socket", e)),
    }
    let listener = UnixListener::bind(path).map_err(|e| err("bind", e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(|e| err("chmod", e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| err("O_NONBLOCK", e))?;
    Ok(listener)
}

/// One line (or everything until end-of-file), bounded in size and time.
fn read_request(conn: &mut UnixStream) -> io::Result<String> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(CONTROL_IO_TIMEOUT))?;
    conn.set_write_timeout(Some(CONTROL_IO_TIMEOUT))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let n = match conn.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.contains(&b'\n') {
            break;
        }
        if buf.len() > MAX_REQUEST {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request too long",
            ));
        }
    }
    let end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).trim().to_owned())
}

/// Exit code and signal of a terminated process (`128 + n` for signal `n`).
pub(crate) fn exit_code_of(status: &WaitStatus) -> Option<(i32, Option<i32>)> {
    match *status {
        WaitStatus::Exited(_, code) => Some((code, None)),
        WaitStatus::Signaled(_, sig, _) => Some((128 + sig as i32, Some(sig as i32))),
        _ => None,
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos().min(u64::MAX as u128) as u64)
        .unwrap_or(0)
}

/// libcontainer cleans up after most failures itself; this covers the rest (state
/// directory written before the failure).
fn remove_partial_container(cfg: &MonitorConfig) {
    let dir = cfg.container_dir();
    if !dir.exists() {
        return;
    }
    match Container::load(dir.clone()) {
        Ok(mut c) => {
            if let Err(e) = c.delete(true) {
                tracing::warn!(
                    "deleting the half-created container: {}",
                    libcontainer_error(&e)
                );
            }
        }
        Err(e) => tracing::debug!("no state to delete: {}", libcontainer_error(&e)),
    }
    if dir.exists()
        && let Err(e) = fs::remove_dir_all(&dir)
    {
        tracing::warn!("removing {}: {e}", dir.display());
    }
}

/// Kills init (our child: its pid cannot be reused before we reap it), reaps it, and
/// deletes the container's state and cgroup.
fn destroy(cfg: &MonitorConfig, init: Option<Pid>) {
    if let Some(pid) = init {
        let _ = kill(pid, Signal::SIGKILL);
        while let Err(Errno::EINTR) = waitpid(pid, None) {}
    }
    remove_partial_container(cfg);
    let _ = fs::remove_file(&cfg.control_socket);
    let _ = fs::remove_file(cfg.console_socket());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        let p = Pid::from_raw(1);
        assert_eq!(exit_code_of(&WaitStatus::Exited(p, 3)), Some((3, None)));
        assert_eq!(
            exit_code_of(&WaitStatus::Signaled(p, Signal::SIGKILL, false)),
            Some((137, Some(9)))
        );
        assert_eq!(exit_code_of(&WaitStatus::StillAlive), None);
    }

    #[test]
    fn first_line_only() {
        assert_eq!(first_line(b"{\"pid\":1}\nrest"), Some("{\"pid\":1}".into()));
        assert_eq!(first_line(b"no newline"), None);
    }
}
