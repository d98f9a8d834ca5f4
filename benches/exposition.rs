//! `cargo bench --bench exposition`: the time to encode `GET /metrics` with 10k and 100k
//! series (scenario 5's template spread: four statuses and a cost per template and
//! category), against prometheus-client encoding the same series through its own families
//! in the same process. Prints figures; asserts nothing about time.

use std::sync::atomic::AtomicU64;
use std::time::Instant;

use messaging_exporter::domain::category::{self, Category};
use messaging_exporter::domain::status::Status;
use messaging_exporter::domain::tally::{CostCount, OutboundCount, Tally};
use messaging_exporter::domain::{Channel, Provider};
use messaging_exporter::metrics::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

const CATEGORIES: [Category; 4] = [
    Category::Marketing,
    Category::Utility,
    Category::Authentication,
    Category::Service,
];
const STATUSES: [Status; 4] = [
    Status::Accepted,
    Status::Sent,
    Status::Delivered,
    Status::Read,
];
const ROUNDS: usize = 30;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outbound {
    provider: &'static str,
    channel: &'static str,
    status: &'static str,
    template: String,
    category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Cost {
    provider: &'static str,
    channel: &'static str,
    category: &'static str,
    template: String,
    currency: String,
}

/// Five series per (template, category): `series / 5` pairs.
fn tally(series: usize) -> Tally {
    let mut t = Tally::default();
    for i in 0..series / 5 / CATEGORIES.len() {
        let template = format!("tpl_{i:05}");
        for category in CATEGORIES.map(Some) {
            for status in STATUSES {
                t.outbound.push(OutboundCount {
                    provider: Provider::Meta,
                    channel: Channel::Whatsapp,
                    status,
                    template: template.clone(),
                    category,
                });
            }
            t.cost.push(CostCount {
                provider: Provider::Meta,
                channel: Channel::Whatsapp,
                category: category::label(category),
                template: template.clone(),
                currency: "USD".into(),
                amount: 0.0125,
            });
        }
    }
    t
}

/// The same series in prometheus-client's families: how the exporter encoded them before.
fn baseline(t: &Tally) -> Registry {
    let outbound = Family::<Outbound, Counter>::default();
    let cost = Family::<Cost, Counter<f64, AtomicU64>>::default();
    for o in &t.outbound {
        outbound
            .get_or_create(&Outbound {
                provider: o.provider.as_str(),
                channel: o.channel.as_str(),
                status: o.status.as_str(),
                template: o.template.clone(),
                category: category::label(o.category),
            })
            .inc();
    }
    for c in &t.cost {
        cost.get_or_create(&Cost {
            provider: c.provider.as_str(),
            channel: c.channel.as_str(),
            category: c.category,
            template: c.template.clone(),
            currency: c.currency.clone(),
        })
        .inc_by(c.amount);
    }
    let mut r = Registry::default();
    r.register("messaging_outbound_messages", "Outbound messages", outbound);
    r.register("messaging_cost", "Message cost", cost);
    r
}

/// Milliseconds per encode: (median, min, max) of `ROUNDS`, and the bytes of one.
fn time(mut encode: impl FnMut() -> String) -> ((f64, f64, f64), usize) {
    let mut ms = Vec::with_capacity(ROUNDS);
    let mut bytes = 0;
    for _ in 0..ROUNDS {
        let t0 = Instant::now();
        bytes = std::hint::black_box(encode()).len();
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    ((ms[ROUNDS / 2], ms[0], ms[ROUNDS - 1]), bytes)
}

fn main() {
    println!("| series | exporter (median, min–max) | prometheus-client families | ratio | MiB |");
    println!("|---:|---:|---:|---:|---:|");
    for series in [10_000, 100_000] {
        let t = tally(series);
        let metrics = Metrics::new(series, series);
        metrics.record(&t);
        let registry = baseline(&t);
        let ((ours, ours_min, ours_max), bytes) = time(|| metrics.encode());
        let ((theirs, theirs_min, theirs_max), _) = time(|| {
            let mut out = String::with_capacity(bytes);
            prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
            out
        });
        println!(
            "| {series} | {ours:.1} ms ({ours_min:.1}–{ours_max:.1}) | {theirs:.1} ms ({theirs_min:.1}–{theirs_max:.1}) | {:.2} | {:.1} |",
            ours / theirs,
            bytes as f64 / 1_048_576.0
        );
    }
}
