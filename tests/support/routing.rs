//! The golden files of `tests/fixtures/flagger/`: what Flagger writes per Canary shape, and the comparison
//! that names every field where fledge's objects differ.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fledge::api::CanarySpec;
use serde_json::Value;

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fixture {
    pub canary: CanarySpec,
    /// The user's apex Service spec found before the Canary, if any.
    #[serde(default)]
    pub existing_service: Option<Value>,
    /// The user's VirtualService spec found before the Canary, if any.
    #[serde(default)]
    pub existing_virtual_service: Option<Value>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// The specs of the three Services and two DestinationRules, by name: the same at every weight.
    pub services: BTreeMap<String, Value>,
    pub destination_rules: BTreeMap<String, Value>,
    pub at: Vec<At>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct At {
    pub weights: (u32, u32),
    /// The share of requests mirrored to the canary, while an analysis mirrors.
    #[serde(default)]
    pub mirror: Option<u32>,
    /// Session affinity: the cookies in the Canary's status at this point (`name=value`).
    #[serde(default)]
    pub cookies: Option<FixtureCookies>,
    pub virtual_service: Value,
}

#[derive(serde::Deserialize, Default)]
pub struct FixtureCookies {
    #[serde(default)]
    pub canary: Option<String>,
    #[serde(default)]
    pub primary: Option<String>,
    #[serde(default)]
    pub previous: Option<String>,
}

/// Every fixture file, by name, sorted.
pub fn fixtures() -> Vec<(String, Fixture)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/flagger");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let name = file
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&file).expect("read fixture");
            let fixture = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, fixture)
        })
        .collect()
}

/// The fixture `name`.
pub fn fixture(name: &str) -> Fixture {
    fixtures()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no fixture {name}"))
        .1
}

/// Every difference between `expected` and `actual`, by path.
pub fn differences(path: &str, expected: &Value, actual: &Value, out: &mut Vec<String>) {
    compare(path, expected, actual, false, out);
}

/// Like [`differences`], for an object read back from the API server: fields it defaulted, which the
/// expected object does not name, are not differences.
pub fn missing(path: &str, expected: &Value, actual: &Value, out: &mut Vec<String>) {
    compare(path, expected, actual, true, out);
}

fn compare(path: &str, expected: &Value, actual: &Value, subset: bool, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            let extra = a.keys().filter(|k| !subset && !e.contains_key(*k));
            for key in e.keys().chain(extra) {
                let (ev, av) = (
                    e.get(key).unwrap_or(&Value::Null),
                    a.get(key).unwrap_or(&Value::Null),
                );
                compare(&format!("{path}.{key}"), ev, av, subset, out);
            }
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                compare(&format!("{path}[{i}]"), ev, av, subset, out);
            }
        }
        (Value::Number(e), Value::Number(a)) if e.as_f64() == a.as_f64() => {}
        _ if expected == actual => {}
        _ => out.push(format!("{path}: Flagger {expected}, fledge {actual}")),
    }
}
