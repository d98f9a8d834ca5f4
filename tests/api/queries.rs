//! The query APIs against a known set of webhooks and send hooks, with exact numbers.

use messaging_exporter::clock::rfc3339;
use serde_json::{json, Value};

use crate::helpers::{
    fixture, meta_inbound, meta_status, template_hook, Backend, TestApp, TestDb, T0_MS,
};
use crate::on_both_backends;
use crate::v1::{approx, field_of, get, hook};

const A: &str = "919876543210";
const B: &str = "919812345678";
const C: &str = "919811111111";
const D: &str = "919822222222";
const E: &str = "919833333333";
const FAILED_ID: &str = "wamid.HBgMOTE5ODQ1MDAxMTIyFQIAERgUNDAxNTAzMzgxNkFEQkY5RENCREIA";
const DAY_S: i64 = 86_400;

/// now = T0 + 10 000 s = 2025-09-23T12:46:40Z. Seeds:
/// - inbound: A at now−1 h, C at now−2 h (both windows open), D at now−25 h, E at now−10 d;
/// - m1 utility to A (inside its window): sent, delivered at 12:37:00, read → 0.35;
/// - m2 marketing to B (no window): delivered at now−1 d (2025-09-22) → 0.75;
/// - m3 utility to B whose send call failed (error 131026) at now−100 s;
/// - m4 the fixture's failed message (131047 with details) at now−2 800 s.
async fn seed(app: &TestApp) -> i64 {
    let n = app.now_ms() / 1000;
    for (id, phone, at) in [
        ("in.a", A, n - 3_600),
        ("in.c", C, n - 7_200),
        ("in.d", D, n - 25 * 3_600),
        ("in.e", E, n - 10 * DAY_S),
    ] {
        assert_eq!(
            app.post_meta(&meta_inbound(id, phone, at)).await.status(),
            200
        );
    }
    hook(
        app,
        template_hook("m1", A, "order_update", "utility", (n - 600) * 1000),
    )
    .await;
    for (status, at) in [("sent", n - 590), ("delivered", n - 580), ("read", n - 500)] {
        assert_eq!(
            app.post_meta(&meta_status("m1", status, at, A))
                .await
                .status(),
            200
        );
    }
    hook(
        app,
        template_hook(
            "m2",
            B,
            "spring_sale",
            "marketing",
            (n - DAY_S - 600) * 1000,
        ),
    )
    .await;
    assert_eq!(
        app.post_meta(&meta_status("m2", "delivered", n - DAY_S, B))
            .await
            .status(),
        200
    );
    let mut failed = template_hook("m3", B, "reminder", "utility", (n - 100) * 1000);
    failed["error"] = json!({"code": 131026, "title": "Message undeliverable"});
    hook(app, failed).await;
    hook(
        app,
        template_hook(
            FAILED_ID,
            "919845001122",
            "reminder",
            "utility",
            T0_MS + 7_190_000,
        ),
    )
    .await;
    let resp = app
        .post_meta(&fixture("meta/status_failed_131047.json"))
        .await;
    assert_eq!(resp.status(), 200);
    n * 1000
}

async fn sessions_list_open_windows_soonest_expiry_first(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let now = seed(&app).await;

    let (status, page) = get(&app, "/v1/sessions").await;
    assert_eq!(status, 200);
    assert_eq!(
        page,
        json!({
            "sessions": [
                {"phone": C, "is_active": true,
                 "window_started_at": rfc3339(now - 7_200_000),
                 "last_inbound_at": rfc3339(now - 7_200_000),
                 "expires_at": rfc3339(now - 7_200_000 + 86_400_000),
                 "remaining_minutes": 22 * 60, "user_messages": 1, "business_messages": 0},
                {"phone": A, "is_active": true,
                 "window_started_at": rfc3339(now - 3_600_000),
                 "last_inbound_at": rfc3339(now - 3_600_000),
                 "expires_at": rfc3339(now - 3_600_000 + 86_400_000),
                 "remaining_minutes": 23 * 60, "user_messages": 1, "business_messages": 1},
            ],
            "pagination": {"page": 1, "limit": 50, "total": 2, "pages": 1, "has_more": false}
        })
    );
    let (_, second) = get(&app, "/v1/sessions?page=2&limit=1").await;
    assert_eq!(second["sessions"][0]["phone"], A);
    assert_eq!(
        second["pagination"],
        json!({"page": 2, "limit": 1, "total": 2, "pages": 2, "has_more": false})
    );
    let (_, first) = get(&app, "/v1/sessions?limit=1").await;
    assert_eq!(first["sessions"][0]["phone"], C);
    assert_eq!(first["pagination"]["has_more"], true);

    let (status, closed) = get(&app, &format!("/v1/sessions/+{D}")).await;
    assert_eq!(status, 200);
    assert_eq!(closed["is_active"], false);
    assert_eq!(closed["expires_at"], Value::Null);
    assert_eq!(closed["remaining_minutes"], 0);
    assert_eq!(closed["user_messages"], 1);
    let (_, open) = get(&app, &format!("/v1/sessions/{A}")).await;
    assert_eq!(open, page["sessions"][1]);
    let (status, never) = get(&app, "/v1/sessions/14155550100").await;
    assert_eq!(status, 200);
    assert_eq!(
        never,
        json!({"phone": "14155550100", "is_active": false, "window_started_at": null,
               "last_inbound_at": null, "expires_at": null, "remaining_minutes": 0,
               "user_messages": 0, "business_messages": 0})
    );
}

