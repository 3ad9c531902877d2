//! `fledge lint <file.yaml>`: checks Canaries offline as the cluster and the controller would — the CRD's
//! schema as `kubectl apply --validate=strict` applies it (unknown fields, types, required fields, bounds,
//! enums), then the controller's own rules (`api::problems`, every one broken) — and names every problem by
//! its field path.
//! Pure: text in, problems out.

use serde::Deserialize;
use serde_json::Value;

use crate::api::{Canary, CanarySpec, SpecError, problems};

/// One thing wrong with a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The document's position in the file (1-based) and the Canary's name, when it has one.
    pub document: usize,
    pub name: Option<String>,
    /// `spec.analysis.stepWeight`.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.name.as_deref().unwrap_or("?");
        write!(
            f,
            "document {} (Canary {name}): {}: {}",
            self.document, self.path, self.message
        )
    }
}

/// What linting a file found: its problems, and how many Canaries it checked.
#[derive(Debug, Default)]
pub struct Report {
    pub canaries: usize,
    pub problems: Vec<Problem>,
}

/// Lints every Canary of a multi-document YAML text (`apiVersion: fledge.dev/...`, `kind: Canary`); other
/// documents are left alone. Text that is not YAML is an error.
pub fn lint(text: &str) -> Result<Report, String> {
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(Canary::crd()).map_err(|e| e.to_string())?;
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut report = Report::default();
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let number = i + 1;
        let value = Value::deserialize(document).map_err(|e| format!("document {number}: not YAML: {e}"))?;
        let api_version = value["apiVersion"].as_str().unwrap_or_default();
        let flagger = api_version.starts_with("flagger.app/");
        if value["kind"] != "Canary" || !(flagger || api_version.starts_with("fledge.dev/")) {
            continue;
        }
        report.canaries += 1;
        let name = value["metadata"]["name"].as_str().map(str::to_owned);
        let mut found = Vec::new();
        if flagger {
            found.push((
                "apiVersion".to_owned(),
                format!("{api_version} is Flagger's: change it to fledge.dev/v1alpha1 (nothing else needs to change)"),
            ));
        }
        let spec = &value["spec"];
        if spec.is_null() {
            found.push(("spec".to_owned(), "required".to_owned()));
        } else {
            check(&schema["properties"]["spec"], spec, "spec", &mut found);
        }
        // The controller's own rules, once the schema holds (its types are what they read).
        if found.iter().all(|(path, _)| path == "apiVersion") {
            match serde_json::from_value::<CanarySpec>(spec.clone()) {
                Err(e) => found.push(("spec".to_owned(), e.to_string())),
                Ok(parsed) => found.extend(problems(&parsed).iter().map(|e| (field_of(e), e.to_string()))),
            }
        }
        report
            .problems
            .extend(found.into_iter().map(|(path, message)| Problem {
                document: number,
                name: name.clone(),
                path,
                message,
            }));
    }
    Ok(report)
}

/// The field a controller rule is about.
fn field_of(e: &SpecError) -> String {
    let field = match e {
        SpecError::UnsupportedTarget(_) => "targetRef.kind".to_owned(),
        SpecError::UnsupportedProvider(_) => "provider".to_owned(),
        SpecError::BadInterval(_) => "analysis.interval".to_owned(),
        SpecError::WeightOutOfRange { field, .. }
        | SpecError::Negative { field, .. }
        | SpecError::NameTooLong { field, .. } => (*field).to_owned(),
        SpecError::StepWeightZero => "analysis.stepWeight".to_owned(),
        SpecError::StepWeightsNotIncreasing(_) => "analysis.stepWeights".to_owned(),
        SpecError::BadMetric { name, .. } => format!("analysis.metrics[name={name}]"),
        SpecError::BadWebhook { name, .. } => format!("analysis.webhooks[name={name}]"),
        SpecError::BadPolicy(_) => "analysis.policy".to_owned(),
    };
    format!("spec.{field}")
}

