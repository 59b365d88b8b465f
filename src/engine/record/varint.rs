//! Zigzag varints (protobuf style), as Kafka's record format uses them.
//!
//! A value is first zigzag-mapped (`0, -1, 1, -2, ...` to `0, 1, 2, 3, ...`) so small negative
//! numbers stay short, then written 7 bits at a time, least significant group first, with the
//! high bit of each byte set when more bytes follow. A 32-bit varint takes at most 5 bytes, a
//! 64-bit varlong at most 10.
//!
//! Decoding is strict: a value that runs past its maximum width (more bytes than 5 / 10, or
//! bits set beyond bit 31 / 63 in the last byte) is [`VarintError::Overlong`], and input that
//! ends mid-value is [`VarintError::Truncated`]. Kafka never writes either.

/// Most bytes a zigzag varint (`i32`) occupies.
pub const MAX_VARINT_BYTES: usize = 5;
/// Most bytes a zigzag varlong (`i64`) occupies.
pub const MAX_VARLONG_BYTES: usize = 10;

/// Why a byte string does not start with a valid varint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VarintError {
    /// The input ended before the byte without a continuation bit.
    #[error("varint truncated after {available} bytes")]
    Truncated { available: usize },
    /// The encoding is longer than `max_bytes`, or sets bits the type cannot hold.
    #[error("varint longer than {max_bytes} bytes or out of range")]
    Overlong { max_bytes: usize },
}

/// Maps a signed 32-bit value to its zigzag form.
#[inline]
pub fn zigzag_encode_i32(value: i32) -> u32 {
    ((value << 1) ^ (value >> 31)) as u32
}

/// Inverse of [`zigzag_encode_i32`].
#[inline]
pub fn zigzag_decode_i32(value: u32) -> i32 {
    ((value >> 1) as i32) ^ -((value & 1) as i32)
}

