//! Exec, attach and port-forward over SPDY/3.1 with a hand-written client against real
//! processes.

mod common;

use std::time::Duration;

use common::remotecommand::{Session as Exec, status};
use common::spdy_client::{Event as SEvent, SpdyClient, Stream};
use common::{Event, echo_server, exec, init_tracing, process_alive, server};
use kraal_stream::{AttachRequest, PortForwardRequest, ServerConfig};
use sha2::{Digest, Sha256};

const T: Duration = Duration::from_secs(10);

#[test]
fn client_dictionary_is_the_spdy3_one() {
    let d = common::spdy_client::dictionary();
    assert_eq!(d.len(), 1423);
    assert_eq!(
        hex::encode(Sha256::digest(&d)),
        "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"
    );
}

#[tokio::test]
async fn exec_echo_hi() {
    init_tracing();
    let (srv, rt) = server(ServerConfig::default()).await;
    let url = srv
        .get_exec_url(exec(&["echo", "hi"], false, false))
        .unwrap();
    let mut e = Exec::open(&url, "v4.channel.k8s.io", false, false, true).await;
    assert_eq!(e.stdout.read_to_end(T).await, b"hi\n");
    assert_eq!(e.stderr.as_mut().unwrap().read_to_end(T).await, b"");
    let st = status(&e.error.read_to_end(T).await);
    assert_eq!(st["status"], "Success");
    rt.wait_for(T, |e| matches!(e, Event::ExecEnded { code: 0, .. }))
        .await;
    // The server ends the session with GOAWAY once the status is out.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(e.client.goaway.lock().unwrap().map(|g| g.1), Some(0));
}

