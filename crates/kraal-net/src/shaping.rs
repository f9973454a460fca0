//! Per-pod bandwidth with HTB (kraal issue 6, DESIGN §5 "Bandwidth").
//!
//! ```text
//! <major>:      htb root qdisc of a device, unclassified traffic to <major>:fffe
//! <major>:1     node class   rate = machine threshold, ceil = capacity
//! <major>:fffe  default      unclassified traffic (the node's own, pods without limits)
//! <major>:<m>   one per pod  rate = soft limit (guarantee), ceil = hard limit, burst
//!               └ leaf qdisc: a queue of 40 ms at the ceiling (see `leaf_args`)
//! ```
//!
//! HTB gives exactly the semantics kraal promises, measured on this kind of machine: a pod
//! class under its `rate` always sends; at its `ceil` it is held back (queued); in between it
//! may borrow only while the node class is under its own `rate`, the machine threshold. The
//! node class has no parent to borrow from, so that threshold is where the node stops —
//! *before* the NIC, which then never has to drop blindly. Offline pods get a minimal rate and
//! the lowest borrowing priority: they get only what online pods leave.
//!
//! How long a pod's queue may get is kraal's choice, not HTB's: a local sender is held back by
//! TCP small queues, but packets forwarded from a pod netns, and everything a remote host
//! sends, lost their socket on the way (IP receive orphans them), so nothing holds those
//! senders but a full queue. With HTB's default leaf (1000 packets, each up to a 64 KB GSO
//! packet) the sender's whole window queued: at a 50 Mbit/s cap, half a second, and each
//! request of the pod waited that long behind its own bulk flow (hack/bench/bandwidth.sh).
//!
//! Egress: one hierarchy per uplink device ([`Hierarchy`]). Ingress: the uplink's ingress is
//! redirected to an IFB ([`IngressRedirect`]) and the same kind of hierarchy sits on the IFB.
//! Which class a packet goes to is decided by kraal-ebpf (skb->priority for pods in the host
//! netns, cls_bpf classifiers attached with [`Hierarchy::attach_classifier`] for the rest).
//!
//! Why iproute2's `tc` and not netlink crates for the writes: netlink-packet-route (0.31 to
//! 0.34) models qdisc options only for `ingress` and `fq_codel`, and rtnetlink (0.24) can only
//! *get* traffic classes. HTB qdiscs and classes (tc_htb_glob, tc_htb_opt with tc_ratespecs,
//! buffers in psched ticks, 64-bit rate attributes) would have to be encoded by hand — a
//! re-implementation of `tc`'s HTB code. `tc` is on every node, its command line is stable,
//! and `tc class replace` is exactly the idempotent create-or-change kraal needs. Reads (which
//! classes exist, counters) use netlink-packet-route, which parses them fully.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use kraal_policy::{QosClass, Rates};

use crate::error::{Error, Result};
use crate::netlink::{self, Object, TcEntry};
use crate::netns::Netns;
use crate::tc::{self, words};

/// Major of the egress hierarchies kraal makes on the uplinks ("kr").
pub const EGRESS_MAJOR: u16 = 0x6b72;
/// Major of the ingress hierarchy on the IFB ("ks").
pub const INGRESS_MAJOR: u16 = 0x6b73;
/// The node class: all pods and the default class share it.
pub const NODE_MINOR: u16 = 0x1;
/// The default class: traffic no pod claims.
pub const DEFAULT_MINOR: u16 = 0xfffe;
/// Pod classes use minors in this range; the rest is kraal's own.
pub const FIRST_POD_MINOR: u16 = 0x10;
pub const LAST_POD_MINOR: u16 = 0xfff0;

/// The guarantee of a class that has none (HTB needs a rate above 0): 8 kbit/s keeps
/// keepalives and a trickle moving when everyone else takes everything.
pub const MIN_RATE_BPS: u64 = 8_000;
/// HTB `prio` (lower borrows first): the node's own traffic, online pods, offline pods.
pub const PRIO_DEFAULT: u8 = 0;
pub const PRIO_ONLINE: u8 = 1;
pub const PRIO_OFFLINE: u8 = 7;
/// Bytes a class may send per DRR round when borrowing. The same for every class, so spare
/// bandwidth is split evenly between borrowers of one priority, whatever their guarantees
/// (HTB's default, rate / 10, would give a pod with a large guarantee most of the spare too,
/// and complains above 200 000).
pub const QUANTUM: u64 = 30_000;
/// Packets the default class may queue (HTB gives a leaf without a qdisc of its own a pfifo
/// of the device's txqueuelen): a normal NIC's txqueuelen, which the IFB gets too (its own
/// default of 32 dropped bursts). Pod classes get a queue of their own ([`Hierarchy::set_pod`]).
pub const LEAF_QUEUE_PACKETS: u32 = 1000;

