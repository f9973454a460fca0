//! What a pod sandbox owns on the node besides its cgroup: pinned namespaces (no pause
//! container), the pod's `/dev/shm`, and the `/etc/hosts`, `/etc/resolv.conf` and
//! `/etc/hostname` files its containers bind-mount.

mod error;
mod files;
mod hostname;
mod namespaces;
mod shm;

pub use error::SandboxError;
pub use files::{DnsSettings, write_hostname, write_hosts, write_resolv_conf};
pub use hostname::{PodHostname, pod_hostname};
pub use namespaces::{NamespaceSet, PinnedNamespaces, pin_namespaces, unpin_namespace};
pub use shm::{mount_shm, unmount};
