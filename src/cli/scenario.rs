//! `fledge policy test`: a policy author's unit test. A scenario is a list of analysis ticks — phase, weight,
//! metric values, webhook outcomes — each with the decision expected of the policy. The ticks run through the
//! real host (limits included) and carry the rollout forward as the controller would: a `setWeight` moves the
//! weight, an `iterate` counts an iteration, a failing analysis counts a failed check.

use serde::Deserialize;

use crate::policy::types::{
    AnalysisSettings, GateDecision, GateKind, MetricCheck, Phase, Rollout, StepDecision, ThresholdRange,
    Verdict, WebhookOutcome,
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

/// Runs every tick against `policy`. A policy error is an answer too (`error: <category>`), and never
/// matches an expectation.
pub fn run(policy: &dyn Policy, scenario: &Scenario) -> Vec<TickReport> {
    let (name, namespace) = scenario
        .canary
        .as_ref()
        .map_or(("podinfo".to_owned(), "test".to_owned()), |c| {
            (c.name.clone(), c.namespace.clone())
        });
    let mut rollout = Rollout {
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
    };
    let mut reports = Vec::new();
    for (i, tick) in scenario.ticks.iter().enumerate() {
        if let Some(p) = tick.phase {
            rollout.phase = p;
        }
        if let Some(w) = tick.weight {
            rollout.canary_weight = w;
        }
        if let Some(n) = tick.iterations {
            rollout.iterations = n;
        }
        if let Some(n) = tick.failed_checks {
            rollout.failed_checks = n;
        }
        let judged = judge(policy, &rollout, tick);
        reports.push(TickReport {
            index: i + 1,
            phase: rollout.phase,
            weight: rollout.canary_weight,
            answered: judged.answers.join(", "),
            expected: describe_expect(&tick.expect),
            ok: judged.ok,
        });
        carry(&mut rollout, &judged);
    }
    reports
}

/// What one tick's policy calls answered.
struct Judged {
    answers: Vec<String>,
    ok: bool,
    verdict: Option<Verdict>,
    step: Option<StepDecision>,
}

/// Asks the worlds the tick expects answers of (each once); says whether all matched.
fn judge(policy: &dyn Policy, rollout: &Rollout, tick: &ScenarioTick) -> Judged {
    let mut answers = Vec::new();
    let mut ok = true;
    let (mut verdict, mut step) = (None, None);
    if let Some(want) = tick.expect.verdict {
        let checks: Vec<MetricCheck> = tick.checks.iter().map(check).collect();
        match policy.analyse(rollout, &checks, &tick.hooks, None) {
            Ok(result) => {
                answers.push(format!("verdict {}", verdict_word(result.verdict)));
                ok &= result.verdict == want;
                verdict = Some(result.verdict);
            }
            Err(e) => {
                answers.push(error_word(&e));
                ok = false;
            }
        }
    }
    if let (Some(kind), Some(want)) = (tick.gate, tick.expect.gate) {
        match policy.gate(rollout, kind, &tick.hooks) {
            Ok(decision) => {
                let got = match decision {
                    GateDecision::Open => GateExpect::Open,
                    GateDecision::Closed { .. } => GateExpect::Closed,
                    GateDecision::Rollback { .. } => GateExpect::Rollback,
                };
                answers.push(format!("gate {}", gate_word(got)));
                ok &= got == want;
            }
            Err(e) => {
                answers.push(error_word(&e));
                ok = false;
            }
        }
    }
    if let Some(want) = tick.expect.step {
        match policy.step(rollout) {
            Ok(decision) => {
                answers.push(step_word(&decision));
                ok &= step_matches(&decision, want);
                step = Some(decision);
            }
            Err(e) => {
                answers.push(error_word(&e));
                ok = false;
            }
        }
    }
    Judged {
        answers,
        ok,
        verdict,
        step,
    }
}

/// Moves the rollout on as the controller would after this tick's answers: a failed analysis counts a failed
/// check and moves nothing; otherwise the step answer applies.
fn carry(rollout: &mut Rollout, judged: &Judged) {
    if judged.verdict == Some(Verdict::Fail) {
        rollout.failed_checks += 1;
        return;
    }
    match &judged.step {
        Some(StepDecision::SetWeight { weight }) => rollout.canary_weight = *weight,
        Some(StepDecision::Iterate) => rollout.iterations += 1,
        Some(StepDecision::Promote) => rollout.phase = Phase::Promoting,
        Some(StepDecision::Rollback { .. }) => {
            rollout.phase = Phase::Failed;
            rollout.canary_weight = 0;
        }
        Some(StepDecision::Hold { .. }) | None => {}
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
    parts.join(", ")
}

/// The report as a plain table (stable when stdout is not a terminal).
pub fn table(reports: &[TickReport]) -> String {
    let mut out =
        String::from("tick  phase              weight  answered                                  expected\n");
    for r in reports {
        out.push_str(&format!(
            "{:>4}  {:<18} {:>6}  {:<40}  {:<30} {}\n",
            r.index,
            r.phase.name(),
            r.weight,
            crate::text::clip(&r.answered, 40),
            r.expected,
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
    expect: {verdict: fail}
  - expect: rollback
  - gate: confirm-promotion
    hooks: [{name: approve, ok: false}]
    expect: {gate: closed}
"#;

    #[test]
    fn the_default_policy_passes_its_seed_scenario_and_the_rollout_carries_forward() {
        let reports = run(default_policy().as_ref(), &parse(SEED).expect("scenario"));
        assert!(reports.iter().all(|r| r.ok), "{}", table(&reports));
        // Weights moved with the answers; two failed analyses counted two failed checks.
        assert_eq!(
            reports.iter().map(|r| r.weight).collect::<Vec<_>>(),
            [0, 20, 40, 60, 20, 20, 20, 0]
        );
    }

    #[test]
    fn a_wrong_expectation_is_reported_as_a_failed_tick() {
        let wrong = SEED.replace("expect: {setWeight: 60}", "expect: {setWeight: 50}");
        let reports = run(default_policy().as_ref(), &parse(&wrong).expect("scenario"));
        let failed: Vec<_> = reports.iter().filter(|r| !r.ok).collect();
        assert_eq!(failed.len(), 1, "{}", table(&reports));
        assert_eq!(
            (failed[0].index, failed[0].answered.as_str()),
            (3, "setWeight 60")
        );
        assert!(table(&reports).contains("1 failed"));
    }

    #[test]
    fn a_tick_that_expects_nothing_is_refused() {
        let err = parse("ticks:\n  - weight: 20\n    expect: {}\n").expect_err("no expectation");
        assert!(matches!(err, ScenarioError::NoExpectation { tick: 1 }), "{err}");
    }
}
