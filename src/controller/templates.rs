//! MetricTemplates say on their status whether fledge can run them (a supported provider, a valid address
//! and headers), so a template fledge cannot use is found when it is applied, not at a canary's analysis.

use std::sync::Arc;

use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::{WatchStreamExt, predicates, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use super::status::{condition, upsert_condition};
use crate::api::{MetricTemplate, MetricTemplateStatus};
use crate::cluster::FIELD_MANAGER;

/// Keeps every MetricTemplate's `Ready` condition, until `stop`.
pub async fn run(
    client: Client,
    namespace: Option<String>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<MetricTemplate> = match namespace.as_deref() {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (reader, writer) = reflector::store();
    let templates = watcher(api, super::watches::config())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    Controller::for_stream(templates, reader)
        .graceful_shutdown_on(stop)
        .run(reconcile, retry, Arc::new(client))
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!("metric template reconcile: {e}");
            }
        })
        .await;
}

/// The status `template` should show; `None` when it shows it already.
pub fn desired_status(template: &MetricTemplate) -> Option<MetricTemplateStatus> {
    let generation = template.meta().generation;
    let old = template.status.clone().unwrap_or_default();
    let ready = match template.spec.usable() {
        Ok(()) => condition(
            "Ready",
            "True",
            "Supported",
            "fledge can run this template",
            generation,
        ),
        Err(why) => condition("Ready", "False", why.reason, &why.message, generation),
    };
    let told = old.observed_generation == generation
        && old.conditions.iter().any(|c| {
            c.type_ == ready.type_
                && c.status == ready.status
                && c.reason == ready.reason
                && c.message == ready.message
        });
    if told {
        return None;
    }
    let mut status = old;
    upsert_condition(&mut status.conditions, ready);
    status.observed_generation = generation;
    Some(status)
}

async fn reconcile(template: Arc<MetricTemplate>, client: Arc<Client>) -> Result<Requeue, kube::Error> {
    let Some(status) = desired_status(&template) else {
        return Ok(Requeue::await_change());
    };
    if let Some(c) = status.conditions.iter().find(|c| c.status == "False") {
        tracing::warn!(
            template = template.name_any(),
            namespace = template.namespace().unwrap_or_default(),
            reason = c.reason,
            "metric template cannot run: {}",
            c.message
        );
    }
    let api: Api<MetricTemplate> =
        Api::namespaced((*client).clone(), &template.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": MetricTemplate::api_version(&()),
        "kind": MetricTemplate::kind(&()),
        "status": status,
    });
    api.patch_status(
        &template.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(Requeue::await_change())
}

fn retry(_: Arc<MetricTemplate>, _: &kube::Error, _: Arc<Client>) -> Requeue {
    Requeue::requeue(std::time::Duration::from_secs(15))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(provider: &str) -> MetricTemplate {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "fledge.dev/v1alpha1", "kind": "MetricTemplate",
            "metadata": {"name": "t", "namespace": "n", "generation": 1},
            "spec": {"provider": {"type": provider}, "query": "vector(1)"}
        }))
        .expect("template")
    }

    #[test]
    fn an_unsupported_provider_is_told_once_per_generation_and_names_what_is_supported() {
        let mut t = template("datadog");
        let status = desired_status(&t).expect("first time");
        let ready = &status.conditions[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "UnsupportedProvider")
        );
        assert!(ready.message.contains("prometheus"), "{}", ready.message);
        t.status = Some(status);
        assert_eq!(desired_status(&t), None, "nothing new to say");
        t.spec.provider.type_ = "prometheus".into();
        t.metadata.generation = Some(2);
        let fixed = desired_status(&t).expect("the fix is told");
        assert_eq!(fixed.conditions.len(), 1);
        assert_eq!(
            (fixed.conditions[0].status.as_str(), fixed.observed_generation),
            ("True", Some(2))
        );
    }
}
