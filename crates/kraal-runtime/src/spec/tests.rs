//! `build_spec` as a whole: a realistic request in, a spec out that serialises and reads
//! back, and the cross-cutting rules (privileged, hostNetwork, warnings).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Capability, LinuxNamespaceType, LinuxSeccompAction, Spec};
use serde_json::json;

use super::*;

struct Fixture {
    rootfs: tempfile::TempDir,
    vol: tempfile::TempDir,
    sandbox: SandboxContext,
    image: serde_json::Value,
}

fn fixture() -> Fixture {
    let rootfs = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(rootfs.path().join("etc")).unwrap();
    std::fs::write(
        rootfs.path().join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nweb:x:33:33::/var/www:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        rootfs.path().join("etc/group"),
        "root:x:0:\nweb:x:33:\nlog:x:4:web\n",
    )
    .unwrap();
    let sandbox = SandboxContext {
        id: "sb1".into(),
        hostname: "pod-a".into(),
        net_ns: Some("/run/kraal/sb1/net".into()),
        ipc_ns: Some("/run/kraal/sb1/ipc".into()),
        uts_ns: Some("/run/kraal/sb1/uts".into()),
        pid: PidMode::Container,
        etc_hosts: Some("/run/kraal/sb1/hosts".into()),
        resolv_conf: Some("/run/kraal/sb1/resolv.conf".into()),
        etc_hostname: Some("/run/kraal/sb1/hostname".into()),
        shm: Some("/run/kraal/sb1/shm".into()),
        cgroup_parent: "/kubepods/pod123".into(),
        sysctls: HashMap::from([("net.ipv4.ip_local_port_range".into(), "20000 20999".into())]),
        privileged: false,
    };
    let image = json!({"architecture": "amd64", "os": "linux", "config": {
        "Env": ["PATH=/usr/bin:/bin", "MODE=image"],
        "Entrypoint": ["/entry"],
        "Cmd": ["serve"],
        "WorkingDir": "/srv",
        "User": "web"
    }});
    Fixture {
        rootfs,
        vol: tempfile::tempdir().unwrap(),
        sandbox,
        image,
    }
}

