//! Kernel tests: root, a real cgroup2 directory per test, real sockets on loopback. Each test
//! uses its own port block so that tests running in parallel never collide.

mod support;

use std::collections::BTreeSet;

use kraal_ebpf::{Counters, Hook, PodPorts, PortPrograms};
use support::{Env, attached};

const EACCES: &str = "err 13";
const EADDRINUSE: &str = "err 98";
const EADDRNOTAVAIL: &str = "err 99";

fn bind_list(lo: u16, hi: u16) -> PodPorts {
    PodPorts {
        bind: vec![(lo, hi)],
        ..Default::default()
    }
}

fn connect_list(lo: u16, hi: u16) -> PodPorts {
    PodPorts {
        connect: vec![(lo, hi)],
        ..Default::default()
    }
}

fn ports_of(lines: &[String]) -> Vec<u16> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("ok "))
        .map(|p| p.parse().expect("port"))
        .collect()
}

#[test]
fn explicit_binds_in_and_out() {
    let env = Env::new("explicit");
    let mut progs = PortPrograms::load(&env.pins).unwrap();
    let ports = PodPorts {
        bind: vec![(21000, 21099), (81, 81)],
        ..Default::default()
    };
    let pod = progs.attach(&env.cgroup, &ports).unwrap();
    let out = env.run(&[
        "bind tcp 127.0.0.1:21000",
        "bind tcp 127.0.0.1:21100",
        "bind udp 127.0.0.1:21001",
        "bind udp 127.0.0.1:20999",
        "bind tcp [::1]:21002",
        "bind tcp [::1]:31002",
        "bind udp [::1]:21003",
        "bind udp [::1]:31003",
        "bind tcp [::ffff:127.0.0.1]:21004",
        "bind tcp [::ffff:127.0.0.1]:31004",
        "bind udp [::ffff:127.0.0.1]:21005",
        "bind udp [::ffff:127.0.0.1]:31005",
        "bind tcp 127.0.0.1:80",
        "bind tcp 127.0.0.1:81",
    ]);
    let expect = [
        "ok 21000", EACCES, "ok 21001", EACCES, "ok 21002", EACCES, "ok 21003", EACCES, "ok 21004",
        EACCES, "ok 21005", EACCES, EACCES, "ok 81",
    ];
    assert_eq!(out, expect);
    let c = progs.counters(pod).unwrap();
    assert_eq!((c.binds_allowed, c.binds_denied, c.failures), (7, 7, 0));
    // Every socket is closed: nothing stays held.
    assert_eq!(progs.held_ports(pod).unwrap(), Vec::<u16>::new());
    progs.detach(pod).unwrap();
}

#[test]
fn bind0_fills_the_range_then_fails_cleanly() {
    let env = Env::new("bind0");
    let mut progs = PortPrograms::load(&env.pins).unwrap();
    let pod = progs.attach(&env.cgroup, &bind_list(20000, 20099)).unwrap();
    let mut helper = env.spawn(&[
        "bind0 tcp 127.0.0.1 40",
        "bind0 udp 127.0.0.1 30",
        "bind0 tcp ::1 30",
        "bind0 tcp 127.0.0.1 1",
        "paused",
    ]);
    let out = helper.until_paused();
    assert_eq!(out.len(), 101);
    assert_eq!(out[100], EADDRINUSE, "the 101st bind(0) fails cleanly");
    let got = ports_of(&out[..100]);
    assert_eq!(
        got.len(),
        100,
        "no failure before the range is full: {out:?}"
    );
    let distinct: BTreeSet<u16> = got.iter().copied().collect();
    assert_eq!(distinct, (20000..=20099).collect());
    assert_eq!(progs.held_ports(pod).unwrap().len(), 100);
    helper.finish();
    let c = progs.counters(pod).unwrap();
    assert_eq!(
        c,
        Counters {
            ephemeral: 100,
            exhausted: 1,
            ..Default::default()
        }
    );
    assert!(progs.held_ports(pod).unwrap().is_empty());
    progs.detach(pod).unwrap();
}

