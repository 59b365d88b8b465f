//! Records as JSON: the output of `log.jsonl` / `<offset>.json` and the input of `append.jsonl`.
//!
//! Output, one object per record, fields in this order:
//! `{"offset":N,"timestamp":MS,"timestamp_type":"CreateTime","key":S|null,"value":S|null,
//! "headers":{"k":S|null}}`. A key or value that is not valid UTF-8 is written as `null` and
//! carried in `key_b64` / `value_b64` (standard base64, padded); a header value that is not
//! UTF-8 likewise goes to `headers_b64`. A tombstone is `"value":null` without `value_b64`.
//!
//! Input, one object per line: `value` (string or null) or `value_b64`; optional `key` /
//! `key_b64`, `headers` (object of string to string or null), `timestamp` (integer ms).
//! `offset`, `timestamp_type` and `headers_b64` are accepted so that a `log.jsonl` line is a
//! valid `append.jsonl` line; any other field is refused, so typos do not pass silently.

use base64::Engine as _;
use serde_json::Value;

use crate::storage::{Header, NewRecord, Record};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Appends `record` as one JSON object (no trailing newline) to `out`.
pub fn write_record_json(record: &Record, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"offset\":");
    out.extend_from_slice(record.offset.to_string().as_bytes());
    out.extend_from_slice(b",\"timestamp\":");
    out.extend_from_slice(record.timestamp.to_string().as_bytes());
    out.extend_from_slice(b",\"timestamp_type\":\"");
    out.extend_from_slice(record.timestamp_type.name().as_bytes());
    out.extend_from_slice(b"\",\"key\":");
    let key_b64 = write_nullable_bytes(record.key.as_deref(), out);
    out.extend_from_slice(b",\"value\":");
    let value_b64 = write_nullable_bytes(record.value.as_deref(), out);
    out.extend_from_slice(b",\"headers\":{");
    let mut binary_headers = Vec::new();
    for (i, header) in record.headers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_string(&header.key, out);
        out.push(b':');
        if let Some(bytes) = write_nullable_bytes(header.value.as_deref(), out) {
            binary_headers.push((&header.key, bytes));
        }
    }
    out.push(b'}');
    if let Some(b64) = key_b64 {
        out.extend_from_slice(b",\"key_b64\":");
        write_json_string(&b64, out);
    }
    if let Some(b64) = value_b64 {
        out.extend_from_slice(b",\"value_b64\":");
        write_json_string(&b64, out);
    }
    if !binary_headers.is_empty() {
        out.extend_from_slice(b",\"headers_b64\":{");
        for (i, (key, b64)) in binary_headers.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_json_string(key, out);
            out.push(b':');
            write_json_string(b64, out);
        }
        out.push(b'}');
    }
    out.push(b'}');
}

/// The record as JSON text followed by `\n`.
pub fn record_json_line(record: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + record.value.as_ref().map_or(0, Vec::len));
    write_record_json(record, &mut out);
    out.push(b'\n');
    out
}

/// Writes a string, `null`, or (for bytes that are not UTF-8) `null` and returns the base64 to
/// carry beside it.
fn write_nullable_bytes(bytes: Option<&[u8]>, out: &mut Vec<u8>) -> Option<String> {
    match bytes {
        None => {
            out.extend_from_slice(b"null");
            None
        }
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => {
                write_json_string(text, out);
                None
            }
            Err(_) => {
                out.extend_from_slice(b"null");
                Some(B64.encode(bytes))
            }
        },
    }
}

fn write_json_string(text: &str, out: &mut Vec<u8>) {
    // serde_json's string escaping, written straight into the buffer.
    serde_json::to_writer(&mut *out, text).expect("writing JSON to a Vec cannot fail");
}

/// Parses one `append.jsonl` line into a record. The error text says which field is wrong.
pub fn parse_record_line(line: &[u8]) -> Result<NewRecord, String> {
    let value: Value = serde_json::from_slice(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(fields) = value else {
        return Err("a line must be a JSON object".into());
    };
    let mut record = NewRecord::default();
    let mut has_value = false;
    for (name, field) in &fields {
        match name.as_str() {
            "value" => {
                has_value = true;
                if fields.contains_key("value_b64") && !field.is_null() {
                    return Err("give either \"value\" or \"value_b64\", not both".into());
                }
                if !fields.contains_key("value_b64") {
                    record.value = nullable_string(name, field)?;
                }
            }
            "value_b64" => {
                has_value = true;
                record.value = Some(base64_field(name, field)?);
            }
            "key" => {
                if fields.contains_key("key_b64") && !field.is_null() {
                    return Err("give either \"key\" or \"key_b64\", not both".into());
                }
                if !fields.contains_key("key_b64") {
                    record.key = nullable_string(name, field)?;
                }
            }
            "key_b64" => record.key = Some(base64_field(name, field)?),
            "headers" => record.headers = headers_field(field, fields.get("headers_b64"))?,
            "timestamp" => {
                record.timestamp = match field {
                    Value::Null => None,
                    Value::Number(n) => Some(n.as_i64().ok_or_else(|| {
                        format!("\"timestamp\" must be an integer of ms since the epoch, got {n}")
                    })?),
                    other => {
                        return Err(format!(
                            "\"timestamp\" must be an integer of ms since the epoch, got {other}"
                        ))
                    }
                }
            }
            "offset" | "timestamp_type" | "headers_b64" => {}
            other => return Err(format!("unknown field {other:?}")),
        }
    }
    if !has_value {
        return Err(
            "missing \"value\" (a string, or null for a tombstone) or \"value_b64\"".into(),
        );
    }
    Ok(record)
}

fn nullable_string(name: &str, field: &Value) -> Result<Option<Vec<u8>>, String> {
    match field {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone().into_bytes())),
        other => Err(format!("\"{name}\" must be a string or null, got {other}")),
    }
}

