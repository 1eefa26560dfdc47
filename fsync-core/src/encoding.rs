//! The byte format shared by wire and disk: LEB128 varints, length-prefixed
//! byte strings, nothing else.
//!
//! Decoding takes untrusted bytes. Every length is checked against the bytes
//! that remain before anything is allocated, so a hostile input costs at most
//! its own size, and every failure is a typed [`DecodeError`], never a panic.

// Parses what peers, users and the disk send: no slicing or indexing that
// can panic on it.
#![deny(clippy::indexing_slicing, clippy::string_slice)]

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended in the middle of a value.
    #[error("input ends early")]
    UnexpectedEnd,
    /// A varint is longer than 64 bits.
    #[error("number too large")]
    VarintOverflow,
    /// The input does not start with the expected magic bytes.
    #[error("not an fsync {0} encoding")]
    BadMagic(&'static str),
    /// Written by a newer fsync.
    #[error("format version {0} is newer than this fsync understands; upgrade fsync")]
    UnsupportedVersion(u64),
    /// Text that is not UTF-8.
    #[error("invalid UTF-8 in text")]
    InvalidUtf8,
    /// Compressed content that does not decompress.
    #[error("corrupt compressed content")]
    BadCompression,
    /// A value out of range or inconsistent with the rest.
    #[error("invalid data: {0}")]
    Invalid(&'static str),
    /// Bytes left over after the value.
    #[error("{0} unexpected bytes after the end")]
    TrailingBytes(usize),
}

/// Appends encoded values to a byte vector.
#[derive(Default, Debug)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bytes written so far.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// Number of bytes written.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True before anything is written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Raw bytes with no length.
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// An unsigned LEB128 varint.
    pub fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    /// A `usize` as a varint.
    pub fn usize(&mut self, v: usize) {
        self.varint(v as u64);
    }

    /// A signed number, zigzag encoded.
    pub fn signed(&mut self, v: i64) {
        self.varint(((v << 1) ^ (v >> 63)) as u64);
    }

    /// A length-prefixed byte string.
    pub fn bytes(&mut self, b: &[u8]) {
        self.usize(b.len());
        self.raw(b);
    }

    /// A length-prefixed UTF-8 string.
    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
}

/// Reads encoded values from a byte slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Fails unless everything was read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.buf.len() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }

    /// Exactly `n` raw bytes.
    pub fn raw(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::UnexpectedEnd);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Checks and skips the magic bytes of a format.
    pub fn magic(&mut self, magic: &[u8], what: &'static str) -> Result<(), DecodeError> {
        match self.raw(magic.len()) {
            Ok(m) if m == magic => Ok(()),
            _ => Err(DecodeError::BadMagic(what)),
        }
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        self.raw(1)?.first().copied().ok_or(DecodeError::UnexpectedEnd)
    }

    /// An unsigned LEB128 varint.
    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            let bits = (b & 0x7f) as u64;
            if shift == 63 && bits > 1 {
                return Err(DecodeError::VarintOverflow);
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::VarintOverflow)
    }

    /// A varint that must fit `usize` and be at most `max`.
    pub fn usize_max(&mut self, max: usize) -> Result<usize, DecodeError> {
        let v = self.varint()?;
        if v > max as u64 {
            return Err(DecodeError::Invalid("number out of range"));
        }
        Ok(v as usize)
    }

    /// A count of items that each take at least `min_item_bytes` bytes: it
    /// cannot exceed what the remaining input could hold, so a caller may
    /// allocate for it.
    pub fn count(&mut self, min_item_bytes: usize) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        if n > (self.remaining() / min_item_bytes.max(1)) as u64 {
            return Err(DecodeError::Invalid("count larger than the input"));
        }
        Ok(n as usize)
    }

    /// A zigzag-encoded signed number.
    pub fn signed(&mut self) -> Result<i64, DecodeError> {
        let v = self.varint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    /// A length-prefixed byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.usize_max(self.remaining())?;
        self.raw(n)
    }

    /// A length-prefixed UTF-8 string.
    pub fn str(&mut self) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| DecodeError::InvalidUtf8)
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::string_slice)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn varint_round_trip_and_limits() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut w = Writer::new();
            w.varint(v);
            let bytes = w.into_bytes();
            let mut r = Reader::new(&bytes);
            assert_eq!(r.varint(), Ok(v));
            assert!(r.finish().is_ok());
        }
        let mut r = Reader::new(&[0xff; 11]);
        assert_eq!(r.varint(), Err(DecodeError::VarintOverflow));
        let mut r = Reader::new(&[0x80]);
        assert_eq!(r.varint(), Err(DecodeError::UnexpectedEnd));
    }

    #[test]
    fn huge_counts_are_refused_before_allocating() {
        let mut w = Writer::new();
        w.varint(u64::MAX / 2);
        let bytes = w.into_bytes();
        assert!(Reader::new(&bytes).count(1).is_err());
        assert!(Reader::new(&bytes).bytes().is_err());
    }

    proptest! {
        #[test]
        fn signed_round_trip(v in any::<i64>()) {
            let mut w = Writer::new();
            w.signed(v);
            let b = w.into_bytes();
            prop_assert_eq!(Reader::new(&b).signed(), Ok(v));
        }
    }
}
