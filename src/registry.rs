//! Policy components as OCI artifacts (the CNCF Wasm layout: one `application/wasm` layer), pulled and pushed
//! with `oci-client`. A pull is pinned by the component's digest, bounded in size and time, and verified
//! before anyone compiles it.

use std::time::Duration;

use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use thiserror::Error;

/// The layer media type of a Wasm component (CNCF TAG Runtime's Wasm OCI artifact layout).
pub const WASM_LAYER: &str = "application/wasm";
/// Older tools (wasm-to-oci) label the layer so; accepted on pull.
const WASM_LAYER_LEGACY: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// The config media type of the same layout.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";

/// How much a pull may take.
#[derive(Debug, Clone, Copy)]
pub struct PullLimits {
    pub max_bytes: u64,
    pub timeout: Duration,
}

impl Default for PullLimits {
    fn default() -> Self {
        Self {
            max_bytes: 32 << 20,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Credentials for a registry.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Auth {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Anonymous => f.write_str("Anonymous"),
            Self::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
        }
    }
}

impl Auth {
    fn to_oci(&self) -> RegistryAuth {
        match self {
            Self::Anonymous => RegistryAuth::Anonymous,
            Self::Basic { username, password } => RegistryAuth::Basic(username.clone(), password.clone()),
        }
    }
}

/// Why a pull or push failed; `reason()` is the condition reason a Policy shows.
#[derive(Debug, Error)]
pub enum RegistryError {
    #[error("{0:?} is not a registry/repository[:tag] reference")]
    BadReference(String),
    #[error("{0:?} is not a sha256:<64 hex> digest")]
    BadDigest(String),
    #[error("{reference} has no component {want}{}", held.as_ref().map(|h| format!(" (the tag holds {h})")).unwrap_or_default())]
    DigestMismatch {
        reference: String,
        want: String,
        held: Option<String>,
    },
    #[error("the component is {size} bytes, over the limit of {limit}")]
    TooLarge { size: u64, limit: u64 },
    #[error("{reference} is not a Wasm artifact: {why}")]
    NotAWasmArtifact { reference: String, why: String },
    #[error("registry refused the credentials for {0}")]
    Unauthorized(String),
    #[error("registry unreachable: {0}")]
    Unreachable(String),
    #[error("{0} not found in the registry")]
    NotFound(String),
    #[error("registry: {0}")]
    Other(String),
}

impl RegistryError {
    /// The Policy condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadReference(_) | Self::BadDigest(_) => "InvalidSource",
            Self::DigestMismatch { .. } => "DigestMismatch",
            Self::TooLarge { .. } => "TooLarge",
            Self::NotAWasmArtifact { .. } => "NotAComponent",
            Self::Unauthorized(_) => "Unauthorized",
            Self::Unreachable(_) => "RegistryUnreachable",
            Self::NotFound(_) => "NotFound",
            Self::Other(_) => "RegistryError",
        }
    }

    /// Bounded label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::BadReference(_) => "bad_reference",
            Self::BadDigest(_) => "bad_digest",
            Self::DigestMismatch { .. } => "digest_mismatch",
            Self::TooLarge { .. } => "too_large",
            Self::NotAWasmArtifact { .. } => "not_a_component",
            Self::Unauthorized(_) => "unauthorized",
            Self::Unreachable(_) => "unreachable",
            Self::NotFound(_) => "not_found",
            Self::Other(_) => "registry",
        }
    }

    /// Whether trying again later may succeed without a change to the Policy.
    pub fn transient(&self) -> bool {
        matches!(
            self,
            Self::Unauthorized(_) | Self::Unreachable(_) | Self::NotFound(_) | Self::Other(_)
        )
    }
}

/// Checks `sha256:<64 lowercase hex>` and returns the hex part.
pub fn digest_hex(digest: &str) -> Result<&str, RegistryError> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
        .ok_or_else(|| RegistryError::BadDigest(digest.to_owned()))
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", crate::policy::digest(bytes))
}

