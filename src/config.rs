//! Flags and environment (CONTRACT §2), and the start-up checks that go with them.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use secrecy::{ExposeSecret, SecretString};

mod secret_files;
pub use secret_files::SecretFiles;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Prometheus exporter and pre-send API for WhatsApp/SMS bots.
#[derive(Clone, Debug, Parser)]
#[command(name = "messaging-exporter", version, about)]
pub struct Config {
    /// HTTP address for the metrics, webhooks and API.
    #[arg(long = "listen", env = "LISTEN_ADDR", default_value = "127.0.0.1:9469")]
    pub listen: SocketAddr,

    /// `postgres://…` or `sqlite://…` (a SQLite file is created if absent). Or in a file:
    /// DATABASE_URL_FILE.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://messaging-exporter.db"
    )]
    pub database_url: String,

    /// Required on `/v1/*` (as `Authorization: Bearer <key>` or `X-API-Key`) when set. Or in
    /// a file: API_KEY_FILE.
    #[arg(long, env = "API_KEY", hide_env_values = true)]
    pub api_key: Option<SecretString>,

    /// When set, Meta webhooks must carry a valid `X-Hub-Signature-256`. Or in a file:
    /// META_APP_SECRET_FILE.
    #[arg(long, env = "META_APP_SECRET", hide_env_values = true)]
    pub meta_app_secret: Option<SecretString>,

    /// Answers Meta's subscription handshake (`GET /webhooks/meta`). Or in a file:
    /// META_VERIFY_TOKEN_FILE.
    #[arg(long, env = "META_VERIFY_TOKEN", hide_env_values = true)]
    pub meta_verify_token: Option<SecretString>,

    /// When set, Twilio webhooks must carry a valid `X-Twilio-Signature`. Or in a file:
    /// TWILIO_AUTH_TOKEN_FILE.
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub twilio_auth_token: Option<SecretString>,

    /// The service's public base URL as Twilio reaches it (e.g. `https://hooks.example.com`):
    /// a request to `/webhooks/twilio/status?x=1` is checked as signed for this URL plus
    /// `/webhooks/twilio/status?x=1`, or, behind a proxy that rewrites the path, for this URL
    /// plus `/status?x=1`.
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Per-message rows older than this many days are purged. At least 8, because Meta
    /// redelivers webhooks for up to 7 days and dedupe state must outlive that.
    #[arg(long, env = "RETENTION_DAYS", default_value_t = 90, value_parser = clap::value_parser!(u32).range(8..=3650))]
    pub retention_days: u32,

    /// Allow listening on a non-loopback address without an API key.
    #[arg(long, env = "ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Distinct values kept per bounded label (template, code, model, operation, intent,
    /// currency).
    #[arg(long, env = "MAX_LABEL_VALUES", default_value_t = 200)]
    pub max_label_values: usize,

    /// Series kept per metric family (100 to 1000000): a new label combination past it is
    /// counted with its bounded labels as `other`, since per-label limits alone still
    /// multiply (200 operations × 200 models).
    #[arg(long, env = "MAX_SERIES", default_value_t = crate::metrics::DEFAULT_MAX_SERIES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(100..=1_000_000))]
    pub max_series: usize,

    /// How long a status waits for the bot's send hook before it counts as template `unknown`.
    #[arg(long, env = "ATTRIBUTION_GRACE_SECONDS", default_value_t = 30)]
    pub attribution_grace_seconds: u64,

    /// Longest wait for a database connection or statement before answering 503.
    #[arg(long, env = "DB_TIMEOUT_MS", default_value_t = 5000)]
    pub db_timeout_ms: u64,

    /// A client must send its request headers within this many milliseconds.
    #[arg(long, env = "HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,

    /// A request must be read and answered within this many milliseconds (else 408).
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,

    /// Requests handled at once; more are answered 503 with `Retry-After` at once.
    #[arg(long, env = "MAX_CONCURRENT_REQUESTS", default_value_t = 1024)]
    pub max_concurrent_requests: usize,

    /// Transactions a large group-commit batch is cut into (by phone) and run at once, on
    /// Postgres (1 to 64). SQLite always uses one.
    #[arg(long, env = "DB_WRITERS", default_value_t = crate::ledger::DEFAULT_BATCH_PARTS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    pub db_writers: usize,

    /// Database connections per process.
    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// Messages of each provider this exporter committed lately that it keeps (about 1 KiB
    /// each), and four times as many sessions, so that a batch finding all its rows there
    /// skips its read; 0 keeps none.
    #[arg(long, env = "KEPT_ROWS", default_value_t = 8_192,
          value_parser = clap::value_parser!(u32).range(0..=1_048_576))]
    pub kept_rows: u32,

    /// Relay every signed Meta webhook to this URL (the bot's webhook endpoint), as
    /// received: same body, `Content-Type` and `X-Hub-Signature-256` (CONTRACT §7).
    /// Needs META_APP_SECRET.
    #[arg(long, env = "RELAY_META_URL")]
    pub relay_meta_url: Option<String>,

    /// Relay every signed Twilio webhook to this URL, with the sub-path and query that
    /// followed `/webhooks/twilio` appended, re-signed for it with TWILIO_AUTH_TOKEN.
    #[arg(long, env = "RELAY_TWILIO_URL")]
    pub relay_twilio_url: Option<String>,

    /// One relay delivery attempt's limit, in milliseconds; past it the attempt counts as
    /// failed and is retried.
    #[arg(long, env = "RELAY_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub relay_timeout_ms: u64,

    /// A webhook not relayed within this many hours of its receipt is dropped (counted
    /// `expired`); a byte-identical body within it is not relayed again. Meta itself
    /// retries for 7 days.
    #[arg(long, env = "RELAY_MAX_AGE_HOURS", default_value_t = 168,
          value_parser = clap::value_parser!(u32).range(1..=8760))]
    pub relay_max_age_hours: u32,

    /// With TWILIO_AUTH_TOKEN: each Twilio message with a final status is looked up once
    /// in Twilio's Messages API and its billed price counted in
    /// `messaging_billed_cost_total` (CONTRACT §9).
    #[arg(long, env = "TWILIO_ACCOUNT_SID")]
    pub twilio_account_sid: Option<String>,

    /// Base URL of Twilio's REST API.
    #[arg(long, env = "TWILIO_API_URL", default_value = "https://api.twilio.com")]
    pub twilio_api_url: String,

    /// With META_WABA_ID: Meta's `pricing_analytics` is read hourly and what each day
    /// cost counted in `messaging_billed_cost_total`. A system user token with
    /// `whatsapp_business_management`. Or in a file: META_ACCESS_TOKEN_FILE.
    #[arg(long, env = "META_ACCESS_TOKEN", hide_env_values = true)]
    pub meta_access_token: Option<SecretString>,

    /// The WhatsApp Business Account whose `pricing_analytics` is read.
    #[arg(long, env = "META_WABA_ID")]
    pub meta_waba_id: Option<String>,

    /// Base URL of Meta's Graph API.
    #[arg(
        long,
        env = "META_GRAPH_URL",
        default_value = "https://graph.facebook.com"
    )]
    pub meta_graph_url: String,

    #[command(flatten)]
    pub secret_files: SecretFiles,
}

