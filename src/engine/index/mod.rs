//! Sparse, memory-mapped segment indexes: `.index` (offset -> position) and `.timeindex`
//! (timestamp -> offset). Both are preallocated to `segment.index.bytes` while their segment is
//! active and trimmed to their entries when it closes.

pub mod offset_index;
pub mod time_index;

pub use offset_index::{OffsetIndex, OffsetPosition};
pub use time_index::{TimeIndex, TimestampOffset};
