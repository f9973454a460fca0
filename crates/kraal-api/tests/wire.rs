//! Wire-format facts of CRI runtime.v1 that kubelet and crictl depend on.
//!
//! Field numbers, enum values and RPC names were checked against upstream
//! k8s.io/cri-api v0.36. A renumbering in `proto/runtime/v1/api.proto` must
//! make one of these tests fail.

use kraal_api::runtime::v1 as cri;
use prost::Message;

/// Length-delimited field with a one-byte key and a one-byte length.
fn ld(field: u8, payload: &[u8]) -> Vec<u8> {
    assert!(field < 16 && payload.len() < 128);
    let mut out = vec![(field << 3) | 2, payload.len() as u8];
    out.extend_from_slice(payload);
    out
}

#[test]
fn version_request_bytes() {
    let req = cri::VersionRequest {
        version: "v1".into(),
    };
    assert_eq!(req.encode_to_vec(), [0x0a, 0x02, b'v', b'1']);
}

#[test]
fn pull_image_request_with_auth_bytes() {
    let req = cri::PullImageRequest {
        image: Some(cri::ImageSpec {
            image: "busybox:1.36".into(),
            ..Default::default()
        }),
        auth: Some(cri::AuthConfig {
            username: "u".into(),
            password: "p".into(),
            auth: "dTpw".into(),
            server_address: "127.0.0.1:5000".into(),
            identity_token: "i".into(),
            registry_token: "r".into(),
        }),
        sandbox_config: None,
    };

    let image = ld(1, b"busybox:1.36");
    let auth = [
        ld(1, b"u"),
        ld(2, b"p"),
        ld(3, b"dTpw"),
        ld(4, b"127.0.0.1:5000"),
        ld(5, b"i"),
        ld(6, b"r"),
    ]
    .concat();
    let expected = [ld(1, &image), ld(2, &auth)].concat();
    assert_eq!(req.encode_to_vec(), expected);

    let back = cri::PullImageRequest::decode(expected.as_slice()).unwrap();
    assert_eq!(back, req);
}

#[test]
fn image_spec_high_field_numbers() {
    let spec = cri::ImageSpec {
        image: String::new(),
        annotations: Default::default(),
        user_specified_image: "a".into(),
        runtime_handler: "b".into(),
        image_ref: "c".into(),
    };
    // Fields 18, 19, 20, length-delimited: two-byte keys.
    assert_eq!(
        spec.encode_to_vec(),
        [
            0x92, 0x01, 1, b'a', 0x9a, 0x01, 1, b'b', 0xa2, 0x01, 1, b'c'
        ]
    );
}

#[test]
fn image_fs_info_has_container_filesystems() {
    let fs = cri::FilesystemUsage {
        fs_id: Some(cri::FilesystemIdentifier {
            mountpoint: "/var".into(),
        }),
        ..Default::default()
    };
    let resp = cri::ImageFsInfoResponse {
        image_filesystems: vec![],
        container_filesystems: vec![fs],
    };
    let fs_bytes = ld(2, &ld(1, b"/var"));
    assert_eq!(resp.encode_to_vec(), ld(2, &fs_bytes));
}

#[test]
fn container_config_and_status_stop_signal() {
    // ContainerConfig.stop_signal = 18 (varint) carrying SIGTERM (23).
    let cfg = cri::ContainerConfig::decode([0x90, 0x01, 23].as_slice()).unwrap();
    assert_eq!(cfg.stop_signal(), cri::Signal::Sigterm);

    // ContainerConfig.CDI_devices = 17.
    let cfg = cri::ContainerConfig {
        cdi_devices: vec![cri::CdiDevice {
            name: "v.com/gpu=0".into(),
        }],
        ..Default::default()
    };
    let mut expected = vec![0x8a, 0x01, 13];
    expected.extend(ld(1, b"v.com/gpu=0"));
    assert_eq!(cfg.encode_to_vec(), expected);

    // ContainerStatus.user = 18, stop_signal = 19.
    let st = cri::ContainerStatus {
        user: Some(cri::ContainerUser {
            linux: Some(cri::LinuxContainerUser {
                uid: 1,
                gid: 2,
                supplemental_groups: vec![],
            }),
        }),
        stop_signal: cri::Signal::Sigkill as i32,
        ..Default::default()
    };
    let user = ld(1, &[0x08, 1, 0x10, 2]);
    let mut expected = vec![0x92, 0x01, user.len() as u8];
    expected.extend(user);
    expected.extend([0x98, 0x01, 13]);
    assert_eq!(st.encode_to_vec(), expected);
}

#[test]
fn security_context_field_numbers() {
    let sandbox = cri::LinuxSandboxSecurityContext {
        run_as_group: Some(cri::Int64Value { value: 7 }),
        supplemental_groups_policy: cri::SupplementalGroupsPolicy::Strict as i32,
        ..Default::default()
    };
    // run_as_group = 8, supplemental_groups_policy = 11.
    assert_eq!(sandbox.encode_to_vec(), [0x42, 2, 0x08, 7, 0x58, 1]);

    let ctr = cri::LinuxContainerSecurityContext {
        run_as_group: Some(cri::Int64Value { value: 7 }),
        supplemental_groups_policy: cri::SupplementalGroupsPolicy::Strict as i32,
        ..Default::default()
    };
    // run_as_group = 12, supplemental_groups_policy = 17.
    assert_eq!(ctr.encode_to_vec(), [0x62, 2, 0x08, 7, 0x88, 0x01, 1]);
}

