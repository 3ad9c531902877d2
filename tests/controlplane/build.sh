#!/usr/bin/env bash
# Builds the control-plane binaries from upstream Go modules into a per-version cache outside the checkout,
# skipping every binary that is already there. Prints the cache's bin directory on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

command -v go >/dev/null || die "go is required (Go >= 1.26) to build the control plane"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=readonly -trimpath -buildvcs=false"
mkdir -p "$CP_BIN"

# What upstream's hack/lib/version.sh stamps into Kubernetes binaries, so /version (and `kubectl version`) say
# v1.35.4 instead of v0.0.0-master, which clients that check the server's version refuse. The commit is not
# known to a module build and is left out rather than invented.
k8s_minor=${K8S_VERSION#v1.}; k8s_minor=${k8s_minor%%.*}
k8s_version_flags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_version_flags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  k8s_version_flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
done

# build_one NAME MODULE_DIR PACKAGE [LDFLAGS]: go build PACKAGE inside MODULE_DIR into the cache, atomically.
build_one() {
  local name=$1 dir=$2 pkg=$3 flags=${4:-}
  if [ -x "$CP_BIN/$name" ]; then
    log "cached: $name"
    return
  fi
  log "building $name from $pkg (cold builds take minutes on 2 cores)"
  local start=$SECONDS tmp
  tmp=$(mktemp "$CP_BIN/.$name.XXXXXX")
  if ! (cd "$here/$dir" && go build -ldflags "-s -w$flags" -o "$tmp" "$pkg"); then
    rm -f "$tmp"
    die "building $name failed"
  fi
  mv -f "$tmp" "$CP_BIN/$name"
  log "built $name in $((SECONDS - start)) s"
}

build_one etcd etcd .
build_one kwok kwok sigs.k8s.io/kwok/cmd/kwok
build_one kube-apiserver k8s ./cmd/kube-apiserver "$k8s_version_flags"
build_one kube-controller-manager k8s ./cmd/kube-controller-manager "$k8s_version_flags"
build_one kube-scheduler k8s ./cmd/kube-scheduler "$k8s_version_flags"
build_one kubectl k8s ./cmd/kubectl "$k8s_version_flags"

# KWOK v0.8.0 has no built-in stages: take the "fast" node and pod stages from the module it was built from.
if [ ! -s "$CP_BIN/kwok-stages.yaml" ]; then
  kwok_dir=$(cd "$here/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  tmp=$(mktemp "$CP_BIN/.stages.XXXXXX")
  for f in node/fast/node-initialize.yaml pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    printf -- '---\n' >>"$tmp"
    cat "$kwok_dir/kustomize/stage/$f" >>"$tmp"
  done
  mv -f "$tmp" "$CP_BIN/kwok-stages.yaml"
fi
# Istio's own CRDs (full OpenAPI + CEL validation) for VirtualService and DestinationRule, from istio.io/api.
if [ ! -s "$CP_BIN/istio-crds.yaml" ]; then
  istio_dir=$(cd "$(mktemp -d)" && go mod download -json "istio.io/api@$ISTIO_API_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  tmp=$(mktemp "$CP_BIN/.istio.XXXXXX")
  awk -v RS='\n---\n' '/\n  name: (virtualservices|destinationrules)\.networking\.istio\.io\n/ {printf "---\n%s\n", $0}' \
    "$istio_dir/kubernetes/customresourcedefinitions.gen.yaml" >"$tmp"
  [ "$(grep -c '^kind: CustomResourceDefinition' "$tmp")" = 2 ] || die "istio.io/api@$ISTIO_API_VERSION: VirtualService/DestinationRule CRDs not found"
  mv -f "$tmp" "$CP_BIN/istio-crds.yaml"
fi
echo "$CP_BIN"
