//! `builtin:sequential` through simulated rollouts: the real component in the real host, asking a simulated
//! Prometheus (Poisson errors in the requests each workload serves at the current weight) through its
//! `metrics` import, its state and history threaded as the controller threads them (judge, then step).
//! A canary at twice the primary's error rate is stopped in fewer intervals than a threshold of failed checks
//! would allow; a canary as good as the primary is (almost) never stopped: the false alarm rate over 200
//! rollouts is measured, printed and held under α.

mod support;

use std::sync::{Arc, Mutex};

use fledge::policy::types::{
    AnalysisRecord, AnalysisSettings, MetricsSource, Phase, Rollout, Sample, Series, StepDecision, Verdict,
};
use fledge::policy::{BUILTIN_SEQUENTIAL, Grants, Policy, PolicyComponent, builtin};
use support::policy::{engine, rollout};

/// A deterministic xorshift generator: the same rollouts every run.
struct Rng(u64);

impl Rng {
    /// Seeded through splitmix64, so nearby seeds give unrelated streams (and never the zero state).
    fn seeded(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self((z ^ (z >> 31)) | 1)
    }

    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Poisson(λ) by multiplying uniforms (λ up to a few hundred here).
    fn poisson(&mut self, lambda: f64) -> f64 {
        // Split large means so e^-λ stays representable.
        if lambda > 30.0 {
            return self.poisson(lambda / 2.0) + self.poisson(lambda / 2.0);
        }
        let limit = (-lambda).exp();
        let (mut k, mut p) = (0.0, 1.0);
        loop {
            p *= self.uniform();
            if p <= limit {
                return k;
            }
            k += 1.0;
        }
    }
}

/// Prometheus as the policy sees it: requests and 5xx of `podinfo` and `podinfo-primary` over the last
/// interval, for the weight the canary has now.
struct Simulated {
    rng: Mutex<Rng>,
    /// Requests per interval across both workloads.
    requests: f64,
    canary_error_rate: f64,
    primary_error_rate: f64,
    /// This interval's draws, so the four queries of one analysis agree.
    drawn: Mutex<Option<[f64; 4]>>,
    weight: Mutex<u32>,
}

impl Simulated {
    fn new(seed: u64, canary_error_rate: f64, primary_error_rate: f64) -> Self {
        Self {
            rng: Mutex::new(Rng::seeded(seed)),
            requests: 6_000.0,
            canary_error_rate,
            primary_error_rate,
            drawn: Mutex::new(None),
            weight: Mutex::new(0),
        }
    }

    /// A new interval at `weight`: new counts on the next query.
    fn next_interval(&self, weight: u32) {
        *self.weight.lock().expect("lock") = weight;
        *self.drawn.lock().expect("lock") = None;
    }

    fn counts(&self) -> [f64; 4] {
        let mut drawn = self.drawn.lock().expect("lock");
        *drawn.get_or_insert_with(|| {
            let share = f64::from(*self.weight.lock().expect("lock")) / 100.0;
            let (canary, primary) = (self.requests * share, self.requests * (1.0 - share));
            let mut rng = self.rng.lock().expect("lock");
            [
                rng.poisson(canary * self.canary_error_rate),
                canary,
                rng.poisson(primary * self.primary_error_rate),
                primary,
            ]
        })
    }
}

