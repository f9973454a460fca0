//! The public API against whole annotation maps: valid values for every key, and a table of
//! invalid ones whose messages must name the key, the value and the expected form.

use std::collections::{BTreeMap, HashMap};

use kraal_policy::{
    ContainerLimits, PodPolicy, PolicyError, PolicyOptions, PortList, PortSpec, Problem, QosClass,
    Rates,
};

fn parse(pairs: &[(&str, &str)]) -> Result<PodPolicy, PolicyError> {
    PodPolicy::from_annotations(pairs.iter().copied(), &PolicyOptions::default())
}

fn ok(pairs: &[(&str, &str)]) -> PodPolicy {
    parse(pairs).unwrap_or_else(|error| panic!("{pairs:?} should parse: {error}"))
}

fn list(text: &str) -> Option<PortSpec> {
    Some(PortSpec::List(PortList::parse(text).unwrap()))
}

fn rates(min_bps: u64, max_bps: u64, burst_bytes: Option<u64>) -> Option<Rates> {
    Some(Rates {
        min_bps,
        max_bps,
        burst_bytes,
    })
}

#[test]
fn no_annotations_is_the_default_policy() {
    let policy = ok(&[]);
    assert_eq!(policy, PodPolicy::default());
    assert_eq!(policy.qos_class, QosClass::Online);
    let web = policy.for_container("web");
    assert_eq!(web.cpu_burst_millicores(), None);
    assert_eq!(web.cpu_period_us(), None);
    assert_eq!(web.memory_high_bytes(), None);
    assert!(web.check_limits(&ContainerLimits::default()).is_ok());
}

#[test]
fn unrelated_annotations_are_ignored() {
    let policy = ok(&[
        ("app.kubernetes.io/name", "web"),
        ("kubernetes.io/config.seen", "2024-01-01"),
        ("kraal.devil/cpu-burst", "nonsense"),
        ("kraal.dev", "x"),
        ("cpu-burst", "x"),
    ]);
    assert_eq!(policy, PodPolicy::default());
}

#[test]
fn port_keys() {
    let policy = ok(&[
        ("kraal.dev/bind-ports", "20000-20999,8080"),
        ("kraal.dev/connect-ports", "auto:1000"),
    ]);
    assert_eq!(policy.bind_ports, list("8080,20000-20999"));
    assert_eq!(policy.connect_ports, Some(PortSpec::Auto { count: 1000 }));

    let policy = ok(&[
        ("kraal.dev/bind-ports", "auto:1"),
        ("kraal.dev/connect-ports", "1-65535"),
    ]);
    assert_eq!(policy.bind_ports, Some(PortSpec::Auto { count: 1 }));
    assert_eq!(
        policy.connect_ports.as_ref().map(PortSpec::len),
        Some(65535)
    );

    // bind and connect lists may share ports: they are two views of one pod's range.
    let policy = ok(&[
        ("kraal.dev/bind-ports", "30000-30099"),
        ("kraal.dev/connect-ports", "30000-30099"),
    ]);
    assert_eq!(policy.bind_ports, policy.connect_ports);
}

#[test]
fn kubernetes_bandwidth_keys() {
    let policy = ok(&[
        ("kubernetes.io/egress-bandwidth", "100M"),
        ("kubernetes.io/ingress-bandwidth", "500k"),
    ]);
    assert_eq!(policy.bandwidth.egress, rates(0, 100_000_000, None));
    assert_eq!(policy.bandwidth.ingress, rates(0, 500_000, None));
    assert_eq!(policy.egress().map(|r| r.max_bps), Some(100_000_000));

    let policy = ok(&[("kubernetes.io/egress-bandwidth", "1G")]);
    assert_eq!(policy.bandwidth.egress, rates(0, 1_000_000_000, None));
    assert_eq!(policy.bandwidth.ingress, None);
}

