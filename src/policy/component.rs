//! A loaded policy component: compiled once, imports checked against its grants, exports resolved to the
//! interfaces it implements, and a fresh Store per call.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use std::time::Instant;
use wasmtime::component::{Component, HasSelf, Instance, InstancePre, Linker, types::ComponentItem};

use wasmtime::{Store, Trap, UpdateDeadline};

use super::bindings::{v0_1, v0_2};
use super::convert;
use super::engine::PolicyEngine;
use super::error::PolicyError;
use super::host::HostState;
use super::types::*;

/// The WIT package every policy speaks.
pub const PACKAGE: &str = "fledge:policy";

/// The contract versions the host links (`wit/README.md`): a guest of any `0.1.x` or `0.2.x` binds.
pub const VERSIONS: &[&str] = &["0.1", "0.2"];

/// A contract version's exports, resolved once at load: each judgement the component implements.
#[derive(Clone)]
struct Guests<S, G, A> {
    step: Option<S>,
    gate: Option<G>,
    analysis: Option<A>,
}

impl<S, G, A> Guests<S, G, A> {
    fn any(&self) -> bool {
        self.step.is_some() || self.gate.is_some() || self.analysis.is_some()
    }
}

/// The component's exports by the contract version it was built against.
#[derive(Clone)]
enum Exports {
    V0_1(Guests<v0_1::step::GuestIndices, v0_1::gate::GuestIndices, v0_1::analysis::GuestIndices>),
    V0_2(Guests<v0_2::step::GuestIndices, v0_2::gate::GuestIndices, v0_2::analysis::GuestIndices>),
}

impl Exports {
    fn has(&self) -> [bool; 3] {
        match self {
            Self::V0_1(g) => [g.step.is_some(), g.gate.is_some(), g.analysis.is_some()],
            Self::V0_2(g) => [g.step.is_some(), g.gate.is_some(), g.analysis.is_some()],
        }
    }
}

/// The `0.<minor>` of the contract the component speaks, from the versions of its `fledge:policy`
/// imports and exports; an error names what it mixes or what this host does not serve.
fn contract_minor<'a>(names: impl Iterator<Item = &'a str>) -> Result<Option<&'a str>, String> {
    let mut found: Option<&str> = None;
    for name in names {
        let Some(version) = name
            .strip_prefix(PACKAGE)
            .and_then(|rest| rest.split_once('@'))
            .map(|(_, v)| v)
        else {
            continue;
        };
        let minor = version.rsplit_once('.').map_or(version, |(minor, _)| minor);
        if !VERSIONS.contains(&minor) {
            return Err(format!(
                "it is built for {PACKAGE}@{version}; this controller serves {}",
                VERSIONS
                    .iter()
                    .map(|v| format!("{v}.x"))
                    .collect::<Vec<_>>()
                    .join(" and ")
            ));
        }
        match found {
            Some(seen) if seen != minor => {
                return Err(format!("it mixes {PACKAGE}@{seen}.x and @{minor}.x interfaces"));
            }
            _ => found = Some(minor),
        }
    }
    Ok(found)
}

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
    guests: Exports,
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
        let component = engine
            .compiled(&digest, bytes)
            .map_err(|e| load_error(format!("{e:#}")))?;
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
        let minor = contract_minor(imports.iter().chain(&exports).map(String::as_str)).map_err(load_error)?;
        let (pre, guests) = match minor {
            Some("0.1") => {
                let pre = link_v0_1(&engine.engine, &component, grants)
                    .map_err(|e| load_error(format!("{e:#}")))?;
                let guests = Guests {
                    step: v0_1::step::GuestIndices::new(&pre).ok(),
                    gate: v0_1::gate::GuestIndices::new(&pre).ok(),
                    analysis: v0_1::analysis::GuestIndices::new(&pre).ok(),
                };
                let any = guests.any();
                (pre, any.then_some(Exports::V0_1(guests)))
            }
            Some(_) => {
                let pre = link_v0_2(&engine.engine, &component, grants)
                    .map_err(|e| load_error(format!("{e:#}")))?;
                let guests = Guests {
                    step: v0_2::step::GuestIndices::new(&pre).ok(),
                    gate: v0_2::gate::GuestIndices::new(&pre).ok(),
                    analysis: v0_2::analysis::GuestIndices::new(&pre).ok(),
                };
                let any = guests.any();
                (pre, any.then_some(Exports::V0_2(guests)))
            }
            // Speaks no version of the contract: it cannot export a judgement either.
            None => {
                let pre = link_v0_2(&engine.engine, &component, grants)
                    .map_err(|e| load_error(format!("{e:#}")))?;
                (pre, None)
            }
        };
        let Some(guests) = guests else {
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
        };
        Ok(Self {
            engine: engine.clone(),
            limits: engine.limits.clone(),
            source_name: source_name.to_owned(),
            digest,
            pre,
            guests,
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
        let [step, gate, analysis] = self.guests.has();
        [(step, "step"), (gate, "gate"), (analysis, "analysis")]
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
        // The epoch ticker runs while this guard lives: the deadline below needs it.
        let _running = self.engine.ticker.enter();
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

/// Writes `link_v0_N`: links one contract version's host interfaces (`metrics` only when granted)
/// for a component of that version. A macro because each version's bindings are distinct types.
macro_rules! link_version {
    ($link:ident, $version:ident) => {
        fn $link(
            engine: &wasmtime::Engine,
            component: &Component,
            grants: Grants,
        ) -> wasmtime::Result<InstancePre<HostState>> {
            let mut linker = Linker::<HostState>::new(engine);
            $version::types::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)?;
            $version::log::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)?;
            if grants.metrics {
                $version::metrics::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)?;
            }
            linker.instantiate_pre(component)
        }
    };
}
link_version!(link_v0_1, v0_1);
link_version!(link_v0_2, v0_2);

