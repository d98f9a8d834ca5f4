//! Times that come from outside (CONTRACT §6.5). A provider's clock may run a little
//! ahead of ours; a time far ahead, or long past, is a broken clock or a broken field,
//! and must not stretch a latency, a window or a cooldown.

/// How far ahead of the exporter's clock a time may be and still be taken as given.
pub const MAX_AHEAD_MS: i64 = 5 * 60_000;

/// 2015-01-01T00:00:00Z: no report the bot makes about a message can be older.
pub const EARLIEST_REPORTED_MS: i64 = 1_420_070_400_000;

/// A provider's timestamp as used: more than [`MAX_AHEAD_MS`] ahead of its receipt, it
/// is taken as the receipt time (the event still counts; it is never refused for it).
pub fn provider_time(at_ms: i64, receipt_ms: i64) -> i64 {
    if at_ms > receipt_ms + MAX_AHEAD_MS {
        receipt_ms
    } else {
        at_ms
    }
}

/// Why a time the bot reports (a send hook's `sent_at`) is refused: more than
/// [`MAX_AHEAD_MS`] ahead of its receipt, or before [`EARLIEST_REPORTED_MS`].
pub fn check_reported(at_ms: i64, receipt_ms: i64) -> Result<(), &'static str> {
    if at_ms > receipt_ms + MAX_AHEAD_MS {
        Err("must not be more than 5 minutes ahead of the exporter's clock")
    } else if at_ms < EARLIEST_REPORTED_MS {
        Err("must not be before 2015-01-01T00:00:00Z")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_000_000_000;

    #[test]
    fn a_provider_time_up_to_five_minutes_ahead_is_kept_and_later_ones_become_receipt() {
        assert_eq!(provider_time(NOW - 60_000, NOW), NOW - 60_000);
        assert_eq!(provider_time(NOW + MAX_AHEAD_MS, NOW), NOW + MAX_AHEAD_MS);
        assert_eq!(provider_time(NOW + MAX_AHEAD_MS + 1, NOW), NOW);
        assert_eq!(provider_time(4_102_444_800_000, NOW), NOW, "a time in 2100");
    }

    #[test]
    fn reported_times_must_lie_between_2015_and_five_minutes_from_now() {
        assert_eq!(check_reported(NOW, NOW), Ok(()));
        assert_eq!(check_reported(NOW + MAX_AHEAD_MS, NOW), Ok(()));
        assert!(check_reported(NOW + MAX_AHEAD_MS + 1, NOW).is_err());
        assert!(
            check_reported(253_402_300_799_000, NOW).is_err(),
            "9999-12-31"
        );
        assert_eq!(check_reported(EARLIEST_REPORTED_MS, NOW), Ok(()));
        assert!(check_reported(EARLIEST_REPORTED_MS - 1, NOW).is_err());
    }
}
