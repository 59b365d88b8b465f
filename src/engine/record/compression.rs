//! Batch compression as Kafka encodes it: gzip, snappy (xerial framing on write; plain or
//! xerial on read), lz4 (frame format), zstd.
//!
//! What each codec writes, matching the Java client's defaults so the bytes look like Kafka's:
//!
//! - gzip: one gzip member at level 6 (`GZIPOutputStream`'s default). Read accepts several
//!   concatenated members, as `GZIPInputStream` does.
//! - snappy: snappy-java's stream format: a 16-byte header (`0x82 "SNAPPY" 0x00`, then
//!   big-endian i32 version 1 and minimum compatible version 1), then per 32 KiB of input a
//!   big-endian u32 compressed length and a raw snappy block. Read also accepts one raw snappy
//!   block with no header, as snappy-java falls back to.
//! - lz4: the LZ4 frame format (KIP-57) with 64 KiB independent blocks and no checksums beyond
//!   the header's, as `KafkaLZ4BlockOutputStream` writes.
//! - zstd: one standard zstd frame at level 3 (Kafka's default level).
//!
//! Decompression is bounded: a corrupt or hostile batch cannot make it produce more than
//! [`MAX_DECOMPRESSED_BYTES`] (or the caller's bound); it fails with
//! [`RecordError::Decompression`] instead.

use std::io::{Read, Write};

use super::{Compression, RecordError};

/// Default ceiling on the decompressed size of one batch's records. Far above any batch a
/// producer sends under Kafka's size limits, far below what would exhaust memory.
pub const MAX_DECOMPRESSED_BYTES: usize = 64 * 1024 * 1024;

/// snappy-java's stream header: magic, then version 1 and minimum compatible version 1.
pub const SNAPPY_XERIAL_HEADER: [u8; 16] = *b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
/// Uncompressed bytes per snappy block on write, as snappy-java's default.
pub const SNAPPY_XERIAL_BLOCK_SIZE: usize = 32 * 1024;
/// gzip level Kafka's Java client uses by default.
const GZIP_LEVEL: u32 = 6;
/// zstd level Kafka uses by default.
const ZSTD_LEVEL: i32 = 3;

/// Compresses the concatenated records of a batch.
pub fn compress(codec: Compression, data: &[u8]) -> Result<Vec<u8>, RecordError> {
    match codec {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => {
            let out = Vec::with_capacity(data.len() / 2 + 64);
            let mut encoder =
                flate2::write::GzEncoder::new(out, flate2::Compression::new(GZIP_LEVEL));
            encoder
                .write_all(data)
                .and_then(|()| encoder.finish())
                .map_err(|e| compression_error(codec, e))
        }
        Compression::Snappy => snappy_xerial_compress(data),
        Compression::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent)
                .block_checksums(false)
                .content_checksum(false);
            let out = Vec::with_capacity(data.len() / 2 + 64);
            let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(info, out);
            encoder
                .write_all(data)
                .map_err(|e| compression_error(codec, e))?;
            encoder.finish().map_err(|e| compression_error(codec, e))
        }
        Compression::Zstd => zstd_compress(data).map_err(|e| compression_error(codec, e)),
    }
}

