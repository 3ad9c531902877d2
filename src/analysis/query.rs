//! PURE: the PromQL a metric check runs — Flagger's built-in Istio queries and MetricTemplate rendering.

use std::collections::BTreeMap;

use thiserror::Error;

/// What a query template may refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vars<'a> {
    /// The Canary's name.
    pub name: &'a str,
    pub namespace: &'a str,
    /// The target Deployment (the canary workload).
    pub target: &'a str,
    /// The apex Service.
    pub service: &'a str,
    /// The metric's range (`1m`).
    pub interval: &'a str,
    pub variables: &'a BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TemplateError {
    #[error(
        "unknown template variable {0:?} (known: name, namespace, target, service, interval, variables.<key>)"
    )]
    Unknown(String),
    #[error("unclosed {{{{ in query template")]
    Unclosed,
}

const SUCCESS_RATE: &str = r#"sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}",response_code!~"5.*"}[{{ interval }}])) / sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}"}[{{ interval }}])) * 100"#;

const DURATION: &str = r#"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}"}[{{ interval }}])) by (le))"#;

/// Istio's request success rate of the canary workload, in percent (Flagger's `request-success-rate`).
pub fn success_rate(vars: &Vars<'_>) -> String {
    render(SUCCESS_RATE, vars).unwrap_or_default()
}

/// Istio's p99 request duration of the canary workload, in milliseconds (Flagger's `request-duration`).
pub fn duration(vars: &Vars<'_>) -> String {
    render(DURATION, vars).unwrap_or_default()
}

/// Replaces every `{{ var }}` in `template`.
pub fn render(template: &str, vars: &Vars<'_>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or(TemplateError::Unclosed)?;
        let key = after[..close].trim();
        out.push_str(lookup(key, vars).ok_or_else(|| TemplateError::Unknown(key.to_owned()))?);
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn lookup<'a>(key: &str, vars: &'a Vars<'_>) -> Option<&'a str> {
    // Flagger's templates also accept the Go-template spelling with a leading dot.
    let key = key.strip_prefix('.').unwrap_or(key);
    match key {
        "name" => Some(vars.name),
        "namespace" => Some(vars.namespace),
        "target" => Some(vars.target),
        "service" => Some(vars.service),
        "interval" => Some(vars.interval),
        _ => vars
            .variables
            .get(key.strip_prefix("variables.")?)
            .map(String::as_str),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(variables: &BTreeMap<String, String>) -> Vars<'_> {
        Vars {
            name: "podinfo",
            namespace: "test",
            target: "podinfo",
            service: "podinfo",
            interval: "1m",
            variables,
        }
    }

    #[test]
    fn the_builtin_success_rate_is_istios_query_for_the_canary_workload() {
        let none = BTreeMap::new();
        assert_eq!(
            success_rate(&vars(&none)),
            r#"sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="test",destination_workload=~"podinfo",response_code!~"5.*"}[1m])) / sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="test",destination_workload=~"podinfo"}[1m])) * 100"#
        );
        assert_eq!(
            duration(&vars(&none)),
            r#"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter="destination",destination_workload_namespace="test",destination_workload=~"podinfo"}[1m])) by (le))"#
        );
    }

    #[test]
    fn templates_see_the_canary_and_its_variables() {
        let variables = BTreeMap::from([("quantile".to_owned(), "0.5".to_owned())]);
        let q = render(
            "histogram_quantile({{ variables.quantile }}, x{ns=\"{{namespace}}\",svc=\"{{ .service }}\"}[{{ interval }}])",
            &vars(&variables),
        );
        assert_eq!(
            q.as_deref(),
            Ok("histogram_quantile(0.5, x{ns=\"test\",svc=\"podinfo\"}[1m])")
        );
    }

    #[test]
    fn unknown_variables_and_unclosed_braces_are_errors() {
        let none = BTreeMap::new();
        assert_eq!(
            render("{{ variables.nope }}", &vars(&none)),
            Err(TemplateError::Unknown("variables.nope".into()))
        );
        assert_eq!(render("up{{ name", &vars(&none)), Err(TemplateError::Unclosed));
    }
}
