//! Interoperability of our v2 record batches with an independent Kafka implementation, the
//! `kafka-protocol` crate: it must read every batch we write (CRC included), and we must read
//! every batch it writes.

use std::path::Path;

use bytes::{Bytes, BytesMut};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    self as kp, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
};
use lmqfs::engine::record::batch::set_base_offset;
use lmqfs::engine::record::{
    decode_batch, encode_batch, Compression, Header, NewRecord, Record, TimestampType, LOG_OVERHEAD,
};
use lmqfs::engine::{now_ms, Log, LogConfig};

const NOW: i64 = 1_700_000_000_000;

/// One record as an independent reader sees it: offset, key, value, headers, timestamp.
pub type KafkaRecord = (
    i64,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Option<Vec<u8>>)>,
    i64,
);

/// Reads a whole `.log` file (a plain concatenation of v2 batches) with `kafka-protocol`'s
/// decoder and returns every record. Panics on any problem: an unreadable file, a batch it
/// cannot decode (which includes a CRC mismatch, checked by that decoder), a magic other than
/// 2, or offsets that do not strictly increase through the file.
///
/// Timestamps follow Kafka's reading rules: under `LogAppendTime` every record of a batch
/// reads the batch's `max_timestamp`. `kafka-protocol` does not expose that field, so it is
/// taken from bytes 35..43 of the batch header (Kafka's documented layout).
///
/// `kafka-protocol` keeps headers in a map, so a record with two headers of the same key
/// shows only the last one.
pub fn kafka_decode_log_file(path: &Path) -> Vec<KafkaRecord> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut rest: &[u8] = &data;
    let mut out: Vec<KafkaRecord> = Vec::new();
    while !rest.is_empty() {
        let position = data.len() - rest.len();
        assert!(
            rest.len() >= 61,
            "{}: {} stray bytes at position {position}",
            path.display(),
            rest.len()
        );
        let max_timestamp = i64::from_be_bytes(rest[35..43].try_into().unwrap());
        let set = RecordBatchDecoder::decode(&mut rest).unwrap_or_else(|e| {
            panic!(
                "{}: kafka-protocol cannot decode the batch at position {position}: {e:#}",
                path.display()
            )
        });
        assert_eq!(
            set.version,
            2,
            "{}: batch at {position} is not v2",
            path.display()
        );
        for r in set.records {
            if let Some(&(previous, ..)) = out.last() {
                assert!(
                    r.offset > previous,
                    "{}: offset {} after {previous} in the batch at position {position}",
                    path.display(),
                    r.offset
                );
            }
            let timestamp = match r.timestamp_type {
                kp::TimestampType::Creation => r.timestamp,
                kp::TimestampType::LogAppend => max_timestamp,
            };
            let headers = r
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.as_ref().map(|v| v.to_vec())))
                .collect();
            out.push((
                r.offset,
                r.key.map(|k| k.to_vec()),
                r.value.map(|v| v.to_vec()),
                headers,
                timestamp,
            ));
        }
    }
    out
}

fn header(key: &str, value: Option<&[u8]>) -> Header {
    Header {
        key: key.to_owned(),
        value: value.map(<[u8]>::to_vec),
    }
}

/// Keys, null keys, tombstones, empty values, headers (with null values), timestamps out of
/// order and defaulted. Header keys within a record are distinct (see above).
fn sample_records() -> Vec<NewRecord> {
    let mut records = vec![
        NewRecord {
            key: Some(b"user-1".to_vec()),
            value: Some(b"{\"name\":\"ada\"}".to_vec()),
            headers: vec![header("trace", Some(b"abc")), header("empty", None)],
            timestamp: Some(NOW - 5),
        },
        NewRecord {
            key: None,
            value: Some(b"keyless".to_vec()),
            headers: vec![],
            timestamp: Some(NOW - 1000),
        },
        NewRecord {
            key: Some(b"user-1".to_vec()),
            value: None,
            headers: vec![header("reason", Some(b"deleted"))],
            timestamp: None,
        },
        NewRecord {
            key: Some(Vec::new()),
            value: Some(Vec::new()),
            headers: vec![header("", Some(b""))],
            timestamp: Some(NOW + 2000),
        },
    ];
    // Enough redundant data that compressors emit several blocks (snappy: 32 KiB).
    records.extend((0..300).map(|i| NewRecord {
        key: Some(format!("key-{}", i % 17).into_bytes()),
        value: Some(format!("payload {i} ").repeat(30).into_bytes()),
        headers: vec![header("n", Some(i.to_string().as_bytes()))],
        timestamp: Some(NOW + i),
    }));
    records
}

