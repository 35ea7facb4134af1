//! sled key layout: how object names, timestamps, ids, sinks and
//! sequence numbers become keys (see the tree list in [`super`]).

use chrono::{DateTime, Utc};

/// Seen-set timestamp for records without a readable `updated-at`; never pruned.
pub(super) const UNDATED: i64 = i64::MIN;

pub(super) fn u64_be(v: &[u8]) -> Option<u64> {
    v.try_into().ok().map(u64::from_be_bytes)
}

pub(super) fn ts_key(ts: Option<DateTime<Utc>>) -> [u8; 8] {
    let micros = ts.map_or(UNDATED, |t| t.timestamp_micros());
    ((micros as u64) ^ (1 << 63)).to_be_bytes()
}

pub(super) fn seen_prefix(object: &str) -> Vec<u8> {
    let mut k = object.as_bytes().to_vec();
    k.push(0);
    k
}

/// `sink \0 seq` for the per-sink trees.
pub(super) fn sink_key(sink: &str, seq: u64) -> Vec<u8> {
    let mut k = seen_prefix(sink);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Splits a per-sink key into sink name and seq.
pub(super) fn split_sink_key(k: &[u8]) -> Option<(String, u64)> {
    let cut = k.len().checked_sub(9)?;
    if k[cut] != 0 {
        return None;
    }
    let sink = String::from_utf8(k[..cut].to_vec()).ok()?;
    Some((sink, u64_be(&k[cut + 1..])?))
}

pub(super) fn missed_key(sink: &str) -> Vec<u8> {
    let mut k = b"missed\0".to_vec();
    k.extend_from_slice(sink.as_bytes());
    k
}

/// `sink \0 object \0 key \0` for the `held` index.
pub(super) fn held_prefix(sink: &str, object: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(sink.len() + object.len() + key.len() + 11);
    for part in [sink, object, key] {
        k.extend_from_slice(part.as_bytes());
        k.push(0);
    }
    k
}

pub(super) fn held_key(sink: &str, object: &str, key: &str, seq: u64) -> Vec<u8> {
    let mut k = held_prefix(sink, object, key);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub(super) fn seen_key(object: &str, ts: Option<DateTime<Utc>>, id: &str) -> Vec<u8> {
    let mut k = seen_prefix(object);
    k.extend_from_slice(&ts_key(ts));
    k.extend_from_slice(compact_id(id).as_bytes());
    k
}

/// Ids longer than this are stored (seen-set, outbox key, hence the Kafka
/// key) as `sha256:<hex>` of the id; events still carry the id itself.
/// Part of the on-disk format, so not configurable.
pub const MAX_STORED_ID_BYTES: usize = 512;

/// An id as the store keys it: itself, or its hash past
/// [`MAX_STORED_ID_BYTES`] (Coupa once sent a 70,000-character id).
pub fn compact_id(id: &str) -> std::borrow::Cow<'_, str> {
    use sha2::Digest;
    if id.len() <= MAX_STORED_ID_BYTES {
        return id.into();
    }
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(id.as_bytes()))
    )
    .into()
}
