//! How fledge's requests reach the API server: one HTTP/2 connection carrying every request and watch at
//! once, as Go clients do. kube's own client speaks HTTP/1.1 only, so each request in flight holds a TLS
//! connection of its own: at `--concurrency 64` the controller held ~140 sockets, each with its TLS and read
//! buffers in fledge and a connection in the API server (`make scale`, N = 1,000: RSS peak 103-105 MiB).
//! ALPN decides: a server that does not offer `h2` is spoken to over HTTP/1.1 as before. A proxied cluster
//! URL keeps kube's own transport, which knows proxies (see [`super::api_requests::observed_client`]).

use http::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::retry::RetryPolicy;
use kube::client::{Body, ClientBuilder, ConfigExt};
use tower::retry::RetryLayer;
use tower::{BoxError, ServiceBuilder, ServiceExt, util::BoxService};

/// The request stack fledge's client runs on: the cluster's address, kube's retry of transient answers, the
/// credentials, the kubeconfig's extra headers, and a connection that multiplexes.
pub type Transport = BoxService<Request<Body>, Response<Box<kube::client::DynBody>>, BoxError>;

/// A client builder for `config` (without a proxy) whose requests share one HTTP/2 connection where the
/// server offers it.
pub fn multiplexed(config: kube::Config) -> anyhow::Result<ClientBuilder<Transport>> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let tls = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config.rustls_client_config()?)
        .https_or_http();
    let tls = match &config.tls_server_name {
        Some(name) => tls.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(
            name.clone().try_into()?,
        )),
        None => tls,
    };
    let mut connector =
        hyper_timeout::TimeoutConnector::new(tls.enable_http1().enable_http2().wrap_connector(http));
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    let client: hyper_util::client::legacy::Client<_, Body> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
    // Layered in kube's order: kube's own retry of 429, 503 and 504 comes before the credentials.
    let retry = config
        .default_retry
        .then(|| RetryLayer::new(RetryPolicy::server_retry()));
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(retry)
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(client)
        .map_response(|response: Response<hyper::body::Incoming>| {
            response.map(|body| {
                Box::new(http_body_util::BodyExt::map_err(body, BoxError::from)) as Box<kube::client::DynBody>
            })
        });
    Ok(ClientBuilder::new(
        BoxService::new(service),
        config.default_namespace,
    ))
}
