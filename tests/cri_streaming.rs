//! Exec, attach and port-forward through the CRI calls and the URLs they return, spoken by
//! the byte-level SPDY/3.1 client of `kraal-stream-testclient` (as kubelet and crictl speak
//! it) against real busybox containers.

use std::time::{Duration, Instant};

use kraal_e2e::{Kraald, cri, host_binary_mounts, pod_config, shell_container};
use kraal_stream_testclient::remotecommand::{Session, status};
use kraal_stream_testclient::spdy_client::{SpdyClient, Stream, forwarded};
use kraal_stream_testclient::ws_client::{WsClient, WsMessage};
use tonic::Code;

const T: Duration = Duration::from_secs(20);
const SOCKTOOL: &str = env!("CARGO_BIN_EXE_socktool");
/// sh as PID 1 ignores SIGTERM unless it traps it; this one exits 0 on TERM.
const SERVE: &str = "trap 'exit 0' TERM; while true; do sleep 0.2; done";

/// A kraald with one running busybox container in a pod of its own network namespace.
async fn setup(name: &str, script: &str) -> (Kraald, String, String) {
    let kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;
    let pod_cfg = pod_config(name, false);
    let pod = kraald
        .run_pod(pod_cfg.clone())
        .await
        .expect("RunPodSandbox");
    let id = kraald
        .run_container(&pod, &pod_cfg, shell_container(name, &image, script))
        .await;
    (kraald, pod, id)
}

/// A kraald with a pod whose container runs socktool's echo servers on `ports` (a thread per
/// connection: busybox's `nc -ll` resets connections queued while it re-listens), returned
/// once every port listens.
async fn setup_echo(name: &str, ports: &[u16]) -> (Kraald, String, String) {
    let mut args = vec!["echo".to_owned()];
    args.extend(ports.iter().map(|p| format!("0.0.0.0:{p}")));
    setup_socktool(name, &args, ports).await
}

