# fledge — the README's two commands are `make demo` and `make test`.
.PHONY: all build install bench figures scale test demo image controlplane-build controlplane-up controlplane-down fmt lint

all: build

build:
	cargo build --locked

## install: `fledge` and the kubectl plugin `kubectl-fledge` (the same binary) into ~/.cargo/bin
install:
	cargo install --locked --path .
	ln -sf fledge "$${CARGO_HOME:-$$HOME/.cargo}/bin/kubectl-fledge"

## test: lints, unit tests, and integration tests against a real local control plane (started and stopped here)
test:
	./scripts/test.sh

## bench: policy call latency and load time (criterion), the Python example included
bench:
	./scripts/setup.sh
	./scripts/bench.sh

## figures: rollout latency, API requests per interval, teardown time and RSS on a real plane (release build)
figures:
	./scripts/figures.sh

## scale: N canaries (FLEDGE_SCALE_N, default 100,300,1000) with noise on a real plane: RSS, CPU, requests, step gaps
scale:
	./scripts/scale.sh

## demo: the seed story, live (arrives with the controller)
demo:
	./scripts/demo.sh

## image: the controller image, built with buildah (no Docker engine), started once, exported as OCI archive
image:
	./scripts/image.sh

controlplane-build:
	./tests/controlplane/build.sh

## controlplane-up: start the local plane and print its kubeconfig path
controlplane-up:
	./scripts/setup.sh
	./tests/controlplane/up.sh

controlplane-down:
	./tests/controlplane/down.sh

fmt:
	cargo fmt --all

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets --locked -- -D warnings
	cargo clippy --locked --target wasm32-unknown-unknown -p fledge-policy-default -p fledge-policy-sequential -p fledge-policy-hostile -p fledge-policy-scripted -p two-passes -- -D warnings
