//! A failed CRI call leaves one line in kraald's own log naming the call, the pod or
//! container, the gRPC code and the message (issue 15, item 8): before, only kubelet's log
//! had it.

use kraal_e2e::{Kraald, pod_config, shell_container};
use tonic::Code;

/// The lines of kraald's log that contain every one of `needles`.
fn lines_with(log: &str, needles: &[&str]) -> usize {
    log.lines()
        .filter(|line| needles.iter().all(|needle| line.contains(needle)))
        .count()
}

#[tokio::test]
async fn refused_calls_are_logged_with_pod_code_and_message() {
    let kraald = Kraald::start("").await;

    let mut pod = pod_config("call-log", false);
    pod.annotations
        .insert("kraal.dev/cpu-burst".into(), "500x".into());
    let refused = kraald
        .run_pod(pod)
        .await
        .expect_err("a bad annotation is refused");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let line = format!(
        "RunPodSandbox failed for pod kraal-e2e/call-log: InvalidArgument: {}",
        refused.message()
    );

    let unknown = "0000000000000000000000000000000000000000000000000000000000000000";
    let created = kraald
        .create(
            unknown,
            &pod_config("call-log", false),
            shell_container("app", "busybox", "true"),
        )
        .await
        .expect_err("no such pod");
    let create_line = format!(
        "CreateContainer failed for container \"app\" in sandbox {unknown}: {:?}: {}",
        created.code(),
        created.message()
    );

    let log = kraald.log();
    assert_eq!(lines_with(&log, &["WARN", &line]), 1, "{line}\nin\n{log}");
    assert_eq!(
        lines_with(&log, &["WARN", &create_line]),
        1,
        "{create_line}\nin\n{log}"
    );
}
