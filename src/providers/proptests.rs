//! Property tests of the adapters over arbitrary and mutated input: they return an error
//! or events, never panic, and signature checks never accept what was not signed.

use proptest::prelude::*;

use super::{meta, twilio};

const FIXTURES: [&str; 3] = [
    r#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"statuses":[{"id":"wamid.1","status":"read","timestamp":"1758625810","recipient_id":"919812345678","pricing":{"type":"regular","category":"marketing"}}]}}]}]}"#,
    r#"{"entry":[{"id":"1","changes":[{"field":"messages","value":{"messages":[{"from":"919876543210","id":"wamid.2","timestamp":"1758621600","type":"text","text":{"body":"hi"}}],"errors":[{"code":130429,"title":"Rate limit hit"}]}}]}]}"#,
    r#"{"entry":[{"id":"1","time":1758622500,"changes":[{"field":"message_template_status_update","value":{"event":"APPROVED"}}]}]}"#,
];

fn cases() -> ProptestConfig {
    // PROPTEST_CASES raises it for a longer hunt; the suite runs the default.
    ProptestConfig {
        cases: 2_000,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn meta_parse_never_panics_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = meta::parse(&body);
    }

    #[test]
    fn meta_parse_never_panics_on_mutated_payloads(
        which in 0..FIXTURES.len(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut body = FIXTURES[which].as_bytes().to_vec();
        for (at, byte) in edits {
            let i = at.index(body.len());
            body[i] = byte;
        }
        let _ = meta::parse(&body);
    }

    #[test]
    fn meta_parse_takes_any_json_value_in_any_field(value in any_json(), field in "[a-z_]{1,12}") {
        let body = format!(r#"{{"entry":[{{"changes":[{{"field":"messages","value":{{"statuses":[{{"id":"w","status":"sent","timestamp":"1758621600","{field}":{value}}}]}}}}]}}]}}"#);
        let _ = meta::parse(body.as_bytes());
    }

    #[test]
    fn twilio_parse_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(params) = twilio::parse_form(&body) {
            let _ = twilio::parse(&params);
        }
    }

    #[test]
    fn twilio_parse_never_panics_on_plausible_forms(
        pairs in proptest::collection::vec(("(MessageSid|MessageStatus|SmsStatus|From|To|ErrorCode|Body|NumMedia|MessageType|ChannelPrefix)", ".{0,40}"), 0..10),
    ) {
        let params: twilio::Params = pairs.into_iter().collect();
        let _ = twilio::parse(&params);
    }

    #[test]
    fn meta_signature_rejects_any_other_body(body in proptest::collection::vec(any::<u8>(), 0..256), flip in any::<prop::sample::Index>()) {
        let header = meta::sign(b"secret", &body);
        prop_assert!(meta::verify_signature(b"secret", &body, Some(&header)));
        if !body.is_empty() {
            let mut other = body.clone();
            let i = flip.index(other.len());
            other[i] ^= 1;
            prop_assert!(!meta::verify_signature(b"secret", &other, Some(&header)));
        }
    }

    #[test]
    fn meta_signature_check_never_panics_on_any_header(header in ".{0,100}") {
        let _ = meta::verify_signature(b"secret", b"{}", Some(&header));
    }

    #[test]
    fn twilio_signature_rejects_a_changed_value(value in "[ -~]{0,30}", other in "[ -~]{0,30}") {
        let params = vec![("Body".to_owned(), value.clone())];
        let sig = twilio::sign(b"token", "https://h.example/t", &params);
        prop_assert!(twilio::verify_signature(b"token", "https://h.example/t", &params, Some(&sig)));
        if other != value {
            let changed = vec![("Body".to_owned(), other)];
            prop_assert!(!twilio::verify_signature(b"token", "https://h.example/t", &changed, Some(&sig)));
        }
    }
}

/// Arbitrary JSON values, nested a few levels.
fn any_json() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| f.to_string()),
        ".{0,20}".prop_map(|s| serde_json::to_string(&s).unwrap()),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4)
                .prop_map(|v| format!("[{}]", v.join(","))),
            proptest::collection::vec(("[a-z]{1,6}", inner), 0..4).prop_map(|kv| {
                let body: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
                format!("{{{}}}", body.join(","))
            }),
        ]
    })
}
