//! Standard Webhooks signing: `v1,<base64 HMAC-SHA256 of id.timestamp.body>`.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix Standard Webhooks puts before a base64 signing secret.
pub(super) const SECRET_PREFIX: &str = "whsec_";

pub(super) type HmacSha256 = Hmac<Sha256>;

/// Decodes `whsec_<base64>` into a keyed MAC. The message never holds the value.
pub(super) fn signing_key(secret: &str) -> Result<HmacSha256, String> {
    let b64 = secret.trim().strip_prefix(SECRET_PREFIX).ok_or_else(|| {
        format!("must start with `{SECRET_PREFIX}` (Standard Webhooks format whsec_<base64>)")
    })?;
    let bytes = BASE64
        .decode(b64)
        .map_err(|_| format!("the part after `{SECRET_PREFIX}` is not standard base64"))?;
    if bytes.is_empty() {
        return Err(format!("the part after `{SECRET_PREFIX}` is empty"));
    }
    Ok(HmacSha256::new_from_slice(&bytes).expect("HMAC takes keys of any length"))
}

/// The Standard Webhooks `webhook-signature` value: `v1,<base64 HMAC-SHA256
/// of "id.timestamp.body">` per key, space-separated.
pub(super) fn sign(keys: &[HmacSha256], id: &str, timestamp: &str, body: &[u8]) -> String {
    let mut out = String::new();
    for key in keys {
        let mut mac = key.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        if !out.is_empty() {
            out.push(' ');
        }
        out += "v1,";
        out += &BASE64.encode(mac.finalize().into_bytes());
    }
    out
}