fn expected(
    base_offset: i64,
    records: &[NewRecord],
    timestamp_type: TimestampType,
) -> Vec<KafkaRecord> {
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (
                base_offset + i as i64,
                r.key.clone(),
                r.value.clone(),
                r.headers
                    .iter()
                    .map(|h| (h.key.clone(), h.value.clone()))
                    .collect(),
                match timestamp_type {
                    TimestampType::CreateTime => r.timestamp.unwrap_or(NOW),
                    TimestampType::LogAppendTime => NOW,
                },
            )
        })
        .collect()
}

fn ours_as_kafka_records(records: &[Record]) -> Vec<KafkaRecord> {
    records
        .iter()
        .map(|r| {
            (
                r.offset,
                r.key.clone(),
                r.value.clone(),
                r.headers
                    .iter()
                    .map(|h| (h.key.clone(), h.value.clone()))
                    .collect(),
                r.timestamp,
            )
        })
        .collect()
}

const TIMESTAMP_TYPES: [TimestampType; 2] =
    [TimestampType::CreateTime, TimestampType::LogAppendTime];

#[test]
fn kafka_protocol_reads_every_batch_we_encode() {
    let records = sample_records();
    for codec in Compression::ALL {
        for ts_type in TIMESTAMP_TYPES {
            let what = format!("{} {}", codec.name(), ts_type.name());
            let buf = encode_batch(1000, &records, codec, ts_type, NOW).unwrap();
            let mut slice: &[u8] = &buf;
            let set =
                RecordBatchDecoder::decode(&mut slice).unwrap_or_else(|e| panic!("{what}: {e:#}"));
            assert!(slice.is_empty(), "{what}: decoder left bytes");
            assert_eq!(set.version, 2);
            assert_eq!(set.compression as u8, codec as u8, "{what}");
            assert_eq!(set.records.len(), records.len());
            for (r, original) in set.records.iter().zip(&records) {
                assert_eq!(
                    r.timestamp_type,
                    match ts_type {
                        TimestampType::CreateTime => kp::TimestampType::Creation,
                        TimestampType::LogAppendTime => kp::TimestampType::LogAppend,
                    },
                    "{what}"
                );
                assert_eq!(r.producer_id, -1);
                assert_eq!(r.producer_epoch, -1);
                assert_eq!(r.partition_leader_epoch, 0);
                assert!(!r.transactional && !r.control);
                assert_eq!(r.key.as_deref(), original.key.as_deref(), "{what}");
                assert_eq!(r.value.as_deref(), original.value.as_deref(), "{what}");
            }
            let batch_info = RecordBatchDecoder::decode_batch_info(&mut &buf[..]).unwrap();
            assert_eq!(batch_info.len(), 1);
            assert_eq!(batch_info[0].record_count as usize, records.len());
            assert_eq!(batch_info[0].min_offset, 1000);
        }
    }
}

#[test]
fn kafka_decode_log_file_reads_concatenated_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("00000000000000000000.log");
    let records = sample_records();
    let mut file = Vec::new();
    let mut want = Vec::new();
    let mut next_offset = 0i64;
    // Every codec and both timestamp types, one batch each, at consecutive offsets.
    for (i, codec) in Compression::ALL.into_iter().enumerate() {
        for ts_type in TIMESTAMP_TYPES {
            let slice = &records[i..i + 3 + i * 40];
            // Encoded before the offset is known, then patched, as the log does.
            let mut buf = encode_batch(0, slice, codec, ts_type, NOW).unwrap();
            set_base_offset(&mut buf, next_offset);
            assert_eq!(
                ours_as_kafka_records(&decode_batch(&buf).unwrap().records),
                expected(next_offset, slice, ts_type)
            );
            want.extend(expected(next_offset, slice, ts_type));
            next_offset += slice.len() as i64;
            file.extend_from_slice(&buf);
        }
    }
    std::fs::write(&path, &file).unwrap();
    let got = kafka_decode_log_file(&path);
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
}

#[test]
#[should_panic(expected = "cannot decode")]
fn kafka_decode_log_file_rejects_a_bad_crc() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("00000000000000000000.log");
    let mut buf = encode_batch(
        0,
        &sample_records()[..4],
        Compression::None,
        TimestampType::CreateTime,
        NOW,
    )
    .unwrap();
    let last = buf.len() - 1;
    buf[last] ^= 0x01;
    std::fs::write(&path, &buf).unwrap();
    kafka_decode_log_file(&path);
}

