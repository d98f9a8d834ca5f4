//! Every metric of CONTRACT §4 in one struct, and the label-cardinality guards: each
//! bounded label keeps `--max-label-values` values, each family with one `--max-series`
//! series ([`cap`]). The two template-labelled counters are [`rendered`] families, the
//! rest prometheus-client's; nothing else touches the registry. Beside them: how full
//! the exporter's own resources are ([`saturation`]) and the standard `process_*`
//! metrics ([`process`]).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::domain::category;
use crate::domain::tally::{Latency, Tally};
use crate::domain::{Outcome, Provider};

mod billing;
mod cap;
mod process;
mod recorder;
mod relay;
mod rendered;
mod saturation;
pub use billing::BillingMetrics;
use cap::{Capped, CappedFamily, SeriesCap};
pub use recorder::Recorder;
pub use relay::{RelayMetrics, RelayOutcome};
use rendered::{push_escaped, LabelSet, RenderedCounters};
use saturation::Saturation;
pub use saturation::{InFlight, PoolUsage, RequestPlaces};

/// Provider → handset: most messages arrive within seconds, but an offline phone takes
/// hours and Meta retries undelivered templates for up to 30 days.
pub const DELIVERY_BUCKETS: [f64; 14] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0,
];
/// Delivered → read: people read within minutes to a day.
pub const READ_BUCKETS: [f64; 13] = [
    5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 43200.0, 86400.0,
];
/// User message → bot reply: a bot answers in seconds, a human agent in minutes.
pub const RESPONSE_BUCKETS: [f64; 13] = [
    0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0,
];
/// One AI call: sub-second classification to tens of seconds of generation.
pub const AI_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0,
];

/// `--max-series`: CONTRACT §6.4's default.
pub const DEFAULT_MAX_SERIES: usize = 10_000;

/// The value a bounded label takes past its limit.
const OTHER: &str = "other";

type Hist = Family<LatencyLabels, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct OutboundLabels {
    pub provider: &'static str,
    pub channel: &'static str,
    pub status: &'static str,
    pub template: String,
    pub category: &'static str,
}

impl Capped for OutboundLabels {
    fn overflowed(&self) -> Self {
        Self {
            template: OTHER.to_owned(),
            ..self.clone()
        }
    }
}

