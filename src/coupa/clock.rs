//! Coupa's clock, as the poll windows see it: an offset from the host clock
//! learnt from `Date` headers. The window's upper bound rests on it, so one
//! wrong `Date` must not move it: the offset is adopted only when several
//! responses agree, moves as the median of recent agreeing samples, and a
//! sample that jumps further than `coupa.max_clock_jump` from it is
//! rejected (counted, logged at most once a minute). A real step of
//! Coupa's clock is adopted once every sample has shown it for a while.
//! Imports nothing from the crate above it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// Samples within this of each other agree (`Date` has whole seconds, and
/// the response took some time to arrive).
const AGREE_MS: i64 = 2_000;
/// Agreeing samples needed before the first offset is trusted.
const ADOPT_AFTER: usize = 3;
/// Recent samples kept (for adoption and the median).
const KEEP: usize = 5;
/// A step beyond `max_clock_jump` is adopted only after every sample for
/// this long, and at least [`STEP_SAMPLES`] of them, has shown it.
const STEP_AFTER: Duration = Duration::from_secs(120);
const STEP_SAMPLES: u32 = 20;
/// Rejections are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// What an observed `Date` did to the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// Agreed with the tracked offset (or helped establish it).
    Accepted,
    /// Jumped away from it: ignored for windows.
    Rejected,
    /// Replaced the offset after a sustained step (or was the sample that
    /// established it).
    Adopted,
}

/// Coupa's clock as an offset from the host's.
#[derive(Debug)]
pub struct Clock {
    max_jump_ms: i64,
    state: Mutex<State>,
    rejected: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// Coupa − host, in ms, once trusted.
    offset_ms: Option<i64>,
    /// Recent samples: candidates before adoption, agreeing ones after.
    recent: VecDeque<i64>,
    /// A run of rejected samples that agree with each other: a possible
    /// real step of Coupa's clock (its offset, since when, how many).
    step: Option<(i64, Instant, u32)>,
    last_log: Option<Instant>,
}

impl Clock {
    /// A clock that rejects samples further than `max_jump` from its offset.
    pub fn new(max_jump: Duration) -> Clock {
        Clock {
            max_jump_ms: i64::try_from(max_jump.as_millis()).unwrap_or(i64::MAX),
            state: Mutex::default(),
            rejected: AtomicU64::new(0),
        }
    }

    /// Takes one `Date` header value, received at host time `host`.
    pub fn observe(&self, date: DateTime<Utc>, host: DateTime<Utc>) -> Observed {
        let sample = (date - host).num_milliseconds();
        let mut s = crate::sync::lock(&self.state);
        let Some(offset) = s.offset_ms else {
            push(&mut s.recent, sample);
            let agreeing: Vec<i64> = s
                .recent
                .iter()
                .copied()
                .filter(|x| (x - sample).abs() <= AGREE_MS)
                .collect();
            if agreeing.len() >= ADOPT_AFTER {
                s.offset_ms = Some(median(&agreeing));
                s.recent = agreeing.into();
                return Observed::Adopted;
            }
            return Observed::Accepted;
        };
        if (sample - offset).abs() <= self.max_jump_ms {
            s.step = None;
            push(&mut s.recent, sample);
            let recent: Vec<i64> = s.recent.iter().copied().collect();
            s.offset_ms = Some(median(&recent));
            return Observed::Accepted;
        }
        self.rejected.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let step = match s.step {
            Some((o, since, n)) if (o - sample).abs() <= AGREE_MS => (o, since, n + 1),
            _ => (sample, now, 1),
        };
        s.step = Some(step);
        if step.2 >= STEP_SAMPLES && now.duration_since(step.1) >= STEP_AFTER {
            tracing::warn!(
                from_seconds = offset / 1000,
                to_seconds = sample / 1000,
                "Coupa's clock moved and every response has agreed for {}s; adopting it",
                STEP_AFTER.as_secs()
            );
            s.offset_ms = Some(sample);
            s.recent = VecDeque::from([sample]);
            s.step = None;
            return Observed::Adopted;
        }
        if s.last_log
            .is_none_or(|t| now.duration_since(t) >= LOG_EVERY)
        {
            s.last_log = Some(now);
            tracing::warn!(
                date = %date.to_rfc3339(),
                jump_seconds = (sample - offset) / 1000,
                rejected_total = self.rejected.load(Ordering::Relaxed),
                "ignoring a Coupa Date header that jumps beyond coupa.max_clock_jump from Coupa's tracked clock (logged once a minute)"
            );
        }
        Observed::Rejected
    }

    /// Coupa − host, once several responses agreed on it.
    pub fn offset(&self) -> Option<chrono::Duration> {
        let s = crate::sync::lock(&self.state);
        s.offset_ms.map(chrono::Duration::milliseconds)
    }

    /// Coupa's time now, once trusted.
    pub fn now(&self) -> Option<DateTime<Utc>> {
        self.offset().map(|o| Utc::now() + o)
    }

    /// `Date` headers ignored so far.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
}

fn push(recent: &mut VecDeque<i64>, sample: i64) {
    if recent.len() == KEEP {
        recent.pop_front();
    }
    recent.push_back(sample);
}

fn median(xs: &[i64]) -> i64 {
    let mut v = xs.to_vec();
    v.sort_unstable();
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(host: DateTime<Utc>, offset_s: i64) -> DateTime<Utc> {
        host + chrono::Duration::seconds(offset_s)
    }

    #[test]
    fn adopts_only_when_several_agree() {
        let c = Clock::new(Duration::from_secs(300));
        let h = Utc::now();
        assert_eq!(c.observe(at(h, 365 * 86_400), h), Observed::Accepted);
        assert_eq!(c.observe(at(h, 30), h), Observed::Accepted);
        assert_eq!(c.offset(), None, "two disagreeing samples trust nothing");
        c.observe(at(h, 31), h);
        assert_eq!(c.observe(at(h, 30), h), Observed::Adopted);
        assert_eq!(c.offset().map(|o| o.num_seconds()), Some(30));
    }

    #[test]
    fn a_jump_is_rejected_and_counted_and_moves_nothing() {
        let c = Clock::new(Duration::from_secs(300));
        let h = Utc::now();
        for _ in 0..3 {
            c.observe(h, h);
        }
        assert_eq!(c.observe(at(h, 365 * 86_400), h), Observed::Rejected);
        assert_eq!(c.observe(at(h, 301), h), Observed::Rejected);
        assert_eq!(c.rejected(), 2);
        assert_eq!(c.offset().map(|o| o.num_seconds()), Some(0));
        // Within the jump bound, one outlier cannot move the median.
        assert_eq!(c.observe(at(h, 200), h), Observed::Accepted);
        assert_eq!(c.offset().map(|o| o.num_seconds()), Some(0));
    }

    #[test]
    fn drift_moves_the_offset_once_several_agree() {
        let c = Clock::new(Duration::from_secs(300));
        let h = Utc::now();
        for _ in 0..3 {
            c.observe(h, h);
        }
        for _ in 0..3 {
            c.observe(at(h, 10), h);
        }
        assert_eq!(c.offset().map(|o| o.num_seconds()), Some(10));
    }
}