/// A kraald with a pod whose container runs `socktool <args>`, returned once every one of
/// `ports` listens.
async fn setup_socktool(name: &str, args: &[String], ports: &[u16]) -> (Kraald, String, String) {
    let kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;
    let pod_cfg = pod_config(name, false);
    let pod = kraald
        .run_pod(pod_cfg.clone())
        .await
        .expect("RunPodSandbox");
    let mut config = shell_container(name, &image, "");
    config.command = vec!["/socktool".into()];
    config.command.extend(args.iter().cloned());
    config.mounts = host_binary_mounts(&[(SOCKTOOL, "/socktool")]);
    let id = kraald.run_container(&pod, &pod_cfg, config).await;
    let deadline = Instant::now() + T;
    loop {
        let listening = kraald.exec_ok(&id, &["netstat", "-tln"]).await;
        if ports.iter().all(|p| listening.contains(&format!(":{p} "))) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "socktool {args:?} never listened: {listening}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (kraald, pod, id)
}

async fn exec_url(kraald: &Kraald, id: &str, cmd: &[&str], stdin: bool, tty: bool) -> String {
    exec_request(kraald, id, cmd, stdin, tty)
        .await
        .unwrap_or_else(|s| panic!("Exec: {s:?}"))
}

async fn exec_request(
    kraald: &Kraald,
    id: &str,
    cmd: &[&str],
    stdin: bool,
    tty: bool,
) -> Result<String, tonic::Status> {
    kraald
        .runtime()
        .await
        .exec(cri::ExecRequest {
            container_id: id.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty,
            stdin,
            stdout: true,
            stderr: !tty,
        })
        .await
        .map(|r| r.into_inner().url)
}

/// An exec or attach session on kraald's URL, over SPDY with remotecommand v4.
async fn open(url: &str, stdin: bool, tty: bool) -> Session {
    Session::open(url, "v4.channel.k8s.io", stdin, tty, false).await
}

#[tokio::test]
async fn exec_through_cri() {
    let (kraald, pod, id) = setup("exec", SERVE).await;

    // echo: stdout, an empty stderr, Success.
    let url = exec_url(&kraald, &id, &["echo", "hi"], false, false).await;
    let mut s = open(&url, false, false).await;
    assert_eq!(s.stdout.read_to_end(T).await, b"hi\n");
    assert_eq!(s.stderr.as_mut().expect("stderr").read_to_end(T).await, b"");
    assert_eq!(status(&s.error.read_to_end(T).await)["status"], "Success");

    // A URL works once.
    match SpdyClient::connect(&url, &["v4.channel.k8s.io"], false).await {
        Ok(_) => panic!("a used URL was accepted again"),
        Err(refused) => assert_eq!(refused.status, 404, "{refused:?}"),
    }

    // Exit code 3 and stderr.
    let url = exec_url(
        &kraald,
        &id,
        &["sh", "-c", "echo oops >&2; exit 3"],
        false,
        false,
    )
    .await;
    let mut s = open(&url, false, false).await;
    assert_eq!(
        s.stderr.as_mut().expect("stderr").read_to_end(T).await,
        b"oops\n"
    );
    let st = status(&s.error.read_to_end(T).await);
    assert_eq!(st["status"], "Failure", "{st}");
    assert_eq!(st["details"]["causes"][0]["reason"], "ExitCode", "{st}");
    assert_eq!(st["details"]["causes"][0]["message"], "3", "{st}");

    // stdin round trip, more than one SPDY window and pipe buffer.
    let url = exec_url(&kraald, &id, &["cat"], true, false).await;
    let mut s = open(&url, true, false).await;
    let input: Vec<u8> = (0..300 * 1024).map(|i| (i % 251) as u8).collect();
    let stdin = s.stdin.take().expect("stdin");
    let writer = {
        let input = input.clone();
        tokio::spawn(async move {
            stdin.write(&input).await;
            stdin.close().await;
        })
    };
    let out = s.stdout.read_to_end(T).await;
    writer.await.expect("writer");
    assert!(
        out == input,
        "cat returned {} of {} bytes",
        out.len(),
        input.len()
    );
    assert_eq!(status(&s.error.read_to_end(T).await)["status"], "Success");

    // A tty: the client's size reaches `stty size`, and so does a later resize.
    let url = exec_url(
        &kraald,
        &id,
        &["sh", "-c", "stty size; sleep 0.5; stty size"],
        false,
        true,
    )
    .await;
    let mut s = open(&url, false, true).await;
    let resize = s.resize.take().expect("resize");
    resize.write(br#"{"Width":120,"Height":40}"#).await;
    let first = s
        .stdout
        .read_until(T, |o| o.windows(2).any(|w| w == b"\r\n"))
        .await;
    assert_eq!(String::from_utf8_lossy(&first).trim(), "40 120");
    resize.write(br#"{"Width":100,"Height":30}"#).await;
    let rest = s.stdout.read_to_end(T).await;
    assert_eq!(String::from_utf8_lossy(&rest).trim(), "30 100");
    assert_eq!(status(&s.error.read_to_end(T).await)["status"], "Success");

    // An interactive shell on a tty: ^C interrupts the command it runs (SIGINT to the
    // terminal's foreground process group), not the session, and the shell goes on. `sleep
    // 30` outlasts T, so only a working ^C lets the next line through in time.
    let url = exec_url(&kraald, &id, &["sh"], true, true).await;
    let mut s = open(&url, true, true).await;
    let stdin = s.stdin.take().expect("stdin");
    let resize = s.resize.take().expect("resize");
    resize.write(br#"{"Width":80,"Height":24}"#).await;
    stdin.write(b"sleep 30; echo slept\n").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stdin.write(b"\x03").await;
    stdin.write(b"echo $((40+2))\n").await;
    let out = s
        .stdout
        .read_until(T, |o| o.windows(4).any(|w| w == b"42\r\n"))
        .await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("42\r\n"), "{text:?}");
    // (The terminal echoes the typed line, "…; echo slept"; the output would be a line of
    // its own.)
    assert!(!text.contains("\nslept\r\n"), "{text:?}");
    stdin.write(b"exit 7\n").await;
    s.stdout.read_to_end(T).await;
    let st = status(&s.error.read_to_end(T).await);
    assert_eq!(st["details"]["causes"][0]["message"], "7", "{st}");

    // The command really runs in the container (its own PID namespace: sh is PID 1).
    let url = exec_url(&kraald, &id, &["cat", "/proc/1/cmdline"], false, false).await;
    let mut s = open(&url, false, false).await;
    let cmdline = s.stdout.read_to_end(T).await;
    assert!(cmdline.starts_with(b"sh\0-c\0trap"), "{cmdline:?}");

    // Refusals at the CRI call: unknown container, empty command, frozen pod.
    let err = exec_request(&kraald, "nope", &["true"], false, false)
        .await
        .expect_err("unknown container");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = exec_request(&kraald, &id, &[], false, false)
        .await
        .expect_err("empty cmd");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let out = kraald.kraalctl(&["pod", "freeze", &pod]);
    assert!(out.status.success(), "freeze: {out:?}");
    let err = exec_request(&kraald, &id, &["true"], false, false)
        .await
        .expect_err("frozen pod");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let out = kraald.kraalctl(&["pod", "thaw", &pod]);
    assert!(out.status.success(), "thaw: {out:?}");
    exec_url(&kraald, &id, &["true"], false, false).await;
}

/// How many pty masters process `pid` holds open: descriptors of a `ptmx`, the node's
/// `/dev/ptmx` or a container devpts' `/dev/pts/ptmx`.
fn pty_masters(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .filter(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|target| target.file_name().is_some_and(|n| n == "ptmx"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Processes of the node whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(needle) {
            found.push(pid);
        }
    }
    found
}

/// The exec helpers one kraald runs (its children; other tests' kraalds run theirs).
fn exec_helpers_of(kraald_pid: u32) -> Vec<i32> {
    processes_with("kraal-monitor exec")
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                // The parent pid is the second field after the parenthesised command.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .and_then(|ppid| ppid.parse::<u32>().ok())
                    == Some(kraald_pid)
            })
        })
        .collect()
}

