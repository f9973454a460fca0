//! What kraalctl prints: short human-readable text, or (`-o json`) one JSON object that
//! renders the response faithfully.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use kraal_api::kraal::v1::{
    AppliedSetting, BandwidthClass, FreezePodResponse, PodPolicyStatus, PodPorts, PodSummary,
    PortCounters, PortSpan, ThawPodResponse,
};
use serde::Serialize;

/// How many characters of a pod id the human output shows (as crictl and docker do).
const SHORT_ID: usize = 12;

// ---- human ----------------------------------------------------------------------------

/// `froze pod ns/name: 2 containers (a, b)` or `pod ns/name was already frozen`.
pub fn freeze_human(response: &FreezePodResponse) -> String {
    let pod = pod_label(response.pod.as_ref());
    if response.already_frozen {
        format!("pod {pod} was already frozen\n")
    } else {
        format!("froze pod {pod}: {}\n", containers(&response.containers))
    }
}

/// `thawed pod ns/name: 2 containers (a, b)` or `pod ns/name was not frozen`.
pub fn thaw_human(response: &ThawPodResponse) -> String {
    let pod = pod_label(response.pod.as_ref());
    if response.was_frozen {
        format!("thawed pod {pod}: {}\n", containers(&response.containers))
    } else {
        format!("pod {pod} was not frozen\n")
    }
}

/// The result of `pod update`: the policy now in effect, or the one that would be with
/// `--dry-run`.
pub fn update_human(status: &PodPolicyStatus, dry_run: bool) -> String {
    let policy = policy_human(status);
    if dry_run {
        format!("dry run: nothing changed\n{policy}")
    } else {
        policy
    }
}

/// A header line naming the pod, the annotations in effect (sorted), a table of the cgroup
/// files kraal wrote, then the warnings if any.
pub fn policy_human(status: &PodPolicyStatus) -> String {
    let mut out = String::new();
    let frozen = if status.frozen { "yes" } else { "no" };
    match &status.pod {
        Some(pod) => {
            let mut facts = Vec::new();
            if !pod.id.is_empty() {
                facts.push(format!("id {}", short_id(&pod.id)));
            }
            if !pod.state.is_empty() {
                facts.push(clean(&pod.state));
            }
            facts.push(format!("frozen: {frozen}"));
            let _ = writeln!(out, "pod {} ({})", pod_label(Some(pod)), facts.join(", "));
        }
        None => {
            let _ = writeln!(out, "pod (unknown) (frozen: {frozen})");
        }
    }

    if status.annotations.is_empty() {
        out.push_str("annotations: none\n");
    } else {
        out.push_str("annotations:\n");
        for (key, value) in sorted(&status.annotations) {
            let _ = writeln!(out, "  {}={}", clean(key), clean(value));
        }
    }

    if status.applied.is_empty() {
        out.push_str("applied: nothing\n");
    } else {
        out.push_str("applied:\n");
        out.push_str(&applied_table(&status.applied));
    }

    if let Some(ports) = &status.ports {
        out.push_str(&ports_human(ports));
    }
    if !status.bandwidth.is_empty() {
        out.push_str(&bandwidth_human(&status.bandwidth));
    }

    if !status.warnings.is_empty() {
        out.push_str("warnings:\n");
        for warning in &status.warnings {
            let _ = writeln!(out, "  {}", clean(warning));
        }
    }
    out
}

