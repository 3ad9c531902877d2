//! Policy call latency (fresh Store + instantiate + one call, per world) and cached load time.
//! `make bench` runs it; set FLEDGE_PYTHON_POLICY to a built Python example to measure it too.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use fledge::policy::types::*;
use fledge::policy::{BUILTIN_DEFAULT, Grants, Limits, Policy, PolicyComponent, PolicyEngine, builtin};

fn rollout() -> Rollout {
    Rollout {
        name: "podinfo".into(),
        namespace: "test".into(),
        phase: Phase::Progressing,
        canary_weight: 20,
        iterations: 0,
        failed_checks: 0,
        analysis: AnalysisSettings {
            threshold: 5,
            step_weight: Some(20),
            max_weight: Some(50),
            ..Default::default()
        },
        config: "{}".into(),
        intervals_at_weight: 0,
        seconds_in_phase: 0,
        revision: "rev-1".into(),
        state: None,
        history: Vec::new(),
    }
}

fn checks() -> Vec<MetricCheck> {
    ["request-success-rate", "request-duration"]
        .iter()
        .map(|name| MetricCheck {
            name: (*name).into(),
            value: Some(99.5),
            range: ThresholdRange {
                min: Some(99.0),
                max: Some(500.0),
            },
            error: None,
        })
        .collect()
}

fn bench_calls(c: &mut Criterion, label: &str, policy: &Arc<PolicyComponent>, worlds: &[&str]) {
    let r = rollout();
    let checks = checks();
    let hooks = [WebhookOutcome {
        name: "approve".into(),
        ok: true,
        status_code: Some(200),
        message: String::new(),
    }];
    for world in worlds {
        let id = format!("{label}/{world}");
        match *world {
            "step" => c.bench_function(&id, |b| b.iter(|| black_box(policy.step(black_box(&r))))),
            "gate" => c.bench_function(&id, |b| {
                b.iter(|| black_box(policy.gate(black_box(&r), GateKind::ConfirmPromotion, &hooks)));
            }),
            _ => c.bench_function(&id, |b| {
                b.iter(|| black_box(policy.analyse(black_box(&r), &checks, &[], None)));
            }),
        };
    }
}

fn bench_load(c: &mut Criterion, label: &str, bytes: &[u8]) {
    let cache = std::env::temp_dir().join(format!("fledge-bench-cache-{}", std::process::id()));
    let engine = PolicyEngine::new(Limits::default(), Some(cache.clone())).expect("engine");
    // Warm the on-disk cache once; each iteration then loads from it (the in-memory copy is evicted).
    engine.load(label, bytes, Grants::ALL).expect("warm cache");
    c.bench_function(&format!("{label}/load_cached"), |b| {
        b.iter(|| {
            engine.evict_all();
            black_box(engine.load(label, bytes, Grants::ALL).expect("load"))
        });
    });
    let _ = std::fs::remove_dir_all(&cache);
}

fn policies(c: &mut Criterion) {
    let engine = PolicyEngine::new(Limits::default(), None).expect("engine");
    let default_bytes = builtin(BUILTIN_DEFAULT).expect("builtin");
    let default = engine
        .load(BUILTIN_DEFAULT, default_bytes, Grants::ALL)
        .expect("load default");
    bench_calls(c, "default", &default, &["step", "gate", "analysis"]);
    bench_load(c, "default", default_bytes);

    if let Some(path) = std::env::var_os("FLEDGE_PYTHON_POLICY") {
        let bytes = std::fs::read(&path).expect("read FLEDGE_PYTHON_POLICY");
        let python = engine.load("python", &bytes, Grants::ALL).expect("load python");
        bench_calls(c, "python", &python, &["step"]);
        bench_load(c, "python", &bytes);
    }

    // The 0.2 templates ("two passes per step", with state and history), one per language.
    let rust = std::path::Path::new(env!("FLEDGE_POLICY_OUT_DIR")).join("two_passes.wasm");
    let templates = [
        ("template-rust", Some(rust.into_os_string())),
        ("template-python", std::env::var_os("FLEDGE_PYTHON_TEMPLATE")),
        ("template-javascript", std::env::var_os("FLEDGE_JS_TEMPLATE")),
        ("template-go", std::env::var_os("FLEDGE_GO_TEMPLATE")),
    ];
    for (label, path) in templates {
        let Some(path) = path else { continue };
        let bytes = std::fs::read(&path).expect("read template component");
        println!("{label}: {} bytes", bytes.len());
        let template = engine.load(label, &bytes, Grants::ALL).expect("load template");
        bench_template_step(c, label, &template);
        bench_load(c, label, &bytes);
    }
}

/// A step at 20 % with one pass remembered: the call reads state and history and answers with state.
fn bench_template_step(c: &mut Criterion, label: &str, policy: &Arc<PolicyComponent>) {
    let mut r = rollout();
    r.state = Some(r#"{"weight":20,"passes":1}"#.into());
    r.history = vec![AnalysisRecord {
        time: 60.0,
        weight: 20,
        verdict: Verdict::Pass,
        checks: vec![CheckValue {
            name: "request-success-rate".into(),
            value: Some(99.5),
            verdict: Verdict::Pass,
        }],
    }];
    let answer = policy.step(&r).expect("template step");
    assert_eq!(answer.decision, StepDecision::SetWeight { weight: 40 }, "{label}");
    c.bench_function(&format!("{label}/step"), |b| {
        b.iter(|| black_box(policy.step(black_box(&r))));
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(4));
    targets = policies
}
criterion_main!(benches);
