//! Bounds on what one request of a shipper's protocol may turn into. A body is limited in bytes
//! before it is parsed, but a protocol's decoded form can be far larger than its bytes: an
//! empty OTLP record is two bytes on the wire and a couple of hundred in memory, and a
//! resource's attributes are repeated on every record of it. So the records are counted before
//! they are decoded, and the events built from them are charged as they are made.

use prost::encoding::{WireType, decode_key, decode_varint};

/// Events one request may carry (Elasticsearch's bulk items, OTLP records, Loki entries).
pub const MAX_EVENTS_PER_REQUEST: usize = 100_000;

/// JSON objects and arrays one OTLP or Loki JSON body may hold: each becomes a decoded value
/// of up to a few hundred bytes, whatever its own size.
pub const MAX_JSON_CONTAINERS: usize = 500_000;

/// Bytes of messages and attributes one request may expand into, per byte of the body limit.
pub const EXPANSION_PER_BODY_BYTE: usize = 4;

/// Why a request is refused whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// It is not what its protocol says (400).
    Malformed(String),
    /// It is valid but expands past a bound (413): split it.
    TooLarge(String),
}

impl Refusal {
    pub fn message(&self) -> &str {
        match self {
            Refusal::Malformed(message) | Refusal::TooLarge(message) => message,
        }
    }
}

/// The events built so far, against the expansion bound.
#[derive(Debug)]
pub struct Expansion {
    spent: usize,
    limit: usize,
}

impl Expansion {
    /// A bound of [`EXPANSION_PER_BODY_BYTE`] times the body limit.
    pub fn for_body_limit(max_body_bytes: usize) -> Expansion {
        Expansion {
            spent: 0,
            limit: max_body_bytes.saturating_mul(EXPANSION_PER_BODY_BYTE),
        }
    }

    /// Takes `bytes` more, or refuses once the request would pass its bound.
    pub fn charge(&mut self, bytes: usize) -> Result<(), Refusal> {
        self.spent = self.spent.saturating_add(bytes);
        if self.spent > self.limit {
            return Err(Refusal::TooLarge(format!(
                "the request expands into more than {} bytes of messages and attributes \
                 ({EXPANSION_PER_BODY_BYTE} times --max-body-bytes; a resource's or stream's \
                 attributes count once per record): split it",
                self.limit
            )));
        }
        Ok(())
    }
}

/// Refuses a request of more than [`MAX_EVENTS_PER_REQUEST`] records.
pub fn check_event_count(count: usize, what: &str) -> Result<(), Refusal> {
    if count > MAX_EVENTS_PER_REQUEST {
        return Err(Refusal::TooLarge(format!(
            "the request holds {count} {what}; at most {MAX_EVENTS_PER_REQUEST} are taken in \
             one: split it"
        )));
    }
    Ok(())
}

/// Refuses a JSON body of more than [`MAX_JSON_CONTAINERS`] objects and arrays (counted by
/// their opening brackets, in strings too: an upper bound, read without parsing).
pub fn check_json_containers(body: &[u8]) -> Result<(), Refusal> {
    let containers = memchr::memchr2_iter(b'{', b'[', body).count();
    if containers > MAX_JSON_CONTAINERS {
        return Err(Refusal::TooLarge(format!(
            "the body holds {containers} JSON objects and arrays; at most \
             {MAX_JSON_CONTAINERS} are taken in one request: split it"
        )));
    }
    Ok(())
}

/// How many values of the repeated message field at `path` a protobuf message holds (for
/// `[1, 2, 2]`: every field 2 of every field 2 of every field 1), read from the wire format
/// without decoding anything else. Fails where the bytes are not a protobuf message.
pub fn count_protobuf_repeated(body: &[u8], path: &[u32]) -> Result<usize, String> {
    let Some((&field, deeper)) = path.split_first() else {
        return Ok(1);
    };
    let mut buf = body;
    let mut count = 0usize;
    while !buf.is_empty() {
        let (tag, wire_type) = decode_key(&mut buf).map_err(|e| e.to_string())?;
        match wire_type {
            WireType::Varint => {
                decode_varint(&mut buf).map_err(|e| e.to_string())?;
            }
            WireType::SixtyFourBit => buf = buf.get(8..).ok_or("truncated fixed64")?,
            WireType::ThirtyTwoBit => buf = buf.get(4..).ok_or("truncated fixed32")?,
            WireType::LengthDelimited => {
                let length = decode_varint(&mut buf).map_err(|e| e.to_string())?;
                let length = usize::try_from(length)
                    .ok()
                    .filter(|length| *length <= buf.len())
                    .ok_or("a length past the end of the message")?;
                let (value, rest) = buf.split_at(length);
                if tag == field {
                    count = count.saturating_add(count_protobuf_repeated(value, deeper)?);
                }
                buf = rest;
            }
            WireType::StartGroup | WireType::EndGroup => {
                return Err("a group, which these messages do not have".into());
            }
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::loki::{EntryAdapter, PushRequest, StreamAdapter};
    use prost::Message;

    #[test]
    fn repeated_fields_are_counted_on_the_wire() {
        let stream = |entries: usize| StreamAdapter {
            labels: "{a=\"b\"}".into(),
            entries: vec![EntryAdapter::default(); entries],
            hash: 7,
        };
        let push = PushRequest {
            streams: vec![stream(3), stream(0), stream(5)],
        };
        let bytes = push.encode_to_vec();
        assert_eq!(count_protobuf_repeated(&bytes, &[1]), Ok(3));
        assert_eq!(count_protobuf_repeated(&bytes, &[1, 2]), Ok(8));
        assert!(count_protobuf_repeated(&bytes[..bytes.len() - 1], &[1, 2]).is_err());
        assert!(count_protobuf_repeated(b"\x0b", &[1]).is_err());
    }

    #[test]
    fn expansion_and_counts_are_bounded() {
        let mut expansion = Expansion::for_body_limit(10);
        assert!(expansion.charge(40).is_ok());
        assert!(matches!(expansion.charge(1), Err(Refusal::TooLarge(_))));
        assert!(check_event_count(MAX_EVENTS_PER_REQUEST, "records").is_ok());
        assert!(check_event_count(MAX_EVENTS_PER_REQUEST + 1, "records").is_err());
        assert!(check_json_containers(&b"{}".repeat(MAX_JSON_CONTAINERS / 2)).is_ok());
        assert!(check_json_containers(&b"[]".repeat(MAX_JSON_CONTAINERS + 1)).is_err());
    }
}
