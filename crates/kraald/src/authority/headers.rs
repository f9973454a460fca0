//! One header block at a time: HPACK-decode what the client sent, replace an `:authority`
//! that h2 would refuse, and encode the block again with no dynamic-table indexing.
//!
//! Why re-encode every block and not only the one carrying the bad value: grpc-go sends
//! `:authority` as "literal with incremental indexing" and, on the next stream of the same
//! connection, as an indexed reference to that dynamic-table entry. Rewriting the literal alone
//! would leave the server's table holding an entry of another size than the client's, and the
//! tables would drift apart at the first eviction. Encoding every field as a literal without
//! indexing keeps the server's table empty for the whole connection, so it can never disagree
//! with the client's, whatever the client does with its own.

use loona_hpack::Decoder;

/// The dynamic table size every HTTP/2 peer starts with (RFC 7540 §6.5.2). kraald's h2 server
/// never advertises another, so a client may not grow its table past this.
const TABLE_SIZE: usize = 4096;
/// Decoded header lists past this are not rewritten (h2 refuses far smaller ones anyway);
/// it bounds what indexed references can blow a small block up to.
const MAX_DECODED: usize = 1024 * 1024;
/// What a refused authority becomes: what newer gRPC clients send on unix sockets.
const REPLACEMENT: &[u8] = b"localhost";

/// The client's HPACK state for one connection.
pub struct HeaderFixer {
    decoder: Decoder<'static>,
}

impl HeaderFixer {
    pub fn new() -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        HeaderFixer { decoder }
    }

    /// The block re-encoded, or None if it does not decode (the caller then hands the
    /// original bytes on, so h2 reports the client's error itself).
    pub fn rewrite(&mut self, block: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(block.len() + 64);
        let mut decoded = 0usize;
        let mut too_big = false;
        let result = self.decoder.decode_with_cb(block, |name, value| {
            // RFC 7541 §4.1's accounting: name, value and 32 octets per field.
            decoded = decoded.saturating_add(name.len() + value.len() + 32);
            if decoded > MAX_DECODED {
                too_big = true;
            }
            if too_big {
                return;
            }
            let value: &[u8] = if &*name == b":authority" && !valid_authority(&value) {
                REPLACEMENT
            } else {
                &value
            };
            encode_literal(&name, value, &mut out);
        });
        match result {
            Ok(()) if !too_big => Some(out),
            _ => None,
        }
    }
}

/// Whether h2 takes `value` as an `:authority`: it parses it with this same function.
pub fn valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// "Literal Header Field without Indexing — New Name" (RFC 7541 §6.2.2): a zero octet, then
/// name and value as plain (not Huffman-coded) strings.
fn encode_literal(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0);
    encode_string(name, out);
    encode_string(value, out);
}

/// A string literal (RFC 7541 §5.2) with H = 0: its length as a 7-bit-prefix integer.
fn encode_string(bytes: &[u8], out: &mut Vec<u8>) {
    encode_integer(bytes.len(), 7, 0, out);
    out.extend_from_slice(bytes);
}

