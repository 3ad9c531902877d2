//! A loaded policy component: compiled once, imports checked against its grants, exports resolved to the
//! interfaces it implements, and a fresh Store per call.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use std::time::Instant;
use wasmtime::component::{Component, HasSelf, Instance, InstancePre, Linker, types::ComponentItem};

use wasmtime::{Store, Trap, UpdateDeadline};

use super::bindings::{analysis, gate, log, metrics, step, types};
use super::convert;
use super::engine::PolicyEngine;
use super::error::PolicyError;
use super::host::HostState;
use super::types::*;

/// The WIT package every policy speaks; guests of any compatible 0.1.x version bind.
pub const PACKAGE: &str = "fledge:policy";

/// Capabilities a component may import. `log` is always granted; `metrics` only where a provider is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Grants {
    pub metrics: bool,
}

impl Grants {
    /// Everything the host offers.
    pub const ALL: Self = Self { metrics: true };

    fn allows(self, import: &str) -> bool {
        match interface_of(import) {
            // `types` holds only type definitions; `log` is harmless and always on.
            Some("types" | "log") => true,
            Some("metrics") => self.metrics,
            _ => false,
        }
    }

    fn describe(self) -> String {
        if self.metrics {
            "log, metrics".into()
        } else {
            "log".into()
        }
    }
}

/// `fledge:policy/step@0.1.0` → `step`; `None` for anything outside our package.
fn interface_of(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(PACKAGE)?.strip_prefix('/')?;
    Some(rest.split('@').next().unwrap_or(rest))
}

/// Whether `bytes` start like a WebAssembly component (not a core module, not something else).
pub fn is_component(bytes: &[u8]) -> bool {
    // Magic `\0asm`, then the component encoding's version 0x0d and layer 1.
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [0x0d, 0x00, 0x01, 0x00]
}

/// The sha256 of a component's bytes, hex encoded.
pub fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A compiled, linked component, ready to instantiate.
#[derive(Clone)]
pub struct PolicyComponent {
    engine: PolicyEngine,
    /// Bounds of each call: the engine's, or tighter ones a Policy asked for.
    limits: super::engine::Limits,
    source_name: String,
    digest: String,
    pre: InstancePre<HostState>,
    step: Option<step::GuestIndices>,
    gate: Option<gate::GuestIndices>,
    analysis: Option<analysis::GuestIndices>,
    imports: Vec<String>,
    exports: Vec<String>,
    size_bytes: u64,
}

impl std::fmt::Debug for PolicyComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyComponent")
            .field("source", &self.source_name)
            .field("digest", &self.digest)
            .field("exports", &self.exports)
            .finish_non_exhaustive()
    }
}