fn config(vol: &Path) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        }),
        args: vec!["serve".into(), "--port=80".into()],
        envs: vec![cri::KeyValue {
            key: "MODE".into(),
            value: "pod".into(),
        }],
        mounts: vec![cri::Mount {
            container_path: "/data".into(),
            host_path: vol.display().to_string(),
            readonly: true,
            ..Default::default()
        }],
        annotations: HashMap::from([("io.kubernetes.container.name".into(), "app".into())]),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: 50_000,
                cpu_shares: 512,
                memory_limit_in_bytes: 128 << 20,
                oom_score_adj: -997,
                ..Default::default()
            }),
            security_context: Some(cri::LinuxContainerSecurityContext {
                capabilities: Some(cri::Capability {
                    add_capabilities: vec!["NET_ADMIN".into()],
                    drop_capabilities: vec!["MKNOD".into()],
                    add_ambient_capabilities: vec![],
                }),
                seccomp: Some(cri::SecurityProfile {
                    profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                    localhost_ref: String::new(),
                }),
                no_new_privs: true,
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

const HOST: HostFacts = HostFacts {
    cgroup_v2: false,
    swap_accounting: true,
    hugetlb: true,
    capability_bound: u64::MAX,
};

fn build(f: &Fixture, cfg: &cri::ContainerConfig) -> Result<BuiltSpec, SpecError> {
    build_spec(&SpecInput {
        container_id: "c1",
        config: cfg,
        sandbox: &f.sandbox,
        image_config: &f.image,
        rootfs: f.rootfs.path(),
        cgroups_path: "/kubepods/pod123/kraal-c1",
        oom_score_adj_floor: -500,
        seccomp_profile_root: Path::new("/var/lib/kubelet/seccomp"),
        host: HOST,
    })
}

#[test]
fn full_spec() {
    let f = fixture();
    let cfg = config(f.vol.path());
    let built = build(&f, &cfg).unwrap();
    let spec = &built.spec;

    let p = spec.process().as_ref().unwrap();
    assert_eq!(
        p.args().as_ref().unwrap(),
        &["/entry", "serve", "--port=80"].map(String::from)
    );
    assert_eq!(
        p.env().as_ref().unwrap(),
        &["PATH=/usr/bin:/bin", "HOSTNAME=pod-a", "MODE=pod"].map(String::from)
    );
    assert_eq!(p.cwd(), Path::new("/srv"));
    assert_eq!(p.user().uid(), 33);
    assert_eq!(p.user().gid(), 33);
    assert_eq!(p.user().additional_gids().as_ref().unwrap(), &[33, 4]);
    assert_eq!(built.user.username.as_deref(), Some("web"));
    assert_eq!(p.no_new_privileges(), Some(true));
    assert_eq!(p.oom_score_adj(), Some(-500));
    assert!(
        built.warnings.iter().any(|w| w.contains("oom_score_adj")),
        "{:?}",
        built.warnings
    );
    let caps = p.capabilities().as_ref().unwrap();
    let bounding = caps.bounding().as_ref().unwrap();
    assert!(bounding.contains(&Capability::NetAdmin));
    assert!(!bounding.contains(&Capability::Mknod));
    assert!(caps.inheritable().as_ref().unwrap().is_empty());
    assert_eq!(p.terminal(), Some(false));
    assert!(p.rlimits().is_none(), "no rlimits, as containerd");

    assert_eq!(spec.hostname(), &None);
    assert_eq!(spec.root().as_ref().unwrap().path(), f.rootfs.path());
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(false));
    assert_eq!(
        spec.annotations().as_ref().unwrap()["io.kubernetes.container.name"],
        "app"
    );

    let linux = spec.linux().as_ref().unwrap();
    assert_eq!(
        linux.cgroups_path().as_deref(),
        Some(Path::new("/kubepods/pod123/kraal-c1"))
    );
    let ns: Vec<_> = linux
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect();
    assert!(ns.contains(&LinuxNamespaceType::Network));
    assert!(ns.contains(&LinuxNamespaceType::Pid));
    assert!(
        !ns.contains(&LinuxNamespaceType::Cgroup),
        "v1 host: no cgroup namespace"
    );
    assert_eq!(
        linux.sysctl().as_ref().unwrap()["net.ipv4.ip_local_port_range"],
        "20000 20999"
    );
    let seccomp = linux.seccomp().as_ref().unwrap();
    assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActAllow);
    assert!(
        linux
            .masked_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/kcore".to_owned())
    );
    assert!(
        linux
            .readonly_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/sys".to_owned())
    );
    let res = linux.resources().as_ref().unwrap();
    assert_eq!(res.cpu().as_ref().unwrap().quota(), Some(50_000));
    assert_eq!(res.memory().as_ref().unwrap().limit(), Some(128 << 20));
    let dev_rules = res.devices().as_ref().unwrap();
    assert!(!dev_rules[0].allow());

    let mounts = spec.mounts().as_ref().unwrap();
    let data = mounts
        .iter()
        .find(|m| m.destination() == Path::new("/data"))
        .unwrap();
    assert_eq!(
        data.options().as_ref().unwrap(),
        &["rbind", "rprivate", "ro"].map(String::from)
    );
    assert!(
        mounts
            .iter()
            .any(|m| m.destination() == Path::new("/etc/resolv.conf"))
    );

    // The JSON reads back as the same spec.
    let text = serde_json::to_string_pretty(spec).unwrap();
    let back: Spec = serde_json::from_str(&text).unwrap();
    assert_eq!(&back, spec);
    let d = tempfile::tempdir().unwrap();
    spec.save(d.path().join("config.json")).unwrap();
    assert_eq!(&Spec::load(d.path().join("config.json")).unwrap(), spec);
}

