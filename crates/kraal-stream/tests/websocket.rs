//! Exec and port-forward over WebSocket with a hand-written RFC 6455 client.

mod common;

use std::time::Duration;

use common::ws_client::{WsClient, WsMessage};
use common::{Event, echo_server, exec, server};
use kraal_stream::{PortForwardRequest, ServerConfig};
use serde_json::Value;

const T: Duration = Duration::from_secs(10);

/// Collects channel data until the server closes: (stdout, stderr, error).
async fn collect(ws: &mut WsClient) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (mut out, mut err, mut status) = (Vec::new(), Vec::new(), Vec::new());
    loop {
        match ws
            .recv_timeout(T)
            .await
            .expect("server ended without Close")
        {
            WsMessage::Binary(b) => match b.split_first() {
                Some((1, d)) => out.extend_from_slice(d),
                Some((2, d)) => err.extend_from_slice(d),
                Some((3, d)) => status.extend_from_slice(d),
                other => panic!("unexpected message {other:?}"),
            },
            WsMessage::Close(code) => {
                assert_eq!(code, Some(1000));
                ws.close().await;
                return (out, err, status);
            }
            WsMessage::Text(t) => panic!("unexpected text {t}"),
        }
    }
}

#[tokio::test]
async fn v5_exec_echo_and_exit_code() {
    let (srv, _rt) = server(ServerConfig::default()).await;
    let url = srv
        .get_exec_url(exec(&["echo", "hi"], false, false))
        .unwrap();
    let mut ws = WsClient::connect(&url, &["v5.channel.k8s.io", "v4.channel.k8s.io"])
        .await
        .unwrap();
    assert_eq!(ws.protocol.as_deref(), Some("v5.channel.k8s.io"));
    let (out, _, status) = collect(&mut ws).await;
    assert_eq!(out, b"hi\n");
    let st: Value = serde_json::from_slice(&status).unwrap();
    assert_eq!(st["status"], "Success");

    let url = srv
        .get_exec_url(exec(&["sh", "-c", "echo e >&2; exit 3"], false, false))
        .unwrap();
    let mut ws = WsClient::connect(&url, &["v4.channel.k8s.io"])
        .await
        .unwrap();
    assert_eq!(ws.protocol.as_deref(), Some("v4.channel.k8s.io"));
    let (_, err, status) = collect(&mut ws).await;
    assert_eq!(err, b"e\n");
    let st: Value = serde_json::from_slice(&status).unwrap();
    assert_eq!(st["reason"], "NonZeroExitCode");
    assert_eq!(st["details"]["causes"][0]["message"], "3");
}

#[tokio::test]
async fn v5_stdin_closes_with_the_close_channel() {
    let (srv, _rt) = server(ServerConfig::default()).await;
    let url = srv.get_exec_url(exec(&["cat"], true, false)).unwrap();
    let mut ws = WsClient::connect(&url, &["v5.channel.k8s.io"])
        .await
        .unwrap();
    let input: Vec<u8> = (0..200_000).map(|i| (i % 253) as u8).collect();
    for chunk in input.chunks(10_000) {
        ws.send(0, chunk).await;
    }
    // Channel 255 with stdin's number: cat sees EOF and exits.
    ws.send(255, &[0]).await;
    let (out, _, status) = collect(&mut ws).await;
    assert!(out == input, "got {} bytes", out.len());
    let st: Value = serde_json::from_slice(&status).unwrap();
    assert_eq!(st["status"], "Success");
}

#[tokio::test]
async fn tty_resize_over_websocket() {
    let (srv, _rt) = server(ServerConfig::default()).await;
    let url = srv
        .get_exec_url(exec(&["stty", "size"], false, true))
        .unwrap();
    let mut ws = WsClient::connect(&url, &["v5.channel.k8s.io"])
        .await
        .unwrap();
    ws.send(4, br#"{"Width":90,"Height":33}"#).await;
    let (out, _, _) = collect(&mut ws).await;
    assert_eq!(String::from_utf8_lossy(&out).trim(), "33 90");
}

#[tokio::test]
async fn websocket_client_killed_mid_stream() {
    let (srv, rt) = server(ServerConfig::default()).await;
    let url = srv
        .get_exec_url(exec(&["sleep", "30"], true, false))
        .unwrap();
    let ws = WsClient::connect(&url, &["v5.channel.k8s.io"])
        .await
        .unwrap();
    rt.wait_for(T, |e| matches!(e, Event::ExecStarted { .. }))
        .await;
    drop(ws);
    let ended = rt
        .wait_for(T, |e| matches!(e, Event::ExecEnded { .. }))
        .await;
    assert!(
        matches!(
            ended,
            Event::ExecEnded {
                gone: true,
                reaped: true,
                ..
            }
        ),
        "{ended:?}"
    );
    for _ in 0..200 {
        if srv.active_streams() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("session still active");
}

#[tokio::test]
async fn port_forward_over_websocket() {
    let (srv, _rt) = server(ServerConfig::default()).await;
    let port = echo_server().await;
    let url = srv
        .get_port_forward_url(PortForwardRequest {
            pod_sandbox_id: "pod1".into(),
            ports: vec![],
        })
        .unwrap();
    let mut ws = WsClient::connect(&format!("{url}?ports={port}"), &["v4.channel.k8s.io"])
        .await
        .unwrap();
    // The first message on each of the port's channels is the port, little-endian.
    let mut seen = Vec::new();
    for _ in 0..2 {
        let Some(WsMessage::Binary(b)) = ws.recv_timeout(T).await else {
            panic!("no port frame")
        };
        assert_eq!(&b[1..], &port.to_le_bytes());
        seen.push(b[0]);
    }
    seen.sort();
    assert_eq!(seen, vec![0, 1]);
    let input: Vec<u8> = (0..(1 << 20)).map(|i: usize| (i * 13) as u8).collect();
    let mut got = Vec::new();
    let mut sent = 0;
    while got.len() < input.len() {
        if sent < input.len() {
            let end = (sent + 64 * 1024).min(input.len());
            ws.send(0, &input[sent..end]).await;
            sent = end;
        }
        while got.len() < sent {
            match ws.recv_timeout(T).await {
                Some(WsMessage::Binary(b)) if b[0] == 0 => got.extend_from_slice(&b[1..]),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert!(got == input);
}

#[tokio::test]
async fn websocket_refusals() {
    let (srv, _rt) = server(ServerConfig::default()).await;
    let url = srv.get_exec_url(exec(&["true"], false, false)).unwrap();
    let r = WsClient::connect(&url, &["base64.channel.k8s.io"])
        .await
        .err()
        .unwrap();
    assert_eq!(r.status, 403);
    let mut ws = WsClient::connect(&url, &["v5.channel.k8s.io"])
        .await
        .unwrap();
    collect(&mut ws).await;
    let r = WsClient::connect(&url, &["v5.channel.k8s.io"])
        .await
        .err()
        .unwrap();
    assert_eq!(r.status, 404);
    let url = srv
        .get_port_forward_url(PortForwardRequest {
            pod_sandbox_id: "p".into(),
            ports: vec![],
        })
        .unwrap();
    let r = WsClient::connect(&url, &["v4.channel.k8s.io"])
        .await
        .err()
        .unwrap();
    assert_eq!(r.status, 400);
    assert!(r.body.contains("ports"), "{}", r.body);
}
