//! One SPDY/3.1 connection, server side: a reader task that parses frames and feeds
//! streams, a writer task that owns the socket's write half and the header compressor (the
//! zlib context must see blocks in wire order), and one pump task per stream that turns the
//! runtime's writes into DATA frames within the flow-control windows.
//!
//! All tasks live in the session's `JoinSet`: dropping the [`Session`] aborts them, so a
//! connection can never leave a task behind.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, trace, warn};

use super::frame::{self, FLAG_FIN, FLAG_UNIDIRECTIONAL, Frame, goaway, rst, settings};
use super::headers::HeaderBlock;
use super::zlib::{HeaderCompressor, HeaderDecompressor};
use crate::config::FlowControl;
use crate::idle::Activity;
use crate::pipe::{self, Credit, InboundPipe, MAX_CHUNK, OutboundPipe};

/// SPDY/3's initial window, both ways, until SETTINGS says otherwise.
const DEFAULT_WINDOW: i64 = 64 * 1024;
/// Largest DATA frame we accept: far above what any client sends (Go writes 32 KiB), far
/// below the 16 MiB the length field allows.
const MAX_INBOUND_FRAME: usize = 1 << 20;
/// Streams one connection may hold open; port-forward opens two per connection.
const MAX_STREAMS: usize = 512;

#[derive(Debug, Clone)]
pub(crate) struct SessionConfig {
    pub flow_control: FlowControl,
    pub max_header_block: usize,
}

/// A stream the client opened (SYN_STREAM), already answered with SYN_REPLY.
pub(crate) struct IncomingStream {
    pub id: u32,
    pub headers: HeaderBlock,
    /// What the client sends on it; EOF on its FIN, RST or disconnect.
    pub reader: InboundPipe,
    /// What we send; dropping it sends our FIN.
    pub writer: OutboundPipe,
    /// Fires once our FIN is queued behind all our data (or the stream died).
    pub done: oneshot::Receiver<()>,
}

impl IncomingStream {
    /// The client's half of a stream only the client writes to (stdin, resize). Our side
    /// stays open until the returned guard drops, which the caller does at the session's
    /// end: client-go takes a FIN from us as the end of the stream and stops writing to it
    /// (its stdin copier closes its side too), and Kubernetes' own server never sends one.
    pub(crate) fn into_inbound(self) -> (InboundPipe, HeldOpen) {
        (
            self.reader,
            HeldOpen {
                _writer: self.writer,
            },
        )
    }
}

/// Our side of a stream the client writes to, kept open; dropping it sends our FIN.
pub(crate) struct HeldOpen {
    _writer: OutboundPipe,
}

enum WriterCmd {
    Frame(Frame),
    Reply { stream_id: u32 },
    Close(oneshot::Sender<()>),
}

struct StreamState {
    inbound: Option<mpsc::Sender<Bytes>>,
    remote_closed: bool,
    local_closed: bool,
    send_window: i64,
    reset: CancellationToken,
}

struct State {
    streams: HashMap<u32, StreamState>,
    session_send_window: i64,
    initial_send_window: i64,
    /// Whether sends wait for window; see `FlowControl`.
    enforce: bool,
    last_peer_stream: u32,
    going_away: bool,
}

struct Shared {
    state: Mutex<State>,
    window_changed: Notify,
    writer: mpsc::Sender<WriterCmd>,
    /// Bytes the runtime consumed on all streams but not yet given back as session window.
    session_unacked: AtomicUsize,
    gone: CancellationToken,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave State half-updated in a way that matters more
        // than losing the connection; keep serving rather than propagate the poison.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops a stream's state once both sides are done with it.
    fn maybe_forget(st: &mut State, id: u32) {
        if let Some(s) = st.streams.get(&id)
            && s.remote_closed
            && s.local_closed
        {
            st.streams.remove(&id);
        }
    }

    fn reset_stream(&self, id: u32) {
        let mut st = self.lock();
        if let Some(s) = st.streams.remove(&id) {
            s.reset.cancel();
        }
        drop(st);
        self.window_changed.notify_waiters();
    }

    /// Waits until `want` bytes (or part of them) may be sent on `id`. `None` when the
    /// stream is gone.
    async fn acquire(&self, id: u32, want: usize, reset: &CancellationToken) -> Option<usize> {
        let want = want.min(MAX_CHUNK);
        loop {
            let mut notified = pin!(self.window_changed.notified());
            notified.as_mut().enable();
            {
                let mut st = self.lock();
                let enforce = st.enforce;
                let session_window = st.session_send_window;
                let s = st.streams.get_mut(&id)?;
                if !enforce {
                    return Some(want);
                }
                let avail = session_window.min(s.send_window);
                if avail > 0 {
                    let n = want.min(avail as usize);
                    s.send_window -= n as i64;
                    st.session_send_window -= n as i64;
                    return Some(n);
                }
            }
            tokio::select! {
                _ = notified => {}
                _ = reset.cancelled() => return None,
            }
        }
    }

