//! Randomness for timing: renewals and retries of sidecars started
//! together spread out instead of arriving at the broker in step
//! ([`unit`], and [`Backoff`] built on it).

use ring::rand::{SecureRandom, SystemRandom};
use std::time::Duration;

/// A number in [0, 1] from the system's random source (0 if it fails: the
/// caller's timing is then merely unspread).
pub fn unit() -> f64 {
    let mut b = [0u8; 4];
    SystemRandom::new().fill(&mut b).map_or(0.0, |()| {
        f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX)
    })
}

/// Capped exponential backoff with equal jitter, so sidecars that lost the
/// broker together do not come back in step.
#[derive(Debug)]
pub struct Backoff {
    start: Duration,
    cap: Duration,
    cur: Duration,
}

impl Backoff {
    pub fn new(start: Duration, cap: Duration) -> Self {
        Backoff {
            start,
            cap,
            cur: start,
        }
    }

    pub fn reset(&mut self) {
        self.cur = self.start;
    }

    /// Between half and all of the current step; the step then doubles.
    pub fn next_wait(&mut self) -> Duration {
        let base = self.cur;
        self.cur = (self.cur * 2).min(self.cap);
        base / 2 + base.mul_f64(unit()) / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_stays_in_range_and_varies() {
        let draws: Vec<f64> = (0..100).map(|_| unit()).collect();
        assert!(draws.iter().all(|d| (0.0..=1.0).contains(d)));
        assert!(draws.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_in_range() {
        let mut b = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
        let mut step = Duration::from_millis(250);
        for _ in 0..12 {
            let d = b.next_wait();
            assert!(d >= step / 2 && d <= step, "{d:?} not within {step:?}");
            step = (step * 2).min(Duration::from_secs(30));
        }
        b.reset();
        assert!(b.next_wait() <= Duration::from_millis(250));
    }
}
