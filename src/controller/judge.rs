//! The controller's [`Judge`]: runs the canary's webhooks and metric checks (IO, on the runtime) and asks
//! the canary's policy component (sync, on this blocking thread) what they mean. Everything measured and
//! answered during the tick is kept in `record` for the status.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tokio::runtime::Handle;

use crate::analysis::{PolicyMetrics, Providers};
use crate::api::{AnalysisStatus, CheckStatus, ValidSpec, WebhookStatus, WebhookType};
use crate::lifecycle::{Judge, Judged};
use crate::policy::types::{
    Answer, CheckValue, GateDecision, GateKind, MetricVerdict, MetricsSource, Rollout, StepDecision, Verdict,
    WebhookOutcome,
};
use crate::policy::{Policy, PolicyComponent, PolicyError};
use crate::telemetry::metrics::Metrics;
use crate::webhooks::{Payload, Webhooks};

/// Asks one policy component, feeding it what the canary's webhooks and metrics say.
#[derive(Debug)]
pub struct PolicyJudge {
    pub policy: Arc<PolicyComponent>,
    /// Answers what `policy` does not export (the built-in default): a component may serve one world.
    pub fallback: Arc<PolicyComponent>,
    pub spec: ValidSpec,
    pub io: JudgeIo,
    /// The canary's Prometheus for the policy's own queries; `None` when no provider is configured.
    pub metrics: Option<Arc<PolicyMetrics>>,
    /// The revision under analysis, sent to webhooks as Flagger's `checksum`.
    pub checksum: String,
    /// What this tick measured; `None` when no analysis ran.
    pub record: Option<AnalysisStatus>,
    /// Webhook calls of this tick (all kinds).
    called: Vec<WebhookStatus>,
}

/// What a judge reaches out through: the runtime it blocks on, Prometheus, webhooks, and fledge's own series.
#[derive(Debug, Clone)]
pub struct JudgeIo {
    pub handle: Handle,
    pub providers: Arc<Providers>,
    pub webhooks: Webhooks,
    pub telemetry: Metrics,
}

impl PolicyJudge {
    pub fn new(
        (policy, fallback): (Arc<PolicyComponent>, Arc<PolicyComponent>),
        spec: ValidSpec,
        io: JudgeIo,
        metrics: Option<Arc<PolicyMetrics>>,
        checksum: String,
    ) -> Self {
        Self {
            policy,
            fallback,
            spec,
            io,
            metrics,
            checksum,
            record: None,
            called: Vec::new(),
        }
    }

    /// Calls every webhook of `kind`, concurrently, and remembers the answers.
    fn call(&mut self, rollout: &Rollout, kind: WebhookType) -> Vec<WebhookOutcome> {
        let hooks: Vec<_> = self.spec.webhooks.iter().filter(|h| h.kind == kind).collect();
        if hooks.is_empty() {
            return Vec::new();
        }
        let payload = Payload {
            name: rollout.name.clone(),
            namespace: rollout.namespace.clone(),
            phase: rollout.phase.name(),
            checksum: self.checksum.clone(),
            metadata: Default::default(),
        };
        let webhooks = &self.io.webhooks;
        let outcomes = self.io.handle.block_on(futures::future::join_all(
            hooks.iter().map(|h| webhooks.call(h, &payload)),
        ));
        self.called.extend(outcomes.iter().map(|o| WebhookStatus {
            name: o.name.clone(),
            ok: o.ok,
            status_code: o.status_code,
            message: o.message.clone(),
        }));
        outcomes
    }

    fn timed<T>(&self, world: &'static str, started: std::time::Instant, answer: &Result<T, PolicyError>) {
        let error = answer.as_ref().err().map(PolicyError::category);
        self.io.telemetry.policy_call(world, started.elapsed(), error);
    }

    /// Webhook calls made so far in this tick, for the status when no analysis ran.
    pub fn take_webhook_calls(&mut self) -> Vec<WebhookStatus> {
        std::mem::take(&mut self.called)
    }
}

impl Judge for PolicyJudge {
    fn step(&mut self, rollout: &Rollout) -> Result<Answer<StepDecision>, PolicyError> {
        let started = std::time::Instant::now();
        let answer = match self.policy.step(rollout) {
            Err(PolicyError::MissingExport { .. }) => self.fallback.step(&own_config(rollout)).map(forget),
            answer => answer,
        };
        self.timed("step", started, &answer);
        answer
    }