fn base64_field(name: &str, field: &Value) -> Result<Vec<u8>, String> {
    match field {
        Value::String(s) => B64
            .decode(s)
            .map_err(|e| format!("\"{name}\" is not valid base64: {e}")),
        other => Err(format!("\"{name}\" must be a base64 string, got {other}")),
    }
}

fn headers_field(field: &Value, binary: Option<&Value>) -> Result<Vec<Header>, String> {
    let Value::Object(map) = field else {
        return Err(format!(
            "\"headers\" must be an object of string to string, got {field}"
        ));
    };
    let binary = match binary {
        None | Some(Value::Null) => None,
        Some(Value::Object(b)) => Some(b),
        Some(other) => return Err(format!("\"headers_b64\" must be an object, got {other}")),
    };
    let mut headers = Vec::with_capacity(map.len());
    for (key, value) in map {
        let value = match (value, binary.and_then(|b| b.get(key))) {
            (Value::Null, Some(b64)) => Some(base64_field("headers_b64", b64)?),
            (Value::Null, None) => None,
            (Value::String(s), _) => Some(s.clone().into_bytes()),
            (other, _) => {
                return Err(format!(
                    "header {key:?} must be a string or null, got {other}"
                ))
            }
        };
        headers.push(Header {
            key: key.clone(),
            value,
        });
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::TimestampType;

    fn record(key: Option<&[u8]>, value: Option<&[u8]>, headers: Vec<Header>) -> Record {
        Record {
            offset: 7,
            timestamp: 1_700_000_000_000,
            timestamp_type: TimestampType::CreateTime,
            key: key.map(<[u8]>::to_vec),
            value: value.map(<[u8]>::to_vec),
            headers,
        }
    }

    fn as_json(r: &Record) -> Value {
        let line = record_json_line(r);
        assert_eq!(line.last(), Some(&b'\n'));
        serde_json::from_slice(&line).unwrap()
    }

    #[test]
    fn text_record_as_json() {
        let r = record(
            Some(b"k"),
            Some(b"hello \"world\"\n"),
            vec![Header {
                key: "h".into(),
                value: Some(b"v".to_vec()),
            }],
        );
        let line = String::from_utf8(record_json_line(&r)).unwrap();
        assert_eq!(
            line,
            "{\"offset\":7,\"timestamp\":1700000000000,\"timestamp_type\":\"CreateTime\",\
             \"key\":\"k\",\"value\":\"hello \\\"world\\\"\\n\",\"headers\":{\"h\":\"v\"}}\n"
        );
    }

    #[test]
    fn binary_value_goes_to_value_b64() {
        let r = record(None, Some(&[0xff, 0x00, 0x80]), vec![]);
        let j = as_json(&r);
        assert_eq!(j["value"], Value::Null);
        assert_eq!(j["value_b64"], "/wCA");
        assert_eq!(j["key"], Value::Null);
        assert!(j.get("key_b64").is_none());
    }

    #[test]
    fn tombstone_has_null_value_and_no_b64() {
        let j = as_json(&record(Some(b"k"), None, vec![]));
        assert_eq!(j["value"], Value::Null);
        assert!(j.get("value_b64").is_none());
    }

    #[test]
    fn output_lines_are_valid_input_lines() {
        let r = record(
            Some(&[0xfe]),
            Some(&[1, 2, 0xff]),
            vec![
                Header {
                    key: "a".into(),
                    value: None,
                },
                Header {
                    key: "b".into(),
                    value: Some(vec![0xc3]),
                },
            ],
        );
        let parsed = parse_record_line(&record_json_line(&r)).unwrap();
        assert_eq!(parsed.key, r.key);
        assert_eq!(parsed.value, r.value);
        assert_eq!(parsed.timestamp, Some(r.timestamp));
        let mut headers = parsed.headers.clone();
        headers.sort_by(|x, y| x.key.cmp(&y.key));
        assert_eq!(headers, r.headers);
    }

    #[test]
    fn parses_input_fields() {
        let r =
            parse_record_line(br#"{"key":"k","value":"v","headers":{"x":"y"},"timestamp":1234}"#)
                .unwrap();
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.value.as_deref(), Some(&b"v"[..]));
        assert_eq!(r.timestamp, Some(1234));
        assert_eq!(r.headers.len(), 1);
        let tomb = parse_record_line(br#"{"key":"k","value":null}"#).unwrap();
        assert_eq!(tomb.value, None);
        let bin = parse_record_line(br#"{"value_b64":"AAE="}"#).unwrap();
        assert_eq!(bin.value, Some(vec![0, 1]));
    }

    #[test]
    fn refuses_bad_input() {
        for bad in [
            &b"not json"[..],
            b"[1,2]",
            b"\"v\"",
            b"{}",
            br#"{"key":"k"}"#,
            br#"{"value":5}"#,
            br#"{"value":"v","key":1}"#,
            br#"{"value":"v","headers":{"h":1}}"#,
            br#"{"value":"v","headers":[]}"#,
            br#"{"value":"v","timestamp":"now"}"#,
            br#"{"value":"v","timestamp":1.5}"#,
            br#"{"value_b64":"***"}"#,
            br#"{"value":"v","value_b64":"AA=="}"#,
            br#"{"value":"v","colour":"red"}"#,
        ] {
            assert!(
                parse_record_line(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