#[test]
fn connect_takes_local_ports_from_the_list() {
    let env = Env::new("connect");
    let target = support::sink_listener();
    let mut progs = PortPrograms::load(&env.pins).unwrap();
    let pod = progs
        .attach(&env.cgroup, &connect_list(22000, 22099))
        .unwrap();
    let connect = format!("connect {target} 101");
    let out = env.run(&[&connect]);
    assert_eq!(out.len(), 101);
    let got = ports_of(&out[..100]);
    assert_eq!(got.len(), 100, "{out:?}");
    assert!(got.iter().all(|p| (22000..=22099).contains(p)), "{got:?}");
    assert_eq!(out[100], EADDRNOTAVAIL);
    let c = progs.counters(pod).unwrap();
    assert_eq!((c.ephemeral, c.exhausted, c.failures), (100, 1, 0));
    progs.detach(pod).unwrap();
}

#[test]
fn connect_churn_has_no_failures() {
    let env = Env::new("churn");
    let target = support::sink_listener();
    let mut progs = PortPrograms::load(&env.pins).unwrap();
    let pod = progs
        .attach(&env.cgroup, &connect_list(23000, 23099))
        .unwrap();
    let churn = format!("churn {target} 1000");
    let out = env.run(&[&churn]);
    assert_eq!(
        out.last().map(String::as_str),
        Some("ok 0 23000 23099"),
        "{out:?}"
    );
    let c = progs.counters(pod).unwrap();
    assert_eq!((c.ephemeral, c.failures, c.exhausted), (1000, 0, 0));
    // A closed connection's port is freed when its socket reaches CLOSE, which may come a
    // moment after the helper has exited (the last ACK is processed in softirq).
    let mut held = progs.held_ports(pod).unwrap();
    for _ in 0..100 {
        if held.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        held = progs.held_ports(pod).unwrap();
    }
    assert!(held.is_empty(), "still held: {held:?}");
    progs.detach(pod).unwrap();
}

#[test]
fn ftp_active_mode_works() {
    let env = Env::new("ftp");
    let mut progs = PortPrograms::load(&env.pins).unwrap();
    let ports = PodPorts {
        bind: vec![(24000, 24049)],
        connect: vec![(24050, 24099)],
        ..Default::default()
    };
    let pod = progs.attach(&env.cgroup, &ports).unwrap();
    for ip in ["127.0.0.1", "::1"] {
        let out = env.run(&[&format!("ftp {ip}")]);
        let fields: Vec<u16> = out[0]
            .strip_prefix("ok ")
            .unwrap_or_else(|| panic!("{out:?}"))
            .split(' ')
            .map(|p| p.parse().unwrap())
            .collect();
        assert!((24000..=24049).contains(&fields[0]), "{fields:?}");
        assert!((24050..=24099).contains(&fields[1]), "{fields:?}");
    }
    progs.detach(pod).unwrap();
}

#[test]
fn update_changes_ranges_without_reattaching() {
    let env = Env::new("update");
    let mut progs = PortPrograms::load(&env.pins).unwrap();
    let pod = progs.attach(&env.cgroup, &bind_list(25000, 25099)).unwrap();
    let before = attached(&env.cgroup);
    assert_eq!(
        before.len(),
        Hook::for_ports(&bind_list(25000, 25099)).len()
    );
    assert_eq!(env.run(&["bind tcp 127.0.0.1:25500"]), [EACCES]);
    progs.update(pod, &bind_list(25500, 25509)).unwrap();
    assert_eq!(
        env.run(&["bind tcp 127.0.0.1:25500", "bind tcp 127.0.0.1:25000"]),
        ["ok 25500", EACCES]
    );
    assert_eq!(attached(&env.cgroup), before);
    let listed = progs.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].ports, Some(bind_list(25500, 25509)));
    progs.detach(pod).unwrap();
}

