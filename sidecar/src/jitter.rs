//! Randomness for timing: renewals and retries of sidecars started
//! together spread out instead of arriving at the broker in step.

use ring::rand::{SecureRandom, SystemRandom};

/// A number in [0, 1] from the system's random source (0 if it fails: the
/// caller's timing is then merely unspread).
pub(crate) fn unit() -> f64 {
    let mut b = [0u8; 4];
    SystemRandom::new().fill(&mut b).map_or(0.0, |()| {
        f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn unit_stays_in_range_and_varies() {
        let draws: Vec<f64> = (0..100).map(|_| super::unit()).collect();
        assert!(draws.iter().all(|d| (0.0..=1.0).contains(d)));
        assert!(draws.windows(2).any(|w| w[0] != w[1]));
    }
}
