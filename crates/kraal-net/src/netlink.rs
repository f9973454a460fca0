//! Reading tc objects and their counters over rtnetlink (netlink-packet-route), which gives
//! exact 64-bit counters and handles where `tc`'s text output rounds rates and, in the
//! iproute2 of the target distribution (6.1), has no JSON form for HTB classes. Also a
//! device's MTU.

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage, TcStats2};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::error::{Error, Result};
use crate::netns::Netns;

/// What to dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Object {
    Qdisc,
    Class,
    /// Filters attached under this parent handle.
    Filter(u32),
}

/// One qdisc, class or filter of a device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TcEntry {
    pub handle: u32,
    pub parent: u32,
    /// For filters: priority in the upper 16 bits, protocol in the lower.
    pub info: u32,
    pub kind: String,
    pub bytes: u64,
    pub packets: u64,
    pub drops: u64,
    pub overlimits: u64,
    pub backlog_bytes: u64,
    pub qlen: u64,
}

fn nl_err(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Netlink { what, source }
}

/// Every object of kind `what` on the device `ifindex` of `netns`.
pub(crate) fn dump(netns: &Netns, what: Object, ifindex: u32) -> Result<Vec<TcEntry>> {
    netns.run(|| dump_here(what, ifindex))
}

fn dump_here(what: Object, ifindex: u32) -> Result<Vec<TcEntry>> {
    let label = match what {
        Object::Qdisc => "dumping qdiscs",
        Object::Class => "dumping classes",
        Object::Filter(_) => "dumping filters",
    };
    let mut msg = TcMessage::with_index(i32::try_from(ifindex).unwrap_or(i32::MAX));
    if let Object::Filter(parent) = what {
        msg.header.parent = TcHandle::from(parent);
    }
    let inner = match what {
        Object::Qdisc => RouteNetlinkMessage::GetQueueDiscipline(msg),
        Object::Class => RouteNetlinkMessage::GetTrafficClass(msg),
        Object::Filter(_) => RouteNetlinkMessage::GetTrafficFilter(msg),
    };
    let mut out = Vec::new();
    request(
        label,
        inner,
        NLM_F_DUMP | NLM_F_REQUEST,
        |reply| match reply {
            RouteNetlinkMessage::NewQueueDiscipline(m)
            | RouteNetlinkMessage::NewTrafficClass(m)
            | RouteNetlinkMessage::NewTrafficFilter(m)
                if m.header.index as u32 == ifindex =>
            {
                out.push(entry(&m))
            }
            _ => {}
        },
    )?;
    Ok(out)
}

/// Sends `inner` on a new rtnetlink socket of the calling thread's namespace and passes every
/// reply message to `each`, until the kernel says it is done (a dump) or has acknowledged.
fn request(
    label: &'static str,
    inner: RouteNetlinkMessage,
    flags: u16,
    mut each: impl FnMut(RouteNetlinkMessage),
) -> Result<()> {
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(nl_err(label))?;
    socket.bind_auto().map_err(nl_err(label))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(nl_err(label))?;
    let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(inner));
    packet.header.flags = flags;
    packet.header.sequence_number = 1;
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0).map_err(nl_err(label))?;
    let dump = flags & NLM_F_DUMP == NLM_F_DUMP;

    loop {
        let (data, _) = socket.recv_from_full().map_err(nl_err(label))?;
        let mut offset = 0;
        while offset < data.len() {
            let reply: NetlinkMessage<RouteNetlinkMessage> =
                NetlinkMessage::deserialize(&data[offset..]).map_err(|e| Error::NetlinkDecode {
                    what: label,
                    detail: e.to_string(),
                })?;
            let len = reply.header.length as usize;
            match reply.payload {
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(Error::Netlink {
                        what: label,
                        source: e.to_io(),
                    });
                }
                NetlinkPayload::InnerMessage(m) => {
                    each(m);
                    // A plain request has one answer and no Done after it.
                    if !dump {
                        return Ok(());
                    }
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

/// The MTU of the device `ifindex` in `netns`.
pub(crate) fn mtu(netns: &Netns, ifindex: u32) -> Result<u32> {
    netns.run(|| {
        let label = "reading a device's MTU";
        let mut msg = LinkMessage::default();
        msg.header.index = ifindex;
        let mut mtu = None;
        request(
            label,
            RouteNetlinkMessage::GetLink(msg),
            NLM_F_REQUEST,
            |reply| {
                if let RouteNetlinkMessage::NewLink(m) = reply {
                    mtu = m.attributes.iter().find_map(|a| match a {
                        LinkAttribute::Mtu(v) => Some(*v),
                        _ => None,
                    });
                }
            },
        )?;
        mtu.ok_or(Error::NetlinkDecode {
            what: label,
            detail: format!("no MTU for device {ifindex}"),
        })
    })
}

fn entry(m: &TcMessage) -> TcEntry {
    let mut e = TcEntry {
        handle: m.header.handle.into(),
        parent: m.header.parent.into(),
        info: m.header.info,
        ..TcEntry::default()
    };
    let mut have_stats2 = false;
    for attr in &m.attributes {
        match attr {
            TcAttribute::Kind(k) => e.kind = k.clone(),
            TcAttribute::Stats2(stats) => {
                have_stats2 = true;
                for s in stats {
                    match s {
                        TcStats2::Basic(b) => {
                            e.bytes = b.bytes;
                            e.packets = u64::from(b.packets);
                        }
                        TcStats2::Queue(q) => {
                            e.drops = u64::from(q.drops);
                            e.overlimits = u64::from(q.overlimits);
                            e.backlog_bytes = u64::from(q.backlog);
                            e.qlen = u64::from(q.qlen);
                        }
                        _ => {}
                    }
                }
            }
            // The old fixed struct: only if the kernel sent no TCA_STATS2.
            TcAttribute::Stats(s) if !have_stats2 => {
                e.bytes = s.bytes;
                e.packets = u64::from(s.packets);
                e.drops = u64::from(s.drops);
                e.overlimits = u64::from(s.overlimits);
                e.backlog_bytes = u64::from(s.backlog);
                e.qlen = u64::from(s.qlen);
            }
            _ => {}
        }
    }
    e
}

/// The index of the device called `name` in `netns`, if there is one.
pub(crate) fn ifindex(netns: &Netns, name: &str) -> Result<Option<u32>> {
    let cname = std::ffi::CString::new(name).map_err(|_| Error::NoDevice(name.into()))?;
    netns.run(|| {
        // SAFETY: a valid NUL-terminated string; the call only reads it.
        let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        Ok((index != 0).then_some(index))
    })
}