impl PolicyComponent {
    pub(super) fn compile(
        engine: &PolicyEngine,
        source_name: &str,
        bytes: &[u8],
        digest: String,
        grants: Grants,
    ) -> Result<Self, PolicyError> {
        let load_error = |message: String| PolicyError::Load {
            source_name: source_name.to_owned(),
            message,
        };
        let component = Component::new(&engine.engine, bytes).map_err(|e| load_error(format!("{e:#}")))?;
        let ty = component.component_type();
        let imports: Vec<String> = ty
            .imports(&engine.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let exports: Vec<String> = ty
            .exports(&engine.engine)
            .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentInstance(_)))
            .map(|(name, _)| name.to_owned())
            .collect();
        // Refuse at load, not at the first call, anything the component would reach for without a grant.
        if let Some(denied) = imports.iter().find(|i| !grants.allows(i)) {
            return Err(PolicyError::ImportDenied {
                source_name: source_name.to_owned(),
                import: denied.clone(),
                granted: grants.describe(),
            });
        }
        let mut linker = Linker::<HostState>::new(&engine.engine);
        types::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| load_error(format!("{e:#}")))?;
        log::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| load_error(format!("{e:#}")))?;
        if grants.metrics {
            metrics::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)
                .map_err(|e| load_error(format!("{e:#}")))?;
        }
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| load_error(format!("{e:#}")))?;
        let (step, gate, analysis) = (
            step::GuestIndices::new(&pre).ok(),
            gate::GuestIndices::new(&pre).ok(),
            analysis::GuestIndices::new(&pre).ok(),
        );
        if step.is_none() && gate.is_none() && analysis.is_none() {
            return Err(PolicyError::MissingExport {
                source_name: source_name.to_owned(),
                export: format!(
                    "any of {PACKAGE}/step, /gate, /analysis (it exports: {})",
                    if exports.is_empty() {
                        "nothing".to_owned()
                    } else {
                        exports.join(", ")
                    }
                ),
            });
        }
        Ok(Self {
            engine: engine.clone(),
            limits: engine.limits.clone(),
            source_name: source_name.to_owned(),
            digest,
            pre,
            step,
            gate,
            analysis,
            imports,
            exports,
            size_bytes: u64::try_from(bytes.len()).unwrap_or(u64::MAX),
        })
    }

    /// Size of the component's bytes.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// The same component under the engine's bounds, or tighter ones: a value above the engine's ceiling is
    /// lowered to it.
    pub fn with_limits(&self, deadline: Option<std::time::Duration>, memory_bytes: Option<usize>) -> Self {
        let ceiling = &self.engine.limits;
        let mut limited = self.clone();
        limited.limits = ceiling.clone();
        if let Some(d) = deadline {
            limited.limits.deadline = d.min(ceiling.deadline);
        }
        if let Some(m) = memory_bytes {
            limited.limits.memory_bytes = m.min(ceiling.memory_bytes);
        }
        limited
    }

    /// The bounds each call runs under.
    pub fn limits(&self) -> &super::engine::Limits {
        &self.limits
    }

    /// The judgements it implements, by short name: `step`, `gate`, `analysis`.
    pub fn worlds(&self) -> Vec<&'static str> {
        [
            (self.step.is_some(), "step"),
            (self.gate.is_some(), "gate"),
            (self.analysis.is_some(), "analysis"),
        ]
        .into_iter()
        .filter_map(|(has, name)| has.then_some(name))
        .collect()
    }

    /// Whether it imports the host's `metrics` interface (needs a configured Prometheus).
    pub fn imports_metrics(&self) -> bool {
        self.imports.iter().any(|i| interface_of(i) == Some("metrics"))
    }

    /// sha256 of the component's bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Where the component came from (`builtin:default`, a path).
    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// Names of the interfaces it imports.
    pub fn imports(&self) -> &[String] {
        &self.imports
    }

    /// Names of the interfaces it exports.
    pub fn exports(&self) -> &[String] {
        &self.exports
    }

    /// The `fledge:policy` version its exports were built against.
    pub fn package_version(&self) -> Option<&str> {
        self.exports
            .iter()
            .filter(|e| interface_of(e).is_some())
            .find_map(|e| e.split_once('@').map(|(_, v)| v))
    }

    fn missing(&self, export: &str) -> PolicyError {
        PolicyError::MissingExport {
            source_name: self.source_name.clone(),
            export: format!("{PACKAGE}/{export}"),
        }
    }

    /// Runs `f` on a fresh instance in a fresh Store, under the engine's deadline and memory cap.
    fn call<R>(
        &self,
        rollout: &Rollout,
        metrics: Option<Arc<dyn MetricsSource>>,
        f: impl FnOnce(&mut Store<HostState>, &Instance) -> wasmtime::Result<R>,
    ) -> Result<R, PolicyError> {
        let limits = &self.limits;
        let canary = format!("{}.{}", rollout.name, rollout.namespace);
        let mut store = Store::new(
            &self.engine.engine,
            HostState::new(limits.memory_bytes, metrics, canary),
        );
        store.limiter(|s| &mut s.memory);
        store.set_epoch_deadline(limits.deadline_ticks());
        // The deadline is the guest's own time: waiting on a metrics query is the host's, so it is given
        // back (the queries have their own timeout and cap).
        let (deadline, tick, started) = (limits.deadline, limits.tick, Instant::now());
        store.epoch_deadline_callback(move |ctx| {
            let guest = started.elapsed().saturating_sub(ctx.data().host_time);
            match deadline.checked_sub(guest) {
                Some(left) if !left.is_zero() => {
                    let ticks = left.as_nanos().div_ceil(tick.as_nanos().max(1));
                    Ok(UpdateDeadline::Continue(
                        u64::try_from(ticks).unwrap_or(u64::MAX).max(1),
                    ))
                }
                _ => Err(Trap::Interrupt.into()),
            }
        });
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.classify(&e, &store, true))?;
        f(&mut store, &instance).map_err(|e| self.classify(&e, &store, false))
    }

    /// Types a failed call by what happened (limiter state, trap code), never by its message.
    fn classify(&self, err: &wasmtime::Error, store: &Store<HostState>, instantiating: bool) -> PolicyError {
        let limits = &self.limits;
        if store.data().memory.hit {
            return PolicyError::OutOfMemory {
                limit_bytes: limits.memory_bytes,
            };
        }
        match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => PolicyError::Timeout {
                deadline_ms: u64::try_from(limits.deadline.as_millis()).unwrap_or(u64::MAX),
            },
            Some(_) => PolicyError::Trap {
                message: format!("{err:?}"),
            },
            None if instantiating => PolicyError::Load {
                source_name: self.source_name.clone(),
                message: format!("{err:#}"),
            },
            // Not a trap: the answer could not be lifted (bad discriminant, invalid UTF-8, out of bounds).
            None => PolicyError::InvalidAnswer {
                message: format!("{err:#}"),
            },
        }
    }
}

