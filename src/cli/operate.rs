//! Operating rollouts from a terminal: `fledge get|promote|abort|retry|pause|resume|status` (also as the
//! kubectl plugin `kubectl fledge …`). Reads go to the API; a manual step is a request written to the
//! Canary's `fledge.dev/manual` annotation, which the controller acts on once, records in an event naming
//! the operator, and removes — so every step goes through the controller's own rules and its record.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Config};

use super::view;
use crate::api::{Canary, MANUAL_ANNOTATION, ManualAction, ManualRequest, Phase};

/// Which cluster and namespace, as kubectl takes them.
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// Default: the context's namespace, else `default`.
    pub namespace: Option<String>,
}

/// A client for `target`, and the namespace to work in.
pub async fn connect(target: &Target) -> anyhow::Result<(Client, String)> {
    let options = KubeConfigOptions {
        context: target.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &target.kubeconfig {
        Some(path) => Config::from_custom_kubeconfig(Kubeconfig::read_from(path)?, &options).await?,
        None if target.context.is_some() => Config::from_kubeconfig(&options).await?,
        None => Config::infer().await?,
    };
    let namespace = target
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    Ok((Client::try_from(config)?, namespace))
}

/// How `get` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Tree,
    Json,
    Yaml,
}

/// `get [name] [-A] [-o json|yaml] [-w]`.
pub async fn get(
    client: &Client,
    namespace: &str,
    name: Option<&str>,
    all_namespaces: bool,
    output: Output,
    watch: bool,
) -> anyhow::Result<()> {
    let api: Api<Canary> = if all_namespaces {
        Api::all(client.clone())
    } else {
        Api::namespaced(client.clone(), namespace)
    };
    let render = || render(client, namespace, name, all_namespaces, output);
    print!("{}", render().await?);
    if !watch {
        return Ok(());
    }
    // Redraw on every change of the Canary (or of any, without a name): a watch, not polling.
    let config = match name {
        Some(name) => watcher::Config::default().fields(&format!("metadata.name={name}")),
        None => watcher::Config::default(),
    };
    let scope: Api<Canary> = match name {
        Some(_) => Api::namespaced(client.clone(), namespace),
        None => api.clone(),
    };
    let terminal = std::io::stdout().is_terminal();
    let mut changes = watcher(scope, config).default_backoff().applied_objects().boxed();
    while let Some(change) = changes.next().await {
        change?;
        let text = render().await?;
        if terminal {
            // Home and clear, then the new view: it updates in place.
            print!("\x1b[H\x1b[2J{text}");
        } else {
            print!("---\n{text}");
        }
        use std::io::Write as _;
        std::io::stdout().flush()?;
    }
    Ok(())
}

/// One view of `get`.
async fn render(
    client: &Client,
    namespace: &str,
    name: Option<&str>,
    all_namespaces: bool,
    output: Output,
) -> anyhow::Result<String> {
    let Some(name) = name else {
        let api: Api<Canary> = if all_namespaces {
            Api::all(client.clone())
        } else {
            Api::namespaced(client.clone(), namespace)
        };
        let list = api.list(&ListParams::default()).await?;
        return Ok(match output {
            Output::Json => format!("{}\n", serde_json::to_string_pretty(&list.items)?),
            Output::Yaml => serde_yaml::to_string(&list.items)?,
            Output::Tree => view::table(&list.items, all_namespaces),
        });
    };
    let canary = Api::<Canary>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .map_err(|e| anyhow::anyhow!("canary {name} in {namespace}: {e}"))?;
    Ok(match output {
        Output::Json => format!("{}\n", serde_json::to_string_pretty(&canary)?),
        Output::Yaml => serde_yaml::to_string(&canary)?,
        Output::Tree => {
            let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
            let target = &canary.spec.target_ref.name;
            let (t, p) = (
                deployments.get_opt(target).await?,
                deployments.get_opt(&format!("{target}-primary")).await?,
            );
            let events: Api<Event> = Api::namespaced(client.clone(), namespace);
            let selector = format!("regarding.kind=Canary,regarding.name={name}");
            let events = events
                .list(&ListParams::default().fields(&selector))
                .await
                .map(|l| l.items)
                .unwrap_or_default();
            view::tree(&canary, t.as_ref(), p.as_ref(), &events)
        }
    })
}

