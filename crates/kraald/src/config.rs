//! kraald's configuration: a TOML file whose every key has a default embedded in the binary
//! (`config/default.toml`), and command-line flags that override the file.

use std::path::{Path, PathBuf};

use kraal_image::RegistryConfig;
use kraal_policy::PolicyOptions;
use serde::{Deserialize, Serialize};

/// The documented defaults; `Config::default()` must equal this file (a unit test holds them
/// together, so the file a user reads never lies about what kraald does).
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../config/default.toml");

/// Where kraald looks for its config when `--config` is not given. A missing file here is
/// fine (defaults apply); a missing file named with `--config` is an error.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/kraal/config.toml";

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub socket: PathBuf,
    pub socket_group: String,
    /// The admin API's socket (root only); empty: `admin.sock` beside `socket`.
    pub admin_socket: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub cgroup_driver: CgroupDriver,
    pub monitor_path: PathBuf,
    pub seccomp_profile_root: PathBuf,
    pub log: LogConfig,
    pub registry: RegistryConfig,
    pub policy: PolicyOptions,
    pub ports: PortsConfig,
    pub bandwidth: BandwidthConfig,
    pub cni: CniConfig,
    pub streaming: StreamingConfig,
}

/// Pod networking through CNI: where the network config and the plugins are.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CniConfig {
    /// false: pods with their own network namespace get loopback only, and Status says the
    /// network is not ready.
    pub enabled: bool,
    /// The lexically first valid `.conflist`/`.conf`/`.json` file here is the pods' network.
    pub conf_dir: PathBuf,
    /// Searched in order for plugin binaries.
    pub bin_dirs: Vec<PathBuf>,
    /// The longest one plugin call may take (a Go duration, `30s`); the plugin is then killed
    /// and the pod's start fails.
    pub plugin_timeout: String,
}

impl Default for CniConfig {
    fn default() -> Self {
        CniConfig {
            enabled: true,
            conf_dir: PathBuf::from("/etc/cni/net.d"),
            bin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
            plugin_timeout: "30s".to_string(),
        }
    }
}

impl CniConfig {
    /// The plugin timeout; `validate` has checked it parses to more than zero.
    pub fn timeout(&self) -> std::time::Duration {
        kraal_policy::parse_duration(&self.plugin_timeout)
            .unwrap_or(std::time::Duration::from_secs(30))
    }
}

/// Node-wide settings for pods' bandwidth (`kubernetes.io/<dir>-bandwidth`,
/// `kraal.dev/<dir>-bandwidth`): where kraal shapes, and how much the node has.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BandwidthConfig {
    /// false: pods that ask for bandwidth limits are refused (FailedPrecondition) rather than
    /// run unshaped.
    pub enabled: bool,
    /// The devices pods' traffic leaves and enters the node by; empty: the device of the
    /// default route, found when the first pod needs shaping.
    pub devices: Vec<String>,
    /// What the devices carry per direction, bits/s (`10G`); empty: the link speed the
    /// device reports, or 10G when it reports none.
    pub egress_capacity: String,
    pub ingress_capacity: String,
    /// The machine threshold, a fraction of capacity: above it no pod gets more than its
    /// guarantee.
    pub threshold: f64,
    /// Also shape traffic between hostNetwork pods over the loopback device (same-node
    /// traffic): every loopback packet of the node then goes through an HTB qdisc.
    pub loopback: bool,
}

impl Default for BandwidthConfig {
    fn default() -> Self {
        BandwidthConfig {
            enabled: true,
            devices: Vec::new(),
            egress_capacity: String::new(),
            ingress_capacity: String::new(),
            threshold: 0.9,
            loopback: true,
        }
    }
}

impl BandwidthConfig {
    /// A capacity as bits/s; None when empty (the link speed applies).
    pub fn capacity_bps(text: &str) -> Result<Option<u64>, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        kraal_policy::Rates::parse_cap(text)
            .map(|rates| Some(rates.max_bps))
            .map_err(|e| {
                format!("{e}; expected a bit rate like \"10G\" or \"\" for the link speed")
            })
    }
}

