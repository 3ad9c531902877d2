//! PURE: the evidence of a sequential test of the canary's error rate against the primary's, kept as
//! running log-likelihood ratios so it can live in the policy's state between intervals.
//!
//! Model (Lindon, Sanden & Shirikian, KDD 2022, "Rapid regression detection in software deployments through
//! sequential testing"): errors are Poisson in the requests each workload served, with the canary's rate θ
//! times the primary's. Given the errors of an interval, the canary's share of them is binomial with
//! ρ(θ) = θ·c / (θ·c + p), c and p the requests each served. For the null "the canary is at most `bound`
//! times worse" (θ ≤ θ₀) the likelihood ratio of any θₖ > θ₀ against θ₀ is a non-negative supermartingale
//! (the binomial family has monotone likelihood ratios), and so is a mixture of them: by Ville's inequality
//! the chance it *ever* reaches 1/α under the null is at most α, however often it is looked at. The
//! mirror-image mixture (θₖ < θ₀ against θ₀) is the evidence that the canary is *not* worse than the bound.

use serde::{Deserialize, Serialize};

/// Rate ratios (relative to the bound) the "worse" mixture puts its weight on, uniformly.
const WORSE: [f64; 6] = [1.25, 1.5, 2.0, 3.0, 5.0, 10.0];
/// Rate ratios (relative to the bound) of the "no worse" mixture.
const BETTER: [f64; 3] = [0.8, 0.6, 0.4];

/// One interval's counts for both workloads.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Interval {
    pub canary_errors: f64,
    pub canary_requests: f64,
    pub primary_errors: f64,
    pub primary_requests: f64,
}

/// The running evidence: a log-likelihood ratio per mixture component, and totals for messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Σ log LR of `bound·WORSE[k]` against `bound`.
    pub worse: Vec<f64>,
    /// Σ log LR of `bound·BETTER[k]` against `bound`.
    pub better: Vec<f64>,
    /// Intervals that carried information (errors seen on either side).
    pub intervals: u32,
    pub canary_errors: f64,
    pub canary_requests: f64,
    pub primary_errors: f64,
    pub primary_requests: f64,
}

impl Default for Evidence {
    fn default() -> Self {
        Self {
            worse: vec![0.0; WORSE.len()],
            better: vec![0.0; BETTER.len()],
            intervals: 0,
            canary_errors: 0.0,
            canary_requests: 0.0,
            primary_errors: 0.0,
            primary_requests: 0.0,
        }
    }
}

/// What the evidence says at level α.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Finding {
    /// The canary's error rate is more than `bound` times the primary's.
    Worse,
    /// The canary's error rate is at most `bound` times the primary's.
    NoWorse,
    Undecided,
}

impl Evidence {
    /// Adds one interval. Intervals where either side served nothing, or nobody erred, carry no information.
    pub fn add(&mut self, bound: f64, i: Interval) {
        let (x, y) = (i.canary_errors.max(0.0), i.primary_errors.max(0.0));
        let (c, p) = (i.canary_requests, i.primary_requests);
        self.canary_requests += c.max(0.0);
        self.primary_requests += p.max(0.0);
        self.canary_errors += x;
        self.primary_errors += y;
        if !(c > 0.0 && p > 0.0) || x + y <= 0.0 || !bound.is_finite() || bound <= 0.0 {
            return;
        }
        let share = |theta: f64| theta * c / (theta * c + p);
        let null = share(bound);
        let log_lr = |theta: f64| {
            let alt = share(theta);
            x * (alt / null).ln() + y * ((1.0 - alt) / (1.0 - null)).ln()
        };
        for (sum, k) in self.worse.iter_mut().zip(WORSE) {
            *sum += log_lr(bound * k);
        }
        for (sum, k) in self.better.iter_mut().zip(BETTER) {
            *sum += log_lr(bound * k);
        }
        self.intervals += 1;
    }

    /// The e-value of "worse than the bound" (a uniform mixture of the likelihood ratios).
    pub fn e_worse(&self) -> f64 {
        mixture(&self.worse)
    }

    /// The e-value of "no worse than the bound".
    pub fn e_no_worse(&self) -> f64 {
        mixture(&self.better)
    }

    pub fn finding(&self, alpha: f64) -> Finding {
        let threshold = 1.0 / alpha;
        if self.e_worse() >= threshold {
            Finding::Worse
        } else if self.e_no_worse() >= threshold {
            Finding::NoWorse
        } else {
            Finding::Undecided
        }
    }
}

fn mixture(log_lrs: &[f64]) -> f64 {
    if log_lrs.is_empty() {
        return 0.0;
    }
    let n = log_lrs.len() as f64;
    log_lrs.iter().map(|l| l.exp()).sum::<f64>() / n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(canary_errors: f64, primary_errors: f64) -> Interval {
        Interval {
            canary_errors,
            canary_requests: 1_000.0,
            primary_errors,
            primary_requests: 4_000.0,
        }
    }

    #[test]
    fn a_canary_at_twice_the_primarys_error_rate_is_found_worse() {
        let mut e = Evidence::default();
        // 2 % against 1 %, a fifth of the traffic on the canary.
        for _ in 0..3 {
            e.add(1.2, interval(20.0, 40.0));
        }
        assert_eq!(e.finding(0.05), Finding::Worse, "{e:?} e={}", e.e_worse());
    }

    #[test]
    fn a_canary_as_good_as_the_primary_is_never_found_worse() {
        let mut e = Evidence::default();
        for _ in 0..20 {
            e.add(1.2, interval(10.0, 40.0));
            assert_ne!(e.finding(0.05), Finding::Worse, "e={}", e.e_worse());
        }
    }

    #[test]
    fn a_canary_at_a_quarter_of_the_primarys_error_rate_is_found_no_worse() {
        let mut e = Evidence::default();
        for _ in 0..2 {
            e.add(1.2, interval(2.5, 40.0));
        }
        assert_eq!(e.finding(0.05), Finding::NoWorse, "e={}", e.e_no_worse());
    }

    #[test]
    fn intervals_without_traffic_or_errors_change_no_evidence() {
        let mut e = Evidence::default();
        e.add(1.2, interval(0.0, 0.0));
        e.add(
            1.2,
            Interval {
                canary_requests: 0.0,
                ..interval(3.0, 3.0)
            },
        );
        assert_eq!(e.intervals, 0);
        assert_eq!((e.e_worse(), e.e_no_worse()), (1.0, 1.0));
        assert_eq!(e.finding(0.05), Finding::Undecided);
    }

    #[test]
    fn the_evidence_fits_the_policy_state_cap() {
        let mut e = Evidence::default();
        for _ in 0..50 {
            e.add(1.2, interval(12.345_678, 43.210_987));
        }
        let text = serde_json::to_string(&e).expect("json");
        assert!(text.len() < 1024, "{} bytes", text.len());
    }
}
