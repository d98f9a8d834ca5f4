//! A stand-in for the paging and ticket services: records every webhook Alertmanager
//! posts, with the path it was posted to (`/page` or `/ticket`).

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;

#[derive(Clone, Debug)]
pub struct Notification {
    pub receiver: String,
    pub body: Value,
}

#[derive(Clone, Default)]
pub struct Receiver {
    seen: Arc<Mutex<Vec<Notification>>>,
}

impl Receiver {
    /// Serves on a loopback port until the test's runtime ends; returns the base URL.
    pub async fn start(&self) -> String {
        let app = Router::new()
            .route("/{receiver}", post(record))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the test receiver");
        let addr = listener.local_addr().expect("receiver address");
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("test receiver");
        });
        format!("http://{addr}")
    }

    /// Firing alerts named `alertname` that reached `receiver`, as their label objects.
    pub fn firing(&self, receiver: &str, alertname: &str) -> Vec<Value> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|n| n.receiver == receiver)
            .flat_map(|n| n.body["alerts"].as_array().cloned().unwrap_or_default())
            .filter(|a| a["status"] == "firing" && a["labels"]["alertname"] == alertname)
            .collect()
    }

    /// Every notification body posted to `receiver`.
    pub fn bodies(&self, receiver: &str) -> Vec<Value> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|n| n.receiver == receiver)
            .map(|n| n.body.clone())
            .collect()
    }

    pub fn summary(&self) -> String {
        let seen = self.seen.lock().unwrap();
        let names: Vec<String> = seen
            .iter()
            .flat_map(|n| {
                let r = n.receiver.clone();
                n.body["alerts"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |a| format!("{}:{}:{}", r, a["labels"]["alertname"], a["status"]))
            })
            .collect();
        format!("{} notifications: {names:?}", seen.len())
    }
}

async fn record(
    State(r): State<Receiver>,
    Path(receiver): Path<String>,
    Json(body): Json<Value>,
) -> &'static str {
    r.seen.lock().unwrap().push(Notification { receiver, body });
    "ok"
}