#[tokio::test]
async fn exec_exit_code_3_is_reported() {
    let (srv, _rt) = server(ServerConfig::default()).await;
    let url = srv
        .get_exec_url(exec(&["sh", "-c", "echo oops >&2; exit 3"], false, false))
        .unwrap();
    let mut e = Exec::open(&url, "v4.channel.k8s.io", false, false, true).await;
    assert_eq!(e.stderr.as_mut().unwrap().read_to_end(T).await, b"oops\n");
    let st = status(&e.error.read_to_end(T).await);
    assert_eq!(st["status"], "Failure");
    assert_eq!(st["reason"], "NonZeroExitCode");
    assert_eq!(st["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(st["details"]["causes"][0]["message"], "3");
}

#[tokio::test]
async fn older_protocols_carry_text_errors() {
    let (srv, _rt) = server(ServerConfig::default()).await;
    for proto in ["v3.channel.k8s.io", "v2.channel.k8s.io"] {
        let url = srv
            .get_exec_url(exec(&["sh", "-c", "exit 3"], false, false))
            .unwrap();
        let mut e = Exec::open(&url, proto, false, false, false).await;
        let text = String::from_utf8(e.error.read_to_end(T).await).unwrap();
        assert!(text.contains("exit status 3"), "{proto}: {text}");
    }
    let url = srv.get_exec_url(exec(&["true"], false, false)).unwrap();
    let mut e = Exec::open(&url, "v3.channel.k8s.io", false, false, false).await;
    assert_eq!(e.error.read_to_end(T).await, b"");
}

async fn stdin_roundtrip(flow: bool, size: usize) {
    let (srv, _rt) = server(ServerConfig::default()).await;
    let url = srv.get_exec_url(exec(&["cat"], true, false)).unwrap();
    let mut e = Exec::open(&url, "v4.channel.k8s.io", true, false, flow).await;
    let input: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let stdin = e.stdin.take().unwrap();
    let writer = {
        let input = input.clone();
        tokio::spawn(async move {
            stdin.write(&input).await;
            stdin.close().await;
        })
    };
    let out = e.stdout.read_to_end(T).await;
    writer.await.unwrap();
    assert_eq!(out.len(), input.len());
    assert!(out == input);
    assert_eq!(status(&e.error.read_to_end(T).await)["status"], "Success");
}

#[tokio::test]
async fn exec_stdin_roundtrip_with_flow_control() {
    stdin_roundtrip(true, 300 * 1024).await;
}

#[tokio::test]
async fn exec_stdin_roundtrip_without_window_updates() {
    // Go's spdystream never sends WINDOW_UPDATE: more than 64 KiB must still flow.
    stdin_roundtrip(false, 1 << 20).await;
}

#[tokio::test]
async fn exec_tty_resize_reaches_stty() {
    let (srv, _rt) = server(ServerConfig::default()).await;
    let url = srv
        .get_exec_url(exec(
            &["sh", "-c", "stty size; sleep 0.3; stty size"],
            false,
            true,
        ))
        .unwrap();
    let mut e = Exec::open(&url, "v4.channel.k8s.io", false, true, true).await;
    let resize = e.resize.as_ref().unwrap();
    resize.write(br#"{"Width":120,"Height":40}"#).await;
    let first = e
        .stdout
        .read_until(T, |o| o.windows(2).any(|w| w == b"\r\n"))
        .await;
    assert_eq!(String::from_utf8_lossy(&first).trim(), "40 120");
    // A later resize, split across two frames, reaches the running command too.
    resize.write(br#"{"Width":100,"#).await;
    resize.write(br#""Height":30}"#).await;
    let rest = e.stdout.read_to_end(T).await;
    assert_eq!(String::from_utf8_lossy(&rest).trim(), "30 100");
    assert_eq!(status(&e.error.read_to_end(T).await)["status"], "Success");
}

#[tokio::test]
async fn attach_to_a_printing_container_with_two_clients() {
    let (srv, rt) = server(ServerConfig::default()).await;
    let pid = rt.start_container(
        "ticker",
        "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.1; done",
    );
    let req = AttachRequest {
        container_id: "ticker".into(),
        tty: false,
        stdin: false,
        stdout: true,
        stderr: true,
    };
    let mut clients = Vec::new();
    for _ in 0..2 {
        let url = srv.get_attach_url(req.clone()).unwrap();
        clients.push(Exec::open(&url, "v4.channel.k8s.io", false, false, true).await);
    }
    for c in clients.iter_mut() {
        let out = c
            .stdout
            .read_until(T, |o| o.iter().filter(|b| **b == b'\n').count() >= 3)
            .await;
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.lines().take(3).all(|l| l.starts_with("tick ")),
            "{text}"
        );
    }
    // Detach: both clients hang up; the container keeps running.
    for c in clients {
        c.client.kill().await;
    }
    rt.wait_for(T, |e| matches!(e, Event::AttachEnded { gone: true, .. }))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(process_alive(pid));
    assert_eq!(
        rt.events()
            .iter()
            .filter(|e| matches!(e, Event::AttachEnded { .. }))
            .count(),
        2
    );
    wait_idle(&srv).await;
}

async fn wait_idle(srv: &kraal_stream::Server<common::FakeRuntime>) {
    for _ in 0..200 {
        if srv.active_streams() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{} sessions still active", srv.active_streams());
}

#[tokio::test]
async fn port_forward_1mb_over_10_parallel_connections() {
    let (srv, rt) = server(ServerConfig::default()).await;
    let port = echo_server().await;
    let url = srv
        .get_port_forward_url(PortForwardRequest {
            pod_sandbox_id: "pod1".into(),
            ports: vec![port],
        })
        .unwrap();
    let (client, chosen) = SpdyClient::connect(&url, &["portforward.k8s.io"], true)
        .await
        .unwrap();
    assert_eq!(chosen, "portforward.k8s.io");
    let port_s = port.to_string();
    let mut tasks = Vec::new();
    for req_id in 0..10 {
        let rid = req_id.to_string();
        let mut error = client
            .open(&[
                ("streamtype", "error"),
                ("port", &port_s),
                ("requestid", &rid),
            ])
            .await;
        let mut data = client
            .open(&[
                ("streamtype", "data"),
                ("port", &port_s),
                ("requestid", &rid),
            ])
            .await;
        tasks.push(tokio::spawn(async move {
            let input: Vec<u8> = (0..(1 << 20))
                .map(|i: usize| (i * 7 + req_id) as u8)
                .collect();
            // Writes go through a second handle to the same stream id.
            let handle = data_id_client(&data);
            let reading = async { data.read_to_end(Duration::from_secs(30)).await };
            let writing = async {
                data_write(&input, &handle).await;
            };
            let _ = &mut error;
            let (out, _) = tokio::join!(reading, writing);
            assert!(out == input, "request {req_id}: got {} bytes", out.len());
            assert_eq!(error.read_to_end(T).await, b"");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    rt.wait_for(T, |e| matches!(e, Event::PortForwardEnded { .. }))
        .await;
    client.shutdown().await;
    wait_idle(&srv).await;
}

/// (client, stream id) so a task can write while another reads.
fn data_id_client(s: &Stream) -> (SpdyClient, u32) {
    (s.client_handle(), s.id)
}

async fn data_write(input: &[u8], (client, id): &(SpdyClient, u32)) {
    for chunk in input.chunks(16 * 1024) {
        client.send_data(*id, false, chunk).await;
    }
    client.send_data(*id, true, &[]).await;
}

#[tokio::test]
async fn port_forward_error_reaches_the_error_stream() {
    let (srv, _rt) = server(ServerConfig::default()).await;
    // Nothing listens on this port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = srv
        .get_port_forward_url(PortForwardRequest {
            pod_sandbox_id: "pod1".into(),
            ports: vec![],
        })
        .unwrap();
    let (client, _) = SpdyClient::connect(&url, &["portforward.k8s.io"], false)
        .await
        .unwrap();
    let p = port.to_string();
    let mut error = client
        .open(&[("streamtype", "error"), ("port", &p), ("requestid", "0")])
        .await;
    let _data = client
        .open(&[("streamtype", "data"), ("port", &p), ("requestid", "0")])
        .await;
    let text = String::from_utf8(error.read_to_end(T).await).unwrap();
    assert!(
        text.contains(&format!("error forwarding port {port} to pod pod1")),
        "{text}"
    );
}

#[tokio::test]
async fn a_url_works_once() {
    let (srv, _rt) = server(ServerConfig::default()).await;
    let url = srv.get_exec_url(exec(&["true"], false, false)).unwrap();
    let mut e = Exec::open(&url, "v4.channel.k8s.io", false, false, false).await;
    e.error.read_to_end(T).await;
    let refused = SpdyClient::connect(&url, &["v4.channel.k8s.io"], false)
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status, 404);
    assert!(refused.body.contains("already used"), "{}", refused.body);
}

#[tokio::test]
async fn an_expired_url_is_refused() {
    let cfg = ServerConfig {
        token_ttl: Duration::from_millis(200),
        ..Default::default()
    };
    let (srv, _rt) = server(cfg).await;
    let url = srv.get_exec_url(exec(&["true"], false, false)).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let refused = SpdyClient::connect(&url, &["v4.channel.k8s.io"], false)
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status, 410);
    assert!(refused.body.contains("expired"), "{}", refused.body);
}

#[tokio::test]
async fn unknown_protocol_versions_are_refused_and_the_url_kept() {
    let (srv, _rt) = server(ServerConfig::default()).await;
    let url = srv.get_exec_url(exec(&["true"], false, false)).unwrap();
    let refused = SpdyClient::connect(&url, &["v9.channel.k8s.io"], false)
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status, 403);
    assert!(refused.headers["x-accepted-stream-protocol-versions"].contains("v4.channel.k8s.io"));
    let mut e = Exec::open(&url, "v4.channel.k8s.io", false, false, false).await;
    assert_eq!(status(&e.error.read_to_end(T).await)["status"], "Success");
}

#[tokio::test]
async fn concurrent_stream_limit() {
    let cfg = ServerConfig {
        max_concurrent_streams: 1,
        ..Default::default()
    };
    let (srv, _rt) = server(cfg).await;
    let first = srv
        .get_exec_url(exec(&["sleep", "5"], false, false))
        .unwrap();
    let e = Exec::open(&first, "v4.channel.k8s.io", false, false, false).await;
    let second = srv.get_exec_url(exec(&["true"], false, false)).unwrap();
    let refused = SpdyClient::connect(&second, &["v4.channel.k8s.io"], false)
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status, 503);
    e.client.kill().await;
    wait_idle(&srv).await;
    // The refused URL was not consumed.
    let mut e = Exec::open(&second, "v4.channel.k8s.io", false, false, false).await;
    assert_eq!(status(&e.error.read_to_end(T).await)["status"], "Success");
}

#[tokio::test]
async fn a_client_killed_mid_stream_leaves_nothing_behind() {
    let (srv, rt) = server(ServerConfig::default()).await;
    let url = srv
        .get_exec_url(exec(
            &["sh", "-c", "while :; do echo x; sleep 0.05; done"],
            true,
            false,
        ))
        .unwrap();
    let mut e = Exec::open(&url, "v4.channel.k8s.io", true, false, false).await;
    e.stdout.read_until(T, |o| o.len() >= 4).await;
    let Event::ExecStarted { pid } = rt
        .wait_for(T, |e| matches!(e, Event::ExecStarted { .. }))
        .await
    else {
        unreachable!()
    };
    assert!(process_alive(pid));
    // Kill the client: its socket closes without a goodbye.
    e.client.kill().await;
    drop(e);
    let ended = rt
        .wait_for(T, |e| matches!(e, Event::ExecEnded { .. }))
        .await;
    assert_eq!(
        ended,
        Event::ExecEnded {
            pid,
            code: -1,
            gone: true,
            reaped: true
        }
    );
    assert!(!process_alive(pid));
    wait_idle(&srv).await;
}

#[tokio::test]
async fn an_idle_session_is_closed() {
    let cfg = ServerConfig {
        idle_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let (srv, rt) = server(cfg).await;
    let url = srv
        .get_exec_url(exec(&["sleep", "30"], false, false))
        .unwrap();
    let mut e = Exec::open(&url, "v4.channel.k8s.io", false, false, false).await;
    let ended = rt
        .wait_for(T, |e| matches!(e, Event::ExecEnded { .. }))
        .await;
    assert!(matches!(
        ended,
        Event::ExecEnded {
            gone: true,
            reaped: true,
            ..
        }
    ));
    // The connection is gone: the client's streams end.
    e.stdout.read_to_end(T).await;
    wait_idle(&srv).await;
}

#[tokio::test]
async fn pings_are_answered_and_streams_can_be_reset() {
    let (srv, rt) = server(ServerConfig::default()).await;
    let url = srv.get_exec_url(exec(&["cat"], true, false)).unwrap();
    let mut e = Exec::open(&url, "v4.channel.k8s.io", true, false, false).await;
    e.client.ping(1).await;
    let stdin = e.stdin.take().unwrap();
    stdin.write(b"abc").await;
    assert_eq!(e.stdout.read_until(T, |o| o.len() >= 3).await, b"abc");
    // Resetting stdin is an EOF for the command: cat ends, exit 0.
    e.client.rst(stdin.id, 5).await;
    rt.wait_for(T, |e| matches!(e, Event::ExecEnded { code: 0, .. }))
        .await;
    assert_eq!(status(&e.error.read_to_end(T).await)["status"], "Success");
    let _ = SEvent::Reply;
}

/// What kubectl does when the user types: stdin written only well after the session opened,
/// in pieces. The server must not have half-closed the stdin stream by then — client-go
/// (as our client) takes the server's FIN as the end and sends nothing more.
#[tokio::test]
async fn exec_stdin_sent_late_reaches_the_command() {
    let (srv, _rt) = server(ServerConfig::default()).await;
    let url = srv.get_exec_url(exec(&["cat"], true, false)).unwrap();
    let mut e = Exec::open(&url, "v4.channel.k8s.io", true, false, false).await;
    let stdin = e.stdin.take().unwrap();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for chunk in [&b"one\n"[..], b"two\n", b"three\n"] {
            stdin.write(chunk).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        stdin.close().await;
    });
    let out = e.stdout.read_to_end(T).await;
    writer.await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out),
        "one\ntwo\nthree\n",
        "{} bytes of stdin were written after the server closed the stream",
        e.client.dropped_bytes()
    );
    assert_eq!(status(&e.error.read_to_end(T).await)["status"], "Success");
}

/// 3 MB of stdin into a command that started before the first byte (as `kubectl cp` pipes
/// a tar into `tar x`) arrives whole.
#[tokio::test]
async fn exec_3mb_stdin_after_the_command_started_arrives_intact() {
    let (srv, _rt) = server(ServerConfig::default()).await;
    let url = srv
        .get_exec_url(exec(&["sh", "-c", "echo ready; exec cat"], true, false))
        .unwrap();
    let mut e = Exec::open(&url, "v4.channel.k8s.io", true, false, false).await;
    let ready = e.stdout.read_until(T, |o| o.ends_with(b"ready\n")).await;
    assert_eq!(ready, b"ready\n");
    let input: Vec<u8> = (0..3 << 20).map(|i: usize| (i % 253) as u8).collect();
    let stdin = e.stdin.take().unwrap();
    let writer = {
        let input = input.clone();
        tokio::spawn(async move {
            stdin.write(&input).await;
            stdin.close().await;
        })
    };
    let out = e.stdout.read_to_end(Duration::from_secs(60)).await;
    writer.await.unwrap();
    assert!(
        out == input,
        "cat returned {} of {} bytes ({} dropped after the server's FIN)",
        out.len(),
        input.len(),
        e.client.dropped_bytes()
    );
    assert_eq!(status(&e.error.read_to_end(T).await)["status"], "Success");
}

/// `kubectl attach -i`: what the user types after a while reaches the container.
#[tokio::test]
async fn attach_stdin_sent_late_reaches_the_container() {
    let (srv, rt) = server(ServerConfig::default()).await;
    let pid = rt.start_container("reader", "while read l; do echo got $l; done");
    let url = srv
        .get_attach_url(AttachRequest {
            container_id: "reader".into(),
            tty: false,
            stdin: true,
            stdout: true,
            stderr: true,
        })
        .unwrap();
    let mut e = Exec::open(&url, "v4.channel.k8s.io", true, false, false).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    e.stdin.as_ref().unwrap().write(b"hello\n").await;
    let out = e
        .stdout
        .read_until(T, |o| o.ends_with(b"got hello\n"))
        .await;
    assert_eq!(
        String::from_utf8_lossy(&out),
        "got hello\n",
        "{} bytes of stdin were written after the server closed the stream",
        e.client.dropped_bytes()
    );
    e.client.kill().await;
    assert!(process_alive(pid));
}

/// A forwarded connection whose client writes only after a while is still served: the
/// data stream stays open both ways until the forward ends.
#[tokio::test]
async fn port_forward_data_sent_late_is_echoed() {
    let (srv, _rt) = server(ServerConfig::default()).await;
    let port = echo_server().await;
    let url = srv
        .get_port_forward_url(PortForwardRequest {
            pod_sandbox_id: "pod1".into(),
            ports: vec![port],
        })
        .unwrap();
    let (client, _) = SpdyClient::connect(&url, &["portforward.k8s.io"], false)
        .await
        .unwrap();
    let p = port.to_string();
    let mut error = client
        .open(&[("streamtype", "error"), ("port", &p), ("requestid", "0")])
        .await;
    let mut data = client
        .open(&[("streamtype", "data"), ("port", &p), ("requestid", "0")])
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    data.write(b"late\n").await;
    data.close().await;
    assert_eq!(data.read_to_end(T).await, b"late\n");
    assert_eq!(error.read_to_end(T).await, b"");
    assert_eq!(client.dropped_bytes(), 0);
}
