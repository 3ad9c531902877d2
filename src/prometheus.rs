//! The Prometheus provider: instant and range queries over the HTTP API, with a timeout and bearer or basic
//! auth. Parsing is pure (`parse`) so every response shape is unit-tested without a server.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use thiserror::Error;

use crate::policy::types::{Sample, Series};

/// Flagger's query timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// How to authenticate to Prometheus.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Auth {
    #[default]
    None,
    Bearer(String),
    Basic {
        username: String,
        password: String,
    },
}

impl std::fmt::Debug for Auth {
    // Never print credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "None",
            Self::Bearer(_) => "Bearer(..)",
            Self::Basic { .. } => "Basic(..)",
        })
    }
}

/// Why a query gave no answer.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum QueryError {
    #[error("Prometheus {address} unreachable: {message}")]
    Unreachable { address: String, message: String },
    #[error("Prometheus {address} did not answer within {timeout_ms} ms")]
    Timeout { address: String, timeout_ms: u64 },
    #[error("Prometheus answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("Prometheus refused the query ({error_type}): {error}")]
    Refused { error_type: String, error: String },
    #[error("cannot read Prometheus' answer: {0}")]
    Decode(String),
    #[error("invalid Prometheus address {0:?}")]
    BadAddress(String),
}

impl QueryError {
    /// Bounded label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "unreachable",
            Self::Timeout { .. } => "timeout",
            Self::Status { .. } => "http_status",
            Self::Refused { .. } => "refused",
            Self::Decode(_) => "decode",
            Self::BadAddress(_) => "bad_address",
        }
    }
}

/// One Prometheus server.
#[derive(Debug, Clone)]
pub struct Prometheus {
    http: reqwest::Client,
    address: String,
    auth: Auth,
    timeout: Duration,
    /// Sent with every query (a MetricTemplate's `provider.headers`).
    headers: Vec<(String, String)>,
}

