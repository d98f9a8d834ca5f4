//! Meta WhatsApp Cloud API webhooks (`reference/meta-whatsapp-cloud-api.md` §2–§4).

use hmac::{Hmac, Mac};
use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::domain::message::MessageError;
use crate::domain::phone::Phone;
use crate::domain::pricing::MetaPricing;
use crate::domain::status::Status;
use crate::domain::{inbound_type_label, Channel, Provider};
use crate::events::{
    clean_text, parse_json, unix_seconds_to_ms, Event, InboundMessage, ParseError, StatusUpdate,
    WebhookError,
};

/// True when `header` (`sha256=<hex>`) is HMAC-SHA256 of the raw body under `secret`.
/// The comparison is constant-time (`Mac::verify_slice`).
pub fn verify_signature(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// Computes the header Meta would send for `body` (used by tests and the load generator).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    entry: Vec<Entry<'a>>,
}

#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default, borrow)]
    changes: Vec<Change<'a>>,
}

#[derive(Deserialize)]
struct Change<'a> {
    field: String,
    #[serde(borrow)]
    value: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct MessagesValue {
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    statuses: Vec<RawStatus>,
    #[serde(default)]
    messages: Vec<RawInbound>,
    #[serde(default)]
    errors: Vec<RawError>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    phone_number_id: Option<String>,
}

#[derive(Deserialize)]
struct RawStatus {
    id: NonEmpty,
    status: String,
    timestamp: UnixSeconds,
    #[serde(default)]
    recipient_id: Option<String>,
    #[serde(default)]
    pricing: Option<RawPricing>,
    #[serde(default)]
    errors: Vec<RawError>,
}

#[derive(Deserialize)]
struct RawPricing {
    #[serde(default)]
    billable: Option<bool>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    category: Option<String>,
}

#[derive(Deserialize, serde::Serialize)]
struct RawError {
    code: ErrorCode,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    error_data: Option<ErrorData>,
}

#[derive(Deserialize, serde::Serialize)]
struct ErrorData {
    #[serde(default)]
    details: Option<String>,
}

#[derive(Deserialize)]
struct RawInbound {
    #[serde(default)]
    from: Option<String>,
    id: NonEmpty,
    timestamp: UnixSeconds,
    #[serde(rename = "type")]
    kind: String,
}

/// A non-empty string of bounded length (message ids).
struct NonEmpty(String);

impl<'de> Deserialize<'de> for NonEmpty {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() || s.len() > 256 || s.contains('\0') {
            return Err(de::Error::custom(
                "expected a non-empty id of at most 256 bytes, without NUL",
            ));
        }
        Ok(NonEmpty(s))
    }
}

/// Unix seconds as a string of digits (Meta's form) or a number, as milliseconds.
struct UnixSeconds(i64);

impl<'de> Deserialize<'de> for UnixSeconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(i64),
        }
        let raw = match Raw::deserialize(d) {
            Ok(Raw::Text(s)) => s,
            Ok(Raw::Number(n)) => n.to_string(),
            Err(_) => return Err(de::Error::custom("expected unix seconds")),
        };
        unix_seconds_to_ms(&raw)
            .map(UnixSeconds)
            .ok_or_else(|| de::Error::custom("expected unix seconds between 2000 and 2200"))
    }
}

/// Error codes are integers in Meta's payloads; a string of digits is tolerated.
#[derive(serde::Serialize)]
struct ErrorCode(String);

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(i64),
            Text(String),
        }
        match Raw::deserialize(d) {
            Ok(Raw::Number(n)) => Ok(ErrorCode(n.to_string())),
            Ok(Raw::Text(s))
                if !s.is_empty() && s.len() <= 12 && s.bytes().all(|b| b.is_ascii_digit()) =>
            {
                Ok(ErrorCode(s))
            }
            _ => Err(de::Error::custom("expected an integer error code")),
        }
    }
}

impl RawError {
    fn to_message_error(&self) -> MessageError {
        let text = |s: Option<&String>| s.map_or_else(String::new, |s| clean_text(s, 2048));
        MessageError {
            code: self.code.0.clone(),
            title: text(self.title.as_ref()),
            message: text(self.message.as_ref()),
            details: text(self.error_data.as_ref().and_then(|d| d.details.as_ref())),
        }
    }
}

fn status_of(raw: &str) -> Option<Status> {
    match raw {
        "sent" => Some(Status::Sent),
        "delivered" => Some(Status::Delivered),
        // A voice note first played implies it was read (CONTRACT §4).
        "read" | "played" => Some(Status::Read),
        "failed" => Some(Status::Failed),
        _ => None,
    }
}

/// Parses a webhook body into events. Changes whose `field` is not `messages` become
/// [`Event::Ignored`]; unknown keys anywhere are tolerated.
pub fn parse(body: &[u8]) -> Result<Vec<Event>, ParseError> {
    let envelope: Envelope = parse_json(body, "")?;

    let mut events = Vec::new();
    for (i, entry) in envelope.entry.iter().enumerate() {
        for (j, change) in entry.changes.iter().enumerate() {
            if change.field != "messages" {
                events.push(Event::Ignored(Provider::Meta));
                continue;
            }
            let prefix = format!("entry[{i}].changes[{j}].value");
            let Some(raw) = change.value else {
                return Err(ParseError::invalid(prefix, "missing field `value`"));
            };
            let value: MessagesValue = parse_json(raw.get().as_bytes(), &prefix)?;
            push_value_events(entry.id.as_deref().unwrap_or(""), value, &mut events);
        }
    }
    Ok(events)
}

