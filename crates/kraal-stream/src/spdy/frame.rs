//! SPDY/3 frame encoding and decoding (draft 3.1, section 2.2 and 2.6).
//!
//! Every frame has an 8-byte header; its length field is 24 bits, so no frame holds more
//! than 16 MiB and the decoder never buffers more than that. Header blocks are returned
//! still compressed: their zlib context spans the whole connection, so only the session
//! can inflate them, in order.

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const VERSION: u16 = 3;
pub const HEADER_LEN: usize = 8;
/// The 24-bit length field's maximum.
pub const MAX_FRAME_LEN: usize = 0x00FF_FFFF;

pub const FLAG_FIN: u8 = 0x01;
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
pub const FLAG_SETTINGS_CLEAR: u8 = 0x01;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes.
pub mod rst {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const CANCEL: u32 = 5;
    pub const INTERNAL_ERROR: u32 = 6;
    pub const FLOW_CONTROL_ERROR: u32 = 7;
    pub const STREAM_IN_USE: u32 = 8;
}

/// GOAWAY status codes.
pub mod goaway {
    pub const OK: u32 = 0;
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INTERNAL_ERROR: u32 = 2;
}

/// SETTINGS ids.
pub mod settings {
    pub const MAX_CONCURRENT_STREAMS: u32 = 4;
    pub const INITIAL_WINDOW_SIZE: u32 = 7;
}

const STREAM_ID_MASK: u32 = 0x7FFF_FFFF;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    pub id: u32,
    pub value: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        flags: u8,
        header_block: Bytes,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        header_block: Bytes,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        entries: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        header_block: Bytes,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    /// A control frame type this version does not define: the spec says to ignore it.
    Unknown {
        frame_type: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is larger than the {1} allowed")]
    TooLarge(usize, usize),
    #[error("unsupported SPDY version {0}")]
    UnsupportedVersion(u16),
    #[error("malformed {0} frame")]
    Malformed(&'static str),
}

/// Decodes one frame from the front of `buf`, consuming it. `Ok(None)` means more bytes
/// are needed. `max_len` caps the payload (at most [`MAX_FRAME_LEN`]).
pub fn decode(buf: &mut BytesMut, max_len: usize) -> Result<Option<Frame>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = (usize::from(buf[5]) << 16) | (usize::from(buf[6]) << 8) | usize::from(buf[7]);
    let max_len = max_len.min(MAX_FRAME_LEN);
    if len > max_len {
        return Err(FrameError::TooLarge(len, max_len));
    }
    if buf.len() < HEADER_LEN + len {
        // Reserve up front so the reader fills it in one go; bounded by the 24-bit length.
        buf.reserve(HEADER_LEN + len - buf.len());
        return Ok(None);
    }
    let mut head = buf.split_to(HEADER_LEN);
    let payload = buf.split_to(len).freeze();
    let first = head.get_u32();
    let flags = head.get_u8();
    if first & 0x8000_0000 == 0 {
        let stream_id = first & STREAM_ID_MASK;
        return Ok(Some(Frame::Data {
            stream_id,
            flags,
            data: payload,
        }));
    }
    let version = ((first >> 16) & 0x7FFF) as u16;
    let frame_type = (first & 0xFFFF) as u16;
    if version != VERSION {
        return Err(FrameError::UnsupportedVersion(version));
    }
    decode_control(frame_type, flags, payload).map(Some)
}

