//! `/openapi.json`: the OpenAPI 3 document, assembled from the handlers' own
//! `#[utoipa::path]` annotations by [`crate::http::routes`] — the same call that builds
//! the router — plus what no single handler knows: the API-key security scheme on
//! `/v1/*` and the error envelope.

use std::sync::OnceLock;

use serde::Serialize;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::OpenApi as Document;
use utoipa::{OpenApi, ToSchema};

/// `Authorization: Bearer <key>`.
pub const BEARER: &str = "bearer_api_key";
/// `X-API-Key: <key>`.
pub const HEADER: &str = "header_api_key";

/// The error envelope of every non-2xx JSON reply (CONTRACT §3).
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// snake_case, e.g. `invalid_field`, `unauthorized`, `not_found`.
    #[schema(example = "invalid_field")]
    pub code: String,
    /// A human sentence; for 422 it starts with the field's name.
    #[schema(example = "phone: not a phone number")]
    pub message: String,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "messaging-exporter",
        description = "WhatsApp/SMS webhooks and a bot's send hooks in, Prometheus metrics and a pre-send API out."
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    tags(
        (name = "operations", description = "Metrics, health, this document"),
        (name = "webhooks", description = "Provider webhooks (Meta, Twilio)"),
        (name = "events", description = "The bot's send hooks and AI reports"),
        (name = "pre-send", description = "Window, cooldown and cost before a send; reservations"),
        (name = "queries", description = "Sessions, costs, errors, overview"),
        (name = "config", description = "Settings and rate card"),
    )
)]
struct Base;

/// The document's skeleton: info, tags and shared schemas.
pub fn base() -> Document {
    Base::openapi()
}

fn operations_mut(doc: &mut Document) -> impl Iterator<Item = &mut Operation> {
    doc.paths.paths.values_mut().flat_map(|item| {
        [
            item.get.as_mut(),
            item.put.as_mut(),
            item.post.as_mut(),
            item.delete.as_mut(),
            item.options.as_mut(),
            item.head.as_mut(),
            item.patch.as_mut(),
            item.trace.as_mut(),
        ]
        .into_iter()
        .flatten()
    })
}

/// Marks every operation of `doc` as needing the API key, either way of presenting it.
/// Called on exactly the routes the auth middleware wraps.
pub fn require_api_key(doc: &mut Document) {
    for op in operations_mut(doc) {
        op.security = Some(vec![
            SecurityRequirement::new(BEARER, Vec::<String>::new()),
            SecurityRequirement::new(HEADER, Vec::<String>::new()),
        ]);
    }
}

/// Adds the security schemes and writes axum's catch-all `{*rest}` as OpenAPI's `{rest}`.
pub fn finish(mut doc: Document) -> Document {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "API_KEY as a bearer token; required when API_KEY is set",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        HEADER,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-API-Key",
            "API_KEY in a header; required when API_KEY is set",
        ))),
    );
    let paths = std::mem::take(&mut doc.paths.paths);
    doc.paths.paths = paths
        .into_iter()
        .map(|(path, item)| (path.replace("{*", "{"), item))
        .collect();
    doc
}

/// The document as served, built once.
pub fn json() -> String {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        crate::http::routes()
            .doc
            .to_pretty_json()
            .expect("the OpenAPI document serialises")
    })
    .clone()
}