thread_local! {
    /// Each thread's zstd context, kept between batches: making one per batch allocated and
    /// set up its tables each time. The frames are the same bytes either way.
    static ZSTD_COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn zstd_compress(data: &[u8]) -> std::io::Result<Vec<u8>> {
    ZSTD_COMPRESSOR.with(|compressor| {
        let mut compressor = compressor.borrow_mut();
        let compressor = match compressor.as_mut() {
            Some(compressor) => compressor,
            None => compressor.insert(zstd::bulk::Compressor::new(ZSTD_LEVEL)?),
        };
        compressor.compress(data)
    })
}

/// Decompresses the records section of a batch, refusing to produce more than
/// [`MAX_DECOMPRESSED_BYTES`].
pub fn decompress(codec: Compression, data: &[u8]) -> Result<Vec<u8>, RecordError> {
    decompress_bounded(codec, data, MAX_DECOMPRESSED_BYTES)
}

/// Decompresses the records section of a batch, failing with [`RecordError::Decompression`]
/// if the output would exceed `max_bytes`.
pub fn decompress_bounded(
    codec: Compression,
    data: &[u8],
    max_bytes: usize,
) -> Result<Vec<u8>, RecordError> {
    let mut out = Vec::new();
    decompress_bounded_into(codec, data, max_bytes, &mut out)?;
    Ok(out)
}

/// [`decompress`], appending to `out`: a reader that keeps `out` decompresses batch after batch
/// into the same allocation. On an error `out` holds its old bytes and possibly some of the
/// new ones.
pub fn decompress_into(
    codec: Compression,
    data: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), RecordError> {
    decompress_bounded_into(codec, data, MAX_DECOMPRESSED_BYTES, out)
}

/// [`decompress_bounded`], appending to `out` (at most `max_bytes` more).
fn decompress_bounded_into(
    codec: Compression,
    data: &[u8],
    max_bytes: usize,
    out: &mut Vec<u8>,
) -> Result<(), RecordError> {
    match codec {
        Compression::None => {
            if data.len() > max_bytes {
                return Err(too_large(codec, max_bytes));
            }
            out.extend_from_slice(data);
            Ok(())
        }
        Compression::Gzip => read_bounded(
            codec,
            flate2::read::MultiGzDecoder::new(data),
            data.len(),
            max_bytes,
            out,
        ),
        Compression::Snappy => snappy_decompress(data, max_bytes, out),
        Compression::Lz4 => read_bounded(
            codec,
            lz4_flex::frame::FrameDecoder::new(data),
            data.len(),
            max_bytes,
            out,
        ),
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::with_buffer(data)
                .map_err(|e| decompression_error(codec, e))?;
            read_bounded(codec, decoder, data.len(), max_bytes, out)
        }
    }
}

