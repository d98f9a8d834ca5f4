//! Realistic traffic: phones from a few countries, a Zipf-like spread over templates,
//! Meta-shaped status webhooks signed like Meta signs them, send hooks and pre-send
//! checks as the bot sends them. Everything here runs before the timed phase.

use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::rng::Rng;

/// A template the bot sends, with its category (CONTRACT §3).
#[derive(Clone, Debug)]
pub struct Template {
    pub name: String,
    pub category: &'static str,
}

/// The bot's catalogue: what a busy appointment/commerce bot sends, most used first.
pub fn catalogue() -> Vec<Template> {
    [
        ("appointment_reminder", "utility"),
        ("order_shipped", "utility"),
        ("otp_login", "authentication"),
        ("availability_request", "utility"),
        ("payment_received", "utility"),
        ("weekend_sale", "marketing"),
        ("delivery_update", "utility"),
        ("otp_signup", "authentication_international"),
        ("feedback_request", "marketing"),
        ("back_in_stock", "marketing_lite"),
        ("booking_confirmed", "utility"),
        ("cart_reminder", "marketing"),
        ("account_alert", "utility"),
        ("loyalty_points", "marketing_lite"),
        ("new_collection", "marketing"),
        ("password_reset", "authentication"),
        ("invoice_ready", "utility"),
        ("renewal_due", "utility"),
        ("survey_invite", "marketing"),
        ("support_followup", "service"),
    ]
    .into_iter()
    .map(|(n, c)| Template {
        name: n.to_owned(),
        category: c,
    })
    .collect()
}

pub const CATEGORIES: [&str; 6] = [
    "marketing",
    "marketing_lite",
    "utility",
    "authentication",
    "authentication_international",
    "service",
];

/// Cumulative Zipf(1) weights over `n` ranks, for [`Rng::weighted`].
pub fn zipf(n: usize) -> Vec<f64> {
    let mut acc = 0.0;
    (1..=n)
        .map(|k| {
            acc += 1.0 / k as f64;
            acc
        })
        .collect()
}

/// A phone number as Meta writes `recipient_id` (digits only): India, Brazil, Indonesia,
/// Mexico, Nigeria, the US and the UK, in that order of weight.
pub fn phone(rng: &mut Rng) -> String {
    const COUNTRIES: [(&str, usize, u64); 7] = [
        ("91", 10, 40),
        ("55", 11, 18),
        ("62", 11, 12),
        ("52", 10, 10),
        ("234", 10, 8),
        ("1", 10, 7),
        ("44", 10, 5),
    ];
    let total: u64 = COUNTRIES.iter().map(|c| c.2).sum();
    let mut x = rng.below(total);
    let (cc, digits, _) = COUNTRIES
        .iter()
        .find(|c| {
            if x < c.2 {
                true
            } else {
                x -= c.2;
                false
            }
        })
        .copied()
        .unwrap_or(COUNTRIES[0]);
    let mut s = String::with_capacity(cc.len() + digits);
    s.push_str(cc);
    // Mobile numbers start with 6-9 in most of these plans.
    s.push(char::from(b'6' + rng.below(4) as u8));
    for _ in 1..digits {
        s.push(char::from(b'0' + rng.below(10) as u8));
    }
    s
}

/// A wamid-like message id, unique per (run, seq).
pub fn message_id(run: u64, seq: u64, phone: &str) -> String {
    format!("wamid.HBgM{phone}FQIAERgU{run:08X}{seq:012X}A")
}

/// Meta's outbound statuses the harness sends, in funnel order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    Sent = 1,
    Delivered = 2,
    Read = 3,
}

impl Status {
    pub const ALL: [Status; 3] = [Status::Sent, Status::Delivered, Status::Read];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Sent => "sent",
            Status::Delivered => "delivered",
            Status::Read => "read",
        }
    }
}

/// One message of the generated traffic.
#[derive(Clone, Debug)]
pub struct Message {
    pub id: String,
    pub phone: String,
    pub template: String,
    pub category: &'static str,
    /// Send time, unix milliseconds.
    pub sent_at_ms: i64,
}