/// The controller's view of a policy: three typed judgements, no wasmtime in sight.
pub trait Policy: Send + Sync {
    /// The next traffic move.
    fn step(&self, rollout: &Rollout) -> Result<StepDecision, PolicyError>;
    /// Whether gate `kind` is open given its webhooks' outcomes.
    fn gate(
        &self,
        rollout: &Rollout,
        kind: GateKind,
        hooks: &[WebhookOutcome],
    ) -> Result<GateDecision, PolicyError>;
    /// Whether the canary is healthy; `metrics` backs the component's own queries.
    fn analyse(
        &self,
        rollout: &Rollout,
        checks: &[MetricCheck],
        hooks: &[WebhookOutcome],
        metrics: Option<Arc<dyn MetricsSource>>,
    ) -> Result<AnalysisResult, PolicyError>;
}

impl Policy for PolicyComponent {
    fn step(&self, rollout: &Rollout) -> Result<StepDecision, PolicyError> {
        let indices = self.step.as_ref().ok_or_else(|| self.missing("step"))?;
        let input = rollout.into();
        let answer = self.call(rollout, None, |store, instance| {
            indices
                .load(&mut *store, instance)?
                .call_next(&mut *store, &input)
        })?;
        convert::step_decision(answer.map_err(convert::refused)?)
    }

    fn gate(
        &self,
        rollout: &Rollout,
        kind: GateKind,
        hooks: &[WebhookOutcome],
    ) -> Result<GateDecision, PolicyError> {
        let indices = self.gate.as_ref().ok_or_else(|| self.missing("gate"))?;
        let input = rollout.into();
        let hooks: Vec<_> = hooks.iter().map(Into::into).collect();
        let answer = self.call(rollout, None, |store, instance| {
            indices
                .load(&mut *store, instance)?
                .call_decide(&mut *store, &input, kind.into(), &hooks)
        })?;
        Ok(convert::gate_decision(answer.map_err(convert::refused)?))
    }

    fn analyse(
        &self,
        rollout: &Rollout,
        checks: &[MetricCheck],
        hooks: &[WebhookOutcome],
        metrics: Option<Arc<dyn MetricsSource>>,
    ) -> Result<AnalysisResult, PolicyError> {
        let indices = self.analysis.as_ref().ok_or_else(|| self.missing("analysis"))?;
        let input = rollout.into();
        let checks: Vec<_> = checks.iter().map(Into::into).collect();
        let hooks: Vec<_> = hooks.iter().map(Into::into).collect();
        let answer = self.call(rollout, metrics, |store, instance| {
            indices
                .load(&mut *store, instance)?
                .call_judge(&mut *store, &input, &checks, &hooks)
        })?;
        Ok(convert::analysis_result(answer.map_err(convert::refused)?))
    }
}
