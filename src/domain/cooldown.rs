//! The per-phone template cooldown: after a template goes to a phone, no other template
//! may go to it for `template_cooldown_hours`, whichever template it is.

pub const HOUR_MS: i64 = 3_600_000;

/// One phone's cooldown slot as stored (0 = never).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slot {
    /// `sent_at` of the latest template send hook.
    pub last_template_ms: i64,
    /// When an unconfirmed reservation took the slot. A reservation counts as a
    /// template sent at that moment until it is confirmed or released.
    pub hold_ms: i64,
}

impl Slot {
    /// The moment the cooldown runs from: the later of the last template and the hold.
    pub fn anchor_ms(self) -> i64 {
        self.last_template_ms.max(self.hold_ms)
    }

    /// When the slot frees, as seen at `t`; `None` when no template was ever sent or
    /// reserved. An anchor after `t` counts as `t`: nothing blocks for longer than the
    /// cooldown from now (CONTRACT §6.5).
    pub fn free_at_ms(self, t_ms: i64, cooldown_ms: i64) -> Option<i64> {
        let anchor = self.anchor_ms();
        (anchor > 0).then_some(anchor.min(t_ms) + cooldown_ms)
    }

    /// Free at `t` when the cooldown has fully run (at exactly `anchor + cooldown`).
    pub fn is_free_at(self, t_ms: i64, cooldown_ms: i64) -> bool {
        self.free_at_ms(t_ms, cooldown_ms)
            .is_none_or(|end| t_ms >= end)
    }

    /// Whole minutes until the slot frees, rounded up; 0 when free.
    pub fn remaining_minutes(self, t_ms: i64, cooldown_ms: i64) -> i64 {
        match self.free_at_ms(t_ms, cooldown_ms) {
            Some(end) if t_ms < end => (end - t_ms + 59_999) / 60_000,
            _ => 0,
        }
    }
}

/// The moment a template's cooldown runs from: its `sent_at`, or the moment the hook was
/// received if `sent_at` is later (a bot's clock running ahead), so that a send hook
/// never starts a cooldown longer than the cooldown from now.
pub fn starts_at(sent_at_ms: i64, received_ms: i64) -> i64 {
    sent_at_ms.min(received_ms)
}

/// The cooldown length in milliseconds for the configured hours.
pub fn cooldown_ms(hours: u32) -> i64 {
    i64::from(hours) * HOUR_MS
}

/// The latest `t` at which a slot anchored at or before `t - cooldown` is free: a
/// conditional write takes the slot only when both stored times are at or before this.
pub fn free_if_anchored_before(t_ms: i64, cooldown_ms: i64) -> i64 {
    t_ms - cooldown_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    const CD: i64 = 12 * HOUR_MS;

    #[test]
    fn a_template_sent_just_now_leaves_the_whole_cooldown() {
        let s = Slot {
            last_template_ms: 1_000,
            hold_ms: 0,
        };
        assert_eq!(s.remaining_minutes(1_000, CD), 720);
        assert!(!s.is_free_at(1_000, CD));
    }

    #[test]
    fn the_slot_frees_exactly_when_the_cooldown_ends() {
        let s = Slot {
            last_template_ms: 1_000,
            hold_ms: 0,
        };
        assert!(!s.is_free_at(1_000 + CD - 1_000, CD));
        assert_eq!(s.remaining_minutes(1_000 + CD - 1_000, CD), 1);
        assert!(s.is_free_at(1_000 + CD, CD));
        assert_eq!(s.remaining_minutes(1_000 + CD, CD), 0);
        assert!(s.is_free_at(1_000 + CD + 1_000, CD));
    }

    #[test]
    fn remaining_minutes_round_up() {
        let s = Slot {
            last_template_ms: 0,
            hold_ms: 60_000,
        };
        assert_eq!(s.remaining_minutes(60_000 + 1, CD), 720);
        assert_eq!(s.remaining_minutes(60_000 + 60_000, CD), 719);
        assert_eq!(s.remaining_minutes(60_000 + 60_001, CD), 719);
    }

    #[test]
    fn a_hold_counts_like_a_template_sent_at_reservation_time() {
        let s = Slot {
            last_template_ms: 1_000,
            hold_ms: 1_000 + HOUR_MS,
        };
        assert_eq!(s.anchor_ms(), 1_000 + HOUR_MS);
        assert!(!s.is_free_at(1_000 + CD, CD));
        assert!(s.is_free_at(1_000 + HOUR_MS + CD, CD));
    }

    #[test]
    fn never_used_slots_and_zero_cooldowns_are_free() {
        assert!(Slot::default().is_free_at(0, CD));
        assert_eq!(Slot::default().remaining_minutes(5, CD), 0);
        let s = Slot {
            last_template_ms: 1_000,
            hold_ms: 0,
        };
        assert!(s.is_free_at(1_000, cooldown_ms(0)));
    }

    #[test]
    fn no_slot_blocks_for_longer_than_the_cooldown_from_now() {
        let far_future = Slot {
            last_template_ms: 253_402_300_799_000,
            hold_ms: 0,
        };
        assert_eq!(far_future.remaining_minutes(1_000, CD), 720);
        let ahead = Slot {
            last_template_ms: 1_000 + 4 * 60_000,
            hold_ms: 0,
        };
        assert_eq!(ahead.remaining_minutes(1_000, CD), 720);
        assert!(!ahead.is_free_at(1_000, CD));
    }

    #[test]
    fn a_cooldown_starts_at_sent_at_but_never_after_receipt() {
        assert_eq!(starts_at(1_000, 5_000), 1_000);
        assert_eq!(starts_at(9_000, 5_000), 5_000);
    }

    #[test]
    fn the_write_condition_matches_is_free_at() {
        let s = Slot {
            last_template_ms: 5_000,
            hold_ms: 2_000,
        };
        for t in [5_000 + CD - 1, 5_000 + CD, 5_000 + CD + 1] {
            let bound = free_if_anchored_before(t, CD);
            let by_sql = s.last_template_ms <= bound && s.hold_ms <= bound;
            assert_eq!(by_sql, s.is_free_at(t, CD), "t = {t}");
        }
    }
}
