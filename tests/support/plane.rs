//! A second control plane of a test's own, for what cannot be set up in a namespace of the shared one (a
//! cluster without Istio). Started with tests/controlplane/up.sh in a private directory, stopped on drop.

use std::path::PathBuf;
use std::process::Command;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

pub struct Plane {
    pub client: Client,
    _stop: Stop,
}

/// Stops the plane in this directory when dropped, also when starting it failed half way.
struct Stop(PathBuf);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = Command::new(script("down.sh"))
            .env("FLEDGE_PLANE_DIR", &self.0)
            .output();
    }
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/controlplane")
        .join(name)
}

impl Plane {
    /// Starts a plane with `env` set for up.sh (e.g. `FLEDGE_PLANE_ISTIO=0`).
    pub async fn start(name: &str, env: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(format!("fledge-plane-{name}-{}", std::process::id()));
        let stop = Stop(dir.clone());
        let out = Command::new(script("up.sh"))
            .env("FLEDGE_PLANE_DIR", &dir)
            .envs(env.iter().copied())
            .output()
            .expect("run tests/controlplane/up.sh");
        assert!(
            out.status.success(),
            "a second plane did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let kubeconfig = stdout.lines().last().unwrap_or_default();
        let config = kube::Config::from_custom_kubeconfig(
            Kubeconfig::read_from(kubeconfig).expect("read the plane's kubeconfig"),
            &KubeConfigOptions::default(),
        )
        .await
        .expect("kube config of the second plane");
        Self {
            client: Client::try_from(config).expect("client of the second plane"),
            _stop: stop,
        }
    }
}
