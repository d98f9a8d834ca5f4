//! Twilio status callbacks and incoming messages, form-encoded
//! (`reference/twilio-messaging.md` §1–§4).
//!
//! Status mapping onto the contract's set (documented in the README):
//! `sent` → sent; `delivered`, `partially_delivered` → delivered; `read` → read;
//! `undelivered`, `failed` → failed; `accepted`, `scheduled`, `queued`, `sending`,
//! `canceled`, `receiving` and anything new → ignored; `received` → inbound message.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::domain::message::MessageError;
use crate::domain::phone::Phone;
use crate::domain::status::Status;
use crate::domain::{inbound_type_label, Channel, Provider};
use crate::events::{clean_text, Event, InboundMessage, ParseError, StatusUpdate};

/// The request's form parameters, in the order received.
pub type Params = Vec<(String, String)>;

/// Decodes a form body. Twilio bodies are ASCII; anything that is not UTF-8 is malformed.
pub fn parse_form(body: &[u8]) -> Result<Params, ParseError> {
    std::str::from_utf8(body)
        .map_err(|_| ParseError::Malformed("form body is not valid UTF-8".into()))?;
    let params: Params = form_urlencoded::parse(body).into_owned().collect();
    if params
        .iter()
        .any(|(k, v)| k.contains('\u{FFFD}') || v.contains('\u{FFFD}'))
    {
        return Err(ParseError::Malformed(
            "form value is not valid percent-encoded UTF-8".into(),
        ));
    }
    Ok(params)
}

/// `Base64(HMAC-SHA1(auth token, url + each name+value sorted by name))`.
pub fn sign(auth_token: &[u8], url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token).expect("HMAC accepts any key length");
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks `X-Twilio-Signature` against `url`, also trying the URL with its default port
/// added or removed (Twilio is inconsistent about `:443`). Constant-time per candidate.
pub fn verify_signature(
    auth_token: &[u8],
    url: &str,
    params: &[(String, String)],
    header: Option<&str>,
) -> bool {
    let Some(header) = header else { return false };
    url_variants(url).iter().any(|u| {
        super::constant_time_eq(
            sign(auth_token, u, params).as_bytes(),
            header.trim().as_bytes(),
        )
    })
}

fn url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_owned()];
    for (scheme, port) in [("https://", ":443"), ("http://", ":80")] {
        let Some(rest) = url.strip_prefix(scheme) else {
            continue;
        };
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        match host.strip_suffix(port) {
            Some(bare) => out.push(format!("{scheme}{bare}{path}")),
            None if !host.contains(':') => out.push(format!("{scheme}{host}{port}{path}")),
            None => {}
        }
    }
    out
}

fn get<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

fn status_of(raw: &str) -> Option<Status> {
    match raw {
        "sent" => Some(Status::Sent),
        "delivered" | "partially_delivered" => Some(Status::Delivered),
        "read" => Some(Status::Read),
        "undelivered" | "failed" => Some(Status::Failed),
        _ => None,
    }
}

fn channel_of(params: &Params) -> Channel {
    let whatsapp = get(params, "ChannelPrefix") == Some("whatsapp")
        || ["From", "To"]
            .iter()
            .any(|f| get(params, f).is_some_and(|v| v.starts_with("whatsapp:")));
    if whatsapp {
        Channel::Whatsapp
    } else {
        Channel::Sms
    }
}

/// Turns a callback into one event. Twilio callbacks carry no event time, so times are
/// left to the receipt time (`RawDlrDoneDate` has minute precision and no stated time
/// zone, so it is not used).
pub fn parse(params: &Params) -> Result<Event, ParseError> {
    let sid = get(params, "MessageSid")
        .or_else(|| get(params, "SmsSid"))
        .ok_or_else(|| ParseError::invalid("MessageSid", "is required"))?;
    if sid.len() > 64 || !sid.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ParseError::invalid(
            "MessageSid",
            "must be a Twilio SID (letters and digits)",
        ));
    }
    let channel = channel_of(params);
    let status = get(params, "MessageStatus").or_else(|| get(params, "SmsStatus"));
    let inbound = match status {
        Some("received") => true,
        Some(_) => false,
        None if get(params, "Body").is_some() || get(params, "NumMedia").is_some() => true,
        None => {
            return Err(ParseError::invalid(
                "MessageStatus",
                "is required on a status callback",
            ))
        }
    };
    if inbound {
        let kind = match get(params, "MessageType") {
            Some(t) => inbound_type_label(t),
            None if get(params, "NumMedia").is_some_and(|n| n != "0") => "media",
            None => "text",
        };
        return Ok(Event::Inbound(InboundMessage {
            provider: Provider::Twilio,
            channel,
            message_id: sid.to_owned(),
            phone: get(params, "From").and_then(|f| Phone::parse(f).ok()),
            kind,
            at_ms: None,
            segments: segments(params),
        }));
    }
    let Some(status) = status.and_then(status_of) else {
        return Ok(Event::Ignored(Provider::Twilio));
    };
    let error = get(params, "ErrorCode").map(|code| MessageError {
        code: code.chars().filter(char::is_ascii_digit).take(12).collect(),
        title: String::new(),
        message: clean_text(
            get(params, "ChannelStatusMessage")
                .or_else(|| get(params, "ErrorMessage"))
                .unwrap_or_default(),
            2048,
        ),
        details: String::new(),
    });
    if error.as_ref().is_some_and(|e| e.code.is_empty()) {
        return Err(ParseError::invalid("ErrorCode", "must be a number"));
    }
    Ok(Event::Status(StatusUpdate {
        provider: Provider::Twilio,
        channel,
        message_id: sid.to_owned(),
        phone: get(params, "To").and_then(|t| Phone::parse(t).ok()),
        status,
        at_ms: None,
        pricing: None,
        error,
        segments: segments(params),
    }))
}

