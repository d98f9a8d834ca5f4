//! Request helpers for the `/v1` pre-send, query and config APIs.

use serde_json::{json, Value};

use crate::helpers::{meta_inbound, TestApp};

pub async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    let resp = app.get(path).await;
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

pub async fn put(app: &TestApp, path: &str, body: &Value) -> (u16, Value) {
    let resp = app
        .client
        .put(app.url(path))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

pub async fn delete(app: &TestApp, path: &str) -> (u16, Value) {
    let resp = app.client.delete(app.url(path)).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

pub async fn post(app: &TestApp, path: &str, body: &Value) -> (u16, Value) {
    let resp = app.post_json(path, body).await;
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// `POST /v1/check-send`, expecting 200.
pub async fn check(app: &TestApp, body: Value) -> Value {
    let (status, reply) = post(app, "/v1/check-send", &body).await;
    assert_eq!(status, 200, "check-send {body}: {reply}");
    reply
}

/// `POST /v1/check-send` for every body at once; the replies in the bodies' order.
pub async fn check_all(app: &TestApp, bodies: Vec<Value>) -> Vec<Value> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, body) in bodies.into_iter().enumerate() {
        let (client, url) = (app.client.clone(), app.url("/v1/check-send"));
        tasks.spawn(async move {
            let resp = client.post(url).json(&body).send().await.unwrap();
            assert_eq!(resp.status(), 200, "check-send {body}");
            (i, resp.json::<Value>().await.unwrap())
        });
    }
    let mut replies = tasks.join_all().await;
    replies.sort_by_key(|(i, _)| *i);
    replies.into_iter().map(|(_, r)| r).collect()
}

pub fn template(phone: &str, category: &str) -> Value {
    json!({"phone": phone, "is_template": true, "template_name": "t", "template_category": category})
}

pub fn reserve(phone: &str) -> Value {
    json!({"phone": phone, "is_template": true, "template_name": "t",
           "template_category": "utility", "reserve": true})
}

pub fn free_form(phone: &str) -> Value {
    json!({"phone": phone, "is_template": false})
}

/// An inbound user message from `phone` at the app's current time (whole seconds).
pub async fn inbound_now(app: &TestApp, id: &str, phone: &str) {
    let resp = app
        .post_meta(&meta_inbound(id, phone, app.now_ms() / 1000))
        .await;
    assert_eq!(resp.status(), 200);
}

/// A send hook, expecting it accepted.
pub async fn hook(app: &TestApp, body: Value) {
    let (status, reply) = post(app, "/v1/events/sent", &body).await;
    assert_eq!(status, 202, "send hook {body}: {reply}");
}

/// `PUT /v1/config`, expecting 200.
pub async fn configure(app: &TestApp, patch: Value) -> Value {
    let (status, reply) = put(app, "/v1/config", &patch).await;
    assert_eq!(status, 200, "PUT /v1/config {patch}: {reply}");
    reply
}

/// The field a 422 names (the message starts with it).
pub fn field_of(reply: &Value) -> String {
    assert_eq!(reply["error"]["code"], "invalid_field", "{reply}");
    let msg = reply["error"]["message"].as_str().unwrap();
    msg.split(':').next().unwrap().to_owned()
}

pub fn approx(a: &Value, b: f64) -> bool {
    (a.as_f64().unwrap_or(f64::NAN) - b).abs() < 1e-9
}