impl MetricsSource for Simulated {
    fn instant_query(&self, query: &str) -> Result<Vec<Series>, String> {
        let [ce, cr, pe, pr] = self.counts();
        let primary = query.contains(r#"destination_workload="podinfo-primary""#);
        let errors = query.contains("response_code");
        let value = match (primary, errors) {
            (false, true) => ce,
            (false, false) => cr,
            (true, true) => pe,
            (true, false) => pr,
        };
        Ok(vec![Series {
            labels: Vec::new(),
            samples: vec![Sample {
                timestamp: 0.0,
                value,
            }],
        }])
    }

    fn range_query(&self, _: &str, _: u32, _: u32) -> Result<Vec<Series>, String> {
        Err("not used".into())
    }
}

/// How a simulated rollout ended, and after how many analysis intervals.
#[derive(Debug, PartialEq)]
enum Outcome {
    RolledBack(u32),
    Promoted(u32),
}

/// One rollout as the controller runs it: each interval judges (at weight > 0), then steps.
fn simulate(policy: &PolicyComponent, metrics: Arc<Simulated>) -> Outcome {
    let mut r: Rollout = rollout(AnalysisSettings {
        interval_seconds: 60,
        threshold: 5,
        step_weight: Some(10),
        max_weight: Some(50),
        ..Default::default()
    });
    let source: Arc<dyn MetricsSource> = metrics.clone();
    let mut analyses = 0;
    for _ in 0..100 {
        let mut failed = false;
        if r.canary_weight > 0 {
            metrics.next_interval(r.canary_weight);
            r.intervals_at_weight += 1;
            let answer = policy
                .analyse(&r, &[], &[], Some(source.clone()))
                .expect("analysis");
            analyses += 1;
            if answer.state.is_some() {
                r.state = answer.state;
            }
            r.history.push(AnalysisRecord {
                time: f64::from(analyses) * 60.0,
                weight: r.canary_weight,
                verdict: answer.decision.verdict,
                checks: Vec::new(),
            });
            let over = r.history.len().saturating_sub(10);
            r.history.drain(..over);
            failed = answer.decision.verdict == Verdict::Fail;
            if failed {
                r.failed_checks += 1;
            }
        }
        match policy.step(&r).expect("step").decision {
            StepDecision::Rollback { .. } => return Outcome::RolledBack(analyses),
            StepDecision::Promote if !failed => {
                r.phase = Phase::Promoting;
                return Outcome::Promoted(analyses);
            }
            StepDecision::SetWeight { weight } if !failed && weight != r.canary_weight => {
                r.canary_weight = weight;
                r.intervals_at_weight = 0;
            }
            _ => {}
        }
    }
    panic!("no decision in 100 intervals: {r:?}");
}

fn sequential() -> Arc<PolicyComponent> {
    engine()
        .load(
            BUILTIN_SEQUENTIAL,
            builtin(BUILTIN_SEQUENTIAL).expect("embedded"),
            Grants::ALL,
        )
        .expect("load builtin:sequential")
}

#[test]
fn a_canary_at_twice_the_primarys_error_rate_is_stopped_before_a_threshold_of_failed_checks_could() {
    let policy = sequential();
    let mut stopped_after = Vec::new();
    for seed in 0..50 {
        let metrics = Arc::new(Simulated::new(seed, 0.02, 0.01));
        match simulate(&policy, metrics) {
            Outcome::RolledBack(n) => stopped_after.push(n),
            other => panic!("seed {seed}: a 2x worse canary ended {other:?}"),
        }
    }
    stopped_after.sort_unstable();
    let median = stopped_after[stopped_after.len() / 2];
    let worst = stopped_after[stopped_after.len() - 1];
    println!(
        "2x error rate: rolled back after a median of {median} analysis intervals (worst {worst}) over 50 rollouts; \
         a threshold of 5 failed checks needs at least 5"
    );
    // Each of the default's 5 failed checks takes an interval: the sequential test is done sooner as a
    // rule, and never later.
    assert!(
        median < 5 && worst <= 5,
        "intervals to rollback: {stopped_after:?}"
    );
}

#[test]
fn a_canary_clearly_better_than_the_primary_is_promoted_before_the_walk_ends() {
    let policy = sequential();
    let mut promoted_after = Vec::new();
    for seed in 2_000..2_050 {
        let metrics = Arc::new(Simulated::new(seed, 0.0025, 0.01));
        match simulate(&policy, metrics) {
            Outcome::Promoted(n) => promoted_after.push(n),
            other => panic!("seed {seed}: a better canary ended {other:?}"),
        }
    }
    promoted_after.sort_unstable();
    let median = promoted_after[promoted_after.len() / 2];
    println!(
        "a quarter of the primary's error rate: promoted after a median of {median} analysis intervals (the walk takes 5)"
    );
    assert!(median < 5, "intervals to promotion: {promoted_after:?}");
}

#[test]
fn a_canary_as_good_as_the_primary_is_not_stopped_in_200_rollouts_at_alpha_005() {
    let policy = sequential();
    let (mut false_alarms, mut intervals) = (0u32, Vec::new());
    for seed in 1_000..1_200 {
        let metrics = Arc::new(Simulated::new(seed, 0.01, 0.01));
        match simulate(&policy, metrics) {
            Outcome::RolledBack(_) => false_alarms += 1,
            Outcome::Promoted(n) => intervals.push(n),
        }
    }
    let rate = f64::from(false_alarms) / 200.0;
    intervals.sort_unstable();
    let median = intervals.get(intervals.len() / 2).copied().unwrap_or_default();
    println!(
        "equal error rates: {false_alarms} false alarms in 200 rollouts (rate {rate:.3}, alpha 0.05); \
         promoted after a median of {median} analysis intervals (the plain walk to 50 % takes 5)"
    );
    assert!(rate <= 0.05, "false alarm rate {rate}");
}