#[test]
fn hooks_follow_the_lists() {
    let env = Env::new("hooks");
    let target = support::sink_listener();
    let mut progs = PortPrograms::load(&env.pins).unwrap();
    let bind_only = bind_list(30000, 30049);
    let pod = progs.attach(&env.cgroup, &bind_only).unwrap();
    // No connect list: no connect hooks, on this pod or (for this pod's sake) on the host.
    assert!(!Hook::for_ports(&bind_only).contains(&Hook::Connect4));
    // Unsteered UDP sends are not watched unless asked: no sendmsg hook.
    assert!(!Hook::for_ports(&bind_only).contains(&Hook::SendMsg4));
    let before = attached(&env.cgroup);
    assert_eq!(before.len(), Hook::for_ports(&bind_only).len());
    let connect = format!("connect {target} 1");
    let port = ports_of(&env.run(&[&connect]))[0];
    assert!(!(30050..=30099).contains(&port), "not steered: {port}");

    // Adding a connect list attaches the connect hooks, keeping the others' links.
    let both = PodPorts {
        connect: vec![(30050, 30099)],
        ..bind_only.clone()
    };
    progs.update(pod, &both).unwrap();
    let after = attached(&env.cgroup);
    assert_eq!(after.len(), Hook::for_ports(&both).len());
    assert!(
        before.iter().all(|id| after.contains(id)),
        "{before:?} {after:?}"
    );
    let port = ports_of(&env.run(&[&connect]))[0];
    assert!((30050..=30099).contains(&port), "steered: {port}");
    assert_eq!(progs.list().unwrap()[0].hooks, Hook::for_ports(&both));

    // Dropping it again detaches nothing; the connect hooks let everything through.
    progs.update(pod, &bind_only).unwrap();
    assert_eq!(attached(&env.cgroup), after);
    let port = ports_of(&env.run(&[&connect]))[0];
    assert!(!(30050..=30099).contains(&port), "not steered: {port}");
    progs.detach(pod).unwrap();
    assert!(attached(&env.cgroup).is_empty());
}

#[test]
fn detach_leaves_nothing_attached_or_pinned() {
    let env = Env::new("detach");
    let mut progs = PortPrograms::load(&env.pins).unwrap();
    let pod = progs.attach(&env.cgroup, &bind_list(26000, 26099)).unwrap();
    assert_eq!(env.run(&["bind udp 127.0.0.1:36000"]), [EACCES]);
    assert!(progs.detach(pod).unwrap());
    assert_eq!(attached(&env.cgroup), Vec::<u64>::new());
    assert!(!env.pins.join("pods").join(pod.to_string()).exists());
    assert!(progs.list().unwrap().is_empty());
    assert!(progs.counters(pod).is_err());
    assert_eq!(env.run(&["bind udp 127.0.0.1:36000"]), ["ok 36000"]);
    assert!(!progs.detach(pod).unwrap(), "detaching twice is a no-op");
}

#[test]
fn a_second_loader_readopts_pins() {
    let env = Env::new("readopt");
    let first = PortPrograms::load(&env.pins).unwrap();
    let mut first = first;
    let pod = first.attach(&env.cgroup, &bind_list(27000, 27099)).unwrap();
    let mut helper = env.spawn(&["bind0 tcp 127.0.0.1 1", "paused"]);
    let held = ports_of(&helper.until_paused());
    drop(first);

    // Enforcement outlives the loader.
    assert_eq!(env.run(&["bind tcp 127.0.0.1:37000"]), [EACCES]);
    let ids = attached(&env.cgroup);
    let hooks = Hook::for_ports(&bind_list(27000, 27099));
    assert_eq!(ids.len(), hooks.len());

    let mut second = PortPrograms::load(&env.pins).unwrap();
    let listed = second.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].pod, pod);
    assert_eq!(listed[0].hooks, hooks);
    // Attaching again adopts: same links, same allocator state.
    assert_eq!(
        second
            .attach(&env.cgroup, &bind_list(27000, 27099))
            .unwrap(),
        pod
    );
    assert_eq!(attached(&env.cgroup), ids);
    assert_eq!(second.held_ports(pod).unwrap(), held);
    let next = ports_of(&env.run(&["bind0 tcp 127.0.0.1 1"]));
    assert_ne!(
        next, held,
        "the new loader's view of held ports is the old one"
    );
    helper.finish();
    assert!(second.held_ports(pod).unwrap().is_empty());
    second.detach(pod).unwrap();
    assert!(attached(&env.cgroup).is_empty());
}