/// The exec / attach / port-forward streaming server (the URLs `Exec`, `Attach` and
/// `PortForward` return).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamingConfig {
    /// Where it listens. Loopback with a kernel-chosen port by default (containerd does the
    /// same): kubelet, the only client in a cluster, runs on the node.
    pub address: std::net::SocketAddr,
    /// `scheme://host:port` put in the URLs instead of the bound address; needed when
    /// listening on a wildcard address. Empty: derived from the bound address.
    pub base_url: String,
    /// PEM certificate and key: both set serves HTTPS, both empty plain HTTP.
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// How long a URL stays usable (each is single-use in any case).
    pub token_ttl_seconds: u64,
    /// Sessions served at once; more are refused (HTTP 503).
    pub max_concurrent_streams: usize,
    /// A session with no traffic either way for this long is closed (kubelet's
    /// streamingConnectionIdleTimeout default is 4h).
    pub idle_timeout_seconds: u64,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig {
            address: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            base_url: String::new(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            token_ttl_seconds: 60,
            max_concurrent_streams: 128,
            idle_timeout_seconds: 4 * 3600,
        }
    }
}

/// Node-wide rules for pods' local port ranges (`kraal.dev/bind-ports`, `connect-ports`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PortsConfig {
    /// The ports `auto:<count>` blocks come from, `start-end`. Blocks never overlap each
    /// other or the host's own ephemeral range (`net.ipv4.ip_local_port_range`).
    pub pool: String,
    /// hostNetwork pods must declare `kraal.dev/bind-ports` (pods without it are refused).
    pub host_network_requires_ranges: bool,
    /// What a hostNetwork pod with neither `kraal.dev/bind-ports` nor
    /// `kraal.dev/connect-ports` gets for both: a list or `auto:<count>` (one block for
    /// both). Empty: such pods are unrestricted.
    pub host_network_default_ports: String,
    /// UDP sends from a socket the kernel autobound outside a pod's lists (a `sendto()`
    /// before any bind or connect), which no hook can steer.
    pub unsteered_udp: UnsteeredUdp,
    /// bpffs directory where the port programs' maps and links are pinned; empty: a
    /// directory under /sys/fs/bpf/kraal named after `state`, so two kraalds never share.
    pub bpf_pin_root: PathBuf,
}

impl Default for PortsConfig {
    fn default() -> Self {
        PortsConfig {
            pool: "20000-32767".to_string(),
            host_network_requires_ranges: false,
            host_network_default_ports: String::new(),
            unsteered_udp: UnsteeredUdp::Count,
            bpf_pin_root: PathBuf::new(),
        }
    }
}

impl PortsConfig {
    /// The spec unannotated hostNetwork pods get; `validate` has checked it parses.
    pub fn host_network_default(&self) -> Option<kraal_policy::PortSpec> {
        let text = self.host_network_default_ports.trim();
        if text.is_empty() {
            return None;
        }
        kraal_policy::PortSpec::parse(text).ok()
    }

    /// The pool as a range; `validate` has checked it parses.
    pub fn pool_range(&self) -> Result<kraal_policy::PortRange, String> {
        let list = kraal_policy::PortList::parse(&self.pool).map_err(|e| e.to_string())?;
        match list.ranges() {
            [one] => Ok(*one),
            _ => Err("expected one range start-end, e.g. 20000-32767".to_string()),
        }
    }
}

/// What the kernel accepts as an interface name (IFNAMSIZ, no separators).
fn valid_device_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && !name.contains(['/', ':'])
        && !name.chars().any(char::is_whitespace)
        && name != "."
        && name != ".."
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

/// What kraal does about UDP sends it cannot steer into a pod's lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnsteeredUdp {
    /// Not watched: no sendmsg hook, so no cost to the host's other UDP sends.
    Ignore,
    /// Counted per pod (`unsteeredUdp`); every unconnected UDP send on the host then runs
    /// the cgroup sendmsg hook (measured +7% per send).
    Count,
    /// Counted and refused with EPERM.
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: PathBuf::from("/run/kraal/kraal.sock"),
            socket_group: String::new(),
            admin_socket: PathBuf::new(),
            root: PathBuf::from("/var/lib/kraal"),
            state: PathBuf::from("/run/kraal"),
            cgroup_driver: CgroupDriver::Cgroupfs,
            monitor_path: PathBuf::new(),
            seccomp_profile_root: PathBuf::from("/var/lib/kubelet/seccomp"),
            log: LogConfig::default(),
            registry: RegistryConfig::default(),
            policy: PolicyOptions::default(),
            ports: PortsConfig::default(),
            bandwidth: BandwidthConfig::default(),
            cni: CniConfig::default(),
            streaming: StreamingConfig::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_string(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("config {origin}: {key} = {value:?}: {reason}")]
    Invalid {
        origin: String,
        key: &'static str,
        value: String,
        reason: String,
    },
}

