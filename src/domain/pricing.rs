//! What a message costs: the rate card lookup and the free-in-window rule.

use super::category::Category;
use super::phone::Phone;
use super::settings::{Settings, SmsDirection};

/// Why a message costs what it costs (`cost.reason` of `/v1/check-send`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CostReason {
    ServiceMessage,
    WithinSession,
    TemplateOutsideSession,
    CategoryAlwaysCharged,
    CostTrackingDisabled,
}

impl CostReason {
    pub const ALL: [CostReason; 5] = [
        CostReason::ServiceMessage,
        CostReason::WithinSession,
        CostReason::TemplateOutsideSession,
        CostReason::CategoryAlwaysCharged,
        CostReason::CostTrackingDisabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CostReason::ServiceMessage => "service_message",
            CostReason::WithinSession => "within_session",
            CostReason::TemplateOutsideSession => "template_outside_session",
            CostReason::CategoryAlwaysCharged => "category_always_charged",
            CostReason::CostTrackingDisabled => "cost_tracking_disabled",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quote {
    pub amount: f64,
    pub reason: CostReason,
}

/// Meta's `pricing` object as it arrives on a status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetaPricing {
    pub kind: Option<String>,
    pub category: Option<String>,
    pub billable: Option<bool>,
}

impl MetaPricing {
    /// `type: regular` is charged, any `free_*` type is not; `billable` only decides
    /// when `type` is absent (Meta is deprecating it).
    pub fn is_charged(&self) -> bool {
        match self.kind.as_deref() {
            Some(kind) => kind == "regular",
            None => self.billable.unwrap_or(false),
        }
    }
}

impl Settings {
    /// The rate-card price of one message: the longest matching country prefix first,
    /// then the global rates; within each, the category's own price, then its base's.
    pub fn price(&self, phone: Option<&Phone>, category: Category) -> f64 {
        let lookup = |table: &std::collections::BTreeMap<Category, f64>| {
            table
                .get(&category)
                .or_else(|| category.base().and_then(|b| table.get(&b)))
                .copied()
        };
        longest_prefix(&self.country_rates, phone)
            .and_then(lookup)
            .or_else(|| lookup(&self.rates))
            .unwrap_or(0.0)
    }

    /// The SMS rate card's price of `segments` segments one way (CONTRACT §9): the
    /// longest matching prefix of `sms_country_rates` first, then `sms_rates`.
    pub fn sms_price(&self, phone: Option<&Phone>, direction: SmsDirection, segments: u32) -> f64 {
        let per_segment = longest_prefix(&self.sms_country_rates, phone)
            .and_then(|t| t.get(&direction))
            .or_else(|| self.sms_rates.get(&direction))
            .copied()
            .unwrap_or(0.0);
        per_segment * f64::from(segments.max(1))
    }

    /// What an inbound message costs at receipt: SMS is charged per segment received;
    /// `None` for WhatsApp (free inbound) or while cost tracking is off.
    pub fn inbound_cost(
        &self,
        phone: Option<&Phone>,
        channel: super::Channel,
        segments: u32,
    ) -> Option<f64> {
        (channel == super::Channel::Sms && self.cost_tracking_enabled)
            .then(|| self.sms_price(phone, SmsDirection::Inbound, segments))
    }

    pub fn is_free_in_window(&self, category: Category) -> bool {
        self.free_in_window_categories.contains(&category)
    }

    /// The §3 rule: what sending this message now would cost, and why.
    /// `category` is `None` for free-form messages (priced as `service`).
    pub fn quote(
        &self,
        phone: Option<&Phone>,
        category: Option<Category>,
        window_open: bool,
    ) -> Quote {
        if !self.cost_tracking_enabled {
            return Quote {
                amount: 0.0,
                reason: CostReason::CostTrackingDisabled,
            };
        }
        let priced = category.unwrap_or(Category::Service);
        let free = window_open && self.is_free_in_window(priced);
        let amount = if free { 0.0 } else { self.price(phone, priced) };
        let reason = match (category, window_open) {
            (None, _) => CostReason::ServiceMessage,
            (Some(_), true) if free => CostReason::WithinSession,
            (Some(_), true) => CostReason::CategoryAlwaysCharged,
            (Some(_), false) => CostReason::TemplateOutsideSession,
        };
        Quote { amount, reason }
    }

