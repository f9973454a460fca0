//! The hooks a pod gets, with their program names, pin names and attach types.

use crate::PodPorts;

/// One cgroup hook of the port programs; each pod gets a link on those its lists need
/// ([`Hook::for_ports`]).
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
    /// UDP sends from sockets the kernel autobound outside the lists: counted, optionally refused.
    SendMsg4,
    SendMsg6,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    SockAddr,
    Sock,
    SockOps,
}

impl Hook {
    pub const ALL: [Hook; 10] = [
        Hook::Bind4,
        Hook::Bind6,
        Hook::Connect4,
        Hook::Connect6,
        Hook::PostBind4,
        Hook::PostBind6,
        Hook::SockRelease,
        Hook::SockOps,
        Hook::SendMsg4,
        Hook::SendMsg6,
    ];

    /// The hooks a pod with these lists needs. A hook attached anywhere costs every socket of
    /// the host something (the kernel enables the hook for all, and runs bind, connect and
    /// sendmsg hooks under the socket lock), and a hook attached to the pod costs its sockets a
    /// program run: the bind hooks only come with a bind list, the connect hooks with a
    /// connect list, the sendmsg hooks only when unsteered UDP sends are counted or refused.
    /// The others serve both lists (ports held by sockets that were bound in any way, TCP
    /// close).
    pub fn for_ports(ports: &PodPorts) -> Vec<Hook> {
        Hook::ALL
            .into_iter()
            .filter(|h| match h {
                Hook::Bind4 | Hook::Bind6 => !ports.bind.is_empty(),
                Hook::Connect4 | Hook::Connect6 => !ports.connect.is_empty(),
                Hook::SendMsg4 | Hook::SendMsg6 => ports.count_unsteered || ports.deny_unsteered,
                _ => true,
            })
            .collect()
    }

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
            Hook::SendMsg4 => "sendmsg4",
            Hook::SendMsg6 => "sendmsg6",
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
            Hook::SendMsg4 => "kp_sendmsg4",
            Hook::SendMsg6 => "kp_sendmsg6",
        }
    }

    pub(crate) fn kind(self) -> Kind {
        match self {
            Hook::Bind4
            | Hook::Bind6
            | Hook::Connect4
            | Hook::Connect6
            | Hook::SendMsg4
            | Hook::SendMsg6 => Kind::SockAddr,
            Hook::PostBind4 | Hook::PostBind6 | Hook::SockRelease => Kind::Sock,
            Hook::SockOps => Kind::SockOps,
        }
    }

    /// Whether the program reads the per-attachment storage entry (the pod and its lists); the
    /// kernel allocates an entry only for programs that use the map (sock_release and sockops
    /// find the pod through the socket's claim instead).
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
            Hook::SendMsg4 => 14,
            Hook::SendMsg6 => 15,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_follow_the_lists() {
        let bind = PodPorts {
            bind: vec![(20000, 20099)],
            ..Default::default()
        };
        let connect = PodPorts {
            connect: vec![(20000, 20099)],
            ..Default::default()
        };
        let both = PodPorts {
            connect: vec![(21000, 21099)],
            ..bind.clone()
        };
        let has = |p: &PodPorts, h| Hook::for_ports(p).contains(&h);
        assert!(has(&bind, Hook::Bind6) && !has(&bind, Hook::Connect4));
        assert!(has(&connect, Hook::Connect6) && !has(&connect, Hook::Bind4));
        assert!(!has(&both, Hook::SendMsg4) && !has(&both, Hook::SendMsg6));
        let counted = PodPorts {
            count_unsteered: true,
            ..both.clone()
        };
        assert_eq!(Hook::for_ports(&counted), Hook::ALL.to_vec());
        let denied = PodPorts {
            deny_unsteered: true,
            ..both
        };
        assert_eq!(Hook::for_ports(&denied), Hook::ALL.to_vec());
        for p in [&bind, &connect] {
            for h in [Hook::PostBind4, Hook::SockRelease, Hook::SockOps] {
                assert!(has(p, h), "{h:?}");
            }
        }
    }
}
