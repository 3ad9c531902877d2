//! What a component may call: the `log` and `metrics` imports, and the per-call state behind them
//! (memory cap included). A fresh `HostState` lives in each call's Store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::ResourceLimiter;

use super::bindings::{log, metrics, types};
use super::types::MetricsSource;

/// Longest log message kept from a guest; the rest is cut so a policy cannot flood the controller's log.
const MAX_LOG_BYTES: usize = 4096;

/// Per-call state of one component instance.
pub struct HostState {
    pub(super) memory: MemoryCap,
    metrics: Option<Arc<dyn MetricsSource>>,
    /// "name.namespace" of the canary being judged, for log lines.
    canary: String,
    /// Wall time spent in host calls (metrics queries): not charged to the guest's deadline.
    pub(super) host_time: Duration,
}

impl HostState {
    pub fn new(memory_limit: usize, metrics: Option<Arc<dyn MetricsSource>>, canary: String) -> Self {
        Self {
            memory: MemoryCap::new(memory_limit),
            metrics,
            canary,
            host_time: Duration::ZERO,
        }
    }
}

impl types::Host for HostState {}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) {
        let message = crate::text::clip(&message, MAX_LOG_BYTES);
        let canary = self.canary.as_str();
        match level {
            log::Level::Debug => tracing::debug!(canary, "policy: {message}"),
            log::Level::Info => tracing::info!(canary, "policy: {message}"),
            log::Level::Warn => tracing::warn!(canary, "policy: {message}"),
            log::Level::Error => tracing::error!(canary, "policy: {message}"),
        }
    }
}

impl metrics::Host for HostState {
    fn instant_query(&mut self, query: String) -> Result<Vec<metrics::Series>, String> {
        let source = self
            .metrics
            .clone()
            .ok_or("no metrics provider is configured for this canary")?;
        let started = Instant::now();
        let answer = source.instant_query(&query);
        self.host_time += started.elapsed();
        Ok(answer?.into_iter().map(Into::into).collect())
    }

    fn range_query(
        &mut self,
        query: String,
        window_seconds: u32,
        step_seconds: u32,
    ) -> Result<Vec<metrics::Series>, String> {
        let source = self
            .metrics
            .clone()
            .ok_or("no metrics provider is configured for this canary")?;
        if step_seconds == 0 {
            return Err("step-seconds must be positive".into());
        }
        let started = Instant::now();
        let answer = source.range_query(&query, window_seconds, step_seconds);
        self.host_time += started.elapsed();
        Ok(answer?.into_iter().map(Into::into).collect())
    }
}

/// Caps a component's linear memory and tables; growing past the cap traps (never a silent -1 from
/// `memory.grow`), and the cap being hit is recorded so the error is classified without string matching.
#[derive(Debug)]
pub struct MemoryCap {
    limit: usize,
    pub(super) hit: bool,
}

/// Tables and instances a component may have; generous for interpreted guests (Python needs ~40 instances).
const MAX_TABLE_ELEMENTS: usize = 1_000_000;
const MAX_INSTANCES: usize = 100;

impl MemoryCap {
    fn new(limit: usize) -> Self {
        Self { limit, hit: false }
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = true;
            wasmtime::bail!("memory cap of {} bytes reached (wanted {desired})", self.limit);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.hit = true;
            wasmtime::bail!("table cap of {MAX_TABLE_ELEMENTS} elements reached");
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_INSTANCES
    }
}