#[test]
fn sockets_made_before_joining_are_not_the_pods() {
    let env = Env::new("prejoin");
    let mut progs = PortPrograms::load(&env.pins).unwrap();
    let pod = progs.attach(&env.cgroup, &bind_list(28000, 28099)).unwrap();
    let procs = env.cgroup.join("cgroup.procs");
    let op = format!("prejoin {} 127.0.0.1:38000", procs.display());
    assert_eq!(env.run_outside(&[&op]), ["ok before", EACCES]);
    progs.detach(pod).unwrap();
}

#[test]
fn bad_ranges_are_refused_before_attaching() {
    let env = Env::new("bad");
    let mut progs = PortPrograms::load(&env.pins).unwrap();
    for bad in [bind_list(30, 20), bind_list(0, 5)] {
        assert!(matches!(
            progs.attach(&env.cgroup, &bad),
            Err(kraal_ebpf::Error::InvalidRanges(_))
        ));
    }
    assert!(attached(&env.cgroup).is_empty());
}

const EPERM: &str = "err 1";

/// A UDP socket outside the pod to send to, and its address.
fn udp_sink(ip: &str) -> (std::net::UdpSocket, String) {
    let sink = std::net::UdpSocket::bind(format!("{ip}:0")).unwrap();
    let to = sink.local_addr().unwrap().to_string();
    (sink, to)
}

#[test]
fn unbound_udp_sends_are_counted() {
    let env = Env::new("unsteered");
    let (_sink4, to4) = udp_sink("127.0.0.1");
    let (_sink6, to6) = udp_sink("[::1]");
    let mut progs = PortPrograms::load(&env.pins).unwrap();
    let counted = PodPorts {
        count_unsteered: true,
        ..bind_list(29000, 29099)
    };
    let pod = progs.attach(&env.cgroup, &counted).unwrap();
    let out = env.run(&[
        &format!("sendto unbound {to4}"),
        &format!("sendto unbound {to6}"),
        &format!("sendto bound {to4}"),
        &format!("sendto bound {to6}"),
        &format!("sendto connected {to4}"),
    ]);
    let ports = ports_of(&out);
    assert_eq!(ports.len(), 5, "{out:?}");
    // Autobound by the kernel outside the list (nothing can steer it) ...
    assert!(!(29000..=29099).contains(&ports[0]), "{out:?}");
    assert!(!(29000..=29099).contains(&ports[1]), "{out:?}");
    // ... while bind(0) was steered.
    assert!((29000..=29099).contains(&ports[2]), "{out:?}");
    assert!((29000..=29099).contains(&ports[3]), "{out:?}");
    let c = progs.counters(pod).unwrap();
    assert_eq!(c.unsteered_udp, 2, "{c:?}");
    progs.detach(pod).unwrap();
}

