//! Every request fledge sends to the Kubernetes API, counted by the verb the apiserver would log and the
//! resource it touches, so an operator (and our benchmarks) can see what one canary costs the apiserver.

use std::path::Path;

use http::header::{HeaderValue, USER_AGENT};
use http::{Method, Request, Response, Uri};
use kube::client::{Body, ClientBuilder};

use super::health::WatchHealth;
use super::metrics::Metrics;
use crate::controller::leader::Fence;

/// The apiserver's verb and the resource (with subresource) of one request, e.g. `("patch", "canaries/status")`.
pub fn classify(method: &Method, uri: &Uri) -> (&'static str, String) {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        // /version, /api, /apis, /openapi/...: discovery.
        _ => return (verb(method, true, uri), "discovery".to_owned()),
    };
    // `namespaces/<ns>/<resource>/...` is namespaced; `namespaces/<name>` is the Namespace itself.
    let rest = match rest {
        ["namespaces", _ns, resource @ ..] if !resource.is_empty() => resource,
        other => other,
    };
    let (resource, named, subresource) = match rest {
        [] => ("discovery", true, None),
        [resource] => (*resource, false, None),
        [resource, _name] => (*resource, true, None),
        [resource, _name, sub, ..] => (*resource, true, Some(*sub)),
    };
    let resource = match subresource {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource.to_owned(),
    };
    (verb(method, named, uri), resource)
}

fn verb(method: &Method, named: bool, uri: &Uri) -> &'static str {
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    match *method {
        Method::GET if watch => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    }
}

/// What fledge's requests say they are, so an apiserver's audit log can attribute them.
pub const AGENT: &str = concat!("fledge/", env!("CARGO_PKG_VERSION"));

/// Names fledge as the request's agent unless the request already names one.
fn identified<B>(mut request: Request<B>) -> Request<B> {
    request
        .headers_mut()
        .entry(USER_AGENT)
        .or_insert(HeaderValue::from_static(AGENT));
    request
}

/// A client for `kubeconfig` (or the usual inference: KUBECONFIG, ~/.kube/config, in-cluster) whose every
/// request is counted in `metrics` and whose lists and watches report to `health`.
pub async fn counted_client(
    kubeconfig: Option<&Path>,
    metrics: &Metrics,
    health: &WatchHealth,
    fence: &Fence,
) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    observed_client(config, metrics, health, fence)
}

/// A client for `config` whose every request is counted in `metrics`, whose lists and watches report to
/// `health`, and whose writes pass `fence` (all but the Lease's own: a replica that no longer leads sends none).
pub fn observed_client(
    config: kube::Config,
    metrics: &Metrics,
    health: &WatchHealth,
    fence: &Fence,
) -> anyhow::Result<kube::Client> {
    let observe = ObserveLayer {
        metrics: metrics.clone(),
        health: health.clone(),
        fence: fence.clone(),
    };
    if config.proxy_url.is_some() {
        return Ok(ClientBuilder::try_from(config)?.with_layer(&observe).build());
    }
    Ok(super::transport::multiplexed(config)?
        .with_layer(&observe)
        .build())
}

/// Every request, classified once: refused if it is a write (but the Lease's) and the [`Fence`] has closed
/// (logged at warn, target `fledge::writes`; sent writes at debug); otherwise counted in [`Metrics`], named
/// with fledge's User-Agent, and — for lists and watches — its answer reported to a [`WatchHealth`] as
/// `"<verb> <resource>"` (a watch that reconnects sends no event, so its request's answer is the only sign it
/// is back).
#[derive(Clone)]
struct ObserveLayer {
    metrics: Metrics,
    health: WatchHealth,
    fence: Fence,
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
struct Observe<S> {
    inner: S,
    layer: ObserveLayer,
}

/// A write refused because this replica no longer holds the Lease.
#[derive(Debug, thiserror::Error)]
#[error("not the leader: the Lease was not renewed in time, {verb} {resource} refused")]
pub struct NotLeader {
    verb: &'static str,
    resource: String,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, B> tower::Service<Request<Body>> for Observe<S>
where
    S: tower::Service<Request<Body>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = futures::future::BoxFuture<'static, Result<Response<B>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let (verb, resource) = classify(request.method(), request.uri());
        if is_write(verb) && resource != "leases" {
            if !self.layer.fence.permits() {
                tracing::warn!(target: "fledge::writes", verb, %resource, "refused: not the leader");
                return Box::pin(std::future::ready(Err(NotLeader { verb, resource }.into())));
            }
            tracing::debug!(target: "fledge::writes", verb, %resource, "sent");
        }
        self.layer.metrics.api_request(verb, &resource);
        let watched = matches!(verb, "list" | "watch").then(|| format!("{verb} {resource}"));
        let answer = self.inner.call(identified(request));
        let (health, metrics) = (self.layer.health.clone(), self.layer.metrics.clone());
        let sent = std::time::Instant::now();
        Box::pin(async move {
            let answer = answer.await.map_err(Into::into);
            // A watch's answer comes when its stream opens: its time says nothing of the API's load.
            if verb != "watch" {
                metrics.api_latency(verb, sent.elapsed());
            }
            if let Some(name) = watched {
                health.observe(&name, outcome(&answer));
            }
            answer
        })
    }
}

