//! Applies lifecycle actions to the cluster. Every write is a server-side apply under fledge's field
//! manager (or a scale patch for the user's own target), so repeating an action changes nothing.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use super::hpa::primary_hpa;
use super::index::Index;
use super::observe::Snapshot;
use super::services::{Role, discovered_ports, service};
use super::workload::primary_deployment;
use super::{ClusterError, FIELD_MANAGER, owned_by, primary_name};
use crate::api::{CanaryService, ValidSpec};
use crate::lifecycle::{Action, Split};
use crate::router::affinity::Sticky;
use crate::router::istio::{IstioRouter, destination_rule, virtual_service};

/// Everything needed to act for one canary in one tick.
pub struct Actor<'a> {
    pub client: &'a Client,
    pub namespace: &'a str,
    pub spec: &'a ValidSpec,
    pub service: &'a CanaryService,
    pub snapshot: &'a Snapshot,
    /// The watches' cache: what is already as desired is not written again...
    pub index: &'a Index,
    /// ...unless this tick is the periodic resync: it compares with the objects read from the API instead.
    pub resync: bool,
    pub owner: OwnerReference,
    /// `spec.autoscalerRef.name`: the target's HPA, copied for the primary.
    pub autoscaler: Option<&'a str>,
    /// `spec.analysis.match`: A/B testing routes.
    pub analysis_match: Option<&'a Vec<serde_json::Value>>,
    /// Session affinity: the cookie routes, when the Canary asks for them.
    pub sticky: Option<Sticky<'a>>,
}

impl std::fmt::Debug for Actor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actor")
            .field("namespace", &self.namespace)
            .field("target", &self.spec.target)
            .finish()
    }
}