#[test]
fn sockets_bound_outside_a_connect_only_pods_list_are_not_unsteered() {
    let env = Env::new("unsteered-conn");
    let (_sink, to) = udp_sink("127.0.0.1");
    let mut progs = PortPrograms::load(&env.pins).unwrap();
    let counted = PodPorts {
        count_unsteered: true,
        ..connect_list(29100, 29199)
    };
    let pod = progs.attach(&env.cgroup, &counted).unwrap();
    // Without a bind list, bind(0) is the kernel's choice; but it is a bind, not an autobind.
    let out = env.run(&[
        &format!("sendto bound {to}"),
        &format!("sendto unbound {to}"),
        &format!("sendto connected {to}"),
    ]);
    assert_eq!(ports_of(&out).len(), 3, "{out:?}");
    assert!((29100..=29199).contains(&ports_of(&out)[2]), "{out:?}");
    assert_eq!(progs.counters(pod).unwrap().unsteered_udp, 1);
    // Nothing is left held by the sockets bound outside the list.
    assert!(progs.held_ports(pod).unwrap().is_empty());
    progs.detach(pod).unwrap();
}

#[test]
fn deny_unsteered_refuses_autobound_sends() {
    let env = Env::new("deny-unsteered");
    let (_sink4, to4) = udp_sink("127.0.0.1");
    let (_sink6, to6) = udp_sink("[::1]");
    let mut progs = PortPrograms::load(&env.pins).unwrap();
    let ports = PodPorts {
        deny_unsteered: true,
        ..bind_list(29200, 29299)
    };
    let pod = progs.attach(&env.cgroup, &ports).unwrap();
    let out = env.run(&[
        &format!("sendto unbound {to4}"),
        &format!("sendto unbound {to6}"),
        &format!("sendto bound {to4}"),
    ]);
    assert_eq!(out[..2], [EPERM, EPERM], "{out:?}");
    assert!(out[2].starts_with("ok 292"), "{out:?}");
    assert_eq!(progs.counters(pod).unwrap().unsteered_udp, 2);
    assert_eq!(progs.list().unwrap()[0].ports, Some(ports));
    // Lifting the flag lets the same send through (still counted).
    progs.update(pod, &bind_list(29200, 29299)).unwrap();
    assert!(env.run(&[&format!("sendto unbound {to4}")])[0].starts_with("ok "));
    assert_eq!(progs.counters(pod).unwrap().unsteered_udp, 3);
    progs.detach(pod).unwrap();
}

/// The claims table as the tests see it: layouts of `struct kp_claim` and `struct kp_pod`
/// (bpf/ports.h), opened through the pins.
mod claims {
    use std::path::Path;

    use aya::maps::{Array, HashMap, Map, MapData};