    /// The cost of a delivered message (counting rule 5). Meta's `pricing` decides when
    /// present; otherwise the §3 rule with the window as it was at send time.
    /// Returns the amount and the category it was priced at.
    pub fn delivered_cost(
        &self,
        phone: Option<&Phone>,
        pricing: Option<&MetaPricing>,
        hook_category: Option<Category>,
        window_open_at_send: bool,
    ) -> (f64, Option<Category>) {
        if let Some(p) = pricing {
            let category = p
                .category
                .as_deref()
                .and_then(Category::parse)
                .or(hook_category);
            let amount = match category {
                Some(c) if p.is_charged() => self.price(phone, c),
                _ => 0.0,
            };
            return (amount, category);
        }
        let quote = self.quote(phone, hook_category, window_open_at_send);
        (quote.amount, hook_category.or(Some(Category::Service)))
    }
}

/// The table of the longest calling-code prefix that `phone` starts with.
fn longest_prefix<'a, T>(
    tables: &'a std::collections::BTreeMap<String, T>,
    phone: Option<&Phone>,
) -> Option<&'a T> {
    let phone = phone?;
    tables
        .iter()
        .filter(|(prefix, _)| phone.as_str().starts_with(prefix.as_str()))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, table)| table)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn phone(s: &str) -> Phone {
        Phone::parse(s).unwrap()
    }

    fn with_us_rates() -> Settings {
        let mut s = Settings::default();
        s.country_rates.insert(
            "1".into(),
            BTreeMap::from([(Category::Marketing, 0.025), (Category::Utility, 0.004)]),
        );
        s.country_rates
            .insert("1555".into(), BTreeMap::from([(Category::Marketing, 0.03)]));
        s
    }

    #[test]
    fn longest_country_prefix_wins() {
        let s = with_us_rates();
        assert_eq!(
            s.price(Some(&phone("15550100177")), Category::Marketing),
            0.03
        );
        assert_eq!(
            s.price(Some(&phone("14155550100")), Category::Marketing),
            0.025
        );
    }

    #[test]
    fn missing_country_price_falls_back_to_base_then_global() {
        let s = with_us_rates();
        // 1555 has no utility price, and a longer prefix does not fall through to "1".
        assert_eq!(
            s.price(Some(&phone("15550100177")), Category::Utility),
            0.35
        );
        assert_eq!(
            s.price(Some(&phone("14155550100")), Category::MarketingLite),
            0.025
        );
        assert_eq!(
            s.price(
                Some(&phone("919876543210")),
                Category::AuthenticationInternational
            ),
            0.30
        );
        assert_eq!(s.price(None, Category::Service), 0.0);
    }

    #[test]
    fn sms_is_priced_per_segment_from_its_own_card() {
        let mut s = with_us_rates();
        s.sms_country_rates.insert(
            "91".into(),
            BTreeMap::from([(SmsDirection::Outbound, 0.0832)]),
        );
        let india = phone("919876543210");
        assert_eq!(
            s.sms_price(Some(&india), SmsDirection::Outbound, 3),
            0.0832 * 3.0
        );
        // A direction the country does not price falls back to the global card.
        assert_eq!(
            s.sms_price(Some(&india), SmsDirection::Inbound, 2),
            0.0079 * 2.0
        );
        // The WhatsApp card's US prices never apply to SMS.
        assert_eq!(
            s.sms_price(Some(&phone("14155550100")), SmsDirection::Outbound, 1),
            0.0079
        );
    }

    #[test]
    fn quote_reasons_follow_the_window_and_free_list() {
        let s = Settings::default();
        let p = phone("919876543210");
        let q = |c, open| s.quote(Some(&p), c, open);
        assert_eq!(
            q(None, true),
            Quote {
                amount: 0.0,
                reason: CostReason::ServiceMessage
            }
        );
        assert_eq!(
            q(Some(Category::Utility), true).reason,
            CostReason::CategoryAlwaysCharged
        );
        assert_eq!(q(Some(Category::Utility), true).amount, 0.35);
        assert_eq!(
            q(Some(Category::Marketing), false),
            Quote {
                amount: 0.75,
                reason: CostReason::TemplateOutsideSession
            }
        );
        assert_eq!(
            q(Some(Category::Service), true),
            Quote {
                amount: 0.0,
                reason: CostReason::WithinSession
            }
        );
        let mut old_terms = Settings::default();
        old_terms.free_in_window_categories.push(Category::Utility);
        assert_eq!(
            old_terms
                .quote(Some(&p), Some(Category::Utility), true)
                .amount,
            0.0
        );
        let off = Settings {
            cost_tracking_enabled: false,
            ..Settings::default()
        };
        assert_eq!(
            off.quote(Some(&p), Some(Category::Marketing), false).reason,
            CostReason::CostTrackingDisabled
        );
    }

    #[test]
    fn meta_pricing_type_decides_before_billable() {
        let regular = MetaPricing {
            kind: Some("regular".into()),
            category: Some("marketing".into()),
            billable: Some(false),
        };
        let free = MetaPricing {
            kind: Some("free_customer_service".into()),
            category: Some("utility".into()),
            billable: Some(true),
        };
        let legacy = MetaPricing {
            kind: None,
            category: Some("utility".into()),
            billable: Some(true),
        };
        assert!(regular.is_charged());
        assert!(!free.is_charged());
        assert!(legacy.is_charged());
        let s = Settings::default();
        let p = phone("919812345678");
        assert_eq!(
            s.delivered_cost(Some(&p), Some(&regular), None, false),
            (0.75, Some(Category::Marketing))
        );
        assert_eq!(
            s.delivered_cost(Some(&p), Some(&free), None, false),
            (0.0, Some(Category::Utility))
        );
        let intl = MetaPricing {
            kind: Some("regular".into()),
            category: Some("authentication-international".into()),
            billable: None,
        };
        assert_eq!(
            s.delivered_cost(Some(&p), Some(&intl), None, false),
            (0.30, Some(Category::AuthenticationInternational))
        );
    }

    #[test]
    fn without_pricing_the_window_at_send_time_decides() {
        let s = Settings::default();
        let p = phone("919812345678");
        assert_eq!(
            s.delivered_cost(Some(&p), None, Some(Category::Utility), true),
            (0.35, Some(Category::Utility))
        );
        assert_eq!(
            s.delivered_cost(Some(&p), None, None, true),
            (0.0, Some(Category::Service))
        );
        assert_eq!(
            s.delivered_cost(Some(&p), None, Some(Category::Marketing), false),
            (0.75, Some(Category::Marketing))
        );
    }
}
