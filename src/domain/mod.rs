//! Pure rules: no axum, no sqlx. Everything here is unit-tested on its own.

pub mod category;
pub mod cooldown;
pub mod message;
pub mod phone;
pub mod presend;
pub mod pricing;
pub mod session;
pub mod settings;
pub mod settings_patch;
pub mod status;
pub mod tally;
pub mod times;
pub mod window;

/// Who delivered the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provider {
    Meta,
    Twilio,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Meta => "meta",
            Provider::Twilio => "twilio",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "meta" => Some(Provider::Meta),
            "twilio" => Some(Provider::Twilio),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    Whatsapp,
    Sms,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Whatsapp => "whatsapp",
            Channel::Sms => "sms",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "whatsapp" => Some(Channel::Whatsapp),
            "sms" => Some(Channel::Sms),
            _ => None,
        }
    }
}

/// What became of one item of a provider webhook (`messaging_webhook_events_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Processed,
    Duplicate,
    Ignored,
    Rejected,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Processed,
        Outcome::Duplicate,
        Outcome::Ignored,
        Outcome::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Processed => "processed",
            Outcome::Duplicate => "duplicate",
            Outcome::Ignored => "ignored",
            Outcome::Rejected => "rejected",
        }
    }
}

/// The `type` label of inbound messages: Meta's message types, plus `media` for an
/// SMS/MMS with attachments; anything else is `other`, so the label stays bounded.
pub fn inbound_type_label(raw: &str) -> &'static str {
    const KNOWN: [&str; 17] = [
        "text",
        "image",
        "audio",
        "video",
        "document",
        "sticker",
        "location",
        "contacts",
        "interactive",
        "button",
        "order",
        "reaction",
        "system",
        "unsupported",
        "edit",
        "revoke",
        "media",
    ];
    let lower = raw.trim().to_ascii_lowercase();
    KNOWN.into_iter().find(|k| *k == lower).unwrap_or("other")
}
