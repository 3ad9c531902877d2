//! Compiled policy components kept on disk, so a controller restart does not compile them again.
//!
//! A cached component is opened with wasmtime's `Component::deserialize_file`, which maps the file instead of
//! reading, decompressing and copying it (wasmtime's own compile cache costs ~100 ms for the 18 MB Python
//! template; a mapped file ~10 ms). That call is `unsafe`: wasmtime runs the machine code in the file without
//! checking it. What makes it sound here:
//! - only this module writes the files, from `Component::serialize` of an engine configured like the reader
//!   (the directory is named by the engine's compatibility hash, and wasmtime also refuses a file whose header
//!   names another version or configuration);
//! - a file appears under its final name only complete (written aside, then renamed), and is never rewritten;
//! - the directory is created private to the controller's user (0700): whoever could write into it could equally
//!   replace the controller's binary, the same trust wasmtime's own cache asks for.
//!
//! Every other module of fledge forbids `unsafe`.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::error::Context;

/// A directory of compiled components for one engine configuration, by the sha256 of their wasm bytes.
#[derive(Debug, Clone)]
pub struct PrecompiledCache {
    dir: PathBuf,
}

/// Where a component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Mapped from a file compiled earlier.
    Cached,
    /// Compiled now (and written for the next time, when the directory is writable).
    Compiled,
}

impl PrecompiledCache {
    /// The cache under `root` for `engine`'s configuration, creating its directory (private to this user) and
    /// keeping it within [`BUDGET_BYTES`]: the files used longest ago go first.
    pub fn open(root: &Path, engine: &Engine) -> wasmtime::Result<Self> {
        let dir = root.join(format!("wasmtime-{}", engine_key(engine)));
        create_private_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
        prune(&dir, BUDGET_BYTES);
        Ok(Self { dir })
    }

    /// The directory the files are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The component whose wasm bytes are `wasm` and whose sha256 (lower-case hex) is `digest`: mapped from the
    /// cache, or compiled and then cached. A cached file wasmtime refuses is compiled again and replaced; a write
    /// that fails costs only the next load's speed.
    pub fn load(&self, engine: &Engine, digest: &str, wasm: &[u8]) -> wasmtime::Result<(Component, Origin)> {
        wasmtime::ensure!(
            digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
            "not a sha256 digest: {digest:?}"
        );
        let path = self.dir.join(format!("{digest}.cwasm"));
        if path.is_file() {
            // SAFETY: the file is one `store` below wrote whole from `Component::serialize` of an engine with
            // this configuration (the directory name says which), in a directory only this user can write;
            // see the module documentation.
            #[allow(unsafe_code)]
            let mapped = unsafe { Component::deserialize_file(engine, &path) };
            match mapped {
                Ok(component) => {
                    // Marks it used, for `prune`.
                    if let Ok(file) = std::fs::File::options().append(true).open(&path) {
                        let _ = file.set_modified(std::time::SystemTime::now());
                    }
                    return Ok((component, Origin::Cached));
                }
                Err(_) => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let component = Component::new(engine, wasm)?;
        if let Ok(bytes) = component.serialize() {
            let _ = store(&path, &bytes);
        }
        Ok((component, Origin::Compiled))
    }
}

/// How much compiled code one cache directory keeps (the Python template alone is ~40 MB compiled).
pub const BUDGET_BYTES: u64 = 1 << 30;

/// Removes the least recently used files of `dir` until the rest fit in `budget`, and files left half-written
/// by a process that died more than an hour ago. A file a running process has mapped stays readable to it.
fn prune(dir: &Path, budget: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let now = std::time::SystemTime::now();
    let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = Vec::new();
    for entry in entries.flatten() {
        let (path, Ok(meta)) = (entry.path(), entry.metadata()) else {
            continue;
        };
        let modified = meta.modified().unwrap_or(now);
        let stale = now.duration_since(modified).unwrap_or_default() > std::time::Duration::from_secs(3600);
        match path.extension().and_then(|e| e.to_str()) {
            Some("cwasm") => files.push((modified, meta.len(), path)),
            Some("partial") if stale => {
                let _ = std::fs::remove_file(&path);
            }
            _ => {}
        }
    }
    files.sort();
    let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
    for (_, len, path) in files {
        if total <= budget {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= len;
        }
    }
}

/// Writes `bytes` to `path` so that no reader ever sees a partial file.
fn store(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let (aside, mut file) = tempfile_in(dir)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&aside, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&aside);
    })
}