async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_client_killed_mid_exec_leaves_nothing() {
    let (kraald, _pod, id) = setup("vanish", SERVE).await;
    for tty in [false, true] {
        // A distinctive command line to look for on the node.
        let marker = if tty { "4243" } else { "4242" };
        let url = exec_url(
            &kraald,
            &id,
            &["sh", "-c", &format!("sleep {marker}; true")],
            true,
            tty,
        )
        .await;
        let s = open(&url, true, tty).await;
        let needle = format!("sleep {marker}");
        wait_until("the exec'd command did not start", || {
            !processes_with(&needle).is_empty()
        })
        .await;
        let helpers_before = exec_helpers_of(kraald.pid()).len();
        assert!(helpers_before >= 1, "no exec helper is running");
        assert_eq!(
            pty_masters(kraald.pid()),
            usize::from(tty),
            "pty masters of kraald"
        );
        s.client.kill().await;
        wait_until("the exec'd command outlived its client", || {
            processes_with(&needle).is_empty()
        })
        .await;
        wait_until("the exec helper outlived its client", || {
            exec_helpers_of(kraald.pid()).is_empty()
        })
        .await;
        // Nor does kraald keep the session's pty master.
        wait_until("kraald still holds a pty master", || {
            pty_masters(kraald.pid()) == 0
        })
        .await;
    }
    // Inside the container only its own processes are left (sh and its sleep).
    let ps = kraald.exec_ok(&id, &["ps", "-o", "args"]).await;
    assert!(!ps.contains("sleep 424"), "{ps}");
}

#[tokio::test]
async fn port_forward_to_an_echo_server_in_the_pod() {
    let (kraald, pod, _id) = setup_echo("echo", &[8080]).await;
    let url = kraald
        .runtime()
        .await
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: pod.clone(),
            port: vec![8080],
        })
        .await
        .expect("PortForward")
        .into_inner()
        .url;
    let (client, chosen) = SpdyClient::connect(&url, &["portforward.k8s.io"], false)
        .await
        .expect("upgrade");
    assert_eq!(chosen, "portforward.k8s.io");
    // The server listens in the pod's namespace only: the node's 8080 must not answer the
    // same way (usually nothing listens there at all).
    let started = Instant::now();
    let mut tasks = Vec::new();
    for req in 0..10usize {
        let rid = req.to_string();
        let mut error = client
            .open(&[
                ("streamtype", "error"),
                ("port", "8080"),
                ("requestid", &rid),
            ])
            .await;
        let mut data = client
            .open(&[
                ("streamtype", "data"),
                ("port", "8080"),
                ("requestid", &rid),
            ])
            .await;
        tasks.push(tokio::spawn(async move {
            let input: Vec<u8> = (0..1 << 20).map(|i: usize| (i * 7 + req) as u8).collect();
            let (writer, id) = (data.client_handle(), data.id);
            let writing = async {
                for chunk in input.chunks(16 * 1024) {
                    writer.send_data(id, false, chunk).await;
                }
                writer.send_data(id, true, &[]).await;
            };
            let (out, ()) = tokio::join!(data.read_to_end(T), writing);
            let error = String::from_utf8_lossy(&error.read_to_end(T).await).into_owned();
            assert!(
                out == input,
                "connection {req}: {} bytes back, {} dropped; error stream: {error:?}",
                out.len(),
                writer.dropped_bytes()
            );
            assert_eq!(error, "", "connection {req}");
        }));
    }
    for t in tasks {
        t.await.expect("connection task");
    }
    eprintln!("10 x 1 MiB echoed in {:?}", started.elapsed());

    // A port nobody listens on: the error stream says so.
    let mut error = client
        .open(&[
            ("streamtype", "error"),
            ("port", "8081"),
            ("requestid", "99"),
        ])
        .await;
    let _data = client
        .open(&[
            ("streamtype", "data"),
            ("port", "8081"),
            ("requestid", "99"),
        ])
        .await;
    let text = String::from_utf8(error.read_to_end(T).await).expect("utf-8");
    assert!(text.contains("8081"), "{text}");
    client.shutdown().await;

    // Unknown pods are refused at the call.
    let err = kraald
        .runtime()
        .await
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: "nope".into(),
            port: vec![80],
        })
        .await
        .expect_err("unknown pod");
    assert_eq!(err.code(), Code::NotFound);
}

