//! fledge's own Prometheus series. Labels are bounded: canary names and namespaces (as many as there are
//! Canaries, as in Flagger), metric names from the specs, and fixed sets of worlds and error categories.

use std::time::Duration;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::api::Phase;

/// Every series fledge exports, registered in one registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    canaries: IntGaugeVec,
    status: IntGaugeVec,
    weight: IntGaugeVec,
    rollout_duration: HistogramVec,
    analysis_value: GaugeVec,
    analysis_duration: HistogramVec,
    query_duration: HistogramVec,
    policy_latency: HistogramVec,
    policy_errors: IntCounterVec,
    reconcile_errors: IntCounterVec,
    api_requests: IntCounterVec,
    api_latency: HistogramVec,
    reconcile_duration: HistogramVec,
    reconcile_queue: HistogramVec,
    tick_lateness: HistogramVec,
    policy_ready: IntGaugeVec,
}

/// Registering a fresh, uniquely named series in a fresh registry cannot fail.
fn registered<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry.register(Box::new(c.clone())).expect("unique series");
    c
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let info = registered(
            &registry,
            IntGaugeVec::new(Opts::new("fledge_info", "fledge's version"), &["version"]).expect("info"),
        );
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let seconds = |name: &str, help: &str, buckets: Vec<f64>, labels: &[&str]| {
            registered(
                &registry,
                HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
                    .expect("histogram"),
            )
        };
        Self {
            canaries: registered(
                &registry,
                IntGaugeVec::new(
                    Opts::new("fledge_canary_total", "Canaries fledge manages, by namespace"),
                    &["namespace"],
                )
                .expect("total"),
            ),
            status: registered(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "fledge_canary_status",
                        "Canary status as Flagger reports it: 0 in progress, 1 succeeded or idle, 2 failed",
                    ),
                    &["name", "namespace"],
                )
                .expect("status"),
            ),
            weight: registered(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "fledge_canary_weight",
                        "Traffic weight routed to a workload (primary: <target>-primary, canary: <target>)",
                    ),
                    &["workload", "namespace"],
                )
                .expect("weight"),
            ),
            rollout_duration: seconds(
                "fledge_canary_rollout_duration_seconds",
                "Time from a new revision to its promotion or rollback",
                vec![30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0],
                &["result"],
            ),
            analysis_value: registered(
                &registry,
                GaugeVec::new(
                    Opts::new(
                        "fledge_canary_metric_analysis",
                        "Last value of each analysis metric",
                    ),
                    &["name", "namespace", "metric"],
                )
                .expect("analysis"),
            ),
            analysis_duration: seconds(
                "fledge_analysis_duration_seconds",
                "Time one analysis took: webhooks, queries and the policy",
                prometheus::exponential_buckets(0.001, 2.0, 16).expect("buckets"),
                &[],
            ),
            query_duration: seconds(
                "fledge_metric_query_duration_seconds",
                "Time one metric check's query took",
                prometheus::exponential_buckets(0.0005, 2.0, 16).expect("buckets"),
                &[],
            ),
            policy_latency: seconds(
                "fledge_policy_call_duration_seconds",
                "Time one policy component call took, by world",
                prometheus::exponential_buckets(0.00001, 2.5, 16).expect("buckets"),
                &["world"],
            ),
            policy_errors: registered(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "fledge_policy_errors_total",
                        "Failed policy calls by world and category",
                    ),
                    &["world", "category"],
                )
                .expect("policy errors"),
            ),
            reconcile_errors: registered(
                &registry,
                IntCounterVec::new(
                    Opts::new("fledge_reconcile_errors_total", "Failed reconciles by category"),
                    &["category"],
                )
                .expect("reconcile errors"),
            ),
            api_requests: registered(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "fledge_kube_requests_total",
                        "Requests fledge sent to the Kubernetes API, by verb and resource",
                    ),
                    &["verb", "resource"],
                )
                .expect("api requests"),
            ),
            api_latency: seconds(
                "fledge_kube_request_duration_seconds",
                "Time the Kubernetes API took to answer one of fledge's requests (watches excluded), by verb",
                prometheus::exponential_buckets(0.001, 2.0, 16).expect("buckets"),
                &["verb"],
            ),
            reconcile_duration: seconds(
                "fledge_reconcile_duration_seconds",
                "Time one reconcile of a Canary took",
                prometheus::exponential_buckets(0.0005, 2.0, 18).expect("buckets"),
                &[],
            ),
            reconcile_queue: seconds(
                "fledge_reconcile_queue_seconds",
                "Time a reconcile waited for one of the --concurrency slots before it started: when this \
                 grows, canaries wait for the controller, not for the API",
                prometheus::exponential_buckets(0.0005, 2.0, 18).expect("buckets"),
                &[],
            ),
            tick_lateness: seconds(
                "fledge_tick_lateness_seconds",
                "How long after its analysis interval was up a progressing canary's tick ran: time spent \
                 waiting for the controller (its queue, the API), not for the canary",
                prometheus::exponential_buckets(0.01, 2.0, 16).expect("buckets"),
                &[],
            ),
            policy_ready: registered(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "fledge_policy_ready",
                        "Whether a Policy or ClusterPolicy is loaded and can judge (1) or not (0)",
                    ),
                    &["kind", "namespace", "name"],
                )
                .expect("policy ready"),
            ),
            registry,
        }
    }

    /// The exposition text for `/metrics`.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }

    /// Records a canary's state after a reconcile.
    pub fn canary(
        &self,
        name: &str,
        namespace: &str,
        target: &str,
        phase: Option<Phase>,
        canary_weight: u32,
    ) {
        let status = match phase {
            Some(Phase::Progressing | Phase::WaitingPromotion | Phase::Promoting | Phase::Finalising) => 0,
            Some(Phase::Failed) => 2,
            _ => 1,
        };
        self.status.with_label_values(&[name, namespace]).set(status);
        let canary = i64::from(canary_weight.min(100));
        let primary = format!("{target}-primary");
        self.weight
            .with_label_values(&[primary.as_str(), namespace])
            .set(100 - canary);
        self.weight.with_label_values(&[target, namespace]).set(canary);
    }

    /// Sets the number of canaries in `namespace`.
    pub fn canaries_in(&self, namespace: &str, count: usize) {
        self.canaries
            .with_label_values(&[namespace])
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Forgets a deleted canary's series.
    pub fn forget(&self, name: &str, namespace: &str, target: &str) {
        let _ = self.status.remove_label_values(&[name, namespace]);
        let primary = format!("{target}-primary");
        let _ = self.weight.remove_label_values(&[primary.as_str(), namespace]);
        let _ = self.weight.remove_label_values(&[target, namespace]);
    }

    pub fn rollout_finished(&self, succeeded: bool, took: Duration) {
        let result = if succeeded { "succeeded" } else { "failed" };
        self.rollout_duration
            .with_label_values(&[result])
            .observe(took.as_secs_f64());
    }

    pub fn analysis(&self, took: Duration) {
        self.analysis_duration
            .with_label_values(&[] as &[&str])
            .observe(took.as_secs_f64());
    }

    pub fn analysis_value(&self, name: &str, namespace: &str, metric: &str, value: Option<f64>) {
        let gauge = self.analysis_value.with_label_values(&[name, namespace, metric]);
        gauge.set(value.unwrap_or(f64::NAN));
    }

    pub fn query(&self, took: Duration) {
        self.query_duration
            .with_label_values(&[] as &[&str])
            .observe(took.as_secs_f64());
    }

    pub fn policy_call(&self, world: &'static str, took: Duration, error: Option<&'static str>) {
        self.policy_latency
            .with_label_values(&[world])
            .observe(took.as_secs_f64());
        if let Some(category) = error {
            self.policy_errors.with_label_values(&[world, category]).inc();
        }
    }

    /// A policy resource's readiness; `namespace` is empty for a ClusterPolicy.
    pub fn policy_ready(&self, kind: &'static str, namespace: &str, name: &str, ready: bool) {
        self.policy_ready
            .with_label_values(&[kind, namespace, name])
            .set(i64::from(ready));
    }

    /// Drops a deleted policy resource's series.
    pub fn forget_policy(&self, kind: &'static str, namespace: &str, name: &str) {
        let _ = self.policy_ready.remove_label_values(&[kind, namespace, name]);
    }

    pub fn api_request(&self, verb: &'static str, resource: &str) {
        self.api_requests.with_label_values(&[verb, resource]).inc();
    }

    /// One answered request; `verb` as in [`Metrics::api_request`].
    pub fn api_latency(&self, verb: &'static str, took: Duration) {
        self.api_latency
            .with_label_values(&[verb])
            .observe(took.as_secs_f64());
    }

    pub fn reconcile_took(&self, took: Duration) {
        self.reconcile_duration
            .with_label_values(&[] as &[&str])
            .observe(took.as_secs_f64());
    }

    /// A reconcile waited `waited` for its slot.
    pub fn reconcile_waited(&self, waited: Duration) {
        self.reconcile_queue
            .with_label_values(&[] as &[&str])
            .observe(waited.as_secs_f64());
    }

    /// A paced tick ran `late` after its interval was up.
    pub fn tick_late(&self, late: Duration) {
        self.tick_lateness
            .with_label_values(&[] as &[&str])
            .observe(late.as_secs_f64());
    }

    pub fn reconcile_error(&self, category: &'static str) {
        self.reconcile_errors.with_label_values(&[category]).inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_readiness_is_exported_per_policy_and_forgotten_with_it() {
        let m = Metrics::new();
        m.policy_ready("Policy", "test", "judge", false);
        assert!(
            m.render()
                .contains(r#"fledge_policy_ready{kind="Policy",name="judge",namespace="test"} 0"#)
        );
        m.policy_ready("Policy", "test", "judge", true);
        assert!(m.render().contains(r#"name="judge",namespace="test"} 1"#));
        m.forget_policy("Policy", "test", "judge");
        assert!(!m.render().contains("fledge_policy_ready{"));
    }

    #[test]
    fn api_latency_reconcile_time_queue_wait_and_tick_lateness_are_exported() {
        let m = Metrics::new();
        m.api_latency("patch", Duration::from_millis(3));
        m.reconcile_took(Duration::from_millis(12));
        m.reconcile_waited(Duration::from_millis(3));
        m.tick_late(Duration::from_millis(150));
        let text = m.render();
        for series in [
            r#"fledge_kube_request_duration_seconds_bucket{verb="patch",le="0.004"} 1"#,
            r#"fledge_kube_request_duration_seconds_bucket{verb="patch",le="0.002"} 0"#,
            "fledge_reconcile_duration_seconds_count 1",
            r#"fledge_reconcile_queue_seconds_bucket{le="0.004"} 1"#,
            r#"fledge_reconcile_queue_seconds_bucket{le="0.002"} 0"#,
            r#"fledge_tick_lateness_seconds_bucket{le="0.16"} 1"#,
            r#"fledge_tick_lateness_seconds_bucket{le="0.08"} 0"#,
        ] {
            assert!(text.contains(series), "{series}\n{text}");
        }
    }

    #[test]
    fn weights_are_exported_per_workload_and_forgotten_with_the_canary() {
        let m = Metrics::new();
        m.canary("podinfo", "test", "podinfo", Some(Phase::Progressing), 20);
        let text = m.render();
        assert!(
            text.contains(r#"fledge_canary_weight{namespace="test",workload="podinfo"} 20"#),
            "{text}"
        );
        assert!(text.contains(r#"fledge_canary_weight{namespace="test",workload="podinfo-primary"} 80"#));
        assert!(text.contains(r#"fledge_canary_status{name="podinfo",namespace="test"} 0"#));
        m.forget("podinfo", "test", "podinfo");
        assert!(!m.render().contains("workload=\"podinfo\""));
    }

    #[test]
    fn policy_latency_and_errors_are_counted_by_world_and_category() {
        let m = Metrics::new();
        m.policy_call("step", Duration::from_micros(40), None);
        m.policy_call("analysis", Duration::from_millis(1), Some("timeout"));
        let text = m.render();
        assert!(
            text.contains(r#"fledge_policy_call_duration_seconds_count{world="step"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"fledge_policy_errors_total{category="timeout",world="analysis"} 1"#));
        assert!(text.contains(r#"fledge_info{version=""#));
    }
}
