//! What a committed transaction says to count. The ledger fills it; only after the
//! commit does the metrics layer turn it into increments (counting rule 6).

use super::category::Category;
use super::status::Status;
use super::{Channel, Outcome, Provider};

#[derive(Clone, Debug, PartialEq)]
pub struct OutboundCount {
    pub provider: Provider,
    pub channel: Channel,
    pub status: Status,
    pub template: String,
    pub category: Option<Category>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CostCount {
    pub provider: Provider,
    pub channel: Channel,
    /// The `category` label: a WhatsApp category, `sms`, or `none`.
    pub category: &'static str,
    pub template: String,
    pub currency: String,
    pub amount: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Latency {
    pub provider: Provider,
    pub channel: Channel,
    pub category: Option<Category>,
    pub seconds: f64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    pub outbound: Vec<OutboundCount>,
    /// (provider, channel, type label)
    pub inbound: Vec<(Provider, Channel, &'static str)>,
    /// (provider, channel, error code)
    pub errors: Vec<(Provider, Channel, String)>,
    pub cost: Vec<CostCount>,
    pub delivery_latency: Vec<Latency>,
    pub read_latency: Vec<Latency>,
    /// Response latency carries no category.
    pub response_latency: Vec<Latency>,
    pub webhook: Vec<(Provider, Outcome)>,
}

impl Tally {
    pub fn merge(&mut self, other: Tally) {
        self.outbound.extend(other.outbound);
        self.inbound.extend(other.inbound);
        self.errors.extend(other.errors);
        self.cost.extend(other.cost);
        self.delivery_latency.extend(other.delivery_latency);
        self.read_latency.extend(other.read_latency);
        self.response_latency.extend(other.response_latency);
        self.webhook.extend(other.webhook);
    }

    pub fn outcome(&mut self, provider: Provider, outcome: Outcome) {
        self.webhook.push((provider, outcome));
    }

    pub fn count_outcomes(&self, outcome: Outcome) -> usize {
        self.webhook.iter().filter(|(_, o)| *o == outcome).count()
    }
}
