use std::path::PathBuf;

use crate::PodId;

/// Everything that can go wrong loading, attaching or inspecting the port programs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path} is not on a bpffs mount (mount -t bpf bpf <dir>)")]
    NotBpffs { path: PathBuf },
    #[error("{path} is not a cgroup2 directory")]
    NotCgroup2 { path: PathBuf },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing and loading the port programs: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("program {program}: {what}: {source}")]
    Program {
        program: &'static str,
        what: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("program {program}: the link has no fd: {source}")]
    Link {
        program: &'static str,
        #[source]
        source: Box<aya::programs::links::LinkError>,
    },
    #[error("map {map}: {what}: {source}")]
    Map {
        map: &'static str,
        what: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error("pinning {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: Box<aya::pin::PinError>,
    },
    #[error("the object has no {what} named {name}")]
    Missing {
        what: &'static str,
        name: &'static str,
    },
    #[error("invalid port ranges: {0}")]
    InvalidRanges(String),
    #[error("pod {0} has no port programs attached")]
    NotAttached(PodId),
    #[error("pod {pod}: all {max} pod slots of the port programs are in use")]
    NoPodSlot { pod: PodId, max: u32 },
    #[error("parsing and loading the bandwidth programs: {0}")]
    LoadBandwidth(#[source] Box<aya::EbpfError>),
    #[error("pod {0} has no bandwidth programs attached")]
    NoBandwidth(PodId),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(
    what: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { what, path, source }
}
