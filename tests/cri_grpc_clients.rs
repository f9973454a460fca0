//! kraald's sockets as real gRPC clients reach them, byte for byte where our own tonic client
//! cannot behave like them. kubelet 1.28–1.30 (grpc-go before 1.61) send the socket's path as
//! the HTTP/2 `:authority`: Huffman-coded and incrementally indexed on a connection's first
//! stream, an indexed reference to that dynamic-table entry on the next ones. h2 alone resets
//! such streams with PROTOCOL_ERROR (issue 15, item 1).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use kraal_e2e::{Kraald, cri};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// "/run/kraal/kraal.sock" Huffman-coded (RFC 7541 Appendix B), as grpc-go sends the default
/// socket's path (the unit tests of kraald's authority module check these bytes decode to it).
const SOCKET_PATH_HUFFMAN: &[u8] = &[
    0x62, 0xcb, 0x6a, 0x63, 0xad, 0x83, 0x1d, 0x0c, 0x75, 0xb0, 0x63, 0xa1, 0x74, 0x1c, 0x9d, 0x7f,
];

/// An HPACK integer with an N-bit prefix (RFC 7541 §5.1).
fn integer(value: usize, prefix_bits: u8, first: u8, out: &mut Vec<u8>) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

fn string(bytes: &[u8], out: &mut Vec<u8>) {
    integer(bytes.len(), 7, 0, out);
    out.extend_from_slice(bytes);
}

/// The header block grpc-go writes for a connection's first call: pseudo-headers and
/// content-type, te and user-agent "literal with incremental indexing", :authority
/// Huffman-coded. It leaves five entries in the client's dynamic table (newest first):
/// user-agent 62, te 63, content-type 64, :authority 65, :path 66.
fn first_call_block(path: &str) -> Vec<u8> {
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http (static 3 and 6)
    block.push(0x44); // :path: incremental indexing, static name 4
    string(path.as_bytes(), &mut block);
    block.push(0x41); // :authority: incremental indexing, static name 1, Huffman value
    integer(SOCKET_PATH_HUFFMAN.len(), 7, 0x80, &mut block);
    block.extend_from_slice(SOCKET_PATH_HUFFMAN);
    block.push(0x5f); // content-type: static name 31
    string(b"application/grpc", &mut block);
    block.push(0x40); // te: a new name
    string(b"te", &mut block);
    string(b"trailers", &mut block);
    block.push(0x7a); // user-agent: static name 58
    string(b"grpc-go/1.58.3", &mut block);
    block
}

