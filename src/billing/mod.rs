//! The providers' own figures (CONTRACT §9): a background [`worker`] looks each Twilio
//! message with a final status up once in Twilio's Messages API ([`twilio`]) and reads
//! Meta's `pricing_analytics` hourly ([`meta`]), adding what they billed to
//! `messaging_billed_cost_total`. No request waits on a provider's API.

pub mod meta;
pub mod twilio;
pub mod worker;

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

/// One HTTP call to a provider's API may take this long before it counts as failed.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Twilio's Messages API: the account and the credentials its Basic auth takes.
#[derive(Clone)]
pub struct TwilioApi {
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: SecretString,
}

/// Meta's Graph API for one WhatsApp Business Account.
#[derive(Clone)]
pub struct MetaApi {
    pub base_url: String,
    pub waba_id: String,
    pub access_token: SecretString,
}

/// What is read, taken from the configuration once; `None` where a provider's
/// credentials are not set.
#[derive(Clone, Default)]
pub struct Settings {
    pub twilio: Option<TwilioApi>,
    pub meta: Option<MetaApi>,
}

impl Settings {
    pub fn from_config(c: &crate::config::Config) -> Self {
        let twilio = match (&c.twilio_account_sid, &c.twilio_auth_token) {
            (Some(sid), Some(token)) => Some(TwilioApi {
                base_url: c.twilio_api_url.trim_end_matches('/').to_owned(),
                account_sid: sid.clone(),
                auth_token: SecretString::from(token.expose_secret().to_owned()),
            }),
            _ => None,
        };
        let meta = match (&c.meta_access_token, &c.meta_waba_id) {
            (Some(token), Some(waba)) => Some(MetaApi {
                base_url: c.meta_graph_url.trim_end_matches('/').to_owned(),
                waba_id: waba.clone(),
                access_token: SecretString::from(token.expose_secret().to_owned()),
            }),
            _ => None,
        };
        Self { twilio, meta }
    }

    pub fn enabled(&self) -> bool {
        self.twilio.is_some() || self.meta.is_some()
    }
}

/// A call to a provider's API that did not give a figure, and what to do about it.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CallError {
    /// 429: wait this long (the `Retry-After` header, else the backoff).
    #[error("rate limited (429)")]
    RateLimited(Option<Duration>),
    /// 401/403: the credentials were refused.
    #[error("credentials refused (HTTP {0})")]
    Refused(u16),
    /// 404: there is no such resource.
    #[error("not found (404)")]
    NotFound,
    /// Anything else: a network error, a 5xx, an unreadable body.
    #[error("{0}")]
    Failed(String),
}

impl CallError {
    fn from_status(status: reqwest::StatusCode, headers: &reqwest::header::HeaderMap) -> Self {
        match status.as_u16() {
            429 => CallError::RateLimited(retry_after(headers)),
            401 | 403 => CallError::Refused(status.as_u16()),
            404 => CallError::NotFound,
            other => CallError::Failed(format!("HTTP {other}")),
        }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by either provider).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(3_600)))
}

/// A GET whose body is read whole as JSON; a status other than 200 is a [`CallError`].
async fn get_json(req: reqwest::RequestBuilder) -> Result<serde_json::Value, CallError> {
    let resp = req
        .send()
        .await
        .map_err(|e| CallError::Failed(e.without_url().to_string()))?;
    let status = resp.status();
    if status != reqwest::StatusCode::OK {
        return Err(CallError::from_status(status, resp.headers()));
    }
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| CallError::Failed(e.without_url().to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| CallError::Failed(format!("unreadable body: {e}")))
}