/// How long a pod class's queue may get, at its ceiling. Measured at a 50 Mbit/s cap, one
/// TCP flow and beside it a request/response flow of the same pod (hack/bench/bandwidth.sh, µs
/// RTT): with HTB's default leaf a cubic sender's queue reached half a second (p99 request
/// latency 510 ms); with 40 ms, p99 41 ms at the same rate and 11–24 retransmits in 10 s.
/// Shorter costs BBR senders, which do not back off on loss and here keep 40–80 ms queued on
/// their own (p99 63–87 ms with the default leaf): at 25–35 ms they lost 240–1200 segments in
/// 10 s, at 40 ms 0–1140 depending on the run (the CNI bandwidth plugin with kraal's burst:
/// 145–389). The plugin's queue is about as long (25 ms plus its burst). After a loss cubic
/// needs a queue of ~0.43 × RTT to stay at the full rate, so this covers paths up to ~90 ms;
/// the lab has no way to add delay, so that is not measured.
const LEAF_QUEUE_MS: u64 = 40;
/// A pod class's queue holds at least this (~22 full-size frames): at low ceilings the time
/// above is a handful of packets, and drops then came so often that the pod's requests waited
/// for retransmission timeouts (at 5 Mbit/s: p99 400 ms with 16 KB, 150 ms with 32 KB).
const LEAF_QUEUE_MIN_BYTES: u64 = 32 * 1024;
/// Up to this ceiling a pod's leaf splits GSO packets into segments; above it a plain bfifo.
/// Measured retransmits in 8 s, one cubic flow, split against bfifo: 32–36 against 154–495 at
/// 200 Mbit/s, 85 against 122 at 500 Mbit/s. At 1 Gbit/s one flow's window (4 MB) no longer
/// fills the queue, the bfifo dropped nothing, and splitting only added per-packet work
/// downstream (5–98 retransmits, from drops outside the qdisc on this 2-CPU machine); at
/// 4 Gbit/s it cost 1–3% of the rate.
const LEAF_SPLIT_MAX_BPS: u64 = 500_000_000;
/// The rate of the splitting TBF: so far above any ceiling it is used for that its bucket
/// refills a frame in ~0.1 µs and it (nearly) never holds a packet back; HTB does the shaping.
const LEAF_SPLIT_RATE: &str = "100gbit";
/// The splitting TBF passes packets up to `max(MTU, this) + LEAF_FRAME_SLACK` whole and
/// splits larger GSO packets; a non-GSO packet above it would be dropped, so this covers
/// jumbo frames even if the device's MTU is raised after the pod's class was set up. (A bucket
/// of one 1500-byte frame split more and measured half the retransmits: 12 against 24.)
const LEAF_JUMBO_MTU: u32 = 9216;
/// Link-layer headers (Ethernet, VLAN tags) on top of the MTU, with room to spare.
const LEAF_FRAME_SLACK: u32 = 256;

/// The leaf qdisc of a pod class with ceiling `ceil_bps` on a device with MTU `mtu`, as the
/// arguments of `tc qdisc replace ... parent <class>`.
///
/// A queue of [`LEAF_QUEUE_MS`] at the ceiling, counted in bytes: forwarded packets are GSO
/// packets of 1.5 to 64 KB, so a packet count bounds nothing. Up to [`LEAF_SPLIT_MAX_BPS`] it is
/// a TBF far above the ceiling rather than a bfifo, for one side effect: TBF splits a GSO
/// packet bigger than its bucket into wire-size segments as it queues it, so a full queue
/// drops segments, where a bfifo drops a whole GSO packet of up to 44 segments that TCP then
/// resends. Measured at 50 Mbit/s, one cubic flow, 10 s, same rate throughout: with 25 ms
/// queues bfifo 175–325 retransmits and p99 33 ms, splitting TBF 12–27 and 25 ms; with 40 ms
/// bfifo 107–368 and 50 ms, splitting TBF 13–24 and 41 ms. This kernel has no
/// fq_codel or cake, which would split GSO packets or drop early instead. The kernel logs
/// "htb: tbf qdisc ... is non-work-conserving?" the first time a leaf's TBF holds a packet
/// back (seen a few times over hundreds of leaves, no effect on the rate). `tc qdisc show`
/// prints such a TBF's burst as "0b": it converts the bucket back from 64 ns ticks at 100
/// Gbit/s; the kernel keeps the exact byte count it was given.
fn leaf_args(ceil_bps: u64, mtu: u32) -> String {
    let limit = (ceil_bps / 8 * LEAF_QUEUE_MS / 1000).max(LEAF_QUEUE_MIN_BYTES);
    if ceil_bps > LEAF_SPLIT_MAX_BPS {
        return format!("bfifo limit {limit}");
    }
    let frame = mtu.max(LEAF_JUMBO_MTU) + LEAF_FRAME_SLACK;
    format!("tbf rate {LEAF_SPLIT_RATE} burst {frame} limit {limit}")
}