#[test]
fn mount_image_volume_fields() {
    let m = cri::Mount {
        readonly: true,
        recursive_read_only: true,
        image: Some(cri::ImageSpec {
            image: "sha256:ab".into(),
            ..Default::default()
        }),
        image_sub_path: "etc".into(),
        ..Default::default()
    };
    let expected = [
        vec![0x18, 1, 0x40, 1],
        ld(9, &ld(1, b"sha256:ab")),
        ld(10, b"etc"),
    ]
    .concat();
    assert_eq!(m.encode_to_vec(), expected);
}

#[test]
fn misc_newer_fields() {
    let img = cri::Image {
        pinned: true,
        ..Default::default()
    };
    assert_eq!(img.encode_to_vec(), [0x40, 1]);

    let feats = cri::RuntimeFeatures {
        supplemental_groups_policy: true,
        user_namespaces_host_network: true,
    };
    assert_eq!(feats.encode_to_vec(), [0x08, 1, 0x10, 1]);

    let rc = cri::RuntimeConfigResponse {
        linux: Some(cri::LinuxRuntimeConfiguration {
            cgroup_driver: cri::CgroupDriver::Cgroupfs as i32,
        }),
    };
    assert_eq!(rc.encode_to_vec(), [0x0a, 2, 0x08, 1]);

    let st = cri::PodSandboxStatusResponse {
        timestamp: 5,
        ..Default::default()
    };
    assert_eq!(st.encode_to_vec(), [0x20, 5]);
}

#[test]
fn enum_values() {
    assert_eq!(cri::Signal::RuntimeDefault as i32, 0);
    assert_eq!(cri::Signal::Sigkill as i32, 13);
    assert_eq!(cri::Signal::Sigterm as i32, 23);
    assert_eq!(cri::Signal::Sigrtmin as i32, 35);
    assert_eq!(cri::Signal::Sigrtmax as i32, 65);
    assert_eq!(cri::NamespaceMode::Target as i32, 3);
    assert_eq!(cri::ContainerState::ContainerUnknown as i32, 3);
    assert_eq!(cri::PodSandboxState::SandboxNotready as i32, 1);
    assert_eq!(cri::MountPropagation::PropagationBidirectional as i32, 2);
    assert_eq!(cri::Protocol::Sctp as i32, 2);
    assert_eq!(cri::ContainerEventType::ContainerDeletedEvent as i32, 3);
    assert_eq!(cri::CgroupDriver::Systemd as i32, 0);
    assert_eq!(cri::MetricType::Gauge as i32, 1);
    assert_eq!(cri::security_profile::ProfileType::Localhost as i32, 2);
}

#[test]
fn service_names() {
    assert_eq!(
        cri::runtime_service_server::SERVICE_NAME,
        "runtime.v1.RuntimeService"
    );
    assert_eq!(
        cri::image_service_server::SERVICE_NAME,
        "runtime.v1.ImageService"
    );
}

/// Every message field, enum value and RPC of the proto, in a stable text
/// form, compared with `tests/cri_v1_wire.golden`. Any change to the wire
/// contract shows up as a diff here; update the golden file only after
/// checking the change against upstream cri-api.
#[test]
fn golden_wire_listing() {
    use protox::prost_reflect::{Cardinality, Kind};

    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto");
    let mut compiler = protox::Compiler::new([root]).unwrap();
    compiler.open_file("runtime/v1/api.proto").unwrap();
    let pool = compiler.descriptor_pool();

    let mut lines = Vec::new();
    for svc in pool.services() {
        for m in svc.methods() {
            lines.push(format!(
                "rpc {}/{}({}) returns ({}{})",
                svc.full_name(),
                m.name(),
                m.input().full_name(),
                if m.is_server_streaming() {
                    "stream "
                } else {
                    ""
                },
                m.output().full_name(),
            ));
        }
    }
    for msg in pool.all_messages() {
        if msg.is_map_entry() {
            continue;
        }
        for f in msg.fields() {
            let kind = match f.kind() {
                Kind::Message(m) if m.is_map_entry() => format!(
                    "map<{:?}, {:?}>",
                    m.map_entry_key_field().kind(),
                    m.map_entry_value_field().kind()
                )
                .to_lowercase(),
                Kind::Message(m) => m.full_name().to_string(),
                Kind::Enum(e) => e.full_name().to_string(),
                other => format!("{other:?}").to_lowercase(),
            };
            let label = match f.cardinality() {
                Cardinality::Repeated if !f.is_map() => "repeated ",
                _ => "",
            };
            lines.push(format!(
                "field {}.{} = {} {}{}",
                msg.full_name(),
                f.name(),
                f.number(),
                label,
                kind
            ));
        }
    }
    for e in pool.all_enums() {
        for v in e.values() {
            lines.push(format!(
                "enum {}.{} = {}",
                e.full_name(),
                v.name(),
                v.number()
            ));
        }
    }
    lines.sort();
    let actual = lines.join("\n") + "\n";

    let golden_path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cri_v1_wire.golden");
    if std::env::var_os("KRAAL_BLESS").is_some() {
        std::fs::write(golden_path, &actual).unwrap();
    }
    let golden = std::fs::read_to_string(golden_path).unwrap();
    assert!(
        golden == actual,
        "CRI wire contract changed; diff {golden_path} against this listing:\n{actual}"
    );
}
