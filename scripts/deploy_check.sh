#!/usr/bin/env bash
# `make deploy-check`: validate the deployment files offline (no Docker engine, no cluster, no
# network: every schema comes from an installed package).
# - Kubernetes: render every overlay with kustomize, then validate every object (and the
#   examples) against the Kubernetes OpenAPI schemas carried by kubernetes-validate, strictly
#   (an unknown field is an error), for the oldest and the newest Kubernetes version we claim.
# - Dockerfile: hadolint.
# - compose.yaml: the compose specification's JSON schema (vendored in check-jsonschema).
# The cross-references the schemas cannot see (settings names, ports, grace periods, the
# autoscaler's metric) are tests/unit/test_deploy_files.py's, which `make test` runs.
#
# Usage: scripts/deploy_check.sh KUSTOMIZE "KUBERNETES_VERSIONS"
set -euo pipefail
cd "$(dirname "$0")/.."
kustomize=$1
versions=$2
bin=.venv/bin
rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT

overlays=(deploy/kubernetes/overlays/*/)
for overlay in "${overlays[@]}"; do
  name=$(basename "$overlay")
  "$kustomize" build "$overlay" >"$rendered/$name.yaml"
  echo "kustomize: rendered $name ($(grep -c '^kind:' "$rendered/$name.yaml") objects)"
done

for version in $versions; do
  "$bin/kubernetes-validate" --strict --quiet --kubernetes-version "$version" \
    "$rendered"/*.yaml deploy/kubernetes/examples/*.yaml
  echo "kubernetes-validate: every object valid (strict) against Kubernetes $version"
done

"$bin/hadolint" Dockerfile
echo "hadolint: Dockerfile clean"

"$bin/check-jsonschema" --builtin-schema vendor.compose-spec compose.yaml
