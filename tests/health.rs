//! `/healthz` says whether the controller can see the cluster: with the API cut off (a TCP forwarder between
//! the controller and the real apiserver, closed by the test) it fails within the watch-failure limit, naming
//! the watches and their error; once the API is back it is healthy again without a restart.
//! Run by `make test` (`#[ignore]`d so a bare `cargo test` needs no cluster).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::fledge::install_crds;
use support::prometheus::free_port;
use support::{TestNamespace, eventually};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// A forwarder to the apiserver on a loopback port of its own, which the test can cut and put back.
struct Cable {
    port: u16,
    apiserver: SocketAddr,
    forwarding: Option<JoinHandle<()>>,
}

impl Cable {
    async fn plug(apiserver: SocketAddr) -> Self {
        let mut cable = Self {
            port: free_port(),
            apiserver,
            forwarding: None,
        };
        cable.restore().await;
        cable
    }

    /// Accepts on the port again and forwards every connection.
    async fn restore(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind the forwarder");
        let apiserver = self.apiserver;
        self.forwarding = Some(tokio::spawn(async move {
            // Dropped with this task: cutting the cable closes every open connection too.
            let mut connections = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(apiserver).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        }));
    }

    /// Closes the port and every connection through it: the API is gone for whoever used the cable.
    async fn cut(&mut self) {
        if let Some(task) = self.forwarding.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

async fn healthz(port: u16) -> Result<(u16, String), String> {
    let answer = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .map_err(|e| e.to_string())?;
    let status = answer.status().as_u16();
    Ok((status, answer.text().await.map_err(|e| e.to_string())?))
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn healthz_fails_while_the_api_is_cut_off_naming_the_watches_and_recovers_when_it_returns() {
    let ns = TestNamespace::create("health").await;
    install_crds(&ns.client).await;

    // The controller reaches the real apiserver through the cable only (same host name, so TLS still holds).
    let mut config = kube::Config::infer().await.expect("kubeconfig");
    let url = config.cluster_url.clone();
    let host = url.host().expect("apiserver host").to_owned();
    let apiserver = tokio::net::lookup_host((host.as_str(), url.port_u16().unwrap_or(443)))
        .await
        .expect("resolve the apiserver")
        .next()
        .expect("an address");
    let mut cable = Cable::plug(apiserver).await;
    config.cluster_url = format!("https://{host}:{}", cable.port).parse().expect("url");
    let options = fledge::controller::Options {
        min_interval: Duration::from_secs(1),
        namespace: Some(ns.name.clone()),
        ..Default::default()
    };
    // The controller's own client stack: every list and watch answer reports to /healthz.
    let health = fledge::telemetry::health::WatchHealth::with_limit(Duration::from_secs(2));
    let client = fledge::telemetry::api_requests::observed_client(
        config,
        &options.metrics,
        &health,
        &fledge::controller::leader::Fence::open(),
    )
    .expect("client through the cable");
    let port = free_port();
    let server = tokio::spawn(fledge::telemetry::http::serve(
        ([127, 0, 0, 1], port).into(),
        options.metrics.clone(),
        Default::default(),
        health,
        std::future::pending(),
    ));
    let engine = fledge::policy::PolicyEngine::new(fledge::policy::Limits::default(), None).expect("engine");
    let controller = tokio::spawn(async move {
        fledge::controller::run(client, engine, options).await;
    });

    // Running and watching: healthy, and still healthy past the limit.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(healthz(port).await, Ok((200, "ok".to_owned())));

    cable.cut().await;
    eventually(
        "/healthz fails with the API cut off",
        Duration::from_secs(30),
        || async {
            let (status, why) = healthz(port).await?;
            if status == 503
                && why.contains("watch canaries failing")
                && why.contains("watch deployments failing")
            {
                Ok(())
            } else {
                Err(format!("{status} {why}"))
            }
        },
    )
    .await;

    cable.restore().await;
    eventually(
        "/healthz ok once the API is back",
        Duration::from_secs(60),
        || async {
            match healthz(port).await? {
                (200, _) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    controller.abort();
    server.abort();
}
