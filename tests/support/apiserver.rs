//! A second, real kube-apiserver on the plane's etcd under its own key prefix: an empty cluster (no CRDs, no
//! objects) for tests of what fledge does when the cluster lacks what it needs. Uses the plane's certificates.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::eventually;
use super::prometheus::free_port;

pub struct EmptyApiServer {
    /// A kubeconfig for it, as the plane's admin.
    pub kubeconfig: PathBuf,
    dir: PathBuf,
    child: Child,
}

impl EmptyApiServer {
    pub async fn start(name: &str) -> Self {
        let plane_kubeconfig = PathBuf::from(std::env::var_os("KUBECONFIG").expect("KUBECONFIG (the plane)"));
        let state = plane_kubeconfig.parent().expect("plane state dir").to_path_buf();
        let pki = state.join("pki");
        let ports = std::fs::read_to_string(state.join("ports.env")).expect("plane ports.env");
        let etcd = ports
            .lines()
            .find_map(|l| l.strip_prefix("ETCD_PORT="))
            .expect("ETCD_PORT")
            .trim()
            .to_owned();
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("fledge-apiserver-{name}-{port}"));
        std::fs::create_dir_all(&dir).expect("apiserver dir");
        let p = |f: &str| pki.join(f).display().to_string();
        let log = std::fs::File::create(dir.join("kube-apiserver.log")).expect("log");
        let child = Command::new("kube-apiserver")
            .arg(format!("--etcd-servers=http://127.0.0.1:{etcd}"))
            .arg(format!("--etcd-prefix=/fledge-empty-{name}-{port}"))
            .args([
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
            ])
            .arg(format!("--secure-port={port}"))
            .arg(format!("--tls-cert-file={}", p("apiserver.crt")))
            .arg(format!("--tls-private-key-file={}", p("apiserver.key")))
            .arg(format!("--client-ca-file={}", p("ca.crt")))
            .arg(format!("--cert-dir={}", dir.display()))
            .arg(format!("--service-account-issuer=https://127.0.0.1:{port}"))
            .arg(format!("--service-account-key-file={}", p("sa.pub")))
            .arg(format!("--service-account-signing-key-file={}", p("sa.key")))
            .args([
                "--service-cluster-ip-range=10.97.0.0/16",
                "--authorization-mode=RBAC",
            ])
            .arg("--disable-admission-plugins=ServiceAccount,TaintNodesByCondition")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start kube-apiserver (on PATH under make test)");
        let kubeconfig = dir.join("kubeconfig");
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: empty\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority: {}\nusers:\n- name: admin\n  user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: empty\n  context: {{cluster: empty, user: admin}}\ncurrent-context: empty\n",
            p("ca.crt"),
            p("admin.crt"),
            p("admin.key")
        );
        std::fs::write(&kubeconfig, config).expect("kubeconfig");
        let server = Self {
            kubeconfig,
            dir,
            child,
        };
        let options = kube::config::KubeConfigOptions::default();
        eventually("empty apiserver ready", Duration::from_secs(60), || async {
            let config = kube::Config::from_custom_kubeconfig(
                kube::config::Kubeconfig::read_from(&server.kubeconfig).map_err(|e| e.to_string())?,
                &options,
            )
            .await
            .map_err(|e| e.to_string())?;
            let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
            client
                .apiserver_version()
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await;
        server
    }
}

impl Drop for EmptyApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