/// One status of one message inside a webhook.
#[derive(Clone, Copy, Debug)]
pub struct StatusRef {
    pub message: usize,
    pub status: Status,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// `sha256=<hex>` of the body under the app secret, as Meta sends `X-Hub-Signature-256`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn status_json(m: &Message, s: Status) -> Value {
    // Meta timestamps are seconds: sent a second after the send call, delivered two
    // seconds later, read half a minute after that.
    let offset = match s {
        Status::Sent => 1,
        Status::Delivered => 3,
        Status::Read => 33,
    };
    let mut v = json!({
        "id": m.id,
        "status": s.as_str(),
        "timestamp": (m.sent_at_ms / 1000 + offset).to_string(),
        "recipient_id": m.phone,
    });
    if s != Status::Read {
        // Meta sends pricing on `sent` and on the billing event (`delivered`).
        let category = m.category;
        v["pricing"] = json!({"billable": category != "service", "pricing_model": "PMP",
            "type": if category == "service" { "free_customer_service" } else { "regular" },
            "category": category});
        v["conversation"] = json!({"id": format!("{:032x}", m.sent_at_ms as u64 ^ 0x5f0c_2d9b),
            "origin": {"type": category}});
    }
    v
}

/// A signed Meta webhook carrying `statuses` (one entry, one change, like Meta's batches
/// for one phone number id). Returns the body and its `X-Hub-Signature-256`.
pub fn meta_webhook(
    secret: &[u8],
    messages: &[Message],
    statuses: &[StatusRef],
) -> (Bytes, String) {
    let list: Vec<Value> = statuses
        .iter()
        .map(|s| status_json(&messages[s.message], s.status))
        .collect();
    let body = json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "104455667788990", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550100123", "phone_number_id": "110200340050060"},
            "statuses": list
        }}]}]
    });
    let bytes = serde_json::to_vec(&body).expect("JSON encodes");
    let sig = sign(secret, &bytes);
    (Bytes::from(bytes), sig)
}

/// Placeholder in a send hook body replaced by the reservation id check-send returned.
pub const RESERVATION_PLACEHOLDER: &str = "@@RESERVATION@@";

fn rfc3339(ms: i64) -> String {
    // Civil-from-days (Howard Hinnant), so the generator needs no date crate.
    let secs = ms.div_euclid(1000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        ms.rem_euclid(1000)
    )
}

fn hook_json(m: &Message, with_reservation: bool) -> Value {
    let mut v = json!({
        "message_id": m.id, "phone": format!("+{}", m.phone), "provider": "meta",
        "channel": "whatsapp", "is_template": true, "template_name": m.template,
        "template_category": m.category, "sent_at": rfc3339(m.sent_at_ms)
    });
    if with_reservation {
        v["reservation_id"] = Value::String(RESERVATION_PLACEHOLDER.into());
    }
    v
}

/// `POST /v1/events/sent` body for one message (optionally awaiting a reservation id).
pub fn send_hook(m: &Message, with_reservation: bool) -> Bytes {
    Bytes::from(serde_json::to_vec(&hook_json(m, with_reservation)).expect("JSON encodes"))
}

/// `POST /v1/events/sent` body reporting many messages at once (an array).
pub fn send_hooks(messages: &[&Message]) -> Bytes {
    let list: Vec<Value> = messages.iter().map(|m| hook_json(m, false)).collect();
    Bytes::from(serde_json::to_vec(&list).expect("JSON encodes"))
}

/// `POST /v1/check-send` body.
pub fn check_send(phone: &str, template: &str, category: &str, reserve: bool) -> Bytes {
    Bytes::from(
        serde_json::to_vec(&json!({"phone": phone, "is_template": true,
            "template_name": template, "template_category": category, "reserve": reserve}))
        .expect("JSON encodes"),
    )
}

/// Builds `n` messages: phones from a pool of `phones` numbers (or a fresh one each when
/// `phones == 0`), templates Zipf-spread over `templates`.
pub fn messages(
    rng: &mut Rng,
    run: u64,
    first_seq: u64,
    n: usize,
    templates: &[Template],
    phone_pool: &[String],
) -> Vec<Message> {
    let weights = zipf(templates.len());
    let base = now_ms();
    (0..n)
        .map(|i| {
            let phone = if phone_pool.is_empty() {
                phone(rng)
            } else {
                phone_pool[rng.below(phone_pool.len() as u64) as usize].clone()
            };
            let t = &templates[rng.weighted(&weights)];
            let seq = first_seq + i as u64;
            Message {
                id: message_id(run, seq, &phone),
                phone,
                template: t.name.clone(),
                category: t.category,
                sent_at_ms: base + i as i64,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_758_621_600_123), "2025-09-23T10:00:00.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn signature_is_hmac_sha256_hex_of_the_body() {
        // RFC 4231 test case 2.
        let sig = sign(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn phones_are_digits_of_plausible_length() {
        let mut r = Rng::new(1);
        for _ in 0..1000 {
            let p = phone(&mut r);
            assert!(p.bytes().all(|b| b.is_ascii_digit()), "{p}");
            assert!((11..=14).contains(&p.len()), "{p}");
        }
    }
}
