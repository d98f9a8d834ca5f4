//! Hostile values over HTTP (CONTRACT §6.6): prices or nulls that would break the rate
//! card, and repeated list values. Each is refused or bounded, and changes nothing else.

use serde_json::json;

use crate::helpers::{meta_status, template_hook, Backend, TestApp, TestDb};
use crate::on_both_backends;
use crate::v1::{check, configure, field_of, get, hook, put, template};

const MINUTE: i64 = 60_000;
const A: &str = "919876543210";
const B: &str = "919812345678";
const C: &str = "14155550100";

async fn hostile_prices_nulls_and_repeats_in_the_config(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let (_, before) = get(&app, "/v1/config").await;
    for (patch, field) in [
        (json!({"rates": {"marketing": f64::MAX}}), "rates.marketing"),
        (json!({"rates": {"utility": 1_000_000.5}}), "rates.utility"),
        (
            json!({"country_rates": {"1": {"utility": 1e7}}}),
            "country_rates.1.utility",
        ),
        // Removing a base price would make its category silently free.
        (json!({"rates": {"marketing": null}}), "rates.marketing"),
    ] {
        let (status, reply) = put(&app, "/v1/config", &patch).await;
        assert_eq!(status, 422, "{patch}: {reply}");
        assert_eq!(field_of(&reply), field, "{patch}");
    }
    let (_, after) = get(&app, "/v1/config").await;
    assert_eq!(after, before);
    assert_eq!(
        check(&app, template(A, "marketing")).await["cost"]["amount"],
        0.75
    );

    // Null removes one country price or a whole prefix; a list keeps each value once.
    let doc = configure(
        &app,
        json!({"country_rates": {"1": {"marketing": 0.025, "utility": 0.004}},
               "free_in_window_categories": ["utility", "service", "utility"]}),
    )
    .await;
    assert_eq!(
        doc["free_in_window_categories"],
        json!(["utility", "service"])
    );
    let doc = configure(&app, json!({"country_rates": {"1": {"utility": null}}})).await;
    assert_eq!(doc["country_rates"], json!({"1": {"marketing": 0.025}}));
    assert_eq!(
        check(&app, template(C, "utility")).await["cost"]["amount"],
        0.35,
        "utility falls back to the base price"
    );
    let doc = configure(&app, json!({"country_rates": {"1": null}})).await;
    assert_eq!(doc["country_rates"], json!({}));

    // The highest price there is, counted twice, is still a number.
    configure(&app, json!({"rates": {"marketing": 1_000_000}})).await;
    let now = app.now_ms();
    for id in ["wamid.c1", "wamid.c2"] {
        hook(&app, template_hook(id, B, "t", "marketing", now)).await;
        let delivered = meta_status(id, "delivered", now / 1000, B);
        assert_eq!(app.post_meta(&delivered).await.status(), 200);
    }
    let s = app.scrape().await;
    assert_eq!(s.sum("messaging_cost_total", &[]), 2_000_000.0);
    app.clock.advance_ms(MINUTE); // `/v1/costs` runs up to now, excluded
    let (status, costs) = get(&app, "/v1/costs").await;
    assert_eq!((status, &costs["total_cost"]), (200, &json!(2_000_000.0)));
}

on_both_backends!(hostile_prices_nulls_and_repeats_in_the_config,);