fn decode_control(frame_type: u16, flags: u8, mut p: Bytes) -> Result<Frame, FrameError> {
    let frame = match frame_type {
        TYPE_SYN_STREAM => {
            if p.len() < 10 {
                return Err(FrameError::Malformed("SYN_STREAM"));
            }
            let stream_id = p.get_u32() & STREAM_ID_MASK;
            let associated_to = p.get_u32() & STREAM_ID_MASK;
            let priority = p.get_u8() >> 5;
            let _slot = p.get_u8();
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                header_block: p,
            }
        }
        TYPE_SYN_REPLY => {
            if p.len() < 4 {
                return Err(FrameError::Malformed("SYN_REPLY"));
            }
            let stream_id = p.get_u32() & STREAM_ID_MASK;
            Frame::SynReply {
                stream_id,
                flags,
                header_block: p,
            }
        }
        TYPE_RST_STREAM => {
            if p.len() != 8 {
                return Err(FrameError::Malformed("RST_STREAM"));
            }
            Frame::RstStream {
                stream_id: p.get_u32() & STREAM_ID_MASK,
                status: p.get_u32(),
            }
        }
        TYPE_SETTINGS => {
            if p.len() < 4 {
                return Err(FrameError::Malformed("SETTINGS"));
            }
            let count = p.get_u32() as usize;
            // Check the count against the bytes present before allocating for it.
            if count.checked_mul(8) != Some(p.len()) {
                return Err(FrameError::Malformed("SETTINGS"));
            }
            let mut entries = Vec::with_capacity(count);
            for _ in 0..count {
                let word = p.get_u32();
                entries.push(Setting {
                    flags: (word >> 24) as u8,
                    id: word & 0x00FF_FFFF,
                    value: p.get_u32(),
                });
            }
            Frame::Settings { flags, entries }
        }
        TYPE_PING => {
            if p.len() != 4 {
                return Err(FrameError::Malformed("PING"));
            }
            Frame::Ping { id: p.get_u32() }
        }
        TYPE_GOAWAY => {
            // SPDY/3 added the status code; accept its absence rather than drop the session.
            if p.len() != 8 && p.len() != 4 {
                return Err(FrameError::Malformed("GOAWAY"));
            }
            let last_good_stream_id = p.get_u32() & STREAM_ID_MASK;
            let status = if p.remaining() >= 4 { p.get_u32() } else { 0 };
            Frame::GoAway {
                last_good_stream_id,
                status,
            }
        }
        TYPE_HEADERS => {
            if p.len() < 4 {
                return Err(FrameError::Malformed("HEADERS"));
            }
            let stream_id = p.get_u32() & STREAM_ID_MASK;
            Frame::Headers {
                stream_id,
                flags,
                header_block: p,
            }
        }
        TYPE_WINDOW_UPDATE => {
            if p.len() != 8 {
                return Err(FrameError::Malformed("WINDOW_UPDATE"));
            }
            Frame::WindowUpdate {
                stream_id: p.get_u32() & STREAM_ID_MASK,
                delta: p.get_u32() & STREAM_ID_MASK,
            }
        }
        other => Frame::Unknown { frame_type: other },
    };
    Ok(frame)
}

fn put_control(out: &mut BytesMut, frame_type: u16, flags: u8, len: usize) {
    out.put_u16(0x8000 | VERSION);
    out.put_u16(frame_type);
    put_flags_len(out, flags, len);
}

fn put_flags_len(out: &mut BytesMut, flags: u8, len: usize) {
    // Callers keep payloads under MAX_FRAME_LEN; the mask keeps a bug from corrupting flags.
    out.put_u32((u32::from(flags) << 24) | (len as u32 & 0x00FF_FFFF));
}