/// The leaf queue of a pod class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queue {
    /// 40 ms at the ceiling, GSO packets split (`leaf_args`): for traffic that has lost its
    /// socket (forwarded from a pod netns, or received), which nothing else holds back.
    Short,
    /// HTB's own (a pfifo of the device's txqueuelen): for a hostNetwork pod's egress, whose
    /// sockets TCP small queues already keep from filling it. A short queue there only made
    /// drops: 4 BBR flows at 50M retransmitted ~2000 segments in 10 s, against none.
    Default,
}

/// A tc handle `major:minor`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClassId {
    pub major: u16,
    pub minor: u16,
}

impl ClassId {
    pub const fn new(major: u16, minor: u16) -> ClassId {
        ClassId { major, minor }
    }

    /// As the kernel writes it (`skb->priority`, `tcm_handle`): major in the upper half.
    pub const fn to_u32(self) -> u32 {
        ((self.major as u32) << 16) | self.minor as u32
    }

    pub const fn from_u32(handle: u32) -> ClassId {
        ClassId {
            major: (handle >> 16) as u16,
            minor: (handle & 0xffff) as u16,
        }
    }
}

/// `tc`'s notation: hex, minor omitted when 0 (`6b72:10`, `6b72:`).
impl fmt::Display for ClassId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.minor == 0 {
            write!(f, "{:x}:", self.major)
        } else {
            write!(f, "{:x}:{:x}", self.major, self.minor)
        }
    }
}

/// A network device in a namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Device {
    pub netns: Netns,
    pub name: String,
}

impl Device {
    pub fn new(netns: Netns, name: impl Into<String>) -> Device {
        Device {
            netns,
            name: name.into(),
        }
    }

    /// The device's index in its namespace.
    pub fn ifindex(&self) -> Result<u32> {
        netlink::ifindex(&self.netns, &self.name)?.ok_or_else(|| Error::NoDevice(self.name.clone()))
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.netns {
            Netns::Current => write!(f, "{}", self.name),
            Netns::Pinned(p) => write!(f, "{} (netns {})", self.name, p.display()),
        }
    }
}

/// What the node allows in one direction (from kraal's config file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeRates {
    /// What the device can carry, bits/s.
    pub capacity_bps: u64,
    /// The machine threshold: above it, no pod gets more than its guarantee.
    pub threshold_bps: u64,
    /// The guarantee of the default class (the node's own traffic, pods without limits).
    pub default_rate_bps: u64,
}

impl NodeRates {
    /// The threshold as a fraction of capacity (`0.8`: 80%); the default class is guaranteed
    /// 1% of the threshold.
    pub fn from_fraction(capacity_bps: u64, fraction: f64) -> Result<NodeRates> {
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(Error::InvalidRates(format!(
                "the machine threshold must be a fraction in (0, 1], not {fraction}"
            )));
        }
        // Rounding to whole bits/s is all the precision HTB has.
        let threshold_bps = (capacity_bps as f64 * fraction) as u64;
        NodeRates {
            capacity_bps,
            threshold_bps,
            default_rate_bps: (threshold_bps / 100).max(MIN_RATE_BPS),
        }
        .checked()
    }

    fn checked(self) -> Result<NodeRates> {
        if self.capacity_bps == 0 || self.threshold_bps == 0 {
            return Err(Error::InvalidRates(format!(
                "capacity and threshold must be above 0 ({self:?})"
            )));
        }
        if self.threshold_bps > self.capacity_bps {
            return Err(Error::InvalidRates(format!(
                "the threshold {} bit/s is above the capacity {} bit/s",
                self.threshold_bps, self.capacity_bps
            )));
        }
        if self.default_rate_bps == 0 || self.default_rate_bps > self.threshold_bps {
            return Err(Error::InvalidRates(format!(
                "the default class's rate must be in (0, threshold], not {}",
                self.default_rate_bps
            )));
        }
        Ok(self)
    }
}

/// The HTB parameters of one class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassRates {
    /// Guaranteed, bits/s (HTB `rate`).
    pub rate_bps: u64,
    /// Never more, bits/s (HTB `ceil`).
    pub ceil_bps: u64,
    /// Bytes that may go at once after an idle spell, for `rate` and for `ceil`.
    pub burst_bytes: u64,
    /// Borrowing priority, 0 (first) to 7.
    pub prio: u8,
}

