//! A real OCI registry per test: Debian's docker-registry (CNCF distribution 2.8), unpacked by
//! `scripts/setup.sh`, on a free loopback port with its own storage — optionally behind htpasswd basic auth.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::eventually;
use super::prometheus::free_port;

pub struct OciRegistry {
    /// `127.0.0.1:<port>`, the registry part of a reference.
    pub host: String,
    dir: PathBuf,
    child: Child,
}

/// The user and password of a registry started with auth.
pub const USER: &str = "fledge";
pub const PASSWORD: &str = "s3cret-for-tests";

fn binary() -> PathBuf {
    std::env::var_os("FLEDGE_REGISTRY_BIN").map_or_else(
        || {
            let cache = std::env::var_os("FLEDGE_CACHE").map_or_else(
                || {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                        .join(".cache")
                        .join("fledge")
                },
                PathBuf::from,
            );
            cache.join("docker-registry-2.8.2/usr/bin/docker-registry")
        },
        PathBuf::from,
    )
}

impl OciRegistry {
    /// Starts a registry; with `auth`, every request needs `USER`/`PASSWORD` (basic auth).
    pub async fn start(name: &str, auth: bool) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("fledge-registry-{name}-{port}"));
        std::fs::create_dir_all(dir.join("data")).expect("registry dir");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: fledge-tests\n",
            dir.join("data").display()
        );
        if auth {
            let hash = bcrypt::hash(PASSWORD, 5).expect("bcrypt");
            std::fs::write(dir.join("htpasswd"), format!("{USER}:{hash}\n")).expect("htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: fledge-tests\n    path: {}\n",
                dir.join("htpasswd").display()
            ));
        }
        std::fs::write(dir.join("config.yml"), config).expect("registry config");
        let log = std::fs::File::create(dir.join("registry.log")).expect("log file");
        let child = Command::new(binary())
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start docker-registry (unpacked by scripts/setup.sh)");
        let host = format!("127.0.0.1:{port}");
        let url = format!("http://{host}/v2/");
        eventually("registry answers", Duration::from_secs(20), || async {
            match reqwest::get(&url).await {
                // 401 is an answer too: the auth registry is up.
                Ok(r) if r.status().is_success() || r.status() == 401 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        Self { host, dir, child }
    }

    /// `<host>/<repository>`.
    pub fn reference(&self, repository: &str) -> String {
        format!("{}/{repository}", self.host)
    }
}

impl Drop for OciRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