/// The same call again on the connection: every field indexed, :authority from the dynamic
/// table entry the first call made.
fn next_call_block() -> Vec<u8> {
    vec![
        0x83,
        0x86,
        0x80 | 66,
        0x80 | 65,
        0x80 | 64,
        0x80 | 63,
        0x80 | 62,
    ]
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A length-prefixed gRPC message (uncompressed).
fn grpc_message(message: &impl Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut out = vec![0];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// What the server answered on one stream.
#[derive(Debug, Default)]
struct Answer {
    headers: Vec<HashMap<String, String>>,
    data: Vec<u8>,
    reset: Option<u32>,
    ended: bool,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find_map(|block| block.get(name).map(String::as_str))
    }
}

/// Sends the calls (stream id, header block, request message) on one connection, as grpc-go
/// frames them, and collects the answers.
async fn raw_calls(socket: &Path, calls: &[(u32, Vec<u8>, Vec<u8>)]) -> HashMap<u32, Answer> {
    let mut conn = UnixStream::connect(socket).await.expect("connect");
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    for (stream, block, message) in calls {
        out.extend(frame(HEADERS, END_HEADERS, *stream, block));
        out.extend(frame(DATA, END_STREAM, *stream, message));
    }
    conn.write_all(&out).await.expect("send");

    let mut answers: HashMap<u32, Answer> = calls
        .iter()
        .map(|(stream, _, _)| (*stream, Answer::default()))
        .collect();
    // The server's HPACK encoder indexes: every block must go through one decoder, in order.
    let mut decoder = loona_hpack::Decoder::new();
    let mut open_block: Option<(u32, u8, Vec<u8>)> = None;
    let collect = async {
        while answers.values().any(|a| !a.ended && a.reset.is_none()) {
            let mut header = [0u8; 9];
            conn.read_exact(&mut header)
                .await
                .expect("read frame header");
            let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let (kind, flags) = (header[3], header[4]);
            let stream = u32::from_be_bytes(header[5..9].try_into().unwrap()) & 0x7fff_ffff;
            let mut payload = vec![0; len];
            conn.read_exact(&mut payload)
                .await
                .expect("read frame payload");
            match kind {
                SETTINGS if flags & ACK == 0 => {
                    conn.write_all(&frame(SETTINGS, ACK, 0, &[])).await.unwrap();
                }
                PING if flags & ACK == 0 => {
                    conn.write_all(&frame(PING, ACK, 0, &payload))
                        .await
                        .unwrap();
                }
                GOAWAY => panic!(
                    "kraald sent GOAWAY: code {:?}, {}",
                    &payload[4..8],
                    String::from_utf8_lossy(&payload[8..])
                ),
                RST_STREAM => {
                    let code = u32::from_be_bytes(payload[..4].try_into().unwrap());
                    answers.get_mut(&stream).expect("a stream of ours").reset = Some(code);
                }
                DATA => {
                    let answer = answers.get_mut(&stream).expect("a stream of ours");
                    answer.data.extend_from_slice(&payload);
                    answer.ended |= flags & END_STREAM != 0;
                }
                HEADERS | CONTINUATION => {
                    let (id, first_flags, mut block) =
                        open_block.take().unwrap_or((stream, flags, Vec::new()));
                    block.extend_from_slice(&payload);
                    if flags & END_HEADERS == 0 {
                        open_block = Some((id, first_flags, block));
                        continue;
                    }
                    let fields = decoder.decode(&block).expect("kraald's HPACK decodes");
                    let answer = answers.get_mut(&id).expect("a stream of ours");
                    answer.headers.push(
                        fields
                            .into_iter()
                            .map(|(n, v)| {
                                (
                                    String::from_utf8_lossy(&n).into_owned(),
                                    String::from_utf8_lossy(&v).into_owned(),
                                )
                            })
                            .collect(),
                    );
                    answer.ended |= first_flags & END_STREAM != 0;
                }
                _ => {}
            }
        }
    };
    // Only a guard against a hang: a healthy answer takes milliseconds.
    tokio::time::timeout(Duration::from_secs(30), collect)
        .await
        .expect("kraald answered every stream");
    answers
}

/// The one message of a unary answer.
fn unary<M: Message + Default>(answer: &Answer) -> M {
    assert!(answer.data.len() >= 5, "no gRPC message in {answer:?}");
    let len = u32::from_be_bytes(answer.data[1..5].try_into().unwrap()) as usize;
    M::decode(&answer.data[5..5 + len]).expect("a protobuf message")
}

fn assert_grpc_ok(answer: &Answer, what: &str) {
    assert_eq!(
        answer.reset, None,
        "{what}: kraald reset the stream (1 = PROTOCOL_ERROR); its log should say why"
    );
    assert_eq!(answer.header(":status"), Some("200"), "{what}: {answer:?}");
    assert_eq!(
        answer.header("grpc-status"),
        Some("0"),
        "{what}: {answer:?}"
    );
}

#[tokio::test]
async fn grpc_go_with_the_socket_path_as_authority_reaches_both_sockets() {
    let kraald = Kraald::start("").await;
    let version = grpc_message(&cri::VersionRequest {
        version: "0.1.0".into(),
    });
    let path = "/runtime.v1.RuntimeService/Version";
    let answers = raw_calls(
        &kraald.socket,
        &[
            (1, first_call_block(path), version.clone()),
            (3, next_call_block(), version),
        ],
    )
    .await;
    for stream in [1, 3] {
        let answer = &answers[&stream];
        let what = format!("Version on stream {stream}\n{}", kraald.log());
        assert_grpc_ok(answer, &what);
        let response: cri::VersionResponse = unary(answer);
        assert_eq!(response.runtime_name, "kraal", "{what}");
    }

    // The admin socket: an unknown pod is a gRPC NotFound, which means h2 let the call in.
    let request = grpc_message(&kraal_api::kraal::v1::GetPodPolicyRequest {
        pod: "no-such-pod".into(),
    });
    let answers = raw_calls(
        &kraald.admin_socket(),
        &[(1, first_call_block("/kraal.v1.Admin/GetPodPolicy"), request)],
    )
    .await;
    let answer = &answers[&1];
    assert_eq!(answer.reset, None, "admin: reset\n{}", kraald.log());
    assert_eq!(answer.header(":status"), Some("200"), "admin: {answer:?}");
    assert_eq!(
        answer.header("grpc-status"),
        Some("5"),
        "admin: expected NotFound: {answer:?}"
    );
}

/// `kraalctl cri`: the client the README points a newcomer to when there is no kubelet or
/// crictl on the node (issue 15, item 0).
#[tokio::test]
async fn kraalctl_cri_reads_the_cri_socket() {
    let kraald = Kraald::start("").await;
    let pod = kraald
        .run_pod(kraal_e2e::pod_config("kraalctl-cri", false))
        .await
        .expect("RunPodSandbox");
    let kraalctl = |args: &[&str]| {
        let out = std::process::Command::new(kraal_e2e::kraalctl_bin())
            .arg("--cri-socket")
            .arg(&kraald.socket)
            .args(args)
            .output()
            .expect("running kraalctl");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "kraalctl {args:?}: {}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let version = kraalctl(&["cri", "version"]);
    assert!(version.starts_with("kraal "), "{version}");
    let pods = kraalctl(&["cri", "pods"]);
    let row = pods
        .lines()
        .find(|line| line.contains("kraal-e2e/kraalctl-cri"))
        .unwrap_or_else(|| panic!("the pod is not listed:\n{pods}"));
    assert!(row.starts_with(&pod[..12]), "{row}");
    assert!(row.contains("READY"), "{row}");
    let containers = kraalctl(&["cri", "containers"]);
    assert!(containers.starts_with("CONTAINER ID"), "{containers}");
    let images: serde_json::Value =
        serde_json::from_str(&kraalctl(&["cri", "images", "-o", "json"])).expect("JSON");
    assert!(images["images"].is_array(), "{images}");
}