/// `sample_records` as `kafka-protocol` records at `base_offset..`, `CreateTime`.
fn kafka_protocol_records(base_offset: i64) -> Vec<kp::Record> {
    sample_records()
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let offset = base_offset + i as i64;
            let mut headers = kafka_protocol::indexmap::IndexMap::new();
            for h in &r.headers {
                headers.insert(
                    StrBytes::from_string(h.key.clone()),
                    h.value.clone().map(Bytes::from),
                );
            }
            kp::Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: kp::TimestampType::Creation,
                offset,
                // kafka-protocol starts a new batch whenever offset - sequence changes.
                sequence: offset as i32,
                timestamp: r.timestamp.unwrap_or(NOW),
                key: r.key.clone().map(Bytes::from),
                value: r.value.clone().map(Bytes::from),
                headers,
            }
        })
        .collect()
}

fn kafka_protocol_codec(codec: Compression) -> kp::Compression {
    match codec {
        Compression::None => kp::Compression::None,
        Compression::Gzip => kp::Compression::Gzip,
        Compression::Snappy => kp::Compression::Snappy,
        Compression::Lz4 => kp::Compression::Lz4,
        Compression::Zstd => kp::Compression::Zstd,
    }
}

/// Splits a concatenation of batches by their `batch_length` fields and decodes each with
/// our decoder.
fn decode_all_with_ours(mut buf: &[u8]) -> Vec<Record> {
    let mut records = Vec::new();
    while !buf.is_empty() {
        let batch_length = i32::from_be_bytes(buf[8..12].try_into().unwrap()) as usize;
        let (batch, rest) = buf.split_at(LOG_OVERHEAD + batch_length);
        records.extend(decode_batch(batch).unwrap().records);
        buf = rest;
    }
    records
}

#[test]
fn we_read_every_batch_kafka_protocol_encodes() {
    let originals = sample_records();
    for codec in Compression::ALL {
        let theirs = kafka_protocol_records(77);
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &theirs,
            &RecordEncodeOptions {
                version: 2,
                compression: kafka_protocol_codec(codec),
            },
        )
        .unwrap();
        assert_eq!(
            buf[22] & 0x07,
            codec as u8,
            "{}: codec bits as Kafka writes them",
            codec.name()
        );
        let ours = decode_all_with_ours(&buf);
        assert_eq!(
            ours_as_kafka_records(&ours),
            expected(77, &originals, TimestampType::CreateTime),
            "{}",
            codec.name()
        );
        assert!(ours
            .iter()
            .all(|r| r.timestamp_type == TimestampType::CreateTime));
    }
}

#[test]
fn we_read_plain_raw_snappy_from_other_producers() {
    // Some non-Java producers write one raw snappy block without xerial framing.
    let theirs = kafka_protocol_records(5);
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode_with_custom_compression(
        &mut buf,
        &theirs,
        &RecordEncodeOptions {
            version: 2,
            compression: kp::Compression::Snappy,
        },
        // Closure's error type is kafka-protocol's (inferred), so `?` converts into it.
        Some(
            |raw: &mut BytesMut, out: &mut BytesMut, _: kp::Compression| {
                let block = snap::raw::Encoder::new().compress_vec(raw)?;
                out.extend_from_slice(&block);
                Ok(())
            },
        ),
    )
    .unwrap();
    assert_ne!(&buf[61..62], b"\x82", "not xerial framed");
    assert_eq!(
        ours_as_kafka_records(&decode_all_with_ours(&buf)),
        expected(5, &sample_records(), TimestampType::CreateTime)
    );
}

