//! The eight hooks a pod gets, with their program names, pin names and attach types.

/// One cgroup hook of the port programs; each pod gets a link on every one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    Bind4,
    Bind6,
    Connect4,
    Connect6,
    PostBind4,
    PostBind6,
    SockRelease,
    /// TCP state changes: frees a connection's port only once the full socket is gone.
    SockOps,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    SockAddr,
    Sock,
    SockOps,
}

impl Hook {
    pub const ALL: [Hook; 8] = [
        Hook::Bind4,
        Hook::Bind6,
        Hook::Connect4,
        Hook::Connect6,
        Hook::PostBind4,
        Hook::PostBind6,
        Hook::SockRelease,
        Hook::SockOps,
    ];

    /// The name of the link's pin file in the pod's pin directory.
    pub fn name(self) -> &'static str {
        match self {
            Hook::Bind4 => "bind4",
            Hook::Bind6 => "bind6",
            Hook::Connect4 => "connect4",
            Hook::Connect6 => "connect6",
            Hook::PostBind4 => "post_bind4",
            Hook::PostBind6 => "post_bind6",
            Hook::SockRelease => "sock_release",
            Hook::SockOps => "sockops",
        }
    }

    pub fn from_name(name: &str) -> Option<Hook> {
        Hook::ALL.into_iter().find(|h| h.name() == name)
    }

    /// The function name in bpf/ports.bpf.c.
    pub(crate) fn program(self) -> &'static str {
        match self {
            Hook::Bind4 => "kp_bind4",
            Hook::Bind6 => "kp_bind6",
            Hook::Connect4 => "kp_connect4",
            Hook::Connect6 => "kp_connect6",
            Hook::PostBind4 => "kp_post_bind4",
            Hook::PostBind6 => "kp_post_bind6",
            Hook::SockRelease => "kp_sock_release",
            Hook::SockOps => "kp_sockops",
        }
    }

    pub(crate) fn kind(self) -> Kind {
        match self {
            Hook::Bind4 | Hook::Bind6 | Hook::Connect4 | Hook::Connect6 => Kind::SockAddr,
            Hook::PostBind4 | Hook::PostBind6 | Hook::SockRelease => Kind::Sock,
            Hook::SockOps => Kind::SockOps,
        }
    }

    /// Whether the program reads the per-attachment pod slot; the kernel allocates a slot only
    /// for programs that use the map (sock_release and sockops find the pod through the socket instead).
    pub(crate) fn has_podref(self) -> bool {
        !matches!(self, Hook::SockRelease | Hook::SockOps)
    }

    /// `enum bpf_attach_type` from the kernel uapi: half of the cgroup storage key.
    pub(crate) fn attach_type(self) -> u32 {
        match self {
            Hook::Bind4 => 8,
            Hook::Bind6 => 9,
            Hook::Connect4 => 10,
            Hook::Connect6 => 11,
            Hook::PostBind4 => 12,
            Hook::PostBind6 => 13,
            Hook::SockRelease => 34,
            Hook::SockOps => 3,
        }
    }
}
