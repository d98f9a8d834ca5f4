//! Operator-tunable settings: cooldown, switches and the rate card (`/v1/config`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::category::Category;

/// The settings document stored in the database and served by `GET /v1/config`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub template_cooldown_hours: u32,
    pub rate_limiting_enabled: bool,
    pub session_tracking_enabled: bool,
    pub cost_tracking_enabled: bool,
    pub block_out_of_session_messages: bool,
    pub currency: String,
    pub rates: BTreeMap<Category, f64>,
    /// Calling-code prefix (digits) → prices that override `rates` for those phones.
    pub country_rates: BTreeMap<String, BTreeMap<Category, f64>>,
    /// Each category once, in order of first appearance (CONTRACT §6.6).
    #[serde(deserialize_with = "distinct")]
    pub free_in_window_categories: Vec<Category>,
    /// The currency of the SMS rate card (CONTRACT §9); SMS is never priced from `rates`.
    #[serde(default = "default_sms_currency")]
    pub sms_currency: String,
    /// Price per SMS segment by direction.
    #[serde(default = "default_sms_rates")]
    pub sms_rates: BTreeMap<SmsDirection, f64>,
    /// Calling-code prefix (digits) → per-segment prices that override `sms_rates`.
    #[serde(default)]
    pub sms_country_rates: BTreeMap<String, BTreeMap<SmsDirection, f64>>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// Which way an SMS went: each direction is billed per segment (`provider-billing.md` §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmsDirection {
    Outbound,
    Inbound,
}

impl SmsDirection {
    pub const ALL: [SmsDirection; 2] = [SmsDirection::Outbound, SmsDirection::Inbound];

    pub fn as_str(self) -> &'static str {
        match self {
            SmsDirection::Outbound => "outbound",
            SmsDirection::Inbound => "inbound",
        }
    }
}

// Settings stored before the SMS rate card existed read with its defaults.
fn default_sms_currency() -> String {
    "USD".to_owned()
}

fn default_sms_rates() -> BTreeMap<SmsDirection, f64> {
    BTreeMap::from([
        (SmsDirection::Outbound, 0.0079),
        (SmsDirection::Inbound, 0.0079),
    ])
}

/// A list setting with repeats dropped, the first appearance kept, so that a list sent
/// with a value twice reads back as it means.
fn distinct<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + PartialEq,
{
    let mut out: Vec<T> = Vec::new();
    for item in Vec::<T>::deserialize(d)? {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    Ok(out)
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            template_cooldown_hours: 12,
            rate_limiting_enabled: true,
            session_tracking_enabled: true,
            cost_tracking_enabled: true,
            block_out_of_session_messages: false,
            currency: "INR".to_owned(),
            rates: BTreeMap::from([
                (Category::Marketing, 0.75),
                (Category::Utility, 0.35),
                (Category::Authentication, 0.30),
                (Category::Service, 0.0),
            ]),
            country_rates: BTreeMap::new(),
            free_in_window_categories: vec![Category::Service],
            sms_currency: default_sms_currency(),
            sms_rates: default_sms_rates(),
            sms_country_rates: BTreeMap::new(),
            updated_at: None,
        }
    }
}
