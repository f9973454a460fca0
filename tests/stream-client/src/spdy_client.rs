//! A SPDY/3.1 client written from the draft-3.1 spec for the tests, independent of the
//! server's framing code: frames are built and parsed by hand here.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;

use super::http::{self, Upgraded};

/// The SPDY/3 header dictionary, as hex (draft 3.1, 2.6.10.1).
const DICT_HEX: &str = "
    00 00 00 07 6f 70 74 69 6f 6e 73 00 00 00 04 68
    65 61 64 00 00 00 04 70 6f 73 74 00 00 00 03 70
    75 74 00 00 00 06 64 65 6c 65 74 65 00 00 00 05
    74 72 61 63 65 00 00 00 06 61 63 63 65 70 74 00
    00 00 0e 61 63 63 65 70 74 2d 63 68 61 72 73 65
    74 00 00 00 0f 61 63 63 65 70 74 2d 65 6e 63 6f
    64 69 6e 67 00 00 00 0f 61 63 63 65 70 74 2d 6c
    61 6e 67 75 61 67 65 00 00 00 0d 61 63 63 65 70
    74 2d 72 61 6e 67 65 73 00 00 00 03 61 67 65 00
    00 00 05 61 6c 6c 6f 77 00 00 00 0d 61 75 74 68
    6f 72 69 7a 61 74 69 6f 6e 00 00 00 0d 63 61 63
    68 65 2d 63 6f 6e 74 72 6f 6c 00 00 00 0a 63 6f
    6e 6e 65 63 74 69 6f 6e 00 00 00 0c 63 6f 6e 74
    65 6e 74 2d 62 61 73 65 00 00 00 10 63 6f 6e 74
    65 6e 74 2d 65 6e 63 6f 64 69 6e 67 00 00 00 10
    63 6f 6e 74 65 6e 74 2d 6c 61 6e 67 75 61 67 65
    00 00 00 0e 63 6f 6e 74 65 6e 74 2d 6c 65 6e 67
    74 68 00 00 00 10 63 6f 6e 74 65 6e 74 2d 6c 6f
    63 61 74 69 6f 6e 00 00 00 0b 63 6f 6e 74 65 6e
    74 2d 6d 64 35 00 00 00 0d 63 6f 6e 74 65 6e 74
    2d 72 61 6e 67 65 00 00 00 0c 63 6f 6e 74 65 6e
    74 2d 74 79 70 65 00 00 00 04 64 61 74 65 00 00
    00 04 65 74 61 67 00 00 00 06 65 78 70 65 63 74
    00 00 00 07 65 78 70 69 72 65 73 00 00 00 04 66
    72 6f 6d 00 00 00 04 68 6f 73 74 00 00 00 08 69
    66 2d 6d 61 74 63 68 00 00 00 11 69 66 2d 6d 6f
    64 69 66 69 65 64 2d 73 69 6e 63 65 00 00 00 0d
    69 66 2d 6e 6f 6e 65 2d 6d 61 74 63 68 00 00 00
    08 69 66 2d 72 61 6e 67 65 00 00 00 13 69 66 2d
    75 6e 6d 6f 64 69 66 69 65 64 2d 73 69 6e 63 65
    00 00 00 0d 6c 61 73 74 2d 6d 6f 64 69 66 69 65
    64 00 00 00 08 6c 6f 63 61 74 69 6f 6e 00 00 00
    0c 6d 61 78 2d 66 6f 72 77 61 72 64 73 00 00 00
    06 70 72 61 67 6d 61 00 00 00 12 70 72 6f 78 79
    2d 61 75 74 68 65 6e 74 69 63 61 74 65 00 00 00
    13 70 72 6f 78 79 2d 61 75 74 68 6f 72 69 7a 61
    74 69 6f 6e 00 00 00 05 72 61 6e 67 65 00 00 00
    07 72 65 66 65 72 65 72 00 00 00 0b 72 65 74 72
    79 2d 61 66 74 65 72 00 00 00 06 73 65 72 76 65
    72 00 00 00 02 74 65 00 00 00 07 74 72 61 69 6c
    65 72 00 00 00 11 74 72 61 6e 73 66 65 72 2d 65
    6e 63 6f 64 69 6e 67 00 00 00 07 75 70 67 72 61
    64 65 00 00 00 0a 75 73 65 72 2d 61 67 65 6e 74
    00 00 00 04 76 61 72 79 00 00 00 03 76 69 61 00
    00 00 07 77 61 72 6e 69 6e 67 00 00 00 10 77 77
    77 2d 61 75 74 68 65 6e 74 69 63 61 74 65 00 00
    00 06 6d 65 74 68 6f 64 00 00 00 03 67 65 74 00
    00 00 06 73 74 61 74 75 73 00 00 00 06 32 30 30
    20 4f 4b 00 00 00 07 76 65 72 73 69 6f 6e 00 00
    00 08 48 54 54 50 2f 31 2e 31 00 00 00 03 75 72
    6c 00 00 00 06 70 75 62 6c 69 63 00 00 00 0a 73
    65 74 2d 63 6f 6f 6b 69 65 00 00 00 0a 6b 65 65
    70 2d 61 6c 69 76 65 00 00 00 06 6f 72 69 67 69
    6e 31 30 30 31 30 31 32 30 31 32 30 32 32 30 35
    32 30 36 33 30 30 33 30 32 33 30 33 33 30 34 33
    30 35 33 30 36 33 30 37 34 30 32 34 30 35 34 30
    36 34 30 37 34 30 38 34 30 39 34 31 30 34 31 31
    34 31 32 34 31 33 34 31 34 34 31 35 34 31 36 34
    31 37 35 30 32 35 30 34 35 30 35 32 30 33 20 4e
    6f 6e 2d 41 75 74 68 6f 72 69 74 61 74 69 76 65
    20 49 6e 66 6f 72 6d 61 74 69 6f 6e 32 30 34 20
    4e 6f 20 43 6f 6e 74 65 6e 74 33 30 31 20 4d 6f
    76 65 64 20 50 65 72 6d 61 6e 65 6e 74 6c 79 34
    30 30 20 42 61 64 20 52 65 71 75 65 73 74 34 30
    31 20 55 6e 61 75 74 68 6f 72 69 7a 65 64 34 30
    33 20 46 6f 72 62 69 64 64 65 6e 34 30 34 20 4e
    6f 74 20 46 6f 75 6e 64 35 30 30 20 49 6e 74 65
    72 6e 61 6c 20 53 65 72 76 65 72 20 45 72 72 6f
    72 35 30 31 20 4e 6f 74 20 49 6d 70 6c 65 6d 65
    6e 74 65 64 35 30 33 20 53 65 72 76 69 63 65 20
    55 6e 61 76 61 69 6c 61 62 6c 65 4a 61 6e 20 46
    65 62 20 4d 61 72 20 41 70 72 20 4d 61 79 20 4a
    75 6e 20 4a 75 6c 20 41 75 67 20 53 65 70 74 20
    4f 63 74 20 4e 6f 76 20 44 65 63 20 30 30 3a 30
    30 3a 30 30 20 4d 6f 6e 2c 20 54 75 65 2c 20 57
    65 64 2c 20 54 68 75 2c 20 46 72 69 2c 20 53 61
    74 2c 20 53 75 6e 2c 20 47 4d 54 63 68 75 6e 6b
    65 64 2c 74 65 78 74 2f 68 74 6d 6c 2c 69 6d 61
    67 65 2f 70 6e 67 2c 69 6d 61 67 65 2f 6a 70 67
    2c 69 6d 61 67 65 2f 67 69 66 2c 61 70 70 6c 69
    63 61 74 69 6f 6e 2f 78 6d 6c 2c 61 70 70 6c 69
    63 61 74 69 6f 6e 2f 78 68 74 6d 6c 2b 78 6d 6c
    2c 74 65 78 74 2f 70 6c 61 69 6e 2c 74 65 78 74
    2f 6a 61 76 61 73 63 72 69 70 74 2c 70 75 62 6c
    69 63 70 72 69 76 61 74 65 6d 61 78 2d 61 67 65
    3d 67 7a 69 70 2c 64 65 66 6c 61 74 65 2c 73 64
    63 68 63 68 61 72 73 65 74 3d 75 74 66 2d 38 63
    68 61 72 73 65 74 3d 69 73 6f 2d 38 38 35 39 2d
    31 2c 75 74 66 2d 2c 2a 2c 65 6e 71 3d 30 2e";

