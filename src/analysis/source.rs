//! The `metrics` import behind a policy: the canary's Prometheus, with a per-call timeout, a cap on calls
//! per evaluation, and a record of every call and its result (kept in the status, so a decision can be
//! replayed).

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::runtime::Handle;

use crate::api::QueryRecord;
use crate::policy::types::{MetricsSource, Series};
use crate::prometheus::Prometheus;

/// Bounds on a policy's own queries.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    pub per_call: Duration,
    pub calls_per_evaluation: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            per_call: Duration::from_secs(5),
            calls_per_evaluation: 16,
        }
    }
}

/// Longest series JSON kept per recorded call.
const MAX_RECORDED_RESULT: usize = 2048;

/// A policy's window on Prometheus for one evaluation. Blocks the calling (policy) thread on the runtime.
#[derive(Debug)]
pub struct PolicyMetrics {
    prometheus: Prometheus,
    handle: Handle,
    limits: QueryLimits,
    calls: Mutex<Vec<QueryRecord>>,
}

impl PolicyMetrics {
    pub fn new(prometheus: Prometheus, handle: Handle, limits: QueryLimits) -> Self {
        Self {
            prometheus,
            handle,
            limits,
            calls: Mutex::new(Vec::new()),
        }
    }

    /// Every call made so far, in order.
    pub fn records(&self) -> Vec<QueryRecord> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn run(
        &self,
        query: &str,
        range: Option<(u32, u32)>,
        call: impl Future<Output = Result<Vec<Series>, crate::prometheus::QueryError>>,
    ) -> Result<Vec<Series>, String> {
        let mut record = QueryRecord {
            query: crate::text::clip(query, 1024),
            window_seconds: range.map(|r| r.0),
            step_seconds: range.map(|r| r.1),
            ..QueryRecord::default()
        };
        let made = self.calls.lock().unwrap_or_else(PoisonError::into_inner).len();
        let answer = if made >= self.limits.calls_per_evaluation {
            Err(format!(
                "query cap reached: at most {} metrics calls per evaluation",
                self.limits.calls_per_evaluation
            ))
        } else {
            match self
                .handle
                .block_on(async { tokio::time::timeout(self.limits.per_call, call).await })
            {
                Ok(Ok(series)) => Ok(series),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!(
                    "query timed out after {} ms",
                    self.limits.per_call.as_millis()
                )),
            }
        };
        match &answer {
            Ok(series) => {
                let json = serde_json::to_string(series).unwrap_or_default();
                record.result = Some(crate::text::clip(&json, MAX_RECORDED_RESULT));
            }
            Err(e) => record.error = Some(e.clone()),
        }
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record);
        answer
    }
}

impl MetricsSource for PolicyMetrics {
    fn instant_query(&self, query: &str) -> Result<Vec<Series>, String> {
        self.run(query, None, self.prometheus.instant(query))
    }

    fn range_query(
        &self,
        query: &str,
        window_seconds: u32,
        step_seconds: u32,
    ) -> Result<Vec<Series>, String> {
        self.run(
            query,
            Some((window_seconds, step_seconds)),
            self.prometheus.range(
                query,
                Duration::from_secs(window_seconds.into()),
                Duration::from_secs(step_seconds.into()),
            ),
        )
    }
}

/// Answers a policy's queries from a recording (`status.analysis.queries`), in order: a decision replayed
/// exactly as it was made. A query the recording does not hold is an error, not a live call.
#[derive(Debug)]
pub struct Replay {
    recorded: Mutex<std::collections::VecDeque<QueryRecord>>,
}

impl Replay {
    pub fn new(records: &[QueryRecord]) -> Self {
        Self {
            recorded: Mutex::new(records.iter().cloned().collect()),
        }
    }

    fn answer(&self, query: &str, range: Option<(u32, u32)>) -> Result<Vec<Series>, String> {
        let mut recorded = self.recorded.lock().unwrap_or_else(PoisonError::into_inner);
        let at = recorded
            .iter()
            .position(|r| r.query == query && r.window_seconds.zip(r.step_seconds) == range)
            .ok_or_else(|| format!("query not in the recording: {query}"))?;
        let record = recorded.remove(at).unwrap_or_default();
        match (record.error, record.result) {
            (Some(error), _) => Err(error),
            (None, Some(json)) => serde_json::from_str(&json)
                .map_err(|e| format!("recorded result cannot be replayed (clipped?): {e}")),
            (None, None) => Ok(Vec::new()),
        }
    }
}

impl MetricsSource for Replay {
    fn instant_query(&self, query: &str) -> Result<Vec<Series>, String> {
        self.answer(query, None)
    }

    fn range_query(
        &self,
        query: &str,
        window_seconds: u32,
        step_seconds: u32,
    ) -> Result<Vec<Series>, String> {
        self.answer(query, Some((window_seconds, step_seconds)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_answers_recorded_queries_in_order_and_refuses_others() {
        let series = vec![Series {
            labels: vec![("w".into(), "podinfo".into())],
            samples: vec![crate::policy::types::Sample {
                timestamp: 1.0,
                value: 4.0,
            }],
        }];
        let replay = Replay::new(&[
            QueryRecord {
                query: "q".into(),
                result: Some(serde_json::to_string(&series).expect("json")),
                ..QueryRecord::default()
            },
            QueryRecord {
                query: "q".into(),
                error: Some("Prometheus unreachable".into()),
                ..QueryRecord::default()
            },
        ]);
        assert_eq!(replay.instant_query("q"), Ok(series));
        assert_eq!(replay.instant_query("q"), Err("Prometheus unreachable".into()));
        assert!(replay.instant_query("q").is_err(), "each record answers once");
        assert!(replay.range_query("other", 60, 10).is_err());
    }
}