#[test]
fn kraal_bandwidth_keys() {
    let policy = ok(&[
        ("kraal.dev/egress-bandwidth", "min=50M,max=200M,burst=64Ki"),
        ("kraal.dev/ingress-bandwidth", "max=1G"),
    ]);
    assert_eq!(
        policy.bandwidth.egress,
        rates(50_000_000, 200_000_000, Some(65_536))
    );
    assert_eq!(policy.bandwidth.ingress, rates(0, 1_000_000_000, None));
    assert!(policy.egress().is_some_and(Rates::has_guarantee));

    // One direction from each source is not a conflict.
    let policy = ok(&[
        ("kubernetes.io/egress-bandwidth", "10M"),
        ("kraal.dev/ingress-bandwidth", "burst=1Mi, min=1M, max=2M"),
    ]);
    assert_eq!(policy.bandwidth.egress, rates(0, 10_000_000, None));
    assert_eq!(
        policy.bandwidth.ingress,
        rates(1_000_000, 2_000_000, Some(1 << 20))
    );
}

#[test]
fn qos_class_key() {
    assert_eq!(
        ok(&[("kraal.dev/qos-class", "online")]).qos_class,
        QosClass::Online
    );
    let offline = ok(&[
        ("kraal.dev/qos-class", "offline"),
        // A ceiling without a guarantee is fine for an offline pod.
        ("kraal.dev/egress-bandwidth", "min=0,max=10M"),
        ("kubernetes.io/ingress-bandwidth", "10M"),
    ]);
    assert_eq!(offline.qos_class, QosClass::Offline);
    assert_eq!(offline.for_container("x").qos_class, QosClass::Offline);
}

#[test]
fn cpu_and_memory_keys_with_container_overrides() {
    let policy = ok(&[
        ("kraal.dev/cpu-burst", "500m"),
        ("kraal.dev/cpu-period", "50ms"),
        ("kraal.dev/memory-high", "512Mi"),
        ("kraal.dev/cpu-burst.web", "1.5"),
        ("kraal.dev/memory-high.worker", "1G"),
        ("kraal.dev/cpu-period.worker", "250000us"),
        ("kraal.dev/cpu-burst.batch-2", "0"),
    ]);
    let defaults = policy.for_container("sidecar");
    assert_eq!(defaults.cpu_burst_millicores(), Some(500));
    assert_eq!(defaults.cpu_period_us(), Some(50_000));
    assert_eq!(defaults.memory_high_bytes(), Some(512 << 20));

    let web = policy.for_container("web");
    assert_eq!(web.container, "web");
    assert_eq!(web.cpu_burst_millicores(), Some(1500));
    assert_eq!(web.cpu_period_us(), Some(50_000));
    assert_eq!(web.memory_high_bytes(), Some(512 << 20));
    let burst = web.settings.cpu_burst_millicores.as_ref().unwrap();
    assert_eq!(burst.key, "kraal.dev/cpu-burst.web");
    assert_eq!(burst.raw, "1.5");

    let worker = policy.for_container("worker");
    assert_eq!(worker.cpu_burst_millicores(), Some(500));
    assert_eq!(worker.cpu_period_us(), Some(250_000));
    assert_eq!(worker.memory_high_bytes(), Some(1_000_000_000));

    // A zero burst switches a pod-wide burst off for one container.
    let batch = policy.for_container("batch-2");
    assert_eq!(batch.cpu_burst_millicores(), Some(0));
    assert!(batch.check_cpu_limit(None, None).is_ok());

    let mut names: Vec<&str> = policy.overridden_containers().collect();
    names.sort_unstable();
    assert_eq!(names, ["batch-2", "web", "worker"]);
}

#[test]
fn cpu_and_memory_value_forms() {
    let table: &[(&str, &str, Option<u64>)] = &[
        ("kraal.dev/cpu-burst", "1", Some(1000)),
        ("kraal.dev/cpu-burst", "250m", Some(250)),
        ("kraal.dev/cpu-burst", "0.1", Some(100)),
        ("kraal.dev/cpu-burst", "2e0", Some(2000)),
        ("kraal.dev/cpu-period", "1ms", Some(1000)),
        ("kraal.dev/cpu-period", "1s", Some(1_000_000)),
        ("kraal.dev/cpu-period", "100ms", Some(100_000)),
        ("kraal.dev/cpu-period", "0.5s", Some(500_000)),
        ("kraal.dev/cpu-period", "1500µs", Some(1500)),
        ("kraal.dev/cpu-period", "1000000ns", Some(1000)),
        ("kraal.dev/memory-high", "100M", Some(100_000_000)),
        ("kraal.dev/memory-high", "64Ki", Some(65_536)),
        ("kraal.dev/memory-high", "1.5Gi", Some(1_610_612_736)),
        ("kraal.dev/memory-high", "1", Some(1)),
    ];
    for (key, value, want) in table {
        let container = ok(&[(key, value)]).for_container("c");
        let got = match *key {
            "kraal.dev/cpu-burst" => container.cpu_burst_millicores(),
            "kraal.dev/cpu-period" => container.cpu_period_us(),
            _ => container.memory_high_bytes(),
        };
        assert_eq!(got, *want, "{key} = {value}");
    }
}