/// The default burst: 10 ms at the ceiling, at least 16 KiB (a few full-size packets and
/// one small GSO burst). Enough for bursty senders to reach their rate, small enough that the
/// first second stays within the cap: the CNI bandwidth plugin's famous overshoot comes from
/// a burst of seconds.
pub fn default_burst(ceil_bps: u64) -> u64 {
    (ceil_bps / 8 / 100).max(16 * 1024)
}

impl ClassRates {
    /// A pod's class for one direction. Online: rate = `min` (or [`MIN_RATE_BPS`] without a
    /// guarantee), ceil = `max`. Offline: no guarantee and the lowest priority, whatever `min`
    /// says, so it yields first (DESIGN §5 Co-location).
    pub fn for_pod(rates: &Rates, qos: QosClass) -> ClassRates {
        let ceil_bps = rates.max_bps.max(MIN_RATE_BPS);
        let (rate_bps, prio) = match qos {
            QosClass::Offline => (MIN_RATE_BPS, PRIO_OFFLINE),
            _ => (rates.min_bps.max(MIN_RATE_BPS), PRIO_ONLINE),
        };
        ClassRates {
            rate_bps: rate_bps.min(ceil_bps),
            ceil_bps,
            burst_bytes: rates.burst_bytes.unwrap_or_else(|| default_burst(ceil_bps)),
            prio,
        }
    }

    /// Whether going from `self` to `new` needs a fresh class rather than an in-place change.
    ///
    /// HTB keeps a class's token balance across a change, and the balance may be deeply in
    /// debt: a class charges every packet it sends under its own `rate` against that rate,
    /// GSO packets of 64 KB included, so a class with a minimal guarantee (8 kbit/s) owes up to
    /// a minute (HTB's floor) after a single such packet. Raised in place, the new guarantee
    /// would only hold once that debt is paid, one second per second — measured: a pod raised
    /// from no guarantee to 50 Mbit/s got 28 for the next 5 s. Lowering a guarantee or changing
    /// the ceiling is safe in place (the ceiling's own balance is charged at the ceiling's
    /// rate, so its debt is a packet's time). So: a raised guarantee gets a fresh class
    /// (make-before-break: create it, point the pod's eBPF entries at it, remove the old one),
    /// anything else `tc class change`.
    pub fn needs_fresh_class(&self, new: &ClassRates) -> bool {
        new.rate_bps > self.rate_bps
    }

    fn checked(self) -> Result<ClassRates> {
        if self.rate_bps == 0 || self.rate_bps > self.ceil_bps || self.burst_bytes == 0 {
            return Err(Error::InvalidRates(format!(
                "need 0 < rate <= ceil and burst > 0 ({self:?})"
            )));
        }
        if self.prio > 7 {
            return Err(Error::InvalidRates(format!(
                "prio {} is above 7",
                self.prio
            )));
        }
        Ok(self)
    }

    /// The `htb ...` part of a `tc class` command.
    fn htb_args(&self) -> String {
        format!(
            "htb rate {}bit ceil {}bit burst {} cburst {} quantum {QUANTUM} prio {}",
            self.rate_bps, self.ceil_bps, self.burst_bytes, self.burst_bytes, self.prio
        )
    }
}

/// A class and its counters, read from the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    pub id: ClassId,
    pub parent: ClassId,
    /// Sent so far (link-layer bytes, GSO packets split).
    pub bytes: u64,
    pub packets: u64,
    /// Dropped because the class's queue was full. Segments the leaf dropped after splitting
    /// a GSO packet of which it kept some are not counted here (only in the leaf's own stats).
    pub drops: u64,
    /// Times a packet of the class had to wait because the class was over its limits: how
    /// often it was held back.
    pub overlimits: u64,
    /// Held back right now.
    pub backlog_bytes: u64,
    pub backlog_packets: u64,
}

impl ClassStats {
    fn from_entry(e: &TcEntry) -> ClassStats {
        ClassStats {
            id: ClassId::from_u32(e.handle),
            parent: ClassId::from_u32(e.parent),
            bytes: e.bytes,
            packets: e.packets,
            drops: e.drops,
            overlimits: e.overlimits,
            backlog_bytes: e.backlog_bytes,
            backlog_packets: e.qlen,
        }
    }
}

/// The lowest pod minor not in `used`.
pub fn free_minor(used: &BTreeSet<u16>) -> Option<u16> {
    (FIRST_POD_MINOR..=LAST_POD_MINOR).find(|m| !used.contains(m))
}

