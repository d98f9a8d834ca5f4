//! One message's billed price from Twilio's Messages API
//! (`reference/twilio-messaging.md` §6, `provider-billing.md` §4).

use secrecy::ExposeSecret;

use super::{get_json, CallError, TwilioApi};

/// What Twilio says a message cost.
#[derive(Clone, Debug, PartialEq)]
pub enum Price {
    /// Billed this much (Twilio writes charges negative; this is the amount charged).
    Billed {
        amount: f64,
        currency: Option<String>,
    },
    /// `price` is still null: Twilio sets it after sending, sometimes up to 24 h later.
    Pending,
}

/// `GET /2010-04-01/Accounts/{sid}/Messages/{message}.json` with Basic auth.
pub async fn price(
    client: &reqwest::Client,
    api: &TwilioApi,
    message_sid: &str,
) -> Result<Price, CallError> {
    let url = format!(
        "{}/2010-04-01/Accounts/{}/Messages/{}.json",
        api.base_url, api.account_sid, message_sid
    );
    let req = client
        .get(url)
        .basic_auth(&api.account_sid, Some(api.auth_token.expose_secret()));
    parse(&get_json(req).await?)
}

/// The price of a Message resource: a decimal string (or number), null until known.
pub fn parse(message: &serde_json::Value) -> Result<Price, CallError> {
    let amount = match &message["price"] {
        serde_json::Value::Null => return Ok(Price::Pending),
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
        serde_json::Value::Number(n) => n.as_f64(),
        _ => None,
    }
    .filter(|a| a.is_finite() && a.abs() <= crate::domain::settings_patch::MAX_PRICE)
    .ok_or_else(|| CallError::Failed(format!("unreadable price {}", message["price"])))?;
    Ok(Price::Billed {
        amount: amount.abs(),
        currency: message["price_unit"].as_str().map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> serde_json::Value {
        let path = format!(
            "{}/../shared/fixtures/billing/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    #[test]
    fn a_negative_price_is_the_amount_charged_and_null_is_pending() {
        assert_eq!(
            parse(&fixture("twilio_message_sms_priced.json")).unwrap(),
            Price::Billed {
                amount: 0.0158,
                currency: Some("USD".into())
            }
        );
        assert_eq!(
            parse(&fixture("twilio_message_price_pending.json")).unwrap(),
            Price::Pending
        );
        assert!(parse(&serde_json::json!({"price": "free"})).is_err());
    }
}
