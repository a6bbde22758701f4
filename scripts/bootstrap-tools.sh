#!/usr/bin/env bash
# Installs the pinned chart tools besides Helm into the project-local tools folder with
# `go install`: helm-docs (generates chart/README.md from the `# --` comments of values.yaml)
# and kube-score (static checks of the rendered manifests, run by the chart tests); and checkov
# (the other static analysis of the render) with pip into a venv of its own.
# Idempotent: a binary already built from the pinned module version is kept.
#
# Environment:
#   TOOLS_DIR              where to install (default: <repo>/.tools)
#   HELM_DOCS, KUBE_SCORE, CHECKOV  use these binaries instead of installing
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tool-versions.env
source "$repo/scripts/tool-versions.env"
tools=${TOOLS_DIR:-$repo/.tools}

built_from() {  # prints the version of module $2 a binary was built from, if any
  go version -m "$1" 2>/dev/null | awk -v module="$2" '$1 == "mod" && $2 == module {print $3; exit}'
}

install_tool() {  # name, module, package, version, override, ldflags
  local name=$1 module=$2 package=$3 version=$4 override=$5 ldflags=$6
  local dest="$tools/$name-$version"
  if [[ -n "$override" ]]; then
    [[ -x "$override" ]] || { echo "bootstrap-tools: $override is not an executable" >&2; exit 1; }
    echo "bootstrap-tools: using $override for $name"
    return
  fi
  if [[ -x "$dest/$name" && "$(built_from "$dest/$name" "$module")" == "$version" ]]; then
    echo "bootstrap-tools: $name $version already in $dest"
    return
  fi
  if ! command -v go >/dev/null; then
    echo "bootstrap-tools: Go is needed to build $name $version (go install)" >&2
    exit 1
  fi
  echo "bootstrap-tools: building $name $version with go install"
  mkdir -p "$dest"
  GOBIN="$dest" GOFLAGS=-buildvcs=false go install -ldflags "-s -w $ldflags" "$package@$version"
}

install_checkov() {
  # A venv of its own: checkov caps packaging (<24) and aiohttp (<3.15), which would downgrade
  # the project venv and constrain the services' runtime dependencies.
  local dest="$tools/checkov-$CHECKOV_VERSION"
  if [[ -n "${CHECKOV:-}" ]]; then
    echo "bootstrap-tools: using $CHECKOV for checkov"
    return
  fi
  # pip's output is read whole first: `grep -q` closing the pipe early would fail pip with
  # SIGPIPE under pipefail, and the check would then reinstall at random.
  local installed=""
  [[ -x "$dest/bin/checkov" ]] && installed=$("$dest/bin/python" -m pip show checkov 2>/dev/null || true)
  if grep -qx "Version: $CHECKOV_VERSION" <<<"$installed"; then
    echo "bootstrap-tools: checkov $CHECKOV_VERSION already in $dest"
    return
  fi
  echo "bootstrap-tools: installing checkov $CHECKOV_VERSION into its own venv (pip, once)"
  rm -rf "$dest"
  "${PYTHON:-python3}" -m venv "$dest"
  "$dest/bin/python" -m pip install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION"
}

install_tool helm-docs github.com/norwoodj/helm-docs github.com/norwoodj/helm-docs/cmd/helm-docs \
  "$HELM_DOCS_VERSION" "${HELM_DOCS:-}" "" & docs=$!
install_tool kube-score github.com/zegl/kube-score github.com/zegl/kube-score/cmd/kube-score \
  "$KUBE_SCORE_VERSION" "${KUBE_SCORE:-}" "-X main.version=${KUBE_SCORE_VERSION#v}" & score=$!
install_checkov & checkov=$!
status=0
wait "$checkov" || status=1
wait "$docs" || status=1
wait "$score" || status=1
exit "$status"