const TC_H_ROOT: u32 = 0xffff_ffff;
/// Parent of filters on a device's ingress hook (clsact or ingress qdisc).
const TC_H_INGRESS_FILTERS: u32 = 0xffff_fff2;
/// Parent of filters on a device's egress hook (clsact only).
const TC_H_EGRESS_FILTERS: u32 = 0xffff_fff3;
/// Priority of kraal's filters: late, so that other software's filters (CNI, Cilium) run
/// first; a redirect to the IFB skips every filter after it.
const FILTER_PRIO: u16 = 0xfd00;

/// An HTB hierarchy kraal owns on one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hierarchy {
    device: Device,
    major: u16,
}

impl Hierarchy {
    /// Sets the device's hierarchy up, or adopts the one an earlier kraald made, and brings
    /// the node and default classes to `node`. Idempotent: a second call changes nothing but
    /// rates that differ, and pod classes are left alone. A root qdisc kraal did not make is
    /// replaced only if it is the kernel's default (handle 0:); anything else is an error
    /// rather than silently throwing away someone's configuration.
    pub fn ensure(device: Device, major: u16, node: &NodeRates) -> Result<Hierarchy> {
        let node = node.checked()?;
        let ifindex = device.ifindex()?;
        let root = netlink::dump(&device.netns, Object::Qdisc, ifindex)?
            .into_iter()
            .find(|q| q.parent == TC_H_ROOT);
        let h = Hierarchy { device, major };
        let ours = ClassId::new(major, 0).to_u32();
        match root {
            Some(q) if q.kind == "htb" && q.handle == ours => {
                tracing::info!(device = %h.device, "adopting the HTB hierarchy already there");
            }
            Some(q) if q.handle & 0xffff_0000 != 0 => {
                return Err(Error::ForeignQdisc {
                    device: h.device.to_string(),
                    kind: q.kind,
                    handle: ClassId::from_u32(q.handle).to_string(),
                });
            }
            _ => {
                // `replace`: the kernel's default root qdisc goes, atomically.
                h.tc(&format!(
                    "qdisc replace dev {} root handle {:x}: htb default {DEFAULT_MINOR:x}",
                    h.device.name, major
                ))?;
                tracing::info!(device = %h.device, major = %format!("{major:x}"), "HTB hierarchy created");
            }
        }
        // The burst is sized by the threshold, not the capacity: it is what the node may send
        // above its threshold after an idle spell (measured: 10 ms at a 1G capacity let two
        // pods start 10% over a 100M threshold in their first second).
        let node_class = ClassRates {
            rate_bps: node.threshold_bps,
            ceil_bps: node.capacity_bps,
            burst_bytes: default_burst(node.threshold_bps),
            prio: PRIO_DEFAULT,
        };
        h.tc(&format!(
            "class replace dev {} parent {} classid {} {}",
            h.device.name,
            ClassId::new(major, 0),
            h.class_id(NODE_MINOR),
            node_class.htb_args()
        ))?;
        let default_class = ClassRates {
            rate_bps: node.default_rate_bps,
            ceil_bps: node.capacity_bps,
            burst_bytes: default_burst(node.capacity_bps),
            prio: PRIO_DEFAULT,
        };
        h.set_class(DEFAULT_MINOR, &default_class)?;
        Ok(h)
    }

