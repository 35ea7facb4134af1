//! The one retry delay used everywhere (Coupa requests, sink deliveries):
//! exponential with full jitter, so many daemons or tasks failing together
//! do not retry in step.

use std::time::Duration;

use rand::Rng;

/// Delay before retry number `attempt` (1 = first retry): uniform in
/// `[0, min(cap, base · 2^(attempt−1))]`.
pub fn full_jitter(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let ceiling = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(cap);
    rand::rng().random_range(Duration::ZERO..=ceiling)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_is_capped() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(5);
        for n in 0..40 {
            assert!(full_jitter(n, base, cap) <= cap, "{n}");
        }
        assert!(full_jitter(1, base, cap) <= base);
        assert!(full_jitter(3, base, cap) <= base * 4);
        // Over many draws the ceiling is reached: the spread is real.
        let max = (0..200).map(|_| full_jitter(10, base, cap)).max().unwrap();
        assert!(max > Duration::from_secs(4), "{max:?}");
    }
}