fn line(key: &str, messages: i64, cost: f64) -> Value {
    json!({"key": key, "messages": messages, "cost": cost})
}

async fn costs_by_category_template_and_day(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    seed(&app).await;

    let (status, both) = get(&app, "/v1/costs?from=2025-09-22&to=2025-09-23").await;
    assert_eq!(status, 200, "{both}");
    assert_eq!(both["from"], "2025-09-22T00:00:00.000Z");
    assert_eq!(both["to"], "2025-09-24T00:00:00.000Z");
    assert_eq!(both["currency"], "INR");
    assert_eq!(both["messages"], 2);
    assert!(approx(&both["total_cost"], 1.1), "{both}");
    assert_eq!(
        both["by_category"],
        json!([line("marketing", 1, 0.75), line("utility", 1, 0.35)])
    );
    assert_eq!(
        both["by_template"],
        json!([line("order_update", 1, 0.35), line("spring_sale", 1, 0.75)])
    );
    assert_eq!(
        both["by_day"],
        json!([line("2025-09-22", 1, 0.75), line("2025-09-23", 1, 0.35)])
    );
    let (_, default_range) = get(&app, "/v1/costs").await;
    assert_eq!(default_range["by_day"], both["by_day"]);

    let (_, one_day) = get(&app, "/v1/costs?from=2025-09-23&to=2025-09-23").await;
    assert_eq!(
        one_day["by_template"],
        json!([line("order_update", 1, 0.35)])
    );
    // RFC 3339 bounds: `to` is exclusive. m1 was delivered at 12:37:00.
    let (_, exact) = get(
        &app,
        "/v1/costs?from=2025-09-23T12:37:00Z&to=2025-09-23T14:37:01%2B02:00",
    )
    .await;
    assert_eq!(exact["messages"], 1, "{exact}");
    let (_, before) = get(
        &app,
        "/v1/costs?from=2025-09-23T12:00:00Z&to=2025-09-23T12:37:00Z",
    )
    .await;
    assert_eq!(before["messages"], 0);
    assert_eq!(before["by_day"], json!([]));

    for (query, field) in [
        ("from=2025-09-24&to=2025-09-23", "from"),
        ("from=yesterday", "from"),
        ("to=2025-02-30", "to"),
        ("from=2025-09-23T25:00:00Z", "from"),
    ] {
        let (status, reply) = get(&app, &format!("/v1/costs?{query}")).await;
        assert_eq!(status, 422, "{query}: {reply}");
        assert_eq!(field_of(&reply), field, "{query}");
    }

    let (status, b) = get(&app, &format!("/v1/costs/users/whatsapp:+{B}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        b,
        json!({"phone": B, "currency": "INR", "total_cost": 0.75, "outbound_messages": 2,
               "inbound_messages": 0, "sent": 1, "delivered": 1, "read": 0, "failed": 1,
               "charged_messages": 1, "by_category": [line("marketing", 1, 0.75)]})
    );
    let (_, a) = get(&app, &format!("/v1/costs/users/{A}")).await;
    assert_eq!(
        (
            &a["outbound_messages"],
            &a["inbound_messages"],
            &a["read"],
            &a["total_cost"]
        ),
        (&json!(1), &json!(1), &json!(1), &json!(0.35))
    );
    let (status, bad) = get(&app, "/v1/costs/users/12ab").await;
    assert_eq!(status, 422);
    assert_eq!(field_of(&bad), "phone");
}

async fn errors_newest_first_with_details(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let now = seed(&app).await;

    let (status, page) = get(&app, "/v1/errors").await;
    assert_eq!(status, 200);
    assert_eq!(
        page,
        json!({
            "errors": [
                {"provider": "meta", "channel": "whatsapp", "message_id": "m3", "phone": B,
                 "template": "reminder", "category": "utility",
                 "failed_at": rfc3339(now - 100_000), "code": "131026",
                 "title": "Message undeliverable", "message": null, "details": null},
                {"provider": "meta", "channel": "whatsapp", "message_id": FAILED_ID,
                 "phone": "919845001122", "template": "reminder", "category": "utility",
                 "failed_at": "2025-09-23T12:00:00.000Z", "code": "131047",
                 "title": "Re-engagement message", "message": "Re-engagement message",
                 "details": "Message failed to send because more than 24 hours have passed since the customer last replied to this number."},
            ],
            "pagination": {"page": 1, "limit": 50, "total": 2, "pages": 1, "has_more": false}
        })
    );
    let (_, second) = get(&app, "/v1/errors?limit=1&page=2").await;
    assert_eq!(second["errors"][0]["message_id"], FAILED_ID);
    for (query, field) in [
        ("limit=501", "limit"),
        ("limit=0", "limit"),
        ("page=0", "page"),
    ] {
        let (status, reply) = get(&app, &format!("/v1/errors?{query}")).await;
        assert_eq!(status, 422, "{query}");
        assert_eq!(field_of(&reply), field);
    }
    let (status, _) = get(&app, "/v1/sessions?limit=500").await;
    assert_eq!(status, 200, "the cap itself is allowed");
    let (status, reply) = get(&app, "/v1/sessions?limit=501").await;
    assert_eq!((status, field_of(&reply)), (422, "limit".to_owned()));
}

async fn overview_totals_and_rates(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let now = seed(&app).await;

    let (status, o) = get(&app, "/v1/overview").await;
    assert_eq!(status, 200);
    assert!(approx(&o["total_cost"], 1.1), "{o}");
    let mut o = o;
    o["total_cost"] = json!(1.1);
    assert_eq!(
        o,
        json!({
            "generated_at": rfc3339(now),
            "messages": {
                "total": 8, "last_7_days": 7, "last_30_days": 8,
                "by_direction": {"outbound": 4, "inbound": 4},
                "by_status": {"accepted": 3, "sent": 2, "delivered": 2, "read": 1, "failed": 2}
            },
            "rates": {"delivery_rate": 100.0, "read_rate": 50.0, "failure_rate": 50.0},
            "active_sessions": 2,
            "total_cost": 1.1,
            "currency": "INR"
        })
    );
}

/// Stored text goes to the database inside JSON rows and comes back as it was sent, even
/// where JSON must escape it, or where it looks like JSON itself.
async fn stored_text_comes_back_as_sent(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let title = "say \"hi\" \\ C:\\tmp, ünï 🎉\n{\"code\": 1, \"title\": [\"x\"]} (a,b) NULL ''\t";
    let mut failed = template_hook("m.text", B, "rémïnder \"q\"", "utility", T0_MS);
    failed["error"] = json!({"code": 131026, "title": title});
    hook(&app, failed).await;
    // A status later rewrites the stored row: the text must survive the rewrite too.
    let at = T0_MS / 1000 + 5;
    assert_eq!(
        app.post_meta(&meta_status("m.text", "failed", at, B))
            .await
            .status(),
        200
    );
    let (status, page) = get(&app, "/v1/errors").await;
    assert_eq!(status, 200);
    let error = &page["errors"][0];
    assert_eq!(error["title"], title, "{page}");
    assert_eq!(error["template"], "rémïnder \"q\"", "{page}");
}

on_both_backends!(
    sessions_list_open_windows_soonest_expiry_first,
    costs_by_category_template_and_day,
    errors_newest_first_with_details,
    overview_totals_and_rates,
    stored_text_comes_back_as_sent,
);