/// Checks `value` against the structural schema `schema` at `path`, adding what the API server would refuse.
fn check(schema: &Value, value: &Value, path: &str, found: &mut Vec<(String, String)>) {
    let mut refuse = |message: String| found.push((path.to_owned(), message));
    if schema["x-kubernetes-int-or-string"] == true {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            refuse(format!("must be an integer or a string, got {}", kind_of(value)));
        }
        return;
    }
    let expected = schema["type"].as_str();
    let fits = match expected {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    let null_allowed = value.is_null() && schema["nullable"] == true;
    if !(fits || null_allowed) {
        refuse(format!(
            "must be {}, got {}",
            expected.unwrap_or("?"),
            kind_of(value)
        ));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        refuse(format!("must be one of {}", Value::Array(allowed.clone())));
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema["minimum"].as_f64().filter(|m| n < *m) {
            refuse(format!("must be at least {min}, got {n}"));
        }
        if let Some(max) = schema["maximum"].as_f64().filter(|m| n > *m) {
            refuse(format!("must be at most {max}, got {n}"));
        }
    }
    if let Some(text) = value.as_str()
        && let Some(min) = schema["minLength"].as_u64()
        && (text.chars().count() as u64) < min
    {
        refuse(format!("must be at least {min} characters"));
    }
    if schema["x-kubernetes-preserve-unknown-fields"] == true {
        return;
    }
    match value {
        Value::Object(fields) => {
            for required in schema["required"].as_array().into_iter().flatten() {
                if let Some(key) = required.as_str()
                    && !fields.contains_key(key)
                {
                    found.push((format!("{path}.{key}"), "required".to_owned()));
                }
            }
            let properties = schema["properties"].as_object();
            for (key, child) in fields {
                let at = format!("{path}.{key}");
                match properties.and_then(|p| p.get(key)) {
                    Some(child_schema) => check(child_schema, child, &at, found),
                    None if schema["additionalProperties"].is_object() => {
                        check(&schema["additionalProperties"], child, &at, found);
                    }
                    None => found.push((at, "unknown field".to_owned())),
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check(&schema["items"], item, &format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r"
apiVersion: apps/v1
kind: Deployment
metadata: {name: podinfo}
---
apiVersion: fledge.dev/v1alpha1
kind: Canary
metadata: {name: podinfo}
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  service: {port: 9898}
  analysis: {interval: 1m, stepWeight: 20, maxWeight: 60}
";

    #[test]
    fn a_valid_canary_has_no_problem_and_other_kinds_are_left_alone() {
        let report = lint(GOOD).expect("yaml");
        assert_eq!((report.canaries, report.problems), (1, Vec::new()));
    }

    #[test]
    fn every_schema_problem_is_named_by_its_field_path() {
        let bad = GOOD
            .replace("service: {port: 9898}", "service: {port: \"9898\", hostz: [a]}")
            .replace("stepWeight: 20", "stepWeight: 120, mirror: yes-please");
        let report = lint(&bad).expect("yaml");
        let paths: Vec<(&str, &str)> = report
            .problems
            .iter()
            .map(|p| (p.path.as_str(), p.message.as_str()))
            .collect();
        assert!(
            paths.contains(&("spec.service.port", "must be integer, got a string")),
            "{paths:?}"
        );
        assert!(
            paths.contains(&("spec.service.hostz", "unknown field")),
            "{paths:?}"
        );
        assert!(
            paths.contains(&("spec.analysis.stepWeight", "must be at most 100, got 120")),
            "{paths:?}"
        );
        assert!(
            paths.contains(&("spec.analysis.mirror", "must be boolean, got a string")),
            "{paths:?}"
        );
        assert!(
            report
                .problems
                .iter()
                .all(|p| p.name.as_deref() == Some("podinfo") && p.document == 2)
        );
    }

    #[test]
    fn the_controllers_own_rules_come_after_the_schema_with_their_field() {
        let bad = GOOD.replace("provider: x", "").replace(
            "service: {port: 9898}",
            "provider: nginx\n  service: {port: 9898}",
        );
        let report = lint(&bad).expect("yaml");
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert_eq!(report.problems[0].path, "spec.provider");
        assert!(
            report.problems[0]
                .message
                .contains("provider nginx is not supported")
        );
        let missing = GOOD.replace(
            "  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}\n",
            "",
        );
        let report = lint(&missing).expect("yaml");
        assert_eq!(report.problems[0].path, "spec.targetRef");
        assert_eq!(report.problems[0].message, "required");
    }

    #[test]
    fn every_broken_controller_rule_is_named_not_only_the_first() {
        let bad = GOOD
            .replace(
                "service: {port: 9898}",
                "provider: nginx\n  service: {port: 9898}",
            )
            .replace(
                "interval: 1m, stepWeight: 20",
                "interval: ten seconds, stepWeights: [40, 20], policy: {component: /etc/passwd}",
            );
        let report = lint(&bad).expect("yaml");
        let paths: Vec<&str> = report.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.provider",
                "spec.analysis.stepWeights",
                "spec.analysis.interval",
                "spec.analysis.policy"
            ],
            "{:#?}",
            report.problems
        );
    }

    #[test]
    fn a_flagger_canary_is_linted_and_told_to_change_only_its_api_version() {
        let flagger = GOOD.replace("fledge.dev/v1alpha1", "flagger.app/v1beta1");
        let report = lint(&flagger).expect("yaml");
        assert_eq!(report.canaries, 1);
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert_eq!(report.problems[0].path, "apiVersion");
    }

    #[test]
    fn text_that_is_not_yaml_is_an_error() {
        assert!(lint("a: [unclosed").is_err());
    }
}
