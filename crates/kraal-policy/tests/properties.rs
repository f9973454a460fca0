//! Property tests: no input panics, errors always point at an annotation that was given, and
//! the printable types parse back to themselves.

use std::collections::HashMap;

use kraal_policy::{
    ContainerLimits, PodPolicy, PolicyOptions, PortList, PortRange, PortSpec, Quantity, Rates,
    parse_duration,
};
use proptest::prelude::*;

const KNOWN_KEYS: &[&str] = &[
    "kraal.dev/bind-ports",
    "kraal.dev/connect-ports",
    "kraal.dev/egress-bandwidth",
    "kraal.dev/ingress-bandwidth",
    "kraal.dev/qos-class",
    "kraal.dev/cpu-burst",
    "kraal.dev/cpu-period",
    "kraal.dev/memory-high",
    "kubernetes.io/egress-bandwidth",
    "kubernetes.io/ingress-bandwidth",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KNOWN_KEYS).prop_map(str::to_owned),
        3 => (prop::sample::select(KNOWN_KEYS), "[a-zA-Z0-9._-]{0,10}")
            .prop_map(|(key, scope)| format!("{key}.{scope}")),
        2 => "kraal\\.dev/[a-z._µ-]{0,20}",
        1 => any::<String>(),
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => "[0-9a-zA-Z.,:=+ µ-]{0,30}",
        2 => "[0-9]{1,6}(-[0-9]{1,6})?(,[0-9]{1,6}(-[0-9]{1,6})?){0,3}",
        1 => "auto:[0-9a-z]{0,7}",
        2 => "(min|max|burst)=[0-9]{0,4}(\\.[0-9]{0,3})?(k|M|G|Ki|Mi|e9)?(,(min|max|burst)=[0-9]{0,4}[kMG]?){0,3}",
        2 => "[+-]?[0-9]{0,25}(\\.[0-9]{0,25})?(|n|u|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?[0-9]{0,22})",
        2 => "[+-]?([0-9]{0,6}(\\.[0-9]{0,12})?(ns|us|µs|ms|s|m|h)){1,3}",
        1 => prop::sample::select(&["online", "offline", "Online", ""][..]).prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

