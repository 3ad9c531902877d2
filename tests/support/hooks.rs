//! A local webhook receiver with flagger-loadtester's gate API: `/gate/check` and `/rollback/check` answer
//! 200 when open and 403 when closed; other paths answer a configurable status. Every call is recorded.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;

#[derive(Debug, Default)]
struct Inner {
    gate_open: bool,
    rollback_open: bool,
    /// Status for any other path (`/pre`, `/post`, `/events`…); 200 when unset.
    statuses: BTreeMap<String, u16>,
    /// How long `/<path>` waits before it answers; none when unset.
    delays: BTreeMap<String, std::time::Duration>,
    calls: Vec<(String, serde_json::Value)>,
}

/// A running receiver; dropping it stops it.
pub struct Hooks {
    /// `http://127.0.0.1:port`
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Hooks {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = axum::Router::new()
            .route("/{*path}", axum::routing::post(answer))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, inner, task }
    }

    pub fn open_gate(&self, open: bool) {
        self.inner.lock().expect("hooks").gate_open = open;
    }

    pub fn open_rollback(&self, open: bool) {
        self.inner.lock().expect("hooks").rollback_open = open;
    }

    /// What `/<path>` answers from now on.
    pub fn answer(&self, path: &str, status: u16) {
        self.inner
            .lock()
            .expect("hooks")
            .statuses
            .insert(path.trim_start_matches('/').to_owned(), status);
    }

    /// How long `/<path>` waits before answering from now on (zero: at once).
    pub fn delay(&self, path: &str, delay: std::time::Duration) {
        self.inner
            .lock()
            .expect("hooks")
            .delays
            .insert(path.trim_start_matches('/').to_owned(), delay);
    }

    /// Payloads received on `/<path>`, in order.
    pub fn calls(&self, path: &str) -> Vec<serde_json::Value> {
        let path = path.trim_start_matches('/');
        self.inner
            .lock()
            .expect("hooks")
            .calls
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, body)| body.clone())
            .collect()
    }
}

impl Drop for Hooks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(path): Path<String>,
    body: axum::body::Bytes,
) -> StatusCode {
    let (status, delay) = {
        let mut inner = inner.lock().expect("hooks");
        let payload = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        inner.calls.push((path.clone(), payload));
        let open = |yes: bool| {
            if yes {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            }
        };
        let status = match path.as_str() {
            "gate/check" => open(inner.gate_open),
            "rollback/check" => open(inner.rollback_open),
            other => StatusCode::from_u16(inner.statuses.get(other).copied().unwrap_or(200))
                .unwrap_or(StatusCode::OK),
        };
        (status, inner.delays.get(path.as_str()).copied())
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    status
}