/// `NumSegments`, what Twilio bills an SMS by; absent or 0 (a Messaging Service send
/// before it is counted) means not given. Read leniently, as Twilio's parameters change
/// without notice: a value that is not a plausible count is taken as not given.
fn segments(params: &Params) -> u32 {
    get(params, "NumSegments")
        .and_then(|raw| raw.trim().parse::<u32>().ok())
        .filter(|n| *n <= 1_000)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn num_segments_is_read_from_statuses_and_incoming_messages() {
        let inbound = parse(&p(&[
            ("MessageSid", "SM1"),
            ("From", "+14155550100"),
            ("Body", "hi"),
            ("NumSegments", "2"),
        ]))
        .unwrap();
        assert!(matches!(inbound, Event::Inbound(m) if m.segments == 2));
        let status = parse(&p(&[
            ("MessageSid", "SM1"),
            ("MessageStatus", "sent"),
            ("NumSegments", "3"),
        ]))
        .unwrap();
        assert!(matches!(status, Event::Status(s) if s.segments == 3));
        let bad = parse(&p(&[
            ("MessageSid", "SM1"),
            ("MessageStatus", "sent"),
            ("NumSegments", "x"),
        ]));
        assert!(matches!(bad.unwrap(), Event::Status(s) if s.segments == 0));
    }

    #[test]
    fn reproduces_twilios_published_example_signature() {
        let params = p(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]);
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(sign(b"12345", url, &params), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
        assert!(verify_signature(
            b"12345",
            url,
            &params,
            Some("0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
        ));
        assert!(verify_signature(
            b"12345",
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            &params,
            Some("0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
        ));
        assert!(!verify_signature(
            b"12346",
            url,
            &params,
            Some("0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
        ));
        assert!(!verify_signature(b"12345", url, &params, None));
    }

    #[test]
    fn verifies_the_documented_signatures_of_the_fixtures() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/twilio");
        for (file, url, header) in [
            (
                "status_delivered.txt",
                "https://hooks.example.com/twilio/status",
                "qpbgCem62vhk2JN7gA+8CX27/MQ=",
            ),
            (
                "status_read_whatsapp.txt",
                "https://hooks.example.com/twilio/status",
                "QbYQUIXZZ8Lue3NZ1/KoUr3q5zI=",
            ),
            (
                "inbound_sms.txt",
                "https://hooks.example.com/twilio/inbound",
                "5qMr0nlKLL6ziPEt6O2LClRzFYI=",
            ),
        ] {
            let body = std::fs::read(dir.join(file)).expect("shared/fixtures beside the checkout");
            let params = parse_form(&body).unwrap();
            assert_eq!(sign(b"fixture-auth-token", url, &params), header, "{file}");
        }
    }

    #[test]
    fn maps_statuses_and_ignores_intermediate_ones() {
        let ev = |status: &str| {
            parse(&p(&[
                ("MessageSid", "SM1"),
                ("MessageStatus", status),
                ("To", "+15550100166"),
            ]))
            .unwrap()
        };
        assert!(matches!(ev("undelivered"), Event::Status(s) if s.status == Status::Failed));
        assert!(
            matches!(ev("partially_delivered"), Event::Status(s) if s.status == Status::Delivered)
        );
        assert_eq!(ev("queued"), Event::Ignored(Provider::Twilio));
        assert_eq!(ev("canceled"), Event::Ignored(Provider::Twilio));
    }

    #[test]
    fn missing_sid_is_invalid_and_bad_utf8_is_malformed() {
        assert_eq!(
            parse(&p(&[("MessageStatus", "sent")])),
            Err(ParseError::invalid("MessageSid", "is required"))
        );
        assert!(matches!(
            parse_form(b"Body=%FF"),
            Err(ParseError::Malformed(_))
        ));
        assert!(matches!(
            parse_form(&[b'A', b'=', 0xff]),
            Err(ParseError::Malformed(_))
        ));
    }
}
