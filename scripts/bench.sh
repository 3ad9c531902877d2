#!/usr/bin/env bash
# Criterion benchmarks of the policy runtime: the default component, the Python example, and the 0.2
# templates in Rust, Python, JavaScript and Go (fresh-Store call latency, cached load time, size).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${FLEDGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fledge}
py=$(mktemp -d)/exponential.wasm
(cd "$root/examples/policies/contract-0.1/python-exponential" &&
  "$cache/py-venv-componentize-0.25.1/bin/componentize-py" -d ../../../../wit/v0.1.0 -w step-policy componentize app --stub-wasi -o "$py")
# The 0.2 templates in Python and JavaScript (the Rust one comes out of build.rs).
tmp=$(dirname "$py")
(cd "$root/examples/policies/python" &&
  "$cache/py-venv-componentize-0.25.1/bin/componentize-py" -d wit -w step-policy componentize app --stub-wasi -o "$tmp/template-python.wasm")
(cd "$root/examples/policies/javascript" &&
  "$cache/npm-jco-1.35.0/node_modules/.bin/jco" componentize step.js -w wit -n step-policy --backend quickjs \
    --backend-qjs-stub-wasi --backend-qjs-disable-async -o "$tmp/template-javascript.wasm" >/dev/null)
cd "$root"
cargo build --locked --bin fledge
(cd "$root/examples/policies/go" &&
  GOTOOLCHAIN=local GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o "$tmp/template-go.core.wasm" . &&
  "$root/target/debug/fledge" policy componentize "$tmp/template-go.core.wasm" --world step-policy \
    -o "$tmp/template-go.wasm" >/dev/null)
FLEDGE_GO_TEMPLATE=$tmp/template-go.wasm FLEDGE_PYTHON_POLICY=$py FLEDGE_PYTHON_TEMPLATE=$tmp/template-python.wasm FLEDGE_JS_TEMPLATE=$tmp/template-javascript.wasm \
  cargo bench --locked --bench policy "$@"
