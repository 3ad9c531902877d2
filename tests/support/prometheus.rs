//! A real Prometheus server (Debian's `prometheus`) per test, on a free loopback port, scraping one target
//! every second. It can be stopped and started again on the same port and data (the outage tests).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::eventually;

pub struct PrometheusServer {
    pub address: String,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// A port the kernel says is free now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl PrometheusServer {
    /// Starts Prometheus scraping `target` (`127.0.0.1:port`) every second; waits until it is ready.
    pub async fn start(name: &str, target: &str) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("fledge-prometheus-{name}-{port}"));
        std::fs::create_dir_all(dir.join("data")).expect("prometheus dir");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: istio-sim\n    static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("prometheus config");
        let mut server = Self {
            address: format!("http://127.0.0.1:{port}"),
            port,
            dir,
            child: None,
        };
        server.resume().await;
        server
    }

    /// Starts the stopped server again, same port and data.
    pub async fn resume(&mut self) {
        assert!(self.child.is_none(), "prometheus already running");
        let log = std::fs::File::create(self.dir.join("prometheus.log")).expect("log file");
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                self.dir.join("prometheus.yml").display()
            ))
            .arg(format!("--storage.tsdb.path={}", self.dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--storage.tsdb.retention.time=1h")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus (installed by scripts/setup.sh)");
        self.child = Some(child);
        let ready = format!("{}/-/ready", self.address);
        eventually("prometheus ready", Duration::from_secs(30), || async {
            match reqwest::get(&ready).await {
                Ok(r) if r.status().is_success() => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }

    /// Stops the server (SIGKILL: an outage, not a shutdown).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The value of `query` now, if it has one (for test assertions).
    pub async fn value(&self, query: &str) -> Option<f64> {
        let url = format!("{}/api/v1/query", self.address);
        let body: serde_json::Value = reqwest::Client::new()
            .get(url)
            .query(&[("query", query)])
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