/// `oci://registry/repo[:tag]@sha256:<component digest>` as the CLI takes it: the reference and the digest.
/// The digest is always the component's (the layer's), as in a Policy, never a manifest's.
pub fn split_pinned(uri: &str) -> Result<(String, String), RegistryError> {
    let rest = uri.strip_prefix("oci://").unwrap_or(uri);
    let (reference, digest) = rest
        .rsplit_once('@')
        .ok_or_else(|| RegistryError::BadDigest(format!("{uri} (append @sha256:<digest>)")))?;
    digest_hex(digest)?;
    Ok((reference.to_owned(), digest.to_owned()))
}

fn parse(reference: &str) -> Result<Reference, RegistryError> {
    if reference.contains('@') {
        return Err(RegistryError::BadReference(format!(
            "{reference} (give the component digest separately, not in the reference)"
        )));
    }
    reference
        .parse::<Reference>()
        .map_err(|_| RegistryError::BadReference(reference.to_owned()))
}

/// Whether the reference names a tag (the last path element has `:tag`).
fn has_tag(reference: &str) -> bool {
    reference
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains(':'))
}

fn client(insecure: bool, timeout: Duration) -> Client {
    crate::tls::install_crypto_provider();
    Client::new(ClientConfig {
        protocol: if insecure {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        connect_timeout: Some(timeout.min(Duration::from_secs(10))),
        read_timeout: Some(timeout),
        // Small artifacts: one request per blob is simpler for every registry.
        use_monolithic_push: true,
        ..ClientConfig::default()
    })
}

/// Pulls the component `digest` from `reference`, at most `limits.max_bytes`, verified. When the reference
/// names a tag, its manifest must list that layer (or the tag moved and the pinned blob is still served).
pub async fn pull(
    reference: &str,
    digest: &str,
    auth: &Auth,
    insecure: bool,
    limits: PullLimits,
) -> Result<Vec<u8>, RegistryError> {
    tokio::time::timeout(
        limits.timeout,
        pull_unbounded(reference, digest, auth, insecure, limits),
    )
    .await
    .map_err(|_| RegistryError::Unreachable(format!("{reference}: no answer within {:?}", limits.timeout)))?
}

async fn pull_unbounded(
    reference: &str,
    digest: &str,
    auth: &Auth,
    insecure: bool,
    limits: PullLimits,
) -> Result<Vec<u8>, RegistryError> {
    digest_hex(digest)?;
    let image = parse(reference)?;
    let client = client(insecure, limits.timeout);
    let oci_auth = auth.to_oci();
    client
        .store_auth_if_needed(image.resolve_registry(), &oci_auth)
        .await;
    let mut held = None;
    let mut size = None;
    if has_tag(reference) {
        let (manifest, _) = client
            .pull_image_manifest(&image, &oci_auth)
            .await
            .map_err(|e| classify(reference, e))?;
        match manifest.layers.iter().find(|l| l.digest == digest) {
            Some(layer) => {
                check_media_type(reference, layer)?;
                size = u64::try_from(layer.size).ok();
            }
            None => held = Some(describe_layers(&manifest)),
        }
    }
    if let Some(size) = size.filter(|s| *s > limits.max_bytes) {
        return Err(RegistryError::TooLarge {
            size,
            limit: limits.max_bytes,
        });
    }
    let descriptor = OciDescriptor {
        digest: digest.to_owned(),
        media_type: WASM_LAYER.to_owned(),
        size: size.and_then(|s| i64::try_from(s).ok()).unwrap_or_default(),
        ..OciDescriptor::default()
    };
    let mismatch = |held: Option<String>| RegistryError::DigestMismatch {
        reference: reference.to_owned(),
        want: digest.to_owned(),
        held,
    };
    let mut blob = match client.pull_blob_stream(&image, &descriptor).await {
        Ok(blob) => blob,
        // The pinned blob is not in the repository: the digest is wrong (or was deleted).
        Err(e) => {
            return Err(match classify(reference, e) {
                RegistryError::NotFound(_) => mismatch(held),
                other => other,
            });
        }
    };
    if let Some(length) = blob.content_length.filter(|l| *l > limits.max_bytes) {
        return Err(RegistryError::TooLarge {
            size: length,
            limit: limits.max_bytes,
        });
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = blob.stream.next().await {
        let chunk = chunk.map_err(|e| RegistryError::Unreachable(format!("{reference}: {e}")))?;
        bytes.extend_from_slice(&chunk);
        let read = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        if read > limits.max_bytes {
            return Err(RegistryError::TooLarge {
                size: read,
                limit: limits.max_bytes,
            });
        }
    }
    if sha256(&bytes) != digest {
        return Err(mismatch(Some(sha256(&bytes))));
    }
    if held.is_some() {
        tracing::info!(reference, digest, "the tag moved; serving the pinned component");
    }
    Ok(bytes)
}

fn check_media_type(reference: &str, layer: &OciDescriptor) -> Result<(), RegistryError> {
    if layer.media_type == WASM_LAYER || layer.media_type == WASM_LAYER_LEGACY {
        return Ok(());
    }
    Err(RegistryError::NotAWasmArtifact {
        reference: reference.to_owned(),
        why: format!(
            "layer {} has media type {}, not {WASM_LAYER}",
            layer.digest, layer.media_type
        ),
    })
}

fn describe_layers(manifest: &OciImageManifest) -> String {
    let layers: Vec<String> = manifest
        .layers
        .iter()
        .map(|l| format!("{} ({})", l.digest, l.media_type))
        .collect();
    if layers.is_empty() {
        "no layers".into()
    } else {
        layers.join(", ")
    }
}

/// What a push made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// `sha256:<hex>` of the component: what a Policy pins.
    pub digest: String,
    pub manifest_url: String,
}

/// Pushes `component` to `reference` as a Wasm OCI artifact (config + one `application/wasm` layer).
pub async fn push(
    reference: &str,
    component: Vec<u8>,
    summary: &serde_json::Value,
    auth: &Auth,
    insecure: bool,
) -> Result<Pushed, RegistryError> {
    let image = parse(reference)?;
    let digest = sha256(&component);
    let config = serde_json::json!({
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [digest],
        "component": summary,
    });
    let config = Config::new(config.to_string().into_bytes(), WASM_CONFIG.to_owned(), None);
    let layer = ImageLayer::new(component, WASM_LAYER.to_owned(), None);
    let client = client(insecure, Duration::from_secs(60));
    let pushed = client
        .push(&image, &[layer], config, &auth.to_oci(), None)
        .await
        .map_err(|e| classify(reference, e))?;
    Ok(Pushed {
        digest,
        manifest_url: pushed.manifest_url,
    })
}

/// Types an `oci-client` failure by what the registry said, not by its message.
fn classify(reference: &str, err: OciDistributionError) -> RegistryError {
    let what = || format!("{reference}: {err}");
    match &err {
        OciDistributionError::AuthenticationFailure(_) | OciDistributionError::UnauthorizedError { .. } => {
            RegistryError::Unauthorized(reference.to_owned())
        }
        OciDistributionError::ImageManifestNotFoundError(_) => RegistryError::NotFound(reference.to_owned()),
        OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
            RegistryError::Unreachable(what())
        }
        OciDistributionError::ServerError { code, .. } => match code {
            401 | 403 => RegistryError::Unauthorized(reference.to_owned()),
            404 => RegistryError::NotFound(reference.to_owned()),
            _ => RegistryError::Other(what()),
        },
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                RegistryError::Unauthorized(reference.to_owned())
            } else if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::BlobUnknown
                        | OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                RegistryError::NotFound(reference.to_owned())
            } else {
                RegistryError::Other(what())
            }
        }
        OciDistributionError::IncompatibleLayerMediaTypeError(_)
        | OciDistributionError::UnsupportedMediaTypeError(_) => RegistryError::NotAWasmArtifact {
            reference: reference.to_owned(),
            why: err.to_string(),
        },
        _ => RegistryError::Other(what()),
    }
}

