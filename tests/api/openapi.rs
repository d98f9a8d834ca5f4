//! `/openapi.json` lists exactly the routes the router serves, and marks `/v1` as
//! needing the API key.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::config::methods;
use crate::helpers::{Backend, TestApp, TestDb};

/// CONTRACT §3's table, plus Twilio's sub-paths.
const CONTRACT_ROUTES: [(&str, &str); 20] = [
    ("GET", "/metrics"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    ("GET", "/webhooks/meta"),
    ("POST", "/webhooks/meta"),
    ("POST", "/webhooks/twilio"),
    ("POST", "/webhooks/twilio/{rest}"),
    ("POST", "/v1/events/sent"),
    ("POST", "/v1/events/ai"),
    ("POST", "/v1/check-send"),
    ("DELETE", "/v1/reservations/{id}"),
    ("GET", "/v1/sessions"),
    ("GET", "/v1/sessions/{phone}"),
    ("GET", "/v1/costs"),
    ("GET", "/v1/costs/users/{phone}"),
    ("GET", "/v1/errors"),
    ("GET", "/v1/overview"),
    ("GET", "/v1/config"),
    ("PUT", "/v1/config"),
];

fn concrete(path: &str) -> String {
    path.replace("{phone}", "919876543210")
        .replace("{id}", "rsv_unknown")
        .replace("{rest}", "status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_lists_every_route_the_router_serves() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn(&db).await;
    let resp = app.get("/openapi.json").await;
    assert_eq!(resp.status(), 200);
    let served: Value = resp.json().await.unwrap();
    assert!(served["openapi"].as_str().unwrap().starts_with("3."));

    // The document is the one the router was built from.
    let routes = messaging_exporter::http::routes();
    assert_eq!(served, serde_json::to_value(&routes.doc).unwrap());

    let documented: BTreeSet<(String, String)> = routes
        .doc
        .paths
        .paths
        .iter()
        .flat_map(|(path, item)| {
            methods(item)
                .into_iter()
                .map(move |m| (m.to_string(), path.clone()))
        })
        .collect();
    let expected: BTreeSet<(String, String)> = CONTRACT_ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, expected);

    // Each documented route is served: not the fallback's 404, not 405.
    for (method, path) in &documented {
        let resp = app
            .client
            .request(method.parse().unwrap(), app.url(&concrete(path)))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        assert_ne!(status, 405, "{method} {path}");
        assert!(
            !(status == 404 && body.contains("no such route")),
            "{method} {path} is documented but not served"
        );
    }
    // And a route that is not documented is not served.
    let resp = app.get("/v1/nothing").await;
    assert_eq!(resp.status(), 404);
}

#[test]
fn v1_operations_and_only_they_need_the_api_key() {
    let doc = serde_json::to_value(messaging_exporter::http::routes().doc).unwrap();
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer_api_key"]["scheme"], "bearer");
    assert_eq!(schemes["header_api_key"]["in"], "header");
    assert_eq!(schemes["header_api_key"]["name"], "X-API-Key");
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if op.get("responses").is_none() {
                continue; // path-level parameters, not an operation
            }
            let security = op.get("security");
            if path.starts_with("/v1/") {
                let names: BTreeSet<String> = security
                    .and_then(Value::as_array)
                    .unwrap_or_else(|| panic!("{method} {path} has no security"))
                    .iter()
                    .flat_map(|req| req.as_object().unwrap().keys().cloned())
                    .collect();
                assert_eq!(
                    names,
                    BTreeSet::from(["bearer_api_key".to_owned(), "header_api_key".to_owned()]),
                    "{method} {path}"
                );
            } else {
                assert!(security.is_none(), "{method} {path} needs no key");
            }
        }
    }
    // Request and reply schemas are described, not left opaque.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    // Every key of the pre-send reply is always present, null or not.
    let required: BTreeSet<&str> = schemas["CheckSendReply"]["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(required, BTreeSet::from(crate::helpers::CHECK_SEND_KEYS));
    for name in [
        "CheckSendRequest",
        "CheckSendReply",
        "ReservationState",
        "SessionPage",
        "CostReport",
        "PhoneCosts",
        "ErrorPage",
        "Overview",
        "ConfigDocument",
        "ErrorBody",
    ] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
}

/// The document lists what the router serves because both come from the handlers'
/// annotations (`OpenApiRouter::routes`). A plain axum registration would bypass the
/// document, so none may exist anywhere in the crate.
#[test]
fn no_route_is_registered_around_the_annotations() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![src];
    let mut files = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            files += 1;
            for plain in [".route(", ".route_service(", ".nest(", ".nest_service("] {
                assert!(
                    !text.contains(plain),
                    "{} registers a route with `{plain}`, which the OpenAPI document would miss; \
                     annotate the handler with #[utoipa::path] and use `.routes(routes!(…))`",
                    path.display()
                );
            }
        }
    }
    assert!(files > 20);
}