pub fn dictionary() -> Vec<u8> {
    DICT_HEX
        .split_whitespace()
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect()
}

#[derive(Debug)]
pub enum Event {
    Reply,
    Data(Vec<u8>),
    Fin,
    Reset(u32),
}

struct Writer {
    sock: OwnedWriteHalf,
    z: Compress,
}

/// Which sides of each stream have ended, as client-go sees them.
#[derive(Default)]
struct Ends {
    /// Streams we sent our FIN on.
    local: HashSet<u32>,
    /// Streams the server sent its FIN on.
    remote: HashSet<u32>,
    /// Bytes written to a stream after the server's FIN, and so never sent.
    dropped: usize,
    /// Port-forward data streams: client-go keeps its side open after the server's FIN
    /// until its local connection closes, and may still write.
    held: HashSet<u32>,
}

/// A client that behaves as client-go's remotecommand and portforward do over spdystream:
/// once the server half-closes a stream, this side closes it too and writes nothing more
/// on it. client-go's stdin copier waits for the server's FIN on the stdin stream and then
/// closes its side (the command reads EOF; what the user types later is lost), and its
/// port-forward copier ends on the data stream's FIN; spdystream then forgets the stream.
/// So a server that half-closes a stream the client writes to too early fails our tests as
/// it fails kubectl and crictl.
#[derive(Clone)]
pub struct SpdyClient {
    writer: Arc<tokio::sync::Mutex<Writer>>,
    streams: Arc<Mutex<HashMap<u32, mpsc::UnboundedSender<Event>>>>,
    ends: Arc<Mutex<Ends>>,
    next_id: Arc<Mutex<u32>>,
    pub goaway: Arc<Mutex<Option<(u32, u32)>>>,
    reader: Arc<Mutex<Option<tokio::task::AbortHandle>>>,
}

