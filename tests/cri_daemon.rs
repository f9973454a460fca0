//! The daemon itself through its socket: handshake calls, socket hygiene, one instance per
//! root, config errors at start-up, clean shutdown.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::Duration;

use kraal_e2e::{Kraald, cri, run_kraald};

#[tokio::test]
async fn version_names_kraal_and_cri_v1() {
    let kraald = Kraald::start("").await;
    let version = kraald
        .runtime()
        .await
        .version(cri::VersionRequest {
            version: "v1".into(),
        })
        .await
        .expect("Version")
        .into_inner();
    assert_eq!(version.runtime_name, "kraal");
    assert_eq!(version.runtime_api_version, "v1");
    assert!(!version.runtime_version.is_empty());
}

#[tokio::test]
async fn status_reports_runtime_ready_and_why_network_is_not() {
    let kraald = Kraald::start("").await;
    let response = kraald
        .runtime()
        .await
        .status(cri::StatusRequest { verbose: true })
        .await
        .expect("Status")
        .into_inner();
    let conditions = response.status.expect("status").conditions;
    let find = |name: &str| {
        conditions
            .iter()
            .find(|c| c.r#type == name)
            .unwrap_or_else(|| panic!("no {name} condition in {conditions:?}"))
    };
    assert!(find("RuntimeReady").status);
    let network = find("NetworkReady");
    assert!(!network.status);
    assert!(!network.reason.is_empty() && !network.message.is_empty());
    let config = response
        .info
        .get("config")
        .expect("verbose info has the config");
    assert!(config.contains(&kraald.root.display().to_string()));
}

#[tokio::test]
async fn calls_not_built_yet_answer_unimplemented_with_their_name() {
    let kraald = Kraald::start("").await;
    let err = kraald
        .runtime()
        .await
        .checkpoint_container(cri::CheckpointContainerRequest::default())
        .await
        .expect_err("CheckpointContainer is not built");
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert!(
        err.message().contains("CheckpointContainer"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn socket_is_a_0660_socket_and_removed_on_sigterm() {
    let mut kraald = Kraald::start("").await;
    let meta = std::fs::symlink_metadata(&kraald.socket).expect("socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let status = kraald.stop();
    assert!(
        status.success(),
        "SIGTERM must be a clean exit, got {status}"
    );
    assert!(!kraald.socket.exists(), "socket left behind after shutdown");
}

#[tokio::test]
async fn a_second_kraald_on_the_same_root_is_refused() {
    let kraald = Kraald::start("").await;
    let other_socket = kraald.dir().join("other.sock");
    let (status, output) = run_kraald(
        &[
            "--config",
            kraald.config.to_str().expect("utf-8 path"),
            "--socket",
            other_socket.to_str().expect("utf-8 path"),
        ],
        Duration::from_secs(10),
    );
    assert!(!status.success());
    assert!(
        output.contains("another kraald") && output.contains(&kraald.pid().to_string()),
        "{output}"
    );
    // The first one is untouched.
    kraald
        .runtime()
        .await
        .version(cri::VersionRequest::default())
        .await
        .expect("first kraald still answers");
}

#[tokio::test]
async fn a_stale_socket_is_replaced_after_a_crash() {
    let mut kraald = Kraald::start("").await;
    kraald.kill9();
    assert!(kraald.socket.exists(), "SIGKILL leaves the socket file");
    kraald.start_again().await;
    kraald
        .runtime()
        .await
        .version(cri::VersionRequest::default())
        .await
        .expect("new kraald serves on the old path");
}

#[tokio::test]
async fn a_live_socket_of_another_server_is_not_stolen() {
    let dir = tempfile::Builder::new()
        .prefix("kraal-e2e-")
        .tempdir()
        .expect("tempdir");
    let socket = dir.path().join("busy.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let (status, output) = run_kraald(
        &[
            "--socket",
            socket.to_str().expect("utf-8"),
            "--root",
            dir.path().join("root").to_str().expect("utf-8"),
            "--state",
            dir.path().join("state").to_str().expect("utf-8"),
        ],
        Duration::from_secs(10),
    );
    assert!(!status.success());
    assert!(output.contains("already listening"), "{output}");
    assert!(socket.exists());
}

#[tokio::test]
async fn a_bad_config_stops_start_up_naming_the_key_and_reason() {
    let dir = tempfile::Builder::new()
        .prefix("kraal-e2e-")
        .tempdir()
        .expect("tempdir");
    let cases = [
        ("sokcet = \"/tmp/x.sock\"\n", "sokcet"),
        ("[log]\nformat = \"xml\"\n", "xml"),
        ("root = \"relative/dir\"\n", "absolute"),
        (
            "[registry.mirrors.\"docker.io\"]\nendpoints = [\"http://192.0.2.1:5000\"]\n",
            "192.0.2.1",
        ),
        ("root = [\n", "TOML"),
    ];
    for (text, expected) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).expect("write");
        let (status, output) = run_kraald(
            &["--config", path.to_str().expect("utf-8")],
            Duration::from_secs(10),
        );
        assert_eq!(status.code(), Some(2), "{text:?} -> {output}");
        assert!(
            output.to_lowercase().contains(&expected.to_lowercase()),
            "config {text:?}: message should mention {expected:?}: {output}"
        );
        assert!(output.contains("bad.toml"), "{output}");
    }
}
