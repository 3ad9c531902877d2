//! Operators' requests (`fledge promote|abort|retry|pause|resume`): read from the Canary's
//! `fledge.dev/manual` annotation, handed to the tick once (the status keeps the id of the last one taken),
//! then removed — only if the annotation still holds that request, so a newer one is never lost.

use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use crate::api::{Canary, MANUAL_ANNOTATION, ManualRequest};
use crate::lifecycle::Manual;

/// The request on `canary`, as written (`raw`) and read; `Err` when the annotation is not a request.
pub fn request_of(canary: &Canary) -> Option<(String, Result<ManualRequest, String>)> {
    let raw = canary.annotations().get(MANUAL_ANNOTATION)?.clone();
    let parsed = serde_json::from_str(&raw).map_err(|e| format!("{MANUAL_ANNOTATION} is not a request: {e}"));
    Some((raw, parsed))
}

/// What the tick is handed: a request not taken yet.
pub fn untaken(request: &ManualRequest, last_taken: Option<&str>) -> Option<Manual> {
    (last_taken != Some(request.id.as_str())).then(|| Manual {
        action: request.action,
        by: request.by.clone(),
        reason: request.reason.clone(),
    })
}

/// Removes the annotation if it still holds `raw` (a JSON patch that tests it first).
pub async fn remove(client: &Client, canary: &Canary, raw: &str) -> Result<(), kube::Error> {
    let api: Api<Canary> = Api::namespaced(client.clone(), &canary.namespace().unwrap_or_default());
    let path = format!(
        "/metadata/annotations/{}",
        MANUAL_ANNOTATION.replace('~', "~0").replace('/', "~1")
    );
    let ops = serde_json::json!([
        {"op": "test", "path": path, "value": raw},
        {"op": "remove", "path": path},
    ]);
    let patch = Patch::<()>::Json(serde_json::from_value(ops).map_err(kube::Error::SerdeError)?);
    match api
        .patch(&canary.name_any(), &PatchParams::default(), &patch)
        .await
    {
        // A newer request replaced it (the test failed): that one is for the next reconcile.
        Err(kube::Error::Api(e)) if e.code == 422 => Ok(()),
        other => other.map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ManualAction;

    #[test]
    fn a_request_is_handed_to_the_tick_until_its_id_is_recorded_as_taken() {
        let request = ManualRequest {
            action: ManualAction::Pause,
            by: "alice".into(),
            reason: None,
            id: "1".into(),
        };
        assert_eq!(untaken(&request, None).map(|m| m.by), Some("alice".into()));
        assert_eq!(
            untaken(&request, Some("0")).map(|m| m.action),
            Some(ManualAction::Pause)
        );
        assert_eq!(untaken(&request, Some("1")), None);
    }
}
