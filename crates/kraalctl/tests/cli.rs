//! Runs the built `kraalctl` binary against a small in-process fake of kraald's admin API on
//! a temporary unix socket. The fake proves the client side — argument handling, the unix
//! socket transport, the requests sent, rendering and exit codes — not the feature itself,
//! which kraald's own tests cover against real cgroups.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};

use kraal_api::kraal::v1::admin_server::{Admin, AdminServer};
use kraal_api::kraal::v1::{
    AppliedSetting, FreezePodRequest, FreezePodResponse, GetPodPolicyRequest, PodPolicyStatus,
    PodSummary, ThawPodRequest, ThawPodResponse, UpdatePodPolicyRequest,
};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

/// Every request the fake received, in order.
#[derive(Debug, Clone, PartialEq)]
enum Received {
    Freeze(FreezePodRequest),
    Thaw(ThawPodRequest),
    Policy(GetPodPolicyRequest),
    Update(UpdatePodPolicyRequest),
}

#[derive(Default, Clone)]
struct FakeAdmin {
    received: Arc<Mutex<Vec<Received>>>,
}

impl FakeAdmin {
    fn record(&self, request: Received) {
        self.received.lock().unwrap().push(request);
    }

    fn take(&self) -> Vec<Received> {
        std::mem::take(&mut *self.received.lock().unwrap())
    }
}

/// The only pod the fake knows: `kraal-e2e/web`, id `1234abcd…`, also found by name.
fn find(pod: &str) -> Result<PodSummary, Status> {
    let web = PodSummary {
        id: "1234abcd5678ef901234abcd5678ef90".into(),
        name: "web".into(),
        namespace: "kraal-e2e".into(),
        uid: "0c9e-uid".into(),
        cgroup_parent: "/kubepods/burstable/pod0c9e-uid".into(),
        state: "ready".into(),
    };
    if pod == "web" || pod == "kraal-e2e/web" || (!pod.is_empty() && web.id.starts_with(pod)) {
        Ok(web)
    } else {
        Err(Status::not_found(format!("pod {pod:?} not found")))
    }
}

fn policy(pod: PodSummary, annotations: HashMap<String, String>) -> PodPolicyStatus {
    let applied = annotations
        .get("kraal.dev/cpu-burst")
        .map(|_| {
            vec![
                AppliedSetting {
                    scope: "pod".into(),
                    file: "/sys/fs/cgroup/kubepods/burstable/pod0c9e-uid/cpu.max.burst".into(),
                    value: "50000".into(),
                    source: "kraal.dev/cpu-burst".into(),
                },
                AppliedSetting {
                    scope: "app".into(),
                    file: "/sys/fs/cgroup/kubepods/burstable/pod0c9e-uid/c1/cpu.max.burst".into(),
                    value: "50000".into(),
                    source: "kraal.dev/cpu-burst".into(),
                },
            ]
        })
        .unwrap_or_default();
    PodPolicyStatus {
        pod: Some(pod),
        annotations,
        policy_json: r#"{"qos_class":"online","cpu_burst_millis":500}"#.into(),
        applied,
        frozen: false,
        warnings: vec!["memory.high is not available on this host".into()],
        ports: None,
        bandwidth: Vec::new(),
    }
}

