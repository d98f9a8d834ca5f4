//! Domain events: what the provider adapters and send hooks turn requests into.
//! The ledger consumes them; nothing here knows about HTTP or storage.

use crate::domain::message::{Hook, MessageError};
use crate::domain::phone::Phone;
use crate::domain::pricing::MetaPricing;
use crate::domain::status::Status;
use crate::domain::times;
use crate::domain::{Channel, Provider};

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Status(StatusUpdate),
    Inbound(InboundMessage),
    Sent(SentMessage),
    WebhookError(WebhookError),
    /// An item we acknowledge but do not count (another webhook field, a status outside
    /// the contract's set such as Twilio's `queued`).
    Ignored(Provider),
    /// The webhook itself, to relay to the bot (CONTRACT §7): stored in the outbox by the
    /// transaction that records the webhook's other events.
    Relay(Box<crate::relay::Webhook>),
}

impl Event {
    /// Takes a provider time too far ahead of `receipt_ms` as the receipt time
    /// ([`times::provider_time`]), so that a broken clock cannot stretch a latency or a
    /// window.
    pub fn bound_provider_time(&mut self, receipt_ms: i64) {
        let at_ms = match self {
            Event::Status(s) => &mut s.at_ms,
            Event::Inbound(m) => &mut m.at_ms,
            _ => return,
        };
        *at_ms = at_ms.map(|t| times::provider_time(t, receipt_ms));
    }
}

/// A provider's report on one outbound message.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusUpdate {
    pub provider: Provider,
    pub channel: Channel,
    pub message_id: String,
    pub phone: Option<Phone>,
    pub status: Status,
    /// Provider time; `None` means "use receipt time".
    pub at_ms: Option<i64>,
    pub pricing: Option<MetaPricing>,
    pub error: Option<MessageError>,
    /// SMS segments as the provider counted them (Twilio's `NumSegments`); 0 = not given.
    pub segments: u32,
}

/// A message from a user to the business.
#[derive(Clone, Debug, PartialEq)]
pub struct InboundMessage {
    pub provider: Provider,
    pub channel: Channel,
    pub message_id: String,
    /// `None` when the provider did not give a usable number (Meta's BSUID rollout).
    pub phone: Option<Phone>,
    pub kind: &'static str,
    pub at_ms: Option<i64>,
    /// SMS segments as the provider counted them (Twilio's `NumSegments`); 0 = not given.
    pub segments: u32,
}

/// The bot's report that it sent a message (`POST /v1/events/sent`).
#[derive(Clone, Debug, PartialEq)]
pub struct SentMessage {
    pub provider: Provider,
    pub channel: Channel,
    pub message_id: String,
    pub phone: Phone,
    pub hook: Hook,
    pub error: Option<MessageError>,
    pub reservation_id: Option<String>,
}

/// A provider error not tied to one message (Meta's `value.errors[]`).
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookError {
    pub provider: Provider,
    pub channel: Channel,
    pub code: String,
    /// Identifies a redelivery of the same error, which carries no id of its own.
    pub dedupe_key: String,
}

/// A parse failure, mapped to 400 (malformed) or 422 (well-formed, invalid field).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("{0}")]
    Malformed(String),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

/// Deserialises JSON the fast way; only a body that fails is read again with path
/// tracking, so that its error names the field without every valid body paying for it.
pub fn parse_json<'de, T: serde::Deserialize<'de>>(
    bytes: &'de [u8],
    prefix: &str,
) -> Result<T, ParseError> {
    serde_json::from_slice(bytes).or_else(|_| {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let value = serde_path_to_error::deserialize(&mut de)
            .map_err(|e| ParseError::from_json(e, prefix))?;
        de.end()
            .map_err(|e| ParseError::Malformed(format!("malformed JSON: {e}")))?;
        Ok(value)
    })
}

impl ParseError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ParseError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Sorts a serde_json error into malformed (syntax) or invalid (data, with its path).
    pub fn from_json(err: serde_path_to_error::Error<serde_json::Error>, prefix: &str) -> Self {
        let path = err.path().to_string();
        let inner = err.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let message = strip_position(&inner.to_string());
                let mut parts: Vec<&str> = Vec::new();
                if !prefix.is_empty() {
                    parts.push(prefix);
                }
                if path != "." {
                    parts.push(&path);
                }
                // "missing field `x`" is reported at the enclosing object: name x itself.
                let missing = message
                    .strip_prefix("missing field `")
                    .and_then(|rest| rest.strip_suffix('`'));
                if let Some(name) = missing {
                    parts.push(name);
                }
                let field = if parts.is_empty() {
                    "body".to_owned()
                } else {
                    parts.join(".")
                };
                ParseError::Invalid { field, message }
            }
            _ => ParseError::Malformed(format!("malformed JSON: {inner}")),
        }
    }
}

/// serde_json appends " at line 1 column 5"; the field path says more.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// Unix seconds as Meta sends them (a string of digits, sometimes a number), checked to
/// be a plausible time, as milliseconds.
pub fn unix_seconds_to_ms(raw: &str) -> Option<i64> {
    let secs: i64 = raw.trim().parse().ok()?;
    // 2000-01-01 .. 2200-01-01: anything else is a corrupt field, not a time.
    (946_684_800..7_258_118_400)
        .contains(&secs)
        .then_some(secs * 1000)
}

/// Free text from a payload made safe to store: NUL bytes (which Postgres refuses in
/// text) removed and the length capped at `max_bytes` on a character boundary.
pub fn clean_text(raw: &str, max_bytes: usize) -> String {
    let mut out: String = raw.chars().filter(|c| *c != '\0').collect();
    if out.len() > max_bytes {
        let mut end = max_bytes;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_text_drops_nul_and_caps_on_a_char_boundary() {
        assert_eq!(clean_text("a\0b", 10), "ab");
        assert_eq!(clean_text("ééé", 3), "é");
    }

    #[test]
    fn statuses_and_inbound_messages_dated_far_ahead_take_the_receipt_time() {
        let receipt = 1_764_000_000_000;
        let inbound = |at_ms| {
            Event::Inbound(InboundMessage {
                provider: Provider::Meta,
                channel: Channel::Whatsapp,
                message_id: "wamid.1".into(),
                phone: None,
                kind: "text",
                at_ms,
                segments: 0,
            })
        };
        for (given, used) in [
            (Some(4_102_444_800_000), Some(receipt)),
            (Some(receipt + 60_000), Some(receipt + 60_000)),
            (None, None),
        ] {
            let mut event = inbound(given);
            event.bound_provider_time(receipt);
            assert_eq!(event, inbound(used), "{given:?}");
        }
    }

    #[test]
    fn unix_seconds_must_be_a_plausible_time() {
        assert_eq!(unix_seconds_to_ms("1758621600"), Some(1_758_621_600_000));
        assert_eq!(unix_seconds_to_ms("17586216000000"), None);
        assert_eq!(unix_seconds_to_ms("-5"), None);
        assert_eq!(unix_seconds_to_ms("soon"), None);
    }
}
