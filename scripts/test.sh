#!/usr/bin/env bash
# Checks formatting (`cargo fmt --check`) and lints (`cargo clippy --all-targets -- -D warnings`), then runs every
# test against the real services: starts a private PostgreSQL cluster and Apache Pulsar standalone (installing
# whatever is missing, see scripts/services.sh), then `cargo test`. Extra arguments go to cargo test.
# This is exactly what CI runs (.ci/run). Services are left running for the next run (scripts/services.sh down).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "[test] ERROR: cargo is not installed (https://rustup.rs)" >&2
    exit 1
fi
echo "[test] cargo fmt --check" >&2
cargo fmt --all --check
# The services script also installs what the build needs (make and gcc: jemalloc is built from C).
scripts/services.sh up
eval "$(scripts/services.sh env)"
export DATABASE_URL PULSAR_URL PULSAR_ADMIN_URL

echo "[test] cargo clippy --all-targets --locked -- -D warnings" >&2
cargo clippy --all-targets --locked -- -D warnings

scripts/helm.sh >/dev/null # the helm CLI tests/helm_chart.rs renders the chart with
echo "[test] cargo test against $DATABASE_URL and $PULSAR_URL" >&2
cargo test --locked "$@"
