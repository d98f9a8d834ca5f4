//! A stand-in for Twilio's Messages API, so that the live stack's exporter counts
//! `messaging_billed_cost_total` and the estimate-to-bill rule and panels have data.

use axum::extract::Path;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

pub const ACCOUNT_SID: &str = "AC703f069b4f94388bc65eefc880b85f64";
pub const AUTH_TOKEN: &str = "monitoring-test-twilio-token";
/// The base URL the exporter is told Twilio reaches it at (signatures are checked for it).
pub const PUBLIC_URL: &str = "https://hooks.example.com";

/// Every message billed a little more than the SMS card's default 0.0079 USD.
async fn message(Path((_account, file)): Path<(String, String)>) -> Json<Value> {
    let sid = file.trim_end_matches(".json");
    Json(
        json!({"sid": sid, "account_sid": ACCOUNT_SID, "status": "delivered",
                "num_segments": "1", "price": "-0.00830", "price_unit": "USD"}),
    )
}

/// Serves on loopback; returns the base URL.
pub async fn start() -> String {
    let app = Router::new().route(
        "/2010-04-01/Accounts/{account}/Messages/{file}",
        get(message),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.expect("Twilio stand-in") });
    format!("http://{addr}")
}
