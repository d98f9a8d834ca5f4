//! Webhook signatures, checked over the raw bytes against the providers' documented values.

use messaging_exporter::clock::ManualClock;
use messaging_exporter::providers::meta;
use secrecy::SecretString;

use crate::helpers::{config_for, fixture, Backend, TestApp, TestDb, T0_MS};

/// (fixture, X-Hub-Signature-256) from shared/fixtures/README.md, secret `fixture-app-secret`.
const META_SIGNED: [(&str, &str); 3] = [
    (
        "meta/inbound_text.json",
        "sha256=8e7bbfa1f96bfeaf0ebb7406a54943d8a85935f3459112989b044bad2ac5dc43",
    ),
    (
        "meta/batch_mixed.json",
        "sha256=43b5345511aa537841a80dcd9d3812d428c83ef36c2c27653147e45ae60ad700",
    ),
    (
        "meta/unknown_field.json",
        "sha256=2be52c8ed7172d3c4a0ca9d36a85ce5f1f951d63a7e8f4518d864dc76f33c890",
    ),
];

/// (path, fixture, X-Twilio-Signature), auth token `fixture-auth-token`, posted to
/// https://hooks.example.com/twilio/{status,inbound}.
const TWILIO_SIGNED: [(&str, &str, &str); 3] = [
    (
        "/webhooks/twilio/status",
        "twilio/status_sent.txt",
        "PrSmzvd9HESbtg+EGjV7FSv9eMg=",
    ),
    (
        "/webhooks/twilio/status",
        "twilio/status_undelivered_30007.txt",
        "VCaddoeL5sxBNRGlReQqICQ7Cg8=",
    ),
    (
        "/webhooks/twilio/inbound",
        "twilio/inbound_whatsapp.txt",
        "oIazQOoTLt6L1pUPj47ncGVNB2M=",
    ),
];

async fn signed_app(db: &TestDb) -> TestApp {
    let mut config = config_for(&db.url);
    config.meta_app_secret = Some(SecretString::from("fixture-app-secret"));
    config.twilio_auth_token = Some(SecretString::from("fixture-auth-token"));
    config.public_url = Some("https://hooks.example.com/twilio".into());
    TestApp::spawn_with(config, ManualClock::new(T0_MS + 3_600_000)).await
}

#[tokio::test]
async fn documented_meta_signatures_are_accepted_and_anything_else_refused() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = signed_app(&db).await;
    for (f, sig) in META_SIGNED {
        let body = fixture(f);
        assert_eq!(
            app.post_meta_with(&body, &[("x-hub-signature-256", sig)])
                .await
                .status(),
            200,
            "{f}"
        );
    }
    let body = fixture("meta/status_read.json");
    let good = meta::sign(b"fixture-app-secret", &body);
    let wrong_secret = meta::sign(b"another-secret", &body);
    // The same JSON re-serialised (whitespace gone) no longer matches the signature.
    let reserialised =
        serde_json::to_vec(&serde_json::from_slice::<serde_json::Value>(&body).unwrap()).unwrap();
    for (what, body, headers) in [
        ("missing", body.clone(), vec![]),
        (
            "wrong secret",
            body.clone(),
            vec![("x-hub-signature-256", wrong_secret.as_str())],
        ),
        (
            "re-serialised body",
            reserialised,
            vec![("x-hub-signature-256", good.as_str())],
        ),
        (
            "not hex",
            body.clone(),
            vec![("x-hub-signature-256", "sha256=nothex")],
        ),
    ] {
        let resp = app.post_meta_with(&body, &headers).await;
        assert_eq!(resp.status(), 401, "{what}");
        let err: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["code"], "unauthorized");
    }
    let s = app.scrape().await;
    assert_eq!(
        s.sum(
            "messaging_webhook_events_total",
            &[("provider", "meta"), ("outcome", "rejected")]
        ),
        4.0
    );
    assert_eq!(
        s.sum("messaging_outbound_messages_total", &[]),
        0.0,
        "refused webhooks count nothing"
    );
    assert_eq!(
        s.sum("messaging_inbound_messages_total", &[]),
        2.0,
        "the two signed inbound messages"
    );
}

#[tokio::test]
async fn documented_twilio_signatures_are_accepted_and_anything_else_refused() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = signed_app(&db).await;
    for (path, f, sig) in TWILIO_SIGNED {
        let resp = app
            .post_twilio(path, &fixture(f), &[("x-twilio-signature", sig)])
            .await;
        assert_eq!(resp.status(), 200, "{f}");
    }
    let (path, f, sig) = TWILIO_SIGNED[0];
    // Signed for /status, posted to /inbound: the URL is part of what is signed.
    assert_eq!(
        app.post_twilio(
            "/webhooks/twilio/inbound",
            &fixture(f),
            &[("x-twilio-signature", sig)]
        )
        .await
        .status(),
        401
    );
    assert_eq!(app.post_twilio(path, &fixture(f), &[]).await.status(), 401);
    let mut tampered = fixture(f);
    tampered.extend_from_slice(b"&Extra=1");
    assert_eq!(
        app.post_twilio(path, &tampered, &[("x-twilio-signature", sig)])
            .await
            .status(),
        401
    );
    let s = app.scrape().await;
    assert_eq!(
        s.sum(
            "messaging_webhook_events_total",
            &[("provider", "twilio"), ("outcome", "rejected")]
        ),
        3.0
    );
    assert_eq!(
        s.sum(
            "messaging_webhook_events_total",
            &[("provider", "twilio"), ("outcome", "processed")]
        ),
        3.0
    );
}
