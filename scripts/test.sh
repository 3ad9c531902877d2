#!/usr/bin/env bash
# Runs every test of fledge: lints, unit tests, and the integration tests against a real control plane that
# this script starts and always stops again, whether the tests pass or not.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

"$root/scripts/setup.sh"
bin=$("$root/tests/controlplane/build.sh" | tail -n 1)
cache=${FLEDGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fledge}
export FLEDGE_COMPONENTIZE_PY=$cache/py-venv-componentize-0.25.1/bin/componentize-py
export FLEDGE_REGISTRY_BIN=$cache/docker-registry-2.8.2/usr/bin/docker-registry
export FLEDGE_JCO=$cache/npm-jco-1.35.0/node_modules/.bin/jco

echo "[test] lints" >&2
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo clippy --locked --target wasm32-unknown-unknown -p fledge-policy-default -p fledge-policy-sequential -p fledge-policy-relative-errors -p fledge-policy-hostile -p fledge-policy-scripted -p two-passes -- -D warnings
# The example policy's pure logic, on the host.
cargo test --locked -p fledge-policy-relative-errors -p fledge-policy-sequential --lib
# Compile the tests before the plane starts, so the plane is not kept waiting on the compiler.
cargo test --all-targets --locked --no-run

# A plane of its own (free ports, private state), so a developer's plane at the default path never blocks this run.
export FLEDGE_PLANE_DIR=${FLEDGE_PLANE_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/fledge-plane-run.XXXXXX")}
kubeconfig=$("$root/tests/controlplane/up.sh" | tail -n 1)
trap '"$root/tests/controlplane/down.sh"' EXIT
export KUBECONFIG=$kubeconfig PATH="$bin:$PATH"

echo "[test] unit and integration tests" >&2
cargo test --all-targets --locked --no-fail-fast -- --include-ignored

# The controller image: built without a Docker engine and started once (prints `fledge --version`).
echo "[test] container image" >&2
"$root/scripts/image.sh"
