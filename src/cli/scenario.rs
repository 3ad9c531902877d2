//! `fledge policy test`: a policy author's unit test. A scenario is a list of analysis ticks — phase, weight,
//! metric values, webhook outcomes — each with the decision expected of the policy. The ticks run through the
//! real host (limits included) and carry the rollout forward as the controller would: a `setWeight` moves the
//! weight, an `iterate` counts an iteration, a failing analysis counts a failed check.

use serde::Deserialize;

use crate::policy::types::{
    AnalysisRecord, AnalysisResult, AnalysisSettings, Answer, CheckValue, GateDecision, GateKind,
    MAX_HISTORY, MetricCheck, Phase, Rollout, StepDecision, ThresholdRange, Verdict, WebhookOutcome,
};
use crate::policy::{Policy, PolicyError};

/// A scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scenario {
    /// The Canary's name and namespace, for the policy's messages (default `podinfo.test`).
    #[serde(default)]
    pub canary: Option<CanaryName>,
    /// The Canary's `analysis` settings as a policy sees them.
    #[serde(default)]
    pub analysis: AnalysisSettings,
    /// The policy's config (`analysis.policy.config`).
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    pub ticks: Vec<ScenarioTick>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryName {
    pub name: String,
    pub namespace: String,
}

/// One tick: what the rollout looks like (fields left out carry over from the tick before) and what the
/// policy must answer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScenarioTick {
    pub phase: Option<Phase>,
    pub weight: Option<u32>,
    pub iterations: Option<u32>,
    pub failed_checks: Option<u32>,
    /// Seconds since the scenario started (default: one analysis interval after the tick before).
    pub time: Option<f64>,
    /// The revision under test; a new one starts the rollout over with no state or history.
    pub revision: Option<String>,
    /// Replaces the policy's state before the tick (JSON).
    pub state: Option<serde_json::Value>,
    /// Metric checks for the analysis world.
    #[serde(default)]
    pub checks: Vec<CheckInput>,
    /// Webhook outcomes (for the gate and analysis worlds).
    #[serde(default)]
    pub hooks: Vec<WebhookOutcome>,
    /// Ask this gate instead of the step world.
    pub gate: Option<GateKind>,
    pub expect: Expect,
}

/// A metric as the host would have queried it: a value, no data, or an error.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckInput {
    pub name: String,
    #[serde(default)]
    pub value: Option<f64>,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    #[serde(default)]
    pub error: Option<String>,
}

/// What the policy must answer: a step word (`promote`, `iterate`, `hold`, `rollback`) or a map of
/// `setWeight`, `verdict`, `gate`, `hold`, `rollback`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(from = "ExpectInput")]
pub struct Expect {
    pub step: Option<StepExpect>,
    pub verdict: Option<Verdict>,
    pub gate: Option<GateExpect>,
    /// The policy's state after the tick (compared as JSON).
    pub state: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepExpect {
    SetWeight(u32),
    Iterate,
    Hold,
    Promote,
    Rollback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GateExpect {
    Open,
    Closed,
    Rollback,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum ExpectInput {
    Word(StepWord),
    Map(ExpectMap),
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
enum StepWord {
    Promote,
    Iterate,
    Hold,
    Rollback,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ExpectMap {
    set_weight: Option<u32>,
    #[serde(default)]
    promote: bool,
    #[serde(default)]
    iterate: bool,
    #[serde(default)]
    hold: bool,
    #[serde(default)]
    rollback: bool,
    verdict: Option<Verdict>,
    gate: Option<GateExpect>,
    state: Option<serde_json::Value>,
}

impl From<ExpectInput> for Expect {
    fn from(input: ExpectInput) -> Self {
        let word = |w| match w {
            StepWord::Promote => StepExpect::Promote,
            StepWord::Iterate => StepExpect::Iterate,
            StepWord::Hold => StepExpect::Hold,
            StepWord::Rollback => StepExpect::Rollback,
        };
        match input {
            ExpectInput::Word(w) => Self {
                step: Some(word(w)),
                ..Self::default()
            },
            ExpectInput::Map(m) => {
                let step = m.set_weight.map(StepExpect::SetWeight).or_else(|| {
                    [
                        (m.promote, StepExpect::Promote),
                        (m.iterate, StepExpect::Iterate),
                        (m.hold, StepExpect::Hold),
                        (m.rollback, StepExpect::Rollback),
                    ]
                    .into_iter()
                    .find_map(|(set, e)| set.then_some(e))
                });
                Self {
                    step,
                    verdict: m.verdict,
                    gate: m.gate,
                    state: m.state,
                }
            }
        }
    }
}

/// One tick's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct TickReport {
    pub index: usize,
    pub phase: Phase,
    pub weight: u32,
    /// What the policy answered, in the scenario's words.
    pub answered: String,
    pub expected: String,
    /// The policy's state after the tick.
    pub state: Option<String>,
    pub ok: bool,
}

/// Why a scenario could not be run (as opposed to a policy answering wrongly).
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("scenario: {0}")]
    Parse(#[from] serde_yaml::Error),
    #[error(
        "tick {tick}: expects nothing (give expect: setWeight, promote, iterate, hold, rollback, verdict or gate)"
    )]
    NoExpectation { tick: usize },
    #[error("tick {tick}: a gate tick expects a gate answer")]
    GateWithoutExpectation { tick: usize },
}

pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
    let scenario: Scenario = serde_yaml::from_str(text)?;
    for (i, tick) in scenario.ticks.iter().enumerate() {
        if tick.expect == Expect::default() {
            return Err(ScenarioError::NoExpectation { tick: i + 1 });
        }
        if tick.gate.is_some() && tick.expect.gate.is_none() {
            return Err(ScenarioError::GateWithoutExpectation { tick: i + 1 });
        }
    }
    Ok(scenario)
}

