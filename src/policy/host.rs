//! What a component may call: the `log` and `metrics` imports, and the per-call state behind them
//! (memory cap included). A fresh `HostState` lives in each call's Store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::ResourceLimiter;

use super::bindings;
use super::types::{MetricsSource, Series};

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

/// The `log` and `metrics` imports of one contract version: the same behaviour for every version.
macro_rules! host_imports {
    ($version:ident) => {
        impl bindings::$version::types::Host for HostState {}

        impl bindings::$version::log::Host for HostState {
            fn log(&mut self, level: bindings::$version::log::Level, message: String) {
                use bindings::$version::log::Level;
                let level = match level {
                    Level::Debug => tracing::Level::DEBUG,
                    Level::Info => tracing::Level::INFO,
                    Level::Warn => tracing::Level::WARN,
                    Level::Error => tracing::Level::ERROR,
                };
                self.write_log(level, &message);
            }
        }

        impl bindings::$version::metrics::Host for HostState {
            fn instant_query(
                &mut self,
                query: String,
            ) -> Result<Vec<bindings::$version::metrics::Series>, String> {
                let answer = self.query(|source| source.instant_query(&query))?;
                Ok(answer.into_iter().map(Into::into).collect())
            }

            fn range_query(
                &mut self,
                query: String,
                window_seconds: u32,
                step_seconds: u32,
            ) -> Result<Vec<bindings::$version::metrics::Series>, String> {
                if step_seconds == 0 {
                    return Err("step-seconds must be positive".into());
                }
                let answer = self.query(|source| source.range_query(&query, window_seconds, step_seconds))?;
                Ok(answer.into_iter().map(Into::into).collect())
            }
        }
    };
}

host_imports!(v0_1);
host_imports!(v0_2);

impl HostState {
    fn write_log(&self, level: tracing::Level, message: &str) {
        let message = crate::text::clip(message, MAX_LOG_BYTES);
        let canary = self.canary.as_str();
        match level {
            tracing::Level::DEBUG | tracing::Level::TRACE => tracing::debug!(canary, "policy: {message}"),
            tracing::Level::INFO => tracing::info!(canary, "policy: {message}"),
            tracing::Level::WARN => tracing::warn!(canary, "policy: {message}"),
            tracing::Level::ERROR => tracing::error!(canary, "policy: {message}"),
        }
    }

    /// Runs a query on the canary's provider; the wait is the host's time, not the guest's.
    fn query(
        &mut self,
        run: impl FnOnce(&dyn MetricsSource) -> Result<Vec<Series>, String>,
    ) -> Result<Vec<Series>, String> {
        let source = self
            .metrics
            .clone()
            .ok_or("no metrics provider is configured for this canary")?;
        let started = Instant::now();
        let answer = run(source.as_ref());
        self.host_time += started.elapsed();
        answer
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
