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
    assert_eq!(before.len(), Hook::ALL.len());
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
    assert_eq!(ids.len(), Hook::ALL.len());

    let mut second = PortPrograms::load(&env.pins).unwrap();
    let listed = second.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].pod, pod);
    assert_eq!(listed[0].hooks, Hook::ALL.to_vec());
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