pub struct Stream {
    pub id: u32,
    client: SpdyClient,
    rx: mpsc::UnboundedReceiver<Event>,
    pub finished: bool,
}

fn control(ty: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80, 0x03, (ty >> 8) as u8, ty as u8, flags];
    let len = payload.len() as u32;
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.extend_from_slice(payload);
    f
}

fn name_values(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut b = (pairs.len() as u32).to_be_bytes().to_vec();
    for (n, v) in pairs {
        b.extend_from_slice(&(n.len() as u32).to_be_bytes());
        b.extend_from_slice(n.as_bytes());
        b.extend_from_slice(&(v.len() as u32).to_be_bytes());
        b.extend_from_slice(v.as_bytes());
    }
    b
}

fn deflate(z: &mut Compress, input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + 1024);
    let before = z.total_in();
    z.compress_vec(input, &mut out, FlushCompress::Sync)
        .unwrap();
    assert_eq!((z.total_in() - before) as usize, input.len());
    assert!(out.len() < out.capacity());
    out
}

fn inflate(z: &mut Decompress, dict: &[u8], input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 * 1024);
    let mut pos = 0;
    loop {
        let before = z.total_in();
        let r = z.decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync);
        pos += (z.total_in() - before) as usize;
        match r {
            Ok(_) if pos >= input.len() => return out,
            Ok(_) => continue,
            Err(e) if e.needs_dictionary().is_some() => {
                z.set_dictionary(dict).unwrap();
            }
            Err(e) => panic!("inflate: {e}"),
        }
    }
}

