//! One outbound message's stored state and the counting rules of CONTRACT §4 over it.
//!
//! The ledger loads a [`MessageState`], applies an event to it, calls
//! [`MessageState::settle`] and writes it back in the same transaction, only if the row is
//! unchanged since it was loaded. `settle` counts
//! exactly what the state shows as due and not yet counted, and marks it counted, so
//! whichever transaction (or replica) commits a change is the one that counts it.

use super::category::{self, Category};
use super::phone::Phone;
use super::pricing::MetaPricing;
use super::settings::{Settings, SmsDirection};
use super::status::{Status, StatusSet};
use super::tally::{CostCount, Latency, OutboundCount, Tally};
use super::{Channel, Provider};

/// The template label of a message whose send hook never came within the grace period.
pub const UNKNOWN_TEMPLATE: &str = "unknown";
/// The template label of a free-form message.
pub const NO_TEMPLATE: &str = "none";

/// What the bot's send hook said about a message.
#[derive(Clone, Debug, PartialEq)]
pub struct Hook {
    pub is_template: bool,
    /// Empty for free-form messages.
    pub template: String,
    /// `None` for free-form messages.
    pub category: Option<Category>,
    pub sent_at_ms: i64,
    /// SMS segments as the bot counted them (1 unless it said otherwise).
    pub segments: u32,
}

/// A provider's failure details, kept for `/v1/errors`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MessageError {
    pub code: String,
    pub title: String,
    pub message: String,
    pub details: String,
}

/// The label set a message is counted under, fixed the first time anything of it is
/// counted so that every status of one message lands in the same series (which is what
/// keeps `read ≤ delivered ≤ sent` true per label set).
#[derive(Clone, Debug, PartialEq)]
pub struct Labels {
    pub template: String,
    pub category: Option<Category>,
}

/// One-shot observations already made for this message (stored as a bit mask).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observed(pub i64);

impl Observed {
    pub const DELIVERY_LATENCY: i64 = 1;
    pub const READ_LATENCY: i64 = 2;
    pub const COST: i64 = 4;
    pub const ERROR: i64 = 8;
    /// Linked to its phone's session: business-message count, response latency and the
    /// window-at-send-time have been taken.
    pub const SESSION: i64 = 16;

    pub fn has(self, flag: i64) -> bool {
        self.0 & flag != 0
    }