/// Runs every tick against `policy` as the controller would, `fallback` answering the worlds `policy` does
/// not export (the controller's built-in default). A policy error is an answer too (`error: <category>`),
/// and never matches an expectation.
pub fn run(policy: &dyn Policy, fallback: &dyn Policy, scenario: &Scenario) -> Vec<TickReport> {
    let mut sim = Simulation::new(policy, fallback, scenario);
    let mut reports = Vec::new();
    for (i, tick) in scenario.ticks.iter().enumerate() {
        sim.enter(tick);
        let (phase, weight) = (sim.rollout.phase, sim.rollout.canary_weight);
        let judged = sim.tick(tick);
        let state_ok = tick.expect.state.as_ref().is_none_or(|want| {
            sim.rollout
                .state
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok())
                .as_ref()
                == Some(want)
        });
        reports.push(TickReport {
            index: i + 1,
            phase,
            weight,
            answered: judged.answers.join(", "),
            expected: describe_expect(&tick.expect),
            state: sim.rollout.state.clone(),
            ok: judged.ok && state_ok,
        });
    }
    reports
}

/// The rollout as the controller carries it from tick to tick: weight, counters, the policy's state and the
/// analysis history.
struct Simulation<'a> {
    policy: &'a dyn Policy,
    fallback: &'a dyn Policy,
    rollout: Rollout,
    /// Scenario time of this tick and of the last phase change, in seconds.
    now: f64,
    phase_since: f64,
    interval: f64,
}

/// What one tick's policy calls answered, and whether each expected answer came.
#[derive(Default)]
struct Judged {
    answers: Vec<String>,
    ok: bool,
}

impl<'a> Simulation<'a> {
    fn new(policy: &'a dyn Policy, fallback: &'a dyn Policy, scenario: &Scenario) -> Self {
        let (name, namespace) = scenario
            .canary
            .as_ref()
            .map_or(("podinfo".to_owned(), "test".to_owned()), |c| {
                (c.name.clone(), c.namespace.clone())
            });
        let rollout = Rollout {
            name,
            namespace,
            phase: Phase::Progressing,
            canary_weight: 0,
            iterations: 0,
            failed_checks: 0,
            analysis: scenario.analysis.clone(),
            config: scenario
                .config
                .as_ref()
                .map_or_else(|| "{}".to_owned(), serde_json::Value::to_string),
            intervals_at_weight: 0,
            seconds_in_phase: 0,
            revision: "scenario".into(),
            state: None,
            history: Vec::new(),
        };
        let interval = match scenario.analysis.interval_seconds {
            0 => 60.0,
            n => f64::from(n),
        };
        Self {
            policy,
            fallback,
            rollout,
            now: 0.0,
            phase_since: 0.0,
            interval,
        }
    }