impl SpdyClient {
    /// Upgrades `url` to SPDY/3.1. `flow_control`: announce a window and send WINDOW_UPDATE
    /// for what we read, like a spec client; without it, behave like Go's spdystream (no
    /// SETTINGS, no WINDOW_UPDATE).
    pub async fn connect(
        url: &str,
        protocols: &[&str],
        flow_control: bool,
    ) -> Result<(SpdyClient, String), http::Refused> {
        let mut extra: Vec<(String, String)> = vec![
            ("Connection".into(), "Upgrade".into()),
            ("Upgrade".into(), "SPDY/3.1".into()),
        ];
        for p in protocols {
            extra.push(("X-Stream-Protocol-Version".into(), (*p).into()));
        }
        let Upgraded {
            read,
            write,
            leftover,
            headers,
        } = http::upgrade(url, "POST", &extra).await?;
        let chosen = headers
            .get("x-stream-protocol-version")
            .cloned()
            .unwrap_or_default();
        let mut z = Compress::new(Compression::default(), true);
        z.set_dictionary(&dictionary()).unwrap();
        let client = SpdyClient {
            writer: Arc::new(tokio::sync::Mutex::new(Writer { sock: write, z })),
            streams: Arc::default(),
            ends: Arc::default(),
            next_id: Arc::new(Mutex::new(1)),
            goaway: Arc::default(),
            reader: Arc::default(),
        };
        if flow_control {
            // SETTINGS: one entry, INITIAL_WINDOW_SIZE (7) = 65536.
            let mut p = 1u32.to_be_bytes().to_vec();
            p.extend_from_slice(&7u32.to_be_bytes());
            p.extend_from_slice(&65536u32.to_be_bytes());
            client.raw(&control(4, 0, &p)).await;
        }
        let task = tokio::spawn(read_loop(client.clone(), read, leftover, flow_control));
        *client.reader.lock().unwrap() = Some(task.abort_handle());
        Ok((client, chosen))
    }

    pub async fn raw(&self, bytes: &[u8]) {
        let mut w = self.writer.lock().await;
        let _ = w.sock.write_all(bytes).await;
    }

    pub async fn open(&self, headers: &[(&str, &str)]) -> Stream {
        self.open_stream(headers, false).await
    }