fn original_annotations() -> HashMap<String, String> {
    [
        ("kraal.dev/cpu-burst", "500m"),
        ("kraal.dev/memory-high", "64Mi"),
        ("kraal.dev/qos-class", "online"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

#[tonic::async_trait]
impl Admin for FakeAdmin {
    async fn freeze_pod(
        &self,
        request: Request<FreezePodRequest>,
    ) -> Result<Response<FreezePodResponse>, Status> {
        let request = request.into_inner();
        self.record(Received::Freeze(request.clone()));
        Ok(Response::new(FreezePodResponse {
            pod: Some(find(&request.pod)?),
            containers: vec!["app".into(), "sidecar".into()],
            already_frozen: false,
        }))
    }

    async fn thaw_pod(
        &self,
        request: Request<ThawPodRequest>,
    ) -> Result<Response<ThawPodResponse>, Status> {
        let request = request.into_inner();
        self.record(Received::Thaw(request.clone()));
        Ok(Response::new(ThawPodResponse {
            pod: Some(find(&request.pod)?),
            containers: vec![],
            was_frozen: false,
        }))
    }

    async fn get_pod_policy(
        &self,
        request: Request<GetPodPolicyRequest>,
    ) -> Result<Response<PodPolicyStatus>, Status> {
        let request = request.into_inner();
        self.record(Received::Policy(request.clone()));
        let pod = find(&request.pod)?;
        Ok(Response::new(policy(pod, original_annotations())))
    }

    async fn update_pod_policy(
        &self,
        request: Request<UpdatePodPolicyRequest>,
    ) -> Result<Response<PodPolicyStatus>, Status> {
        let request = request.into_inner();
        self.record(Received::Update(request.clone()));
        let pod = find(&request.pod)?;
        let mut annotations = original_annotations();
        annotations.extend(request.set);
        for key in &request.remove {
            annotations.remove(key);
        }
        Ok(Response::new(policy(pod, annotations)))
    }
}

/// The fake served on `<tempdir>/admin.sock` until the test's runtime ends.
struct Fake {
    admin: FakeAdmin,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

fn serve() -> Fake {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let admin = FakeAdmin::default();
    let service = AdminServer::new(admin.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(UnixListenerStream::new(listener))
            .await
            .unwrap();
    });
    Fake {
        admin,
        socket,
        _dir: dir,
    }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `kraalctl --socket <socket> <args>`, the environment's socket variable cleared.
async fn kraalctl(socket: &Path, args: &[&str]) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_kraalctl"));
    command
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("KRAAL_ADMIN_SOCKET");
    finish(command.output().await.unwrap())
}

fn finish(output: Output) -> Run {
    Run {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_human() {
    let fake = serve();
    let run = kraalctl(&fake.socket, &["pod", "policy", "kraal-e2e/web"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stderr, "");
    assert_eq!(
        run.stdout,
        "\
pod kraal-e2e/web (id 1234abcd5678…, ready, frozen: no)
annotations:
  kraal.dev/cpu-burst=500m
  kraal.dev/memory-high=64Mi
  kraal.dev/qos-class=online
applied:
  SCOPE  FILE                                                            VALUE  SOURCE
  pod    /sys/fs/cgroup/kubepods/burstable/pod0c9e-uid/cpu.max.burst     50000  kraal.dev/cpu-burst
  app    /sys/fs/cgroup/kubepods/burstable/pod0c9e-uid/c1/cpu.max.burst  50000  kraal.dev/cpu-burst
warnings:
  memory.high is not available on this host
"
    );
    assert_eq!(
        fake.admin.take(),
        [Received::Policy(GetPodPolicyRequest {
            pod: "kraal-e2e/web".into()
        })]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_json() {
    let fake = serve();
    let run = kraalctl(&fake.socket, &["-o", "json", "pod", "policy", "1234ab"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let value: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        value,
        serde_json::json!({
            "pod": {
                "id": "1234abcd5678ef901234abcd5678ef90",
                "name": "web",
                "namespace": "kraal-e2e",
                "uid": "0c9e-uid",
                "cgroup_parent": "/kubepods/burstable/pod0c9e-uid",
                "state": "ready",
            },
            "annotations": {
                "kraal.dev/cpu-burst": "500m",
                "kraal.dev/memory-high": "64Mi",
                "kraal.dev/qos-class": "online",
            },
            "policy": {"qos_class": "online", "cpu_burst_millis": 500},
            "applied": [
                {
                    "scope": "pod",
                    "file": "/sys/fs/cgroup/kubepods/burstable/pod0c9e-uid/cpu.max.burst",
                    "value": "50000",
                    "source": "kraal.dev/cpu-burst",
                },
                {
                    "scope": "app",
                    "file": "/sys/fs/cgroup/kubepods/burstable/pod0c9e-uid/c1/cpu.max.burst",
                    "value": "50000",
                    "source": "kraal.dev/cpu-burst",
                },
            ],
            "frozen": false,
            "warnings": ["memory.high is not available on this host"],
            "ports": null,
            "bandwidth": [],
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_and_thaw() {
    let fake = serve();
    let run = kraalctl(&fake.socket, &["pod", "freeze", "web", "--timeout", "2s"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "froze pod kraal-e2e/web: 2 containers (app, sidecar)\n"
    );

    // Without --timeout, kraald's default (0 on the wire).
    let run = kraalctl(&fake.socket, &["pod", "freeze", "web"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);

    let run = kraalctl(&fake.socket, &["pod", "thaw", "web"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout, "pod kraal-e2e/web was not frozen\n");

    assert_eq!(
        fake.admin.take(),
        [
            Received::Freeze(FreezePodRequest {
                pod: "web".into(),
                timeout_ms: 2000,
            }),
            Received::Freeze(FreezePodRequest {
                pod: "web".into(),
                timeout_ms: 0,
            }),
            Received::Thaw(ThawPodRequest { pod: "web".into() }),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_sets_and_removes() {
    let fake = serve();
    let run = kraalctl(
        &fake.socket,
        &[
            "pod",
            "update",
            "kraal-e2e/web",
            "kraal.dev/cpu-burst=200m",
            "kubernetes.io/egress-bandwidth=100M",
            "kraal.dev/memory-high-",
            "--dry-run",
        ],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.starts_with(
            "dry run: nothing changed\npod kraal-e2e/web (id 1234abcd5678…, ready, frozen: no)\n\
             annotations:\n  kraal.dev/cpu-burst=200m\n  kraal.dev/qos-class=online\n  \
             kubernetes.io/egress-bandwidth=100M\napplied:\n"
        ),
        "{}",
        run.stdout
    );

    let received = fake.admin.take();
    let [Received::Update(request)] = received.as_slice() else {
        panic!("expected one update, got {received:?}");
    };
    assert_eq!(request.pod, "kraal-e2e/web");
    assert_eq!(
        request.set,
        HashMap::from([
            ("kraal.dev/cpu-burst".to_owned(), "200m".to_owned()),
            (
                "kubernetes.io/egress-bandwidth".to_owned(),
                "100M".to_owned()
            ),
        ])
    );
    assert_eq!(request.remove, ["kraal.dev/memory-high"]);
    assert!(request.dry_run);

    // Without --dry-run, just the resulting policy.
    let run = kraalctl(
        &fake.socket,
        &["pod", "update", "web", "kraal.dev/qos-class-"],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.starts_with("pod kraal-e2e/web "),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("qos-class"), "{}", run.stdout);
    let received = fake.admin.take();
    let [Received::Update(request)] = received.as_slice() else {
        panic!("expected one update, got {received:?}");
    };
    assert!(request.set.is_empty());
    assert_eq!(request.remove, ["kraal.dev/qos-class"]);
    assert!(!request.dry_run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_change_is_a_usage_error_and_sends_nothing() {
    let fake = serve();
    let run = kraalctl(
        &fake.socket,
        &["pod", "update", "web", "kraal.dev/cpu-burst"],
    )
    .await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("kraal.dev/cpu-burst"), "{}", run.stderr);
    assert!(run.stderr.contains("KEY=VALUE"), "{}", run.stderr);
    assert_eq!(run.stdout, "");

    let run = kraalctl(
        &fake.socket,
        &[
            "pod",
            "update",
            "web",
            "kraal.dev/cpu-burst=1",
            "kraal.dev/cpu-burst-",
        ],
    )
    .await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr
            .starts_with("error: kraal.dev/cpu-burst is both set and removed\n"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("Usage: kraalctl pod update"),
        "{}",
        run.stderr
    );
    assert_eq!(fake.admin.take(), []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_exits_1_with_code_and_message() {
    let fake = serve();
    let run = kraalctl(&fake.socket, &["pod", "policy", "nope"]).await;
    assert_eq!(run.code, Some(1));
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr, "kraalctl: NotFound: pod \"nope\" not found\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_from_the_environment() {
    let fake = serve();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_kraalctl"))
        .args(["pod", "thaw", "web"])
        .env("KRAAL_ADMIN_SOCKET", &fake.socket)
        .output()
        .await
        .unwrap();
    let run = finish(output);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout, "pod kraal-e2e/web was not frozen\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_socket_exits_1_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let run = kraalctl(&socket, &["pod", "policy", "web"]).await;
    assert_eq!(run.code, Some(1));
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr,
        format!(
            "kraalctl: cannot reach kraald's admin socket {}: No such file or directory (os error 2) \
             (is kraald running? the admin socket is root only)\n",
            socket.display()
        )
    );
}