    /// Applies what the tick says the rollout looks like; a new revision starts with no state or history.
    fn enter(&mut self, tick: &ScenarioTick) {
        self.now = tick.time.unwrap_or(self.now + self.interval);
        let r = &mut self.rollout;
        if let Some(rev) = &tick.revision
            && *rev != r.revision
        {
            r.revision.clone_from(rev);
            r.state = None;
            r.history.clear();
            r.intervals_at_weight = 0;
        }
        if let Some(p) = tick.phase {
            self.set_phase(p);
        }
        let r = &mut self.rollout;
        if let Some(w) = tick.weight
            && w != r.canary_weight
        {
            r.canary_weight = w;
            r.intervals_at_weight = 0;
        }
        if let Some(n) = tick.iterations {
            r.iterations = n;
        }
        if let Some(n) = tick.failed_checks {
            r.failed_checks = n;
        }
        if let Some(state) = &tick.state {
            r.state = Some(state.to_string());
        }
    }

    fn set_phase(&mut self, phase: Phase) {
        if phase != self.rollout.phase {
            self.rollout.phase = phase;
            self.phase_since = self.now;
        }
    }

    fn seen(&self) -> Rollout {
        let mut r = self.rollout.clone();
        r.seconds_in_phase = (self.now - self.phase_since).max(0.0) as u32;
        r
    }

    /// One controller tick: a gate tick asks only its gate; an analysing tick judges first (a failure
    /// counts and only a rollback may follow), then asks the step and applies it.
    fn tick(&mut self, tick: &ScenarioTick) -> Judged {
        let mut judged = Judged {
            ok: true,
            ..Judged::default()
        };
        if let Some(kind) = tick.gate {
            self.gate(tick, kind, &mut judged);
            return judged;
        }
        let analysing = matches!(self.rollout.phase, Phase::Progressing | Phase::WaitingPromotion)
            && (self.rollout.canary_weight > 0 || self.rollout.iterations > 0);
        let verdict = if analysing || tick.expect.verdict.is_some() {
            self.analyse(tick, &mut judged)
        } else {
            None
        };
        if matches!(verdict, Some(Verdict::Inconclusive)) || (verdict.is_none() && analysing) {
            // Inconclusive, or the policy failed: the controller stops the tick here.
            judged.ok &= tick.expect.step.is_none();
            return judged;
        }
        let failed = verdict == Some(Verdict::Fail);
        if failed {
            self.rollout.failed_checks += 1;
        }
        if let Some(step) = self.step(tick, &mut judged) {
            self.apply(&step, failed);
        }
        judged
    }

    fn analyse(&mut self, tick: &ScenarioTick, judged: &mut Judged) -> Option<Verdict> {
        self.rollout.intervals_at_weight += 1;
        let checks: Vec<MetricCheck> = tick.checks.iter().map(check).collect();
        let answer = ask(
            self.policy,
            self.fallback,
            |p, r| p.analyse(r, &checks, &tick.hooks, None),
            &self.seen(),
        );
        match answer {
            Ok(answer) => {
                let result = self.remember(answer);
                judged
                    .answers
                    .push(format!("verdict {}", verdict_word(result.verdict)));
                if let Some(want) = tick.expect.verdict {
                    judged.ok &= result.verdict == want;
                }
                self.record(&checks, &result);
                Some(result.verdict)
            }
            Err(e) => {
                judged.answers.push(error_word(&e));
                judged.ok = false;
                self.rollout.failed_checks += 1;
                None
            }
        }
    }

    /// The analysis as the next ticks' `history` shows it.
    fn record(&mut self, checks: &[MetricCheck], result: &AnalysisResult) {
        let history = &mut self.rollout.history;
        history.push(AnalysisRecord {
            time: self.now,
            weight: self.rollout.canary_weight,
            verdict: result.verdict,
            checks: checks
                .iter()
                .map(|c| CheckValue {
                    name: c.name.clone(),
                    value: c.value,
                    verdict: result
                        .metrics
                        .iter()
                        .find(|m| m.name == c.name)
                        .map_or(Verdict::Inconclusive, |m| m.verdict),
                })
                .collect(),
        });
        let over = history.len().saturating_sub(MAX_HISTORY);
        history.drain(..over);
    }