/// A configuration the exporter refuses to start with: the sentence saying how to fix
/// it, and the log format to report it in.
#[derive(Debug)]
pub struct Refusal {
    pub log_format: LogFormat,
    pub message: String,
}

impl Config {
    /// The configuration the binary runs with: flags and environment as clap parses them
    /// (it exits on a bad flag or `--help`), secrets read from their files and trimmed,
    /// and the start-up checks passed.
    pub fn load() -> Result<Self, Refusal> {
        let matches = Self::command().get_matches();
        let mut config = Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        match config
            .resolve_secrets(&matches)
            .and_then(|()| config.check())
        {
            Ok(()) => Ok(config),
            Err(message) => Err(Refusal {
                log_format: config.log_format,
                message,
            }),
        }
    }

    /// The protected-by-default rule and other combinations, as sentences saying how to fix them.
    pub fn check(&self) -> Result<(), String> {
        if !self.listen.ip().is_loopback() && self.api_key.is_none() && !self.allow_unauthenticated
        {
            return Err(format!(
                "refusing to listen on {} without an API key: set API_KEY (or --api-key), \
                 or pass --allow-unauthenticated to expose /v1 without one",
                self.listen
            ));
        }
        if self.twilio_auth_token.is_some() && self.public_url.is_none() {
            return Err(
                "TWILIO_AUTH_TOKEN is set but PUBLIC_URL is not: set PUBLIC_URL to the \
                        base URL Twilio posts to, so its signatures can be checked"
                    .into(),
            );
        }
        if let Some(url) = &self.public_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(format!(
                    "PUBLIC_URL must start with https:// or http://, got {url:?}"
                ));
            }
        }
        if self
            .api_key
            .as_ref()
            .is_some_and(|k| k.expose_secret().len() < 16)
        {
            return Err("API_KEY must be at least 16 characters".into());
        }
        if self.max_concurrent_requests == 0
            || self.header_read_timeout_ms == 0
            || self.request_timeout_ms == 0
        {
            return Err("--max-concurrent-requests, --header-read-timeout-ms and --request-timeout-ms must be at least 1".into());
        }
        self.check_relay()?;
        self.check_billing()?;
        if self.max_label_values == 0 {
            return Err("--max-label-values must be at least 1".into());
        }
        Ok(())
    }

    /// Relay URLs are absolute, and each target has the secret its webhooks are checked
    /// (and, for Twilio, re-signed) with: only signed webhooks are relayed.
    fn check_relay(&self) -> Result<(), String> {
        for (flag, url) in [
            ("RELAY_META_URL", &self.relay_meta_url),
            ("RELAY_TWILIO_URL", &self.relay_twilio_url),
        ] {
            if let Some(url) = url {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(format!(
                        "{flag} must start with https:// or http://, got {url:?}"
                    ));
                }
            }
        }
        if self.relay_meta_url.is_some() && self.meta_app_secret.is_none() {
            return Err(
                "RELAY_META_URL is set but META_APP_SECRET is not: the relay \
                        forwards only signed webhooks, so set META_APP_SECRET"
                    .into(),
            );
        }
        if self.relay_twilio_url.is_some() && self.twilio_auth_token.is_none() {
            return Err(
                "RELAY_TWILIO_URL is set but TWILIO_AUTH_TOKEN is not: the relay \
                        re-signs Twilio webhooks with it, so set TWILIO_AUTH_TOKEN"
                    .into(),
            );
        }
        Ok(())
    }

    /// The billed-cost readers need all of their provider's settings, and absolute URLs.
    fn check_billing(&self) -> Result<(), String> {
        for (flag, url) in [
            ("TWILIO_API_URL", &self.twilio_api_url),
            ("META_GRAPH_URL", &self.meta_graph_url),
        ] {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(format!(
                    "{flag} must start with https:// or http://, got {url:?}"
                ));
            }
        }
        if self.twilio_account_sid.is_some() && self.twilio_auth_token.is_none() {
            return Err(
                "TWILIO_ACCOUNT_SID is set but TWILIO_AUTH_TOKEN is not: Twilio's \
                        Messages API takes both, so set TWILIO_AUTH_TOKEN"
                    .into(),
            );
        }
        if self
            .twilio_account_sid
            .as_ref()
            .is_some_and(|s| !(s.starts_with("AC") && s.bytes().all(|b| b.is_ascii_alphanumeric())))
        {
            return Err(
                "TWILIO_ACCOUNT_SID must be an account SID (AC followed by letters and digits)"
                    .into(),
            );
        }
        match (&self.meta_access_token, &self.meta_waba_id) {
            (Some(_), None) => Err("META_ACCESS_TOKEN is set but META_WABA_ID is not: set \
                                    the WhatsApp Business Account to read pricing_analytics of"
                .into()),
            (None, Some(_)) => Err("META_WABA_ID is set but META_ACCESS_TOKEN is not: set \
                                    a system user token to read pricing_analytics with"
                .into()),
            (_, Some(id)) if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) => {
                Err("META_WABA_ID must be the account's numeric id".into())
            }
            _ => Ok(()),
        }
    }

    /// Secrets that are not set, for the start-up warning.
    pub fn missing_secrets(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.meta_app_secret.is_none() {
            out.push("META_APP_SECRET (Meta webhooks are accepted unsigned)");
        }
        if self.twilio_auth_token.is_none() {
            out.push("TWILIO_AUTH_TOKEN (Twilio webhooks are accepted unsigned)");
        }
        if self.meta_verify_token.is_none() {
            out.push("META_VERIFY_TOKEN (Meta's subscription handshake is refused)");
        }
        out
    }

    pub fn limits(&self) -> crate::http::serve::Limits {
        crate::http::serve::Limits {
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            max_concurrent_requests: self.max_concurrent_requests,
            drain_timeout: Duration::from_millis(self.request_timeout_ms),
        }
    }

    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.attribution_grace_seconds)
    }

    /// A configuration for tests and embedding: loopback, no secrets.
    pub fn for_database(database_url: &str) -> Self {
        Self::parse_from([
            "messaging-exporter",
            "--database-url",
            database_url,
            "--listen",
            "127.0.0.1:0",
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        let mut all = vec!["messaging-exporter"];
        all.extend_from_slice(args);
        Config::try_parse_from(all).unwrap()
    }

    /// What clap says when it refuses `args`.
    fn refusal(args: &[&str]) -> String {
        let mut all = vec!["messaging-exporter"];
        all.extend_from_slice(args);
        Config::try_parse_from(all).unwrap_err().to_string()
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = parse(&[]);
        assert_eq!(c.listen.to_string(), "127.0.0.1:9469");
        assert_eq!(c.database_url, "sqlite://messaging-exporter.db");
        assert_eq!(c.retention_days, 90);
        assert_eq!(c.max_label_values, 200);
        assert_eq!(c.max_series, 10_000);
        assert_eq!(c.kept_rows, 8_192);
        assert_eq!(c.db_writers, 3, "README's table says 3");
        assert_eq!(c.relay_meta_url, None);
        assert_eq!(c.relay_twilio_url, None);
        assert_eq!(c.relay_timeout_ms, 10_000);
        assert_eq!(c.relay_max_age_hours, 168);
        assert!(c.check().is_ok());
    }

    #[test]
    fn db_writers_out_of_its_range_is_refused_with_the_range() {
        assert_eq!(parse(&["--db-writers", "1"]).db_writers, 1);
        assert_eq!(parse(&["--db-writers", "64"]).db_writers, 64);
        for value in ["0", "65"] {
            let err = refusal(&["--db-writers", value]);
            assert!(
                err.contains("--db-writers") && err.contains("1..=64"),
                "{err}"
            );
        }
    }

    #[test]
    fn max_series_out_of_its_range_is_refused_with_the_range() {
        assert_eq!(parse(&["--max-series", "100"]).max_series, 100);
        assert_eq!(parse(&["--max-series", "1000000"]).max_series, 1_000_000);
        for value in ["99", "1000001"] {
            let err = refusal(&["--max-series", value]);
            assert!(
                err.contains("--max-series") && err.contains("100..=1000000"),
                "{err}"
            );
        }
    }

    #[test]
    fn kept_rows_past_its_range_is_refused_with_the_range() {
        assert_eq!(parse(&["--kept-rows", "0"]).kept_rows, 0);
        assert_eq!(parse(&["--kept-rows", "1048576"]).kept_rows, 1_048_576);
        let err = refusal(&["--kept-rows", "1048577"]);
        assert!(
            err.contains("--kept-rows") && err.contains("1048576"),
            "{err}"
        );
    }

    #[test]
    fn public_address_without_api_key_refuses_to_start() {
        let err = parse(&["--listen", "0.0.0.0:9469"]).check().unwrap_err();
        assert!(err.contains("API_KEY"), "{err}");
        assert!(
            parse(&["--listen", "0.0.0.0:9469", "--allow-unauthenticated"])
                .check()
                .is_ok()
        );
        assert!(
            parse(&["--listen", "0.0.0.0:9469", "--api-key", "0123456789abcdef"])
                .check()
                .is_ok()
        );
    }

    #[test]
    fn twilio_token_needs_public_url_and_retention_has_a_floor() {
        assert!(parse(&["--twilio-auth-token", "t"]).check().is_err());
        let all = ["messaging-exporter", "--retention-days", "3"];
        assert!(Config::try_parse_from(all).is_err());
    }

    #[test]
    fn a_relay_url_needs_its_targets_secret_and_a_scheme() {
        let err = parse(&["--relay-meta-url", "http://bot/hook"])
            .check()
            .unwrap_err();
        assert!(err.contains("META_APP_SECRET"), "{err}");
        let twilio = [
            "--relay-twilio-url",
            "http://bot/sms",
            "--twilio-auth-token",
            "t",
        ];
        let mut with_url = twilio.to_vec();
        with_url.extend(["--public-url", "https://hooks.example.com"]);
        assert!(parse(&with_url).check().is_ok());
        let err = parse(&["--relay-twilio-url", "http://bot/sms"])
            .check()
            .unwrap_err();
        assert!(err.contains("TWILIO_AUTH_TOKEN"), "{err}");
        let bad = ["--relay-meta-url", "bot:8080", "--meta-app-secret", "s"];
        let err = parse(&bad).check().unwrap_err();
        assert!(err.contains("RELAY_META_URL must start with"), "{err}");
        assert!(refusal(&["--relay-timeout-ms", "0"]).contains("--relay-timeout-ms"));
    }

    #[test]
    fn billed_cost_readers_need_their_providers_settings() {
        let c = parse(&[]);
        assert_eq!(c.twilio_api_url, "https://api.twilio.com");
        assert_eq!(c.meta_graph_url, "https://graph.facebook.com");
        let sid = ["--twilio-account-sid", "AC703f069b4f94388bc65eefc880b85f64"];
        let err = parse(&sid).check().unwrap_err();
        assert!(err.contains("TWILIO_AUTH_TOKEN"), "{err}");
        let mut with_token = sid.to_vec();
        with_token.extend([
            "--twilio-auth-token",
            "t",
            "--public-url",
            "https://h.example",
        ]);
        assert!(parse(&with_token).check().is_ok());
        let err = parse(&["--meta-access-token", "tok"]).check().unwrap_err();
        assert!(err.contains("META_WABA_ID"), "{err}");
        let err = parse(&["--meta-waba-id", "104455667788990"])
            .check()
            .unwrap_err();
        assert!(err.contains("META_ACCESS_TOKEN"), "{err}");
        let meta = [
            "--meta-waba-id",
            "104455667788990",
            "--meta-access-token",
            "tok",
        ];
        assert!(parse(&meta).check().is_ok());
        let err = parse(&["--meta-graph-url", "graph"]).check().unwrap_err();
        assert!(err.contains("META_GRAPH_URL"), "{err}");
        let c = parse(&["--meta-access-token", "very-secret-token"]);
        assert!(!format!("{c:?}").contains("very-secret-token"));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = parse(&["--api-key", "super-secret-key-123"]);
        assert!(!format!("{c:?}").contains("super-secret-key-123"));
    }
}