/// Who the API server says is asking (for the controller's event); `unknown` when it will not say.
async fn whoami(client: &Client) -> String {
    let review: SelfSubjectReview = SelfSubjectReview::default();
    Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .ok()
        .and_then(|r| r.status)
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Asks the controller for `action` on Canary `name`, and waits up to `wait` for it to be taken. Returns what
/// to tell the operator.
pub async fn request(
    client: &Client,
    namespace: &str,
    name: &str,
    action: ManualAction,
    reason: Option<String>,
    wait: Duration,
) -> anyhow::Result<String> {
    let api: Api<Canary> = Api::namespaced(client.clone(), namespace);
    api.get(name)
        .await
        .map_err(|e| anyhow::anyhow!("canary {name} in {namespace}: {e}"))?;
    let by = whoami(client).await;
    let id = format!(
        "{}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
        std::process::id()
    );
    let request = ManualRequest {
        action,
        by: by.clone(),
        reason,
        id: id.clone(),
    };
    let patch = serde_json::json!({"metadata": {"annotations": {MANUAL_ANNOTATION: serde_json::to_string(&request)?}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let canary = api.get(name).await?;
        let taken = canary.status.as_ref().and_then(|s| s.last_manual.as_deref()) == Some(id.as_str());
        if taken {
            return Ok(format!(
                "{} {name}: requested by {by}, taken by the controller",
                action.verb()
            ));
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{} {name}: requested by {by}, but the controller did not take it within {wait:?} (is it running and watching {namespace}?)",
            action.verb()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// How a rollout ended, for `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    TimedOut,
}

impl Outcome {
    /// 0, 1, 2: for CI pipelines.
    pub fn code(self) -> u8 {
        match self {
            Self::Succeeded => 0,
            Self::Failed => 1,
            Self::TimedOut => 2,
        }
    }
}

/// Whether a Canary's status ends a wait: a rollout done, or none in flight. `pending`: the target runs other
/// images than the primary — a change the controller has not rolled out yet (a `status` run right after
/// `kubectl set image` waits for that rollout instead of reporting the last one); a failed rollout leaves them
/// different and still ends the wait.
pub fn settled(phase: Option<Phase>, pending: bool) -> Option<Outcome> {
    match phase {
        Some(Phase::Succeeded | Phase::Initialized) if !pending => Some(Outcome::Succeeded),
        Some(Phase::Failed) => Some(Outcome::Failed),
        _ => None,
    }
}

/// The container images of a Deployment's pod template, in order.
fn images(d: Option<&Deployment>) -> Vec<String> {
    d.and_then(|d| d.spec.as_ref())
        .and_then(|s| s.template.spec.as_ref())
        .map(|p| p.containers.iter().filter_map(|c| c.image.clone()).collect())
        .unwrap_or_default()
}

/// `status <name> --timeout`: waits for the rollout in flight to end.
pub async fn status(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<(Outcome, String)> {
    let api: Api<Canary> = Api::namespaced(client.clone(), namespace);
    let wait = async {
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut changes = watcher(api.clone(), config)
            .default_backoff()
            .applied_objects()
            .boxed();
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
        while let Some(change) = changes.next().await {
            let canary = change?;
            let target_name = &canary.spec.target_ref.name;
            let target = deployments.get_opt(target_name).await?;
            let primary = deployments.get_opt(&format!("{target_name}-primary")).await?;
            let pending = primary.is_some() && images(target.as_ref()) != images(primary.as_ref());
            let phase = canary.status.as_ref().and_then(|s| s.phase);
            if let Some(outcome) = settled(phase, pending) {
                return Ok::<_, anyhow::Error>((outcome, format!("{name}: {phase:?}")));
            }
        }
        anyhow::bail!("the watch of {name} ended")
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(result) => result,
        Err(_) => {
            let phase = api
                .get_opt(name)
                .await?
                .and_then(|c| c.status)
                .and_then(|s| s.phase);
            Ok((
                Outcome::TimedOut,
                format!("{name}: still {phase:?} after {timeout:?}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_settled_phase_ends_the_wait_unless_the_target_runs_images_not_rolled_out_yet() {
        assert_eq!(settled(Some(Phase::Succeeded), false), Some(Outcome::Succeeded));
        assert_eq!(settled(Some(Phase::Initialized), false), Some(Outcome::Succeeded));
        assert_eq!(
            settled(Some(Phase::Succeeded), true),
            None,
            "set image, not seen yet"
        );
        assert_eq!(settled(Some(Phase::Failed), true), Some(Outcome::Failed));
        assert_eq!(settled(Some(Phase::Progressing), false), None);
        assert_eq!(settled(None, false), None);
    }
}
