//! Metric analysis IO: resolves each check's query and provider (built-in Istio queries, MetricTemplates,
//! per-canary and controller-wide Prometheus, credentials from Secrets), runs the queries, and backs the
//! policies' `metrics` import with a capped, recorded Prometheus connection.

pub mod query;
mod source;

pub use source::{PolicyMetrics, QueryLimits, Replay};

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::api::{MetricSource, MetricSpec, MetricTemplate, ValidSpec};
use crate::policy::types::MetricCheck;
use crate::prometheus::{Auth, Prometheus};
use query::Vars;

/// Prometheus connections by (address, credentials, TLS verification, headers), shared by every canary.
pub struct Providers {
    client: Client,
    /// `--metrics-server`: used when neither the canary nor the template names one.
    default_address: Option<String>,
    timeout: Duration,
    pool: Mutex<HashMap<(String, String, bool, String), Prometheus>>,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Providers")
            .field("default_address", &self.default_address)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Queries without a template send no headers of their own.
static NO_HEADERS: BTreeMap<String, Vec<String>> = BTreeMap::new();

/// One check as it ran: the measurement, the PromQL and how long resolving and querying took.
#[derive(Debug, Clone)]
pub struct CheckRun {
    pub check: MetricCheck,
    pub query: String,
    pub elapsed: Duration,
}

/// Where a check's query runs.
struct Resolved {
    query: String,
    prometheus: Prometheus,
}

impl Providers {
    pub fn new(client: Client, default_address: Option<String>, timeout: Duration) -> Self {
        Self {
            client,
            default_address: default_address.filter(|a| !a.is_empty()),
            timeout,
            pool: Mutex::new(HashMap::new()),
        }
    }

    /// The Prometheus address a canary uses: its own `metricsServer`, else the controller's.
    pub fn address_for(&self, spec: &ValidSpec) -> Option<String> {
        spec.metrics_server
            .clone()
            .or_else(|| self.default_address.clone())
    }

    /// The canary's own provider (what its policy's `metrics` import queries), if one is configured.
    pub fn canary_provider(&self, spec: &ValidSpec) -> Result<Option<Prometheus>, String> {
        self.address_for(spec)
            .map(|a| self.connect(&a, Auth::None, false, &NO_HEADERS))
            .transpose()
    }

    fn connect(
        &self,
        address: &str,
        auth: Auth,
        insecure: bool,
        headers: &BTreeMap<String, Vec<String>>,
    ) -> Result<Prometheus, String> {
        let key = (
            address.to_owned(),
            format!("{auth:?}:{}", auth_digest(&auth)),
            insecure,
            serde_json::to_string(headers).unwrap_or_default(),
        );
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = pool.get(&key) {
            return Ok(p.clone());
        }
        let p = Prometheus::new(address, auth, self.timeout, insecure)
            .map_err(|e| e.to_string())?
            .with_headers(headers);
        pool.insert(key, p.clone());
        Ok(p)
    }

    /// Runs every check of `spec` for canary `name` in `namespace`, concurrently; a check that cannot run
    /// carries the reason in `error` (the policy decides what that means — the default fails it).
    pub async fn run_checks(&self, name: &str, namespace: &str, spec: &ValidSpec) -> Vec<CheckRun> {
        let runs = spec.metrics.iter().map(|m| async move {
            let started = std::time::Instant::now();
            let (value, error, query) = match self.resolve(name, namespace, spec, m).await {
                Err(error) => (None, Some(error), String::new()),
                Ok(r) => match r.prometheus.value(&r.query).await {
                    Ok(value) => (value, None, r.query),
                    Err(e) => (None, Some(e.to_string()), r.query),
                },
            };
            CheckRun {
                check: MetricCheck {
                    name: m.name.clone(),
                    value,
                    range: m.range,
                    error,
                },
                query,
                elapsed: started.elapsed(),
            }
        });
        futures::future::join_all(runs).await
    }

