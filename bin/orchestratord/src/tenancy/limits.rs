//! The arithmetic of tenant limits, pure and clock-injected: token buckets (requests and tokens
//! per minute), the daily quota (UTC days) and the `Retry-After` each one implies.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};

/// Milliseconds in a UTC day.
pub const DAY_MS: u64 = 86_400_000;

/// Where tenancy reads the time (unix ms); tests inject a [`ManualClock`].
pub trait Clock: Send + Sync + Debug {
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        crate::task::unix_ms()
    }
}

/// A clock that moves only when told (tests).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock showing `ms`.
    pub fn at(ms: u64) -> Self {
        Self(AtomicU64::new(ms))
    }

    /// Move forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A token bucket of `per_minute` refilled evenly over a minute. Starts full. `charge` may
/// overdraw it (tokens counted after the fact); `take` and `positive` say how long until they
/// would pass. Fixed point: one token is 60 000 units, so the refill is `per_minute` units/ms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    per_minute: i128,
    level: i128,
    at_ms: u64,
}

const UNIT: i128 = 60_000;

impl Bucket {
    /// A full bucket of `per_minute`.
    pub fn per_minute(per_minute: u64, now_ms: u64) -> Self {
        let per_minute = i128::from(per_minute.max(1));
        Self {
            per_minute,
            level: per_minute * UNIT,
            at_ms: now_ms,
        }
    }

    /// Its rate per minute.
    pub fn rate(&self) -> u64 {
        self.per_minute as u64
    }

    fn refill(&mut self, now_ms: u64) {
        let dt = i128::from(now_ms.saturating_sub(self.at_ms));
        self.level = (self.level + dt * self.per_minute).min(self.per_minute * UNIT);
        self.at_ms = self.at_ms.max(now_ms);
    }

    /// Current level in tokens (negative while overdrawn).
    pub fn level(&mut self, now_ms: u64) -> f64 {
        self.refill(now_ms);
        self.level as f64 / UNIT as f64
    }

    /// Take `n` if the bucket holds it, else the ms until it will:
    /// `ceil((n - level) × 60 000 / per_minute)`.
    pub fn take(&mut self, n: u64, now_ms: u64) -> Result<(), u64> {
        self.refill(now_ms);
        let need = i128::from(n) * UNIT;
        if self.level >= need {
            self.level -= need;
            Ok(())
        } else {
            let short = need - self.level;
            Err(((short + self.per_minute - 1) / self.per_minute) as u64)
        }
    }

    /// Ok while the bucket is not overdrawn, else the ms until it is above zero again:
    /// `floor(-level × 60 000 / per_minute) + 1`.
    pub fn positive(&mut self, now_ms: u64) -> Result<(), u64> {
        self.refill(now_ms);
        if self.level > 0 {
            Ok(())
        } else {
            Err((-self.level / self.per_minute + 1) as u64)
        }
    }

    /// Remove `n` tokens (may go negative).
    pub fn charge(&mut self, n: u64, now_ms: u64) {
        self.refill(now_ms);
        self.level -= i128::from(n) * UNIT;
    }
}

/// Tokens used in the current UTC day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DayCount {
    day: u64,
    used: u64,
}

impl DayCount {
    /// `used` tokens in the day of `now_ms`.
    pub fn new(used: u64, now_ms: u64) -> Self {
        Self {
            day: now_ms / DAY_MS,
            used,
        }
    }

    fn roll(&mut self, now_ms: u64) {
        let day = now_ms / DAY_MS;
        if day != self.day {
            self.day = day;
            self.used = 0;
        }
    }

    /// Add `n` tokens to today's count.
    pub fn add(&mut self, n: u64, now_ms: u64) {
        self.roll(now_ms);
        self.used += n;
    }

    /// Today's count.
    pub fn used(&mut self, now_ms: u64) -> u64 {
        self.roll(now_ms);
        self.used
    }

    /// Ok under `quota`, else the ms until the next UTC midnight.
    pub fn check(&mut self, quota: u64, now_ms: u64) -> Result<(), u64> {
        if self.used(now_ms) < quota {
            Ok(())
        } else {
            Err(ms_to_next_day(now_ms))
        }
    }
}

/// Ms from `now_ms` to the next UTC midnight (at least 1).
pub fn ms_to_next_day(now_ms: u64) -> u64 {
    (now_ms / DAY_MS + 1) * DAY_MS - now_ms
}

/// `YYYY-MM-DD` of a unix ms (UTC, proleptic Gregorian).
pub fn day_string(now_ms: u64) -> String {
    let days = (now_ms / DAY_MS) as i64;
    // civil-from-days: shift the epoch to 0000-03-01 so leap days end each 400-year era
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Whether `s` is a `YYYY-MM-DD` string (compared as text in queries).
pub fn is_day(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// `Retry-After` seconds for a wait of `ms`: rounded up, at least 1.
pub fn retry_after_secs(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bucket_refills_evenly() {
        let mut b = Bucket::per_minute(2, 0);
        assert_eq!(b.take(1, 0), Ok(()));
        assert_eq!(b.take(1, 0), Ok(()));
        // one request per 30 s
        assert_eq!(b.take(1, 0), Err(30_000));
        assert_eq!(b.take(1, 10_000), Err(20_000));
        assert_eq!(b.take(1, 30_000), Ok(()));
        // never above capacity
        assert_eq!(b.level(10_000_000), 2.0);
    }

    #[test]
    fn token_bucket_overdraws_then_waits() {
        let mut b = Bucket::per_minute(600, 0); // 10 per s
        assert_eq!(b.positive(0), Ok(()));
        b.charge(900, 0); // one big task: 300 in debt
        let wait = b.positive(0).unwrap_err();
        assert_eq!(wait, 30_001);
        assert!(b.positive(wait - 2).is_err());
        assert_eq!(b.positive(wait), Ok(()), "honouring the wait succeeds");
        assert_eq!(retry_after_secs(wait), 31);
        assert_eq!(retry_after_secs(1), 1);
    }

    #[test]
    fn daily_quota_resets_at_utc_midnight() {
        let noon = 20_000 * DAY_MS + DAY_MS / 2;
        let mut d = DayCount::new(0, noon);
        d.add(999, noon);
        assert_eq!(d.check(1000, noon), Ok(()));
        d.add(1, noon + 1000);
        let wait = d.check(1000, noon + 1000).unwrap_err();
        assert_eq!(wait, DAY_MS / 2 - 1000);
        assert!(d.check(1000, noon + 1000 + wait - 1).is_err());
        assert_eq!(d.check(1000, noon + 1000 + wait), Ok(()), "a new day");
        assert_eq!(d.used(noon + 1000 + wait), 0);
    }

    #[test]
    fn day_strings() {
        assert_eq!(day_string(0), "1970-01-01");
        assert_eq!(day_string(951_782_400_000), "2000-02-29");
        assert_eq!(day_string(1_798_761_600_000 - 1), "2026-12-31");
        assert_eq!(day_string(1_798_761_600_000), "2027-01-01");
        assert!(is_day("2026-12-05"));
        assert!(!is_day("2026-1-05") && !is_day("2026-12-0x"));
        let c = ManualClock::at(5);
        c.advance(10);
        assert_eq!(c.now_ms(), 15);
    }
}
