//! Flagger-compatible webhooks: a JSON POST of {name, namespace, phase, checksum, metadata}; success is an
//! HTTP status of 200–202 (204 is a failure, as in Flagger), with a timeout and retries on transport errors
//! and 5xx. flagger-loadtester's gate endpoints (`/gate/check`, `/rollback/check`) answer by these rules.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::api::WebhookSpec;
use crate::policy::types::WebhookOutcome;

/// What a webhook receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Payload {
    pub name: String,
    pub namespace: String,
    pub phase: String,
    pub checksum: String,
    pub metadata: BTreeMap<String, String>,
}

/// Longest response excerpt kept in an outcome.
const MAX_MESSAGE: usize = 256;
/// Pause before retry `n` (1-based): n × this, capped at 5 s.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// The longest pause between two attempts.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// HTTP clients for webhooks (one verifying TLS, one not, for `disableTLS`).
#[derive(Debug, Clone)]
pub struct Webhooks {
    secure: reqwest::Client,
    insecure: reqwest::Client,
}

impl Webhooks {
    pub fn new() -> Result<Self, reqwest::Error> {
        Ok(Self {
            secure: reqwest::Client::builder().build()?,
            insecure: reqwest::Client::builder()
                .danger_accept_invalid_certs(true)
                .build()?,
        })
    }

    /// The longest [`Webhooks::call`] can take for `hook`: every attempt timing out, with the pauses between.
    pub fn budget(hook: &WebhookSpec) -> Duration {
        let pauses = (1..=hook.retries)
            .map(|attempt| (RETRY_PAUSE * attempt).min(MAX_PAUSE))
            .sum::<Duration>();
        hook.timeout * (hook.retries + 1) + pauses
    }

    /// Calls `hook` with `payload` (its own metadata merged in), retrying as configured.
    pub async fn call(&self, hook: &WebhookSpec, payload: &Payload) -> WebhookOutcome {
        let mut payload = payload.clone();
        for (k, v) in &hook.metadata {
            payload.metadata.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let http = if hook.insecure {
            &self.insecure
        } else {
            &self.secure
        };
        let mut attempt = 0;
        loop {
            let outcome = once(http, hook, &payload).await;
            let retriable = outcome.status_code.is_none_or(|s| s >= 500);
            if outcome.ok || !retriable || attempt >= hook.retries {
                return outcome;
            }
            attempt += 1;
            tokio::time::sleep((RETRY_PAUSE * attempt).min(MAX_PAUSE)).await;
        }
    }
}

async fn once(http: &reqwest::Client, hook: &WebhookSpec, payload: &Payload) -> WebhookOutcome {
    let sent = http
        .post(&hook.url)
        .timeout(hook.timeout)
        .json(payload)
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            outcome(&hook.name, Some(status), &body)
        }
        Err(e) if e.is_timeout() => WebhookOutcome {
            name: hook.name.clone(),
            ok: false,
            status_code: None,
            message: format!("no answer within {} ms", hook.timeout.as_millis()),
        },
        Err(e) => WebhookOutcome {
            name: hook.name.clone(),
            ok: false,
            status_code: None,
            message: crate::text::clip(&crate::text::error_chain(&e), MAX_MESSAGE),
        },
    }
}

/// Flagger's rule: 200, 201 and 202 are success; everything else (204 included) is a failure.
pub fn outcome(name: &str, status: Option<u16>, body: &str) -> WebhookOutcome {
    let ok = status.is_some_and(|s| (200..=202).contains(&s));
    WebhookOutcome {
        name: name.to_owned(),
        ok,
        status_code: status,
        message: crate::text::clip(body.trim(), MAX_MESSAGE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhooks_budget_is_every_attempt_timing_out_plus_the_pauses_between() {
        let hook = |timeout, retries| WebhookSpec {
            name: "h".into(),
            kind: crate::api::WebhookType::ConfirmRollout,
            url: "http://h".into(),
            timeout: Duration::from_secs(timeout),
            retries,
            insecure: false,
            metadata: BTreeMap::new(),
        };
        assert_eq!(Webhooks::budget(&hook(10, 0)), Duration::from_secs(10));
        // 3 × 10 s, pauses 0.5 s + 1 s.
        assert_eq!(Webhooks::budget(&hook(10, 2)), Duration::from_millis(31_500));
        // The limits: 11 × 60 s, pauses 0.5 s, 1 s, … 5 s.
        assert_eq!(
            Webhooks::budget(&hook(60, 10)),
            Duration::from_millis(660_000 + 27_500)
        );
    }

    #[test]
    fn only_200_to_202_succeed_and_204_fails_as_in_flagger() {
        for (status, ok) in [
            (200, true),
            (201, true),
            (202, true),
            (204, false),
            (403, false),
            (500, false),
        ] {
            assert_eq!(outcome("h", Some(status), "").ok, ok, "HTTP {status}");
        }
        assert!(!outcome("h", None, "connection refused").ok);
    }

    #[test]
    fn the_payload_has_flaggers_field_names() {
        let p = Payload {
            name: "podinfo".into(),
            namespace: "test".into(),
            phase: "Progressing".into(),
            checksum: "abc".into(),
            metadata: BTreeMap::from([("type".to_owned(), "bash".to_owned())]),
        };
        assert_eq!(
            serde_json::to_value(&p).expect("json"),
            serde_json::json!({"name": "podinfo", "namespace": "test", "phase": "Progressing",
                "checksum": "abc", "metadata": {"type": "bash"}})
        );
    }
}