    /// `held`: our side stays open after the server's FIN (registered before the stream
    /// exists, so no FIN can come first).
    async fn open_stream(&self, headers: &[(&str, &str)], held: bool) -> Stream {
        let id = {
            let mut n = self.next_id.lock().unwrap();
            let id = *n;
            *n += 2;
            id
        };
        if held {
            self.ends.lock().unwrap().held.insert(id);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        self.streams.lock().unwrap().insert(id, tx);
        let mut w = self.writer.lock().await;
        let block = deflate(&mut w.z, &name_values(headers));
        let mut p = id.to_be_bytes().to_vec();
        p.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // associated-to 0, priority 0, slot 0
        p.extend_from_slice(&block);
        w.sock.write_all(&control(1, 0, &p)).await.unwrap();
        drop(w);
        Stream {
            id,
            client: self.clone(),
            rx,
            finished: false,
        }
    }

    /// One forwarded connection's streams as client-go's port-forward opens them:
    /// (error, data). Our side of the error stream is closed at once (the client never
    /// writes to it); our side of the data stream stays open after the server's FIN, until
    /// [`Stream::close`], as client-go's stays open until its local connection closes.
    pub async fn open_forward(&self, port: &str, request_id: &str) -> (Stream, Stream) {
        let error = self
            .open(&[
                ("streamtype", "error"),
                ("port", port),
                ("requestid", request_id),
            ])
            .await;
        error.close().await;
        let data = self
            .open_stream(
                &[
                    ("streamtype", "data"),
                    ("port", port),
                    ("requestid", request_id),
                ],
                true,
            )
            .await;
        (error, data)
    }

    /// One DATA frame. After the server's FIN on `id` nothing more is sent (data is counted
    /// in [`SpdyClient::dropped_bytes`]); our own FIN goes once.
    pub async fn send_data(&self, id: u32, fin: bool, data: &[u8]) {
        {
            let mut ends = self.ends.lock().unwrap();
            let remote_ended = ends.remote.contains(&id) && !ends.held.contains(&id);
            if remote_ended || ends.local.contains(&id) {
                ends.dropped += data.len();
                return;
            }
            if fin {
                ends.local.insert(id);
            }
        }
        self.send_frame(id, fin, data).await;
    }

    /// Bytes written after the server had half-closed their stream (never sent).
    pub fn dropped_bytes(&self) -> usize {
        self.ends.lock().unwrap().dropped
    }

    /// The server half-closed `id`: close our side too, as client-go does, unless we did.
    async fn remote_fin(&self, id: u32) {
        let close = {
            let mut ends = self.ends.lock().unwrap();
            ends.remote.insert(id);
            !ends.held.contains(&id) && ends.local.insert(id)
        };
        if close {
            self.send_frame(id, true, &[]).await;
        }
    }

    async fn send_frame(&self, id: u32, fin: bool, data: &[u8]) {
        let mut f = id.to_be_bytes().to_vec();
        f.push(if fin { 1 } else { 0 });
        f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        f.extend_from_slice(data);
        self.raw(&f).await;
    }

    pub async fn rst(&self, id: u32, status: u32) {
        let mut p = id.to_be_bytes().to_vec();
        p.extend_from_slice(&status.to_be_bytes());
        self.raw(&control(3, 0, &p)).await;
    }

    pub async fn ping(&self, id: u32) {
        self.raw(&control(6, 0, &id.to_be_bytes())).await;
    }

    /// Vanish like a killed process: the socket closes with no GOAWAY or RST_STREAM.
    pub async fn kill(&self) {
        if let Some(t) = self.reader.lock().unwrap().take() {
            t.abort();
        }
        self.shutdown().await;
    }

    pub async fn shutdown(&self) {
        let mut w = self.writer.lock().await;
        let _ = w.sock.shutdown().await;
    }
}

impl Stream {
    pub fn client_handle(&self) -> SpdyClient {
        self.client.clone()
    }

    pub async fn write(&self, data: &[u8]) {
        for chunk in data.chunks(16 * 1024) {
            self.client.send_data(self.id, false, chunk).await;
        }
    }

    pub async fn close(&self) {
        self.client.send_data(self.id, true, &[]).await;
    }

    /// The next event, or None on timeout.
    pub async fn next(&mut self, t: Duration) -> Option<Event> {
        tokio::time::timeout(t, self.rx.recv()).await.ok().flatten()
    }

    /// Everything until the server's FIN (or reset).
    pub async fn read_to_end(&mut self, t: Duration) -> Vec<u8> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + t;
        while !self.finished {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(Event::Data(d))) => out.extend_from_slice(&d),
                Ok(Some(Event::Reply)) => {}
                Ok(Some(Event::Fin)) | Ok(Some(Event::Reset(_))) | Ok(None) => self.finished = true,
                Err(_) => panic!(
                    "stream {} did not end in {t:?}; got {} bytes",
                    self.id,
                    out.len()
                ),
            }
        }
        out
    }

    /// Everything until the server's FIN (or reset); `Err` with what arrived if it did not
    /// end within `t`.
    pub async fn try_read_to_end(&mut self, t: Duration) -> Result<Vec<u8>, Vec<u8>> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + t;
        while !self.finished {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(Event::Data(d))) => out.extend_from_slice(&d),
                Ok(Some(Event::Reply)) => {}
                Ok(Some(Event::Fin)) | Ok(Some(Event::Reset(_))) | Ok(None) => self.finished = true,
                Err(_) => return Err(out),
            }
        }
        Ok(out)
    }

    /// Reads until `pred` holds for what arrived so far.
    pub async fn read_until(&mut self, t: Duration, pred: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + t;
        while !pred(&out) {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(Event::Data(d))) => out.extend_from_slice(&d),
                Ok(Some(Event::Reply)) => {}
                Ok(Some(_)) | Ok(None) => break,
                Err(_) => break,
            }
        }
        out
    }
}