/// Maps a signed 64-bit value to its zigzag form.
#[inline]
pub fn zigzag_encode_i64(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

/// Inverse of [`zigzag_encode_i64`].
#[inline]
pub fn zigzag_decode_i64(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// Bytes [`write_varint`] uses for `value`.
#[inline]
pub fn varint_size(value: i32) -> usize {
    unsigned_size(zigzag_encode_i32(value) as u64)
}

/// Bytes [`write_varlong`] uses for `value`.
#[inline]
pub fn varlong_size(value: i64) -> usize {
    unsigned_size(zigzag_encode_i64(value))
}

#[inline]
fn unsigned_size(value: u64) -> usize {
    // Bits needed (at least 1), 7 per byte, rounded up.
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Appends `value` as a zigzag varint.
#[inline]
pub fn write_varint(buf: &mut Vec<u8>, value: i32) {
    write_unsigned(buf, zigzag_encode_i32(value) as u64);
}

/// Appends `value` as a zigzag varlong.
#[inline]
pub fn write_varlong(buf: &mut Vec<u8>, value: i64) {
    write_unsigned(buf, zigzag_encode_i64(value));
}

#[inline]
fn write_unsigned(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

/// Reads a zigzag varint from the start of `buf`, returning the value and the bytes it used.
#[inline]
pub fn read_varint(buf: &[u8]) -> Result<(i32, usize), VarintError> {
    match read_short(buf) {
        Some((raw, used)) => Ok((zigzag_decode_i32(raw), used)),
        None => {
            let (raw, used) = read_unsigned(buf, MAX_VARINT_BYTES, 32)?;
            Ok((zigzag_decode_i32(raw as u32), used))
        }
    }
}

/// Reads a zigzag varlong from the start of `buf`, returning the value and the bytes it used.
#[inline]
pub fn read_varlong(buf: &[u8]) -> Result<(i64, usize), VarintError> {
    match read_short(buf) {
        Some((raw, used)) => Ok((zigzag_decode_i64(raw as u64), used)),
        None => {
            let (raw, used) = read_unsigned(buf, MAX_VARLONG_BYTES, 64)?;
            Ok((zigzag_decode_i64(raw), used))
        }
    }
}

/// The fast path of both readers: a value of at most 3 bytes (21 bits, so never out of range
/// for either width), which is every length, delta and count of a batch below 1 MiB. `None`
/// when the value is longer, or `buf` ends inside it: the careful reader then decides.
#[inline(always)]
fn read_short(buf: &[u8]) -> Option<(u32, usize)> {
    match *buf {
        [b0, ..] if b0 < 0x80 => Some((b0 as u32, 1)),
        [b0, b1, ..] if b1 < 0x80 => Some(((b0 & 0x7f) as u32 | (b1 as u32) << 7, 2)),
        [b0, b1, b2, ..] if b2 < 0x80 => Some((
            (b0 & 0x7f) as u32 | ((b1 & 0x7f) as u32) << 7 | (b2 as u32) << 14,
            3,
        )),
        _ => None,
    }
}

/// Reads an unsigned LEB128 value of at most `max_bytes` bytes and `width_bits` bits.
fn read_unsigned(
    buf: &[u8],
    max_bytes: usize,
    width_bits: u32,
) -> Result<(u64, usize), VarintError> {
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().take(max_bytes).enumerate() {
        let shift = 7 * i as u32;
        let group = (byte & 0x7f) as u64;
        // Bits this group would place at or beyond `width_bits` must be zero.
        let room = width_bits - shift;
        if room < 7 && group >> room != 0 {
            return Err(VarintError::Overlong { max_bytes });
        }
        value |= group << shift;
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    if buf.len() < max_bytes {
        Err(VarintError::Truncated {
            available: buf.len(),
        })
    } else {
        Err(VarintError::Overlong { max_bytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn zigzag_maps_small_magnitudes_to_small_codes() {
        assert_eq!(zigzag_encode_i32(0), 0);
        assert_eq!(zigzag_encode_i32(-1), 1);
        assert_eq!(zigzag_encode_i32(1), 2);
        assert_eq!(zigzag_encode_i32(-2), 3);
        assert_eq!(zigzag_encode_i32(i32::MAX), u32::MAX - 1);
        assert_eq!(zigzag_encode_i32(i32::MIN), u32::MAX);
        assert_eq!(zigzag_encode_i64(i64::MIN), u64::MAX);
    }

    #[test]
    fn known_encodings_match_kafka() {
        // Values from Kafka's ByteUtilsTest.
        let cases: &[(i32, &[u8])] = &[
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (63, &[0x7e]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
            (-65, &[0x81, 0x01]),
            (8191, &[0xfe, 0x7f]),
            (-8192, &[0xff, 0x7f]),
            (8192, &[0x80, 0x80, 0x01]),
            (i32::MAX, &[0xfe, 0xff, 0xff, 0xff, 0x0f]),
            (i32::MIN, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        ];
        for &(value, bytes) in cases {
            let mut buf = Vec::new();
            write_varint(&mut buf, value);
            assert_eq!(buf, bytes, "encoding {value}");
            assert_eq!(varint_size(value), bytes.len());
            assert_eq!(read_varint(bytes), Ok((value, bytes.len())));
        }
        let mut buf = Vec::new();
        write_varlong(&mut buf, i64::MIN);
        assert_eq!(buf.len(), 10);
        assert_eq!(buf[9], 0x01);
        assert_eq!(read_varlong(&buf), Ok((i64::MIN, 10)));
    }

    #[test]
    fn truncated_input_is_an_error() {
        assert_eq!(
            read_varint(&[]),
            Err(VarintError::Truncated { available: 0 })
        );
        assert_eq!(
            read_varint(&[0x80, 0x80]),
            Err(VarintError::Truncated { available: 2 })
        );
        assert_eq!(
            read_varlong(&[0xff; 9]),
            Err(VarintError::Truncated { available: 9 })
        );
    }

    #[test]
    fn overlong_input_is_an_error() {
        assert_eq!(
            read_varint(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]),
            Err(VarintError::Overlong { max_bytes: 5 })
        );
        // Fifth byte carries bits beyond bit 31.
        assert_eq!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0x1f]),
            Err(VarintError::Overlong { max_bytes: 5 })
        );
        assert_eq!(
            read_varlong(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            Err(VarintError::Overlong { max_bytes: 10 })
        );
        assert_eq!(
            read_varlong(&[0x80; 11]),
            Err(VarintError::Overlong { max_bytes: 10 })
        );
    }

    proptest! {
        #[test]
        fn varint_round_trips(value: i32, tail in proptest::collection::vec(any::<u8>(), 0..4)) {
            let mut buf = Vec::new();
            write_varint(&mut buf, value);
            prop_assert_eq!(buf.len(), varint_size(value));
            let len = buf.len();
            buf.extend_from_slice(&tail);
            prop_assert_eq!(read_varint(&buf), Ok((value, len)));
        }

        #[test]
        fn varlong_round_trips(value: i64) {
            let mut buf = Vec::new();
            write_varlong(&mut buf, value);
            prop_assert_eq!(buf.len(), varlong_size(value));
            prop_assert_eq!(read_varlong(&buf), Ok((value, buf.len())));
        }

        #[test]
        fn the_fast_path_agrees_with_the_careful_reader(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            let careful32 = read_unsigned(&bytes, MAX_VARINT_BYTES, 32)
                .map(|(raw, used)| (zigzag_decode_i32(raw as u32), used));
            prop_assert_eq!(read_varint(&bytes), careful32);
            let careful64 = read_unsigned(&bytes, MAX_VARLONG_BYTES, 64)
                .map(|(raw, used)| (zigzag_decode_i64(raw), used));
            prop_assert_eq!(read_varlong(&bytes), careful64);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            if let Ok((_, used)) = read_varint(&bytes) {
                prop_assert!((1..=MAX_VARINT_BYTES).contains(&used));
            }
            if let Ok((_, used)) = read_varlong(&bytes) {
                prop_assert!((1..=MAX_VARLONG_BYTES).contains(&used));
            }
        }
    }
}
