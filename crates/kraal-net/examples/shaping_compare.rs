//! Measures the mechanisms kraal chose between for per-pod bandwidth and prints one table:
//!
//! - egress of a hostNetwork pod: HTB class picked by `skb->priority` (the eBPF cgroup program);
//! - egress of a pod with its own netns: (a) HTB on the pod's own interface inside its netns,
//!   the class picked by priority as above, versus (b) the node's HTB on the uplink, the class
//!   picked by the host-side interface the packets came in on (kraal's cls_bpf classifier), and
//!   (b') the same with a u32 filter on the pod's source address;
//! - ingress: IFB + HTB versus drop policing in the pod's `cgroup_skb/ingress` program (this
//!   kernel has no `police` action), with buckets of 64 KB, 100 ms and 300 ms of the rate.
//!
//! Root only; everything runs in network namespaces it creates (the node's uplink is a veth).
//! `cargo run -p kraal-net --example shaping_compare [seconds]` (default 10 s per run).

#[path = "../tests/support/mod.rs"]
mod support;

use kraal_ebpf::{BandwidthPrograms, PodBandwidth, PodInterface, Police};
use kraal_net::shaping::{
    ClassRates, Device, EGRESS_MAJOR, Hierarchy, INGRESS_MAJOR, IngressRedirect, NodeRates,
};
use kraal_policy::{QosClass, Rates};
use support::{Client, Lab, NODE_ADDR, Report, iperf_server};

const M: u64 = 1_000_000;
const CAP: u64 = 50 * M;

fn node_rates() -> NodeRates {
    NodeRates {
        capacity_bps: 1000 * M,
        threshold_bps: 1000 * M,
        default_rate_bps: M,
    }
}

fn cap_class() -> ClassRates {
    ClassRates::for_pod(&Rates::new(0, CAP, None).unwrap(), QosClass::Online)
}

struct Row {
    case: String,
    flows: u32,
    report: Report,
    /// Whether the receiver measured the intervals (then the max second is meaningful).
    receiver_intervals: bool,
}

fn print(rows: &[Row]) {
    println!(
        "| case | flows | requested Mbit/s | achieved Mbit/s (goodput) | achieved/requested | retransmits | max 1 s interval |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in rows {
        let max = r.report.intervals.iter().copied().fold(0.0, f64::max) / 1e6;
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.3} | {} | {} |",
            r.case,
            r.flows,
            CAP as f64 / 1e6,
            r.report.mbps(),
            r.report.received_bps / CAP as f64,
            r.report.retransmits,
            if r.receiver_intervals {
                format!("{max:.2}")
            } else {
                "-".into()
            }
        );
    }
}

fn egress(
    rows: &mut Vec<Row>,
    case: &str,
    netns: &str,
    cgroup: &std::path::Path,
    addr: &str,
    lab: &Lab,
    secs: f64,
) {
    for (flows, port) in [(1u32, 5301u16), (4, 5302)] {
        let _srv = iperf_server(netns, Some(cgroup), addr, port);
        let mut c = Client::new(&lab.peer, addr, port, secs);
        c.flows = flows;
        c.reverse = true;
        let report = c.run();
        eprintln!("{case} {flows}: {:.2}", report.mbps());
        rows.push(Row {
            case: case.into(),
            flows,
            report,
            receiver_intervals: true,
        });
    }
}

