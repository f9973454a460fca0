//! The client-to-server HTTP/2 byte stream, frame by frame (RFC 9113 §3.4, §4.1): header
//! blocks (HEADERS and its CONTINUATIONs) go through [`HeaderFixer`]; every other byte is
//! passed on as it arrives.
//!
//! Anything this does not understand (a stream that is not HTTP/2, a CONTINUATION out of
//! place, a block that does not decode, an absurd size) is handed on exactly as received and
//! the rest of the connection is passed through untouched: h2 then sees the client's own bytes
//! and reports the client's error, as it would without this layer.

use super::headers::HeaderFixer;

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The frame size every HTTP/2 peer accepts (SETTINGS_MAX_FRAME_SIZE's initial value).
const MAX_FRAME: usize = 16384;
/// Bound on a header block held back until its END_HEADERS (h2 refuses lists past 16 KiB).
const MAX_BLOCK: usize = 256 * 1024;

enum State {
    /// Inside the connection preface; the count of its bytes seen so far.
    Preface(usize),
    /// Reading a frame header.
    Header {
        bytes: [u8; FRAME_HEADER],
        have: usize,
    },
    /// Passing on the rest of a frame that is not part of a header block.
    Forward(usize),
    /// Holding back the payload of a HEADERS or CONTINUATION frame.
    Collect { header: Frame, payload: Vec<u8> },
    /// Given up on this connection: everything goes through as is.
    Raw,
}

#[derive(Clone, Copy)]
struct Frame {
    len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
    bytes: [u8; FRAME_HEADER],
}

impl Frame {
    fn parse(bytes: [u8; FRAME_HEADER]) -> Frame {
        Frame {
            len: usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]),
            kind: bytes[3],
            flags: bytes[4],
            stream: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff,
            bytes,
        }
    }
}

/// A header block whose END_HEADERS has not come yet.
struct Block {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
    /// The frames exactly as received, for handing on if the block cannot be rewritten.
    raw: Vec<u8>,
}

pub struct Rewriter {
    state: State,
    block: Option<Block>,
    fixer: HeaderFixer,
}

impl Rewriter {
    pub fn new() -> Self {
        Rewriter {
            state: State::Preface(0),
            block: None,
            fixer: HeaderFixer::new(),
        }
    }

    /// Takes the next bytes the client sent and appends what the server is to read to `out`.
    pub fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            match &mut self.state {
                State::Raw => {
                    out.extend_from_slice(input);
                    return;
                }
                State::Preface(seen) => {
                    let take = (PREFACE.len() - *seen).min(input.len());
                    let (head, rest) = input.split_at(take);
                    out.extend_from_slice(head);
                    input = rest;
                    if head != &PREFACE[*seen..*seen + take] {
                        self.state = State::Raw;
                        continue;
                    }
                    *seen += take;
                    if *seen == PREFACE.len() {
                        self.state = next_header();
                    }
                }
                State::Header { bytes, have } => {
                    let take = (FRAME_HEADER - *have).min(input.len());
                    bytes[*have..*have + take].copy_from_slice(&input[..take]);
                    *have += take;
                    input = &input[take..];
                    if *have == FRAME_HEADER {
                        let frame = Frame::parse(*bytes);
                        self.start_frame(frame, out);
                    }
                }
                State::Forward(remaining) => {
                    let take = (*remaining).min(input.len());
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    *remaining -= take;
                    if *remaining == 0 {
                        self.state = next_header();
                    }
                }
                State::Collect { header, payload } => {
                    let take = (header.len - payload.len()).min(input.len());
                    payload.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if payload.len() == header.len {
                        let header = *header;
                        let payload = std::mem::take(payload);
                        self.state = next_header();
                        self.end_frame(header, payload, out);
                    }
                }
            }
        }
    }

    /// The client closed its side: whatever is held back goes on as received, so h2 sees
    /// the truncated stream the client left.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if let Some(block) = self.block.take() {
            out.extend_from_slice(&block.raw);
        }
        match std::mem::replace(&mut self.state, State::Raw) {
            State::Header { bytes, have } => out.extend_from_slice(&bytes[..have]),
            State::Collect { header, payload } => {
                out.extend_from_slice(&header.bytes);
                out.extend_from_slice(&payload);
            }
            State::Preface(_) | State::Forward(_) | State::Raw => {}
        }
    }

    fn start_frame(&mut self, frame: Frame, out: &mut Vec<u8>) {
        let in_block = self.block.as_ref().map(|block| block.stream);
        let collect = match (frame.kind, in_block) {
            (HEADERS, None) => true,
            (CONTINUATION, Some(stream)) => stream == frame.stream,
            (_, None) => {
                out.extend_from_slice(&frame.bytes);
                self.state = if frame.len == 0 {
                    next_header()
                } else {
                    State::Forward(frame.len)
                };
                return;
            }
            _ => false,
        };
        let held = self.block.as_ref().map_or(0, |block| block.raw.len());
        if !collect || held + frame.len > MAX_BLOCK {
            // A frame inside a header block that RFC 9113 §6.10 forbids there, or a block too
            // big to hold: not ours to judge.
            self.give_up(out, &frame.bytes);
            return;
        }
        self.state = State::Collect {
            header: frame,
            payload: Vec::with_capacity(frame.len),
        };
        if frame.len == 0 {
            self.state = next_header();
            self.end_frame(frame, Vec::new(), out);
        }
    }

    fn end_frame(&mut self, frame: Frame, payload: Vec<u8>, out: &mut Vec<u8>) {
        let mut block = match self.block.take() {
            Some(block) => block,
            None => match open_block(&frame, &payload) {
                Some(block) => block,
                None => {
                    self.give_up(out, &frame.bytes);
                    out.extend_from_slice(&payload);
                    return;
                }
            },
        };
        block.raw.extend_from_slice(&frame.bytes);
        block.raw.extend_from_slice(&payload);
        if frame.kind == CONTINUATION {
            block.fragment.extend_from_slice(&payload);
        }
        if frame.flags & END_HEADERS == 0 {
            self.block = Some(block);
            return;
        }
        match self.fixer.rewrite(&block.fragment) {
            Some(fields) => write_block(&block, &fields, out),
            None => {
                out.extend_from_slice(&block.raw);
                self.state = State::Raw;
            }
        }
    }

    /// Hands on what is held back and the frame header just read, then passes the rest of
    /// the connection through.
    fn give_up(&mut self, out: &mut Vec<u8>, frame_header: &[u8]) {
        if let Some(block) = self.block.take() {
            out.extend_from_slice(&block.raw);
        }
        out.extend_from_slice(frame_header);
        self.state = State::Raw;
    }
}

