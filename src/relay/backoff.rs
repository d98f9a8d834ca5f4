//! When a failed delivery is tried again: exponential backoff from 1 s to 5 min, with
//! jitter so that webhooks that failed together (the bot went down) do not all come back
//! at once.

/// The wait after the first failed attempt.
pub const FIRST_MS: i64 = 1_000;
/// The longest wait between attempts.
pub const MAX_MS: i64 = 300_000;

/// The wait after the `attempts`-th failed attempt (1-based): 1 s doubled each time up to
/// 5 min, spread from 80% to 120% of it by `jitter` (0 to 1), and kept within 1 s and
/// 5 min.
pub fn delay_ms(attempts: i64, jitter: f64) -> i64 {
    let doublings = attempts.saturating_sub(1).clamp(0, 20) as u32;
    let full = FIRST_MS.saturating_mul(1_i64 << doublings).min(MAX_MS);
    let spread = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
    ((full as f64 * spread) as i64).clamp(FIRST_MS, MAX_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_from_one_second_and_stops_at_five_minutes() {
        assert_eq!(delay_ms(1, 0.5), 1_000);
        assert_eq!(delay_ms(2, 0.5), 2_000);
        assert_eq!(delay_ms(3, 0.5), 4_000);
        assert_eq!(delay_ms(9, 0.5), 256_000);
        assert_eq!(delay_ms(10, 0.5), MAX_MS);
        assert_eq!(delay_ms(1_000, 0.5), MAX_MS);
        assert_eq!(
            delay_ms(0, 0.5),
            1_000,
            "a zero count is taken as the first"
        );
    }

    #[test]
    fn jitter_spreads_the_wait_but_never_past_one_second_or_five_minutes() {
        assert_eq!(delay_ms(1, 0.0), FIRST_MS);
        assert_eq!(delay_ms(1, 1.0), 1_200);
        assert_eq!(delay_ms(4, 0.0), 6_400);
        assert_eq!(delay_ms(4, 1.0), 9_600);
        assert_eq!(delay_ms(20, 0.0), 240_000);
        assert_eq!(delay_ms(20, 1.0), MAX_MS);
    }
}