impl LabelSet for OutboundLabels {
    fn each(&self, label: &mut dyn FnMut(&'static str, &str)) {
        label("provider", self.provider);
        label("channel", self.channel);
        label("status", self.status);
        label("template", &self.template);
        label("category", self.category);
    }
}

/// Free text as a label value (an error code, a model name), escaped as OpenMetrics
/// requires: prometheus-client writes label values as they are, so a double quote or a
/// line feed in one would break the whole exposition.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct LabelText(pub String);

impl LabelText {
    fn other() -> Self {
        Self(OTHER.to_owned())
    }
}

impl EncodeLabelValue for LabelText {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        if !self.0.contains(['\\', '"', '\n']) {
            return encoder.write_str(&self.0);
        }
        let mut escaped = String::with_capacity(self.0.len() + 8);
        push_escaped(&mut escaped, &self.0);
        encoder.write_str(&escaped)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InboundLabels {
    pub provider: &'static str,
    pub channel: &'static str,
    #[prometheus(flatten)]
    pub kind: TypeLabel,
}

/// `type` is a Rust keyword, so the field is spelled out by hand.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct TypeLabel(pub &'static str);

impl EncodeLabelSet for TypeLabel {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelSetEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeLabel;
        ("type", self.0).encode(encoder.encode_label())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub provider: &'static str,
    pub channel: &'static str,
    pub code: LabelText,
}

impl Capped for ErrorLabels {
    fn overflowed(&self) -> Self {
        Self {
            code: LabelText::other(),
            ..self.clone()
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct CostLabels {
    pub provider: &'static str,
    pub channel: &'static str,
    pub category: &'static str,
    pub template: String,
    pub currency: String,
}

impl Capped for CostLabels {
    fn overflowed(&self) -> Self {
        Self {
            template: OTHER.to_owned(),
            currency: OTHER.to_owned(),
            ..self.clone()
        }
    }
}

impl LabelSet for CostLabels {
    fn each(&self, label: &mut dyn FnMut(&'static str, &str)) {
        label("provider", self.provider);
        label("channel", self.channel);
        label("category", self.category);
        label("template", &self.template);
        label("currency", &self.currency);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    pub provider: &'static str,
    pub channel: &'static str,
    pub category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderChannel {
    pub provider: &'static str,
    pub channel: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AiLabels {
    pub operation: LabelText,
    pub model: LabelText,
}

impl Capped for AiLabels {
    fn overflowed(&self) -> Self {
        Self {
            operation: LabelText::other(),
            model: LabelText::other(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AiRequestLabels {
    pub operation: LabelText,
    pub model: LabelText,
    pub outcome: &'static str,
}

impl Capped for AiRequestLabels {
    fn overflowed(&self) -> Self {
        Self {
            operation: LabelText::other(),
            model: LabelText::other(),
            outcome: self.outcome,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub model: LabelText,
    pub direction: &'static str,
}

impl Capped for TokenLabels {
    fn overflowed(&self) -> Self {
        Self {
            model: LabelText::other(),
            direction: self.direction,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelCurrency {
    pub model: LabelText,
    pub currency: LabelText,
}

impl Capped for ModelCurrency {
    fn overflowed(&self) -> Self {
        Self {
            model: LabelText::other(),
            currency: LabelText::other(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IntentLabels {
    pub intent: LabelText,
}

impl Capped for IntentLabels {
    fn overflowed(&self) -> Self {
        Self {
            intent: LabelText::other(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub decision: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub provider: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LabelName {
    pub label: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    pub version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    pub reason: &'static str,
}

/// Transactions run again, by why: `conflict` (a row written by someone else between
/// its read and the write-back), `presumed_new` (a row taken for new unread was stored)
/// or `deadlock`. Shared with the ledger, which runs them.
pub type Retries = Family<RetryLabels, Counter>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadLabels {
    pub source: &'static str,
}

/// Batches by where their message and session rows came from: `kept` (the rows this
/// exporter committed lately, `--kept-rows`), `presumed_new` (kept, and the rest taken
/// for new without a read) or `database`.
type BatchReads = Family<ReadLabels, Counter>;

/// Where a batch's rows came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadSource {
    Kept,
    PresumedNew,
    Database,
}

impl ReadSource {
    const ALL: [ReadSource; 3] = [Self::Kept, Self::PresumedNew, Self::Database];

    fn label(self) -> &'static str {
        match self {
            Self::Kept => "kept",
            Self::PresumedNew => "presumed_new",
            Self::Database => "database",
        }
    }
}

/// What the ledger counts of its own work, registered with the other metrics. The read
/// counters are the family's series, taken once (in [`ReadSource::ALL`]'s order): a
/// batch adds to one without looking its labels up.
#[derive(Clone)]
pub struct LedgerCounters {
    pub retries: Retries,
    reads: [Counter; 3],
}

impl LedgerCounters {
    /// One batch loaded its rows.
    pub fn count_read(&self, source: ReadSource) {
        self.reads[source as usize].inc();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: &'static str,
    pub route: String,
    pub status: u16,
}

/// The methods of RFC 9110 and PATCH keep their names; any other token a client sends (hyper
/// accepts them all) is `other`, or each would be a series of its own.
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    KNOWN.into_iter().find(|m| *m == method).unwrap_or(OTHER)
}

/// Values that are never counted toward the cardinality limit.
const FIXED_VALUES: [&str; 3] = ["none", "unknown", OTHER];

/// Keeps one label at most `max` distinct values; later new values become `other`.
pub struct LabelGuard {
    name: &'static str,
    max: usize,
    seen: Mutex<HashSet<String>>,
}

impl LabelGuard {
    fn new(name: &'static str, max: usize) -> Self {
        Self {
            name,
            max,
            seen: Mutex::new(HashSet::new()),
        }
    }

    fn admit(&self, value: &str, overflow: &Family<LabelName, Counter>) -> String {
        if FIXED_VALUES.contains(&value) {
            return value.to_owned();
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(value) {
            return value.to_owned();
        }
        if seen.len() < self.max {
            seen.insert(value.to_owned());
            return value.to_owned();
        }
        overflow
            .get_or_create(&LabelName { label: self.name })
            .inc();
        OTHER.to_owned()
    }
}

/// An AI call as the `/v1/events/ai` handler validated it; owned, to be sent to the
/// [`Recorder`].
pub struct AiObservation {
    pub operation: String,
    pub model: String,
    pub ok: bool,
    pub seconds: f64,
    pub intent: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// (amount, currency)
    pub cost: Option<(f64, String)>,
}

pub struct Metrics {
    registry: Registry,
    outbound: RenderedCounters<OutboundLabels, Counter>,
    inbound: Family<InboundLabels, Counter>,
    errors: CappedFamily<ErrorLabels, Counter>,
    cost: RenderedCounters<CostLabels, Counter<f64, AtomicU64>>,
    delivery_latency: Hist,
    read_latency: Hist,
    response_latency: Family<ProviderChannel, Histogram, fn() -> Histogram>,
    ai_latency: CappedFamily<AiLabels, Histogram>,
    ai_requests: CappedFamily<AiRequestLabels, Counter>,
    ai_tokens: CappedFamily<TokenLabels, Counter>,
    ai_cost: CappedFamily<ModelCurrency, Counter<f64, AtomicU64>>,
    ai_intents: CappedFamily<IntentLabels, Counter>,
    sessions_active: Gauge,
    /// The relay's families (CONTRACT §7).
    pub relay: RelayMetrics,
    /// The providers' billed figures (CONTRACT §9).
    pub billing: BillingMetrics,
    presend: Family<DecisionLabels, Counter>,
    webhook_events: Family<WebhookLabels, Counter>,
    label_overflow: Family<LabelName, Counter>,
    http_duration: Family<HttpLabels, Histogram, fn() -> Histogram>,
    db_retries: Retries,
    batch_reads: BatchReads,
    ready: Gauge,
    saturation: Saturation,
    template: LabelGuard,
    code: LabelGuard,
    model: LabelGuard,
    operation: LabelGuard,
    intent: LabelGuard,
    currency: LabelGuard,
    /// Bytes of the last exposition: the next one starts with room for as much (100k
    /// series are 12.6 MiB, which a growing buffer would copy twice over).
    last_size: AtomicUsize,
}

fn delivery_histogram() -> Histogram {
    Histogram::new(DELIVERY_BUCKETS)
}
fn read_histogram() -> Histogram {
    Histogram::new(READ_BUCKETS)
}
fn response_histogram() -> Histogram {
    Histogram::new(RESPONSE_BUCKETS)
}
fn ai_histogram() -> Histogram {
    Histogram::new(AI_BUCKETS)
}
fn http_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ])
}

impl Metrics {
    /// `max_label_values` distinct values per bounded label, `max_series` series per
    /// family that has one.
    pub fn new(max_label_values: usize, max_series: usize) -> Self {
        let mut registry = Registry::default();
        let label_overflow = Family::<LabelName, Counter>::default();
        let series_overflow = label_overflow
            .get_or_create(&LabelName { label: "series" })
            .clone();
        let cap = SeriesCap::new(max_series, series_overflow);
        let m = Self {
            outbound: RenderedCounters::new(
                "messaging_outbound_messages",
                "Outbound messages by status, each (message, status) counted once",
                cap.clone(),
            ),
            inbound: Family::default(),
            errors: cap.over(Family::default()),
            cost: RenderedCounters::new(
                "messaging_cost",
                "Message cost, counted once per message at delivery",
                cap.clone(),
            ),
            delivery_latency: Family::new_with_constructor(delivery_histogram),
            read_latency: Family::new_with_constructor(read_histogram),
            response_latency: Family::new_with_constructor(response_histogram),
            ai_latency: cap.over(Family::new_with_constructor(ai_histogram)),
            ai_requests: cap.over(Family::default()),
            ai_tokens: cap.over(Family::default()),
            ai_cost: cap.over(Family::default()),
            ai_intents: cap.over(Family::default()),
            sessions_active: Gauge::default(),
            relay: RelayMetrics::register(&mut registry),
            billing: BillingMetrics::register(&mut registry),
            presend: Family::default(),
            webhook_events: Family::default(),
            label_overflow,
            http_duration: Family::new_with_constructor(http_histogram),
            db_retries: Family::default(),
            batch_reads: Family::default(),
            ready: Gauge::default(),
            saturation: Saturation::default(),
            template: LabelGuard::new("template", max_label_values),
            code: LabelGuard::new("code", max_label_values),
            model: LabelGuard::new("model", max_label_values),
            operation: LabelGuard::new("operation", max_label_values),
            intent: LabelGuard::new("intent", max_label_values),
            currency: LabelGuard::new("currency", max_label_values),
            last_size: AtomicUsize::new(64 * 1024),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "messaging_inbound_messages",
            "Inbound user messages by type",
            m.inbound.clone(),
        );
        r.register(
            "messaging_message_errors",
            "Failed messages and provider errors by error code",
            m.errors.family().clone(),
        );
        r.register_with_unit(
            "messaging_delivery_latency",
            "Send to delivered, once per message",
            Unit::Seconds,
            m.delivery_latency.clone(),
        );
        r.register_with_unit(
            "messaging_read_latency",
            "Delivered to read, once per message",
            Unit::Seconds,
            m.read_latency.clone(),
        );
        r.register_with_unit(
            "messaging_response_latency",
            "Inbound user message to the next outbound message to that phone",
            Unit::Seconds,
            m.response_latency.clone(),
        );
        r.register_with_unit(
            "messaging_ai_latency",
            "AI call latency as reported by the bot",
            Unit::Seconds,
            m.ai_latency.family().clone(),
        );
        r.register(
            "messaging_ai_requests",
            "AI calls by outcome",
            m.ai_requests.family().clone(),
        );
        r.register(
            "messaging_ai_tokens",
            "AI tokens by direction",
            m.ai_tokens.family().clone(),
        );
        r.register(
            "messaging_ai_cost",
            "AI spend as reported by the bot",
            m.ai_cost.family().clone(),
        );
        r.register(
            "messaging_ai_intents",
            "Intents the AI classified",
            m.ai_intents.family().clone(),
        );
        r.register(
            "messaging_sessions_active",
            "Phones with an open 24-hour customer-service window",
            m.sessions_active.clone(),
        );
        r.register(
            "messaging_presend_checks",
            "Pre-send decisions by reason",
            m.presend.clone(),
        );
        r.register(
            "messaging_webhook_events",
            "Provider webhook items by outcome",
            m.webhook_events.clone(),
        );
        r.register(
            "messaging_label_overflow",
            "Label values reported as other because the label reached its limit",
            m.label_overflow.clone(),
        );
        r.register_with_unit(
            "messaging_exporter_http_request_duration",
            "HTTP request latency by route",
            Unit::Seconds,
            m.http_duration.clone(),
        );
        r.register(
            "messaging_exporter_db_retries",
            "Database transactions run again after losing a race for a row or a deadlock",
            m.db_retries.clone(),
        );
        for reason in ["conflict", "presumed_new", "deadlock"] {
            let _ = m.db_retries.get_or_create(&RetryLabels { reason });
        }
        r.register(
            "messaging_exporter_batch_reads",
            "Database batches by where their message and session rows came from: kept (committed lately by this exporter), presumed_new (kept, the rest taken for new unread) or database",
            m.batch_reads.clone(),
        );
        for source in ReadSource::ALL {
            let labels = ReadLabels {
                source: source.label(),
            };
            let _ = m.batch_reads.get_or_create(&labels);
        }
        r.register(
            "messaging_exporter_ready",
            "1 when the database answers, else 0",
            m.ready.clone(),
        );
        let build = Family::<VersionLabel, Gauge>::default();
        build
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        r.register("messaging_exporter_build_info", "Build information", build);
        m.saturation.register(r);
        r.register_collector(Box::new(process::ProcessCollector));
        // Known combinations start at zero, so rate() works from the first scrape.
        for p in [Provider::Meta, Provider::Twilio] {
            for o in Outcome::ALL {
                let _ = m.webhook_events.get_or_create(&WebhookLabels {
                    provider: p.as_str(),
                    outcome: o.as_str(),
                });
            }
        }
        for (decision, reason) in crate::domain::presend::metric_label_values() {
            let _ = m
                .presend
                .get_or_create(&DecisionLabels { decision, reason });
        }
        for label in [
            "template",
            "code",
            "model",
            "operation",
            "intent",
            "currency",
        ] {
            let _ = m.label_overflow.get_or_create(&LabelName { label });
        }
        Self { registry, ..m }
    }

    /// Increments what a committed transaction made countable.
    pub fn record(&self, t: &Tally) {
        for o in &t.outbound {
            let template = self.template.admit(&o.template, &self.label_overflow);
            let labels = OutboundLabels {
                provider: o.provider.as_str(),
                channel: o.channel.as_str(),
                status: o.status.as_str(),
                template,
                category: category::label(o.category),
            };
            self.outbound.with(labels, |n| {
                n.inc();
            });
        }
        for (p, c, kind) in &t.inbound {
            self.inbound
                .get_or_create(&InboundLabels {
                    provider: p.as_str(),
                    channel: c.as_str(),
                    kind: TypeLabel(kind),
                })
                .inc();
        }
        for (p, c, code) in &t.errors {
            let code = LabelText(self.code.admit(code, &self.label_overflow));
            let labels = ErrorLabels {
                provider: p.as_str(),
                channel: c.as_str(),
                code,
            };
            self.errors.with(labels, |n| {
                n.inc();
            });
        }
        for c in &t.cost {
            let template = self.template.admit(&c.template, &self.label_overflow);
            let labels = CostLabels {
                provider: c.provider.as_str(),
                channel: c.channel.as_str(),
                category: c.category,
                template,
                currency: self.currency.admit(&c.currency, &self.label_overflow),
            };
            self.cost.with(labels, |spent| {
                spent.inc_by(c.amount);
            });
        }
        observe_all(&self.delivery_latency, &t.delivery_latency);
        observe_all(&self.read_latency, &t.read_latency);
        for l in &t.response_latency {
            self.response_latency
                .get_or_create(&ProviderChannel {
                    provider: l.provider.as_str(),
                    channel: l.channel.as_str(),
                })
                .observe(l.seconds);
        }
        for (p, o) in &t.webhook {
            self.webhook_event(*p, *o);
        }
    }

    pub fn webhook_event(&self, provider: Provider, outcome: Outcome) {
        self.webhook_events
            .get_or_create(&WebhookLabels {
                provider: provider.as_str(),
                outcome: outcome.as_str(),
            })
            .inc();
    }

    pub fn record_ai(&self, a: &AiObservation) {
        let operation = LabelText(self.operation.admit(&a.operation, &self.label_overflow));
        let model = LabelText(self.model.admit(&a.model, &self.label_overflow));
        let latency = AiLabels {
            operation: operation.clone(),
            model: model.clone(),
        };
        self.ai_latency.with(latency, |h| h.observe(a.seconds));
        let outcome = if a.ok { "ok" } else { "error" };
        let request = AiRequestLabels {
            operation,
            model: model.clone(),
            outcome,
        };
        self.ai_requests.with(request, |n| {
            n.inc();
        });
        for (direction, n) in [("input", a.input_tokens), ("output", a.output_tokens)] {
            if n > 0 {
                let model = model.clone();
                self.ai_tokens.with(TokenLabels { model, direction }, |t| {
                    t.inc_by(n);
                });
            }
        }
        if let Some((amount, currency)) = &a.cost {
            let currency = LabelText(self.currency.admit(currency, &self.label_overflow));
            let labels = ModelCurrency {
                model: model.clone(),
                currency,
            };
            self.ai_cost.with(labels, |spent| {
                spent.inc_by(*amount);
            });
        }
        if let Some(intent) = &a.intent {
            let intent = LabelText(self.intent.admit(intent, &self.label_overflow));
            self.ai_intents.with(IntentLabels { intent }, |n| {
                n.inc();
            });
        }
    }

    pub fn record_presend(&self, decision: &'static str, reason: &'static str) {
        self.presend
            .get_or_create(&DecisionLabels { decision, reason })
            .inc();
    }

    pub fn set_sessions_active(&self, n: i64) {
        self.sessions_active.set(n);
    }

    /// The retry counter, for the ledger to count on.
    pub fn ledger_counters(&self) -> LedgerCounters {
        let reads = ReadSource::ALL.map(|source| {
            let labels = ReadLabels {
                source: source.label(),
            };
            self.batch_reads.get_or_create(&labels).clone()
        });
        LedgerCounters {
            retries: self.db_retries.clone(),
            reads,
        }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    pub fn observe_http(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.http_duration
            .get_or_create(&HttpLabels {
                method: method_label(method),
                route: route.to_owned(),
                status,
            })
            .observe(seconds);
    }

    /// The OpenMetrics text exposition. With 100k series it takes milliseconds of CPU:
    /// call it off the async workers (`spawn_blocking`).
    pub fn encode(&self) -> String {
        let room = self.last_size.load(Ordering::Relaxed);
        let mut out = String::with_capacity(room + room / 8);
        prometheus_client::encoding::text::encode_registry(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        self.outbound.encode(&mut out);
        self.cost.encode(&mut out);
        prometheus_client::encoding::text::encode_eof(&mut out)
            .expect("writing to a String cannot fail");
        self.last_size.store(out.len(), Ordering::Relaxed);
        out
    }
}

fn observe_all(h: &Hist, obs: &[Latency]) {
    for l in obs {
        h.get_or_create(&LatencyLabels {
            provider: l.provider.as_str(),
            channel: l.channel.as_str(),
            category: category::label(l.category),
        })
        .observe(l.seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_admits_up_to_max_then_reports_other_and_counts_overflow() {
        let overflow = Family::<LabelName, Counter>::default();
        let g = LabelGuard::new("template", 2);
        assert_eq!(g.admit("a", &overflow), "a");
        assert_eq!(g.admit("unknown", &overflow), "unknown");
        assert_eq!(g.admit("b", &overflow), "b");
        assert_eq!(g.admit("c", &overflow), "other");
        assert_eq!(g.admit("a", &overflow), "a");
        assert_eq!(
            overflow
                .get_or_create(&LabelName { label: "template" })
                .get(),
            1
        );
    }
}