/// The controller's view of a policy: three typed judgements, each with the policy's new state, no
/// wasmtime in sight.
pub trait Policy: Send + Sync {
    /// The next traffic move.
    fn step(&self, rollout: &Rollout) -> Result<Answer<StepDecision>, PolicyError>;
    /// Whether gate `kind` is open given its webhooks' outcomes.
    fn gate(
        &self,
        rollout: &Rollout,
        kind: GateKind,
        hooks: &[WebhookOutcome],
    ) -> Result<Answer<GateDecision>, PolicyError>;
    /// Whether the canary is healthy; `metrics` backs the component's own queries.
    fn analyse(
        &self,
        rollout: &Rollout,
        checks: &[MetricCheck],
        hooks: &[WebhookOutcome],
        metrics: Option<Arc<dyn MetricsSource>>,
    ) -> Result<Answer<AnalysisResult>, PolicyError>;
}

/// Calls `$world` of a version's exports on a fresh instance: the missing-export error when it is not
/// there, the guest's raw answer otherwise. One body for every contract version (their types differ).
macro_rules! invoke {
    ($self:ident, $guests:ident . $world:ident, $rollout:expr, $metrics:expr, |$export:ident, $store:ident| $call:expr) => {{
        let indices = $guests
            .$world
            .as_ref()
            .ok_or_else(|| $self.missing(stringify!($world)))?;
        $self.call($rollout, $metrics, |$store, instance| {
            let $export = indices.load(&mut *$store, instance)?;
            $call
        })?
    }};
}

impl Policy for PolicyComponent {
    fn step(&self, rollout: &Rollout) -> Result<Answer<StepDecision>, PolicyError> {
        match &self.guests {
            Exports::V0_1(g) => {
                let input = rollout.into();
                let answer = invoke!(self, g.step, rollout, None, |e, store| e
                    .call_next(&mut *store, &input));
                let decision = convert::v0_1::step_decision(answer.map_err(convert::v0_1::refused)?)?;
                Ok(Answer::stateless(decision))
            }
            Exports::V0_2(g) => {
                let input = rollout.into();
                let answer = invoke!(self, g.step, rollout, None, |e, store| e
                    .call_next(&mut *store, &input));
                convert::v0_2_only::step_answer(answer.map_err(convert::v0_2::refused)?)
            }
        }
    }