    fn gate(&mut self, rollout: &Rollout, kind: GateKind) -> Result<Answer<GateDecision>, PolicyError> {
        let webhook_kind = match kind {
            GateKind::ConfirmRollout => WebhookType::ConfirmRollout,
            GateKind::ConfirmTrafficIncrease => WebhookType::ConfirmTrafficIncrease,
            GateKind::ConfirmPromotion => WebhookType::ConfirmPromotion,
        };
        let hooks = self.call(rollout, webhook_kind);
        let started = std::time::Instant::now();
        let answer = match self.policy.gate(rollout, kind, &hooks) {
            Err(PolicyError::MissingExport { .. }) => {
                self.fallback.gate(&own_config(rollout), kind, &hooks).map(forget)
            }
            answer => answer,
        };
        self.timed("gate", started, &answer);
        answer
    }

    fn analyse(&mut self, rollout: &Rollout) -> Result<Answer<Judged>, PolicyError> {
        let started = std::time::Instant::now();
        let hooks = self.call(rollout, WebhookType::Rollout);
        let checks = self.io.handle.block_on(self.io.providers.run_checks(
            &rollout.name,
            &rollout.namespace,
            &self.spec,
        ));
        let plain: Vec<_> = checks.iter().map(|run| run.check.clone()).collect();
        let source = self.metrics.clone().map(|m| m as Arc<dyn MetricsSource>);
        let policy_started = std::time::Instant::now();
        let result = match self.policy.analyse(rollout, &plain, &hooks, source.clone()) {
            Err(PolicyError::MissingExport { .. }) => self
                .fallback
                .analyse(&own_config(rollout), &plain, &hooks, source)
                .map(forget),
            answer => answer,
        };
        // Includes the policy's own queries: that is what the analysis world costs.
        self.timed("analysis", policy_started, &result);
        let verdicts: &[MetricVerdict] = result.as_ref().map_or(&[], |r| &r.decision.metrics);
        let record = AnalysisStatus {
            time: Some(Time(Timestamp::now())),
            verdict: match &result {
                Ok(r) => verdict_name(r.decision.verdict).to_owned(),
                Err(e) => format!("error: {}", e.category()),
            },
            duration_ms: Some(millis(started.elapsed())),
            checks: checks
                .iter()
                .map(|run| {
                    let c = &run.check;
                    let judged = verdicts.iter().find(|v| v.name == c.name);
                    CheckStatus {
                        name: c.name.clone(),
                        value: c.value.filter(|v| v.is_finite()),
                        min: c.range.min,
                        max: c.range.max,
                        verdict: judged.map_or("unjudged", |v| verdict_name(v.verdict)).to_owned(),
                        message: judged.map_or_else(
                            || c.error.clone().unwrap_or_default(),
                            |v| crate::text::clip(&v.message, 512),
                        ),
                        query_ms: Some(millis(run.elapsed)),
                    }
                })
                .collect(),
            webhooks: Vec::new(),
            queries: self.metrics.as_ref().map(|m| m.records()).unwrap_or_default(),
        };
        tracing::debug!(
            canary = %format!("{}.{}", rollout.name, rollout.namespace),
            analysis_ms = record.duration_ms,
            query_ms = ?record.checks.iter().map(|c| c.query_ms).collect::<Vec<_>>(),
            verdict = record.verdict,
            "analysis done"
        );
        let Answer { decision, state } = result?;
        let failed: Vec<String> = decision
            .metrics
            .iter()
            .filter(|m| m.verdict != Verdict::Pass)
            .map(|m| m.message.clone())
            .collect();
        // The history keeps each check's value and the policy's verdict on it (unjudged: inconclusive).
        let checks = record
            .checks
            .iter()
            .map(|c| CheckValue {
                name: c.name.clone(),
                value: c.value,
                verdict: decision
                    .metrics
                    .iter()
                    .find(|v| v.name == c.name)
                    .map_or(Verdict::Inconclusive, |v| v.verdict),
            })
            .collect();
        self.record = Some(record);
        Ok(Answer {
            decision: Judged {
                verdict: decision.verdict,
                why: failed.join("; "),
                checks,
            },
            state,
        })
    }

    fn hooks(&mut self, rollout: &Rollout, kind: WebhookType) -> Vec<WebhookOutcome> {
        self.call(rollout, kind)
    }
}

/// The rollout as the fallback sees it: `analysis.policy.config` and `state` belong to the canary's
/// component, so the default runs on its own defaults and remembers nothing.
fn own_config(rollout: &Rollout) -> Rollout {
    Rollout {
        config: "{}".into(),
        state: None,
        ..rollout.clone()
    }
}

/// The fallback's answer never replaces the canary component's state.
fn forget<T>(answer: Answer<T>) -> Answer<T> {
    Answer::stateless(answer.decision)
}

fn millis(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Fail => "fail",
        Verdict::Inconclusive => "inconclusive",
    }
}