/// Values given on the command line; each one, when present, wins over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub socket: Option<PathBuf>,
    pub root: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub log_level: Option<String>,
}

impl Config {
    /// Parses a config text; keys it does not set keep their defaults.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: origin.to_path_buf(),
            source: Box::new(source),
        })
    }

    /// Loads the config kraald starts with: `explicit` (from `--config`) must exist; the
    /// default path may be absent. Then the flags, then validation of the result.
    pub fn load(explicit: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let (path, required) = match explicit {
            Some(path) => (path.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let mut config = match std::fs::read_to_string(&path) {
            Ok(text) => Config::parse(&text, &path)?,
            Err(err) if !required && err.kind() == std::io::ErrorKind::NotFound => {
                Config::default()
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        config.apply(overrides);
        config.validate(&path.display().to_string())?;
        Ok(config)
    }

    pub fn apply(&mut self, overrides: &Overrides) {
        if let Some(socket) = &overrides.socket {
            self.socket = socket.clone();
        }
        if let Some(root) = &overrides.root {
            self.root = root.clone();
        }
        if let Some(state) = &overrides.state {
            self.state = state.clone();
        }
        if let Some(level) = &overrides.log_level {
            self.log.level = level.clone();
        }
    }

    /// Where the port programs are pinned: `ports.bpf_pin_root`, or
    /// `/sys/fs/bpf/kraal/<state dir with / as _>`.
    pub fn bpf_pin_root(&self) -> PathBuf {
        if !self.ports.bpf_pin_root.as_os_str().is_empty() {
            return self.ports.bpf_pin_root.clone();
        }
        let name: String = self
            .state
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

    /// Where the bandwidth programs are pinned: beside the port programs.
    pub fn bandwidth_pin_root(&self) -> PathBuf {
        self.bpf_pin_root().join("bandwidth")
    }

    /// Where the admin API listens: `admin_socket`, or `admin.sock` beside the CRI socket.
    pub fn admin_socket_path(&self) -> PathBuf {
        if self.admin_socket.as_os_str().is_empty() {
            self.socket.with_file_name("admin.sock")
        } else {
            self.admin_socket.clone()
        }
    }

    /// Checks what serde cannot: absolute paths, a usable log filter, sane mirrors.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, value: String, reason: &str| ConfigError::Invalid {
            origin: origin.to_string(),
            key,
            value,
            reason: reason.to_string(),
        };
        for (key, path) in [
            ("socket", &self.socket),
            ("root", &self.root),
            ("state", &self.state),
        ] {
            if !path.is_absolute() {
                return Err(invalid(
                    key,
                    path.display().to_string(),
                    "expected an absolute path",
                ));
            }
        }
        if !self.admin_socket.as_os_str().is_empty() && !self.admin_socket.is_absolute() {
            return Err(invalid(
                "admin_socket",
                self.admin_socket.display().to_string(),
                "expected an absolute path, or empty for admin.sock beside socket",
            ));
        }
        if self.admin_socket_path() == self.socket {
            return Err(invalid(
                "admin_socket",
                self.admin_socket.display().to_string(),
                "must differ from socket (the admin API is root only, the CRI socket is not)",
            ));
        }
        if let Err(reason) = self.ports.pool_range() {
            return Err(invalid("ports.pool", self.ports.pool.clone(), &reason));
        }
        let default_ports = self.ports.host_network_default_ports.trim();
        if !default_ports.is_empty()
            && let Err(err) = kraal_policy::PortSpec::parse(default_ports)
        {
            return Err(invalid(
                "ports.host_network_default_ports",
                default_ports.to_string(),
                &format!(
                    "{err}; expected a port list like \"20000-20999\", \"auto:<count>\" or \"\""
                ),
            ));
        }
        for (key, text) in [
            ("bandwidth.egress_capacity", &self.bandwidth.egress_capacity),
            (
                "bandwidth.ingress_capacity",
                &self.bandwidth.ingress_capacity,
            ),
        ] {
            if let Err(reason) = BandwidthConfig::capacity_bps(text) {
                return Err(invalid(key, text.clone(), &reason));
            }
        }
        if !(self.bandwidth.threshold > 0.0 && self.bandwidth.threshold <= 1.0) {
            return Err(invalid(
                "bandwidth.threshold",
                self.bandwidth.threshold.to_string(),
                "expected a fraction of the capacity in (0, 1], e.g. 0.9",
            ));
        }
        if let Some(bad) = self
            .bandwidth
            .devices
            .iter()
            .find(|d| !valid_device_name(d))
        {
            return Err(invalid(
                "bandwidth.devices",
                bad.clone(),
                "expected network device names (1 to 15 characters, no '/', ':' or spaces)",
            ));
        }
        match kraal_policy::parse_duration(&self.cni.plugin_timeout) {
            Ok(d) if !d.is_zero() => {}
            Ok(_) => {
                return Err(invalid(
                    "cni.plugin_timeout",
                    self.cni.plugin_timeout.clone(),
                    "must be more than zero",
                ));
            }
            Err(err) => {
                return Err(invalid(
                    "cni.plugin_timeout",
                    self.cni.plugin_timeout.clone(),
                    &format!("{err}; expected a duration like \"30s\""),
                ));
            }
        }
        for (key, paths) in [
            ("cni.conf_dir", std::slice::from_ref(&self.cni.conf_dir)),
            ("cni.bin_dirs", self.cni.bin_dirs.as_slice()),
        ] {
            if let Some(bad) = paths.iter().find(|p| !p.is_absolute()) {
                return Err(invalid(
                    key,
                    bad.display().to_string(),
                    "expected an absolute path",
                ));
            }
        }
        if self.cni.bin_dirs.is_empty() {
            return Err(invalid(
                "cni.bin_dirs",
                String::new(),
                "expected at least one directory, e.g. [\"/opt/cni/bin\", \"/usr/lib/cni\"]",
            ));
        }
        if self.root == self.state {
            return Err(invalid(
                "state",
                self.state.display().to_string(),
                "must differ from root (root keeps images across reboots, state does not)",
            ));
        }
        if let Err(err) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(invalid(
                "log.level",
                self.log.level.clone(),
                &format!("expected trace, debug, info, warn, error or a tracing filter ({err})"),
            ));
        }
        if self.socket_group.contains(char::is_whitespace) {
            return Err(invalid(
                "socket_group",
                self.socket_group.clone(),
                "expected a group name or number",
            ));
        }
        let streaming = &self.streaming;
        if streaming.tls_cert.as_os_str().is_empty() != streaming.tls_key.as_os_str().is_empty() {
            return Err(invalid(
                "streaming.tls_cert",
                streaming.tls_cert.display().to_string(),
                "tls_cert and tls_key go together: set both for HTTPS, or neither",
            ));
        }
        if streaming.token_ttl_seconds == 0 || streaming.idle_timeout_seconds == 0 {
            return Err(invalid(
                "streaming.token_ttl_seconds",
                format!(
                    "{} (idle_timeout_seconds {})",
                    streaming.token_ttl_seconds, streaming.idle_timeout_seconds
                ),
                "token_ttl_seconds and idle_timeout_seconds must be at least 1",
            ));
        }
        if streaming.max_concurrent_streams == 0 {
            return Err(invalid(
                "streaming.max_concurrent_streams",
                "0".into(),
                "expected at least 1",
            ));
        }
        let base = streaming.base_url.trim();
        if !base.is_empty() && !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(invalid(
                "streaming.base_url",
                base.to_string(),
                "expected http://host:port or https://host:port, or empty",
            ));
        }
        self.registry
            .validate()
            .map_err(|err| ConfigError::Invalid {
                origin: origin.to_string(),
                key: "registry.mirrors",
                value: String::new(),
                reason: err.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let config = Config::parse(text, Path::new("test.toml"))?;
        config.validate("test.toml")?;
        Ok(config)
    }

    #[test]
    fn embedded_defaults_match_the_code() {
        let from_file = parse(DEFAULT_CONFIG_TOML).expect("default config parses");
        assert_eq!(from_file, Config::default());
    }

    #[test]
    fn empty_file_means_all_defaults() {
        assert_eq!(parse("").expect("empty parses"), Config::default());
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let config = parse("root = \"/data/kraal\"\n[log]\nformat = \"json\"\n").expect("parses");
        assert_eq!(config.root, PathBuf::from("/data/kraal"));
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.log.level, "info");
        assert_eq!(config.socket, PathBuf::from("/run/kraal/kraal.sock"));
    }

    #[test]
    fn port_settings_are_checked() {
        let err = parse("[ports]\npool = \"30-20\"\n").expect_err("reversed pool");
        assert!(err.to_string().contains("ports.pool"), "{err}");
        let err = parse("[ports]\nhost_network_default_ports = \"auto:0\"\n").expect_err("auto:0");
        let text = err.to_string();
        assert!(
            text.contains("ports.host_network_default_ports") && text.contains("auto:0"),
            "{text}"
        );
        let config = parse("[ports]\nhost_network_default_ports = \"auto:500\"\n").expect("parses");
        assert_eq!(
            config.ports.host_network_default(),
            Some(kraal_policy::PortSpec::Auto { count: 500 })
        );
        assert_eq!(Config::default().ports.host_network_default(), None);
    }

    #[test]
    fn cni_settings_are_checked() {
        let err = parse("[cni]\nplugin_timeout = \"soon\"\n").expect_err("bad timeout");
        assert!(err.to_string().contains("cni.plugin_timeout"), "{err}");
        let err = parse("[cni]\nplugin_timeout = \"0s\"\n").expect_err("zero");
        assert!(err.to_string().contains("more than zero"), "{err}");
        let err = parse("[cni]\nbin_dirs = [\"bin\"]\n").expect_err("relative");
        assert!(err.to_string().contains("cni.bin_dirs"), "{err}");
        let config = parse("[cni]\nplugin_timeout = \"1m30s\"\n").expect("parses");
        assert_eq!(config.cni.timeout(), std::time::Duration::from_secs(90));
    }

    #[test]
    fn streaming_settings_are_checked() {
        let config = parse("[streaming]\naddress = \"127.0.0.1:10010\"\n").expect("parses");
        assert_eq!(config.streaming.address.port(), 10010);
        let err = parse("[streaming]\ntls_cert = \"/c.pem\"\n").expect_err("cert without key");
        assert!(err.to_string().contains("tls_key"), "{err}");
        let err = parse("[streaming]\nmax_concurrent_streams = 0\n").expect_err("zero streams");
        assert!(err.to_string().contains("max_concurrent_streams"), "{err}");
        let err = parse("[streaming]\naddress = \"localhost\"\n").expect_err("no port");
        assert!(err.to_string().contains("address"), "{err}");
    }

    #[test]
    fn mirrors_parse() {
        let config = parse(
            "[registry.mirrors.\"registry.k8s.io\"]\nendpoints = [\"http://127.0.0.1:5000\", \"https://mirror.example.com\"]\n",
        )
        .expect("parses");
        let mirror = &config.registry.mirrors["registry.k8s.io"];
        assert_eq!(mirror.endpoints.len(), 2);
    }

    #[test]
    fn unknown_key_names_the_key() {
        let err = parse("sokcet = \"/x\"\n").expect_err("unknown key");
        assert!(err.to_string().contains("sokcet"), "{err}");
    }

    #[test]
    fn bad_enum_names_the_choices() {
        let err = parse("[log]\nformat = \"xml\"\n").expect_err("bad format");
        let text = err.to_string();
        assert!(text.contains("xml") && text.contains("json"), "{text}");
        let err = parse("cgroup_driver = \"cgroupv3\"\n").expect_err("bad driver");
        assert!(err.to_string().contains("cgroupfs"), "{err}");
    }

    #[test]
    fn wrong_type_is_an_error() {
        let err = parse("root = 5\n").expect_err("root must be a string");
        assert!(err.to_string().contains("root"), "{err}");
    }

    #[test]
    fn relative_paths_are_refused() {
        let err = parse("root = \"var/lib/kraal\"\n").expect_err("relative");
        let text = err.to_string();
        assert!(text.contains("root") && text.contains("absolute"), "{text}");
    }

    #[test]
    fn bad_log_level_is_refused() {
        let err = parse("[log]\nlevel = \"info,[\"\n").expect_err("bad level");
        assert!(err.to_string().contains("log.level"), "{err}");
    }

    #[test]
    fn plain_http_mirror_off_loopback_is_refused() {
        let err =
            parse("[registry.mirrors.\"docker.io\"]\nendpoints = [\"http://10.1.2.3:5000\"]\n")
                .expect_err("plain http to a remote host");
        assert!(err.to_string().contains("10.1.2.3"), "{err}");
    }

    #[test]
    fn flags_override_the_file() {
        let mut config = parse("root = \"/a\"\n").expect("parses");
        config.apply(&Overrides {
            root: Some(PathBuf::from("/b")),
            log_level: Some("debug".into()),
            ..Overrides::default()
        });
        assert_eq!(config.root, PathBuf::from("/b"));
        assert_eq!(config.log.level, "debug");
    }

    #[test]
    fn explicit_missing_file_is_an_error() {
        let err = Config::load(
            Some(Path::new("/nonexistent/kraal.toml")),
            &Overrides::default(),
        )
        .expect_err("explicit path must exist");
        assert!(err.to_string().contains("/nonexistent/kraal.toml"), "{err}");
    }
}
