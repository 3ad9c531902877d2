//! The pure part: the query, the config, and the comparison.

use serde::Deserialize;

use crate::fledge::policy::types::{MetricCheck, MetricVerdict, Verdict};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Percentage points the canary's error rate may exceed the primary's.
    #[serde(default = "default_margin")]
    pub margin: f64,
    /// PromQL range of the rate.
    #[serde(default = "default_window")]
    pub window: String,
    #[serde(default)]
    pub target: Option<String>,
}

fn default_margin() -> f64 {
    1.0
}

fn default_window() -> String {
    "30s".into()
}

impl Config {
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Self = serde_json::from_str(text).map_err(|e| format!("config: {e}"))?;
        if config.margin.is_nan() || config.margin < 0.0 {
            return Err(format!("config: margin must be >= 0, got {}", config.margin));
        }
        Ok(config)
    }
}

/// 5xx share of `workload`'s requests, in percent, as Istio reports it.
pub fn error_rate_query(namespace: &str, workload: &str, window: &str) -> String {
    let sel = format!(
        r#"reporter="destination",destination_workload_namespace="{namespace}",destination_workload="{workload}""#
    );
    format!(
        r#"sum(rate(istio_requests_total{{{sel},response_code=~"5.*"}}[{window}])) / sum(rate(istio_requests_total{{{sel}}}[{window}])) * 100"#
    )
}

/// Canary vs primary error rate.
pub fn relative(
    config: &Config,
    canary: Result<Option<f64>, String>,
    primary: Result<Option<f64>, String>,
) -> MetricVerdict {
    let verdict = |verdict, message| MetricVerdict {
        name: "relative-error-rate".into(),
        verdict,
        message,
    };
    match (canary, primary) {
        (Err(e), _) | (_, Err(e)) => verdict(Verdict::Fail, format!("error rate query failed: {e}")),
        (Ok(None), _) => verdict(
            Verdict::Fail,
            "no values found for the canary's error rate: is it receiving traffic?".into(),
        ),
        // Without primary traffic there is nothing to compare with.
        (Ok(Some(_)), Ok(None)) => verdict(
            Verdict::Inconclusive,
            "no values found for the primary's error rate".into(),
        ),
        (Ok(Some(c)), Ok(Some(p))) if c - p > config.margin => verdict(
            Verdict::Fail,
            format!(
                "canary error rate {c:.2}% exceeds primary's {p:.2}% by more than {}pp",
                config.margin
            ),
        ),
        (Ok(Some(c)), Ok(Some(p))) => verdict(
            Verdict::Pass,
            format!("canary error rate {c:.2}% vs primary {p:.2}%"),
        ),
    }
}

/// A check inside its inclusive range; no value fails (as in Flagger).
pub fn in_range(c: &MetricCheck) -> MetricVerdict {
    let (verdict, message) = match (&c.error, c.value) {
        (Some(e), _) => (Verdict::Fail, format!("{} query failed: {e}", c.name)),
        (None, None) => (Verdict::Fail, format!("no values found for {}", c.name)),
        (None, Some(v)) if c.range.min.is_some_and(|m| v < m) || c.range.max.is_some_and(|m| v > m) => (
            Verdict::Fail,
            format!("{} {v:.2} outside its threshold range", c.name),
        ),
        (None, Some(v)) => (Verdict::Pass, format!("{} {v:.2}", c.name)),
    };
    MetricVerdict {
        name: c.name.clone(),
        verdict,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(margin: f64) -> Config {
        Config {
            margin,
            window: "30s".into(),
            target: None,
        }
    }

    #[test]
    fn a_canary_worse_than_the_primary_by_more_than_the_margin_fails() {
        assert_eq!(
            relative(&config(1.0), Ok(Some(4.0)), Ok(Some(0.0))).verdict,
            Verdict::Fail
        );
        assert_eq!(
            relative(&config(1.0), Ok(Some(1.5)), Ok(Some(1.0))).verdict,
            Verdict::Pass
        );
        assert_eq!(
            relative(&config(5.0), Ok(Some(4.0)), Ok(Some(0.0))).verdict,
            Verdict::Pass
        );
    }

    #[test]
    fn missing_data_fails_for_the_canary_and_is_inconclusive_for_the_primary() {
        assert_eq!(
            relative(&config(1.0), Ok(None), Ok(Some(0.0))).verdict,
            Verdict::Fail
        );
        assert_eq!(
            relative(&config(1.0), Ok(Some(0.0)), Ok(None)).verdict,
            Verdict::Inconclusive
        );
        assert_eq!(
            relative(&config(1.0), Err("down".into()), Ok(None)).verdict,
            Verdict::Fail
        );
    }

    #[test]
    fn the_query_selects_one_workload_exactly() {
        let q = error_rate_query("test", "podinfo-primary", "30s");
        assert!(q.contains(r#"destination_workload="podinfo-primary""#));
        assert!(q.contains(r#"response_code=~"5.*""#));
        assert!(q.contains("[30s]"));
    }

    #[test]
    fn config_defaults_and_refuses_negative_margins() {
        assert_eq!(Config::parse("{}").expect("defaults"), config(1.0));
        assert!(Config::parse(r#"{"margin": -1}"#).is_err());
        assert!(Config::parse(r#"{"margn": 1}"#).is_err());
    }
}