    /// Gives window back to the client for `n` bytes consumed on one stream.
    fn credit(&self, id: u32, stream_unacked: &AtomicUsize, n: usize) {
        let threshold = (DEFAULT_WINDOW / 2) as usize;
        let pending = stream_unacked.fetch_add(n, Ordering::AcqRel) + n;
        if pending >= threshold {
            let taken = stream_unacked.swap(0, Ordering::AcqRel);
            if taken > 0 && !self.send_update(id, taken) {
                stream_unacked.fetch_add(taken, Ordering::AcqRel);
            }
        }
        let pending = self.session_unacked.fetch_add(n, Ordering::AcqRel) + n;
        if pending >= threshold {
            let taken = self.session_unacked.swap(0, Ordering::AcqRel);
            if taken > 0 && !self.send_update(0, taken) {
                self.session_unacked.fetch_add(taken, Ordering::AcqRel);
            }
        }
    }

    fn send_update(&self, stream_id: u32, delta: usize) -> bool {
        let delta = delta.min(0x7FFF_FFFF) as u32;
        // try_send: credit runs inside a poll_read and must not block; a full queue keeps
        // the credit for the next read.
        self.writer
            .try_send(WriterCmd::Frame(Frame::WindowUpdate { stream_id, delta }))
            .is_ok()
    }
}

pub(crate) struct Session {
    incoming: mpsc::Receiver<IncomingStream>,
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
}

impl Session {
    /// Takes over an upgraded connection. `gone` fires when the connection ends for any
    /// reason; cancelling it from outside ends the session.
    pub(crate) fn start<IO>(
        io: IO,
        cfg: SessionConfig,
        gone: CancellationToken,
        activity: Activity,
    ) -> Session
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (writer_tx, writer_rx) = mpsc::channel(64);
        let (incoming_tx, incoming) = mpsc::channel(8);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                streams: HashMap::new(),
                session_send_window: DEFAULT_WINDOW,
                initial_send_window: DEFAULT_WINDOW,
                enforce: cfg.flow_control == FlowControl::Strict,
                last_peer_stream: 0,
                going_away: false,
            }),
            window_changed: Notify::new(),
            writer: writer_tx,
            session_unacked: AtomicUsize::new(0),
            gone,
        });
        let mut tasks = JoinSet::new();
        let (spawn_tx, spawn_rx) = mpsc::unbounded_channel();
        tasks.spawn(writer_task(wr, writer_rx, shared.clone(), activity.clone()));
        tasks.spawn(reader_task(
            rd,
            cfg,
            Arc::downgrade(&shared),
            shared.clone(),
            incoming_tx,
            spawn_tx,
            activity,
        ));
        let mut session = Session {
            incoming,
            shared,
            tasks,
        };
        session.adopt_pumps(spawn_rx);
        session
    }

    /// The reader creates a pump per stream; they run under a supervisor task of this
    /// session so that dropping the session aborts them too.
    fn adopt_pumps(&mut self, mut rx: mpsc::UnboundedReceiver<PumpFuture>) {
        // A supervisor task owns its own JoinSet of pumps; aborting it (on session drop)
        // drops that JoinSet, which aborts every pump.
        self.tasks.spawn(async move {
            let mut pumps = JoinSet::new();
            loop {
                tokio::select! {
                    next = rx.recv() => match next {
                        Some(p) => { pumps.spawn(p); }
                        None => break,
                    },
                    Some(_) = pumps.join_next(), if !pumps.is_empty() => {}
                }
            }
            while pumps.join_next().await.is_some() {}
        });
    }

    /// The next stream the client opened; `None` once the connection is gone.
    pub(crate) async fn accept(&mut self) -> Option<IncomingStream> {
        tokio::select! {
            s = self.incoming.recv() => s,
            _ = self.shared.gone.cancelled() => None,
        }
    }

    pub(crate) fn gone(&self) -> CancellationToken {
        self.shared.gone.clone()
    }

    /// Resets a stream we will not serve.
    pub(crate) async fn reset(&self, stream_id: u32, status: u32) {
        self.shared.reset_stream(stream_id);
        let _ = self
            .shared
            .writer
            .send(WriterCmd::Frame(Frame::RstStream { stream_id, status }))
            .await;
    }

    /// Ends the session politely: GOAWAY, flush, close our write side. Everything queued
    /// before (our streams' data and FINs) reaches the client first.
    pub(crate) async fn close(mut self, timeout: Duration) {
        let last_good_stream_id = self.shared.lock().last_peer_stream;
        let (tx, rx) = oneshot::channel();
        let sent = async {
            let w = &self.shared.writer;
            w.send(WriterCmd::Frame(Frame::GoAway {
                last_good_stream_id,
                status: goaway::OK,
            }))
            .await
            .ok()?;
            w.send(WriterCmd::Close(tx)).await.ok()?;
            rx.await.ok()
        };
        if tokio::time::timeout(timeout, sent).await.is_err() {
            debug!("spdy: close timed out");
        }
        self.shared.gone.cancel();
        self.tasks.abort_all();
    }
}

type PumpFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

async fn writer_task<W: AsyncWrite>(
    wr: W,
    mut rx: mpsc::Receiver<WriterCmd>,
    shared: Arc<Shared>,
    activity: Activity,
) {
    let mut wr = pin!(wr);
    let mut compressor = match HeaderCompressor::new() {
        Ok(c) => c,
        Err(e) => {
            warn!("spdy: cannot set up header compression: {e}");
            shared.gone.cancel();
            return;
        }
    };
    let empty_headers = HeaderBlock::default().encode();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        let cmd = tokio::select! {
            c = rx.recv() => c,
            _ = shared.gone.cancelled() => None,
        };
        let Some(mut cmd) = cmd else { break };
        let mut close = None;
        // Batch whatever else is queued into one write.
        loop {
            match cmd {
                WriterCmd::Frame(f) => frame::encode(&f, &mut buf),
                WriterCmd::Reply { stream_id } => match compressor.compress(&empty_headers) {
                    Ok(block) => frame::encode(
                        &Frame::SynReply {
                            stream_id,
                            flags: 0,
                            header_block: Bytes::from(block),
                        },
                        &mut buf,
                    ),
                    Err(e) => {
                        warn!("spdy: header compression failed: {e}");
                        shared.gone.cancel();
                        return;
                    }
                },
                WriterCmd::Close(ack) => {
                    close = Some(ack);
                    break;
                }
            }
            if buf.len() >= 64 * 1024 {
                break;
            }
            match rx.try_recv() {
                Ok(c) => cmd = c,
                Err(_) => break,
            }
        }
        let res = async {
            wr.write_all(&buf).await?;
            wr.flush().await
        };
        let res = tokio::select! {
            r = res => r,
            _ = shared.gone.cancelled() => break,
        };
        buf.clear();
        if let Err(e) = res {
            debug!("spdy: write failed: {e}");
            shared.gone.cancel();
            return;
        }
        activity.touch();
        if let Some(ack) = close {
            let _ = wr.shutdown().await;
            let _ = ack.send(());
            return;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn reader_task<R: AsyncRead>(
    rd: R,
    cfg: SessionConfig,
    weak: Weak<Shared>,
    shared: Arc<Shared>,
    incoming: mpsc::Sender<IncomingStream>,
    pumps: mpsc::UnboundedSender<PumpFuture>,
    activity: Activity,
) {
    let mut rd = pin!(rd);
    let mut decompressor = HeaderDecompressor::new(cfg.max_header_block);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut reader = Reader {
        weak,
        shared: shared.clone(),
        incoming,
        pumps,
    };
    'conn: loop {
        loop {
            match frame::decode(&mut buf, MAX_INBOUND_FRAME) {
                Ok(Some(f)) => {
                    activity.touch();
                    if let Err(status) = reader.handle(f, &mut decompressor).await {
                        reader.goaway(status).await;
                        break 'conn;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    warn!("spdy: bad frame from client: {e}");
                    reader.goaway(goaway::PROTOCOL_ERROR).await;
                    break 'conn;
                }
            }
        }
        let n = tokio::select! {
            n = rd.read_buf(&mut buf) => n,
            _ = shared.gone.cancelled() => break,
        };
        match n {
            Ok(0) => {
                debug!("spdy: client closed the connection");
                break;
            }
            Ok(_) => activity.touch(),
            Err(e) => {
                debug!("spdy: read failed: {e}");
                break;
            }
        }
    }
    // The client is gone (or broke the protocol): every stream's reader sees EOF, every
    // writer fails, and whoever waits on `gone` learns it.
    let mut st = shared.lock();
    for (_, s) in st.streams.drain() {
        s.reset.cancel();
    }
    drop(st);
    shared.gone.cancel();
    shared.window_changed.notify_waiters();
}

struct Reader {
    weak: Weak<Shared>,
    shared: Arc<Shared>,
    incoming: mpsc::Sender<IncomingStream>,
    pumps: mpsc::UnboundedSender<PumpFuture>,
}

impl Reader {
    async fn send(&self, f: Frame) {
        let _ = self.shared.writer.send(WriterCmd::Frame(f)).await;
    }

    async fn goaway(&self, status: u32) {
        let last_good_stream_id = self.shared.lock().last_peer_stream;
        self.send(Frame::GoAway {
            last_good_stream_id,
            status,
        })
        .await;
    }

    /// Handles one frame; `Err(goaway status)` ends the session.
    async fn handle(&mut self, f: Frame, z: &mut HeaderDecompressor) -> Result<(), u32> {
        trace!(?f, "spdy: frame in");
        match f {
            Frame::SynStream {
                stream_id,
                flags,
                header_block,
                ..
            } => {
                // Inflate even a stream we refuse: the zlib context must stay in step.
                let headers = inflate(z, &header_block)?;
                self.open(stream_id, flags, headers).await?;
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => self.data(stream_id, flags, data).await,
            Frame::RstStream { stream_id, status } => {
                debug!(stream_id, status, "spdy: client reset stream");
                self.shared.reset_stream(stream_id);
            }
            Frame::Settings { entries, .. } => {
                for e in entries {
                    if e.id == settings::INITIAL_WINDOW_SIZE {
                        let mut st = self.shared.lock();
                        let new = i64::from(e.value & 0x7FFF_FFFF);
                        let delta = new - st.initial_send_window;
                        st.initial_send_window = new;
                        for s in st.streams.values_mut() {
                            s.send_window += delta;
                        }
                        st.enforce = true;
                    }
                }
                self.shared.window_changed.notify_waiters();
            }
            Frame::Ping { id } => {
                // Odd ids are the client's and get echoed; even ones would answer ours.
                if id % 2 == 1 {
                    let _ = self
                        .shared
                        .writer
                        .try_send(WriterCmd::Frame(Frame::Ping { id }));
                }
            }
            Frame::GoAway { .. } => {
                debug!("spdy: client sent GOAWAY");
                self.shared.lock().going_away = true;
            }
            Frame::Headers {
                stream_id,
                flags,
                header_block,
            } => {
                inflate(z, &header_block)?;
                if flags & FLAG_FIN != 0 {
                    self.remote_fin(stream_id);
                }
            }
            Frame::SynReply { header_block, .. } => {
                // We never open streams, so a reply is the client's bug; keep zlib in step.
                inflate(z, &header_block)?;
            }
            Frame::WindowUpdate { stream_id, delta } => {
                let mut st = self.shared.lock();
                st.enforce = true;
                let delta = i64::from(delta);
                if stream_id == 0 {
                    st.session_send_window += delta;
                } else if let Some(s) = st.streams.get_mut(&stream_id) {
                    s.send_window += delta;
                }
                drop(st);
                self.shared.window_changed.notify_waiters();
            }
            Frame::Unknown { frame_type } => debug!(frame_type, "spdy: ignoring unknown frame"),
        }
        Ok(())
    }

    async fn open(&mut self, id: u32, flags: u8, headers: HeaderBlock) -> Result<(), u32> {
        let refuse = {
            let mut st = self.shared.lock();
            // Client streams are odd and increasing (draft 3.1, 2.3.2).
            if id.is_multiple_of(2) || id <= st.last_peer_stream {
                return Err(goaway::PROTOCOL_ERROR);
            }
            st.last_peer_stream = id;
            st.going_away || st.streams.len() >= MAX_STREAMS
        };
        if refuse {
            self.send(Frame::RstStream {
                stream_id: id,
                status: rst::REFUSED_STREAM,
            })
            .await;
            return Ok(());
        }
        let unacked = Arc::new(AtomicUsize::new(0));
        let weak = self.weak.clone();
        let credit: Credit = Arc::new(move |n| {
            if let Some(shared) = weak.upgrade() {
                shared.credit(id, &unacked, n);
            }
        });
        let (in_tx, reader) = pipe::inbound(Some(credit));
        let (writer, out_rx) = pipe::outbound();
        let reset = self.shared.gone.child_token();
        let fin = flags & FLAG_FIN != 0;
        let unidirectional = flags & FLAG_UNIDIRECTIONAL != 0;
        {
            let mut st = self.shared.lock();
            let send_window = st.initial_send_window;
            st.streams.insert(
                id,
                StreamState {
                    inbound: if fin { None } else { Some(in_tx) },
                    remote_closed: fin,
                    local_closed: false,
                    send_window,
                    reset: reset.clone(),
                },
            );
        }
        // The reply goes into the writer queue before any data the pump may send.
        let _ = self
            .shared
            .writer
            .send(WriterCmd::Reply { stream_id: id })
            .await;
        let (done_tx, done) = oneshot::channel();
        let pump = pump(
            self.shared.clone(),
            id,
            out_rx,
            reset,
            done_tx,
            unidirectional,
        );
        if self.pumps.send(Box::pin(pump)).is_err() {
            return Err(goaway::INTERNAL_ERROR);
        }
        debug!(stream_id = id, ?headers, "spdy: stream opened");
        let stream = IncomingStream {
            id,
            headers,
            reader,
            writer,
            done,
        };
        if self.incoming.send(stream).await.is_err() {
            // Nobody accepts streams any more (the request is being torn down).
            self.shared.reset_stream(id);
            self.send(Frame::RstStream {
                stream_id: id,
                status: rst::REFUSED_STREAM,
            })
            .await;
        }
        Ok(())
    }

    async fn data(&mut self, id: u32, flags: u8, data: Bytes) {
        let (sender, known) = {
            let st = self.shared.lock();
            match st.streams.get(&id) {
                Some(s) => (s.inbound.clone(), true),
                None => (None, id <= st.last_peer_stream && id % 2 == 1),
            }
        };
        if !known {
            self.send(Frame::RstStream {
                stream_id: id,
                status: rst::INVALID_STREAM,
            })
            .await;
            return;
        }
        let len = data.len();
        let delivered = match sender {
            Some(tx) if len > 0 => tx.send(data).await.is_ok(),
            _ => false,
        };
        if !delivered && len > 0 {
            // Nobody will read it: give the window back now so the client is not starved.
            let unacked = AtomicUsize::new(0);
            self.shared.credit(id, &unacked, len);
            let rest = unacked.load(Ordering::Acquire);
            if rest > 0 {
                self.shared.send_update(id, rest);
            }
        }
        if flags & FLAG_FIN != 0 {
            self.remote_fin(id);
        }
    }

    fn remote_fin(&self, id: u32) {
        let mut st = self.shared.lock();
        if let Some(s) = st.streams.get_mut(&id) {
            s.inbound = None;
            s.remote_closed = true;
        }
        Shared::maybe_forget(&mut st, id);
    }
}

fn inflate(z: &mut HeaderDecompressor, block: &[u8]) -> Result<HeaderBlock, u32> {
    let raw = z.decompress(block).map_err(|e| {
        warn!("spdy: header block: {e}");
        goaway::PROTOCOL_ERROR
    })?;
    HeaderBlock::decode(&raw).map_err(|e| {
        warn!("spdy: header block: {e}");
        goaway::PROTOCOL_ERROR
    })
}

/// Moves one stream's outgoing bytes into DATA frames, then its FIN.
async fn pump(
    shared: Arc<Shared>,
    id: u32,
    mut rx: mpsc::Receiver<Bytes>,
    reset: CancellationToken,
    done: oneshot::Sender<()>,
    unidirectional: bool,
) {
    loop {
        let chunk = tokio::select! {
            c = rx.recv() => c,
            _ = reset.cancelled() => break,
        };
        let Some(mut chunk) = chunk else {
            // Our side is finished: FIN, unless the client said it will not listen.
            if !unidirectional {
                let fin = Frame::Data {
                    stream_id: id,
                    flags: FLAG_FIN,
                    data: Bytes::new(),
                };
                let _ = shared.writer.send(WriterCmd::Frame(fin)).await;
            }
            let mut st = shared.lock();
            if let Some(s) = st.streams.get_mut(&id) {
                s.local_closed = true;
            }
            Shared::maybe_forget(&mut st, id);
            break;
        };
        if unidirectional {
            continue;
        }
        while !chunk.is_empty() {
            let Some(n) = shared.acquire(id, chunk.len(), &reset).await else {
                let _ = done.send(());
                return;
            };
            let data = chunk.split_to(n);
            let f = Frame::Data {
                stream_id: id,
                flags: 0,
                data,
            };
            if shared.writer.send(WriterCmd::Frame(f)).await.is_err() {
                let _ = done.send(());
                return;
            }
        }
    }
    let _ = done.send(());
}