/// Appends `frame` to `out`. Payloads longer than [`MAX_FRAME_LEN`] are a caller bug and
/// are truncated by the length mask, so callers chunk data first.
pub fn encode(frame: &Frame, out: &mut BytesMut) {
    match frame {
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            out.put_u32(stream_id & STREAM_ID_MASK);
            put_flags_len(out, *flags, data.len());
            out.put_slice(data);
        }
        Frame::SynStream {
            stream_id,
            associated_to,
            priority,
            flags,
            header_block,
        } => {
            put_control(out, TYPE_SYN_STREAM, *flags, 10 + header_block.len());
            out.put_u32(stream_id & STREAM_ID_MASK);
            out.put_u32(associated_to & STREAM_ID_MASK);
            out.put_u8((priority & 0x07) << 5);
            out.put_u8(0);
            out.put_slice(header_block);
        }
        Frame::SynReply {
            stream_id,
            flags,
            header_block,
        } => {
            put_control(out, TYPE_SYN_REPLY, *flags, 4 + header_block.len());
            out.put_u32(stream_id & STREAM_ID_MASK);
            out.put_slice(header_block);
        }
        Frame::RstStream { stream_id, status } => {
            put_control(out, TYPE_RST_STREAM, 0, 8);
            out.put_u32(stream_id & STREAM_ID_MASK);
            out.put_u32(*status);
        }
        Frame::Settings { flags, entries } => {
            put_control(out, TYPE_SETTINGS, *flags, 4 + 8 * entries.len());
            out.put_u32(entries.len() as u32);
            for e in entries {
                out.put_u32((u32::from(e.flags) << 24) | (e.id & 0x00FF_FFFF));
                out.put_u32(e.value);
            }
        }
        Frame::Ping { id } => {
            put_control(out, TYPE_PING, 0, 4);
            out.put_u32(*id);
        }
        Frame::GoAway {
            last_good_stream_id,
            status,
        } => {
            put_control(out, TYPE_GOAWAY, 0, 8);
            out.put_u32(last_good_stream_id & STREAM_ID_MASK);
            out.put_u32(*status);
        }
        Frame::Headers {
            stream_id,
            flags,
            header_block,
        } => {
            put_control(out, TYPE_HEADERS, *flags, 4 + header_block.len());
            out.put_u32(stream_id & STREAM_ID_MASK);
            out.put_slice(header_block);
        }
        Frame::WindowUpdate { stream_id, delta } => {
            put_control(out, TYPE_WINDOW_UPDATE, 0, 8);
            out.put_u32(stream_id & STREAM_ID_MASK);
            out.put_u32(delta & STREAM_ID_MASK);
        }
        Frame::Unknown { frame_type } => put_control(out, *frame_type, 0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(f: Frame) {
        let mut buf = BytesMut::new();
        encode(&f, &mut buf);
        let got = decode(&mut buf, MAX_FRAME_LEN).unwrap().unwrap();
        assert_eq!(got, f);
        assert!(buf.is_empty());
    }

    #[test]
    fn frames_roundtrip() {
        roundtrip(Frame::Data {
            stream_id: 5,
            flags: FLAG_FIN,
            data: Bytes::from_static(b"hello"),
        });
        roundtrip(Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 3,
            flags: FLAG_FIN,
            header_block: Bytes::from_static(b"xyz"),
        });
        roundtrip(Frame::SynReply {
            stream_id: 1,
            flags: 0,
            header_block: Bytes::new(),
        });
        roundtrip(Frame::RstStream {
            stream_id: 3,
            status: rst::CANCEL,
        });
        roundtrip(Frame::Settings {
            flags: 0,
            entries: vec![Setting {
                flags: 0,
                id: settings::INITIAL_WINDOW_SIZE,
                value: 1 << 20,
            }],
        });
        roundtrip(Frame::Ping { id: 7 });
        roundtrip(Frame::GoAway {
            last_good_stream_id: 9,
            status: goaway::OK,
        });
        roundtrip(Frame::WindowUpdate {
            stream_id: 0,
            delta: 4096,
        });
    }

    #[test]
    fn ping_bytes_match_the_spec() {
        let mut buf = BytesMut::new();
        encode(&Frame::Ping { id: 1 }, &mut buf);
        assert_eq!(&buf[..], &[0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]);
    }

    #[test]
    fn partial_and_oversized_frames() {
        let mut buf = BytesMut::from(&[0x80, 3, 0, 6, 0, 0, 0][..]);
        assert_eq!(decode(&mut buf, MAX_FRAME_LEN), Ok(None));
        let mut buf = BytesMut::from(&[0, 0, 0, 1, 0, 0x10, 0, 0][..]);
        assert!(matches!(
            decode(&mut buf, 1024),
            Err(FrameError::TooLarge(0x10_0000, 1024))
        ));
        let mut buf = BytesMut::from(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert_eq!(
            decode(&mut buf, MAX_FRAME_LEN),
            Err(FrameError::UnsupportedVersion(2))
        );
    }

    proptest! {
        // Arbitrary bytes never panic the decoder, and it never holds more than one
        // header plus the capped payload.
        #[test]
        fn decode_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..4096), cap in 0usize..2048) {
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(_)) = decode(&mut buf, cap) {}
            prop_assert!(buf.capacity() <= 2 * data.len().max(HEADER_LEN + cap) + 64);
        }

        // Well-formed control headers with arbitrary payloads.
        #[test]
        fn decode_control_frames(ty in 0u16..12, flags in any::<u8>(), payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut buf = BytesMut::new();
            buf.put_u16(0x8003);
            buf.put_u16(ty);
            buf.put_u32((u32::from(flags) << 24) | payload.len() as u32);
            buf.put_slice(&payload);
            let _ = decode(&mut buf, MAX_FRAME_LEN);
        }
    }
}
