//! The pre-send decision (CONTRACT §3): may this message go now, and at what cost.

use super::category::Category;
use super::cooldown::{cooldown_ms, Slot};
use super::phone::Phone;
use super::pricing::{CostReason, Quote};
use super::settings::Settings;
use super::window::Window;

/// Why a send is blocked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockedReason {
    /// Free-form message outside the 24-hour window with `block_out_of_session_messages` on.
    OutsideSessionWindow,
    /// A template inside the phone's cooldown, or while a reservation holds its slot.
    RateLimited,
}

impl BlockedReason {
    pub fn as_str(self) -> &'static str {
        match self {
            BlockedReason::OutsideSessionWindow => "outside_session_window",
            BlockedReason::RateLimited => "rate_limited",
        }
    }
}

/// What the check knows about the phone. `None` where the matching setting is off:
/// no window without session tracking, no slot without rate limiting or for free-form.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Known {
    pub window: Option<Window>,
    pub slot: Option<Slot>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    pub blocked: Option<BlockedReason>,
    pub quote: Quote,
}

impl Decision {
    /// The `{decision, reason}` labels of `messaging_presend_checks_total`: a blocked
    /// check says why it was blocked, an allowed one gives its cost reason.
    pub fn metric_labels(&self) -> (&'static str, &'static str) {
        match self.blocked {
            Some(b) => ("blocked", b.as_str()),
            None => ("allowed", self.quote.reason.as_str()),
        }
    }
}

/// Every `{decision, reason}` pair [`Decision::metric_labels`] can give, so the series
/// can start at zero.
pub fn metric_label_values() -> Vec<(&'static str, &'static str)> {
    let blocked = [
        BlockedReason::OutsideSessionWindow,
        BlockedReason::RateLimited,
    ]
    .map(|b| ("blocked", b.as_str()));
    let allowed = CostReason::ALL.map(|r| ("allowed", r.as_str()));
    blocked.into_iter().chain(allowed).collect()
}

/// The rules of §3. `category` is `None` for a free-form message.
pub fn decide(
    settings: &Settings,
    phone: &Phone,
    category: Option<Category>,
    known: Known,
    now_ms: i64,
) -> Decision {
    let open = known.window.is_some_and(|w| w.is_open_at(now_ms));
    let quote = settings.quote(Some(phone), category, open);
    let cooldown = cooldown_ms(settings.template_cooldown_hours);
    // An unknown window (session tracking off) blocks nothing.
    let outside = known.window.is_some() && !open;
    let blocked = if category.is_none() && settings.block_out_of_session_messages && outside {
        Some(BlockedReason::OutsideSessionWindow)
    } else if category.is_some()
        && settings.rate_limiting_enabled
        && known.slot.is_some_and(|s| !s.is_free_at(now_ms, cooldown))
    {
        Some(BlockedReason::RateLimited)
    } else {
        None
    };
    Decision { blocked, quote }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::cooldown::HOUR_MS;

    const NOW: i64 = 100 * HOUR_MS;

    fn phone() -> Phone {
        Phone::parse("919876543210").unwrap()
    }

    fn open() -> Option<Window> {
        Some(Window {
            last_inbound_ms: NOW - HOUR_MS,
        })
    }

    fn closed() -> Option<Window> {
        Some(Window::default())
    }

    fn blocking() -> Settings {
        Settings {
            block_out_of_session_messages: true,
            ..Settings::default()
        }
    }

    #[test]
    fn free_form_outside_the_window_is_blocked_only_when_configured() {
        let known = Known {
            window: closed(),
            slot: None,
        };
        let d = decide(&blocking(), &phone(), None, known, NOW);
        assert_eq!(d.blocked, Some(BlockedReason::OutsideSessionWindow));
        assert_eq!(d.metric_labels(), ("blocked", "outside_session_window"));
        let d = decide(&Settings::default(), &phone(), None, known, NOW);
        assert_eq!(d.blocked, None);
        assert_eq!(d.metric_labels(), ("allowed", "service_message"));
        let inside = Known {
            window: open(),
            slot: None,
        };
        assert_eq!(
            decide(&blocking(), &phone(), None, inside, NOW).blocked,
            None
        );
        let untracked = Known::default();
        assert_eq!(
            decide(&blocking(), &phone(), None, untracked, NOW).blocked,
            None
        );
    }

    #[test]
    fn templates_inside_the_cooldown_are_rate_limited_whatever_the_window() {
        let slot = Some(Slot {
            last_template_ms: NOW - 11 * HOUR_MS,
            hold_ms: 0,
        });
        for window in [open(), closed(), None] {
            let d = decide(
                &blocking(),
                &phone(),
                Some(Category::Marketing),
                Known { window, slot },
                NOW,
            );
            assert_eq!(d.blocked, Some(BlockedReason::RateLimited), "{window:?}");
        }
        let off = Settings {
            rate_limiting_enabled: false,
            ..Settings::default()
        };
        let d = decide(
            &off,
            &phone(),
            Some(Category::Marketing),
            Known { window: None, slot },
            NOW,
        );
        assert_eq!(d.blocked, None);
        assert_eq!(d.metric_labels(), ("allowed", "template_outside_session"));
    }

    #[test]
    fn a_free_form_message_is_never_rate_limited() {
        let slot = Some(Slot {
            last_template_ms: NOW,
            hold_ms: NOW,
        });
        let d = decide(
            &Settings::default(),
            &phone(),
            None,
            Known {
                window: open(),
                slot,
            },
            NOW,
        );
        assert_eq!(d.blocked, None);
    }

    #[test]
    fn metric_labels_are_a_closed_set_of_seven() {
        let all = metric_label_values();
        assert_eq!(all.len(), 7);
        assert!(all.contains(&("blocked", "rate_limited")));
        assert!(all.contains(&("allowed", "cost_tracking_disabled")));
    }
}