#[test]
fn container_checks_name_the_annotation() {
    let policy = ok(&[
        ("kraal.dev/cpu-burst.web", "500m"),
        ("kraal.dev/memory-high", "1Gi"),
    ]);
    let web = policy.for_container("web");
    let error = web.check_cpu_limit(None, Some(100_000)).unwrap_err();
    assert_eq!(error.key(), "kraal.dev/cpu-burst.web");
    assert_eq!(error.value(), "500m");
    assert!(
        error
            .to_string()
            .contains(r#"cpu-burst set but container "web" has no CPU limit"#),
        "{error}"
    );
    assert!(matches!(error.problem(), Problem::NoCpuLimit { .. }));
    assert!(web.check_cpu_limit(Some(50_000), Some(100_000)).is_ok());

    let limits = ContainerLimits {
        cpu_quota_us: Some(100_000),
        cpu_period_us: Some(100_000),
        memory_limit_bytes: Some(1 << 30),
    };
    let error = web.check_limits(&limits).unwrap_err();
    assert_eq!(error.key(), "kraal.dev/memory-high");
    assert!(error.to_string().contains("is not below"), "{error}");
    let roomy = ContainerLimits {
        memory_limit_bytes: Some(2 << 30),
        ..limits
    };
    assert!(web.check_limits(&roomy).is_ok());
}

#[test]
fn spec_example_message_is_exact() {
    let error = parse(&[("kraal.dev/bind-ports", "30-20")]).unwrap_err();
    assert_eq!(
        error.to_string(),
        r#"annotation "kraal.dev/bind-ports" = "30-20": range start 30 is above its end 20; expected a port list like "20000-20999,8080" or "auto:<count>""#
    );
}

/// `(annotations, key at fault, value at fault, problem fragment, expected-form fragment)`.
type Case = (
    &'static [(&'static str, &'static str)],
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

const PORTS: &str = r#"a port list like "20000-20999,8080" or "auto:<count>""#;
const CAP: &str = r#"a bit rate above 0 like "100M""#;
const KRAAL_BW: &str = r#""min=<bits/s>,max=<bits/s>[,burst=<bytes>]""#;
const QOS: &str = r#""online" or "offline""#;
const CPU: &str = r#"a CPU quantity of at least 0 like "500m""#;
const PERIOD: &str = "a duration from 1ms to 1s in whole microseconds";
const MEMORY: &str = r#"a memory size above 0 in bytes like "512Mi""#;
const UNKNOWN: &str = "one of kraal.dev/bind-ports, kraal.dev/connect-ports";
const DNS: &str = "is a DNS-1123 label";

#[rustfmt::skip]
const INVALID: &[Case] = &[
    // Ports.
    (&[("kraal.dev/bind-ports", "70000")], "kraal.dev/bind-ports", "70000", "port 70000 is outside 1..=65535", PORTS),
    (&[("kraal.dev/bind-ports", "30-20")], "kraal.dev/bind-ports", "30-20", "range start 30 is above its end 20", PORTS),
    (&[("kraal.dev/bind-ports", "8000-8100,8080")], "kraal.dev/bind-ports", "8000-8100,8080", "8000-8100 overlaps 8080", PORTS),
    (&[("kraal.dev/bind-ports", "80,80")], "kraal.dev/bind-ports", "80,80", "80 overlaps 80", PORTS),
    (&[("kraal.dev/bind-ports", "")], "kraal.dev/bind-ports", "", "the list is empty", PORTS),
    (&[("kraal.dev/bind-ports", "auto:0")], "kraal.dev/bind-ports", "auto:0", "auto:0 is not a block size", PORTS),
    (&[("kraal.dev/bind-ports", "auto:x")], "kraal.dev/bind-ports", "auto:x", "auto:x is not a block size", PORTS),
    (&[("kraal.dev/connect-ports", "auto:70000")], "kraal.dev/connect-ports", "auto:70000", "size must be a whole number in 1..=65535", PORTS),
    (&[("kraal.dev/connect-ports", "0")], "kraal.dev/connect-ports", "0", "port 0 is outside 1..=65535", PORTS),
    (&[("kraal.dev/connect-ports", "80,,81")], "kraal.dev/connect-ports", "80,,81", "entry 2 is empty", PORTS),
    (&[("kraal.dev/connect-ports", "http")], "kraal.dev/connect-ports", "http", r#"entry "http" is not a port or a port range"#, PORTS),
    (&[("kraal.dev/connect-ports", "1-65536")], "kraal.dev/connect-ports", "1-65536", "port 65536 is outside", PORTS),
    // kubernetes.io bandwidth.
    (&[("kubernetes.io/egress-bandwidth", "-5M")], "kubernetes.io/egress-bandwidth", "-5M", "negative values are not allowed", CAP),
    (&[("kubernetes.io/egress-bandwidth", "10Q")], "kubernetes.io/egress-bandwidth", "10Q", r#"unknown suffix "Q""#, CAP),
    (&[("kubernetes.io/egress-bandwidth", "0")], "kubernetes.io/egress-bandwidth", "0", "must be greater than 0", CAP),
    (&[("kubernetes.io/ingress-bandwidth", "")], "kubernetes.io/ingress-bandwidth", "", "the value is empty", CAP),
    (&[("kubernetes.io/ingress-bandwidth", "99999999999999999999E")], "kubernetes.io/ingress-bandwidth", "99999999999999999999E", "too large", CAP),
    (&[("kubernetes.io/ingress-bandwidth", "100 M")], "kubernetes.io/ingress-bandwidth", "100 M", r#"unknown suffix " M""#, CAP),
    // kraal.dev bandwidth.
    (&[("kraal.dev/egress-bandwidth", "100M")], "kraal.dev/egress-bandwidth", "100M", r#"entry "100M" is not <name>=<quantity>"#, "for a plain cap use kubernetes.io/egress-bandwidth"),
    (&[("kraal.dev/egress-bandwidth", "min=300M,max=200M")], "kraal.dev/egress-bandwidth", "min=300M,max=200M", "min 300000000 bit/s is above max 200000000 bit/s", KRAAL_BW),
    (&[("kraal.dev/egress-bandwidth", "min=1M")], "kraal.dev/egress-bandwidth", "min=1M", "max is missing", KRAAL_BW),
    (&[("kraal.dev/egress-bandwidth", "max=1M,max=2M")], "kraal.dev/egress-bandwidth", "max=1M,max=2M", "max is given more than once", KRAAL_BW),
    (&[("kraal.dev/egress-bandwidth", "min=-1,max=1M")], "kraal.dev/egress-bandwidth", "min=-1,max=1M", "min: negative values are not allowed", KRAAL_BW),
    (&[("kraal.dev/ingress-bandwidth", "max=1M,rate=2")], "kraal.dev/ingress-bandwidth", "max=1M,rate=2", r#"unknown field "rate""#, "for a plain cap use kubernetes.io/ingress-bandwidth"),
    (&[("kraal.dev/ingress-bandwidth", "max=0")], "kraal.dev/ingress-bandwidth", "max=0", "max must be greater than 0", KRAAL_BW),
    (&[("kraal.dev/ingress-bandwidth", "max=1M,burst=0")], "kraal.dev/ingress-bandwidth", "max=1M,burst=0", "burst must be greater than 0", KRAAL_BW),
    (&[("kraal.dev/ingress-bandwidth", "max=1M,burst=1.5.5")], "kraal.dev/ingress-bandwidth", "max=1M,burst=1.5.5", r#"burst: unknown suffix ".5""#, KRAAL_BW),
    (&[("kraal.dev/ingress-bandwidth", "")], "kraal.dev/ingress-bandwidth", "", "the value is empty", KRAAL_BW),
    // QoS class.
    (&[("kraal.dev/qos-class", "batch")], "kraal.dev/qos-class", "batch", "unknown QoS class", QOS),
    (&[("kraal.dev/qos-class", "Online")], "kraal.dev/qos-class", "Online", "unknown QoS class", QOS),
    // CPU burst.
    (&[("kraal.dev/cpu-burst", "-1")], "kraal.dev/cpu-burst", "-1", "negative values are not allowed", CPU),
    (&[("kraal.dev/cpu-burst", "lots")], "kraal.dev/cpu-burst", "lots", "no number before the suffix", CPU),
    (&[("kraal.dev/cpu-burst", "99999999999999999999")], "kraal.dev/cpu-burst", "99999999999999999999", "too large", CPU),
    (&[("kraal.dev/cpu-burst.web", "1x")], "kraal.dev/cpu-burst.web", "1x", r#"unknown suffix "x""#, CPU),
    // CPU period.
    (&[("kraal.dev/cpu-period", "250us")], "kraal.dev/cpu-period", "250us", "250µs is outside the kernel's CFS period range 1ms..=1s", PERIOD),
    (&[("kraal.dev/cpu-period", "2s")], "kraal.dev/cpu-period", "2s", "2s is outside the kernel's CFS period range", PERIOD),
    (&[("kraal.dev/cpu-period", "100")], "kraal.dev/cpu-period", "100", r#"missing unit after "100""#, PERIOD),
    (&[("kraal.dev/cpu-period", "1.0005ms")], "kraal.dev/cpu-period", "1.0005ms", "not a whole number of microseconds", PERIOD),
    (&[("kraal.dev/cpu-period", "-50ms")], "kraal.dev/cpu-period", "-50ms", "negative durations are not allowed", PERIOD),
    (&[("kraal.dev/cpu-period.worker", "5sec")], "kraal.dev/cpu-period.worker", "5sec", r#"unknown unit "sec""#, PERIOD),
    (&[("kraal.dev/cpu-period", "")], "kraal.dev/cpu-period", "", "the value is empty", PERIOD),
    // memory-high.
    (&[("kraal.dev/memory-high", "0")], "kraal.dev/memory-high", "0", "memory-high must be greater than 0", MEMORY),
    (&[("kraal.dev/memory-high", "-1Gi")], "kraal.dev/memory-high", "-1Gi", "negative values are not allowed", MEMORY),
    (&[("kraal.dev/memory-high", "1GB")], "kraal.dev/memory-high", "1GB", r#"unknown suffix "GB""#, MEMORY),
    (&[("kraal.dev/memory-high.db", "16Ei")], "kraal.dev/memory-high.db", "16Ei", "too large", MEMORY),
    // Keys.
    (&[("kraal.dev/cpu_burst", "1")], "kraal.dev/cpu_burst", "1", r#"unknown annotation under "kraal.dev/" (did you mean "kraal.dev/cpu-burst"?)"#, UNKNOWN),
    (&[("kraal.dev/colour", "blue")], "kraal.dev/colour", "blue", r#"unknown annotation under "kraal.dev/""#, "reject_unknown = false"),
    (&[("kraal.dev/", "x")], "kraal.dev/", "x", "unknown annotation", UNKNOWN),
    (&[("kraal.dev/bind-ports.web", "8080")], "kraal.dev/bind-ports.web", "8080", "kraal.dev/bind-ports applies to the whole pod and has no per-container form", "kraal.dev/bind-ports without a container suffix"),
    (&[("kraal.dev/qos-class.web", "offline")], "kraal.dev/qos-class.web", "offline", "applies to the whole pod", "kraal.dev/qos-class without a container suffix"),
    (&[("kraal.dev/egress-bandwidth.web", "max=1M")], "kraal.dev/egress-bandwidth.web", "max=1M", "applies to the whole pod", "kraal.dev/egress-bandwidth without a container suffix"),
    (&[("kraal.dev/connect-ports.db", "auto:10")], "kraal.dev/connect-ports.db", "auto:10", "applies to the whole pod", "kraal.dev/connect-ports without a container suffix"),
    (&[("kraal.dev/cpu-burst.Web", "1")], "kraal.dev/cpu-burst.Web", "1", r#"may hold only a-z, 0-9 and '-' ("Web")"#, DNS),
    (&[("kraal.dev/cpu-burst.", "1")], "kraal.dev/cpu-burst.", "1", "the container name is empty", DNS),
    (&[("kraal.dev/memory-high.-x", "1Gi")], "kraal.dev/memory-high.-x", "1Gi", "must start and end with a letter or digit", DNS),
    (&[("kraal.dev/memory-high.a.b", "1Gi")], "kraal.dev/memory-high.a.b", "1Gi", r#"("a.b")"#, "kraal.dev/memory-high.<container>"),
    // Conflicts between keys.
    (
        &[("kubernetes.io/egress-bandwidth", "100M"), ("kraal.dev/egress-bandwidth", "max=200M")],
        "kraal.dev/egress-bandwidth",
        "max=200M",
        r#"conflicts with "kubernetes.io/egress-bandwidth" = "100M": both set the egress bandwidth"#,
        "only one of kubernetes.io/egress-bandwidth (a plain cap) and kraal.dev/egress-bandwidth",
    ),
    (
        &[("kraal.dev/qos-class", "offline"), ("kraal.dev/ingress-bandwidth", "min=1M,max=2M")],
        "kraal.dev/ingress-bandwidth",
        "min=1M,max=2M",
        r#"min 1000000 bit/s is a bandwidth guarantee, but kraal.dev/qos-class is "offline" and offline pods get no guarantee"#,
        "no min (or min=0) for an offline pod",
    ),
    (
        &[("kraal.dev/qos-class", "online"), ("kraal.dev/qos-class", "offline")],
        "kraal.dev/qos-class",
        "offline",
        "the key is given more than once",
        "each key once",
    ),
];

#[test]
fn invalid_annotations_are_reported_precisely() {
    assert!(INVALID.len() >= 40, "only {} invalid cases", INVALID.len());
    for (pairs, key, value, problem, expected) in INVALID {
        let error = match parse(pairs) {
            Ok(policy) => panic!("{pairs:?} should be rejected, got {policy:?}"),
            Err(error) => error,
        };
        let message = error.to_string();
        assert_eq!(error.key(), *key, "{message}");
        assert_eq!(error.value(), *value, "{message}");
        assert!(
            message.starts_with(&format!("annotation {key:?} = {value:?}: ")),
            "names key and value: {message}"
        );
        assert!(message.contains(problem), "says {problem:?}: {message}");
        let (_, form) = message.rsplit_once("; expected ").unwrap_or_default();
        assert!(form.contains(expected), "expects {expected:?}: {message}");
        assert!(error.expected().contains(expected), "{message}");
    }
}

#[test]
fn every_problem_is_collected_in_key_order() {
    let annotations: HashMap<String, String> = [
        ("kraal.dev/qos-class", "sometimes"),
        ("kraal.dev/bind-ports", "30-20"),
        ("kubernetes.io/egress-bandwidth", "0"),
        ("kraal.dev/memory-high", "1Gi"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let errors =
        PodPolicy::from_annotations_all(&annotations, &PolicyOptions::default()).unwrap_err();
    let keys: Vec<&str> = errors.iter().map(PolicyError::key).collect();
    assert_eq!(
        keys,
        [
            "kraal.dev/bind-ports",
            "kraal.dev/qos-class",
            "kubernetes.io/egress-bandwidth"
        ]
    );
    // The single-error form reports the first of them, whatever the map's order.
    for _ in 0..8 {
        let first =
            PodPolicy::from_annotations(&annotations, &PolicyOptions::default()).unwrap_err();
        assert_eq!(first.key(), "kraal.dev/bind-ports");
    }
}

#[test]
fn both_bandwidth_sources_conflict_per_direction() {
    let errors = PodPolicy::from_annotations_all(
        [
            ("kubernetes.io/ingress-bandwidth", "1M"),
            ("kraal.dev/ingress-bandwidth", "max=1M"),
            ("kubernetes.io/egress-bandwidth", "1M"),
            ("kraal.dev/egress-bandwidth", "max=1M"),
        ],
        &PolicyOptions::default(),
    )
    .unwrap_err();
    assert_eq!(errors.len(), 2);
    assert!(
        errors
            .iter()
            .all(|e| matches!(e.problem(), Problem::Conflict { .. }))
    );
}

#[test]
fn unknown_keys_may_be_allowed_by_config() {
    let lenient = PolicyOptions {
        reject_unknown: false,
        ..PolicyOptions::default()
    };
    let policy = PodPolicy::from_annotations(
        [
            ("kraal.dev/future-knob", "whatever"),
            ("kraal.dev/future-knob.web", "x"),
            ("kraal.dev/cpu-burst", "1"),
        ],
        &lenient,
    )
    .unwrap();
    assert_eq!(policy.for_container("a").cpu_burst_millicores(), Some(1000));
    // Known keys are still checked.
    let error = PodPolicy::from_annotations([("kraal.dev/cpu-burst", "x")], &lenient).unwrap_err();
    assert_eq!(error.key(), "kraal.dev/cpu-burst");
    // A known key in a pod-level-only container form is not "unknown".
    assert!(PodPolicy::from_annotations([("kraal.dev/bind-ports.web", "80")], &lenient).is_err());
}

#[test]
fn the_prefix_comes_from_config() {
    let options = PolicyOptions {
        prefix: "isolation.example.com/".to_owned(),
        reject_unknown: true,
    };
    let policy = PodPolicy::from_annotations(
        [
            ("isolation.example.com/bind-ports", "9000"),
            ("isolation.example.com/cpu-burst.web", "2"),
            // The default prefix is just another foreign annotation now.
            ("kraal.dev/bind-ports", "not even a port"),
            // The kubernetes.io keys do not depend on the prefix.
            ("kubernetes.io/egress-bandwidth", "1M"),
        ],
        &options,
    )
    .unwrap();
    assert_eq!(policy.bind_ports, list("9000"));
    assert_eq!(
        policy.for_container("web").cpu_burst_millicores(),
        Some(2000)
    );
    assert_eq!(policy.bandwidth.egress, rates(0, 1_000_000, None));

    let error = PodPolicy::from_annotations([("isolation.example.com/cpu-brust", "1")], &options)
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains(r#"did you mean "isolation.example.com/cpu-burst"?"#),
        "{message}"
    );
    assert!(
        message.contains("one of isolation.example.com/bind-ports"),
        "{message}"
    );
}

#[test]
fn long_values_are_cut_in_the_message_but_kept_whole() {
    let value = "1".repeat(100_000);
    let error = parse(&[("kraal.dev/bind-ports", &value)]).unwrap_err();
    assert_eq!(error.value(), value);
    let message = error.to_string();
    assert!(message.len() < 2_000, "{} bytes", message.len());
    assert!(message.contains("bytes in all"), "{message}");
}

#[test]
fn options_deserialize_with_defaults() {
    let options: PolicyOptions = serde_json::from_str(r#"{"reject_unknown": false}"#).unwrap();
    assert_eq!(options.prefix, "kraal.dev/");
    assert!(!options.reject_unknown);
    assert!(serde_json::from_str::<PolicyOptions>(r#"{"prefx": "a/"}"#).is_err());
}

#[test]
fn serializes_for_status_and_admin_api() {
    let policy = ok(&[
        ("kraal.dev/qos-class", "offline"),
        ("kraal.dev/bind-ports", "20000-20999,8080"),
        ("kraal.dev/connect-ports", "auto:100"),
        ("kubernetes.io/egress-bandwidth", "100M"),
        ("kraal.dev/cpu-burst.web", "500m"),
    ]);
    let json: serde_json::Value = serde_json::from_str(&policy.to_json().unwrap()).unwrap();
    assert_eq!(json["qos_class"], "offline");
    assert_eq!(json["bind_ports"], "8080,20000-20999");
    assert_eq!(json["connect_ports"], "auto:100");
    assert_eq!(json["bandwidth"]["egress"]["max_bps"], 100_000_000);
    assert_eq!(json["bandwidth"]["egress"]["min_bps"], 0);
    assert_eq!(json["bandwidth"]["ingress"], serde_json::Value::Null);
    assert_eq!(
        json["container_overrides"]["web"]["cpu_burst_millicores"]["value"],
        500
    );
    assert_eq!(
        json["container_overrides"]["web"]["cpu_burst_millicores"]["key"],
        "kraal.dev/cpu-burst.web"
    );

    let container: serde_json::Value = serde_json::to_value(policy.for_container("web")).unwrap();
    assert_eq!(container["container"], "web");
    assert_eq!(container["cpu_burst_millicores"]["raw"], "500m");
}

#[test]
fn accepts_maps_and_pair_lists_alike() {
    let pairs = [("kraal.dev/bind-ports", "8080")];
    let hash: HashMap<&str, &str> = pairs.into_iter().collect();
    let btree: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let options = PolicyOptions::default();
    let from_pairs = PodPolicy::from_annotations(pairs, &options).unwrap();
    assert_eq!(
        PodPolicy::from_annotations(&hash, &options).unwrap(),
        from_pairs
    );
    assert_eq!(
        PodPolicy::from_annotations(&btree, &options).unwrap(),
        from_pairs
    );
}
