//! The controller's policy store: what each Policy and ClusterPolicy resolved to, every component loaded by
//! digest (so a rollout keeps the digest it started with), and the `--policy-dir` files. Canaries read it;
//! only the policy reconciler writes it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crate::api::{PolicyKind, PolicySelector};
use crate::policy::{BUILTIN_DEFAULT, Grants, PolicyComponent, PolicyEngine, PolicyError, is_component};

/// A Policy (namespaced) or ClusterPolicy, by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicyKey {
    pub kind: PolicyKind,
    /// `None` for a ClusterPolicy.
    pub namespace: Option<String>,
    pub name: String,
}

impl std::fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{:?} {ns}/{}", self.kind, self.name),
            None => write!(f, "{:?} {}", self.kind, self.name),
        }
    }
}

/// A component ready to judge, with what the Policy adds to it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub component: Arc<PolicyComponent>,
    /// The Policy's default config, beneath the Canary's own.
    pub config: Option<serde_json::Value>,
    /// `sha256:<hex>`.
    pub digest: String,
}

/// Why a canary's policy cannot judge now: the condition reason and a message naming the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    pub reason: &'static str,
    pub message: String,
}

/// What a policy resource resolved to.
#[derive(Debug, Clone)]
pub enum Entry {
    Ready(Loaded),
    NotReady(NotReady),
}

/// The largest `--policy-dir` file read (the same cap as a registry pull).
pub const DEFAULT_MAX_BYTES: u64 = 32 << 20;

/// Shared by the canary and policy reconcilers.
pub struct PolicyStore {
    engine: PolicyEngine,
    default: Arc<PolicyComponent>,
    entries: RwLock<HashMap<PolicyKey, Entry>>,
    /// Every component a Policy loaded, by `sha256:<hex>`: a rollout pinned to an older digest finds it here.
    by_digest: Mutex<HashMap<String, Arc<PolicyComponent>>>,
    /// Component bytes by digest on disk, so a restarted controller still has a pinned digest.
    blob_dir: Option<PathBuf>,
    policy_dir: Option<PathBuf>,
    max_bytes: u64,
    files: Mutex<HashMap<String, (FileStamp, Arc<PolicyComponent>)>>,
}

/// A file's identity for the `--policy-dir` cache: a change of either reloads it.
type FileStamp = (Option<std::time::SystemTime>, u64);

impl std::fmt::Debug for PolicyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyStore")
            .field("policy_dir", &self.policy_dir)
            .finish_non_exhaustive()
    }
}

impl PolicyStore {
    pub fn new(
        engine: PolicyEngine,
        policy_dir: Option<PathBuf>,
        blob_dir: Option<PathBuf>,
        max_bytes: u64,
    ) -> Result<Self, PolicyError> {
        let bytes = crate::policy::builtin(BUILTIN_DEFAULT).unwrap_or_default();
        let default = engine.load(BUILTIN_DEFAULT, bytes, Grants::default())?;
        Ok(Self {
            engine,
            default,
            entries: RwLock::default(),
            by_digest: Mutex::default(),
            blob_dir,
            policy_dir,
            max_bytes,
            files: Mutex::default(),
        })
    }

    /// The built-in default: answers for most canaries and for every world a component does not export.
    pub fn default_policy(&self) -> Arc<PolicyComponent> {
        self.default.clone()
    }

    pub fn engine(&self) -> &PolicyEngine {
        &self.engine
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Records what a policy resource resolved to.
    pub fn set(&self, key: PolicyKey, entry: Entry) {
        if let Entry::Ready(loaded) = &entry
            && let Ok(mut map) = self.by_digest.lock()
        {
            map.insert(loaded.digest.clone(), loaded.component.clone());
        }
        if let Ok(mut map) = self.entries.write() {
            map.insert(key, entry);
        }
    }

    /// Forgets a deleted policy resource.
    pub fn remove(&self, key: &PolicyKey) {
        if let Ok(mut map) = self.entries.write() {
            map.remove(key);
        }
    }

    /// What a policy resource resolved to, if it has been seen.
    pub fn get(&self, key: &PolicyKey) -> Option<Entry> {
        self.entries.read().ok().and_then(|m| m.get(key).cloned())
    }

    /// Keeps in memory only the components a Policy serves now or a rollout in flight is pinned to.
    pub fn evict_unused(&self, pinned: &HashSet<String>) {
        let mut keep: HashSet<String> = pinned.clone();
        keep.extend(
            crate::policy::BUILTINS
                .iter()
                .map(|(_, bytes)| crate::registry::sha256(bytes)),
        );
        if let Ok(entries) = self.entries.read() {
            keep.extend(entries.values().filter_map(|e| match e {
                Entry::Ready(l) => Some(l.digest.clone()),
                Entry::NotReady(_) => None,
            }));
        }
        if let Ok(files) = self.files.lock() {
            keep.extend(files.values().map(|(_, c)| format!("sha256:{}", c.digest())));
        }
        if let Ok(mut map) = self.by_digest.lock() {
            map.retain(|d, _| keep.contains(d));
        }
        self.engine.retain(|hex| keep.contains(&format!("sha256:{hex}")));
    }

    /// Stores the bytes of `digest` on disk (best effort: the cache is an optimisation for restarts).
    pub fn keep_blob(&self, digest: &str, bytes: &[u8]) {
        let Some(path) = self.blob_path(digest) else {
            return;
        };
        if path.exists() {
            return;
        }
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            tracing::debug!(digest, "cannot cache policy bytes: {e}");
        }
    }

    fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        let hex = crate::registry::digest_hex(digest).ok()?;
        Some(self.blob_dir.as_ref()?.join("sha256").join(format!("{hex}.wasm")))
    }

    /// A component already loaded by its digest (content-addressed: a registry need not be asked again).
    pub fn in_memory(&self, digest: &str) -> Option<Arc<PolicyComponent>> {
        self.by_digest.lock().ok().and_then(|m| m.get(digest).cloned())
    }

    /// The component a rollout pinned: in memory, or from the on-disk copy (verified, compiled off the
    /// runtime). `None` when neither has it.
    pub async fn pinned(self: &Arc<Self>, digest: &str) -> Option<Arc<PolicyComponent>> {
        if let Some(found) = self.in_memory(digest) {
            return Some(found);
        }
        let path = self.blob_path(digest)?;
        let (store, digest) = (self.clone(), digest.to_owned());
        tokio::task::spawn_blocking(move || {
            let bytes = read_capped(&path, store.max_bytes).ok()?;
            if crate::registry::sha256(&bytes) != digest {
                return None;
            }
            let component = store.engine.load(&digest, &bytes, Grants::ALL).ok()?;
            if let Ok(mut map) = store.by_digest.lock() {
                map.insert(digest, component.clone());
            }
            Some(component)
        })
        .await
        .ok()
        .flatten()
    }

    /// The component for a canary's selector. `pinned` is the digest a rollout in flight started with: it is
    /// kept even if the Policy has moved on since.
    pub async fn resolve(
        self: &Arc<Self>,
        selector: &PolicySelector,
        namespace: &str,
        pinned: Option<&str>,
    ) -> Result<Loaded, NotReady> {
        let loaded = match selector {
            PolicySelector::Builtin(name) if format!("builtin:{name}") == BUILTIN_DEFAULT => Loaded {
                component: self.default.clone(),
                config: None,
                digest: format!("sha256:{}", self.default.digest()),
            },
            PolicySelector::Builtin(name) => {
                let component = self.other_builtin(name).await?;
                Loaded {
                    digest: format!("sha256:{}", component.digest()),
                    component,
                    config: None,
                }
            }
            PolicySelector::File(name) => {
                let component = self.file(name).await?;
                Loaded {
                    digest: format!("sha256:{}", component.digest()),
                    component,
                    config: None,
                }
            }
            PolicySelector::Resource { kind, name } => {
                let key = PolicyKey {
                    kind: *kind,
                    namespace: (*kind == PolicyKind::Policy).then(|| namespace.to_owned()),
                    name: name.clone(),
                };
                match self.get(&key) {
                    Some(Entry::Ready(loaded)) => loaded,
                    Some(Entry::NotReady(why)) => return Err(why),
                    None => {
                        return Err(NotReady {
                            reason: "PolicyNotFound",
                            message: format!("{key} not found (or not loaded yet)"),
                        });
                    }
                }
            }
        };
        match pinned {
            Some(digest) if digest != loaded.digest => match self.pinned(digest).await {
                Some(component) => Ok(Loaded {
                    component,
                    digest: digest.to_owned(),
                    ..loaded
                }),
                None => Err(NotReady {
                    reason: "PinnedDigestUnavailable",
                    message: format!(
                        "{selector} now serves {}, but the rollout in flight started with {digest}, which \
                         this controller no longer has",
                        loaded.digest
                    ),
                }),
            },
            _ => Ok(loaded),
        }
    }

    /// A component from `--policy-dir`, read with a size cap and compiled off the async runtime; reloaded
    /// when the file changes.
    /// A built-in other than the default, compiled on first use (then from the engine's caches).
    async fn other_builtin(self: &Arc<Self>, name: &str) -> Result<Arc<PolicyComponent>, NotReady> {
        let reference = format!("builtin:{name}");
        let bytes = crate::policy::builtin(&reference).ok_or_else(|| NotReady {
            reason: "InvalidSource",
            message: format!(
                "{reference} is not a built-in policy (known: {})",
                crate::policy::builtin_names()
            ),
        })?;
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.engine.load(&reference, bytes, Grants::ALL))
            .await
            .map_err(|e| NotReady {
                reason: "LoadFailed",
                message: e.to_string(),
            })?
            .map_err(|e| NotReady {
                reason: "CompileFailed",
                message: e.to_string(),
            })
    }

    async fn file(self: &Arc<Self>, name: &str) -> Result<Arc<PolicyComponent>, NotReady> {
        let Some(dir) = &self.policy_dir else {
            return Err(NotReady {
                reason: "NoPolicyDir",
                message: format!("file:{name} needs the controller's --policy-dir, which is not set"),
            });
        };
        let path = dir.join(name);
        let store = self.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || store.load_file(&name, &path))
            .await
            .map_err(|e| NotReady {
                reason: "LoadFailed",
                message: e.to_string(),
            })?
    }

    fn load_file(&self, name: &str, path: &Path) -> Result<Arc<PolicyComponent>, NotReady> {
        let not_ready = |reason, message: String| NotReady {
            reason,
            message: format!("file:{name}: {message}"),
        };
        let meta = std::fs::metadata(path).map_err(|e| not_ready("FileUnreadable", e.to_string()))?;
        if !meta.is_file() {
            return Err(not_ready("FileUnreadable", "not a regular file".into()));
        }
        let stamp = (meta.modified().ok(), meta.len());
        if let Some((_, found)) = self
            .files
            .lock()
            .ok()
            .and_then(|m| m.get(name).filter(|(s, _)| *s == stamp).cloned())
        {
            return Ok(found);
        }
        let bytes = read_capped(path, self.max_bytes).map_err(|e| not_ready("TooLarge", e))?;
        if !is_component(&bytes) {
            return Err(not_ready("NotAComponent", "not a WebAssembly component".into()));
        }
        let component = self
            .engine
            .load(&format!("file:{name}"), &bytes, Grants::ALL)
            .map_err(|e| not_ready(compile_reason(&e), e.to_string()))?;
        if let Ok(mut map) = self.files.lock() {
            map.insert(name.to_owned(), (stamp, component.clone()));
        }
        Ok(component)
    }
}