/// The pod's port lists, the netns sysctl and the kernel programs' counters.
fn ports_human(ports: &PodPorts) -> String {
    let mut out = String::from("ports:\n");
    let list = |spans: &[PortSpan]| {
        if spans.is_empty() {
            "unrestricted".to_owned()
        } else {
            spans.iter().map(span_text).collect::<Vec<_>>().join(",")
        }
    };
    let _ = writeln!(out, "  bind: {}", list(&ports.bind));
    let _ = writeln!(out, "  connect: {}", list(&ports.connect));
    if let Some(range) = &ports.netns_range {
        let _ = writeln!(out, "  netns ip_local_port_range: {}", span_text(range));
    }
    let enforced = if ports.enforced { "yes" } else { "no" };
    let _ = writeln!(out, "  enforced by eBPF: {enforced}");
    if let Some(c) = &ports.counters {
        let _ = writeln!(
            out,
            "  counters: binds allowed {}, denied {}, ephemeral ports {}, failures {}, exhausted {}, unsteered UDP sends {}",
            c.binds_allowed,
            c.binds_denied,
            c.ephemeral_ports,
            c.failures,
            c.exhausted,
            c.unsteered_udp
        );
    }
    out
}

/// The pod's bandwidth classes and what went through them.
fn bandwidth_human(classes: &[BandwidthClass]) -> String {
    let mut out = String::from("bandwidth:\n");
    for c in classes {
        let who = if c.prio >= 7 { "offline" } else { "online" };
        let _ = writeln!(
            out,
            "  {}: class {}, guaranteed {}, limit {}, burst {} B, priority {} ({who})",
            clean(&c.direction),
            clean(&c.class_id),
            rate_text(c.rate_bps),
            rate_text(c.ceil_bps),
            c.burst_bytes,
            c.prio
        );
        let _ = writeln!(
            out,
            "    seen {} B in {} packets; through the class {} B in {} packets; held back {} times, dropped {}, queued now {} B",
            c.bytes,
            c.packets,
            c.shaped_bytes,
            c.shaped_packets,
            c.held_back,
            c.dropped,
            c.backlog_bytes
        );
    }
    out
}

/// `50 Mbit/s`, `1.5 Gbit/s`, `8 kbit/s`: the largest unit that keeps the number above 1.
fn rate_text(bps: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1_000_000_000_000, "Tbit/s"),
        (1_000_000_000, "Gbit/s"),
        (1_000_000, "Mbit/s"),
        (1_000, "kbit/s"),
    ];
    for (size, unit) in UNITS {
        if bps >= size {
            let value = bps as f64 / size as f64;
            return if bps.is_multiple_of(size) {
                format!("{} {unit}", bps / size)
            } else {
                format!("{value:.2} {unit}")
            };
        }
    }
    format!("{bps} bit/s")
}

/// `20000-20099`, or `8080` for a single port.
fn span_text(span: &PortSpan) -> String {
    if span.first == span.last {
        span.first.to_string()
    } else {
        format!("{}-{}", span.first, span.last)
    }
}

/// The applied settings as an aligned table, indented by two spaces.
fn applied_table(applied: &[AppliedSetting]) -> String {
    let header = ["SCOPE", "FILE", "VALUE", "SOURCE"].map(str::to_owned);
    let rows: Vec<[String; 4]> = std::iter::once(header)
        .chain(applied.iter().map(|a| {
            [
                clean(&a.scope),
                clean(&a.file),
                clean(&a.value),
                clean(&a.source),
            ]
        }))
        .collect();
    let mut widths = [0usize; 4];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::from("  ");
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `namespace/name`, else the name, else the short id.
fn pod_label(pod: Option<&PodSummary>) -> String {
    let Some(pod) = pod else {
        return "(unknown)".to_owned();
    };
    match (pod.namespace.is_empty(), pod.name.is_empty()) {
        (false, false) => clean(&format!("{}/{}", pod.namespace, pod.name)),
        (true, false) => clean(&pod.name),
        _ if !pod.id.is_empty() => short_id(&pod.id),
        _ => "(unknown)".to_owned(),
    }
}

/// `2 containers (a, b)`, `1 container (a)` or `no containers`.
fn containers(names: &[String]) -> String {
    let list = names
        .iter()
        .map(|n| clean(n))
        .collect::<Vec<_>>()
        .join(", ");
    match names.len() {
        0 => "no containers".to_owned(),
        1 => format!("1 container ({list})"),
        n => format!("{n} containers ({list})"),
    }
}

pub(crate) fn short_id(id: &str) -> String {
    let id = clean(id);
    match id.char_indices().nth(SHORT_ID) {
        Some((cut, _)) => format!("{}…", &id[..cut]),
        None => id,
    }
}

/// A server-provided string made safe for one line of a terminal: control characters
/// (newlines, escape sequences) are shown escaped.
pub(crate) fn clean(text: &str) -> String {
    if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect()
    } else {
        text.to_owned()
    }
}

