//! Which URL a Twilio signature covers (CONTRACT §6.8). Twilio signs the exact URL it
//! called, which the exporter knows only through `PUBLIC_URL`: either the service's base
//! URL, or the public URL that a path-rewriting proxy maps onto `/webhooks/twilio`.

/// The exporter's route for Twilio callbacks; any sub-path of it is served too.
pub const ROUTE: &str = "/webhooks/twilio";

/// The URLs Twilio may have signed for a request to `path_and_query`: `PUBLIC_URL` as the
/// base URL plus the request's path and query, then `PUBLIC_URL` standing for [`ROUTE`]
/// plus what follows it. A trailing slash on `PUBLIC_URL` does not matter.
pub fn signed_urls(public_url: &str, path_and_query: &str) -> Vec<String> {
    let base = public_url.trim_end_matches('/');
    let mut urls = vec![format!("{base}{path_and_query}")];
    if let Some(rest) = path_and_query.strip_prefix(ROUTE) {
        urls.push(format!("{base}{rest}"));
    }
    urls
}

/// The URL forms [`signed_urls`] accepts, in words for the start-up log.
pub fn expected_urls(public_url: &str) -> String {
    let base = public_url.trim_end_matches('/');
    format!("{base}{ROUTE}[/…] (or {base}[/…] behind a proxy that rewrites the path)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_url_is_followed_by_the_requests_path_and_query() {
        assert_eq!(
            signed_urls("https://hooks.example.com", "/webhooks/twilio/status?x=1")[0],
            "https://hooks.example.com/webhooks/twilio/status?x=1"
        );
    }

    #[test]
    fn a_rewritten_path_url_is_followed_by_what_follows_the_route() {
        let urls = signed_urls(
            "https://hooks.example.com/twilio",
            "/webhooks/twilio/status?x=1",
        );
        assert_eq!(urls[1], "https://hooks.example.com/twilio/status?x=1");
        let urls = signed_urls("https://hooks.example.com/twilio", "/webhooks/twilio?x=1");
        assert_eq!(urls[1], "https://hooks.example.com/twilio?x=1");
    }

    #[test]
    fn a_trailing_slash_on_the_public_url_changes_nothing() {
        for path in ["/webhooks/twilio", "/webhooks/twilio/inbound?a=b"] {
            assert_eq!(
                signed_urls("https://hooks.example.com/", path),
                signed_urls("https://hooks.example.com", path)
            );
        }
        assert_eq!(
            expected_urls("https://hooks.example.com/"),
            "https://hooks.example.com/webhooks/twilio[/…] \
             (or https://hooks.example.com[/…] behind a proxy that rewrites the path)"
        );
    }
}
