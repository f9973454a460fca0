//! sha256 digests: the only algorithm this store accepts, computed by us.
//!
//! We never trust a digest a registry reports about its own content; everything that
//! enters the store is hashed here and compared with the digest we asked for.

use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

/// `sha256:` prefix of every digest the store handles.
pub(crate) const SHA256_PREFIX: &str = "sha256:";

/// True for exactly 64 lowercase hex characters.
pub(crate) fn is_sha256_hex(hex: &str) -> bool {
    hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The hex part of `sha256:<64 lowercase hex>`, or `None` if it is not of that form.
pub(crate) fn sha256_hex(digest: &str) -> Option<&str> {
    digest
        .strip_prefix(SHA256_PREFIX)
        .filter(|hex| is_sha256_hex(hex))
}

/// `sha256:<hex>` of `data`.
pub(crate) fn sha256_of(data: &[u8]) -> String {
    format!("{SHA256_PREFIX}{}", hex::encode(Sha256::digest(data)))
}

/// Incremental sha256 that also counts bytes.
#[derive(Default, Clone)]
pub(crate) struct Hasher {
    inner: Sha256,
    len: u64,
}

impl Hasher {
    pub(crate) fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
        self.len += data.len() as u64;
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// `sha256:<hex>` of everything fed so far.
    pub(crate) fn digest(self) -> String {
        format!("{SHA256_PREFIX}{}", hex::encode(self.inner.finalize()))
    }
}

/// A reader that hashes everything read through it, so the layer's uncompressed
/// stream can be checked against its diff_id without a second pass.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::default(),
        }
    }

    /// Reads whatever is left (tar padding after the end-of-archive marker counts
    /// towards the diff_id) and returns the digest of the whole stream.
    pub(crate) fn finish(mut self) -> io::Result<String> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(self.hasher.digest())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_forms() {
        let hex = "a".repeat(64);
        assert!(is_sha256_hex(&hex));
        assert_eq!(sha256_hex(&format!("sha256:{hex}")), Some(hex.as_str()));
        assert_eq!(sha256_hex(&format!("sha256:{}", "A".repeat(64))), None);
        assert_eq!(sha256_hex(&format!("sha512:{hex}")), None);
        assert_eq!(sha256_hex("sha256:abc"), None);
        assert_eq!(sha256_hex(&hex), None);
    }

    #[test]
    fn hashing_reader_covers_the_whole_stream() {
        let data = b"hello world, and some trailing padding";
        let mut reader = HashingReader::new(&data[..]);
        let mut first = [0u8; 5];
        reader.read_exact(&mut first).ok();
        let digest = reader.finish().ok();
        assert_eq!(digest, Some(sha256_of(data)));
    }

    #[test]
    fn hasher_counts_bytes() {
        let mut h = Hasher::default();
        h.update(b"abc");
        h.update(b"de");
        assert_eq!(h.len(), 5);
        assert_eq!(h.digest(), sha256_of(b"abcde"));
    }
}
