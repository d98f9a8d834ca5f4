//! One phone's conversation state: its window, counts and the unanswered inbound message.

use super::window::{Window, WINDOW_MS};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionState {
    pub phone: String,
    /// When the current window opened (the first inbound after a closed window).
    pub window_started_ms: i64,
    pub last_inbound_ms: i64,
    /// Earliest inbound message not yet answered by an outbound one; 0 when none.
    pub pending_inbound_ms: i64,
    pub user_messages: i64,
    pub business_messages: i64,
}

impl SessionState {
    pub fn window(&self) -> Window {
        Window {
            last_inbound_ms: self.last_inbound_ms,
        }
    }

    /// An inbound user message at `at_ms` opens the window or extends it. Messages may
    /// arrive out of order, so only a later message moves the window's end.
    pub fn record_inbound(&mut self, at_ms: i64) {
        if !self.window().is_open_at(at_ms) && at_ms >= self.last_inbound_ms {
            self.window_started_ms = at_ms;
        } else if at_ms < self.window_started_ms && at_ms + WINDOW_MS > self.window_started_ms {
            // A late-arriving older message of the same window moves its start back.
            self.window_started_ms = at_ms;
        }
        self.last_inbound_ms = self.last_inbound_ms.max(at_ms);
        if self.pending_inbound_ms == 0 || at_ms < self.pending_inbound_ms {
            self.pending_inbound_ms = at_ms;
        }
        self.user_messages += 1;
    }

    /// An outbound message sent at `sent_ms`: counts it, and answers the earliest
    /// unanswered inbound message, returning the response latency in seconds.
    pub fn record_outbound(&mut self, sent_ms: i64) -> Option<f64> {
        self.business_messages += 1;
        let pending = self.pending_inbound_ms;
        if pending == 0 || pending > sent_ms {
            return None;
        }
        self.pending_inbound_ms = 0;
        // An answer more than a window later is not a response to that message.
        (sent_ms - pending < WINDOW_MS).then(|| (sent_ms - pending) as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_opens_and_later_inbound_extends_the_window() {
        let mut s = SessionState::default();
        s.record_inbound(1_000);
        assert_eq!((s.window_started_ms, s.last_inbound_ms), (1_000, 1_000));
        s.record_inbound(5_000);
        assert_eq!((s.window_started_ms, s.last_inbound_ms), (1_000, 5_000));
        s.record_inbound(3_000);
        assert_eq!(
            s.last_inbound_ms, 5_000,
            "an older message does not shorten the window"
        );
        s.record_inbound(5_000 + WINDOW_MS + 1);
        assert_eq!(
            s.window_started_ms,
            5_000 + WINDOW_MS + 1,
            "a new window after expiry"
        );
        assert_eq!(s.user_messages, 4);
    }

    #[test]
    fn outbound_answers_the_earliest_unanswered_inbound_once() {
        let mut s = SessionState::default();
        s.record_inbound(10_000);
        s.record_inbound(12_000);
        assert_eq!(s.record_outbound(9_000), None, "sent before the question");
        assert_eq!(s.record_outbound(14_500), Some(4.5));
        assert_eq!(s.record_outbound(15_000), None);
        assert_eq!(s.business_messages, 3);
    }
}
