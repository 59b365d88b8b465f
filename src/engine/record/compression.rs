//! Batch compression as Kafka encodes it: gzip, snappy (xerial framing on write; plain or
//! xerial on read), lz4 (frame format), zstd.

use super::{Compression, RecordError};

/// Compresses the concatenated records of a batch.
pub fn compress(codec: Compression, data: &[u8]) -> Result<Vec<u8>, RecordError> {
    let _ = (codec, data);
    todo!()
}

/// Decompresses the records section of a batch.
pub fn decompress(codec: Compression, data: &[u8]) -> Result<Vec<u8>, RecordError> {
    let _ = (codec, data);
    todo!()
}
