//! SPDY/3 header-block compression (draft 3.1, section 2.6.10.1): one zlib stream per
//! direction for the whole connection, primed with a fixed dictionary, each block ended by
//! a sync flush. A block that fails to inflate breaks the connection's context for good,
//! so callers treat any error here as fatal to the session.

use std::sync::OnceLock;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The dictionary's length-prefixed words, in the spec's order.
const DICTIONARY_WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The dictionary's tail: status codes, phrases, dates and common values, unprefixed.
const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
    "502504505",
    "203 Non-Authoritative Information",
    "204 No Content",
    "301 Moved Permanently",
    "400 Bad Request",
    "401 Unauthorized",
    "403 Forbidden",
    "404 Not Found",
    "500 Internal Server Error",
    "501 Not Implemented",
    "503 Service Unavailable",
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec",
    " 00:00:00",
    " Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,",
    "text/plain,text/javascript,",
    "publicprivatemax-age=gzip,deflate,sdch",
    "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// The SPDY/3 zlib dictionary (1423 bytes): each word with a 32-bit big-endian length
/// prefix, then the tail.
pub fn dictionary() -> &'static [u8] {
    static DICT: OnceLock<Vec<u8>> = OnceLock::new();
    DICT.get_or_init(|| {
        let mut d = Vec::with_capacity(1423);
        for w in DICTIONARY_WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(DICTIONARY_TAIL.as_bytes());
        d
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ZlibError {
    #[error("header block inflates beyond {0} bytes")]
    TooLarge(usize),
    #[error("corrupt header block: {0}")]
    Corrupt(String),
}

/// Inflates the peer's header blocks.
pub struct HeaderDecompressor {
    z: Decompress,
    max: usize,
}

impl HeaderDecompressor {
    /// `max` caps one block's inflated size: a few hundred compressed bytes can otherwise
    /// inflate to megabytes.
    pub fn new(max: usize) -> Self {
        HeaderDecompressor {
            z: Decompress::new(true),
            max,
        }
    }

    pub fn decompress(&mut self, block: &[u8]) -> Result<Vec<u8>, ZlibError> {
        let mut out: Vec<u8> = Vec::with_capacity(self.max.min(512));
        let mut consumed = 0usize;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= self.max {
                    return Err(ZlibError::TooLarge(self.max));
                }
                let grow = out.len().max(512).min(self.max - out.len());
                out.reserve_exact(grow);
            }
            let (in0, out0) = (self.z.total_in(), self.z.total_out());
            let res = self
                .z
                .decompress_vec(&block[consumed..], &mut out, FlushDecompress::Sync);
            consumed += (self.z.total_in() - in0) as usize;
            let progressed = self.z.total_in() != in0 || self.z.total_out() != out0;
            match res {
                Ok(Status::StreamEnd) => return Ok(out),
                Ok(_) => {
                    // Done when every input byte is in and zlib had room to spare for more
                    // output (a full buffer may hide pending output).
                    if consumed >= block.len() && out.len() < out.capacity() {
                        return Ok(out);
                    }
                    if !progressed && out.len() < out.capacity() {
                        return Err(ZlibError::Corrupt("truncated block".into()));
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z
                        .set_dictionary(dictionary())
                        .map_err(|e| ZlibError::Corrupt(e.to_string()))?;
                }
                Err(e) => return Err(ZlibError::Corrupt(e.to_string())),
            }
        }
    }
}

/// Deflates our header blocks.
pub struct HeaderCompressor {
    z: Compress,
}

impl HeaderCompressor {
    pub fn new() -> Result<Self, ZlibError> {
        let mut z = Compress::new(Compression::default(), true);
        z.set_dictionary(dictionary())
            .map_err(|e| ZlibError::Corrupt(e.to_string()))?;
        Ok(HeaderCompressor { z })
    }

    pub fn compress(&mut self, block: &[u8]) -> Result<Vec<u8>, ZlibError> {
        let mut out = Vec::with_capacity(block.len() / 2 + 64);
        let mut consumed = 0usize;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(64));
            }
            let in0 = self.z.total_in();
            self.z
                .compress_vec(&block[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| ZlibError::Corrupt(e.to_string()))?;
            consumed += (self.z.total_in() - in0) as usize;
            // A sync flush is complete once zlib stops short of filling the buffer.
            if consumed >= block.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn dictionary_is_the_spdy3_one() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(
            hex::encode(Sha256::digest(d)),
            "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"
        );
    }

    #[test]
    fn blocks_roundtrip_over_one_context() {
        let mut c = HeaderCompressor::new().unwrap();
        let mut d = HeaderDecompressor::new(1 << 16);
        for i in 0..20 {
            let block = format!("streamtype stdout {i} content-type text/plain").into_bytes();
            let z = c.compress(&block).unwrap();
            assert_eq!(d.decompress(&z).unwrap(), block);
        }
    }

    #[test]
    fn a_bomb_is_refused() {
        let mut c = HeaderCompressor::new().unwrap();
        let z = c.compress(&vec![b'a'; 1 << 20]).unwrap();
        assert!(z.len() < 8192);
        let mut d = HeaderDecompressor::new(1 << 16);
        assert!(matches!(d.decompress(&z), Err(ZlibError::TooLarge(_))));
    }

    #[test]
    fn garbage_is_an_error() {
        let mut d = HeaderDecompressor::new(1 << 16);
        assert!(d.decompress(b"\x00\x01garbage").is_err());
    }
}
