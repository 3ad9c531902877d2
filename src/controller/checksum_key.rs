//! The per-install key of fledge's Secret checksums. A tracked Secret's checksum shows in the Canary's status
//! (`trackedConfigs`) and feeds the revision; unkeyed, it would let anyone who may read Canaries — but not
//! Secrets — test guesses of a low-entropy secret against it. Keyed with HMAC-SHA256 under a random key that
//! only fledge reads, it reveals nothing. The key is a Secret fledge creates once in its own namespace and
//! every replica reads, so checksums (and so revisions) stay the same across restarts and failovers.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

/// The Secret's name, in the controller's namespace.
pub const NAME: &str = "fledge-checksum-key";
/// Its data key.
const FIELD: &str = "key";
/// Bytes of key fledge generates, and the least it accepts.
const KEY_BYTES: usize = 32;

/// Reads the key from `namespace`/[`NAME`], creating it (random, 32 bytes) if it does not exist yet.
pub async fn load_or_create(client: &Client, namespace: &str) -> Result<Arc<[u8]>, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let at = format!("Secret {namespace}/{NAME}");
    // Two replicas starting at once: the one whose create loses reads the winner's.
    for _ in 0..3 {
        if let Some(secret) = api
            .get_opt(NAME)
            .await
            .map_err(|e| format!("reading the checksum key {at}: {e}"))?
        {
            return key_of(&secret)
                .ok_or_else(|| format!("{at} holds no {FIELD:?} of at least {KEY_BYTES} bytes"));
        }
        let mut key = vec![0u8; KEY_BYTES];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
            .map_err(|_| "no randomness for the checksum key".to_owned())?;
        match api.create(&PostParams::default(), &key_secret(key)).await {
            Ok(created) => {
                tracing::info!("created the checksum key {at}");
                return key_of(&created).ok_or_else(|| format!("{at} was created without its key"));
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(format!("creating the checksum key {at}: {e}")),
        }
    }
    Err(format!("{at}: created and deleted again while starting"))
}

fn key_secret(key: Vec<u8>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(NAME.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "fledge".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(FIELD.to_owned(), ByteString(key))])),
        ..Secret::default()
    }
}

fn key_of(secret: &Secret) -> Option<Arc<[u8]>> {
    let key = secret.data.as_ref()?.get(FIELD)?;
    (key.0.len() >= KEY_BYTES).then(|| Arc::from(key.0.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_shorter_than_32_bytes_is_not_used() {
        assert!(key_of(&key_secret(vec![7; 32])).is_some());
        assert!(key_of(&key_secret(vec![7; 31])).is_none());
        assert!(key_of(&Secret::default()).is_none());
    }
}