    pub fn set(&mut self, flag: i64) {
        self.0 |= flag;
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct MessageState {
    pub provider: Provider,
    pub message_id: String,
    pub channel: Channel,
    pub phone: Option<Phone>,
    pub hook: Option<Hook>,
    /// When this exporter first heard of the message (receipt time): starts the grace period.
    pub first_seen_ms: i64,
    pub seen: StatusSet,
    pub counted: StatusSet,
    /// Provider (or receipt) time of each status as received; 0 = not received.
    pub times: [i64; 5],
    pub pricing: Option<MetaPricing>,
    pub error: Option<MessageError>,
    pub labels: Option<Labels>,
    pub window_open_at_send: bool,
    pub observed: Observed,
    /// Cost counted at delivery (0 until then), and the category it was priced at.
    pub cost: f64,
    pub cost_category: Option<Category>,
    pub currency: String,
    pub reservation_id: String,
    /// SMS segments as the provider counted them (Twilio's `NumSegments`); 0 = not given.
    pub segments: u32,
}

impl MessageState {
    pub fn new(provider: Provider, message_id: String, channel: Channel, now_ms: i64) -> Self {
        Self {
            provider,
            message_id,
            channel,
            phone: None,
            hook: None,
            first_seen_ms: now_ms,
            seen: StatusSet::EMPTY,
            counted: StatusSet::EMPTY,
            times: [0; 5],
            pricing: None,
            error: None,
            labels: None,
            window_open_at_send: false,
            observed: Observed::default(),
            cost: 0.0,
            cost_category: None,
            currency: String::new(),
            reservation_id: String::new(),
            segments: 0,
        }
    }

    pub fn time_of(&self, s: Status) -> i64 {
        self.times[s as usize]
    }

    /// Records a provider status. Returns false when this status was already received
    /// (a redelivery), in which case nothing changes.
    pub fn record_status(
        &mut self,
        status: Status,
        at_ms: i64,
        pricing: Option<MetaPricing>,
        error: Option<MessageError>,
    ) -> bool {
        if self.seen.contains(status) {
            return false;
        }
        self.seen = self.seen.with(status);
        self.times[status as usize] = at_ms;
        // Meta sends pricing on `sent` and on one of delivered/read: the billing event's
        // copy wins, `sent`'s is kept when the later one has none.
        if let Some(p) = pricing {
            if self.pricing.is_none() || status != Status::Sent {
                self.pricing = Some(p);
            }
        }
        if self.error.is_none() {
            self.error = error;
        }
        true
    }

    /// Records the bot's send hook. Returns false when a hook was already recorded.
    /// A hook carrying an error (the send call failed) marks the message failed instead
    /// of accepted.
    pub fn record_hook(&mut self, hook: Hook, error: Option<MessageError>) -> bool {
        if self.hook.is_some() {
            return false;
        }
        let status = if error.is_some() {
            Status::Failed
        } else {
            Status::Accepted
        };
        let at = hook.sent_at_ms;
        self.hook = Some(hook);
        self.record_status(status, at, None, error);
        true
    }

    /// When the message went out: the hook's `sent_at`, else the `sent` status, else
    /// the earliest status heard of.
    pub fn send_time_ms(&self) -> Option<i64> {
        if let Some(h) = &self.hook {
            return Some(h.sent_at_ms);
        }
        let sent = self.time_of(Status::Sent);
        if sent > 0 {
            return Some(sent);
        }
        [Status::Delivered, Status::Read, Status::Failed]
            .into_iter()
            .map(|s| self.time_of(s))
            .filter(|t| *t > 0)
            .min()
    }

    fn attributable(&self, now_ms: i64, grace_ms: i64) -> bool {
        self.hook.is_some() || now_ms - self.first_seen_ms >= grace_ms
    }

    /// Waiting for its send hook: something was received but nothing can be counted yet.
    pub fn is_pending_attribution(&self) -> bool {
        self.labels.is_none() && !self.seen.is_empty()
    }

    fn fix_labels(&mut self) -> Labels {
        if let Some(l) = &self.labels {
            return l.clone();
        }
        let labels = match &self.hook {
            Some(h) if h.is_template => Labels {
                template: h.template.clone(),
                category: h.category,
            },
            Some(_) => Labels {
                template: NO_TEMPLATE.to_owned(),
                category: None,
            },
            None => Labels {
                template: UNKNOWN_TEMPLATE.to_owned(),
                category: self
                    .pricing
                    .as_ref()
                    .and_then(|p| p.category.as_deref())
                    .and_then(Category::parse),
            },
        };
        self.labels = Some(labels.clone());
        labels
    }

    /// Counts everything that is due and not yet counted (rules 1–5), marking it counted.
    /// Before the send hook arrives and within the grace period, nothing is due.
    pub fn settle(&mut self, now_ms: i64, grace_ms: i64, settings: &Settings, tally: &mut Tally) {
        if self.labels.is_none() && (self.seen.is_empty() || !self.attributable(now_ms, grace_ms)) {
            return;
        }
        let labels = self.fix_labels();
        let (provider, channel) = (self.provider, self.channel);

        let due = self.seen.closure().minus(self.counted);
        for status in due.iter() {
            tally.outbound.push(OutboundCount {
                provider,
                channel,
                status,
                template: labels.template.clone(),
                category: labels.category,
            });
        }
        self.counted = self.counted.union(due);

        if self.counted.contains(Status::Failed) && !self.observed.has(Observed::ERROR) {
            self.observed.set(Observed::ERROR);
            let code = self.error.as_ref().map_or("unknown", |e| e.code.as_str());
            tally.errors.push((provider, channel, code.to_owned()));
        }

        let latency = |seconds: f64| Latency {
            provider,
            channel,
            category: labels.category,
            seconds,
        };
        let delivered = self.time_of(Status::Delivered);
        if delivered > 0 && !self.observed.has(Observed::DELIVERY_LATENCY) {
            let start = self
                .hook
                .as_ref()
                .map(|h| h.sent_at_ms)
                .unwrap_or(self.time_of(Status::Sent));
            if start > 0 {
                self.observed.set(Observed::DELIVERY_LATENCY);
                tally
                    .delivery_latency
                    .push(latency(seconds_between(start, delivered)));
            }
        }
        let read = self.time_of(Status::Read);
        if delivered > 0 && read > 0 && !self.observed.has(Observed::READ_LATENCY) {
            self.observed.set(Observed::READ_LATENCY);
            tally
                .read_latency
                .push(latency(seconds_between(delivered, read)));
        }

        if self.is_billed() && !self.observed.has(Observed::COST) {
            self.observed.set(Observed::COST);
            if settings.cost_tracking_enabled {
                self.count_cost(settings, &labels, tally);
            }
        }
    }

    /// WhatsApp is charged at delivery (rule 5); SMS once sent, delivered or not, as
    /// Twilio bills every message it attempted to deliver (`provider-billing.md` §4).
    fn is_billed(&self) -> bool {
        match self.channel {
            Channel::Whatsapp => self.counted.contains(Status::Delivered),
            Channel::Sms => self.counted.contains(Status::Sent),
        }
    }

    /// The provider's segment count where it gave one, else the send hook's, else 1.
    pub fn segments(&self) -> u32 {
        match (self.segments, &self.hook) {
            (0, Some(h)) => h.segments.max(1),
            (0, None) => 1,
            (n, _) => n,
        }
    }

    fn count_cost(&mut self, settings: &Settings, labels: &Labels, tally: &mut Tally) {
        if self.channel == Channel::Sms {
            let amount =
                settings.sms_price(self.phone.as_ref(), SmsDirection::Outbound, self.segments());
            self.cost = amount;
            self.cost_category = None;
            self.currency = settings.sms_currency.clone();
            tally.cost.push(CostCount {
                provider: self.provider,
                channel: self.channel,
                category: category::SMS_COST,
                template: labels.template.clone(),
                currency: self.currency.clone(),
                amount,
            });
            return;
        }
        // With neither a pricing object nor a send hook there is nothing to price by.
        let (amount, category) = match (&self.hook, &self.pricing) {
            (None, None) => (0.0, None),
            (hook, pricing) => settings.delivered_cost(
                self.phone.as_ref(),
                pricing.as_ref(),
                hook.as_ref().and_then(|h| h.category),
                self.window_open_at_send,
            ),
        };
        self.cost = amount;
        self.cost_category = category;
        self.currency = settings.currency.clone();
        tally.cost.push(CostCount {
            provider: self.provider,
            channel: self.channel,
            category: category::label(category),
            template: labels.template.clone(),
            currency: settings.currency.clone(),
            amount,
        });
    }

    pub fn category_label(&self) -> &'static str {
        category::label(self.labels.as_ref().and_then(|l| l.category))
    }
}

fn seconds_between(from_ms: i64, to_ms: i64) -> f64 {
    (to_ms - from_ms).max(0) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: i64 = 30_000;

    fn msg() -> MessageState {
        MessageState::new(Provider::Meta, "wamid.1".into(), Channel::Whatsapp, 1_000)
    }

    fn hook(sent_at_ms: i64) -> Hook {
        Hook {
            is_template: true,
            template: "promo".into(),
            category: Some(Category::Marketing),
            sent_at_ms,
            segments: 1,
        }
    }

    fn statuses(t: &Tally) -> Vec<(Status, String)> {
        t.outbound
            .iter()
            .map(|o| (o.status, o.template.clone()))
            .collect()
    }

    #[test]
    fn status_before_hook_waits_then_is_attributed_to_the_template() {
        let s = Settings::default();
        let mut m = msg();
        let mut t = Tally::default();
        assert!(m.record_status(Status::Delivered, 5_000, None, None));
        m.settle(2_000, GRACE, &s, &mut t);
        assert!(
            t.outbound.is_empty(),
            "nothing counted inside the grace period"
        );
        m.record_hook(hook(1_500), None);
        m.settle(3_000, GRACE, &s, &mut t);
        assert_eq!(
            statuses(&t),
            vec![
                (Status::Accepted, "promo".into()),
                (Status::Sent, "promo".into()),
                (Status::Delivered, "promo".into())
            ]
        );
        assert_eq!(t.delivery_latency[0].seconds, 3.5);
        assert_eq!(t.cost[0].amount, 0.75);
    }

    #[test]
    fn after_the_grace_period_statuses_count_as_unknown_and_stay_so() {
        let s = Settings::default();
        let mut m = msg();
        let mut t = Tally::default();
        m.record_status(Status::Sent, 1_000, None, None);
        m.settle(1_000 + GRACE, GRACE, &s, &mut t);
        assert_eq!(statuses(&t), vec![(Status::Sent, "unknown".into())]);
        m.record_hook(hook(900), None);
        m.settle(40_000, GRACE, &s, &mut t);
        assert_eq!(t.outbound[1].template, "unknown");
        assert_eq!(t.outbound[1].status, Status::Accepted);
    }

    #[test]
    fn reverse_order_counts_the_same_as_in_order() {
        let s = Settings::default();
        let run = |order: &[Status]| {
            let mut m = msg();
            m.record_hook(hook(1_000), None);
            let mut t = Tally::default();
            for (i, st) in order.iter().enumerate() {
                m.record_status(*st, 2_000 + *st as i64 * 1000, None, None);
                m.settle(3_000 + i as i64, GRACE, &s, &mut t);
            }
            let mut got: Vec<Status> = t.outbound.iter().map(|o| o.status).collect();
            got.sort();
            (
                got,
                t.delivery_latency.len(),
                t.read_latency.len(),
                t.cost.len(),
            )
        };
        let forward = run(&[Status::Sent, Status::Delivered, Status::Read]);
        let backward = run(&[Status::Read, Status::Delivered, Status::Sent]);
        assert_eq!(forward, backward);
        assert_eq!(
            forward.0,
            vec![
                Status::Accepted,
                Status::Sent,
                Status::Delivered,
                Status::Read
            ]
        );
        assert_eq!((forward.1, forward.2, forward.3), (1, 1, 1));
    }

    #[test]
    fn redelivered_status_changes_nothing() {
        let s = Settings::default();
        let mut m = msg();
        m.record_hook(hook(1_000), None);
        let mut t = Tally::default();
        assert!(m.record_status(Status::Read, 9_000, None, None));
        m.settle(9_000, GRACE, &s, &mut t);
        let before = m.clone();
        assert!(!m.record_status(Status::Read, 9_500, None, None));
        let mut t2 = Tally::default();
        m.settle(9_500, GRACE, &s, &mut t2);
        assert_eq!(m, before);
        assert_eq!(t2, Tally::default());
    }

    #[test]
    fn failed_counts_its_error_code_once_and_costs_nothing() {
        let s = Settings::default();
        let mut m = msg();
        let err = MessageError {
            code: "131047".into(),
            ..Default::default()
        };
        m.record_status(Status::Failed, 2_000, None, Some(err));
        let mut t = Tally::default();
        m.settle(2_000 + GRACE, GRACE, &s, &mut t);
        m.settle(2_000 + GRACE * 2, GRACE, &s, &mut t);
        assert_eq!(
            t.errors,
            vec![(Provider::Meta, Channel::Whatsapp, "131047".to_string())]
        );
        assert!(t.cost.is_empty());
    }

    #[test]
    fn pricing_from_sent_is_used_when_delivered_has_none() {
        let s = Settings::default();
        let mut m = msg();
        m.record_hook(hook(1_000), None);
        let pricing = MetaPricing {
            kind: Some("free_customer_service".into()),
            category: Some("utility".into()),
            billable: Some(false),
        };
        m.record_status(Status::Sent, 1_100, Some(pricing), None);
        m.record_status(Status::Delivered, 1_200, None, None);
        let mut t = Tally::default();
        m.settle(2_000, GRACE, &s, &mut t);
        assert_eq!(t.cost[0].amount, 0.0);
        assert_eq!(t.cost[0].category, "utility");
    }

    #[test]
    fn read_without_delivered_has_no_read_latency_but_counts_the_funnel() {
        let s = Settings::default();
        let mut m = msg();
        m.record_status(Status::Read, 5_000, None, None);
        let mut t = Tally::default();
        m.settle(1_000 + GRACE, GRACE, &s, &mut t);
        assert_eq!(t.outbound.len(), 3);
        assert!(t.read_latency.is_empty() && t.delivery_latency.is_empty());
        // No hook and no pricing: counted at zero cost, category unknown.
        assert_eq!(t.cost[0].amount, 0.0);
    }
}