fn limits() -> impl Strategy<Value = ContainerLimits> {
    (
        prop::option::of(any::<i64>()),
        prop::option::of(any::<i64>()),
        prop::option::of(any::<i64>()),
    )
        .prop_map(
            |(cpu_quota_us, cpu_period_us, memory_limit_bytes)| ContainerLimits {
                cpu_quota_us,
                cpu_period_us,
                memory_limit_bytes,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn annotation_maps_never_panic(
        annotations in prop::collection::hash_map(key(), value(), 0..6),
        reject_unknown in any::<bool>(),
        container in "[a-z0-9.-]{0,10}",
        limits in limits(),
    ) {
        let options = PolicyOptions { reject_unknown, ..PolicyOptions::default() };
        match PodPolicy::from_annotations(&annotations, &options) {
            Ok(policy) => {
                prop_assert!(policy.to_json().is_ok());
                let for_container = policy.for_container(&container);
                if let Err(error) = for_container.check_limits(&limits) {
                    prop_assert_eq!(annotations.get(error.key()), Some(&error.value().to_owned()));
                    prop_assert!(!error.to_string().is_empty());
                }
            }
            Err(error) => {
                // The error points at an annotation that was given, with its value.
                prop_assert_eq!(annotations.get(error.key()), Some(&error.value().to_owned()));
                let message = error.to_string();
                prop_assert!(message.starts_with("annotation "), "{}", message);
                prop_assert!(message.contains("; expected "), "{}", message);
                prop_assert!(!error.expected().is_empty());
                // The collecting form agrees on the first error.
                let all = PodPolicy::from_annotations_all(&annotations, &options).unwrap_err();
                prop_assert_eq!(all.first(), Some(&error));
            }
        }
    }

    #[test]
    fn any_string_is_safe_for_every_parser(text in any::<String>()) {
        if let Ok(quantity) = Quantity::parse(&text) {
            let _ = quantity.value();
            let _ = quantity.milli_value();
            let _ = quantity.to_string();
        }
        let _ = parse_duration(&text);
        let _ = PortSpec::parse(&text);
        let _ = Rates::parse(&text);
        let _ = Rates::parse_cap(&text);
        let options = PolicyOptions::default();
        let _ = PodPolicy::from_annotations([(text.as_str(), text.as_str())], &options);
    }

    #[test]
    fn quantity_grammar_never_panics_and_displays_faithfully(
        text in "[+-]?[0-9]{0,45}(\\.[0-9]{0,45})?(|n|u|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?[0-9]{1,22})"
    ) {
        if let Ok(quantity) = Quantity::parse(&text) {
            let again = Quantity::parse(&quantity.to_string()).unwrap();
            prop_assert_eq!(quantity.value(), again.value());
            prop_assert_eq!(quantity.milli_value(), again.milli_value());
        }
    }

    #[test]
    fn integers_parse_exactly(n in any::<u64>()) {
        prop_assert_eq!(Quantity::parse(&n.to_string()).unwrap().value(), Ok(n));
        let kibi = Quantity::parse(&format!("{n}Ki")).unwrap().value().ok();
        prop_assert_eq!(kibi, n.checked_mul(1024));
        let milli = Quantity::parse(&format!("{n}m")).unwrap();
        prop_assert_eq!(milli.value(), Ok(n.div_ceil(1000)));
        prop_assert_eq!(milli.milli_value(), Ok(n));
        let cores = Quantity::parse(&n.to_string()).unwrap().milli_value().ok();
        prop_assert_eq!(cores, n.checked_mul(1000));
    }

    #[test]
    fn port_lists_round_trip(
        spans in prop::collection::vec((1u16..=65535, 0u16..2000), 1..8)
    ) {
        let ranges: Vec<PortRange> = spans
            .iter()
            .map(|(start, extra)| PortRange::new(*start, start.saturating_add(*extra)).unwrap())
            .collect();
        if let Ok(list) = PortList::new(ranges.clone()) {
            let again = PortList::parse(&list.to_string()).unwrap();
            prop_assert_eq!(&again, &list);
            let total: usize = ranges.iter().map(PortRange::len).sum();
            prop_assert_eq!(list.len(), total);
            for range in &ranges {
                prop_assert!(list.contains(range.start()));
                prop_assert!(list.contains(range.end()));
            }
            let spec = PortSpec::List(list.clone());
            prop_assert_eq!(PortSpec::parse(&spec.to_string()).unwrap(), spec);
        }
    }

    #[test]
    fn parsed_port_lists_round_trip(text in "[0-9]{1,5}(-[0-9]{1,5})?( ?, ?[0-9]{1,5}(-[0-9]{1,5})?){0,5}") {
        if let Ok(list) = PortList::parse(&text) {
            prop_assert_eq!(PortList::parse(&list.to_string()).unwrap(), list.clone());
            let ports: Vec<u16> = list.ports().collect();
            prop_assert_eq!(ports.len(), list.len());
            prop_assert!(ports.windows(2).all(|pair| pair[0] < pair[1]));
            prop_assert!(ports.iter().all(|port| list.contains(*port)));
        }
    }

    #[test]
    fn contains_matches_a_linear_scan(
        spans in prop::collection::vec((1u16..=65535, 0u16..50), 1..6),
        probe in any::<u16>(),
    ) {
        let ranges: Vec<PortRange> = spans
            .iter()
            .map(|(start, extra)| PortRange::new(*start, start.saturating_add(*extra)).unwrap())
            .collect();
        if let Ok(list) = PortList::new(ranges.clone()) {
            prop_assert_eq!(list.contains(probe), ranges.iter().any(|r| r.contains(probe)));
        }
    }

    #[test]
    fn rates_round_trip(min in any::<u64>(), max in any::<u64>(), burst in prop::option::of(any::<u64>())) {
        if let Ok(rates) = Rates::new(min, max, burst) {
            prop_assert_eq!(Rates::parse(&rates.to_string()), Ok(rates));
        }
    }
}

#[test]
fn maps_with_every_key_at_once() {
    let annotations: HashMap<&str, &str> = [
        ("kraal.dev/bind-ports", "20000-20999"),
        ("kraal.dev/connect-ports", "auto:1000"),
        ("kraal.dev/egress-bandwidth", "min=50M,max=200M,burst=64Ki"),
        ("kubernetes.io/ingress-bandwidth", "1G"),
        ("kraal.dev/qos-class", "online"),
        ("kraal.dev/cpu-burst", "500m"),
        ("kraal.dev/cpu-period", "50ms"),
        ("kraal.dev/memory-high", "512Mi"),
        ("kraal.dev/memory-high.worker", "1Gi"),
    ]
    .into_iter()
    .collect();
    let policy = PodPolicy::from_annotations(&annotations, &PolicyOptions::default()).unwrap();
    let worker = policy.for_container("worker");
    assert_eq!(worker.memory_high_bytes(), Some(1 << 30));
    assert_eq!(worker.cpu_period_us(), Some(50_000));
}