    fn step(&mut self, tick: &ScenarioTick, judged: &mut Judged) -> Option<StepDecision> {
        match ask(self.policy, self.fallback, |p, r| p.step(r), &self.seen()) {
            Ok(answer) => {
                let decision = self.remember(answer);
                judged.answers.push(step_word(&decision));
                if let Some(want) = tick.expect.step {
                    judged.ok &= step_matches(&decision, want);
                }
                Some(decision)
            }
            Err(e) => {
                judged.answers.push(error_word(&e));
                judged.ok = false;
                None
            }
        }
    }

    fn gate(&mut self, tick: &ScenarioTick, kind: GateKind, judged: &mut Judged) {
        match ask(
            self.policy,
            self.fallback,
            |p, r| p.gate(r, kind, &tick.hooks),
            &self.seen(),
        ) {
            Ok(answer) => {
                let got = match self.remember(answer) {
                    GateDecision::Open => GateExpect::Open,
                    GateDecision::Closed { .. } => GateExpect::Closed,
                    GateDecision::Rollback { .. } => GateExpect::Rollback,
                };
                judged.answers.push(format!("gate {}", gate_word(got)));
                judged.ok &= tick.expect.gate == Some(got);
            }
            Err(e) => {
                judged.answers.push(error_word(&e));
                judged.ok = false;
            }
        }
    }

    fn remember<T>(&mut self, answer: Answer<T>) -> T {
        if let Some(state) = answer.state {
            self.rollout.state = Some(state);
        }
        answer.decision
    }

    /// Moves the rollout on as the controller would: after a failed check only a rollback applies.
    fn apply(&mut self, step: &StepDecision, failed: bool) {
        if failed && !matches!(step, StepDecision::Rollback { .. }) {
            return;
        }
        let r = &mut self.rollout;
        match step {
            StepDecision::SetWeight { weight } if *weight != r.canary_weight => {
                r.canary_weight = *weight;
                r.intervals_at_weight = 0;
                if r.phase == Phase::Promoting && *weight == 0 {
                    self.set_phase(Phase::Finalising);
                }
            }
            StepDecision::Iterate => r.iterations += 1,
            StepDecision::Promote if r.phase == Phase::Promoting => {
                r.canary_weight = 0;
                self.set_phase(Phase::Finalising);
            }
            StepDecision::Promote => self.set_phase(Phase::Promoting),
            StepDecision::Rollback { .. } => {
                r.canary_weight = 0;
                self.set_phase(Phase::Failed);
            }
            StepDecision::SetWeight { .. } | StepDecision::Hold { .. } => {}
        }
    }
}

/// Asks `policy`, or `fallback` for a world `policy` does not export — as the controller does, with the
/// fallback seeing neither the component's config nor its state.
fn ask<T>(
    policy: &dyn Policy,
    fallback: &dyn Policy,
    call: impl Fn(&dyn Policy, &Rollout) -> Result<Answer<T>, PolicyError>,
    rollout: &Rollout,
) -> Result<Answer<T>, PolicyError> {
    match call(policy, rollout) {
        Err(PolicyError::MissingExport { .. }) => {
            let own = Rollout {
                config: "{}".into(),
                state: None,
                ..rollout.clone()
            };
            call(fallback, &own).map(|a| Answer::stateless(a.decision))
        }
        answer => answer,
    }
}

fn check(c: &CheckInput) -> MetricCheck {
    MetricCheck {
        name: c.name.clone(),
        value: c.value,
        range: ThresholdRange {
            min: c.min,
            max: c.max,
        },
        error: c.error.clone(),
    }
}

fn step_matches(decision: &StepDecision, want: StepExpect) -> bool {
    match (decision, want) {
        (StepDecision::SetWeight { weight }, StepExpect::SetWeight(w)) => *weight == w,
        (StepDecision::Iterate, StepExpect::Iterate)
        | (StepDecision::Hold { .. }, StepExpect::Hold)
        | (StepDecision::Promote, StepExpect::Promote)
        | (StepDecision::Rollback { .. }, StepExpect::Rollback) => true,
        _ => false,
    }
}

