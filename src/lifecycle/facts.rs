//! What the controller observed in the cluster, reduced to the facts a decision needs.

use std::collections::BTreeMap;

/// A Deployment's replica count and health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Workload {
    /// `spec.replicas`.
    pub replicas: i32,
    /// Rolled out: every replica updated and available, no old ones left.
    pub ready: bool,
    /// The Deployment reports `ProgressDeadlineExceeded`.
    pub stalled: bool,
    /// Seconds since the Deployment lost its minimum available replicas; 0 while it has them.
    pub unavailable_secs: u64,
}

/// The cluster as one tick sees it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    /// The target Deployment; `None` when it does not exist.
    pub target: Option<Workload>,
    /// `<target>-primary`; `None` until fledge creates it.
    pub primary: Option<Workload>,
    /// Hash of the target's pod template and the configs it references: the revision being offered.
    pub revision: String,
    /// `configmap/<name>` / `secret/<name>` → content hash, of what the target references.
    pub tracked_configs: BTreeMap<String, String>,
    /// The canary weight fledge last wrote into the VirtualService (the source of truth), if the route exists.
    pub routed_canary_weight: Option<u32>,
    /// The canary weight the VirtualService shows when it differs from what fledge wrote: edited by hand.
    pub drifted_canary_weight: Option<u32>,
    /// The VirtualService copies requests to the canary (traffic mirroring).
    pub routed_mirror: bool,
    /// The canary's policy cannot judge (its Policy is not Ready): nothing moves until it can.
    pub policy_blocked: Option<PolicyBlocked>,
    /// Seconds since the target was first seen missing; 0 while it exists.
    pub target_missing_secs: u64,
    /// When the cluster was observed, in seconds since the Unix epoch (the tick's only clock).
    pub now: f64,
    /// An operator's request not taken yet (`fledge promote|abort|retry|pause|resume`).
    pub manual: Option<Manual>,
}

/// An operator's request, as the tick takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manual {
    pub action: crate::api::ManualAction,
    pub by: String,
    pub reason: Option<String>,
}

/// Why the policy cannot judge, and for how long it has not.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyBlocked {
    /// `Policy/errors: DigestMismatch: …`, for events.
    pub why: String,
    pub for_secs: u64,
}
