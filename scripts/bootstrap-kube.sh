#!/usr/bin/env bash
# Builds the pinned Kubernetes binaries (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kube-proxy), etcd and CoreDNS into the project-local tools folder
# with `go build` of the modules in scripts/kube (the Go module proxy is reachable where
# download sites are not). The chart's live tests (chart-tests/test_upgrades_live.py) run
# kube-apiserver and etcd on loopback; `make cluster` (scripts/iot_tools/cluster) runs all.
# Idempotent: a binary already built from the pinned module version is kept.
#
# Usage: bootstrap-kube.sh [NAME...]   (default: every binary; e.g. `kube-apiserver etcd`)
# Environment:
#   TOOLS_DIR   where to install (default: <repo>/.tools)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tool-versions.env
source "$repo/scripts/tool-versions.env"
tools=${TOOLS_DIR:-$repo/.tools}

built_from() {  # prints the version of module $2 that binary $1 was built from, if any
  # `mod` when the binary's main package is in that module (kube-apiserver), else `dep` (etcd).
  go version -m "$1" 2>/dev/null |
    awk -v module="$2" '($1 == "mod" || $1 == "dep") && $2 == module {print $3; exit}'
}

pinned() {  # the version scripts/kube pins for a module, checked against tool-versions.env
  local dir=$1 module=$2 want=$3 have
  have=$(cd "$dir" && go list -m -f '{{.Version}}' "$module")
  if [[ "$have" != "$want" ]]; then
    echo "bootstrap-kube: $dir/go.mod pins $module $have, scripts/tool-versions.env says $want" >&2
    exit 1
  fi
}

build() {  # name module version dir package ldflags
  local name=$1 module=$2 version=$3 dir=$4 package=$5 ldflags=$6
  local dest="$tools/$name-$version/$name"
  if [[ -x "$dest" && "$(built_from "$dest" "$module")" == "$version" ]]; then
    echo "bootstrap-kube: $name $version already in $(dirname "$dest")"
    return
  fi
  pinned "$dir" "$module" "$version"
  echo "bootstrap-kube: building $name $version with go build (takes several minutes once)"
  mkdir -p "$(dirname "$dest")"
  local started=$SECONDS
  # Static binaries (no cgo), as Kubernetes and etcd release them; -mod=readonly: go.sum is
  # the committed one.
  (cd "$dir" && CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=readonly" \
    go build -trimpath -ldflags "-s -w $ldflags" -o "$dest.tmp" "$package")
  mv "$dest.tmp" "$dest"
  echo "bootstrap-kube: $name $version built in $((SECONDS - started)) s"
}

if ! command -v go >/dev/null; then
  echo "bootstrap-kube: Go is needed to build kube-apiserver and etcd (go build); install Go" >&2
  exit 1
fi

# The version the API server reports (/version, hence Helm's .Capabilities.KubeVersion and the
# chart's kubeVersion check): without it a source build says v0.0.0-master.
minor=${KUBERNETES_VERSION#v1.}
minor=${minor%%.*}
version_flags=""
for package in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  version_flags+=" -X $package.gitVersion=$KUBERNETES_VERSION -X $package.gitMajor=1"
  version_flags+=" -X $package.gitMinor=$minor -X $package.gitTreeState=clean"
  version_flags+=" -X $package.buildDate=1970-01-01T00:00:00Z"
done

wanted() {  # is binary $1 asked for (no arguments: all of them)
  [[ ${#requested[@]} -eq 0 ]] || [[ " ${requested[*]} " == *" $1 "* ]]
}
requested=("$@")

# etcd and CoreDNS are separate modules built alongside (their downloads overlap the
# Kubernetes compile); the Kubernetes commands share one module and one build cache, so they
# are built one after another (in parallel they would only fight over the same 2 cores).
pids=()
if wanted etcd; then
  build etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "$repo/scripts/kube/etcd" . "" &
  pids+=($!)
fi
if wanted coredns; then
  build coredns github.com/coredns/coredns "$COREDNS_VERSION" "$repo/scripts/kube/coredns" \
    github.com/coredns/coredns "" &
  pids+=($!)
fi
(
  for name in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
    if wanted "$name"; then
      build "$name" k8s.io/kubernetes "$KUBERNETES_VERSION" "$repo/scripts/kube" \
        "k8s.io/kubernetes/cmd/$name" "$version_flags"
    fi
  done
) & pids+=($!)
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=1
done
exit "$status"