impl Actor<'_> {
    fn apply_params() -> PatchParams {
        PatchParams::apply(FIELD_MANAGER).force()
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), self.namespace)
    }

    /// Applies one action; events are the controller's to record.
    pub async fn apply(&self, action: &Action) -> Result<(), ClusterError> {
        match action {
            Action::EnsurePrimary => {
                if self.snapshot.observed.primary.is_none() {
                    self.write_primary(None).await?;
                } else {
                    // The target's HPA may have been edited since: its copy follows (from the cache, so an
                    // unchanged one costs no request), as Flagger keeps the primary's in sync.
                    self.copy_autoscaler().await?;
                }
            }
            Action::PromotePrimary => {
                let replicas = self.snapshot.observed.primary.map(|p| p.replicas);
                self.write_primary(replicas).await?;
            }
            Action::EnsureServices => self.write_services().await?,
            Action::Route(split) => self.route(*split).await?,
            Action::ScaleTarget { replicas } => {
                // A target that is gone has nothing to scale.
                let current = self.snapshot.observed.target.map(|t| t.replicas);
                if current.is_some_and(|c| c != *replicas) {
                    let patch = serde_json::json!({"spec": {"replicas": replicas}});
                    self.deployments()
                        .patch_scale(&self.spec.target, &PatchParams::default(), &Patch::Merge(&patch))
                        .await?;
                }
            }
            Action::ScalePrimary { replicas } => {
                let current = self.snapshot.observed.primary.map(|p| p.replicas);
                if current.is_some_and(|c| c != *replicas) {
                    let patch = serde_json::json!({"spec": {"replicas": replicas}});
                    self.deployments()
                        .patch_scale(
                            &super::primary_name(&self.spec.target),
                            &PatchParams::default(),
                            &Patch::Merge(&patch),
                        )
                        .await?;
                }
            }
            Action::Event { .. } => {}
        }
        Ok(())
    }

    /// Copies tracked configs to `-primary` and applies the primary from the target's template.
    /// `replicas`: keep the primary's (promotion), or take the target's (creation).
    async fn write_primary(&self, replicas: Option<i32>) -> Result<(), ClusterError> {
        let (Some(target), Some(label)) = (&self.snapshot.target, &self.snapshot.label) else {
            return Ok(());
        };
        self.copy_configs().await?;
        let target_replicas = target
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .filter(|r| *r > 0)
            .unwrap_or(1);
        let primary = primary_deployment(
            target,
            label,
            &self.snapshot.tracked,
            replicas.unwrap_or(target_replicas),
            self.owner.clone(),
        )?;
        self.deployments()
            .patch(
                &primary_name(&self.spec.target),
                &Self::apply_params(),
                &Patch::Apply(&primary),
            )
            .await?;
        self.copy_autoscaler().await
    }

    /// Applies `<hpa>-primary` for the primary when the Canary names an autoscaler that exists, unless the
    /// cached copy already is as desired.
    async fn copy_autoscaler(&self) -> Result<(), ClusterError> {
        let Some(name) = self.autoscaler else {
            return Ok(());
        };
        let Some(hpa) = self.index.autoscaler(self.namespace, name) else {
            return Ok(());
        };
        let copy = primary_hpa(&hpa, &self.spec.target, self.owner.clone());
        let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(self.client.clone(), self.namespace);
        let copy_name = primary_name(name);
        let live = self.index.autoscaler(self.namespace, &copy_name);
        self.apply_changed(&hpas, "horizontalpodautoscaler", &copy_name, &copy, live)
            .await
    }

    async fn copy_configs(&self) -> Result<(), ClusterError> {
        let config_maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), self.namespace);
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), self.namespace);
        for tracked in &self.snapshot.tracked {
            match tracked.split_once('/') {
                Some(("configmap", name)) => {
                    if let Some(cm) = config_maps.get_opt(name).await? {
                        let copy = ConfigMap {
                            metadata: self.copy_meta(name),
                            data: cm.data,
                            binary_data: cm.binary_data,
                            immutable: None,
                        };
                        config_maps
                            .patch(
                                &format!("{name}-primary"),
                                &Self::apply_params(),
                                &Patch::Apply(&copy),
                            )
                            .await?;
                    }
                }
                Some(("secret", name)) => {
                    if let Some(s) = secrets.get_opt(name).await? {
                        let copy = Secret {
                            metadata: self.copy_meta(name),
                            data: s.data,
                            type_: s.type_,
                            ..Default::default()
                        };
                        secrets
                            .patch(
                                &format!("{name}-primary"),
                                &Self::apply_params(),
                                &Patch::Apply(&copy),
                            )
                            .await?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn copy_meta(&self, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(format!("{name}-primary")),
            labels: Some(super::ownership_labels(&self.owner).into()),
            owner_references: Some(vec![self.owner.clone()]),
            ..Default::default()
        }
    }

    async fn write_services(&self) -> Result<(), ClusterError> {
        let Some(label) = &self.snapshot.label else {
            return Ok(());
        };
        let services: Api<Service> = Api::namespaced(self.client.clone(), self.namespace);
        let extra = self
            .snapshot
            .target
            .as_ref()
            .map(|t| discovered_ports(t, self.spec, self.service))
            .unwrap_or_default();
        for role in [Role::Primary, Role::Canary, Role::Apex] {
            let name = role.name(&self.spec.service);
            let live = self.index.service(self.namespace, &name);
            let svc = service(
                role,
                self.spec,
                self.service,
                label,
                &self.owner,
                live.as_ref(),
                &extra,
            );
            // A user's ports are swapped for the Canary's first: applied beside them, a port of the same name
            // and another number would make the Service invalid.
            if let Some(found) = live
                .as_ref()
                .filter(|s| role == Role::Apex && !owned_by(&s.metadata, &self.owner))
            {
                self.replace_apex_ports(&services, found, &svc).await?;
            }
            self.apply_changed(&services, "service", &name, &svc, live.as_ref())
                .await?;
        }
        Ok(())
    }

    /// The user's apex Service gets exactly the Canary's ports, as Flagger gives it: a server-side apply only
    /// adds fledge's beside the ports another manager wrote, so those are replaced by a merge patch (which
    /// swaps the whole list) when they differ. A NodePort keeps its node port by port name.
    async fn replace_apex_ports(
        &self,
        services: &Api<Service>,
        found: &Service,
        desired: &Service,
    ) -> Result<(), ClusterError> {
        let ports_of = |s: &Service| s.spec.as_ref().and_then(|s| s.ports.clone()).unwrap_or_default();
        let (live, mut wanted) = (ports_of(found), ports_of(desired));
        let key =
            |p: &k8s_openapi::api::core::v1::ServicePort| (p.name.clone(), p.port, p.target_port.clone());
        let same = live.len() == wanted.len() && live.iter().zip(&wanted).all(|(l, w)| key(l) == key(w));
        if same {
            return Ok(());
        }
        for port in &mut wanted {
            port.node_port = live
                .iter()
                .find(|l| l.name == port.name)
                .and_then(|l| l.node_port);
        }
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let patch = serde_json::json!({"spec": {"ports": wanted}});
        services
            .patch(&self.spec.service, &params, &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    /// Applies both DestinationRules, then the VirtualService with `split` (a user's one is remembered in it,
    /// never owned).
    async fn route(&self, split: Split) -> Result<(), ClusterError> {
        let router = IstioRouter::new(self.client.clone(), self.namespace);
        for host in [
            format!("{}-primary", self.spec.service),
            format!("{}-canary", self.spec.service),
        ] {
            let rule = destination_rule(&host, self.service, &self.owner);
            let live = self.index.destination_rule(self.namespace, &host);
            self.apply_changed(router.destination_rules(), "destinationrule", &host, &rule, live)
                .await?;
        }
        let vs = virtual_service(
            self.spec,
            self.service,
            self.analysis_match,
            split,
            &self.owner,
            self.snapshot.virtual_service.as_ref(),
            self.sticky,
        );
        let live = self.index.virtual_service(self.namespace, &self.spec.service);
        self.apply_changed(
            router.virtual_services(),
            "virtualservice",
            &self.spec.service,
            &vs,
            live,
        )
        .await
    }

    /// Server-side applies `body` as `name`, unless the cached `live` object already holds all of it and
    /// fledge's last apply there was this same body: an unchanged tick writes nothing. The resync does not
    /// trust the cache (a watch event may have been missed): it reads the object from the API and writes
    /// only what drifted — a read costs the API server a fraction of an apply.
    async fn apply_changed<K, B>(
        &self,
        api: &Api<K>,
        kind: &str,
        name: &str,
        body: &B,
        live: Option<impl serde::Serialize>,
    ) -> Result<(), ClusterError>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
        B: serde::Serialize,
    {
        let encode = |source| ClusterError::Encode {
            what: "an object to apply",
            source,
        };
        let desired = serde_json::to_value(body).map_err(encode)?;
        let live = if self.resync {
            api.get_opt(name).await?.map(serde_json::to_value)
        } else {
            live.map(serde_json::to_value)
        };
        let live = live.transpose().map_err(encode)?;
        let key = format!("{kind}/{}/{name}", self.namespace);
        if !self.index.needs_apply(&key, &desired, live.as_ref()) {
            return Ok(());
        }
        api.patch(name, &Self::apply_params(), &Patch::Apply(&desired))
            .await?;
        self.index.applied(&key, &desired);
        Ok(())
    }
}