async fn port_forward_url(kraald: &Kraald, pod: &str, port: i32) -> String {
    kraald
        .runtime()
        .await
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: pod.to_owned(),
            port: vec![port],
        })
        .await
        .expect("PortForward")
        .into_inner()
        .url
}

/// A pod whose server answers and closes (as busybox httpd's 404 or `nc -l -e echo` do).
/// kubectl copies a connection until the data stream ends, then waits for the error
/// stream's end, and only then closes its side: the forward must end without the client
/// closing first, over SPDY (several connections on one session) and over WebSocket.
#[tokio::test]
async fn port_forward_ends_when_the_pod_closes() {
    let args = ["reply", "0.0.0.0:9000", "hi-from-the-pod"].map(String::from);
    let (kraald, pod, _id) = setup_socktool("reply", &args, &[9000]).await;
    let (client, _) = SpdyClient::connect(
        &port_forward_url(&kraald, &pod, 9000).await,
        &["portforward.k8s.io"],
        false,
    )
    .await
    .expect("upgrade");
    for req in 0..3 {
        let (mut error, mut data) = client.open_forward("9000", &req.to_string()).await;
        let got = forwarded(&mut data, &mut error, T)
            .await
            .unwrap_or_else(|e| panic!("SPDY connection {req}, the pod closed first: {e}"));
        assert_eq!(
            String::from_utf8_lossy(&got.data),
            "hi-from-the-pod",
            "connection {req}"
        );
        assert_eq!(got.error, "", "connection {req}: a clean close is no error");
        // Only now does client-go close its local connection and so the data stream.
        data.close().await;
    }
    client.shutdown().await;

    let url = port_forward_url(&kraald, &pod, 9000).await;
    let mut ws = WsClient::connect(&format!("{url}?ports=9000"), &["v4.channel.k8s.io"])
        .await
        .unwrap_or_else(|r| panic!("upgrade refused: {r:?}"));
    let (channels, code) = ws
        .until_server_close(T)
        .await
        .unwrap_or_else(|e| panic!("WebSocket, the pod closed first: {e}"));
    assert_eq!(code, Some(1000));
    let mut want = 9000u16.to_le_bytes().to_vec();
    want.extend_from_slice(b"hi-from-the-pod");
    assert_eq!(channels.get(&0), Some(&want), "data channel");
    assert_eq!(
        channels.get(&1),
        Some(&9000u16.to_le_bytes().to_vec()),
        "error channel: the port, no error"
    );
}

#[tokio::test]
async fn port_forward_into_a_host_network_pod() {
    let kraald = Kraald::start("").await;
    let pod = kraald
        .run_pod(pod_config("hostpf", true))
        .await
        .expect("RunPodSandbox");
    // hostNetwork: the node's namespace, so a listener of this test is reachable.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        if let Ok((mut s, _)) = listener.accept().await {
            let _ = s.write_all(b"from the node\n").await;
        }
    });
    let url = kraald
        .runtime()
        .await
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: pod,
            port: vec![port.into()],
        })
        .await
        .expect("PortForward")
        .into_inner()
        .url;
    let (client, _) = SpdyClient::connect(&url, &["portforward.k8s.io"], false)
        .await
        .expect("upgrade");
    let p = port.to_string();
    let _error = client
        .open(&[("streamtype", "error"), ("port", &p), ("requestid", "0")])
        .await;
    let mut data = client
        .open(&[("streamtype", "data"), ("port", &p), ("requestid", "0")])
        .await;
    assert_eq!(data.read_to_end(T).await, b"from the node\n");
}

async fn attach_url(kraald: &Kraald, id: &str, stdin: bool) -> String {
    attach_url_tty(kraald, id, stdin, false).await
}

async fn attach_url_tty(kraald: &Kraald, id: &str, stdin: bool, tty: bool) -> String {
    kraald
        .runtime()
        .await
        .attach(cri::AttachRequest {
            container_id: id.to_string(),
            stdin,
            tty,
            stdout: true,
            // A terminal merges stderr into stdout; kubelet asks for no stderr with a tty.
            stderr: !tty,
        })
        .await
        .unwrap_or_else(|s| panic!("Attach: {s:?}"))
        .into_inner()
        .url
}

fn lines(out: &[u8]) -> usize {
    out.iter().filter(|b| **b == b'\n').count()
}