/// A new file in `dir` with a name no other writer uses.
fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        ".{}-{}.partial",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let path = dir.join(name);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    Ok((path, file))
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// What names an engine configuration: wasmtime's precompile compatibility hash (its version included).
fn engine_key(engine: &Engine) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component exporting one function (WAT: wasmtime compiles the text too), and a stand-in for its sha256.
    const WAT: &str = r#"(component
        (core module $m (func (export "f") (result i32) i32.const 7))
        (core instance $i (instantiate $m))
        (func (export "f") (result u32) (canon lift (core func $i "f"))))"#;
    const FAKE_DIGEST: &str = "00000000000000000000000000000000000000000000000000000000000000aa";

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fledge-precompiled-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn call_f(engine: &Engine, component: &Component) -> u32 {
        let mut store = wasmtime::Store::new(engine, ());
        let linker = wasmtime::component::Linker::new(engine);
        let instance = linker.instantiate(&mut store, component).expect("instantiate");
        let f = instance
            .get_typed_func::<(), (u32,)>(&mut store, "f")
            .expect("export f");
        f.call(&mut store, ()).expect("call").0
    }

    #[test]
    fn a_component_is_compiled_once_and_mapped_from_the_cache_after() {
        let engine = Engine::default();
        let root = scratch("once");
        let wasm = WAT.as_bytes();
        let cache = PrecompiledCache::open(&root, &engine).expect("open");
        let (first, origin) = cache.load(&engine, FAKE_DIGEST, wasm).expect("compile");
        assert_eq!(origin, Origin::Compiled);
        assert_eq!(call_f(&engine, &first), 7);
        // Another process (a restarted controller) opens the same directory.
        let again = PrecompiledCache::open(&root, &engine).expect("reopen");
        assert_eq!(again.dir(), cache.dir());
        let (second, origin) = again.load(&engine, FAKE_DIGEST, wasm).expect("map");
        assert_eq!(origin, Origin::Cached);
        assert_eq!(call_f(&engine, &second), 7);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_damaged_cache_file_is_compiled_again_and_replaced() {
        let engine = Engine::default();
        let root = scratch("damaged");
        let wasm = WAT.as_bytes();
        let cache = PrecompiledCache::open(&root, &engine).expect("open");
        let path = cache.dir().join(format!("{FAKE_DIGEST}.cwasm"));
        std::fs::write(&path, b"not an ELF file").expect("damage");
        let (component, origin) = cache.load(&engine, FAKE_DIGEST, wasm).expect("recompile");
        assert_eq!(origin, Origin::Compiled);
        assert_eq!(call_f(&engine, &component), 7);
        let (_, origin) = cache.load(&engine, FAKE_DIGEST, wasm).expect("map");
        assert_eq!(origin, Origin::Cached);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn engines_configured_differently_do_not_share_files() {
        let root = scratch("configs");
        let plain = Engine::default();
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let interruptible = Engine::new(&config).expect("engine");
        let a = PrecompiledCache::open(&root, &plain).expect("open");
        let b = PrecompiledCache::open(&root, &interruptible).expect("open");
        assert_ne!(a.dir(), b.dir());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn pruning_keeps_the_most_recently_used_files_within_the_budget() {
        let dir = scratch("prune");
        create_private_dir(&dir).expect("dir");
        let day = std::time::Duration::from_secs(86_400);
        let now = std::time::SystemTime::now();
        for (name, age_days) in [
            ("old.cwasm", 3),
            ("used.cwasm", 1),
            ("new.cwasm", 2),
            (".dead.partial", 1),
        ] {
            let file = std::fs::File::create(dir.join(name)).expect("create");
            file.set_len(100).expect("size");
            file.set_modified(now - day * age_days).expect("age");
        }
        prune(&dir, 250);
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .expect("list")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["new.cwasm", "used.cwasm"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_digest_that_is_not_sha256_hex_is_refused() {
        let engine = Engine::default();
        let root = scratch("digest");
        let cache = PrecompiledCache::open(&root, &engine).expect("open");
        let err = cache.load(&engine, "../../etc/passwd", b"").expect_err("refused");
        assert!(err.to_string().contains("not a sha256 digest"), "{err}");
        let _ = std::fs::remove_dir_all(&root);
    }
}
