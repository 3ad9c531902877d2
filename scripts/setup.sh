#!/usr/bin/env bash
# Installs what fledge's build, tests and demo need on a fresh machine; does nothing for what is present.
set -euo pipefail

# Debian packages by the command they provide (prometheus: the real server the analysis tests query; tmux:
# the real terminal `fledge get -w` is tested in).
missing=()
for tool in curl openssl python3 prometheus tmux; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] installing Debian packages: ${missing[*]}" >&2
  # A temporary policy-rc.d keeps the package's own service from starting: the tests run their own.
  rc=/usr/sbin/policy-rc.d; own_rc=
  if [ ! -e "$rc" ]; then printf '#!/bin/sh\nexit 101\n' > "$rc" && chmod +x "$rc" && own_rc=1; fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ -z "$own_rc" ] || rm -f "$rc"
fi

command -v cargo >/dev/null || { echo "[setup] error: Rust (cargo, via rustup) is required" >&2; exit 1; }
command -v go >/dev/null || { echo "[setup] error: Go >= 1.26 is required to build the control plane" >&2; exit 1; }
go_minor=$(go env GOVERSION | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
[ "${go_minor:-0}" -ge 26 ] || { echo "[setup] error: Go >= 1.26 is required, found $(go env GOVERSION)" >&2; exit 1; }

# Policy components build for wasm32 (WASI-free, see build.rs).
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  echo "[setup] rustup target add wasm32-unknown-unknown" >&2
  rustup target add wasm32-unknown-unknown >&2
fi

# componentize-py builds the Python example policy; a venv in the cache keeps it off the system Python.
cache=${FLEDGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fledge}
venv=$cache/py-venv-componentize-0.25.1
if [ ! -x "$venv/bin/componentize-py" ]; then
  echo "[setup] installing componentize-py 0.25.1 into $venv" >&2
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install -q componentize-py==0.25.1 >&2
fi

# A real OCI registry for the policy tests: Debian's docker-registry (CNCF distribution), unpacked into the
# cache, never installed (its package would start a service on :5000 on all interfaces).
registry_dir=$cache/docker-registry-2.8.2
if [ ! -x "$registry_dir/usr/bin/docker-registry" ]; then
  echo "[setup] fetching Debian's docker-registry into $registry_dir" >&2
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download docker-registry >/dev/null 2>&1) || {
    apt-get update -qq && (cd "$tmp" && apt-get download docker-registry >/dev/null 2>&1)
  }
  rm -rf "$registry_dir" && mkdir -p "$registry_dir"
  dpkg-deb -x "$tmp"/docker-registry_*.deb "$registry_dir"
  rm -rf "$tmp"
fi

# jco (QuickJS backend) builds the JavaScript example policy; an npm prefix in the cache keeps it off the system.
jco_dir=$cache/npm-jco-1.35.0
if [ ! -x "$jco_dir/node_modules/.bin/jco" ]; then
  command -v npm >/dev/null || { echo "[setup] error: Node.js with npm is required for the JavaScript policy example" >&2; exit 1; }
  echo "[setup] installing @bytecodealliance/jco 1.35.0 into $jco_dir" >&2
  rm -rf "$jco_dir" && mkdir -p "$jco_dir"
  npm install --silent --no-audit --no-fund --prefix "$jco_dir" @bytecodealliance/jco@1.35.0 >&2
fi
