//! Traffic routers. Istio is the one fledge drives today: a VirtualService splitting the apex host between
//! the primary and canary Services, and a DestinationRule for each.

pub mod affinity;
pub mod istio;

use serde_json::Value;

/// Each condition (an A/B match, a session cookie) laid over each of the Service's own match conditions
/// (`uri.prefix: /api` and a header both hold): a field the condition names replaces the Service's.
/// Flagger keeps only the condition's `headers` and `sourceLabels` over a Service match; fledge keeps every
/// field the condition names (a deliberate difference: a `uri` condition is not dropped).
pub fn lay_over(conditions: &[Value], service: &[Value]) -> Vec<Value> {
    if service.is_empty() {
        return conditions.to_vec();
    }
    conditions
        .iter()
        .flat_map(|condition| {
            service.iter().map(move |base| {
                let mut merged = base.clone();
                if let (Some(into), Some(from)) = (merged.as_object_mut(), condition.as_object()) {
                    for (key, value) in from {
                        into.insert(key.clone(), value.clone());
                    }
                }
                merged
            })
        })
        .collect()
}
