//! A policy resource's source → the component's bytes, verified against the pinned digest. Bounded in size
//! and time; nothing here compiles.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client};

use super::store::NotReady;
use crate::api::{ConfigMapSource, OciSource, PolicySource};
use crate::registry::{self, Auth, PullLimits};

/// Where a source's namespaced objects (ConfigMap, pull Secret) live.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The Policy's namespace; `None` for a ClusterPolicy.
    pub namespace: Option<&'a str>,
}

impl Scope<'_> {
    /// A Policy reads its own namespace; a ClusterPolicy must say which.
    fn namespace_of(&self, field: &str, named: Option<&str>) -> Result<String, NotReady> {
        match (self.namespace, named) {
            (Some(own), None) => Ok(own.to_owned()),
            (Some(own), Some(other)) if other == own => Ok(own.to_owned()),
            (Some(own), Some(other)) => Err(invalid(format!(
                "{field}.namespace {other} is not the Policy's namespace {own} (a Policy reads only its own)"
            ))),
            (None, Some(ns)) => Ok(ns.to_owned()),
            (None, None) => Err(invalid(format!("a ClusterPolicy's {field} needs a namespace"))),
        }
    }
}

fn invalid(message: String) -> NotReady {
    NotReady {
        reason: "InvalidSource",
        message,
    }
}

/// What a source gave: the bytes and their digest.
#[derive(Debug)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub digest: String,
    /// `builtin`, `configMap` or `oci`, for messages.
    pub from: String,
}

/// Fetches the component a source names, verified against its digest.
pub async fn fetch(
    client: &Client,
    scope: Scope<'_>,
    source: &PolicySource,
    limits: PullLimits,
) -> Result<Fetched, NotReady> {
    match (&source.oci, &source.config_map, &source.builtin) {
        (Some(oci), None, None) => from_oci(client, scope, oci, limits).await,
        (None, Some(cm), None) => from_config_map(client, scope, cm, limits).await,
        (None, None, Some(name)) => {
            let reference = format!("builtin:{name}");
            let bytes = crate::policy::builtin(&reference)
                .ok_or_else(|| invalid(format!("{reference} is not a built-in policy")))?;
            Ok(Fetched {
                digest: registry::sha256(bytes),
                bytes: bytes.to_vec(),
                from: reference,
            })
        }
        _ => Err(invalid(
            "source needs exactly one of oci, configMap, builtin".into(),
        )),
    }
}

async fn from_config_map(
    client: &Client,
    scope: Scope<'_>,
    cm: &ConfigMapSource,
    limits: PullLimits,
) -> Result<Fetched, NotReady> {
    registry::digest_hex(&cm.digest).map_err(|e| invalid(e.to_string()))?;
    let namespace = scope.namespace_of("configMap", cm.namespace.as_deref())?;
    let from = format!("configmap {namespace}/{}", cm.name);
    let found = Api::<ConfigMap>::namespaced(client.clone(), &namespace)
        .get_opt(&cm.name)
        .await
        .map_err(|e| NotReady {
            reason: "FetchFailed",
            message: format!("{from}: {e}"),
        })?
        .ok_or_else(|| NotReady {
            reason: "NotFound",
            message: format!("{from} not found"),
        })?;
    let bytes = found
        .binary_data
        .as_ref()
        .and_then(|d| d.get(&cm.key))
        .map(|b| b.0.clone())
        .ok_or_else(|| NotReady {
            reason: "NotFound",
            message: format!("{from} has no binaryData key {}", cm.key),
        })?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > limits.max_bytes {
        return Err(NotReady {
            reason: "TooLarge",
            message: format!(
                "{from}: {} bytes, over the limit of {}",
                bytes.len(),
                limits.max_bytes
            ),
        });
    }
    let digest = registry::sha256(&bytes);
    if digest != cm.digest {
        return Err(NotReady {
            reason: "DigestMismatch",
            message: format!(
                "{from} key {} holds {digest}, the Policy pins {}",
                cm.key, cm.digest
            ),
        });
    }
    Ok(Fetched { bytes, digest, from })
}

async fn from_oci(
    client: &Client,
    scope: Scope<'_>,
    oci: &OciSource,
    limits: PullLimits,
) -> Result<Fetched, NotReady> {
    let from = format!("oci://{}", oci.reference);
    if oci.digest.is_empty() {
        return Err(NotReady {
            reason: "DigestRequired",
            message: format!(
                "{from}: source.oci.digest is required; a tag alone could change under a running rollout \
                 (fledge policy push prints the digest)"
            ),
        });
    }
    registry::digest_hex(&oci.digest).map_err(|e| invalid(e.to_string()))?;
    let auth = match &oci.pull_secret {
        None => Auth::Anonymous,
        Some(secret) => {
            let namespace = scope.namespace_of("pullSecret", secret.namespace.as_deref())?;
            pull_secret(client, &namespace, &secret.name, &oci.reference).await?
        }
    };
    let bytes = registry::pull(&oci.reference, &oci.digest, &auth, oci.insecure, limits)
        .await
        .map_err(|e| NotReady {
            reason: e.reason(),
            message: e.to_string(),
        })?;
    Ok(Fetched {
        digest: oci.digest.clone(),
        bytes,
        from,
    })
}

async fn pull_secret(
    client: &Client,
    namespace: &str,
    name: &str,
    reference: &str,
) -> Result<Auth, NotReady> {
    let what = format!("pull secret {namespace}/{name}");
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|e| NotReady {
            reason: "FetchFailed",
            message: format!("{what}: {e}"),
        })?
        .ok_or_else(|| NotReady {
            reason: "PullSecretNotFound",
            message: format!("{what} not found"),
        })?;
    let data: BTreeMap<String, Vec<u8>> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    registry::auth_from_secret(&data, reference).map_err(|why| NotReady {
        reason: "InvalidPullSecret",
        message: format!("{what} {why}"),
    })
}
