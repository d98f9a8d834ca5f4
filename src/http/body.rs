//! Reading request bodies ourselves, so the raw bytes are there for signature checks and
//! every rejection (size, content type) uses our error envelope.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};

use super::error::{ApiError, Result};

/// The body limit of CONTRACT §3.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub const JSON: &str = "application/json";
pub const FORM: &str = "application/x-www-form-urlencoded";

/// 415 unless the Content-Type's media type is `expected` (parameters such as charset ignored).
pub fn require_content_type(headers: &HeaderMap, expected: &'static str) -> Result<()> {
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    match media_type {
        Some(t) if t == expected => Ok(()),
        _ => Err(ApiError::UnsupportedMediaType(expected)),
    }
}

/// Reads the whole body, refusing more than [`MAX_BODY_BYTES`] with 413 without
/// buffering the excess.
pub async fn read_limited(headers: &HeaderMap, body: Body) -> Result<Bytes> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(ApiError::PayloadTooLarge(MAX_BODY_BYTES));
    }
    match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => Ok(bytes),
        Err(e) if is_length_limit(&e) => Err(ApiError::PayloadTooLarge(MAX_BODY_BYTES)),
        Err(e) => Err(ApiError::Malformed(format!(
            "could not read the request body: {e}"
        ))),
    }
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}