fn sorted<'a>(
    map: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> BTreeMap<&'a str, &'a str> {
    map.into_iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

// ---- json -----------------------------------------------------------------------------

#[derive(Serialize)]
struct PodView<'a> {
    id: &'a str,
    name: &'a str,
    namespace: &'a str,
    uid: &'a str,
    cgroup_parent: &'a str,
    state: &'a str,
}

impl<'a> PodView<'a> {
    fn new(pod: Option<&'a PodSummary>) -> Option<Self> {
        pod.map(|pod| PodView {
            id: &pod.id,
            name: &pod.name,
            namespace: &pod.namespace,
            uid: &pod.uid,
            cgroup_parent: &pod.cgroup_parent,
            state: &pod.state,
        })
    }
}

#[derive(Serialize)]
struct AppliedView<'a> {
    scope: &'a str,
    file: &'a str,
    value: &'a str,
    source: &'a str,
}

#[derive(Serialize)]
struct PolicyView<'a> {
    pod: Option<PodView<'a>>,
    annotations: BTreeMap<&'a str, &'a str>,
    /// `policy_json` parsed; `null` when empty, the raw string when it is not JSON.
    policy: serde_json::Value,
    applied: Vec<AppliedView<'a>>,
    frozen: bool,
    warnings: &'a [String],
    ports: Option<PortsView>,
    bandwidth: Vec<BandwidthView<'a>>,
}

#[derive(Serialize)]
struct BandwidthView<'a> {
    direction: &'a str,
    class_id: &'a str,
    rate_bps: u64,
    ceil_bps: u64,
    burst_bytes: u64,
    prio: u32,
    bytes: u64,
    packets: u64,
    shaped_bytes: u64,
    shaped_packets: u64,
    held_back: u64,
    dropped: u64,
    backlog_bytes: u64,
}

impl<'a> BandwidthView<'a> {
    fn new(c: &'a BandwidthClass) -> Self {
        BandwidthView {
            direction: &c.direction,
            class_id: &c.class_id,
            rate_bps: c.rate_bps,
            ceil_bps: c.ceil_bps,
            burst_bytes: c.burst_bytes,
            prio: c.prio,
            bytes: c.bytes,
            packets: c.packets,
            shaped_bytes: c.shaped_bytes,
            shaped_packets: c.shaped_packets,
            held_back: c.held_back,
            dropped: c.dropped,
            backlog_bytes: c.backlog_bytes,
        }
    }
}

#[derive(Serialize)]
struct PortsView {
    /// Inclusive `[first, last]` pairs.
    bind: Vec<[u32; 2]>,
    connect: Vec<[u32; 2]>,
    netns_range: Option<[u32; 2]>,
    enforced: bool,
    counters: Option<CountersView>,
}

#[derive(Serialize)]
struct CountersView {
    binds_allowed: u64,
    binds_denied: u64,
    ephemeral_ports: u64,
    failures: u64,
    exhausted: u64,
    unsteered_udp: u64,
}

impl PortsView {
    fn new(ports: &PodPorts) -> Self {
        let pairs = |spans: &[PortSpan]| spans.iter().map(|s| [s.first, s.last]).collect();
        PortsView {
            bind: pairs(&ports.bind),
            connect: pairs(&ports.connect),
            netns_range: ports.netns_range.as_ref().map(|s| [s.first, s.last]),
            enforced: ports.enforced,
            counters: ports.counters.as_ref().map(CountersView::new),
        }
    }
}