#[test]
fn privileged_spec() {
    let mut f = fixture();
    let mut cfg = config(f.vol.path());
    let sc = cfg
        .linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap();
    sc.privileged = true;
    let e = build(&f, &cfg).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.message().contains("privileged sandbox"), "{e}");

    f.sandbox.privileged = true;
    let built = build(&f, &cfg).unwrap();
    let linux = built.spec.linux().as_ref().unwrap();
    assert!(linux.seccomp().is_none());
    assert!(linux.masked_paths().as_ref().unwrap().is_empty());
    assert!(linux.readonly_paths().as_ref().unwrap().is_empty());
    let rules = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .as_ref()
        .unwrap();
    assert_eq!(rules.len(), 1);
    assert!(rules[0].allow());
    assert!(
        linux
            .devices()
            .as_ref()
            .unwrap()
            .iter()
            .any(|d| d.path() == Path::new("/dev/null"))
    );
    let caps = built
        .spec
        .process()
        .as_ref()
        .unwrap()
        .capabilities()
        .as_ref()
        .unwrap();
    assert!(
        caps.bounding()
            .as_ref()
            .unwrap()
            .contains(&Capability::SysAdmin)
    );
    assert!(
        caps.bounding()
            .as_ref()
            .unwrap()
            .contains(&Capability::Mknod),
        "drop ignored"
    );
    let sys = built
        .spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new("/sys"))
        .unwrap();
    assert!(sys.options().as_ref().unwrap().contains(&"rw".to_owned()));
    // And it serialises.
    let text = serde_json::to_string(&built.spec).unwrap();
    assert_eq!(serde_json::from_str::<Spec>(&text).unwrap(), built.spec);
}

#[test]
fn host_network_pod() {
    let mut f = fixture();
    f.sandbox.net_ns = None;
    f.sandbox.uts_ns = None;
    let cfg = config(f.vol.path());
    let e = build(&f, &cfg).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.message().contains("net.ipv4.ip_local_port_range"), "{e}");
    f.sandbox.sysctls.clear();
    let built = build(&f, &cfg).unwrap();
    let ns: Vec<_> = built
        .spec
        .linux()
        .as_ref()
        .unwrap()
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect();
    assert!(!ns.contains(&LinuxNamespaceType::Network));
    assert!(!ns.contains(&LinuxNamespaceType::Uts));
    assert!(built.spec.linux().as_ref().unwrap().sysctl().is_none());
}

#[test]
fn errors_name_the_field() {
    let f = fixture();
    let mut cfg = config(f.vol.path());
    cfg.mounts[0].host_path = "/nonexistent/kraal-vol".into();
    let e = build(&f, &cfg).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.message().contains("\"/nonexistent/kraal-vol\""), "{e}");

    let mut cfg = config(f.vol.path());
    cfg.linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .run_as_username = "nobody2".into();
    let e = build(&f, &cfg).unwrap_err();
    assert_eq!(
        e.message(),
        "linux.security_context.run_as_username \"nobody2\": user \"nobody2\" not found in \
         the image's /etc/passwd"
    );

    let mut cfg = config(f.vol.path());
    cfg.linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .seccomp = Some(cri::SecurityProfile {
        profile_type: cri::security_profile::ProfileType::Localhost as i32,
        localhost_ref: "/nonexistent/profile.json".into(),
    });
    let e = build(&f, &cfg).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(
        e.message()
            .starts_with("seccomp localhost profile \"/nonexistent/profile.json\"")
    );

    let mut f2 = fixture();
    f2.image = json!({"config": {}});
    let mut cfg = config(f2.vol.path());
    cfg.args.clear();
    let e = build(&f2, &cfg).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.message().contains("no command"), "{e}");
}

