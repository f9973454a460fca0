//! The end-to-end harness: a real kraald on a temporary socket, root and state dir, and CRI
//! clients connected to it exactly as kubelet connects (gRPC over a unix socket).
//!
//! Images come from the registries `hack/registry.sh` starts; `hack/test.sh` exports their
//! addresses. A test run without them fails loudly instead of skipping.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use kraal_api::runtime::v1::image_service_client::ImageServiceClient;
use kraal_api::runtime::v1::runtime_service_client::RuntimeServiceClient;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tonic::transport::{Channel, Endpoint, Uri};

pub use kraal_api::runtime::v1 as cri;

mod cgroups;
mod pods;
pub use cgroups::{CgroupDirs, keyed, read_trimmed};
pub use pods::*;

/// How long kraald may take to open its socket.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The kraald binary `cargo build -p kraald` produced next to this test binary.
pub fn kraald_bin() -> PathBuf {
    built_bin("kraald", "KRAALD_BIN", "kraald")
}

/// The kraalctl binary `cargo build -p kraalctl` produced next to this test binary.
pub fn kraalctl_bin() -> PathBuf {
    built_bin("kraalctl", "KRAALCTL_BIN", "kraalctl")
}

/// A binary of this workspace: `$env` if set, else the one in target/<profile>/.
fn built_bin(name: &str, env: &str, package: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let bin = profile_dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build -p {package}`, which hack/test.sh does) or set {env}",
        bin.display()
    );
    bin
}

/// Where a kraald with state dir `state` pins its port programs (kraald's default).
pub fn bpf_pin_root(state: &Path) -> PathBuf {
    let name: String = state
        .to_string_lossy()
        .trim_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    PathBuf::from("/sys/fs/bpf/kraal").join(name)
}

/// Every file under `dir`, recursively, with its inode number (an empty map when `dir` does
/// not exist): what a kraald left pinned on bpffs, and whether a restart re-created it.
pub fn pinned_files(dir: &Path) -> std::collections::BTreeMap<PathBuf, u64> {
    use std::os::unix::fs::MetadataExt;
    let mut files = std::collections::BTreeMap::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.metadata() {
                Ok(m) if m.is_dir() => dirs.push(path),
                Ok(m) => {
                    files.insert(path, m.ino());
                }
                Err(_) => {}
            }
        }
    }
    files
}

/// A kraald process with its own directories; killed and cleaned up on drop.
pub struct Kraald {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub socket: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
}

impl Kraald {
    /// Starts kraald with `extra_config` appended to a config that points it at temp dirs.
    pub async fn start(extra_config: &str) -> Kraald {
        let dir = tempfile::Builder::new()
            .prefix("kre-")
            .tempdir()
            .expect("temp dir");
        let socket = dir.path().join("kraal.sock");
        let root = dir.path().join("root");
        let state = dir.path().join("state");
        let config = dir.path().join("config.toml");
        // Bandwidth shaping puts qdiscs on the default route's device when a pod first needs
        // it (an offline pod is enough): tests that do not ask for it must leave this
        // machine's uplink alone. Tests of shaping bring their own [bandwidth] with lab devices.
        let bandwidth = if extra_config.contains("[bandwidth]") {
            ""
        } else {
            "[bandwidth]\nenabled = false\n"
        };
        // CNI: the node's /etc/cni/net.d is not the tests' business. Tests of pod networking
        // bring their own [cni] with a conf dir of their own; the others get loopback-only pods.
        let cni = if extra_config.contains("[cni]") {
            ""
        } else {
            "[cni]\nenabled = false\n"
        };
        let text = format!(
            "socket = {socket:?}\nroot = {root:?}\nstate = {state:?}\n{extra_config}\n{bandwidth}{cni}[log]\nlevel = \"debug\"\n"
        );
        std::fs::write(&config, text).expect("write config");
        let mut kraald = Kraald {
            dir,
            child: None,
            socket,
            root,
            state,
            config,
        };
        kraald.spawn().await;
        kraald
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(Child::id)
            .expect("kraald is running")
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("kraald.log"))
            .expect("kraald log file");
        let child = Command::new(kraald_bin())
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn kraald");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("kraald exited at start-up with {status}:\n{}", self.log());
            }
            if connect(&self.socket).await.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "kraald did not open {} within {START_TIMEOUT:?}:\n{}",
                self.socket.display(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// kraald's own log so far, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kraald.log")).unwrap_or_default()
    }

    /// SIGTERM and wait: the way an init system stops kraald.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("kraald is running");
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        wait_with_timeout(&mut child, Duration::from_secs(15))
    }

    /// SIGKILL: a crash, as far as kraald can tell.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("kraald is running");
        let _ = child.kill();
        let _ = child.wait();
    }

    pub async fn restart(&mut self) {
        let status = self.stop();
        assert!(status.success(), "kraald exited with {status} on SIGTERM");
        self.spawn().await;
    }

    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "kraald is still running");
        self.spawn().await;
    }

    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(connect(&self.socket).await.expect("connect"))
    }

    /// Where kraald pins its port programs: /sys/fs/bpf/kraal/<state dir, / as _>.
    pub fn bpf_pin_root(&self) -> PathBuf {
        bpf_pin_root(&self.state)
    }

    /// The admin API's socket: kraald puts it beside the CRI socket unless configured.
    pub fn admin_socket(&self) -> PathBuf {
        self.socket.with_file_name("admin.sock")
    }

    /// Runs `kraalctl --socket <admin socket> args...` and returns what it printed.
    pub fn kraalctl(&self, args: &[&str]) -> Output {
        Command::new(kraalctl_bin())
            .arg("--socket")
            .arg(self.admin_socket())
            .args(args)
            .output()
            .expect("running kraalctl")
    }

    pub async fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(connect(&self.socket).await.expect("connect"))
    }
}

impl Drop for Kraald {
    fn drop(&mut self) {
        // Pods outlive kraald by design; a test (even a failed one) must not leave its pods,
        // processes, mounts and cgroups on the machine.
        if self.child.is_some() {
            remove_all_pods(&self.socket);
        }
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            wait_with_timeout(&mut child, Duration::from_secs(10));
        }
        // kraald removes its pins once no pod needs them; a test that failed (or killed
        // kraald) may leave some, and this kraald's directory goes with its test.
        let _ = std::fs::remove_dir_all(self.bpf_pin_root());
    }
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return child.wait().expect("wait after kill");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A gRPC channel over a unix socket, as kubelet dials `unix:///run/kraal/kraal.sock`.
pub async fn connect(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let socket = socket.to_path_buf();
    Endpoint::from_static("http://kraal.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
}

/// Runs kraald to completion with `args` (for start-up failures), with a time limit.
pub fn run_kraald(args: &[&str], timeout: Duration) -> (ExitStatus, String) {
    let mut child = Command::new(kraald_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kraald");
    let status = wait_with_timeout(&mut child, timeout);
    let output: Output = child.wait_with_output().expect("collect output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (status, text)
}

/// The registries `hack/registry.sh start` runs, and what it pushed into them.
pub struct Registry {
    pub host: String,
    pub auth_host: String,
    /// A registry behind the Docker token protocol (bearer tokens from `token_realm`).
    pub token_host: String,
    pub token_realm: String,
    pub token_service: String,
    pub user: String,
    pub password: String,
    pub log: PathBuf,
    images: serde_json::Value,
}

impl Registry {
    pub fn from_env() -> Registry {
        let var = |key: &str| {
            std::env::var(key).unwrap_or_else(|_| {
                panic!(
                    "{key} is not set: run the tests through hack/test.sh, or `hack/registry.sh start DIR` and source DIR/registry.env"
                )
            })
        };
        let images_path = var("KRAAL_TEST_IMAGES");
        let images = std::fs::read_to_string(&images_path)
            .unwrap_or_else(|err| panic!("reading {images_path}: {err}"));
        Registry {
            host: var("KRAAL_TEST_REGISTRY"),
            auth_host: var("KRAAL_TEST_AUTH_REGISTRY"),
            token_host: var("KRAAL_TEST_TOKEN_REGISTRY"),
            token_realm: var("KRAAL_TEST_TOKEN_REALM"),
            token_service: var("KRAAL_TEST_TOKEN_SERVICE"),
            user: var("KRAAL_TEST_AUTH_USER"),
            password: var("KRAAL_TEST_AUTH_PASSWORD"),
            log: PathBuf::from(var("KRAAL_TEST_REGISTRY_LOG")),
            images: serde_json::from_str(&images).expect("images.json parses"),
        }
    }

    /// `kraal-test/busybox:latest` -> `127.0.0.1:PORT/kraal-test/busybox:latest`.
    pub fn image(&self, name: &str) -> String {
        format!("{}/{name}", self.host)
    }

    /// What hack/testimages.py recorded for `repo:tag`.
    pub fn pushed(&self, name: &str) -> &serde_json::Value {
        let entry = &self.images[name];
        assert!(!entry.is_null(), "images.json has no entry for {name}");
        entry
    }

    pub fn config_digest(&self, name: &str) -> String {
        self.pushed(name)["config_digest"]
            .as_str()
            .expect("config_digest")
            .to_string()
    }

    pub fn manifest_digest(&self, name: &str) -> String {
        self.pushed(name)["manifest_digest"]
            .as_str()
            .expect("manifest_digest")
            .to_string()
    }
}

pub fn image_spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

pub fn pull_request(image: &str) -> cri::PullImageRequest {
    cri::PullImageRequest {
        image: image_spec(image),
        ..Default::default()
    }
}

impl Registry {
    /// Asks the token server for a pull token for `repository`, with the test credentials,
    /// as a kubelet credential provider would before handing kraal a `registry_token`.
    pub fn fetch_token(&self, repository: &str) -> String {
        let url = self
            .token_realm
            .strip_prefix("http://")
            .expect("token realm is plain http on loopback");
        let (authority, path) = url.split_once('/').expect("realm has a path");
        let request = format!(
            "GET /{path}?service={}&scope=repository:{repository}:pull HTTP/1.0\r\nHost: {authority}\r\nAuthorization: Basic {}\r\n\r\n",
            self.token_service,
            base64(&format!("{}:{}", self.user, self.password)),
        );
        let mut stream = std::net::TcpStream::connect(authority).expect("token server");
        use std::io::{Read, Write};
        stream.write_all(request.as_bytes()).expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        let body = response.split("\r\n\r\n").nth(1).expect("http body");
        let json: serde_json::Value = serde_json::from_str(body).expect("token json");
        json["token"].as_str().expect("token").to_string()
    }
}

/// Standard base64 with padding (for HTTP Basic and the CRI `auth` field).
pub fn base64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