/// Credentials from a pull Secret: `kubernetes.io/dockerconfigjson` (`auths.<registry>`) or plain
/// `username` / `password` keys.
pub fn auth_from_secret(
    data: &std::collections::BTreeMap<String, Vec<u8>>,
    reference: &str,
) -> Result<Auth, String> {
    let text = |key: &str| {
        data.get(key)
            .map(|v| String::from_utf8_lossy(v).trim_end_matches('\n').to_owned())
    };
    if let (Some(username), Some(password)) = (text("username"), text("password")) {
        return Ok(Auth::Basic { username, password });
    }
    let Some(config) = data.get(".dockerconfigjson") else {
        return Err("has neither username/password nor .dockerconfigjson".into());
    };
    let config: serde_json::Value =
        serde_json::from_slice(config).map_err(|e| format!(".dockerconfigjson is not JSON: {e}"))?;
    let registry = reference.split('/').next().unwrap_or_default();
    let entry = config
        .get("auths")
        .and_then(|a| a.as_object())
        .and_then(|auths| {
            auths.iter().find(|(host, _)| {
                host.trim_start_matches("https://").trim_start_matches("http://") == registry
            })
        })
        .map(|(_, v)| v)
        .ok_or_else(|| format!(".dockerconfigjson has no auths entry for {registry}"))?;
    let field = |k: &str| entry.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    if let (Some(username), Some(password)) = (field("username"), field("password")) {
        return Ok(Auth::Basic { username, password });
    }
    let encoded = field("auth").ok_or_else(|| format!("auths.{registry} has no auth"))?;
    let decoded = base64_decode(&encoded).ok_or_else(|| format!("auths.{registry}.auth is not base64"))?;
    let decoded = String::from_utf8(decoded).map_err(|_| format!("auths.{registry}.auth is not text"))?;
    let (username, password) = decoded
        .split_once(':')
        .ok_or_else(|| format!("auths.{registry}.auth is not user:password"))?;
    Ok(Auth::Basic {
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_uri_splits_into_reference_and_component_digest() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            split_pinned(&format!("oci://127.0.0.1:5000/p/rust:v1@{d}")).expect("split"),
            ("127.0.0.1:5000/p/rust:v1".to_owned(), d.clone())
        );
        assert!(split_pinned("oci://127.0.0.1:5000/p/rust:v1").is_err());
        assert!(split_pinned("oci://r/p@sha256:abc").is_err());
    }

    #[test]
    fn a_tag_is_told_from_a_registry_port() {
        assert!(has_tag("127.0.0.1:5000/p/rust:v1"));
        assert!(!has_tag("127.0.0.1:5000/p/rust"));
    }

    #[test]
    fn pull_secret_credentials_come_from_dockerconfigjson_or_plain_keys() {
        let plain = [
            ("username".to_owned(), b"u".to_vec()),
            ("password".to_owned(), b"p\n".to_vec()),
        ]
        .into();
        let basic = |u: &str, p: &str| Auth::Basic {
            username: u.into(),
            password: p.into(),
        };
        assert_eq!(auth_from_secret(&plain, "r:1/x"), Ok(basic("u", "p")));
        // "u:p" in base64 is dTpw.
        let docker = [(
            ".dockerconfigjson".to_owned(),
            br#"{"auths": {"127.0.0.1:5000": {"auth": "dTpw"}}}"#.to_vec(),
        )]
        .into();
        assert_eq!(
            auth_from_secret(&docker, "127.0.0.1:5000/p/x:v1"),
            Ok(basic("u", "p"))
        );
        assert!(auth_from_secret(&docker, "other:5000/p/x").is_err());
    }

    #[test]
    fn transient_registry_failures_are_retried_and_wrong_pins_are_not() {
        assert!(RegistryError::Unreachable("x".into()).transient());
        assert!(
            !RegistryError::DigestMismatch {
                reference: "r".into(),
                want: "d".into(),
                held: None
            }
            .transient()
        );
        assert!(!RegistryError::TooLarge { size: 2, limit: 1 }.transient());
    }
}
