//! How a forwarded connection ends, over SPDY and WebSocket, with the client behaving like
//! client-go (kubectl): it never closes its side first, it waits for the data stream's end
//! and then for the error stream's end (or, over WebSocket, for the server's Close).

mod common;

use std::time::Duration;

use common::spdy_client::{Forwarded, SpdyClient, Stream, forwarded};
use common::ws_client::WsClient;
use common::{FakeRuntime, init_tracing, server};
use kraal_stream::{PortForwardRequest, Server, ServerConfig, TARGET_END_GRACE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const T: Duration = Duration::from_secs(10);

/// A server that answers every connection with `text` and closes it at once, as busybox
/// httpd's 404 or `nc -l -e echo` do; returns its port.
async fn reply_server(text: &'static [u8]) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.write_all(text).await;
        }
    });
    port
}

/// A server that reads until the client's EOF and answers only well after the grace a
/// closed target gives the client, then closes: a client's FIN must not cut it short.
async fn slow_answer_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                let _ = s.read_to_end(&mut got).await;
                tokio::time::sleep(TARGET_END_GRACE * 2).await;
                let _ = s
                    .write_all(format!("got {} bytes", got.len()).as_bytes())
                    .await;
            });
        }
    });
    port
}

/// A server that resets every connection (SO_LINGER 0 and close) once it got a byte: after
/// the forward connected, so the reset reaches the copy and not the connect.
async fn reset_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.read(&mut [0u8; 1]).await;
            // A zero linger resets at once: the blocking drop it is deprecated for never
            // happens.
            #[allow(deprecated)]
            let _ = s.set_linger(Some(Duration::ZERO));
        }
    });
    port
}

/// A SPDY port-forward connection to `port`: (server, client, error stream, data stream).
async fn spdy_pair(port: u16) -> (Server<FakeRuntime>, SpdyClient, Stream, Stream) {
    let (srv, _rt) = server(ServerConfig::default()).await;
    let url = srv
        .get_port_forward_url(PortForwardRequest {
            pod_sandbox_id: "pod1".into(),
            ports: vec![port],
        })
        .unwrap();
    let (client, _) = SpdyClient::connect(&url, &["portforward.k8s.io"], false)
        .await
        .unwrap();
    let (error, data) = client.open_forward(&port.to_string(), "0").await;
    (srv, client, error, data)
}

#[tokio::test]
async fn spdy_a_target_that_answers_and_closes_ends_both_streams() {
    init_tracing();
    let port = reply_server(b"hi-from-the-target\n").await;
    let (_srv, _client, mut error, mut data) = spdy_pair(port).await;
    let Forwarded { data, error } = forwarded(&mut data, &mut error, T)
        .await
        .unwrap_or_else(|e| panic!("target closed first: {e}"));
    assert_eq!(data, b"hi-from-the-target\n");
    assert_eq!(error, "", "a clean close is no error");
}

#[tokio::test]
async fn spdy_a_client_fin_does_not_cut_the_answer_short() {
    init_tracing();
    let port = slow_answer_server().await;
    let (_srv, _client, mut error, mut data) = spdy_pair(port).await;
    data.write(b"question").await;
    data.close().await;
    let Forwarded { data, error } = forwarded(&mut data, &mut error, T)
        .await
        .unwrap_or_else(|e| panic!("client closed first: {e}"));
    assert_eq!(
        String::from_utf8_lossy(&data),
        "got 8 bytes",
        "the target's answer after the client's FIN"
    );
    assert_eq!(error, "");
}

#[tokio::test]
async fn spdy_a_target_reset_is_reported_on_the_error_stream() {
    init_tracing();
    let port = reset_server().await;
    let (_srv, _client, mut error, mut data) = spdy_pair(port).await;
    data.write(b"x").await;
    let Forwarded { data, error } = forwarded(&mut data, &mut error, T)
        .await
        .unwrap_or_else(|e| panic!("target reset: {e}"));
    assert_eq!(data, b"");
    assert!(
        error.contains(&format!("error forwarding port {port} to pod pod1"))
            && error.contains("reading from the forwarded connection"),
        "{error}"
    );
}

#[tokio::test]
async fn websocket_a_target_that_answers_and_closes_ends_the_session() {
    init_tracing();
    let port = reply_server(b"hi-from-the-target\n").await;
    let (srv, _rt) = server(ServerConfig::default()).await;
    let url = srv
        .get_port_forward_url(PortForwardRequest {
            pod_sandbox_id: "pod1".into(),
            ports: vec![],
        })
        .unwrap();
    let mut ws = WsClient::connect(&format!("{url}?ports={port}"), &["v4.channel.k8s.io"])
        .await
        .unwrap();
    let (channels, code) = ws
        .until_server_close(T)
        .await
        .unwrap_or_else(|e| panic!("target closed first: {e}"));
    assert_eq!(code, Some(1000));
    let prefix = port.to_le_bytes();
    let mut want_data = prefix.to_vec();
    want_data.extend_from_slice(b"hi-from-the-target\n");
    assert_eq!(channels.get(&0), Some(&want_data), "data channel");
    assert_eq!(
        channels.get(&1),
        Some(&prefix.to_vec()),
        "error channel: the port only"
    );
}
