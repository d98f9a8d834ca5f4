//! Meta's conversation/pricing categories, which also label our metrics.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Marketing,
    MarketingLite,
    Utility,
    Authentication,
    #[serde(alias = "authentication-international")]
    AuthenticationInternational,
    Service,
}

impl Category {
    pub const ALL: [Category; 6] = [
        Category::Marketing,
        Category::MarketingLite,
        Category::Utility,
        Category::Authentication,
        Category::AuthenticationInternational,
        Category::Service,
    ];

    /// Parses our names and Meta's (which hyphenate `authentication-international`
    /// in `pricing.category` and may upper-case them in template events).
    pub fn parse(raw: &str) -> Option<Self> {
        let norm = raw.trim().to_ascii_lowercase().replace('-', "_");
        Self::ALL.into_iter().find(|c| c.as_str() == norm)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Marketing => "marketing",
            Category::MarketingLite => "marketing_lite",
            Category::Utility => "utility",
            Category::Authentication => "authentication",
            Category::AuthenticationInternational => "authentication_international",
            Category::Service => "service",
        }
    }

    /// The category whose price applies when this one has none of its own.
    pub fn base(self) -> Option<Self> {
        match self {
            Category::MarketingLite => Some(Category::Marketing),
            Category::AuthenticationInternational => Some(Category::Authentication),
            _ => None,
        }
    }
}

/// The `category` label of SMS cost: SMS has one rate card, whatever the message.
pub const SMS_COST: &str = "sms";

/// The `category` label value: a category or `none` (free-form, or nothing known).
pub fn label(category: Option<Category>) -> &'static str {
    category.map_or("none", Category::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hyphenated_and_upper_case_meta_names() {
        assert_eq!(
            Category::parse("authentication-international"),
            Some(Category::AuthenticationInternational)
        );
        assert_eq!(Category::parse("UTILITY"), Some(Category::Utility));
        assert_eq!(Category::parse("referral_conversion"), None);
    }

    #[test]
    fn lite_and_international_fall_back_to_their_base() {
        assert_eq!(Category::MarketingLite.base(), Some(Category::Marketing));
        assert_eq!(
            Category::AuthenticationInternational.base(),
            Some(Category::Authentication)
        );
        assert_eq!(Category::Utility.base(), None);
    }
}