/// An integer with an N-bit prefix (RFC 7541 §5.1); `first` holds the bits above the prefix.
pub fn encode_integer(value: usize, prefix_bits: u8, first: u8, out: &mut Vec<u8>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// "/run/kraal/kraal.sock" Huffman-coded (RFC 7541 Appendix B), as grpc-go sends it.
    pub const SOCKET_PATH_HUFFMAN: &[u8] = &[
        0x62, 0xcb, 0x6a, 0x63, 0xad, 0x83, 0x1d, 0x0c, 0x75, 0xb0, 0x63, 0xa1, 0x74, 0x1c, 0x9d,
        0x7f,
    ];

    fn decode(block: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        Decoder::new().decode(block).unwrap()
    }

    /// What grpc-go sends on a connection's first stream: everything it can indexed or
    /// incrementally indexed, the authority Huffman-coded.
    fn first_request() -> Vec<u8> {
        let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
        block.push(0x44); // :path, incremental indexing, static name 4
        encode_string(b"/runtime.v1.RuntimeService/Version", &mut block);
        block.push(0x41); // :authority, incremental indexing, static name 1
        encode_integer(SOCKET_PATH_HUFFMAN.len(), 7, 0x80, &mut block);
        block.extend_from_slice(SOCKET_PATH_HUFFMAN);
        block.push(0x5f); // content-type, static name 31
        encode_string(b"application/grpc", &mut block);
        block
    }

    #[test]
    fn a_socket_path_authority_becomes_localhost_on_every_stream() {
        let mut fixer = HeaderFixer::new();
        let first = fixer.rewrite(&first_request()).unwrap();
        let fields = decode(&first);
        assert_eq!(fields[3], (b":authority".to_vec(), b"localhost".to_vec()));
        assert_eq!(fields[2].1, b"/runtime.v1.RuntimeService/Version");
        assert_eq!(fields[4].1, b"application/grpc");
        // The next stream refers to the client's dynamic table: content-type 62,
        // :authority 63, :path 64.
        let second = fixer.rewrite(&[0x83, 0x86, 0xc0, 0xbf, 0xbe]).unwrap();
        let fields = decode(&second);
        assert_eq!(fields[2].1, b"/runtime.v1.RuntimeService/Version");
        assert_eq!(fields[3], (b":authority".to_vec(), b"localhost".to_vec()));
        assert_eq!(fields[4].1, b"application/grpc");
    }

    #[test]
    fn the_huffman_fixture_is_the_socket_path() {
        let fields = decode(&first_request());
        assert_eq!(fields[3].1, b"/run/kraal/kraal.sock");
    }

    #[test]
    fn the_rewritten_block_never_indexes() {
        let mut fixer = HeaderFixer::new();
        let block = fixer.rewrite(&first_request()).unwrap();
        // A fresh decoder (the server's, which saw only rewritten blocks) ends up with an
        // empty dynamic table: index 62 does not resolve.
        let mut server = Decoder::new();
        server.decode(&block).unwrap();
        assert!(server.decode(&[0xbe]).is_err());
    }

    #[test]
    fn valid_authorities_stay() {
        let mut block = vec![0x41];
        encode_string(b"kraal.invalid:80", &mut block);
        let fields = decode(&HeaderFixer::new().rewrite(&block).unwrap());
        assert_eq!(fields[0].1, b"kraal.invalid:80");
        assert!(valid_authority(b"localhost"));
        assert!(!valid_authority(b"/run/kraal/kraal.sock"));
    }

    #[test]
    fn garbage_does_not_decode() {
        let mut fixer = HeaderFixer::new();
        assert!(
            fixer
                .rewrite(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
                .is_none()
        );
        assert!(fixer.rewrite(&[0x41, 0x85, 0x00]).is_none()); // value longer than the block
        assert!(fixer.rewrite(&[0xbf]).is_none()); // index past both tables
        assert!(fixer.rewrite(&[0x3f, 0xe1, 0x7f]).is_none()); // table size above 4096
    }

    #[test]
    fn a_block_that_expands_too_far_is_not_rewritten() {
        let mut fixer = HeaderFixer::new();
        let mut block = vec![0x40];
        encode_string(b"x", &mut block);
        encode_string(&[b'v'; 3000], &mut block);
        // 400 references to that 3 KB entry decode to 1.2 MB.
        block.extend(std::iter::repeat_n(0xbe, 400));
        assert!(fixer.rewrite(&block).is_none());
    }

    #[test]
    fn integers_use_continuation_octets() {
        let mut out = Vec::new();
        encode_integer(1337, 5, 0, &mut out);
        assert_eq!(out, [31, 154, 10]); // RFC 7541 C.1.2
        out.clear();
        encode_integer(10, 5, 0xe0, &mut out);
        assert_eq!(out, [0xea]);
    }
}
