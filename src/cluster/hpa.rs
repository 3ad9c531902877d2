//! The primary's autoscaler: a copy of the target's HorizontalPodAutoscaler (`autoscalerRef`) named
//! `<hpa>-primary` and aimed at `<target>-primary`, so the primary scales like the target did.

use k8s_openapi::api::autoscaling::v2::{CrossVersionObjectReference, HorizontalPodAutoscaler};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::primary_name;

/// The primary's HPA, built from the target's.
pub fn primary_hpa(
    target_hpa: &HorizontalPodAutoscaler,
    target: &str,
    owner: OwnerReference,
) -> HorizontalPodAutoscaler {
    let mut spec = target_hpa.spec.clone().unwrap_or_default();
    spec.scale_target_ref = CrossVersionObjectReference {
        api_version: Some("apps/v1".into()),
        kind: "Deployment".into(),
        name: primary_name(target),
    };
    HorizontalPodAutoscaler {
        metadata: ObjectMeta {
            name: Some(primary_name(
                target_hpa.metadata.name.as_deref().unwrap_or(target),
            )),
            labels: Some(
                target_hpa
                    .metadata
                    .labels
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .chain(super::ownership_labels(&owner))
                    .collect(),
            ),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primary_hpa_scales_the_primary_with_the_targets_bounds() {
        let hpa: HorizontalPodAutoscaler = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "podinfo"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "minReplicas": 2, "maxReplicas": 4
            }
        }))
        .expect("hpa");
        let owner = OwnerReference {
            name: "podinfo".into(),
            uid: "u".into(),
            ..Default::default()
        };
        let copy = primary_hpa(&hpa, "podinfo", owner);
        let spec = copy.spec.expect("spec");
        assert_eq!(copy.metadata.name.as_deref(), Some("podinfo-primary"));
        assert_eq!(spec.scale_target_ref.name, "podinfo-primary");
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 4));
    }
}