/// The `.log` files of a partition directory, in offset order.
fn log_files_in(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

/// Checks every batch's stored CRC against a CRC-32C of bytes 21..end computed here, framing
/// the file by the batches' length fields. Returns the number of batches.
fn assert_crcs_valid(path: &Path) -> usize {
    let data = std::fs::read(path).unwrap();
    let mut position = 0;
    let mut batches = 0;
    while position < data.len() {
        let length = i32::from_be_bytes(data[position + 8..position + 12].try_into().unwrap());
        let end = position + LOG_OVERHEAD + length as usize;
        let stored = u32::from_be_bytes(data[position + 17..position + 21].try_into().unwrap());
        let computed = crc32c::crc32c(&data[position + 21..end]);
        assert_eq!(
            stored,
            computed,
            "{}: CRC of the batch at {position}",
            path.display()
        );
        position = end;
        batches += 1;
    }
    assert_eq!(position, data.len());
    batches
}

#[test]
fn kafka_protocol_reads_every_segment_the_log_writes() {
    let originals = sample_records();
    for codec in Compression::ALL {
        for ts_type in TIMESTAMP_TYPES {
            let what = format!("{} {}", codec.name(), ts_type.name());
            let dir = tempfile::tempdir().unwrap();
            let config = LogConfig {
                segment_bytes: 1024,
                index_interval_bytes: 256,
                // The sample timestamps are in the past: no roll by age.
                segment_ms: i64::MAX,
                compression_type: codec,
                message_timestamp_type: ts_type,
                ..LogConfig::default()
            };
            let log = Log::open(dir.path(), config).unwrap();
            let before = now_ms();
            let mut appended = 0;
            for size in (1..=7).cycle() {
                if appended == originals.len() {
                    break;
                }
                let chunk = &originals[appended..(appended + size).min(originals.len())];
                let info = log.append(chunk).unwrap();
                assert_eq!(info.first_offset, appended as i64, "{what}");
                appended += chunk.len();
            }
            let after = now_ms();
            let mut ours: Vec<Record> = Vec::new();
            loop {
                let records = log.read(ours.len() as i64, 1 << 16).unwrap();
                if records.is_empty() {
                    break;
                }
                ours.extend(records);
            }
            log.close().unwrap();

            let files = log_files_in(dir.path());
            assert!(files.len() >= 3, "{what}: {} segments", files.len());
            let mut theirs = Vec::new();
            for file in &files {
                assert!(assert_crcs_valid(file) >= 1, "{what}: {}", file.display());
                let records = kafka_decode_log_file(file);
                let base_offset: i64 = file.file_stem().unwrap().to_str().unwrap().parse().unwrap();
                assert_eq!(
                    records.first().map(|r| r.0),
                    Some(base_offset),
                    "{what}: {} starts at its base offset",
                    file.display()
                );
                theirs.extend(records);
            }
            assert_eq!(theirs.len(), originals.len(), "{what}");
            for (i, (got, original)) in theirs.iter().zip(&originals).enumerate() {
                let (offset, key, value, headers, timestamp) = got;
                assert_eq!(*offset, i as i64, "{what}");
                assert_eq!(key, &original.key, "{what}: key of {i}");
                assert_eq!(value, &original.value, "{what}: value of {i}");
                let original_headers: Vec<_> = original
                    .headers
                    .iter()
                    .map(|h| (h.key.clone(), h.value.clone()))
                    .collect();
                assert_eq!(headers, &original_headers, "{what}: headers of {i}");
                match (ts_type, original.timestamp) {
                    (TimestampType::CreateTime, Some(t)) => {
                        assert_eq!(*timestamp, t, "{what}: timestamp of {i}")
                    }
                    _ => assert!(
                        (before..=after).contains(timestamp),
                        "{what}: timestamp {timestamp} of {i} is the append time"
                    ),
                }
            }
            // The independent reader and ours agree on everything, timestamps included.
            assert_eq!(theirs, ours_as_kafka_records(&ours), "{what}");
        }
    }
}

#[test]
fn kafka_protocol_reads_every_segment_compaction_writes() {
    use lmqfs::engine::config::CleanupPolicy;
    use lmqfs::engine::CleanerConfig;
    for codec in Compression::ALL {
        let what = codec.name();
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes: 2048,
            index_interval_bytes: 128,
            compression_type: codec,
            cleanup_policy: CleanupPolicy {
                delete: false,
                compact: true,
            },
            file_delete_delay_ms: 0,
            ..LogConfig::default()
        };
        let log = Log::open(dir.path(), config).unwrap();
        for round in 0..6 {
            let batch: Vec<NewRecord> = (0..8)
                .map(|k| NewRecord {
                    key: Some(format!("key-{}", (k * 3 + round) % 11).into_bytes()),
                    // Some tombstones, which get a delete horizon in their batch.
                    value: (k != 5).then(|| format!("value {round}/{k}").into_bytes()),
                    headers: vec![header("h", Some(b"v"))],
                    timestamp: Some(1_700_000_000_000 + round * 100 + k),
                })
                .collect();
            log.append(&batch).unwrap();
        }
        log.roll().unwrap();
        let outcome = log
            .compact(now_ms(), true, &CleanerConfig::default())
            .unwrap();
        assert!(outcome.records_removed > 0, "{what}");
        let mut ours: Vec<Record> = Vec::new();
        let mut offset = 0;
        while offset < log.log_end_offset() {
            let batches = log.read_batches(offset, 1 << 20).unwrap();
            for b in &batches {
                let decoded = lmqfs::engine::record::decode_batch(&b.bytes).unwrap();
                ours.extend(decoded.records.into_iter().filter(|r| r.offset >= offset));
                offset = b.header.next_offset();
            }
        }
        log.close().unwrap();
        let mut theirs = Vec::new();
        for file in &log_files_in(dir.path()) {
            assert_crcs_valid(file);
            theirs.extend(kafka_decode_log_file(file));
        }
        assert_eq!(theirs, ours_as_kafka_records(&ours), "{what}");
        assert!(
            theirs.iter().any(|r| r.2.is_none()),
            "{what}: a tombstone kept"
        );
    }
}
