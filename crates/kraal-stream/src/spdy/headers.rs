//! The uncompressed SPDY/3 name/value header block (draft 3.1, section 2.6.10): a 32-bit
//! pair count, then each name and value with a 32-bit length. Names are lowercase; one name
//! may carry several values separated by NUL.

use bytes::{Buf, BufMut};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderBlock(pub Vec<(String, String)>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("header block truncated")]
    Truncated,
    #[error("header block has trailing bytes")]
    Trailing,
    #[error("header name or value is not UTF-8")]
    NotUtf8,
}

impl HeaderBlock {
    /// The first value of `name` (names compare case-insensitively: older clients sent
    /// mixed case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split('\0').next().unwrap_or(""))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.put_u32(self.0.len() as u32);
        for (n, v) in &self.0 {
            out.put_u32(n.len() as u32);
            out.put_slice(n.to_ascii_lowercase().as_bytes());
            out.put_u32(v.len() as u32);
            out.put_slice(v.as_bytes());
        }
        out
    }

    pub fn decode(mut b: &[u8]) -> Result<Self, HeaderError> {
        if b.remaining() < 4 {
            return Err(HeaderError::Truncated);
        }
        let count = b.get_u32() as usize;
        // Every pair takes at least 8 bytes: never allocate for more pairs than could fit.
        if count > b.remaining() / 8 {
            return Err(HeaderError::Truncated);
        }
        let mut pairs = Vec::with_capacity(count);
        for _ in 0..count {
            let n = take_str(&mut b)?;
            let v = take_str(&mut b)?;
            pairs.push((n, v));
        }
        if b.has_remaining() {
            return Err(HeaderError::Trailing);
        }
        Ok(HeaderBlock(pairs))
    }
}

fn take_str(b: &mut &[u8]) -> Result<String, HeaderError> {
    if b.remaining() < 4 {
        return Err(HeaderError::Truncated);
    }
    let len = b.get_u32() as usize;
    if len > b.remaining() {
        return Err(HeaderError::Truncated);
    }
    let s = std::str::from_utf8(&b[..len]).map_err(|_| HeaderError::NotUtf8)?;
    let s = s.to_owned();
    b.advance(len);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn roundtrip_and_lookup() {
        let h = HeaderBlock(vec![
            ("streamtype".into(), "stdout".into()),
            ("port".into(), "80\u{0}81".into()),
        ]);
        let back = HeaderBlock::decode(&h.encode()).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.get("streamType"), Some("stdout"));
        assert_eq!(back.get("port"), Some("80"));
    }

    proptest! {
        #[test]
        fn decode_arbitrary(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = HeaderBlock::decode(&data);
        }
    }
}
