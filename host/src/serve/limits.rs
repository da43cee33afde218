//! Per-token rate limits and quotas: requests per second (a token bucket),
//! upload bytes per UTC day. Concurrent runs are counted by [`super::runs`].
//! Over a limit, the answer is 429 with `Retry-After`. State is in memory:
//! a restart forgets request counts, not what the limits are.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::ServeLimits;

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The limits of every token, as configured.
pub struct Limiter {
    limits: ServeLimits,
    buckets: Mutex<HashMap<String, Bucket>>,
    /// token id -> (UTC day number, bytes uploaded that day)
    uploads: Mutex<HashMap<String, (i64, u64)>>,
}

fn utc_day() -> (i64, u64) {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    (
        now.div_euclid(86_400),
        (86_400 - now.rem_euclid(86_400)) as u64,
    )
}

impl Limiter {
    pub fn new(limits: ServeLimits) -> Self {
        Limiter {
            limits,
            buckets: Mutex::new(HashMap::new()),
            uploads: Mutex::new(HashMap::new()),
        }
    }

    pub fn limits(&self) -> &ServeLimits {
        &self.limits
    }

    /// Takes one request from `token`'s bucket, or says in how many
    /// seconds one will be there.
    pub fn request(&self, token: &str) -> Result<(), u64> {
        let rate = self.limits.requests_per_second;
        if rate <= 0.0 {
            return Ok(());
        }
        let burst = f64::from(self.limits.burst.max(1));
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = buckets.entry(token.to_string()).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    /// Bytes `token` may still upload today (`u64::MAX`: no quota), and the
    /// seconds until the quota resets.
    pub fn upload_allowance(&self, token: &str) -> (u64, u64) {
        let (day, reset) = utc_day();
        let quota = self.limits.upload_mib_per_day;
        if quota == 0 {
            return (u64::MAX, reset);
        }
        let uploads = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        let used = match uploads.get(token) {
            Some((d, used)) if *d == day => *used,
            _ => 0,
        };
        (quota.saturating_mul(1 << 20).saturating_sub(used), reset)
    }

    /// Counts `bytes` received from `token` against today's quota.
    pub fn count_upload(&self, token: &str, bytes: u64) {
        if self.limits.upload_mib_per_day == 0 {
            return;
        }
        let (day, _) = utc_day();
        let mut uploads = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        let e = uploads.entry(token.to_string()).or_insert((day, 0));
        if e.0 != day {
            *e = (day, 0);
        }
        e.1 = e.1.saturating_add(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let l = Limiter::new(ServeLimits {
            requests_per_second: 1.0,
            burst: 3,
            ..ServeLimits::default()
        });
        for _ in 0..3 {
            assert!(l.request("a").is_ok());
        }
        assert_eq!(l.request("a"), Err(1));
        assert!(l.request("b").is_ok(), "buckets are per token");
    }

    #[test]
    fn uploads_count_against_the_daily_quota() {
        let l = Limiter::new(ServeLimits {
            upload_mib_per_day: 1,
            ..ServeLimits::default()
        });
        assert_eq!(l.upload_allowance("a").0, 1 << 20);
        l.count_upload("a", 1000);
        assert_eq!(l.upload_allowance("a").0, (1 << 20) - 1000);
        assert_eq!(l.upload_allowance("b").0, 1 << 20);
    }
}