fn push_value_events(entry_id: &str, value: MessagesValue, events: &mut Vec<Event>) {
    for s in value.statuses {
        let Some(status) = status_of(&s.status) else {
            events.push(Event::Ignored(Provider::Meta));
            continue;
        };
        events.push(Event::Status(StatusUpdate {
            provider: Provider::Meta,
            channel: Channel::Whatsapp,
            message_id: s.id.0,
            // Group ids and BSUIDs are not phone numbers: such a status simply has none.
            phone: s.recipient_id.as_deref().and_then(|r| Phone::parse(r).ok()),
            status,
            at_ms: Some(s.timestamp.0),
            pricing: s.pricing.map(|p| MetaPricing {
                kind: p.kind.map(|k| clean_text(&k, 64)),
                category: p.category.map(|c| clean_text(&c, 64)),
                billable: p.billable,
            }),
            error: s.errors.first().map(RawError::to_message_error),
            segments: 0,
        }));
    }
    for m in value.messages {
        events.push(Event::Inbound(InboundMessage {
            provider: Provider::Meta,
            channel: Channel::Whatsapp,
            message_id: m.id.0,
            phone: m.from.as_deref().and_then(|f| Phone::parse(f).ok()),
            kind: inbound_type_label(&m.kind),
            at_ms: Some(m.timestamp.0),
            segments: 0,
        }));
    }
    let phone_number_id = value
        .metadata
        .and_then(|m| m.phone_number_id)
        .unwrap_or_default();
    for e in value.errors {
        // No id or time of its own: the same error object for the same number is one
        // event, however often it is delivered.
        let canonical = serde_json::to_string(&e).unwrap_or_default();
        let mut h = Sha256::new();
        h.update(entry_id.as_bytes());
        h.update(b"\0");
        h.update(phone_number_id.as_bytes());
        h.update(b"\0");
        h.update(canonical.as_bytes());
        events.push(Event::WebhookError(WebhookError {
            provider: Provider::Meta,
            channel: Channel::Whatsapp,
            code: e.code.0,
            dedupe_key: hex::encode(h.finalize()),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_fixture_value() {
        let body = br#"{"a":1}"#;
        let header = sign(b"fixture-app-secret", body);
        assert!(verify_signature(b"fixture-app-secret", body, Some(&header)));
        assert!(!verify_signature(b"other-secret", body, Some(&header)));
        assert!(!verify_signature(
            b"fixture-app-secret",
            br#"{"a": 1}"#,
            Some(&header)
        ));
        assert!(!verify_signature(b"fixture-app-secret", body, None));
        assert!(!verify_signature(
            b"fixture-app-secret",
            body,
            Some("sha256=zz")
        ));
        assert!(!verify_signature(
            b"fixture-app-secret",
            body,
            Some("sha1=00")
        ));
    }

    #[test]
    fn verifies_the_documented_signatures_of_the_fixtures() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/meta");
        for (file, header) in [
            (
                "batch_mixed.json",
                "sha256=43b5345511aa537841a80dcd9d3812d428c83ef36c2c27653147e45ae60ad700",
            ),
            (
                "status_failed_131047.json",
                "sha256=06ac07d89f0739729eb1873b1ec203367a0c5c985e00775dfc0587691078c00f",
            ),
            (
                "webhook_level_error.json",
                "sha256=991b54a36ba855d5621dac8a594d98535488fa2f71045fc337bcf36ab288d6fa",
            ),
        ] {
            let body = std::fs::read(dir.join(file)).expect("shared/fixtures beside the checkout");
            assert_eq!(sign(b"fixture-app-secret", &body), header, "{file}");
            assert!(verify_signature(b"fixture-app-secret", &body, Some(header)));
        }
    }

    #[test]
    fn played_counts_as_read_and_unknown_statuses_are_ignored() {
        let body = br#"{"entry":[{"id":"1","changes":[{"field":"messages","value":{"statuses":[
            {"id":"w1","status":"played","timestamp":"1758621600","recipient_id":"919876543210"},
            {"id":"w2","status":"deleted","timestamp":1758621600}]}}]}]}"#;
        let events = parse(body).unwrap();
        assert!(
            matches!(&events[0], Event::Status(s) if s.status == Status::Read && s.at_ms == Some(1_758_621_600_000))
        );
        assert_eq!(events[1], Event::Ignored(Provider::Meta));
    }

    #[test]
    fn a_bad_timestamp_is_invalid_and_names_its_field() {
        let body = br#"{"entry":[{"changes":[{"field":"messages","value":{"statuses":[
            {"id":"w1","status":"sent","timestamp":"soon"}]}}]}]}"#;
        match parse(body) {
            Err(ParseError::Invalid { field, .. }) => {
                assert_eq!(field, "entry[0].changes[0].value.statuses[0].timestamp")
            }
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn syntax_errors_are_malformed_and_missing_entry_is_invalid() {
        assert!(matches!(parse(b"{not json"), Err(ParseError::Malformed(_))));
        assert!(matches!(
            parse(b"{} x"),
            Err(ParseError::Malformed(_)) | Err(ParseError::Invalid { .. })
        ));
        assert!(matches!(parse(b"{}"), Err(ParseError::Invalid { field, .. }) if field == "entry"));
    }
}
