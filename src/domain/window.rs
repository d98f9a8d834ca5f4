//! The 24-hour customer-service window: open at an inbound user message, rolling.

pub const WINDOW_MS: i64 = 24 * 3600 * 1000;

/// One phone's window, from the time of its latest inbound message (0 = never).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    pub last_inbound_ms: i64,
}

impl Window {
    pub fn expires_at_ms(self) -> Option<i64> {
        (self.last_inbound_ms > 0).then_some(self.last_inbound_ms + WINDOW_MS)
    }

    /// Open at `t` when the latest inbound message is at or before `t` and less than
    /// 24 h before it.
    pub fn is_open_at(self, t_ms: i64) -> bool {
        self.expires_at_ms()
            .is_some_and(|end| self.last_inbound_ms <= t_ms && t_ms < end)
    }

    /// Whole minutes left at `t`, rounded up.
    pub fn remaining_minutes(self, t_ms: i64) -> i64 {
        match self.expires_at_ms() {
            Some(end) if self.is_open_at(t_ms) => (end - t_ms + 59_999) / 60_000,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_for_exactly_24_hours_after_the_latest_inbound() {
        let w = Window {
            last_inbound_ms: 1_000,
        };
        assert!(w.is_open_at(1_000));
        assert!(w.is_open_at(1_000 + WINDOW_MS - 1));
        assert!(!w.is_open_at(1_000 + WINDOW_MS));
        assert!(!w.is_open_at(999));
        assert!(!Window::default().is_open_at(5));
    }

    #[test]
    fn remaining_minutes_round_up() {
        let w = Window { last_inbound_ms: 1 };
        assert_eq!(w.remaining_minutes(1), 1440);
        assert_eq!(w.remaining_minutes(1 + 60_001), 1439);
        assert_eq!(w.remaining_minutes(WINDOW_MS), 1);
        assert_eq!(w.remaining_minutes(WINDOW_MS + 1), 0);
    }
}