    /// The hierarchy on `device` if kraal's HTB is its root qdisc; nothing is changed.
    pub fn open(device: Device, major: u16) -> Result<Option<Hierarchy>> {
        let ifindex = device.ifindex()?;
        let ours = ClassId::new(major, 0).to_u32();
        let found = netlink::dump(&device.netns, Object::Qdisc, ifindex)?
            .iter()
            .any(|q| q.parent == TC_H_ROOT && q.kind == "htb" && q.handle == ours);
        Ok(found.then_some(Hierarchy { device, major }))
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn major(&self) -> u16 {
        self.major
    }

    /// The handle of this hierarchy's class `minor`: what kraal-ebpf is told for the pod.
    pub fn class_id(&self, minor: u16) -> ClassId {
        ClassId::new(self.major, minor)
    }

    fn tc(&self, line: &str) -> Result<()> {
        tc::run(&self.device.netns, "tc", &words(line))
    }

    fn set_class(&self, minor: u16, rates: &ClassRates) -> Result<()> {
        self.tc(&format!(
            "class replace dev {} parent {} classid {} {}",
            self.device.name,
            self.class_id(NODE_MINOR),
            self.class_id(minor),
            rates.htb_args()
        ))
    }

    /// Creates the pod class `minor` with its leaf queue (see `leaf_args`: 40 ms at the
    /// ceiling), or changes both in place: queued packets and the pod's connections are
    /// untouched, and the new rates hold from the next dequeue (measured: within the next
    /// 250 ms interval). Only a ceiling crossing 500 Mbit/s, where the kind of leaf changes,
    /// replaces the leaf and drops what it held. A raised guarantee wants a fresh class
    /// instead; see [`ClassRates::needs_fresh_class`].
    pub fn set_pod(&self, minor: u16, rates: &ClassRates) -> Result<ClassId> {
        self.set_pod_queue(minor, rates, Queue::Short)
    }

    /// [`Hierarchy::set_pod`] with the leaf queue chosen by the caller.
    pub fn set_pod_queue(&self, minor: u16, rates: &ClassRates, queue: Queue) -> Result<ClassId> {
        if !(FIRST_POD_MINOR..=LAST_POD_MINOR).contains(&minor) {
            return Err(Error::InvalidMinor(minor));
        }
        let rates = rates.checked()?;
        self.set_class(minor, &rates)?;
        if queue == Queue::Default {
            tracing::info!(device = %self.device, class = %self.class_id(minor), ?rates, "pod class set");
            return Ok(self.class_id(minor));
        }
        let mtu = netlink::mtu(&self.device.netns, self.device.ifindex()?)?;
        let leaf = leaf_args(rates.ceil_bps, mtu);
        // No handle: the kernel picks one for a new leaf, and `replace` of the same kind
        // without a handle changes the existing one.
        self.tc(&format!(
            "qdisc replace dev {} parent {} {leaf}",
            self.device.name,
            self.class_id(minor)
        ))?;
        tracing::info!(device = %self.device, class = %self.class_id(minor), ?rates, %leaf, "pod class set");
        Ok(self.class_id(minor))
    }

    /// Deletes the pod class `minor` (its queued packets are dropped). Returns false if there
    /// was none.
    pub fn remove_pod(&self, minor: u16) -> Result<bool> {
        if !(FIRST_POD_MINOR..=LAST_POD_MINOR).contains(&minor) {
            return Err(Error::InvalidMinor(minor));
        }
        let line = format!(
            "class del dev {} classid {}",
            self.device.name,
            self.class_id(minor)
        );
        let removed = tc::run_absent_ok(&self.device.netns, "tc", &words(&line))?;
        tracing::info!(device = %self.device, class = %self.class_id(minor), removed, "pod class removed");
        Ok(removed)
    }

    /// Every class of the hierarchy with its counters, the node and default classes included.
    pub fn classes(&self) -> Result<Vec<ClassStats>> {
        let ifindex = self.device.ifindex()?;
        let mut out: Vec<ClassStats> = netlink::dump(&self.device.netns, Object::Class, ifindex)?
            .iter()
            .filter(|e| e.kind == "htb" && ClassId::from_u32(e.handle).major == self.major)
            .map(ClassStats::from_entry)
            .collect();
        out.sort_by_key(|c| c.id);
        Ok(out)
    }

    /// The pod classes (for adoption after a restart: which minors are taken).
    pub fn pod_classes(&self) -> Result<Vec<ClassStats>> {
        Ok(self
            .classes()?
            .into_iter()
            .filter(|c| (FIRST_POD_MINOR..=LAST_POD_MINOR).contains(&c.id.minor))
            .collect())
    }

    /// One class's counters, if it exists.
    pub fn class_stats(&self, minor: u16) -> Result<Option<ClassStats>> {
        Ok(self.classes()?.into_iter().find(|c| c.id.minor == minor))
    }

    /// Attaches (or replaces: after a kraald upgrade the newest program takes over) the
    /// pinned cls_bpf classifier at `pin` on the root qdisc, in direct-action mode. The
    /// filter's classid supplies the major, the program only the minor.
    pub fn attach_classifier(&self, pin: &Path) -> Result<()> {
        let mut args = words(&format!(
            "filter replace dev {} parent {} prio {FILTER_PRIO} handle 1 protocol all bpf da object-pinned",
            self.device.name,
            ClassId::new(self.major, 0)
        ));
        args.push(pin.to_string_lossy().into_owned());
        args.extend(words(&format!("classid {}", ClassId::new(self.major, 0))));
        tc::run(&self.device.netns, "tc", &args)?;
        tracing::info!(device = %self.device, pin = %pin.display(), "classifier attached");
        Ok(())
    }

    /// Removes the whole hierarchy; the kernel puts its default qdisc back. Pods' traffic is
    /// unshaped afterwards.
    pub fn teardown(self) -> Result<bool> {
        let line = format!(
            "qdisc del dev {} root handle {:x}:",
            self.device.name, self.major
        );
        let removed = tc::run_absent_ok(&self.device.netns, "tc", &words(&line))?;
        tracing::info!(device = %self.device, removed, "HTB hierarchy removed");
        Ok(removed)
    }
}

/// The redirect of a device's ingress to an IFB, where the node's ingress hierarchy lives.
/// (Traffic arriving on a device can only be queued, hence shaped, on some device's egress:
/// the IFB is that device. Its packets go back to the receive path afterwards.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngressRedirect {
    device: Device,
    ifb: Device,
}