fn next_header() -> State {
    State::Header {
        bytes: [0; FRAME_HEADER],
        have: 0,
    }
}

/// A HEADERS frame's fragment without its padding and priority fields (RFC 9113 §6.2);
/// None if those fields do not fit the payload.
fn open_block(frame: &Frame, payload: &[u8]) -> Option<Block> {
    let mut start = 0;
    let mut pad = 0;
    if frame.flags & PADDED != 0 {
        pad = usize::from(*payload.first()?);
        start = 1;
    }
    let mut priority = None;
    if frame.flags & PRIORITY != 0 {
        priority = Some(payload.get(start..start + 5)?.try_into().ok()?);
        start += 5;
    }
    let end = payload.len().checked_sub(pad)?;
    Some(Block {
        stream: frame.stream,
        end_stream: frame.flags & END_STREAM != 0,
        priority,
        fragment: payload.get(start..end)?.to_vec(),
        raw: Vec::new(),
    })
}

/// The rewritten block as a HEADERS frame and as many CONTINUATIONs as it needs, none over
/// the frame size every peer accepts. Padding is dropped; END_STREAM and priority are kept.
fn write_block(block: &Block, fields: &[u8], out: &mut Vec<u8>) {
    let mut flags = if block.end_stream { END_STREAM } else { 0 };
    let mut room = MAX_FRAME;
    if block.priority.is_some() {
        flags |= PRIORITY;
        room -= 5;
    }
    let (first, mut rest) = fields.split_at(room.min(fields.len()));
    let mut kind = HEADERS;
    let mut chunk = first;
    loop {
        let last = rest.is_empty();
        let prefix = match (kind, block.priority) {
            (HEADERS, Some(priority)) => Some(priority),
            _ => None,
        };
        let len = chunk.len() + prefix.map_or(0, |p| p.len());
        let frame_flags = flags | if last { END_HEADERS } else { 0 };
        out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
        out.push(kind);
        out.push(frame_flags);
        out.extend_from_slice(&block.stream.to_be_bytes());
        if let Some(priority) = prefix {
            out.extend_from_slice(&priority);
        }
        out.extend_from_slice(chunk);
        if last {
            return;
        }
        let (next, remaining) = rest.split_at(MAX_FRAME.min(rest.len()));
        chunk = next;
        rest = remaining;
        kind = CONTINUATION;
        // END_STREAM and PRIORITY belong to the HEADERS frame only.
        flags = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::headers::encode_integer;
    use loona_hpack::Decoder;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        out.push(kind);
        out.push(flags);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn literal(name: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = vec![0x40];
        encode_integer(name.len(), 7, 0, &mut out);
        out.extend_from_slice(name);
        encode_integer(value.len(), 7, 0, &mut out);
        out.extend_from_slice(value);
        out
    }

    /// Splits what the server reads into (type, flags, stream, payload) frames.
    fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        assert_eq!(&bytes[..24], PREFACE);
        bytes = &bytes[24..];
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let f = Frame::parse(bytes[..9].try_into().unwrap());
            out.push((f.kind, f.flags, f.stream, bytes[9..9 + f.len].to_vec()));
            bytes = &bytes[9 + f.len..];
        }
        out
    }

    fn run(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut rewriter = Rewriter::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            rewriter.push(piece, &mut out);
        }
        rewriter.finish(&mut out);
        out
    }

    fn authority_of(fragment: &[u8], decoder: &mut Decoder) -> Vec<u8> {
        decoder
            .decode(fragment)
            .unwrap()
            .into_iter()
            .find(|(name, _)| name == b":authority")
            .unwrap()
            .1
    }

    #[test]
    fn rewrites_padded_prioritised_and_continued_blocks_whatever_the_read_sizes() {
        let settings = frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]);
        let block = literal(b":authority", b"/run/kraal/kraal.sock");
        let (a, b) = block.split_at(7);
        let mut headers_payload = vec![3]; // pad length
        headers_payload.extend_from_slice(&[0x80, 0, 0, 1, 15]); // exclusive dep on 1, weight
        headers_payload.extend_from_slice(a);
        headers_payload.extend_from_slice(&[0, 0, 0]);
        let mut input = PREFACE.to_vec();
        input.extend(settings.clone());
        input.extend(frame(
            HEADERS,
            PADDED | PRIORITY | END_STREAM,
            3,
            &headers_payload,
        ));
        input.extend(frame(CONTINUATION, END_HEADERS, 3, b));
        input.extend(frame(0x0, END_STREAM, 3, b"data"));
        for chunk in [1, 2, 9, 10, 4096] {
            let out = frames(&run(&input, chunk));
            assert_eq!(out.len(), 3, "read size {chunk}");
            assert_eq!(out[0], (0x4, 0, 0, settings[9..].to_vec()));
            let (kind, flags, stream, payload) = &out[1];
            assert_eq!(
                (*kind, *flags, *stream),
                (HEADERS, PRIORITY | END_STREAM | END_HEADERS, 3)
            );
            assert_eq!(&payload[..5], &[0x80, 0, 0, 1, 15]);
            let authority = authority_of(&payload[5..], &mut Decoder::new());
            assert_eq!(authority, b"localhost");
            assert_eq!(out[2], (0x0, END_STREAM, 3, b"data".to_vec()));
        }
    }

    #[test]
    fn large_blocks_are_split_into_continuations() {
        let mut block = literal(b":authority", b"/run/kraal/kraal.sock");
        for i in 0..40 {
            block.extend(literal(format!("x-{i}").as_bytes(), &[b'v'; 1000]));
        }
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, 0, 1, &block[..10_000]));
        input.extend(frame(CONTINUATION, 0, 1, &block[10_000..30_000]));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, &block[30_000..]));
        let out = frames(&run(&input, 1000));
        let kinds: Vec<_> = out
            .iter()
            .map(|f| (f.0, f.1, f.3.len() <= MAX_FRAME))
            .collect();
        assert_eq!(
            kinds,
            [
                (HEADERS, 0, true),
                (CONTINUATION, 0, true),
                (CONTINUATION, END_HEADERS, true)
            ]
        );
        let fragment: Vec<u8> = out.iter().flat_map(|f| f.3.clone()).collect();
        let fields = Decoder::new().decode(&fragment).unwrap();
        assert_eq!(fields.len(), 41);
        assert_eq!(fields[0].1, b"localhost");
    }

    #[test]
    fn not_http2_passes_through() {
        let input = b"GET / HTTP/1.1\r\nHost: /x\r\n\r\n";
        assert_eq!(run(input, 3), input);
    }

    #[test]
    fn undecodable_blocks_and_stray_frames_pass_through_unchanged() {
        let mut garbage = PREFACE.to_vec();
        garbage.extend(frame(HEADERS, END_HEADERS, 1, &[0xff, 0xff, 0xff]));
        garbage.extend(frame(0x0, 0, 1, b"after"));
        assert_eq!(run(&garbage, 5), garbage);

        let mut interleaved = PREFACE.to_vec();
        interleaved.extend(frame(HEADERS, 0, 1, &literal(b"a", b"b")));
        interleaved.extend(frame(0x6, 0, 0, &[0; 8])); // PING inside a header block
        interleaved.extend(frame(CONTINUATION, END_HEADERS, 1, &[]));
        assert_eq!(run(&interleaved, 4), interleaved);

        let mut stray = PREFACE.to_vec();
        stray.extend(frame(CONTINUATION, END_HEADERS, 1, &literal(b"a", b"b")));
        assert_eq!(run(&stray, 4), stray);

        let mut bad_padding = PREFACE.to_vec();
        bad_padding.extend(frame(HEADERS, PADDED | END_HEADERS, 1, &[200, 0x82]));
        assert_eq!(run(&bad_padding, 4), bad_padding);
    }

    #[test]
    fn truncated_input_is_handed_on_at_the_end() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, 0, 1, &literal(b"a", b"b")));
        input.extend(&frame(CONTINUATION, END_HEADERS, 1, &literal(b"c", b"d"))[..12]);
        assert_eq!(run(&input, 7), input);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut input = PREFACE.to_vec();
            let len = (seed % 300) as usize;
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                // Mostly small frame lengths and the types this module looks into.
                input.push(match seed % 5 {
                    0 => 0,
                    1 => HEADERS,
                    2 => CONTINUATION,
                    _ => (seed >> 8) as u8,
                });
            }
            run(&input, 1 + (seed % 17) as usize);
        }
    }
}
