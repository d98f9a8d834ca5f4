//! One delivery attempt: the webhook posted to the bot as the provider sent it.

use reqwest::header::CONTENT_TYPE;

use super::{Target, Webhook};
use crate::providers::twilio;

/// What the relay signs with and posts to.
#[derive(Clone)]
pub struct Poster {
    pub client: reqwest::Client,
    pub url: String,
    /// Twilio's auth token, to sign for the relay URL (checked at start-up to be set).
    pub twilio_token: Option<Vec<u8>>,
}

/// How an attempt went, in words for the log when it failed.
pub type Attempt = Result<(), String>;

impl Poster {
    /// Posts `webhook`: a 2xx from the bot delivers it; anything else, a connection
    /// error or a timeout (the client's) is a failed attempt.
    pub async fn post(&self, webhook: &Webhook) -> Attempt {
        let url = target_url(&self.url, &webhook.path_suffix);
        let mut request = self
            .client
            .post(&url)
            .header(CONTENT_TYPE, &webhook.content_type)
            .body(webhook.body.clone());
        match webhook.target {
            Target::Meta if !webhook.signature.is_empty() => {
                request = request.header("x-hub-signature-256", &webhook.signature);
            }
            Target::Meta => {}
            Target::Twilio => {
                let params = twilio::parse_form(&webhook.body).map_err(|e| e.to_string())?;
                let token = self.twilio_token.as_deref().unwrap_or_default();
                request = request.header("x-twilio-signature", twilio::sign(token, &url, &params));
            }
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("the bot answered {}", response.status())),
            Err(e) if e.is_timeout() => Err("no answer within --relay-timeout-ms".into()),
            Err(e) => Err(format!("request failed: {e}")),
        }
    }
}

/// The relay URL with what followed `/webhooks/twilio` appended (`suffix` is empty for
/// Meta), without doubling the slash between them.
pub fn target_url(base: &str, suffix: &str) -> String {
    if suffix.starts_with('/') {
        format!("{}{suffix}", base.trim_end_matches('/'))
    } else {
        format!("{base}{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::target_url;

    #[test]
    fn the_sub_path_and_query_follow_the_relay_url() {
        assert_eq!(target_url("http://bot/sms", ""), "http://bot/sms");
        assert_eq!(
            target_url("http://bot/sms/", "/status?x=1"),
            "http://bot/sms/status?x=1"
        );
        assert_eq!(target_url("http://bot/sms", "?x=1"), "http://bot/sms?x=1");
    }
}