fn step_word(d: &StepDecision) -> String {
    match d {
        StepDecision::SetWeight { weight } => format!("setWeight {weight}"),
        StepDecision::Iterate => "iterate".into(),
        StepDecision::Hold { reason } => format!("hold ({reason})"),
        StepDecision::Promote => "promote".into(),
        StepDecision::Rollback { reason } => format!("rollback ({reason})"),
    }
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Fail => "fail",
        Verdict::Inconclusive => "inconclusive",
    }
}

fn gate_word(g: GateExpect) -> &'static str {
    match g {
        GateExpect::Open => "open",
        GateExpect::Closed => "closed",
        GateExpect::Rollback => "rollback",
    }
}

fn error_word(e: &PolicyError) -> String {
    format!("error: {} ({e})", e.category())
}

fn describe_expect(e: &Expect) -> String {
    let mut parts = Vec::new();
    if let Some(v) = e.verdict {
        parts.push(format!("verdict {}", verdict_word(v)));
    }
    if let Some(g) = e.gate {
        parts.push(format!("gate {}", gate_word(g)));
    }
    if let Some(s) = e.step {
        parts.push(match s {
            StepExpect::SetWeight(w) => format!("setWeight {w}"),
            StepExpect::Iterate => "iterate".into(),
            StepExpect::Hold => "hold".into(),
            StepExpect::Promote => "promote".into(),
            StepExpect::Rollback => "rollback".into(),
        });
    }
    if let Some(state) = &e.state {
        parts.push(format!("state {state}"));
    }
    parts.join(", ")
}