/// Reads `reader` to its end onto `out`, failing once it yields more than `max_bytes`.
fn read_bounded(
    codec: Compression,
    reader: impl Read,
    compressed_len: usize,
    max_bytes: usize,
    out: &mut Vec<u8>,
) -> Result<(), RecordError> {
    // A guess at the output size, so the common case grows the buffer once or twice; never
    // more than the bound, so a tiny bomb cannot reserve much up front.
    let guess = compressed_len.saturating_mul(4).min(max_bytes);
    out.reserve(guess);
    let start = out.len();
    let limit = u64::try_from(max_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    reader
        .take(limit)
        .read_to_end(out)
        .map_err(|e| decompression_error(codec, e))?;
    if out.len() - start > max_bytes {
        return Err(too_large(codec, max_bytes));
    }
    Ok(())
}

/// Writes snappy-java's stream format: header, then length-prefixed raw blocks.
fn snappy_xerial_compress(data: &[u8]) -> Result<Vec<u8>, RecordError> {
    let blocks = data.len().div_ceil(SNAPPY_XERIAL_BLOCK_SIZE);
    let mut out = Vec::with_capacity(SNAPPY_XERIAL_HEADER.len() + blocks * 4 + data.len() / 2 + 64);
    out.extend_from_slice(&SNAPPY_XERIAL_HEADER);
    let mut encoder = snap::raw::Encoder::new();
    for chunk in data.chunks(SNAPPY_XERIAL_BLOCK_SIZE) {
        let length_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let block_at = out.len();
        out.resize(block_at + snap::raw::max_compress_len(chunk.len()), 0);
        let written = encoder
            .compress(chunk, &mut out[block_at..])
            .map_err(|e| compression_error(Compression::Snappy, e))?;
        out.truncate(block_at + written);
        // A 32 KiB block compresses to well under 4 GiB, so the cast cannot truncate.
        out[length_at..block_at].copy_from_slice(&(written as u32).to_be_bytes());
    }
    Ok(out)
}

/// Reads snappy-java's stream format if `data` starts with its magic, else one raw block,
/// onto `out`.
fn snappy_decompress(data: &[u8], max_bytes: usize, out: &mut Vec<u8>) -> Result<(), RecordError> {
    const CODEC: Compression = Compression::Snappy;
    let magic = &SNAPPY_XERIAL_HEADER[..8];
    let mut decoder = snap::raw::Decoder::new();
    if !data.starts_with(magic) {
        let len = snap::raw::decompress_len(data).map_err(|e| decompression_error(CODEC, e))?;
        if len > max_bytes {
            return Err(too_large(CODEC, max_bytes));
        }
        let start = out.len();
        out.resize(start + len, 0);
        let written = decoder
            .decompress(data, &mut out[start..])
            .map_err(|e| decompression_error(CODEC, e))?;
        out.truncate(start + written);
        return Ok(());
    }
    if data.len() < SNAPPY_XERIAL_HEADER.len() {
        return Err(RecordError::Decompression {
            codec: CODEC.name(),
            reason: format!("xerial header truncated at {} bytes", data.len()),
        });
    }
    // The version fields are not checked: snappy-java itself accepts any version >= 1, and
    // the block layout has not changed since.
    let mut rest = &data[SNAPPY_XERIAL_HEADER.len()..];
    let first = out.len();
    while !rest.is_empty() {
        let Some((len_bytes, after)) = rest.split_first_chunk::<4>() else {
            return Err(RecordError::Decompression {
                codec: CODEC.name(),
                reason: format!("block length truncated ({} bytes left)", rest.len()),
            });
        };
        let block_len = u32::from_be_bytes(*len_bytes) as usize;
        if block_len > after.len() {
            return Err(RecordError::Decompression {
                codec: CODEC.name(),
                reason: format!(
                    "block of {block_len} bytes but only {} bytes left",
                    after.len()
                ),
            });
        }
        let (block, next) = after.split_at(block_len);
        let block_out_len =
            snap::raw::decompress_len(block).map_err(|e| decompression_error(CODEC, e))?;
        if block_out_len > max_bytes - (out.len() - first) {
            return Err(too_large(CODEC, max_bytes));
        }
        let start = out.len();
        out.resize(start + block_out_len, 0);
        let written = decoder
            .decompress(block, &mut out[start..])
            .map_err(|e| decompression_error(CODEC, e))?;
        out.truncate(start + written);
        rest = next;
    }
    Ok(())
}

fn compression_error(codec: Compression, e: impl std::fmt::Display) -> RecordError {
    RecordError::Compression {
        codec: codec.name(),
        reason: e.to_string(),
    }
}

fn decompression_error(codec: Compression, e: impl std::fmt::Display) -> RecordError {
    RecordError::Decompression {
        codec: codec.name(),
        reason: e.to_string(),
    }
}

fn too_large(codec: Compression, max_bytes: usize) -> RecordError {
    RecordError::Decompression {
        codec: codec.name(),
        reason: format!("output exceeds the limit of {max_bytes} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivial: repeating text with a counter.
        let mut out = Vec::with_capacity(len);
        let mut i = 0u32;
        while out.len() < len {
            out.extend_from_slice(format!("record-{i} lorem ipsum dolor sit amet; ").as_bytes());
            i += 1;
        }
        out.truncate(len);
        out
    }

    #[test]
    fn every_codec_round_trips() {
        for codec in Compression::ALL {
            for len in [0, 1, 100, SNAPPY_XERIAL_BLOCK_SIZE, 200_000] {
                let data = sample(len);
                let compressed = compress(codec, &data).unwrap();
                assert_eq!(
                    decompress(codec, &compressed).unwrap(),
                    data,
                    "{} with {len} bytes",
                    codec.name()
                );
            }
        }
    }

    #[test]
    fn compressing_codecs_shrink_redundant_data() {
        let data = sample(100_000);
        for codec in Compression::ALL.into_iter().skip(1) {
            let compressed = compress(codec, &data).unwrap();
            assert!(compressed.len() < data.len() / 2, "{}", codec.name());
        }
    }

    #[test]
    fn gzip_writes_one_gzip_member() {
        let compressed = compress(Compression::Gzip, b"hello").unwrap();
        assert_eq!(&compressed[..3], &[0x1f, 0x8b, 0x08]);
    }

    #[test]
    fn zstd_writes_a_standard_frame() {
        let compressed = compress(Compression::Zstd, b"hello").unwrap();
        assert_eq!(&compressed[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
    }

    #[test]
    fn lz4_writes_kafka_frame_descriptor() {
        let compressed = compress(Compression::Lz4, &sample(1000)).unwrap();
        assert_eq!(&compressed[..4], &[0x04, 0x22, 0x4d, 0x18], "frame magic");
        let flg = compressed[4];
        assert_eq!(flg >> 6, 0b01, "version 1");
        assert_ne!(flg & 0x20, 0, "independent blocks");
        assert_eq!(flg & 0x10, 0, "no block checksums");
        assert_eq!(flg & 0x04, 0, "no content checksum");
        assert_eq!((compressed[5] >> 4) & 0x07, 4, "64 KiB maximum block size");
    }

    #[test]
    fn snappy_writes_xerial_framing_in_32k_blocks() {
        let data = sample(SNAPPY_XERIAL_BLOCK_SIZE * 2 + 10);
        let compressed = compress(Compression::Snappy, &data).unwrap();
        assert_eq!(&compressed[..16], &SNAPPY_XERIAL_HEADER);
        let mut rest = &compressed[16..];
        let mut decoded = Vec::new();
        let mut blocks = 0;
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            let block = snap::raw::Decoder::new()
                .decompress_vec(&rest[4..4 + len])
                .unwrap();
            assert!(block.len() <= SNAPPY_XERIAL_BLOCK_SIZE);
            decoded.extend_from_slice(&block);
            rest = &rest[4 + len..];
            blocks += 1;
        }
        assert_eq!(blocks, 3);
        assert_eq!(decoded, data);
    }

    #[test]
    fn snappy_reads_a_plain_raw_block() {
        let data = sample(5000);
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(decompress(Compression::Snappy, &raw).unwrap(), data);
    }

    #[test]
    fn snappy_rejects_truncated_xerial_stream() {
        let compressed = compress(Compression::Snappy, &sample(5000)).unwrap();
        for cut in [10, 18, compressed.len() - 1] {
            assert!(matches!(
                decompress(Compression::Snappy, &compressed[..cut]),
                Err(RecordError::Decompression {
                    codec: "snappy",
                    ..
                })
            ));
        }
    }

    #[test]
    fn decompression_bombs_are_refused() {
        let zeros = vec![0u8; 1024 * 1024];
        for codec in Compression::ALL {
            let compressed = compress(codec, &zeros).unwrap();
            let err = decompress_bounded(codec, &compressed, 64 * 1024).unwrap_err();
            assert!(
                matches!(err, RecordError::Decompression { .. }),
                "{}: {err:?}",
                codec.name()
            );
            // Exactly at the bound is fine.
            assert_eq!(
                decompress_bounded(codec, &compressed, zeros.len())
                    .unwrap()
                    .len(),
                zeros.len()
            );
        }
    }

    #[test]
    fn garbage_is_a_decompression_error() {
        for codec in Compression::ALL.into_iter().skip(1) {
            let err = decompress(codec, b"\xff\xfe not compressed at all").unwrap_err();
            assert!(
                matches!(err, RecordError::Decompression { .. }),
                "{}",
                codec.name()
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn decompressing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            for codec in Compression::ALL {
                let _ = decompress_bounded(codec, &bytes, 1 << 20);
            }
            let mut xerial = SNAPPY_XERIAL_HEADER.to_vec();
            xerial.extend_from_slice(&bytes);
            let _ = decompress_bounded(Compression::Snappy, &xerial, 1 << 20);
        }
    }
}
