//! The relay (CONTRACT §7): the exporter in front of the bot. Each signed webhook goes to
//! an outbox in the transaction that records its events ([`Webhook`] travels to the ledger
//! as [`crate::events::Event::Relay`]), and a background [`worker`] passes it on to the
//! bot, at least once, retrying with backoff until `--relay-max-age-hours`.

pub mod backoff;
pub mod deliver;
pub mod worker;

use sha2::{Digest, Sha256};

/// Where a webhook is relayed: the URL flag it goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    Meta,
    Twilio,
}

impl Target {
    pub const ALL: [Target; 2] = [Target::Meta, Target::Twilio];

    pub fn as_str(self) -> &'static str {
        match self {
            Target::Meta => "meta",
            Target::Twilio => "twilio",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// A webhook to relay, as the provider sent it.
#[derive(Clone, Debug, PartialEq)]
pub struct Webhook {
    pub target: Target,
    pub body: Vec<u8>,
    pub content_type: String,
    /// Meta's `X-Hub-Signature-256` as received; empty for Twilio, which is re-signed.
    pub signature: String,
    /// Twilio: what followed `/webhooks/twilio` (sub-path and query); empty for Meta.
    pub path_suffix: String,
    pub received_ms: i64,
}

impl Webhook {
    /// The dedupe key: a redelivery is byte-identical in its body and, for Twilio, in the
    /// URL it was posted to (a body posted to two sub-paths is two webhooks).
    pub fn body_hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.path_suffix.as_bytes());
        h.update(b"\n");
        h.update(&self.body);
        hex::encode(h.finalize())
    }
}

/// The relay's settings, taken from the configuration once.
#[derive(Clone, Debug)]
pub struct Settings {
    pub meta_url: Option<String>,
    pub twilio_url: Option<String>,
    pub timeout: std::time::Duration,
    pub max_age_ms: i64,
}

impl Settings {
    pub fn from_config(c: &crate::config::Config) -> Self {
        Self {
            meta_url: c.relay_meta_url.clone(),
            twilio_url: c.relay_twilio_url.clone(),
            timeout: std::time::Duration::from_millis(c.relay_timeout_ms),
            max_age_ms: i64::from(c.relay_max_age_hours) * 3_600_000,
        }
    }

    /// The URL `target`'s webhooks go to, if it is relayed.
    pub fn url(&self, target: Target) -> Option<&str> {
        match target {
            Target::Meta => self.meta_url.as_deref(),
            Target::Twilio => self.twilio_url.as_deref(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.meta_url.is_some() || self.twilio_url.is_some()
    }
}