fn is_write(verb: &str) -> bool {
    matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    )
}

/// Whether a request was answered with success.
fn outcome<B, E: std::fmt::Display>(answer: &Result<Response<B>, E>) -> Result<(), String> {
    match answer {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(format!("HTTP {}", response.status())),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(method: Method, uri: &str) -> (&'static str, String) {
        classify(&method, &uri.parse().expect("uri"))
    }

    #[test]
    fn every_request_names_fledge_and_its_version_as_the_agent() {
        let sent = identified(Request::get("/api/v1/pods").body(()).expect("request"));
        assert_eq!(sent.headers()[USER_AGENT], AGENT);
        assert!(AGENT.starts_with("fledge/0."), "{AGENT}");
        let own = Request::get("/")
            .header(USER_AGENT, "kubectl/v1.35")
            .body(())
            .expect("request");
        assert_eq!(identified(own).headers()[USER_AGENT], "kubectl/v1.35");
    }

    #[test]
    fn namespaced_requests_name_their_resource_and_subresource() {
        assert_eq!(
            of(Method::GET, "/apis/apps/v1/namespaces/test/deployments/podinfo"),
            ("get", "deployments".into())
        );
        assert_eq!(
            of(
                Method::PATCH,
                "/apis/fledge.dev/v1alpha1/namespaces/test/canaries/podinfo/status"
            ),
            ("patch", "canaries/status".into())
        );
        assert_eq!(
            of(
                Method::PUT,
                "/apis/apps/v1/namespaces/test/deployments/podinfo/scale"
            ),
            ("update", "deployments/scale".into())
        );
        assert_eq!(
            of(Method::POST, "/api/v1/namespaces/test/events"),
            ("create", "events".into())
        );
    }

    #[test]
    fn lists_and_watches_are_told_apart_by_the_watch_parameter() {
        assert_eq!(
            of(
                Method::GET,
                "/api/v1/namespaces/test/pods?labelSelector=app%3Dpodinfo"
            ),
            ("list", "pods".into())
        );
        assert_eq!(
            of(
                Method::GET,
                "/apis/apps/v1/deployments?watch=true&resourceVersion=5"
            ),
            ("watch", "deployments".into())
        );
        assert_eq!(
            of(
                Method::GET,
                "/apis/apps/v1/deployments?allowWatchBookmarks=true&watch=1"
            ),
            ("watch", "deployments".into())
        );
    }

    #[test]
    fn a_namespace_itself_and_discovery_are_not_mistaken_for_namespaced_resources() {
        assert_eq!(
            of(Method::GET, "/api/v1/namespaces/test"),
            ("get", "namespaces".into())
        );
        assert_eq!(
            of(Method::DELETE, "/api/v1/namespaces/test"),
            ("delete", "namespaces".into())
        );
        assert_eq!(of(Method::GET, "/version"), ("get", "discovery".into()));
        assert_eq!(of(Method::GET, "/apis/apps/v1"), ("get", "discovery".into()));
        assert_eq!(
            of(Method::DELETE, "/api/v1/namespaces/test/pods"),
            ("deletecollection", "pods".into())
        );
    }
}
