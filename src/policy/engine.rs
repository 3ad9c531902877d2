//! One wasmtime Engine for the process: its limits, the epoch ticker that enforces deadlines (`ticker`), the on-disk
//! cache of compiled components (`fledge-precompiled`, mapped on load), and the in-memory set of loaded
//! components keyed by digest.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fledge_precompiled::PrecompiledCache;
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::component::{Grants, PolicyComponent};
use super::error::PolicyError;
use super::ticker::Ticker;

/// Bounds on every policy call.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock time one call may take (instantiation included).
    pub deadline: Duration,
    /// Linear memory one component instance may grow to.
    pub memory_bytes: usize,
    /// How often the epoch advances; a call stops at most one tick after its deadline.
    pub tick: Duration,
    /// Policy calls running at once (more wait their turn): with `memory_bytes`, what hostile policies can
    /// take in all, whatever `--concurrency` is.
    pub concurrent_calls: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            deadline: Duration::from_millis(100),
            memory_bytes: 64 << 20,
            tick: Duration::from_millis(10),
            concurrent_calls: 4,
        }
    }
}

impl Limits {
    /// The deadline in epoch ticks. The first tick comes anywhere within one tick of the call's start, so
    /// one tick more than the division guarantees a call at least its deadline (and at most one tick more).
    pub(super) fn deadline_ticks(&self) -> u64 {
        let tick = self.tick.as_nanos().max(1);
        let ticks = self.deadline.as_nanos().div_ceil(tick) + 1;
        u64::try_from(ticks).unwrap_or(u64::MAX)
    }
}

/// Core instances (and memories, tables) one component may have.
const MAX_CORE_INSTANCES: u32 = 100;

/// Components already loaded, by (digest, grants).
type Loaded = HashMap<(String, Grants), Arc<PolicyComponent>>;

/// The policy runtime's engine. Cheap to share (`Arc`); the epoch ticker stops when the last clone drops.
#[derive(Clone)]
pub struct PolicyEngine {
    pub(super) engine: Engine,
    pub(super) limits: Limits,
    pub(super) ticker: Ticker,
    precompiled: Option<PrecompiledCache>,
    loaded: Arc<Mutex<Loaded>>,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl PolicyEngine {
    /// An engine with `limits`, caching compiled code under `cache_dir` when given.
    pub fn new(limits: Limits, cache_dir: Option<PathBuf>) -> Result<Self, PolicyError> {
        let setup = |message: String| PolicyError::Load {
            source_name: "engine".into(),
            message,
        };
        let mut config = Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        // Pre-reserved instance slots make the fresh instance of every call cheap (no mmap per call).
        let mut pool = PoolingAllocationConfig::default();
        pool.max_memory_size(limits.memory_bytes)
            // Interpreted guests (Python) are made of dozens of core instances.
            .max_core_instances_per_component(MAX_CORE_INSTANCES)
            .max_memories_per_component(MAX_CORE_INSTANCES)
            .max_tables_per_component(MAX_CORE_INSTANCES);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| setup(format!("{e:#}")))?;
        let precompiled = cache_dir
            .map(|dir| PrecompiledCache::open(&dir, &engine))
            .transpose()
            .map_err(|e| setup(format!("compile cache: {e:#}")))?;
        let ticker = Ticker::spawn(&engine, limits.tick, limits.concurrent_calls)
            .map_err(|e| setup(format!("epoch ticker: {e}")))?;
        Ok(Self {
            engine,
            limits,
            ticker,
            precompiled,
            loaded: Arc::default(),
        })
    }

    /// Forgets every loaded component; the next load compiles again or reads the on-disk cache.
    pub fn evict_all(&self) {
        if let Ok(mut map) = self.loaded.lock() {
            map.clear();
        }
    }

    /// Forgets the loaded components whose digest `keep` refuses (no Policy or rollout uses them any more).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        if let Ok(mut map) = self.loaded.lock() {
            map.retain(|(digest, _), _| keep(digest));
        }
    }

    /// How many components are loaded.
    pub fn loaded_count(&self) -> usize {
        self.loaded.lock().map_or(0, |m| m.len())
    }

    /// The limits every call runs under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The compiled form of `bytes` (whose sha256 is `digest`): mapped from the on-disk cache, or compiled.
    pub(super) fn compiled(&self, digest: &str, bytes: &[u8]) -> wasmtime::Result<Component> {
        match &self.precompiled {
            Some(cache) => cache
                .load(&self.engine, digest, bytes)
                .map(|(component, _)| component),
            None => Component::new(&self.engine, bytes),
        }
    }

    /// Loads a component from its bytes (compiling it, or taking it from the caches), checking its imports
    /// against `grants`. The same bytes with the same grants load once per process.
    pub fn load(
        &self,
        source_name: &str,
        bytes: &[u8],
        grants: Grants,
    ) -> Result<Arc<PolicyComponent>, PolicyError> {
        let digest = super::component::digest(bytes);
        let key = (digest.clone(), grants);
        if let Some(found) = self.loaded.lock().ok().and_then(|map| map.get(&key).cloned()) {
            return Ok(found);
        }
        let component = Arc::new(PolicyComponent::compile(
            self,
            source_name,
            bytes,
            digest,
            grants,
        )?);
        if let Ok(mut map) = self.loaded.lock() {
            map.insert(key, component.clone());
        }
        Ok(component)
    }
}