impl Prometheus {
    /// A client for `address` (`http://prometheus.istio-system:9090`); `insecure` skips TLS verification.
    pub fn new(address: &str, auth: Auth, timeout: Duration, insecure: bool) -> Result<Self, QueryError> {
        let address = address.trim_end_matches('/').to_owned();
        if !(address.starts_with("http://") || address.starts_with("https://")) {
            return Err(QueryError::BadAddress(address));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .danger_accept_invalid_certs(insecure)
            .build()
            .map_err(|e| QueryError::Unreachable {
                address: address.clone(),
                message: e.to_string(),
            })?;
        Ok(Self {
            http,
            address,
            auth,
            timeout,
            headers: Vec::new(),
        })
    }

    /// The same server, queried with these headers (each value of a name sent as its own header line).
    pub fn with_headers(mut self, headers: &std::collections::BTreeMap<String, Vec<String>>) -> Self {
        self.headers = headers
            .iter()
            .flat_map(|(name, values)| values.iter().map(move |v| (name.clone(), v.clone())))
            .collect();
        self
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// PromQL evaluated now.
    pub async fn instant(&self, query: &str) -> Result<Vec<Series>, QueryError> {
        self.get("query", &[("query", query.to_owned())]).await
    }

    /// PromQL over the last `window`, one sample every `step`.
    pub async fn range(
        &self,
        query: &str,
        window: Duration,
        step: Duration,
    ) -> Result<Vec<Series>, QueryError> {
        let end = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let start = end - window.as_secs_f64();
        let params = [
            ("query", query.to_owned()),
            ("start", format!("{start:.3}")),
            ("end", format!("{end:.3}")),
            ("step", format!("{}", step.as_secs_f64().max(0.001))),
        ];
        self.get("query_range", &params).await
    }

    /// The single value a check compares: the last sample of the last series (Flagger: last series wins);
    /// `None` when the result is empty or NaN — "no values".
    pub async fn value(&self, query: &str) -> Result<Option<f64>, QueryError> {
        Ok(value_of(&self.instant(query).await?))
    }

    async fn get(&self, endpoint: &str, params: &[(&str, String)]) -> Result<Vec<Series>, QueryError> {
        let mut request = self
            .http
            .get(format!("{}/api/v1/{endpoint}", self.address))
            .query(params);
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        request = match &self.auth {
            Auth::None => request,
            Auth::Bearer(token) => request.bearer_auth(token),
            Auth::Basic { username, password } => request.basic_auth(username, Some(password)),
        };
        let response = request.send().await.map_err(|e| self.transport(&e))?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| self.transport(&e))?;
        parse(status, &body)
    }

    fn transport(&self, e: &reqwest::Error) -> QueryError {
        if e.is_timeout() {
            QueryError::Timeout {
                address: self.address.clone(),
                timeout_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
            }
        } else {
            QueryError::Unreachable {
                address: self.address.clone(),
                message: crate::text::error_chain(e),
            }
        }
    }
}

/// The last sample of the last series; `None` for no series, no samples or NaN.
pub fn value_of(series: &[Series]) -> Option<f64> {
    series
        .last()
        .and_then(|s| s.samples.last())
        .map(|s| s.value)
        .filter(|v| !v.is_nan())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct RawSeries {
    #[serde(default)]
    metric: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    value: Option<(f64, String)>,
    #[serde(default)]
    values: Vec<(f64, String)>,
}

/// Longest error body kept in an error message.
const MAX_BODY: usize = 512;

/// Reads an HTTP API answer: vector, matrix and scalar results become series; errors keep Prometheus' words.
pub fn parse(status: u16, body: &[u8]) -> Result<Vec<Series>, QueryError> {
    let envelope: Result<Envelope, _> = serde_json::from_slice(body);
    let envelope = match envelope {
        Ok(e) => e,
        Err(_) if !(200..300).contains(&status) => {
            return Err(QueryError::Status {
                status,
                body: crate::text::clip(&String::from_utf8_lossy(body), MAX_BODY),
            });
        }
        Err(e) => return Err(QueryError::Decode(e.to_string())),
    };
    if envelope.status != "success" {
        return Err(QueryError::Refused {
            error_type: envelope.error_type.unwrap_or_else(|| format!("HTTP {status}")),
            error: crate::text::clip(&envelope.error.unwrap_or_default(), MAX_BODY),
        });
    }
    let data = envelope
        .data
        .ok_or_else(|| QueryError::Decode("success without data".into()))?;
    let decode = |e: serde_json::Error| QueryError::Decode(e.to_string());
    match data.result_type.as_str() {
        "vector" | "matrix" => {
            let raw: Vec<RawSeries> = serde_json::from_value(data.result).map_err(decode)?;
            raw.into_iter()
                .map(|r| {
                    let points = r.value.into_iter().chain(r.values);
                    Ok(Series {
                        labels: r.metric.into_iter().collect(),
                        samples: points.map(sample).collect::<Result<_, _>>()?,
                    })
                })
                .collect()
        }
        "scalar" => {
            let point: (f64, String) = serde_json::from_value(data.result).map_err(decode)?;
            Ok(vec![Series {
                labels: Vec::new(),
                samples: vec![sample(point)?],
            }])
        }
        other => Err(QueryError::Decode(format!("result type {other} is not a number"))),
    }
}

fn sample((timestamp, value): (f64, String)) -> Result<Sample, QueryError> {
    // Prometheus writes NaN and ±Inf as strings Rust parses too.
    let value = value
        .parse::<f64>()
        .map_err(|_| QueryError::Decode(format!("sample value {value:?} is not a number")))?;
    Ok(Sample { timestamp, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vector_becomes_labelled_series_and_the_last_one_wins() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"destination_workload":"a"},"value":[1700000000.5,"99.5"]},
            {"metric":{"destination_workload":"b"},"value":[1700000000.5,"91.23"]}]}}"#;
        let series = parse(200, body).expect("parsed");
        assert_eq!(series.len(), 2);
        assert_eq!(
            series[0].labels,
            vec![("destination_workload".to_owned(), "a".to_owned())]
        );
        assert_eq!(value_of(&series), Some(91.23));
    }

    #[test]
    fn a_matrix_keeps_every_sample_in_order() {
        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{},"values":[[1,"1"],[2,"2"],[3,"4"]]}]}}"#;
        let series = parse(200, body).expect("parsed");
        let values: Vec<f64> = series[0].samples.iter().map(|s| s.value).collect();
        assert_eq!(values, vec![1.0, 2.0, 4.0]);
    }

    #[test]
    fn empty_results_and_nan_are_no_values() {
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(value_of(&parse(200, empty).expect("parsed")), None);
        let nan = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#;
        assert_eq!(value_of(&parse(200, nan).expect("parsed")), None);
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1,"+Inf"]}}"#;
        assert_eq!(
            value_of(&parse(200, scalar).expect("parsed")),
            Some(f64::INFINITY)
        );
    }

    #[test]
    fn a_bad_query_keeps_prometheus_explanation() {
        let body = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#;
        assert_eq!(
            parse(400, body),
            Err(QueryError::Refused {
                error_type: "bad_data".into(),
                error: "parse error at char 5".into()
            })
        );
    }

    #[test]
    fn a_non_json_error_page_reports_the_http_status() {
        let err = parse(502, b"<html>bad gateway</html>").expect_err("error");
        assert_eq!(err.category(), "http_status");
        assert!(err.to_string().contains("502"), "{err}");
    }

    #[test]
    fn addresses_must_be_http_urls_and_credentials_never_print() {
        assert!(matches!(
            Prometheus::new("prometheus:9090", Auth::None, DEFAULT_TIMEOUT, false),
            Err(QueryError::BadAddress(_))
        ));
        let auth = Auth::Basic {
            username: "u".into(),
            password: "secret".into(),
        };
        assert!(!format!("{auth:?}").contains("secret"));
    }

    /// A one-request HTTP server that answers an empty vector and hands back the request it read.
    fn answer_once() -> (String, std::thread::JoinHandle<String>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = format!("http://{}", listener.local_addr().expect("address"));
        let served = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.ends_with(b"\r\n\r\n") {
                let n = stream.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            let body = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(reply.as_bytes()).expect("write");
            String::from_utf8_lossy(&request).into_owned()
        });
        (address, served)
    }

    #[tokio::test]
    async fn a_templates_headers_go_with_every_query() {
        let (address, served) = answer_once();
        let headers = std::collections::BTreeMap::from([
            ("X-Scope-OrgID".to_owned(), vec!["tenant-a".to_owned()]),
            ("X-Extra".to_owned(), vec!["1".to_owned(), "2".to_owned()]),
        ]);
        let prometheus = Prometheus::new(&address, Auth::None, DEFAULT_TIMEOUT, false)
            .expect("client")
            .with_headers(&headers);
        assert_eq!(prometheus.value("vector(1)").await, Ok(None));
        let request = served.join().expect("served").to_ascii_lowercase();
        assert!(request.contains("x-scope-orgid: tenant-a\r\n"), "{request}");
        assert!(
            request.contains("x-extra: 1\r\n") && request.contains("x-extra: 2\r\n"),
            "{request}"
        );
    }
}
