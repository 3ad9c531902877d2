#!/usr/bin/env bash
# Criterion benchmarks of the policy runtime: the default component and the Python example.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${FLEDGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fledge}
py=$(mktemp -d)/exponential.wasm
(cd "$root/examples/policies/contract-0.1/python-exponential" &&
  "$cache/py-venv-componentize-0.25.1/bin/componentize-py" -d ../../../../wit/v0.1.0 -w step-policy componentize app --stub-wasi -o "$py")
cd "$root"
FLEDGE_PYTHON_POLICY=$py cargo bench --locked --bench policy "$@"