fn ingress(
    rows: &mut Vec<Row>,
    case: &str,
    netns: &str,
    cgroup: &std::path::Path,
    addr: &str,
    lab: &Lab,
    secs: f64,
) {
    for (flows, port) in [(1u32, 5401u16), (4, 5402)] {
        let _srv = iperf_server(netns, Some(cgroup), addr, port);
        let mut c = Client::new(&lab.peer, addr, port, secs);
        c.flows = flows;
        let report = c.run();
        eprintln!("{case} {flows}: {:.2}", report.mbps());
        rows.push(Row {
            case: case.into(),
            flows,
            report,
            receiver_intervals: false,
        });
    }
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("seconds"))
        .unwrap_or(10.0);
    let mut rows = Vec::new();

    // hostNetwork egress: priority -> uplink HTB.
    {
        let mut lab = Lab::new("cmph");
        let mut progs = BandwidthPrograms::load(&lab.pins).unwrap();
        let h = Hierarchy::ensure(lab.uplink(), EGRESS_MAJOR, &node_rates()).unwrap();
        let class = h.set_pod(0x10, &cap_class()).unwrap();
        let cg = lab.cgroup("h");
        progs
            .attach(
                &cg,
                &PodBandwidth {
                    egress_class: class.to_u32(),
                    ..Default::default()
                },
            )
            .unwrap();
        let node = lab.node.clone();
        egress(
            &mut rows,
            "egress, hostNetwork pod: HTB on uplink, class from skb->priority",
            &node,
            &cg,
            NODE_ADDR,
            &lab,
            secs,
        );
        let _srv = iperf_server(&node, Some(&cg), NODE_ADDR, 5303);
        let mut c = Client::new(&lab.peer, NODE_ADDR, 5303, secs.min(5.0));
        c.reverse = true;
        c.udp_bps = Some(2 * CAP);
        rows.push(Row {
            case: "egress, hostNetwork pod, UDP offered at 2x the cap".into(),
            flows: 1,
            report: c.run(),
            receiver_intervals: true,
        });
    }

    // Pod with its own netns, (a): HTB on its own eth0, inside its netns.
    {
        let mut lab = Lab::new("cmpa");
        let mut progs = BandwidthPrograms::load(&lab.pins).unwrap();
        let pod = lab.pod_netns(1);
        let dev = Device::new(
            kraal_net::Netns::pinned(Lab::netns_path(&pod.netns)),
            "eth0",
        );
        let h = Hierarchy::ensure(dev, EGRESS_MAJOR, &node_rates()).unwrap();
        let class = h.set_pod(0x10, &cap_class()).unwrap();
        let cg = lab.cgroup("a");
        progs
            .attach(
                &cg,
                &PodBandwidth {
                    egress_class: class.to_u32(),
                    ..Default::default()
                },
            )
            .unwrap();
        egress(
            &mut rows,
            "egress, netns pod, (a) HTB on the pod's eth0 in its netns",
            &pod.netns,
            &cg,
            &pod.addr,
            &lab,
            secs,
        );
    }

    // Pod with its own netns, (b): the node's HTB on the uplink, class from the host interface.
    {
        let mut lab = Lab::new("cmpb");
        let mut progs = BandwidthPrograms::load(&lab.pins).unwrap();
        let pod = lab.pod_netns(1);
        let h = Hierarchy::ensure(lab.uplink(), EGRESS_MAJOR, &node_rates()).unwrap();
        h.attach_classifier(progs.egress_classifier()).unwrap();
        let class = h.set_pod(0x10, &cap_class()).unwrap();
        let cg = lab.cgroup("b");
        let id = progs
            .attach(
                &cg,
                &PodBandwidth {
                    egress_class: class.to_u32(),
                    ..Default::default()
                },
            )
            .unwrap();
        let ifindex = Device::new(lab.node_netns(), &pod.host_if)
            .ifindex()
            .unwrap();
        progs
            .set_interface(&PodInterface {
                ifindex,
                pod: id,
                egress_class: class.to_u32(),
                ingress_class: 0,
            })
            .unwrap();
        egress(
            &mut rows,
            "egress, netns pod, (b) uplink HTB, cls_bpf by host interface",
            &pod.netns,
            &cg,
            &pod.addr,
            &lab,
            secs,
        );

        // (b'): the same hierarchy, a u32 filter on the source address instead.
        progs.remove_interface(ifindex).unwrap();
        let out = std::process::Command::new("tc")
            .args([
                "-n", &lab.node, "filter", "add", "dev", "up0", "parent", "6b72:", "prio", "1",
            ])
            .args([
                "u32",
                "match",
                "ip",
                "src",
                &format!("{}/32", pod.addr),
                "flowid",
                "6b72:10",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _srv = iperf_server(&pod.netns, Some(&cg), &pod.addr, 5304);
        let mut c = Client::new(&lab.peer, &pod.addr, 5304, secs);
        c.reverse = true;
        rows.push(Row {
            case: "egress, netns pod, (b') uplink HTB, u32 by source address".into(),
            flows: 1,
            report: c.run(),
            receiver_intervals: true,
        });

        // With source NAT on the uplink (as for traffic leaving the cluster), pod-initiated:
        // POSTROUTING rewrites the address before the qdisc sees the packet.
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.node,
                "iptables",
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
            ])
            .args(["-o", "up0", "-j", "MASQUERADE"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pod_client = |case: &str, port: u16| {
            let _srv = iperf_server(&lab.peer, None, support::PEER_ADDR, port);
            let mut c = Client::new(&pod.netns, support::PEER_ADDR, port, secs);
            c.cgroup = Some(cg.clone());
            rows.push(Row {
                case: case.into(),
                flows: 1,
                report: c.run(),
                receiver_intervals: false,
            });
        };
        pod_client(
            "egress, netns pod, SNAT on uplink, (b') u32 by source address",
            5305,
        );
        progs
            .set_interface(&PodInterface {
                ifindex,
                pod: id,
                egress_class: class.to_u32(),
                ingress_class: 0,
            })
            .unwrap();
        pod_client(
            "egress, netns pod, SNAT on uplink, (b) cls_bpf by host interface",
            5306,
        );
    }

    // Ingress, hostNetwork pod: IFB + HTB (socket lookup) versus policing.
    {
        let mut lab = Lab::new("cmpi");
        let mut progs = BandwidthPrograms::load(&lab.pins).unwrap();
        let redirect = IngressRedirect::ensure(lab.uplink()).unwrap();
        let h = Hierarchy::ensure(redirect.ifb().clone(), INGRESS_MAJOR, &node_rates()).unwrap();
        h.attach_classifier(progs.ingress_classifier()).unwrap();
        let class = h.set_pod(0x10, &cap_class()).unwrap();
        let cg = lab.cgroup("i");
        let pod = progs
            .attach(
                &cg,
                &PodBandwidth {
                    ingress_class: class.to_u32(),
                    ..Default::default()
                },
            )
            .unwrap();
        let node = lab.node.clone();
        ingress(
            &mut rows,
            "ingress, hostNetwork pod: IFB + HTB, class from socket lookup",
            &node,
            &cg,
            NODE_ADDR,
            &lab,
            secs,
        );

        // A netns pod behind the same IFB: class from the route to its interface.
        let podnet = lab.pod_netns(1);
        let cgn = lab.cgroup("n");
        let class = h.set_pod(0x11, &cap_class()).unwrap();
        let idn = progs
            .attach(
                &cgn,
                &PodBandwidth {
                    ingress_class: class.to_u32(),
                    ..Default::default()
                },
            )
            .unwrap();
        let ifindex = Device::new(lab.node_netns(), &podnet.host_if)
            .ifindex()
            .unwrap();
        progs
            .set_interface(&PodInterface {
                ifindex,
                pod: idn,
                egress_class: 0,
                ingress_class: class.to_u32(),
            })
            .unwrap();
        ingress(
            &mut rows,
            "ingress, netns pod: IFB + HTB, class from route lookup",
            &podnet.netns,
            &cgn,
            &podnet.addr,
            &lab,
            secs,
        );

        redirect.teardown().unwrap();
        for (label, burst) in [
            ("64 KB", 64 * 1024),
            ("100 ms", CAP / 8 / 10),
            ("300 ms", CAP / 8 * 3 / 10),
        ] {
            progs
                .update(
                    pod,
                    &PodBandwidth {
                        police_ingress: Some(Police {
                            rate_bps: CAP,
                            burst_bytes: burst,
                        }),
                        ..Default::default()
                    },
                )
                .unwrap();
            ingress(
                &mut rows,
                &format!(
                    "ingress, hostNetwork pod: eBPF drop policing, bucket {label} ({burst} B)"
                ),
                &node,
                &cg,
                NODE_ADDR,
                &lab,
                secs,
            );
        }
    }
    print(&rows);
}