    pub const SLOTS: u64 = 65536;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Claim {
        pub cookie: u64,
        pub owner: u64,
        pub flags: u32,
        pub n_over: u32,
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct Pod {
        pub slot: u32,
        pub gen_: u32,
        pub cfg: [u8; 144],
    }

    // SAFETY: plain integers, no padding, valid for any bit pattern.
    unsafe impl aya::Pod for Claim {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Pod {}

    pub fn owner(gen_: u32, slot: u32, port: u16) -> u64 {
        (u64::from(gen_) << 32) | (u64::from(slot) << 16) | u64::from(port)
    }

    pub struct Maps {
        pub table: Array<MapData, Claim>,
        pub overflow: HashMap<MapData, u64, Claim>,
        pub pods: HashMap<MapData, u64, Pod>,
    }

    impl Maps {
        pub fn open(pins: &Path) -> Maps {
            let open = |name: &str| MapData::from_pin(pins.join("maps").join(name)).unwrap();
            Maps {
                table: Array::try_from(Map::Array(open("kp_sock_claims"))).unwrap(),
                overflow: HashMap::try_from(Map::HashMap(open("kp_claims_over"))).unwrap(),
                pods: HashMap::try_from(Map::HashMap(open("kp_pods"))).unwrap(),
            }
        }

        pub fn entry(&self, cookie: u64) -> Claim {
            self.table.get(&((cookie % SLOTS) as u32), 0).unwrap()
        }

        pub fn set_entry(&mut self, cookie: u64, claim: Claim) {
            self.table.set((cookie % SLOTS) as u32, claim, 0).unwrap();
        }

        /// The pod's (generation, slot).
        pub fn pod(&self, pod: kraal_ebpf::PodId) -> (u32, u32) {
            let p = self.pods.get(&pod.0, 0).unwrap();
            (p.gen_, p.slot)
        }
    }
}

/// Starts a helper with an unbound UDP socket whose claim entry the test may fill first.
fn socket_awaiting_bind(env: &Env) -> (support::Helper, u64) {
    let mut helper = env.spawn(&["newsock", "paused", "bindcur 127.0.0.1:0", "paused"]);
    let out = helper.until_paused();
    let cookie = out
        .first()
        .and_then(|l| l.strip_prefix("ok "))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{out:?}"));
    (helper, cookie)
}

#[test]
fn a_socket_whose_entry_is_taken_claims_in_the_overflow_map() {
    let env = Env::new("overflow");
    let mut progs = PortPrograms::load(&env.pins).unwrap();
    let pod = progs.attach(&env.cgroup, &bind_list(29500, 29599)).unwrap();
    let mut maps = claims::Maps::open(&env.pins);
    let (gen_, slot) = maps.pod(pod);

    for detach_first in [false, true] {
        let (mut helper, cookie) = socket_awaiting_bind(&env);
        // Another live socket of the pod (65536 cookies older) holds the entry.
        let before = maps.entry(cookie);
        let squatter = claims::Claim {
            cookie: cookie + claims::SLOTS,
            owner: claims::owner(gen_, slot, 29599),
            flags: 1,
            n_over: before.n_over,
        };
        maps.set_entry(cookie, squatter);

        let out = helper.resume();
        let port = ports_of(&out)[0];
        assert!((29500..29599).contains(&port), "{out:?}");
        let over = maps.overflow.get(&cookie, 0).unwrap();
        assert_eq!(over.owner, claims::owner(gen_, slot, port));
        assert_eq!(
            maps.entry(cookie).owner,
            squatter.owner,
            "the entry is not taken over"
        );
        assert_eq!(maps.entry(cookie).n_over, before.n_over + 1);
        assert_eq!(progs.held_ports(pod).unwrap(), vec![port]);

        if detach_first {
            // Detaching forgets claims the programs will no longer see released.
            progs.detach(pod).unwrap();
            assert!(maps.overflow.get(&cookie, 0).is_err());
            helper.finish();
        } else {
            helper.finish();
            assert!(maps.overflow.get(&cookie, 0).is_err());
            assert_eq!(maps.entry(cookie).n_over, before.n_over);
            assert!(progs.held_ports(pod).unwrap().is_empty());
        }
        let mut after = maps.entry(cookie);
        after.owner = 0;
        maps.set_entry(cookie, after);
    }
}

#[test]
fn entries_of_detached_pods_are_reused() {
    let env = Env::new("dead-claims");
    let mut progs = PortPrograms::load(&env.pins).unwrap();
    let pod = progs.attach(&env.cgroup, &bind_list(29600, 29699)).unwrap();
    let mut maps = claims::Maps::open(&env.pins);
    let (gen_, slot) = maps.pod(pod);

    let (mut helper, cookie) = socket_awaiting_bind(&env);
    // A claim left by an earlier pod of the slot, detached while its socket lived.
    let before = maps.entry(cookie);
    maps.set_entry(
        cookie,
        claims::Claim {
            cookie: cookie + claims::SLOTS,
            owner: claims::owner(gen_.wrapping_sub(1), slot, 29699),
            flags: 1,
            n_over: before.n_over,
        },
    );
    let port = ports_of(&helper.resume())[0];
    let entry = maps.entry(cookie);
    assert_eq!(entry.cookie, cookie);
    assert_eq!(entry.owner, claims::owner(gen_, slot, port));
    assert!(maps.overflow.get(&cookie, 0).is_err());
    helper.finish();
    assert_eq!(maps.entry(cookie).owner, 0);
    assert!(progs.held_ports(pod).unwrap().is_empty());
    progs.detach(pod).unwrap();
}