#[tokio::test]
async fn attach_to_running_containers() {
    let kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;
    let pod_cfg = pod_config("attach", false);
    let pod = kraald
        .run_pod(pod_cfg.clone())
        .await
        .expect("RunPodSandbox");
    let ticker = kraald
        .run_container(
            &pod,
            &pod_cfg,
            shell_container(
                "ticker",
                &image,
                "i=0; while :; do echo tick $i; echo tock $i >&2; i=$((i+1)); sleep 0.1; done",
            ),
        )
        .await;

    // Two clients at once, each sees the output as it comes, stdout and stderr apart.
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let url = attach_url(&kraald, &ticker, false).await;
        sessions.push(open(&url, false, false).await);
    }
    for s in sessions.iter_mut() {
        let out = s.stdout.read_until(T, |o| lines(o) >= 3).await;
        let text = String::from_utf8(out).expect("utf-8");
        assert!(
            text.lines().take(3).all(|l| l.starts_with("tick ")),
            "{text}"
        );
        let err = s
            .stderr
            .as_mut()
            .expect("stderr")
            .read_until(T, |o| lines(o) >= 2)
            .await;
        assert!(err.starts_with(b"tock "), "{err:?}");
    }
    // Detach: one politely, one by vanishing. The container runs on and a new client
    // still gets its output.
    let mut sessions = sessions.into_iter();
    if let Some(s) = sessions.next() {
        s.client.shutdown().await;
    }
    if let Some(s) = sessions.next() {
        s.client.kill().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        kraald.container_status(&ticker).await.state,
        cri::ContainerState::ContainerRunning as i32
    );
    let url = attach_url(&kraald, &ticker, false).await;
    let mut s = open(&url, false, false).await;
    let out = s.stdout.read_until(T, |o| lines(o) >= 2).await;
    assert!(out.starts_with(b"tick "), "{out:?}");
    s.client.kill().await;

    // A container without stdin refuses an attach that wants it.
    let url = attach_url(&kraald, &ticker, true).await;
    let mut s = open(&url, true, false).await;
    let st = status(&s.error.read_to_end(T).await);
    assert_eq!(st["status"], "Failure", "{st}");
    assert!(
        st["message"].as_str().unwrap_or("").contains("no stdin"),
        "{st}"
    );

    // stdin: forwarded; with stdin_once the first session's end closes it.
    let mut cfg = shell_container(
        "reader",
        &image,
        "while read l; do echo got $l; done; echo stdin closed",
    );
    cfg.stdin = true;
    cfg.stdin_once = true;
    let reader = kraald.run_container(&pod, &pod_cfg, cfg).await;
    let url = attach_url(&kraald, &reader, true).await;
    let mut s = open(&url, true, false).await;
    let stdin = s.stdin.take().expect("stdin");
    stdin.write(b"hello\n").await;
    let out = s
        .stdout
        .read_until(T, |o| o.windows(9).any(|w| w == b"got hello"))
        .await;
    assert!(out.ends_with(b"got hello\n"), "{out:?}");
    stdin.close().await;
    let rest = s.stdout.read_to_end(T).await;
    assert_eq!(rest, b"stdin closed\n");
    let status = kraald.wait_exited(&reader, T).await;
    assert_eq!(status.exit_code, 0);
    assert_eq!(
        kraald.container_status(&ticker).await.state,
        cri::ContainerState::ContainerRunning as i32
    );

    // Refusals at the call: a terminal attach to a container made without one, no stream
    // asked for at all, an unknown container, an exited one.
    let refused = |container_id: &str, tty: bool, stdout: bool| cri::AttachRequest {
        container_id: container_id.to_string(),
        stdin: false,
        tty,
        stdout,
        stderr: false,
    };
    let mut rt = kraald.runtime().await;
    let err = rt
        .attach(refused(&ticker, true, true))
        .await
        .expect_err("tty attach to a container without a tty");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("without a tty"), "{err:?}");
    let err = rt
        .attach(refused(&ticker, false, false))
        .await
        .expect_err("no streams");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = rt
        .attach(refused("nope", false, true))
        .await
        .expect_err("unknown container");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = rt
        .attach(refused(&reader, false, true))
        .await
        .expect_err("exited container");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
}

/// Channel data of a WebSocket exec until the server closes: (stdout, stderr, status).
async fn ws_collect(ws: &mut WsClient) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (mut out, mut err, mut status) = (Vec::new(), Vec::new(), Vec::new());
    loop {
        match ws.recv_timeout(T).await {
            Some(WsMessage::Binary(b)) => match b.split_first() {
                Some((1, d)) => out.extend_from_slice(d),
                Some((2, d)) => err.extend_from_slice(d),
                Some((3, d)) => status.extend_from_slice(d),
                other => panic!("unexpected message {other:?}"),
            },
            Some(WsMessage::Close(code)) => {
                assert_eq!(code, Some(1000));
                ws.close().await;
                return (out, err, status);
            }
            other => panic!("exec over WebSocket: {other:?} before Close"),
        }
    }
}