impl CountersView {
    fn new(c: &PortCounters) -> Self {
        CountersView {
            binds_allowed: c.binds_allowed,
            binds_denied: c.binds_denied,
            ephemeral_ports: c.ephemeral_ports,
            failures: c.failures,
            exhausted: c.exhausted,
            unsteered_udp: c.unsteered_udp,
        }
    }
}

#[derive(Serialize)]
struct FreezeView<'a> {
    pod: Option<PodView<'a>>,
    containers: &'a [String],
    already_frozen: bool,
}

#[derive(Serialize)]
struct ThawView<'a> {
    pod: Option<PodView<'a>>,
    containers: &'a [String],
    was_frozen: bool,
}

pub fn policy_json(status: &PodPolicyStatus) -> serde_json::Result<String> {
    let policy = if status.policy_json.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&status.policy_json)
            .unwrap_or_else(|_| serde_json::Value::String(status.policy_json.clone()))
    };
    to_json(&PolicyView {
        pod: PodView::new(status.pod.as_ref()),
        annotations: sorted(&status.annotations),
        policy,
        applied: status
            .applied
            .iter()
            .map(|a| AppliedView {
                scope: &a.scope,
                file: &a.file,
                value: &a.value,
                source: &a.source,
            })
            .collect(),
        frozen: status.frozen,
        warnings: &status.warnings,
        ports: status.ports.as_ref().map(PortsView::new),
        bandwidth: status.bandwidth.iter().map(BandwidthView::new).collect(),
    })
}

pub fn freeze_json(response: &FreezePodResponse) -> serde_json::Result<String> {
    to_json(&FreezeView {
        pod: PodView::new(response.pod.as_ref()),
        containers: &response.containers,
        already_frozen: response.already_frozen,
    })
}

pub fn thaw_json(response: &ThawPodResponse) -> serde_json::Result<String> {
    to_json(&ThawView {
        pod: PodView::new(response.pod.as_ref()),
        containers: &response.containers,
        was_frozen: response.was_frozen,
    })
}