#[test]
fn readonly_rootfs_tty_and_unconfined() {
    let f = fixture();
    let mut cfg = config(f.vol.path());
    cfg.tty = true;
    cfg.working_dir = "/work".into();
    cfg.command = vec!["/bin/sh".into()];
    cfg.args = vec![];
    {
        let sc = cfg
            .linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap();
        sc.readonly_rootfs = true;
        sc.no_new_privs = false;
        sc.seccomp = Some(cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::Unconfined as i32,
            localhost_ref: String::new(),
        });
        sc.masked_paths = vec!["/proc/only".into()];
        sc.run_as_user = Some(cri::Int64Value { value: 1234 });
    }
    let built = build(&f, &cfg).unwrap();
    let p = built.spec.process().as_ref().unwrap();
    assert_eq!(p.args().as_ref().unwrap(), &["/bin/sh".to_owned()]);
    assert_eq!(p.terminal(), Some(true));
    assert_eq!(p.no_new_privileges(), None, "absent unless asked for");
    assert!(p.env().as_ref().unwrap().contains(&"TERM=xterm".to_owned()));
    assert_eq!(p.cwd(), Path::new("/work"));
    assert_eq!((p.user().uid(), p.user().gid()), (1234, 0));
    let linux = built.spec.linux().as_ref().unwrap();
    assert!(linux.seccomp().is_none());
    assert_eq!(
        linux.masked_paths().as_ref().unwrap(),
        &["/proc/only".to_owned()]
    );
    assert_eq!(built.spec.root().as_ref().unwrap().readonly(), Some(true));
    let hosts = built
        .spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new("/etc/hosts"))
        .unwrap();
    assert!(hosts.options().as_ref().unwrap().contains(&"ro".to_owned()));
    assert_eq!(
        hosts.source().as_deref(),
        Some(PathBuf::from("/run/kraal/sb1/hosts").as_path())
    );
}

#[test]
fn cgroup_v2_host() {
    let f = fixture();
    let mut cfg = config(f.vol.path());
    cfg.linux
        .as_mut()
        .unwrap()
        .resources
        .as_mut()
        .unwrap()
        .unified = HashMap::from([("memory.high".into(), "64M".into())]);
    let built = build_spec(&SpecInput {
        container_id: "c1",
        config: &cfg,
        sandbox: &f.sandbox,
        image_config: &f.image,
        rootfs: f.rootfs.path(),
        cgroups_path: "/kubepods/pod123/kraal-c1",
        oom_score_adj_floor: -1000,
        seccomp_profile_root: Path::new("/var/lib/kubelet/seccomp"),
        host: HostFacts {
            cgroup_v2: true,
            swap_accounting: false,
            ..HOST
        },
    })
    .unwrap();
    let linux = built.spec.linux().as_ref().unwrap();
    let ns: Vec<_> = linux
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect();
    assert!(ns.contains(&LinuxNamespaceType::Cgroup));
    let res = linux.resources().as_ref().unwrap();
    assert_eq!(res.unified().as_ref().unwrap()["memory.high"], "64M");
    assert_eq!(res.memory().as_ref().unwrap().swap(), None);
    assert_eq!(
        built.spec.process().as_ref().unwrap().oom_score_adj(),
        Some(-997)
    );
    assert!(built.warnings.is_empty(), "{:?}", built.warnings);
}

#[test]
fn hugetlb_counts_only_on_a_v1_hierarchy() {
    // This kind of hybrid host: hugetlb is bound to cgroup2 only (the `0::` line).
    let hybrid = "9:name=systemd:/\n8:pids:/\n4:memory:/a\n1:cpu,cpuacct:/\n0::/\n";
    assert!(!super::v1_hierarchy_has(hybrid, "hugetlb"));
    assert!(super::v1_hierarchy_has(hybrid, "cpuacct"));
    assert!(super::v1_hierarchy_has(hybrid, "pids"));
    let v1 = "10:hugetlb:/\n3:cpu,cpuacct:/\n";
    assert!(super::v1_hierarchy_has(v1, "hugetlb"));
    assert!(!super::v1_hierarchy_has("0::/\n", "hugetlb"));
}
