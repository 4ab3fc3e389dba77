#!/usr/bin/env bash
# Prints the path of a pinned helm CLI, installing it first when missing: `go install` from the Go module proxy
# into ~/.cache/lookout-ingester/helm/<version>/ (a few minutes the first time; needs Go >= 1.23 on PATH).
# Used by scripts/test.sh and tests/helm_chart.rs (which render deploy/helm/lookout-ingester with it).
set -euo pipefail
VERSION=v3.17.3
DIR="${LOOKOUT_INGESTER_CACHE:-$HOME/.cache/lookout-ingester}/helm/$VERSION"
BIN="$DIR/helm"
if [ ! -x "$BIN" ]; then
    if ! command -v go >/dev/null 2>&1; then
        echo "helm.sh: helm $VERSION is not installed and Go is not on PATH to install it (https://go.dev/dl)" >&2
        exit 1
    fi
    echo "helm.sh: installing helm $VERSION with go install into $DIR" >&2
    mkdir -p "$DIR"
    GOBIN="$DIR" GOFLAGS=-mod=mod go install "helm.sh/helm/v3/cmd/helm@$VERSION" >&2
fi
"$BIN" version --short >/dev/null
echo "$BIN"
