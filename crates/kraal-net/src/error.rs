use std::path::PathBuf;

/// Everything that can go wrong setting up or inspecting pod networking.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("entering network namespace {path}: {source}")]
    Netns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("running `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("netlink {what}: {source}")]
    Netlink {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("netlink {what}: malformed reply: {detail}")]
    NetlinkDecode { what: &'static str, detail: String },
    #[error("no network device {0:?}")]
    NoDevice(String),
    #[error(
        "{device} already has a root qdisc kraal did not create ({kind} {handle}); \
         remove it or configure another device"
    )]
    ForeignQdisc {
        device: String,
        kind: String,
        handle: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid rates: {0}")]
    InvalidRates(String),
    #[error("class minor {0:#x} is outside the range for pods ({first:#x}-{last:#x})", first = crate::shaping::FIRST_POD_MINOR, last = crate::shaping::LAST_POD_MINOR)]
    InvalidMinor(u16),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