impl IngressRedirect {
    /// The IFB of `device`: `kraal-ifb<ifindex>`, in the device's namespace.
    pub fn ifb_name(device: &Device) -> Result<String> {
        Ok(format!("kraal-ifb{}", device.ifindex()?))
    }

    /// Creates the IFB (or adopts it), gives it `device`'s MTU (what the pod classes' leaves
    /// size their frames by), brings it up, and redirects everything arriving on `device` to
    /// it with a match-all u32 filter and mirred, after any filter of other software.
    /// Idempotent.
    pub fn ensure(device: Device) -> Result<IngressRedirect> {
        let ifb = Device::new(device.netns.clone(), IngressRedirect::ifb_name(&device)?);
        let netns = &device.netns;
        if netlink::ifindex(netns, &ifb.name)?.is_none() {
            tc::run(
                netns,
                "ip",
                &words(&format!("link add {} type ifb", ifb.name)),
            )?;
        }
        let ifindex = device.ifindex()?;
        let mtu = netlink::mtu(netns, ifindex)?;
        tc::run(
            netns,
            "ip",
            &words(&format!(
                "link set dev {} mtu {mtu} txqueuelen {LEAF_QUEUE_PACKETS} up",
                ifb.name
            )),
        )?;
        let qdiscs = netlink::dump(netns, Object::Qdisc, ifindex)?;
        // clsact and ingress both provide the ingress hook at ffff:fff1.
        if !qdiscs
            .iter()
            .any(|q| q.kind == "clsact" || q.kind == "ingress")
        {
            tc::run(
                netns,
                "tc",
                &words(&format!("qdisc add dev {} clsact", device.name)),
            )?;
        }
        let filters = netlink::dump(netns, Object::Filter(TC_H_INGRESS_FILTERS), ifindex)?;
        let present = filters
            .iter()
            .any(|f| f.kind == "u32" && (f.info >> 16) as u16 == FILTER_PRIO);
        if !present {
            tc::run(
                netns,
                "tc",
                &words(&format!(
                    "filter add dev {} ingress prio {FILTER_PRIO} protocol all u32 match u32 0 0 \
                     action mirred egress redirect dev {}",
                    device.name, ifb.name
                )),
            )?;
        }
        tracing::info!(device = %device, ifb = %ifb.name, adopted = present, "ingress redirected to IFB");
        Ok(IngressRedirect { device, ifb })
    }

    /// The IFB, where [`Hierarchy::ensure`] puts the ingress hierarchy.
    pub fn ifb(&self) -> &Device {
        &self.ifb
    }