/// Clients that speak WebSocket to the URLs directly (kubectl 1.30+ and client-go's
/// WebSocket executor): exec on v5 and v4, and port-forward to two ports of a pod at once.
#[tokio::test]
async fn websocket_exec_and_port_forward() {
    let (kraald, pod, id) = setup_echo("ws", &[8080, 9090]).await;

    let url = exec_url(
        &kraald,
        &id,
        &["sh", "-c", "echo out; echo err >&2; exit 3"],
        false,
        false,
    )
    .await;
    let mut ws = WsClient::connect(&url, &["v5.channel.k8s.io", "v4.channel.k8s.io"])
        .await
        .unwrap_or_else(|r| panic!("upgrade refused: {r:?}"));
    assert_eq!(ws.protocol.as_deref(), Some("v5.channel.k8s.io"));
    let (out, err, st) = ws_collect(&mut ws).await;
    assert_eq!(
        (out.as_slice(), err.as_slice()),
        (&b"out\n"[..], &b"err\n"[..])
    );
    let st = status(&st);
    assert_eq!(st["details"]["causes"][0]["message"], "3", "{st}");

    // v5's close channel ends stdin: cat sees EOF, echoes everything and exits 0.
    let url = exec_url(&kraald, &id, &["cat"], true, false).await;
    let mut ws = WsClient::connect(&url, &["v5.channel.k8s.io"])
        .await
        .unwrap_or_else(|r| panic!("upgrade refused: {r:?}"));
    let input: Vec<u8> = (0..200_000).map(|i| (i % 241) as u8).collect();
    for chunk in input.chunks(16 * 1024) {
        ws.send(0, chunk).await;
    }
    ws.send(255, &[0]).await;
    let (out, _, st) = ws_collect(&mut ws).await;
    assert!(
        out == input,
        "cat returned {} of {} bytes",
        out.len(),
        input.len()
    );
    assert_eq!(status(&st)["status"], "Success");

    // Port-forward: the ports come in the query; each port gets a data and an error
    // channel (0/1 for the first, 2/3 for the second), each opened by a frame carrying the
    // port number.
    let url = kraald
        .runtime()
        .await
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: pod,
            port: vec![8080, 9090],
        })
        .await
        .expect("PortForward")
        .into_inner()
        .url;
    let mut ws = WsClient::connect(&format!("{url}?ports=8080,9090"), &["v4.channel.k8s.io"])
        .await
        .unwrap_or_else(|r| panic!("upgrade refused: {r:?}"));
    let mut opened = Vec::new();
    for _ in 0..4 {
        match ws.recv_timeout(T).await {
            Some(WsMessage::Binary(b)) if b.len() == 3 => {
                opened.push((b[0], u16::from_le_bytes([b[1], b[2]])))
            }
            other => panic!("expected a port frame, got {other:?}"),
        }
    }
    opened.sort();
    assert_eq!(opened, vec![(0, 8080), (1, 8080), (2, 9090), (3, 9090)]);
    let first: Vec<u8> = (0..(1usize << 20)).map(|i| (i * 13) as u8).collect();
    let second: Vec<u8> = (0..(1usize << 20)).map(|i| (i * 7 + 1) as u8).collect();
    let (mut got_first, mut got_second) = (Vec::new(), Vec::new());
    let mut sent = 0;
    while got_first.len() < first.len() || got_second.len() < second.len() {
        if sent < first.len() {
            let end = (sent + 64 * 1024).min(first.len());
            ws.send(0, &first[sent..end]).await;
            ws.send(2, &second[sent..end]).await;
            sent = end;
        }
        while got_first.len() < sent || got_second.len() < sent {
            match ws.recv_timeout(T).await {
                Some(WsMessage::Binary(b)) if b[0] == 0 => got_first.extend_from_slice(&b[1..]),
                Some(WsMessage::Binary(b)) if b[0] == 2 => got_second.extend_from_slice(&b[1..]),
                other => panic!("port-forward over WebSocket: unexpected {other:?}"),
            }
        }
    }
    assert!(
        got_first == first,
        "port 8080: {} bytes back",
        got_first.len()
    );
    assert!(
        got_second == second,
        "port 9090: {} bytes back",
        got_second.len()
    );
    ws.close().await;
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Reads `stream` until `needle` arrives, failing with what did arrive if it does not.
async fn expect_output(stream: &mut Stream, needle: &[u8]) {
    let out = stream.read_until(T, |o| contains(o, needle)).await;
    assert!(
        contains(&out, needle),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
}

/// A tty container (busybox `sh` on a terminal its monitor holds): attach with a tty, the
/// client's size reaches `stty size`, a command's output comes back, and the CRI log has
/// the terminal's output as stdout. Detaching leaves the shell running.
#[tokio::test]
async fn attach_to_a_tty_container() {
    let kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;
    let mut pod_cfg = pod_config("attach-tty", false);
    let log_dir = kraald.dir().join("logs");
    pod_cfg.log_directory = log_dir.to_string_lossy().into_owned();
    let pod = kraald
        .run_pod(pod_cfg.clone())
        .await
        .expect("RunPodSandbox");
    let mut cfg = shell_container("shell", &image, "");
    cfg.command = vec!["sh".into()];
    cfg.tty = true;
    cfg.stdin = true;
    let id = kraald.run_container(&pod, &pod_cfg, cfg).await;

    let url = attach_url_tty(&kraald, &id, true, true).await;
    let mut s = open(&url, true, true).await;
    let stdin = s.stdin.take().expect("stdin");
    let resize = s.resize.take().expect("resize");
    resize.write(br#"{"Width":100,"Height":30}"#).await;
    // The size frame and the input go to the monitor on one connection, in order.
    stdin.write(b"stty size\n").await;
    expect_output(&mut s.stdout, b"30 100\r\n").await;
    // A later resize, then a round trip. The terminal echoes the command line itself, so
    // the output is told apart by the size line before it.
    resize.write(br#"{"Width":120,"Height":40}"#).await;
    stdin.write(b"stty size; echo hi\n").await;
    expect_output(&mut s.stdout, b"40 120\r\nhi\r\n").await;
    assert!(s.stderr.is_none());

    // Detach: the shell runs on.
    s.client.shutdown().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        kraald.container_status(&id).await.state,
        cri::ContainerState::ContainerRunning as i32
    );

    // The CRI log: the terminal's output, all of it as stdout.
    let log_path = log_dir.join("shell.log");
    let mut log = String::new();
    for _ in 0..100 {
        log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains(" stdout F hi") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(log.contains(" stdout F hi"), "{log}");
    assert!(log.contains(" stdout F 40 120"), "{log}");
    assert!(!log.contains(" stderr "), "{log}");

    // A new attach gets what the shell prints from then on.
    let url = attach_url_tty(&kraald, &id, true, true).await;
    let mut s = open(&url, true, true).await;
    let stdin = s.stdin.take().expect("stdin");
    stdin.write(b"echo $((6*7))\n").await;
    expect_output(&mut s.stdout, b"42\r\n").await;
    // A tty container has TERM=xterm, as with containerd and CRI-O.
    stdin.write(b"echo T=$TERM\n").await;
    expect_output(&mut s.stdout, b"T=xterm\r\n").await;
    // The container's terminal is its init's controlling terminal: ^C interrupts what the
    // shell runs (`sleep 30` outlasts T), and the shell goes on.
    stdin.write(b"sleep 30\n").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stdin.write(b"\x03").await;
    stdin.write(b"echo $((6*8))\n").await;
    expect_output(&mut s.stdout, b"48\r\n").await;
    // `exit` ends the shell: the container exits 0 and the session ends.
    stdin.write(b"exit\n").await;
    s.stdout.read_to_end(T).await;
    assert_eq!(kraald.wait_exited(&id, T).await.exit_code, 0);
}

// stdin as kubectl and crictl send it. Our client behaves as client-go does: a FIN from
// the server on the stdin stream makes it close its side and send nothing more, so these
// fail against a server that half-closes stdin early.

/// Typed well after the session opened, in pieces, through `cat`.
#[tokio::test]
async fn exec_stdin_sent_late_arrives() {
    let (kraald, _pod, id) = setup("late-stdin", SERVE).await;
    let url = exec_url(&kraald, &id, &["cat"], true, false).await;
    let mut s = open(&url, true, false).await;
    let stdin = s.stdin.take().expect("stdin");
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for chunk in [&b"one\n"[..], b"two\n", b"three\n"] {
            stdin.write(chunk).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        stdin.close().await;
    });
    let out = s.stdout.read_to_end(T).await;
    writer.await.expect("writer");
    assert_eq!(
        String::from_utf8_lossy(&out),
        "one\ntwo\nthree\n",
        "{} bytes were written after kraald closed stdin",
        s.client.dropped_bytes()
    );
    assert_eq!(status(&s.error.read_to_end(T).await)["status"], "Success");
}

/// 3 MB piped into a command that already runs (as `kubectl cp` pipes its tar), checked
/// inside the container.
#[tokio::test]
async fn exec_3mb_stdin_arrives_intact() {
    let (kraald, _pod, id) = setup("big-stdin", SERVE).await;
    let input: Vec<u8> = (0..3 << 20).map(|i: usize| (i % 253) as u8).collect();
    let url = exec_url(
        &kraald,
        &id,
        &[
            "sh",
            "-c",
            "echo ready; cat > /tmp/in; wc -c < /tmp/in; cat /tmp/in",
        ],
        true,
        false,
    )
    .await;
    let mut s = open(&url, true, false).await;
    let ready = s.stdout.read_until(T, |o| o.ends_with(b"ready\n")).await;
    assert_eq!(ready, b"ready\n");
    let stdin = s.stdin.take().expect("stdin");
    let writer = {
        let input = input.clone();
        tokio::spawn(async move {
            stdin.write(&input).await;
            stdin.close().await;
        })
    };
    let out = s.stdout.read_to_end(Duration::from_secs(60)).await;
    writer.await.expect("writer");
    let size = format!("{}\n", input.len());
    assert!(
        out.starts_with(size.as_bytes()) && out[size.len()..] == input[..],
        "the command got {:?} ({} bytes dropped after kraald closed stdin)",
        String::from_utf8_lossy(&out[..out.len().min(16)]),
        s.client.dropped_bytes()
    );
    assert_eq!(status(&s.error.read_to_end(T).await)["status"], "Success");
}

/// `attach -i`: a line typed 500 ms after attaching reaches the container.
#[tokio::test]
async fn attach_stdin_sent_late_arrives() {
    let kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;
    let pod_cfg = pod_config("late-attach", false);
    let pod = kraald
        .run_pod(pod_cfg.clone())
        .await
        .expect("RunPodSandbox");
    let mut cfg = shell_container("reader", &image, "while read l; do echo got $l; done");
    cfg.stdin = true;
    let reader = kraald.run_container(&pod, &pod_cfg, cfg).await;
    let url = attach_url(&kraald, &reader, true).await;
    let mut s = open(&url, true, false).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.stdin.as_ref().expect("stdin").write(b"hello\n").await;
    let out = s
        .stdout
        .read_until(T, |o| o.ends_with(b"got hello\n"))
        .await;
    assert_eq!(
        String::from_utf8_lossy(&out),
        "got hello\n",
        "{} bytes were written after kraald closed stdin",
        s.client.dropped_bytes()
    );
    s.client.shutdown().await;
}

/// A tty exec is a terminal inside the container, as with containerd: `tty` names a
/// /dev/pts/N of the container's own devpts (one that exists there), and TERM=xterm is set
/// unless the container's environment has a TERM. A non-tty exec gets no TERM.
#[tokio::test]
async fn a_tty_exec_is_a_terminal_of_the_container() {
    let (kraald, _pod, id) = setup("tty-exec", SERVE).await;

    let url = exec_url(
        &kraald,
        &id,
        &["sh", "-c", "tty; echo TERM=$TERM; ls -l $(tty)"],
        false,
        true,
    )
    .await;
    let mut s = open(&url, false, true).await;
    let out = String::from_utf8_lossy(&s.stdout.read_to_end(T).await).into_owned();
    let lines: Vec<&str> = out.lines().map(|l| l.trim_end_matches('\r')).collect();
    let pts = lines.first().copied().unwrap_or("");
    let n = pts.strip_prefix("/dev/pts/").unwrap_or("");
    assert!(
        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()),
        "tty said {pts:?}: {out:?}"
    );
    assert_eq!(lines.get(1).copied(), Some("TERM=xterm"), "{out:?}");
    // `ls -l` found it in the container: a character device under that name.
    let ls = lines.get(2).copied().unwrap_or("");
    assert!(ls.starts_with('c') && ls.ends_with(pts), "{out:?}");
    assert_eq!(status(&s.error.read_to_end(T).await)["status"], "Success");

    // A TERM the command sets is its own.
    let url = exec_url(
        &kraald,
        &id,
        &["env", "TERM=vt100", "sh", "-c", "echo TERM=$TERM"],
        false,
        true,
    )
    .await;
    let mut s = open(&url, false, true).await;
    let out = s.stdout.read_to_end(T).await;
    assert_eq!(String::from_utf8_lossy(&out).trim_end(), "TERM=vt100");

    // No terminal, no TERM.
    let url = exec_url(&kraald, &id, &["sh", "-c", "echo TERM=$TERM"], false, false).await;
    let mut s = open(&url, false, false).await;
    assert_eq!(s.stdout.read_to_end(T).await, b"TERM=\n");
}

/// A container whose environment names a TERM keeps it in its tty execs.
#[tokio::test]
async fn a_tty_exec_keeps_the_containers_term() {
    let kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;
    let pod_cfg = pod_config("own-term", false);
    let pod = kraald
        .run_pod(pod_cfg.clone())
        .await
        .expect("RunPodSandbox");
    let mut cfg = shell_container("serve", &image, SERVE);
    cfg.envs = vec![cri::KeyValue {
        key: "TERM".into(),
        value: "screen".into(),
    }];
    let id = kraald.run_container(&pod, &pod_cfg, cfg).await;
    let url = exec_url(&kraald, &id, &["sh", "-c", "echo TERM=$TERM"], false, true).await;
    let mut s = open(&url, false, true).await;
    let out = s.stdout.read_to_end(T).await;
    assert_eq!(String::from_utf8_lossy(&out).trim_end(), "TERM=screen");
}
