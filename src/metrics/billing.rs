//! `messaging_billed_cost_total` (CONTRACT §9): what the providers say they charged,
//! beside the estimate in `messaging_cost_total`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BilledLabels {
    provider: &'static str,
    channel: &'static str,
    category: String,
    currency: String,
}

#[derive(Clone)]
pub struct BillingMetrics {
    billed: Family<BilledLabels, Counter<f64, AtomicU64>>,
}

impl BillingMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = Self {
            billed: Family::default(),
        };
        r.register(
            "messaging_billed_cost",
            "Cost as the providers billed it: Twilio's price per message, Meta's \
             pricing_analytics per day and category as it grows",
            m.billed.clone(),
        );
        m
    }

    /// Adds `amount` billed. Category and currency come from a provider's API: anything
    /// outside the bounded forms is counted as `other`.
    pub fn add(
        &self,
        provider: &'static str,
        channel: &'static str,
        category: &str,
        currency: &str,
        amount: f64,
    ) {
        let category = bounded_category(category);
        let currency = if currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()) {
            currency.to_owned()
        } else {
            "other".to_owned()
        };
        let labels = BilledLabels {
            provider,
            channel,
            category: category.to_owned(),
            currency,
        };
        self.billed.get_or_create(&labels).inc_by(amount);
    }
}

fn bounded_category(raw: &str) -> &'static str {
    if raw == crate::domain::category::SMS_COST {
        return crate::domain::category::SMS_COST;
    }
    if raw == "none" {
        return "none";
    }
    crate::domain::category::Category::parse(raw).map_or("other", |c| c.as_str())
}