    async fn resolve(
        &self,
        name: &str,
        namespace: &str,
        spec: &ValidSpec,
        m: &MetricSpec,
    ) -> Result<Resolved, String> {
        let empty = Default::default();
        let vars = |variables| Vars {
            name,
            namespace,
            target: &spec.target,
            service: &spec.service,
            interval: &m.interval,
            variables,
        };
        let canary_address = || {
            self.address_for(spec).ok_or_else(|| {
                "no Prometheus address: set spec.metricsServer or the controller's --metrics-server"
                    .to_owned()
            })
        };
        match &m.source {
            MetricSource::SuccessRate => Ok(Resolved {
                query: query::success_rate(&vars(&empty)),
                prometheus: self.connect(&canary_address()?, Auth::None, false, &NO_HEADERS)?,
            }),
            MetricSource::Duration => Ok(Resolved {
                query: query::duration(&vars(&empty)),
                prometheus: self.connect(&canary_address()?, Auth::None, false, &NO_HEADERS)?,
            }),
            MetricSource::Query(q) => Ok(Resolved {
                query: query::render(q, &vars(&empty)).map_err(|e| e.to_string())?,
                prometheus: self.connect(&canary_address()?, Auth::None, false, &NO_HEADERS)?,
            }),
            MetricSource::Template {
                name: template,
                namespace: template_ns,
                variables,
            } => {
                let template_ns = template_ns.as_deref().unwrap_or(namespace);
                let t = Api::<MetricTemplate>::namespaced(self.client.clone(), template_ns)
                    .get_opt(template)
                    .await
                    .map_err(|e| format!("cannot read MetricTemplate {template}.{template_ns}: {e}"))?
                    .ok_or_else(|| format!("MetricTemplate {template}.{template_ns} not found"))?;
                if !t.spec.usable_from(template_ns, namespace) {
                    return Err(format!(
                        "MetricTemplate {template}.{template_ns} is not shared with namespace {namespace}: add it to the template's spec.allowedNamespaces"
                    ));
                }
                let provider = &t.spec.provider;
                if provider.type_ != "prometheus" {
                    return Err(format!(
                        "MetricTemplate {template}.{template_ns}: provider type {:?} is not supported (only prometheus)",
                        provider.type_
                    ));
                }
                let auth = match &provider.secret_ref {
                    None => Auth::None,
                    Some(s) => self.credentials(template_ns, &s.name).await?,
                };
                let address = match (&provider.address, &provider.secret_ref) {
                    (Some(a), _) if !a.is_empty() => a.clone(),
                    // Credentials never go where the Canary points: only to the operator's Prometheus.
                    (_, Some(_)) => self.default_address.clone().ok_or_else(|| {
                        format!(
                            "MetricTemplate {template}.{template_ns} has a secretRef but no provider.address: its credentials are sent only to its own address or the controller's --metrics-server"
                        )
                    })?,
                    _ => canary_address()?,
                };
                Ok(Resolved {
                    query: query::render(&t.spec.query, &vars(variables))
                        .map_err(|e| format!("MetricTemplate {template}.{template_ns}: {e}"))?,
                    prometheus: self.connect(
                        &address,
                        auth,
                        provider.insecure_skip_verify,
                        &provider.headers,
                    )?,
                })
            }
        }
    }

    /// `token` → bearer; `username` + `password` → basic.
    async fn credentials(&self, namespace: &str, name: &str) -> Result<Auth, String> {
        let secret = Api::<Secret>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|e| format!("cannot read Secret {name}.{namespace}: {e}"))?
            .ok_or_else(|| format!("Secret {name}.{namespace} not found"))?;
        let data = secret.data.unwrap_or_default();
        let text = |k: &str| {
            data.get(k)
                .map(|b| String::from_utf8_lossy(&b.0).trim().to_owned())
        };
        match (text("token"), text("username"), text("password")) {
            (Some(token), _, _) => Ok(Auth::Bearer(token)),
            (None, Some(username), Some(password)) => Ok(Auth::Basic { username, password }),
            _ => Err(format!(
                "Secret {name}.{namespace} has neither token nor username and password"
            )),
        }
    }
}

/// Distinguishes credentials in the pool key without keeping them in clear there.
fn auth_digest(auth: &Auth) -> String {
    use sha2::{Digest, Sha256};
    let text = match auth {
        Auth::None => String::new(),
        Auth::Bearer(t) => format!("b:{t}"),
        Auth::Basic { username, password } => format!("u:{username}:{password}"),
    };
    Sha256::digest(text.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Shared so the policy metrics source and checks reuse one pool.
pub type SharedProviders = Arc<Providers>;