/// The report as a plain table (stable when stdout is not a terminal).
pub fn table(reports: &[TickReport]) -> String {
    let mut out = format!(
        "{:>4}  {:<18} {:>6}  {:<36}  {:<36}  {:<28}\n",
        "tick", "phase", "weight", "answered", "expected", "state"
    );
    for r in reports {
        out.push_str(&format!(
            "{:>4}  {:<18} {:>6}  {:<36}  {:<36}  {:<28} {}\n",
            r.index,
            r.phase.name(),
            r.weight,
            crate::text::clip(&r.answered, 36),
            crate::text::clip(&r.expected, 36),
            crate::text::clip(r.state.as_deref().unwrap_or("-"), 28),
            if r.ok { "✓" } else { "✗" }
        ));
    }
    let failed = reports.iter().filter(|r| !r.ok).count();
    out.push_str(&format!("{} ticks, {failed} failed\n", reports.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{BUILTIN_DEFAULT, Grants, Limits, PolicyEngine, builtin};

    fn default_policy() -> std::sync::Arc<crate::policy::PolicyComponent> {
        let engine = PolicyEngine::new(Limits::default(), None).expect("engine");
        engine
            .load(
                BUILTIN_DEFAULT,
                builtin(BUILTIN_DEFAULT).expect("builtin"),
                Grants::ALL,
            )
            .expect("load")
    }

    const SEED: &str = r#"
analysis: {stepWeight: 20, maxWeight: 60, threshold: 2}
ticks:
  - expect: {setWeight: 20}
  - checks: [{name: request-success-rate, value: 99.5, min: 99}]
    expect: {verdict: pass, setWeight: 40}
  - expect: {setWeight: 60}
  - expect: promote
  - phase: Progressing
    weight: 20
    checks: [{name: request-success-rate, value: 80, min: 99}]
    expect: {verdict: fail}
  - checks: [{name: request-success-rate, min: 99}]
    expect: {verdict: fail, rollback: true}
  - gate: confirm-promotion
    hooks: [{name: approve, ok: false}]
    expect: {gate: closed}
"#;

    fn run_default(text: &str) -> Vec<TickReport> {
        let policy = default_policy();
        run(policy.as_ref(), policy.as_ref(), &parse(text).expect("scenario"))
    }

    #[test]
    fn the_default_policy_passes_its_seed_scenario_and_the_rollout_carries_forward() {
        let reports = run_default(SEED);
        assert!(reports.iter().all(|r| r.ok), "{}", table(&reports));
        // Weights moved with the answers; the second failed analysis reached the threshold and the policy
        // rolled back in the same tick, weight 0.
        assert_eq!(
            reports.iter().map(|r| r.weight).collect::<Vec<_>>(),
            [0, 20, 40, 60, 20, 20, 0]
        );
    }

    #[test]
    fn a_wrong_expectation_is_reported_as_a_failed_tick() {
        let wrong = SEED.replace("expect: {setWeight: 60}", "expect: {setWeight: 50}");
        let reports = run_default(&wrong);
        let failed: Vec<_> = reports.iter().filter(|r| !r.ok).collect();
        assert_eq!(failed.len(), 1, "{}", table(&reports));
        assert_eq!(
            (failed[0].index, failed[0].answered.as_str()),
            (3, "verdict pass, setWeight 60")
        );
        assert!(table(&reports).contains("1 failed"));
    }

    /// Counts its calls in `state` ({"analyses": n, "steps": n}) and steps by 10 once two analyses passed at
    /// the current weight (from `history`).
    struct Counting;

    fn counts(r: &Rollout) -> (u64, u64) {
        let v: serde_json::Value = r.state.as_deref().map_or(serde_json::json!({}), |s| {
            serde_json::from_str(s).expect("state is JSON")
        });
        let n = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
        (n("analyses"), n("steps"))
    }

    impl Policy for Counting {
        fn step(&self, r: &Rollout) -> Result<Answer<StepDecision>, PolicyError> {
            let (a, s) = counts(r);
            let passes = r
                .history
                .iter()
                .rev()
                .take_while(|h| h.weight == r.canary_weight && h.verdict == Verdict::Pass)
                .count();
            let decision = if r.canary_weight == 0 || passes >= 2 {
                StepDecision::SetWeight {
                    weight: r.canary_weight + 10,
                }
            } else {
                StepDecision::Hold {
                    reason: format!("{passes} passes"),
                }
            };
            Ok(Answer {
                decision,
                state: Some(serde_json::json!({"analyses": a, "steps": s + 1}).to_string()),
            })
        }
        fn gate(
            &self,
            _: &Rollout,
            _: GateKind,
            _: &[WebhookOutcome],
        ) -> Result<Answer<GateDecision>, PolicyError> {
            Ok(Answer::stateless(GateDecision::Open))
        }
        fn analyse(
            &self,
            r: &Rollout,
            checks: &[MetricCheck],
            _: &[WebhookOutcome],
            _: Option<std::sync::Arc<dyn crate::policy::types::MetricsSource>>,
        ) -> Result<Answer<AnalysisResult>, PolicyError> {
            let (a, s) = counts(r);
            let verdict = if checks.iter().all(|c| c.value.is_some()) {
                Verdict::Pass
            } else {
                Verdict::Fail
            };
            Ok(Answer {
                decision: AnalysisResult {
                    verdict,
                    metrics: Vec::new(),
                },
                state: Some(serde_json::json!({"analyses": a + 1, "steps": s}).to_string()),
            })
        }
    }

    #[test]
    fn state_and_history_thread_from_call_to_call_as_in_the_controller() {
        let text = r#"
ticks:
  - expect: {setWeight: 10, state: {analyses: 0, steps: 1}}
  - expect: {verdict: pass, hold: true, state: {analyses: 1, steps: 2}}
  - expect: {verdict: pass, setWeight: 20, state: {analyses: 2, steps: 3}}
  - checks: [{name: errors}]
    expect: {verdict: fail, state: {analyses: 3, steps: 4}}
  - revision: second
    weight: 0
    expect: {setWeight: 10, state: {analyses: 0, steps: 1}}
"#;
        let reports = run(&Counting, &Counting, &parse(text).expect("scenario"));
        assert!(reports.iter().all(|r| r.ok), "{}", table(&reports));
        assert_eq!(
            reports.iter().map(|r| r.weight).collect::<Vec<_>>(),
            [0, 10, 10, 20, 0],
            "a failed analysis moves nothing; a new revision starts over"
        );
    }

    #[test]
    fn an_expected_state_that_differs_fails_the_tick() {
        let text = "ticks:\n  - expect: {setWeight: 10, state: {analyses: 0, steps: 7}}\n";
        let reports = run(&Counting, &Counting, &parse(text).expect("scenario"));
        assert!(!reports[0].ok, "{}", table(&reports));
    }

    #[test]
    fn a_tick_that_expects_nothing_is_refused() {
        let err = parse("ticks:\n  - weight: 20\n    expect: {}\n").expect_err("no expectation");
        assert!(matches!(err, ScenarioError::NoExpectation { tick: 1 }), "{err}");
    }
}
