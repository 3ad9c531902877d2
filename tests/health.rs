//! `/healthz` says whether the controller can see the cluster: with the API cut off (a TCP forwarder between
//! the controller and the real apiserver, closed by the test) it fails within the watch-failure limit, naming
//! the watches and their error; once the API is back it is healthy again without a restart. The same
//! forwarder counts the controller's connections: its watches and requests share one (HTTP/2).
//! Run by `make test` (`#[ignore]`d so a bare `cargo test` needs no cluster).

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fledge::api::Phase;
use serde_json::json;
use support::fledge::{create_canary, create_podinfo, install_crds, wait_phase};
use support::prometheus::free_port;
use support::{TestNamespace, eventually};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};

/// A forwarder to the apiserver on a loopback port of its own, which the test can cut and put back.
struct Cable {
    port: u16,
    apiserver: SocketAddr,
    forwarding: Option<JoinHandle<()>>,
    /// Connections through the cable now.
    open: Arc<AtomicUsize>,
}

impl Cable {
    async fn plug(apiserver: SocketAddr) -> Self {
        let mut cable = Self {
            port: free_port(),
            apiserver,
            forwarding: None,
            open: Arc::default(),
        };
        cable.restore().await;
        cable
    }

    /// Accepts on the port again and forwards every connection.
    async fn restore(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind the forwarder");
        let (apiserver, open) = (self.apiserver, self.open.clone());
        self.forwarding = Some(tokio::spawn(async move {
            // Dropped with this task: cutting the cable closes every open connection too.
            let mut connections = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let open = Open::counted(open.clone());
                connections.spawn(async move {
                    let _open = open;
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

/// One connection through the cable, counted while it lives.
struct Open(Arc<AtomicUsize>);

impl Open {
    fn counted(open: Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::SeqCst);
        Self(open)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn healthz(port: u16) -> Result<(u16, String), String> {
    let answer = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .map_err(|e| e.to_string())?;
    let status = answer.status().as_u16();
    Ok((status, answer.text().await.map_err(|e| e.to_string())?))
}

/// The controller, with its own client stack, reaching the real apiserver through a cable only (same host
/// name, so TLS still holds), and serving `/healthz` on the port returned.
async fn controller_through_a_cable(ns: &TestNamespace) -> (Cable, u16, [AbortHandle; 2]) {
    install_crds(&ns.client).await;

    let mut config = kube::Config::infer().await.expect("kubeconfig");
    let url = config.cluster_url.clone();
    let host = url.host().expect("apiserver host").to_owned();
    let apiserver = tokio::net::lookup_host((host.as_str(), url.port_u16().unwrap_or(443)))
        .await
        .expect("resolve the apiserver")
        .next()
        .expect("an address");
    let cable = Cable::plug(apiserver).await;
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

    (cable, port, [controller.abort_handle(), server.abort_handle()])
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn healthz_fails_while_the_api_is_cut_off_naming_the_watches_and_recovers_when_it_returns() {
    let ns = TestNamespace::create("health").await;
    let (mut cable, port, tasks) = controller_through_a_cable(&ns).await;

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
    for task in tasks {
        task.abort();
    }
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn the_controllers_watches_and_requests_share_one_connection_to_the_api() {
    let ns = TestNamespace::create("onewire").await;
    let (cable, port, tasks) = controller_through_a_cable(&ns).await;
    // A Canary to initialize: its writes go the same way as the watches.
    create_podinfo(&ns, "stefanprodan/podinfo:3.1.0").await;
    create_canary(&ns, json!({"interval": "1s", "threshold": 2, "stepWeight": 20}))
        .await
        .expect("canary");
    wait_phase(&ns, Phase::Initialized, Duration::from_secs(60)).await;
    assert_eq!(healthz(port).await, Ok((200, "ok".to_owned())), "the watches run");
    // Every watch the controller runs holds its request open: over HTTP/1.1 each would need a connection.
    assert_eq!(
        cable.open.load(Ordering::SeqCst),
        1,
        "the controller's watches and requests did not share one connection"
    );
    for task in tasks {
        task.abort();
    }
}