    /// Stops the redirect and deletes the IFB (and with it the ingress hierarchy). The
    /// device's clsact qdisc goes too when no filter is left on it; one that other software
    /// still uses stays.
    pub fn teardown(self) -> Result<()> {
        let netns = &self.device.netns;
        tc::run_absent_ok(
            netns,
            "tc",
            &words(&format!(
                "filter del dev {} ingress prio {FILTER_PRIO}",
                self.device.name
            )),
        )?;
        tc::run_absent_ok(netns, "ip", &words(&format!("link del {}", self.ifb.name)))?;
        if let Ok(ifindex) = self.device.ifindex()
            && netlink::dump(netns, Object::Qdisc, ifindex)?
                .iter()
                .any(|q| q.kind == "clsact")
        {
            let mut others = 0;
            for parent in [TC_H_INGRESS_FILTERS, TC_H_EGRESS_FILTERS] {
                others += netlink::dump(netns, Object::Filter(parent), ifindex)?.len();
            }
            if others == 0 {
                tc::run_absent_ok(
                    netns,
                    "tc",
                    &words(&format!("qdisc del dev {} clsact", self.device.name)),
                )?;
            }
        }
        tracing::info!(device = %self.device, ifb = %self.ifb.name, "ingress redirect removed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(min: u64, max: u64, burst: Option<u64>) -> Rates {
        Rates::new(min, max, burst).unwrap()
    }

    #[test]
    fn class_ids_print_like_tc() {
        assert_eq!(ClassId::new(0x6b72, 0x10).to_string(), "6b72:10");
        assert_eq!(ClassId::new(0x6b72, 0).to_string(), "6b72:");
        assert_eq!(ClassId::from_u32(0x6b72_0010), ClassId::new(0x6b72, 0x10));
        assert_eq!(ClassId::new(1, 0xfffe).to_u32(), 0x1_fffe);
    }

    #[test]
    fn online_pods_get_their_guarantee_offline_pods_none() {
        let r = rates(20_000_000, 80_000_000, None);
        let online = ClassRates::for_pod(&r, QosClass::Online);
        assert_eq!(
            online,
            ClassRates {
                rate_bps: 20_000_000,
                ceil_bps: 80_000_000,
                burst_bytes: 100_000,
                prio: PRIO_ONLINE
            }
        );
        let offline = ClassRates::for_pod(&r, QosClass::Offline);
        assert_eq!(offline.rate_bps, MIN_RATE_BPS);
        assert_eq!(offline.ceil_bps, 80_000_000);
        assert_eq!(offline.prio, PRIO_OFFLINE);
    }

    #[test]
    fn a_plain_cap_has_no_guarantee_and_a_small_burst() {
        let cap = Rates::parse_cap("50M").unwrap();
        let c = ClassRates::for_pod(&cap, QosClass::Online);
        assert_eq!(c.rate_bps, MIN_RATE_BPS);
        assert_eq!(c.ceil_bps, 50_000_000);
        assert_eq!(c.burst_bytes, 62_500);
        let tiny = ClassRates::for_pod(&Rates::parse_cap("1k").unwrap(), QosClass::Online);
        assert_eq!((tiny.rate_bps, tiny.ceil_bps), (MIN_RATE_BPS, MIN_RATE_BPS));
        assert_eq!(tiny.burst_bytes, 16 * 1024);
        let given = ClassRates::for_pod(&rates(0, 50_000_000, Some(4096)), QosClass::Online);
        assert_eq!(given.burst_bytes, 4096);
    }

    #[test]
    fn only_a_raised_guarantee_needs_a_fresh_class() {
        let cap = ClassRates::for_pod(&Rates::parse_cap("50M").unwrap(), QosClass::Online);
        let guaranteed =
            ClassRates::for_pod(&rates(20_000_000, 50_000_000, None), QosClass::Online);
        assert!(cap.needs_fresh_class(&guaranteed));
        assert!(!guaranteed.needs_fresh_class(&cap));
        let wider = ClassRates::for_pod(&rates(20_000_000, 90_000_000, None), QosClass::Online);
        assert!(!guaranteed.needs_fresh_class(&wider));
        let offline = ClassRates::for_pod(&rates(20_000_000, 90_000_000, None), QosClass::Offline);
        assert!(offline.needs_fresh_class(&wider));
    }

    #[test]
    fn node_rates_from_a_fraction() {
        let n = NodeRates::from_fraction(1_000_000_000, 0.8).unwrap();
        assert_eq!(n.threshold_bps, 800_000_000);
        assert_eq!(n.default_rate_bps, 8_000_000);
        assert!(NodeRates::from_fraction(1_000_000_000, 0.0).is_err());
        assert!(NodeRates::from_fraction(1_000_000_000, 1.5).is_err());
        assert!(NodeRates::from_fraction(0, 0.5).is_err());
    }

    #[test]
    fn htb_arguments() {
        let c = ClassRates {
            rate_bps: 1,
            ceil_bps: 2,
            burst_bytes: 3,
            prio: 4,
        };
        assert_eq!(
            c.htb_args(),
            "htb rate 1bit ceil 2bit burst 3 cburst 3 quantum 30000 prio 4"
        );
        assert!(ClassRates { rate_bps: 3, ..c }.checked().is_err());
    }

    #[test]
    fn pod_leaves_hold_40_ms_and_split_gso_packets_up_to_500_mbit() {
        assert_eq!(
            leaf_args(50_000_000, 1500),
            "tbf rate 100gbit burst 9472 limit 250000"
        );
        // Jumbo frames above the floor pass whole.
        assert_eq!(
            leaf_args(50_000_000, 65535),
            "tbf rate 100gbit burst 65791 limit 250000"
        );
        // At least 32 KiB, however low the ceiling.
        assert_eq!(
            leaf_args(MIN_RATE_BPS, 1500),
            "tbf rate 100gbit burst 9472 limit 32768"
        );
        assert!(leaf_args(500_000_000, 1500).starts_with("tbf "));
        assert_eq!(leaf_args(1_000_000_000, 1500), "bfifo limit 5000000");
        assert_eq!(leaf_args(4_000_000_000, 1500), "bfifo limit 20000000");
    }

    #[test]
    fn minors_are_handed_out_lowest_first() {
        let mut used = BTreeSet::new();
        assert_eq!(free_minor(&used), Some(FIRST_POD_MINOR));
        used.extend([0x10, 0x11, 0x13]);
        assert_eq!(free_minor(&used), Some(0x12));
        let all: BTreeSet<u16> = (FIRST_POD_MINOR..=LAST_POD_MINOR).collect();
        assert_eq!(free_minor(&all), None);
    }
}