fn to_json(value: &impl Serialize) -> serde_json::Result<String> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> PodSummary {
        PodSummary {
            id: "1234abcd5678ef90aabbccdd".into(),
            name: "web".into(),
            namespace: "kraal-e2e".into(),
            uid: "u-1".into(),
            cgroup_parent: "/kubepods/burstable/podu-1".into(),
            state: "ready".into(),
        }
    }

    fn status() -> PodPolicyStatus {
        PodPolicyStatus {
            pod: Some(pod()),
            annotations: [
                ("kubernetes.io/egress-bandwidth", "100M"),
                ("kraal.dev/cpu-burst", "500m"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            policy_json: r#"{"cpu_burst":{"millis":500}}"#.into(),
            applied: vec![
                AppliedSetting {
                    scope: "pod".into(),
                    file: "/sys/fs/cgroup/kubepods/burstable/podu-1/cpu.max.burst".into(),
                    value: "50000".into(),
                    source: "kraal.dev/cpu-burst".into(),
                },
                AppliedSetting {
                    scope: "app".into(),
                    file: "/sys/fs/cgroup/kubepods/burstable/podu-1/c1/cpu.max.burst".into(),
                    value: "50000".into(),
                    source: "kraal.dev/cpu-burst".into(),
                },
            ],
            frozen: false,
            warnings: vec!["oom_score_adj -998 refused by the host".into()],
            ports: Some(PodPorts {
                bind: vec![
                    PortSpan {
                        first: 8080,
                        last: 8080,
                    },
                    PortSpan {
                        first: 20000,
                        last: 20099,
                    },
                ],
                connect: vec![],
                netns_range: None,
                enforced: true,
                counters: Some(PortCounters {
                    binds_allowed: 3,
                    binds_denied: 1,
                    ephemeral_ports: 200,
                    failures: 0,
                    exhausted: 2,
                    unsteered_udp: 5,
                }),
            }),
            bandwidth: vec![BandwidthClass {
                direction: "egress".into(),
                class_id: "6b72:10".into(),
                rate_bps: 8_000,
                ceil_bps: 100_000_000,
                burst_bytes: 125_000,
                prio: 1,
                bytes: 3000,
                packets: 3,
                shaped_bytes: 3042,
                shaped_packets: 3,
                held_back: 1,
                dropped: 0,
                backlog_bytes: 0,
            }],
        }
    }

    #[test]
    fn policy_as_text() {
        assert_eq!(
            policy_human(&status()),
            "\
pod kraal-e2e/web (id 1234abcd5678…, ready, frozen: no)
annotations:
  kraal.dev/cpu-burst=500m
  kubernetes.io/egress-bandwidth=100M
applied:
  SCOPE  FILE                                                       VALUE  SOURCE
  pod    /sys/fs/cgroup/kubepods/burstable/podu-1/cpu.max.burst     50000  kraal.dev/cpu-burst
  app    /sys/fs/cgroup/kubepods/burstable/podu-1/c1/cpu.max.burst  50000  kraal.dev/cpu-burst
ports:
  bind: 8080,20000-20099
  connect: unrestricted
  enforced by eBPF: yes
  counters: binds allowed 3, denied 1, ephemeral ports 200, failures 0, exhausted 2, unsteered UDP sends 5
bandwidth:
  egress: class 6b72:10, guaranteed 8 kbit/s, limit 100 Mbit/s, burst 125000 B, priority 1 (online)
    seen 3000 B in 3 packets; through the class 3042 B in 3 packets; held back 1 times, dropped 0, queued now 0 B
warnings:
  oom_score_adj -998 refused by the host
"
        );
    }

    #[test]
    fn empty_policy_as_text() {
        let status = PodPolicyStatus {
            pod: Some(PodSummary {
                id: "abc".into(),
                namespace: String::new(),
                name: String::new(),
                state: "notready".into(),
                ..pod()
            }),
            frozen: true,
            ..PodPolicyStatus::default()
        };
        assert_eq!(
            policy_human(&status),
            "pod abc (id abc, notready, frozen: yes)\nannotations: none\napplied: nothing\n"
        );
        assert_eq!(
            update_human(&status, true),
            "dry run: nothing changed\n\
             pod abc (id abc, notready, frozen: yes)\nannotations: none\napplied: nothing\n"
        );
        assert_eq!(update_human(&status, false), policy_human(&status));
    }

    #[test]
    fn control_characters_are_escaped() {
        let mut status = status();
        status.warnings = vec!["line one\nline two\u{1b}[31m".into()];
        assert!(policy_human(&status).ends_with("warnings:\n  line one\\nline two\\u{1b}[31m\n"));
    }

    #[test]
    fn freeze_and_thaw_as_text() {
        let froze = FreezePodResponse {
            pod: Some(pod()),
            containers: vec!["a".into(), "b".into()],
            already_frozen: false,
        };
        assert_eq!(
            freeze_human(&froze),
            "froze pod kraal-e2e/web: 2 containers (a, b)\n"
        );
        let already = FreezePodResponse {
            already_frozen: true,
            ..froze
        };
        assert_eq!(
            freeze_human(&already),
            "pod kraal-e2e/web was already frozen\n"
        );

        let thawed = ThawPodResponse {
            pod: Some(pod()),
            containers: vec!["a".into()],
            was_frozen: true,
        };
        assert_eq!(
            thaw_human(&thawed),
            "thawed pod kraal-e2e/web: 1 container (a)\n"
        );
        let not_frozen = ThawPodResponse {
            was_frozen: false,
            containers: vec![],
            ..thawed
        };
        assert_eq!(
            thaw_human(&not_frozen),
            "pod kraal-e2e/web was not frozen\n"
        );
        let empty = FreezePodResponse {
            pod: None,
            ..FreezePodResponse::default()
        };
        assert_eq!(freeze_human(&empty), "froze pod (unknown): no containers\n");
    }

    #[test]
    fn policy_as_json() {
        let text = policy_json(&status()).unwrap();
        assert!(text.ends_with("}\n"));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            json!({
                "pod": {
                    "id": "1234abcd5678ef90aabbccdd",
                    "name": "web",
                    "namespace": "kraal-e2e",
                    "uid": "u-1",
                    "cgroup_parent": "/kubepods/burstable/podu-1",
                    "state": "ready",
                },
                "annotations": {
                    "kraal.dev/cpu-burst": "500m",
                    "kubernetes.io/egress-bandwidth": "100M",
                },
                "policy": {"cpu_burst": {"millis": 500}},
                "applied": [
                    {
                        "scope": "pod",
                        "file": "/sys/fs/cgroup/kubepods/burstable/podu-1/cpu.max.burst",
                        "value": "50000",
                        "source": "kraal.dev/cpu-burst",
                    },
                    {
                        "scope": "app",
                        "file": "/sys/fs/cgroup/kubepods/burstable/podu-1/c1/cpu.max.burst",
                        "value": "50000",
                        "source": "kraal.dev/cpu-burst",
                    },
                ],
                "frozen": false,
                "warnings": ["oom_score_adj -998 refused by the host"],
                "ports": {
                    "bind": [[8080, 8080], [20000, 20099]],
                    "connect": [],
                    "netns_range": null,
                    "enforced": true,
                    "counters": {
                        "binds_allowed": 3,
                        "binds_denied": 1,
                        "ephemeral_ports": 200,
                        "failures": 0,
                        "exhausted": 2,
                        "unsteered_udp": 5,
                    },
                },
                "bandwidth": [{
                    "direction": "egress",
                    "class_id": "6b72:10",
                    "rate_bps": 8000,
                    "ceil_bps": 100_000_000,
                    "burst_bytes": 125_000,
                    "prio": 1,
                    "bytes": 3000,
                    "packets": 3,
                    "shaped_bytes": 3042,
                    "shaped_packets": 3,
                    "held_back": 1,
                    "dropped": 0,
                    "backlog_bytes": 0,
                }],
            })
        );
    }

    #[test]
    fn policy_json_that_is_empty_or_not_json() {
        let mut status = PodPolicyStatus::default();
        let value: serde_json::Value =
            serde_json::from_str(&policy_json(&status).unwrap()).unwrap();
        assert_eq!(
            value,
            json!({
                "pod": null,
                "annotations": {},
                "policy": null,
                "applied": [],
                "frozen": false,
                "warnings": [],
                "ports": null,
                "bandwidth": [],
            })
        );
        status.policy_json = "not json".into();
        let value: serde_json::Value =
            serde_json::from_str(&policy_json(&status).unwrap()).unwrap();
        assert_eq!(value["policy"], json!("not json"));
    }

    #[test]
    fn freeze_and_thaw_as_json() {
        let froze = FreezePodResponse {
            pod: Some(pod()),
            containers: vec!["a".into(), "b".into()],
            already_frozen: true,
        };
        let value: serde_json::Value = serde_json::from_str(&freeze_json(&froze).unwrap()).unwrap();
        assert_eq!(value["pod"]["id"], json!("1234abcd5678ef90aabbccdd"));
        assert_eq!(value["containers"], json!(["a", "b"]));
        assert_eq!(value["already_frozen"], json!(true));

        let thawed = ThawPodResponse {
            pod: None,
            containers: vec![],
            was_frozen: false,
        };
        let value: serde_json::Value = serde_json::from_str(&thaw_json(&thawed).unwrap()).unwrap();
        assert_eq!(
            value,
            json!({"pod": null, "containers": [], "was_frozen": false})
        );
    }
}
