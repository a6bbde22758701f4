#!/usr/bin/env bash
# Installs the pinned Helm 3 and Helm 4 (and, through scripts/bootstrap-tools.sh, helm-docs,
# kube-score and checkov) into a project-local tools folder with
# `go install` (the Go module proxy is reachable where download sites are not).
# Idempotent: a binary already built from the pinned module version is kept.
#
# Environment:
#   TOOLS_DIR      where to install (default: <repo>/.tools)
#   HELM3, HELM4   use these binaries instead of building (must be the pinned major)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tool-versions.env
source "$repo/scripts/tool-versions.env"
tools=${TOOLS_DIR:-$repo/.tools}

built_from() {  # prints the helm module version a binary was built from, if any
  go version -m "$1" 2>/dev/null | awk '$1 == "mod" && $2 ~ /^helm\.sh\/helm\// {print $3; exit}'
}

install_helm() {
  local major=$1 version=$2 override=$3
  local dest="$tools/helm-$version"
  if [[ -n "$override" ]]; then
    if ! "$override" version --short 2>/dev/null | grep -q "^$major\."; then
      echo "bootstrap-helm: $override is not a Helm ${major} binary (set by HELM${major#v})" >&2
      exit 1
    fi
    echo "bootstrap-helm: using $override for Helm $major"
    return
  fi
  if [[ -x "$dest/helm" && "$(built_from "$dest/helm")" == "$version" ]]; then
    echo "bootstrap-helm: Helm $version already in $dest"
    return
  fi
  if ! command -v go >/dev/null; then
    echo "bootstrap-helm: Go is needed to build Helm $version (go install); install Go or set HELM${major#v}" >&2
    exit 1
  fi
  echo "bootstrap-helm: building Helm $version with go install (takes a few minutes once)"
  mkdir -p "$dest"
  # -X sets the version `helm version` reports; go install alone leaves it as major.minor.
  GOBIN="$dest" GOFLAGS=-buildvcs=false go install \
    -ldflags "-s -w -X helm.sh/helm/$major/internal/version.version=$version" \
    "helm.sh/helm/$major/cmd/helm@$version"
  "$dest/helm" version --short
}

# Both builds at once: on a fresh machine most of the time is module downloads and linking,
# which overlap well (about 3 min together instead of 5 on 2 cores).
install_helm v3 "$HELM3_VERSION" "${HELM3:-}" & helm3=$!
install_helm v4 "$HELM4_VERSION" "${HELM4:-}" & helm4=$!
# The other chart tools (helm-docs, kube-score, checkov), installed alongside.
"$repo/scripts/bootstrap-tools.sh" & chart_tools=$!
status=0
wait "$helm3" || status=1
wait "$helm4" || status=1
wait "$chart_tools" || status=1
exit "$status"