/// The condition reason for a component that fetched but would not load.
pub fn compile_reason(e: &PolicyError) -> &'static str {
    match e {
        PolicyError::ImportDenied { .. } => "UngrantedImport",
        PolicyError::MissingExport { .. } => "MissingExport",
        _ => "CompileFailed",
    }
}

/// Reads at most `max` bytes of a regular file; more is an error (never read to the end).
fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    if !file.metadata().map_err(|e| e.to_string())?.is_file() {
        return Err("not a regular file".into());
    }
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > max {
        return Err(format!("larger than the limit of {max} bytes"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Limits;

    fn store(policy_dir: Option<PathBuf>, blob_dir: Option<PathBuf>) -> Arc<PolicyStore> {
        let engine = PolicyEngine::new(Limits::default(), None).expect("engine");
        Arc::new(PolicyStore::new(engine, policy_dir, blob_dir, 1 << 20).expect("store"))
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fledge-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn key(name: &str) -> PolicyKey {
        PolicyKey {
            kind: PolicyKind::Policy,
            namespace: Some("test".into()),
            name: name.into(),
        }
    }

    fn selector(name: &str) -> PolicySelector {
        PolicySelector::Resource {
            kind: PolicyKind::Policy,
            name: name.into(),
        }
    }

    fn ready(store: &PolicyStore, digest: &str) -> Entry {
        Entry::Ready(Loaded {
            component: store.default_policy(),
            config: None,
            digest: digest.into(),
        })
    }

    #[tokio::test]
    async fn a_rollout_keeps_its_pinned_digest_after_the_policy_moved_on() {
        let store = store(None, None);
        store.set(key("judge"), ready(&store, "sha256:old"));
        store.set(key("judge"), ready(&store, "sha256:new"));
        let now = store
            .resolve(&selector("judge"), "test", None)
            .await
            .expect("ready");
        assert_eq!(now.digest, "sha256:new");
        let pinned = store
            .resolve(&selector("judge"), "test", Some("sha256:old"))
            .await
            .expect("pinned digest still loaded");
        assert_eq!(pinned.digest, "sha256:old");
    }

    #[tokio::test]
    async fn a_pinned_digest_nobody_has_any_more_is_not_ready_rather_than_swapped() {
        let store = store(None, None);
        store.set(key("judge"), ready(&store, "sha256:new"));
        store.evict_unused(&HashSet::new());
        let missing = store
            .resolve(&selector("judge"), "test", Some("sha256:gone"))
            .await
            .expect_err("not swapped silently");
        assert_eq!(missing.reason, "PinnedDigestUnavailable");
    }

    #[tokio::test]
    async fn components_no_policy_or_rollout_uses_are_evicted() {
        let store = store(None, None);
        store.set(key("judge"), ready(&store, "sha256:old"));
        store.set(key("judge"), ready(&store, "sha256:new"));
        store.evict_unused(&HashSet::from(["sha256:pinned".to_owned()]));
        assert!(
            store.pinned("sha256:old").await.is_none(),
            "unused digest evicted"
        );
        assert!(store.pinned("sha256:new").await.is_some(), "served digest kept");
    }

    #[tokio::test]
    async fn a_restarted_controller_finds_a_pinned_component_on_disk_and_verifies_it() {
        let blobs = temp_dir("blobs");
        let bytes = crate::policy::builtin(BUILTIN_DEFAULT).expect("builtin");
        let digest = crate::registry::sha256(bytes);
        store(None, Some(blobs.clone())).keep_blob(&digest, bytes);
        let restarted = store(None, Some(blobs.clone()));
        assert!(restarted.pinned(&digest).await.is_some());
        // Bytes that do not match their name are never loaded.
        let other = crate::registry::sha256(b"other");
        let hex = crate::registry::digest_hex(&other).expect("hex");
        std::fs::write(blobs.join("sha256").join(format!("{hex}.wasm")), bytes).expect("write");
        assert!(restarted.pinned(&other).await.is_none());
        let _ = std::fs::remove_dir_all(&blobs);
    }

    #[tokio::test]
    async fn policy_dir_files_are_capped_and_special_files_are_refused_without_reading() {
        let dir = temp_dir("dir");
        let store = store(Some(dir.clone()), None);
        std::fs::write(dir.join("big.wasm"), vec![0u8; (1 << 20) + 1]).expect("big");
        let big = store
            .resolve(&PolicySelector::File("big.wasm".into()), "test", None)
            .await;
        assert_eq!(big.expect_err("over the cap").reason, "TooLarge");
        let fifo = dir.join("fifo.wasm");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        // Opening a FIFO for reading would block until a writer comes: it must be refused first.
        let refused = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            store.resolve(&PolicySelector::File("fifo.wasm".into()), "test", None),
        )
        .await
        .expect("answers at once");
        assert_eq!(refused.expect_err("a FIFO").reason, "FileUnreadable");
        let bytes = crate::policy::builtin(BUILTIN_DEFAULT).expect("builtin");
        std::fs::write(dir.join("default.wasm"), bytes).expect("write");
        let loaded = store
            .resolve(&PolicySelector::File("default.wasm".into()), "test", None)
            .await
            .expect("a regular component file loads");
        assert_eq!(loaded.digest, crate::registry::sha256(bytes));
        let none = self::store(None, None)
            .resolve(&PolicySelector::File("default.wasm".into()), "test", None)
            .await;
        assert_eq!(none.expect_err("no --policy-dir").reason, "NoPolicyDir");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_load_error_never_echoes_the_bytes_it_read() {
        let dir = temp_dir("secret");
        std::fs::write(dir.join("secret.wasm"), "password=hunter2\nmore secrets\n").expect("write");
        // A core module that is valid WebAssembly but no component, carrying a secret in a custom section.
        let mut module = b"\0asm\x01\0\0\0".to_vec();
        module.extend_from_slice(&[0, 9, 2, b'p', b'w']);
        module.extend_from_slice(b"hunter2");
        std::fs::write(dir.join("module.wasm"), module).expect("write");
        let store = store(Some(dir.clone()), None);
        for name in ["secret.wasm", "module.wasm"] {
            let err = store
                .resolve(&PolicySelector::File(name.into()), "test", None)
                .await
                .expect_err("not a component");
            assert!(!err.message.contains("hunter2"), "{name}: {}", err.message);
            assert_eq!(err.reason, "NotAComponent");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn an_unknown_policy_is_not_ready_with_its_name() {
        let store = store(None, None);
        let missing = store
            .resolve(&selector("nope"), "test", None)
            .await
            .expect_err("not found");
        assert_eq!(missing.reason, "PolicyNotFound");
        assert!(missing.message.contains("test/nope"), "{}", missing.message);
    }
}
