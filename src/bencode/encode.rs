//! The encoder: writes bencode straight into a byte buffer, with no tree.

/// Appends bencoded values to a `Vec<u8>`.
///
/// The caller is responsible for writing dictionary keys in sorted order
/// (the typed KRPC encoders do); the encoder only formats.
#[derive(Debug)]
pub struct Encoder<'b> {
    buf: &'b mut Vec<u8>,
}

impl<'b> Encoder<'b> {
    /// An encoder appending to `buf`.
    pub fn new(buf: &'b mut Vec<u8>) -> Self {
        Encoder { buf }
    }

    /// The bytes written so far (including anything `buf` held before).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// `i<v>e`.
    pub fn int(&mut self, v: i64) -> &mut Self {
        self.buf.push(b'i');
        self.decimal_i64(v);
        self.buf.push(b'e');
        self
    }

    /// `<len>:<bytes>`.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.decimal_u64(v.len() as u64);
        self.buf.push(b':');
        self.buf.extend_from_slice(v);
        self
    }

    /// A byte string made of several parts written back to back (for
    /// compact node lists built from many entries).
    pub fn bytes_concat<'x, I>(&mut self, total_len: usize, parts: I) -> &mut Self
    where
        I: IntoIterator<Item = &'x [u8]>,
    {
        self.decimal_u64(total_len as u64);
        self.buf.push(b':');
        let start = self.buf.len();
        for p in parts {
            self.buf.extend_from_slice(p);
        }
        debug_assert_eq!(self.buf.len() - start, total_len);
        self
    }

    /// Only the `<len>:` prefix of a byte string; the caller then appends
    /// exactly `len` bytes with [`Encoder::raw`].
    pub fn bytes_header(&mut self, len: usize) -> &mut Self {
        self.decimal_u64(len as u64);
        self.buf.push(b':');
        self
    }

    /// A key followed by a byte-string value.
    pub fn kv_bytes(&mut self, k: &[u8], v: &[u8]) -> &mut Self {
        self.bytes(k).bytes(v)
    }

    /// A key followed by an integer value.
    pub fn kv_int(&mut self, k: &[u8], v: i64) -> &mut Self {
        self.bytes(k).int(v)
    }

    /// `d`.
    pub fn dict(&mut self) -> &mut Self {
        self.buf.push(b'd');
        self
    }

    /// `l`.
    pub fn list(&mut self) -> &mut Self {
        self.buf.push(b'l');
        self
    }

    /// `e`.
    pub fn end(&mut self) -> &mut Self {
        self.buf.push(b'e');
        self
    }

    /// Already-encoded bytes, copied verbatim (e.g. a raw info dictionary).
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    fn decimal_u64(&mut self, mut v: u64) {
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.buf.extend_from_slice(&tmp[i..]);
    }

    fn decimal_i64(&mut self, v: i64) {
        if v < 0 {
            self.buf.push(b'-');
        }
        self.decimal_u64(v.unsigned_abs());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let mut buf = Vec::new();
        let mut e = Encoder::new(&mut buf);
        e.dict()
            .kv_int(b"a", 0)
            .kv_int(b"b", -42)
            .kv_int(b"c", i64::MIN)
            .kv_bytes(b"d", b"")
            .bytes(b"l")
            .list()
            .int(i64::MAX)
            .end()
            .end();
        assert_eq!(
            buf,
            b"d1:ai0e1:bi-42e1:ci-9223372036854775808e1:d0:1:lli9223372036854775807eee"
        );
    }
}