    fn gate(
        &self,
        rollout: &Rollout,
        kind: GateKind,
        hooks: &[WebhookOutcome],
    ) -> Result<Answer<GateDecision>, PolicyError> {
        match &self.guests {
            Exports::V0_1(g) => {
                let (input, hooks): (_, Vec<_>) = (rollout.into(), hooks.iter().map(Into::into).collect());
                let answer = invoke!(self, g.gate, rollout, None, |e, store| {
                    e.call_decide(&mut *store, &input, kind.into(), &hooks)
                });
                let decision = convert::v0_1::gate_decision(answer.map_err(convert::v0_1::refused)?);
                Ok(Answer::stateless(decision))
            }
            Exports::V0_2(g) => {
                let (input, hooks): (_, Vec<_>) = (rollout.into(), hooks.iter().map(Into::into).collect());
                let answer = invoke!(self, g.gate, rollout, None, |e, store| {
                    e.call_decide(&mut *store, &input, kind.into(), &hooks)
                });
                convert::v0_2_only::gate_answer(answer.map_err(convert::v0_2::refused)?)
            }
        }
    }

    fn analyse(
        &self,
        rollout: &Rollout,
        checks: &[MetricCheck],
        hooks: &[WebhookOutcome],
        metrics: Option<Arc<dyn MetricsSource>>,
    ) -> Result<Answer<AnalysisResult>, PolicyError> {
        match &self.guests {
            Exports::V0_1(g) => {
                let input = rollout.into();
                let (checks, hooks): (Vec<_>, Vec<_>) = (
                    checks.iter().map(Into::into).collect(),
                    hooks.iter().map(Into::into).collect(),
                );
                let answer = invoke!(self, g.analysis, rollout, metrics, |e, store| {
                    e.call_judge(&mut *store, &input, &checks, &hooks)
                });
                let result = answer.map_err(convert::v0_1::refused)?;
                Ok(Answer::stateless(AnalysisResult {
                    verdict: convert::v0_1::verdict(result.verdict),
                    metrics: convert::v0_1::metric_verdicts(result.metrics),
                }))
            }
            Exports::V0_2(g) => {
                let input = rollout.into();
                let (checks, hooks): (Vec<_>, Vec<_>) = (
                    checks.iter().map(Into::into).collect(),
                    hooks.iter().map(Into::into).collect(),
                );
                let answer = invoke!(self, g.analysis, rollout, metrics, |e, store| {
                    e.call_judge(&mut *store, &input, &checks, &hooks)
                });
                convert::v0_2_only::analysis_answer(answer.map_err(convert::v0_2::refused)?)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::contract_minor;

    #[test]
    fn a_component_speaks_the_minor_of_its_fledge_interfaces() {
        let names = [
            "wasi:io/streams@0.2.0",
            "fledge:policy/log@0.2.0",
            "fledge:policy/step@0.2.3",
        ];
        assert_eq!(contract_minor(names.into_iter()), Ok(Some("0.2")));
        assert_eq!(
            contract_minor(["fledge:policy/step@0.1.0"].into_iter()),
            Ok(Some("0.1"))
        );
        assert_eq!(contract_minor(["other:pkg/x@1.0.0"].into_iter()), Ok(None));
    }

    #[test]
    fn an_unserved_or_mixed_contract_version_is_named_in_the_error() {
        let newer = contract_minor(["fledge:policy/step@0.3.0"].into_iter()).unwrap_err();
        assert!(
            newer.contains("@0.3.0") && newer.contains("0.1.x and 0.2.x"),
            "{newer}"
        );
        let mixed = ["fledge:policy/log@0.1.0", "fledge:policy/step@0.2.0"];
        assert!(contract_minor(mixed.into_iter()).unwrap_err().contains("mixes"));
    }
}
