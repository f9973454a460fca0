//! Where kraal keeps each sandbox's and container's files.
//!
//! ```text
//! <state>/p/<sandbox id>/{ns/{net,ipc,uts}, shm/, hosts, resolv.conf, hostname}
//! <state>/c/<container id>/{bundle/{config.json,rootfs/}, monitor.json, exit.json, monitor.log}
//! <state>/s/<id prefix>          the monitor's control socket
//! <state>/lc/                 libcontainer's own state
//! <root>/containers/<id>/{upper,work}   the writable layer
//! ```
//! Names are short because unix socket paths must fit in 108 bytes.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
    pub state: PathBuf,
}

impl Layout {
    pub fn new(root: &Path, state: &Path) -> Self {
        Layout {
            root: root.to_path_buf(),
            state: state.to_path_buf(),
        }
    }

    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.state.join("p").join(id)
    }

    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.state.join("c").join(id)
    }

    pub fn bundle(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("bundle")
    }

    pub fn rootfs(&self, id: &str) -> PathBuf {
        self.bundle(id).join("rootfs")
    }

    pub fn exit_file(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("exit.json")
    }

    /// `<state>/s/<first 24 hex digits of the id>`: a unix socket path must fit in 108
    /// bytes, which `<state>/c/<64 hex digits>/ctl.sock` does not for state dirs past ~30
    /// characters. 96 bits of a random id do not collide.
    pub fn control_socket(&self, id: &str) -> PathBuf {
        let short = id.get(..24).unwrap_or(id);
        self.state.join("s").join(short)
    }

    pub fn libcontainer_root(&self) -> PathBuf {
        self.state.join("lc")
    }

    pub fn writable_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }
}