async fn read_loop(
    client: SpdyClient,
    mut read: tokio::net::tcp::OwnedReadHalf,
    mut buf: Vec<u8>,
    flow_control: bool,
) {
    let dict = dictionary();
    let mut z = Decompress::new(true);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        while buf.len() >= 8 {
            let len = ((buf[5] as usize) << 16) | ((buf[6] as usize) << 8) | buf[7] as usize;
            if buf.len() < 8 + len {
                break;
            }
            let frame: Vec<u8> = buf.drain(..8 + len).collect();
            let flags = frame[4];
            let payload = &frame[8..];
            let word0 = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
            let fin = flags & 1 != 0;
            if word0 & 0x8000_0000 == 0 {
                let id = word0 & 0x7fff_ffff;
                let tx = client.streams.lock().unwrap().get(&id).cloned();
                if let Some(tx) = tx {
                    if !payload.is_empty() {
                        let _ = tx.send(Event::Data(payload.to_vec()));
                    }
                    if fin {
                        let _ = tx.send(Event::Fin);
                    }
                }
                if fin {
                    client.remote_fin(id).await;
                }
                if flow_control && !payload.is_empty() {
                    // Give the window straight back: stream, then session.
                    for sid in [id, 0] {
                        let mut p = sid.to_be_bytes().to_vec();
                        p.extend_from_slice(&(payload.len() as u32).to_be_bytes());
                        client.raw(&control(9, 0, &p)).await;
                    }
                }
                continue;
            }
            assert_eq!(word0 >> 16 & 0x7fff, 3, "server sent a non-SPDY/3 frame");
            let ty = (word0 & 0xffff) as u16;
            let id =
                u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff;
            match ty {
                2 => {
                    // SYN_REPLY: the header block must inflate with our own context.
                    let nv = inflate(&mut z, &dict, &payload[4..]);
                    assert!(nv.len() >= 4, "bad SYN_REPLY header block");
                    if let Some(tx) = client.streams.lock().unwrap().get(&id) {
                        let _ = tx.send(Event::Reply);
                        if fin {
                            let _ = tx.send(Event::Fin);
                        }
                    }
                    if fin {
                        client.remote_fin(id).await;
                    }
                }
                3 => {
                    let status =
                        u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                    if let Some(tx) = client.streams.lock().unwrap().get(&id) {
                        let _ = tx.send(Event::Reset(status));
                    }
                }
                6 => {}
                7 => {
                    let status =
                        u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                    *client.goaway.lock().unwrap() = Some((id, status));
                }
                8 => {
                    inflate(&mut z, &dict, &payload[4..]);
                }
                _ => {}
            }
        }
        match read.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    // Connection closed: every stream ends.
    for (_, tx) in client.streams.lock().unwrap().drain() {
        let _ = tx.send(Event::Fin);
    }
}

/// What one port-forward connection brought back.
#[derive(Debug)]
pub struct Forwarded {
    pub data: Vec<u8>,
    pub error: String,
}

/// Waits for the end of a forwarded connection as client-go's port-forward (kubectl) does:
/// the data stream is copied until the server's FIN, then the error stream is read until its
/// FIN, and only then would the local connection close. Nothing is closed here: a server
/// that waits for the client to close first never ends, and `Err` says which stream hung.
pub async fn forwarded(
    data: &mut Stream,
    error: &mut Stream,
    t: Duration,
) -> Result<Forwarded, String> {
    let data = data.try_read_to_end(t).await.map_err(|got| {
        format!(
            "the data stream did not end within {t:?} ({} bytes: {:?}); kubectl would hang",
            got.len(),
            String::from_utf8_lossy(&got)
        )
    })?;
    let error = error.try_read_to_end(t).await.map_err(|got| {
        format!(
            "the data stream ended ({} bytes) but the error stream did not within {t:?} \
             (got {:?}); kubectl would hang",
            data.len(),
            String::from_utf8_lossy(&got)
        )
    })?;
    Ok(Forwarded {
        data,
        error: String::from_utf8_lossy(&error).into_owned(),
    })
}
